//! MNIST-format data: the IDX reader and the four files of a data directory. IDX is the
//! format of the original MNIST files (and of Fashion-MNIST, EMNIST, KMNIST): a 4-byte magic
//! (`0, 0, type, ndim`), `ndim` big-endian `u32` dimensions, then the values. Files may be
//! gzip-compressed or raw; which one is told by the content, not the name. Any image size
//! the header gives, any class count the labels hold (up to 256).

use std::fs::File;
use std::io::{BufReader, Read};
use std::path::{Path, PathBuf};

use flate2::read::GzDecoder;

use super::{Data, DataError, DataInfo, ImageShape, MAX_CLASSES, Split, SplitSizes, looks_centred};
use crate::files;

/// The IDX type code for unsigned bytes, the only element type MNIST uses.
const IDX_U8: u8 = 0x08;
/// Upper bound on a decompressed file: far above MNIST (47 MB), low enough that a
/// corrupted header or a gzip bomb cannot exhaust memory.
const MAX_FILE_BYTES: u64 = 1 << 30;

/// The standard file names of the four MNIST files, without the `.gz` suffix.
pub const TRAIN_IMAGES: &str = "train-images-idx3-ubyte";
/// Training labels file name (see [`TRAIN_IMAGES`]).
pub const TRAIN_LABELS: &str = "train-labels-idx1-ubyte";
/// Test images file name (see [`TRAIN_IMAGES`]).
pub const TEST_IMAGES: &str = "t10k-images-idx3-ubyte";
/// Test labels file name (see [`TRAIN_IMAGES`]).
pub const TEST_LABELS: &str = "t10k-labels-idx1-ubyte";

/// Why a byte buffer is not an acceptable IDX file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdxError {
    /// Fewer than the 4 magic bytes, or than the header's dimensions need.
    #[error("truncated header ({len} bytes): not an IDX file")]
    TruncatedHeader {
        /// Bytes available.
        len: usize,
    },
    /// The magic's first two bytes are not zero.
    #[error("bad magic {magic:02x?}: not an IDX file (nor gzip)")]
    BadMagic {
        /// The first four bytes.
        magic: [u8; 4],
    },
    /// An element type other than unsigned byte.
    #[error("element type 0x{0:02x} is not supported (MNIST files hold unsigned bytes, 0x08)")]
    UnsupportedType(u8),
    /// The number of dimensions is not what this file should have.
    #[error("{found} dimensions where {expected} were expected")]
    WrongRank {
        /// Dimensions in the header.
        found: usize,
        /// Dimensions expected.
        expected: usize,
    },
    /// Images of no pixels.
    #[error("images are {rows}x{cols}: no pixels")]
    Empty {
        /// Rows per image.
        rows: usize,
        /// Columns per image.
        cols: usize,
    },
    /// The body is shorter than the header says.
    #[error("header promises {expected} bytes of data, file holds {found}")]
    WrongLength {
        /// Bytes the dimensions call for.
        expected: u64,
        /// Bytes present.
        found: u64,
    },
    /// More bytes follow the data the header promises.
    #[error("data continues past the {expected} bytes the header promises")]
    TrailingData {
        /// Bytes the dimensions call for.
        expected: u64,
    },
    /// The header promises more data than any file of this kind holds.
    #[error(
        "header promises {expected} bytes of data, more than the {MAX_FILE_BYTES} of any MNIST-like file"
    )]
    TooLarge {
        /// Bytes the dimensions call for.
        expected: u64,
    },
}

/// A parsed IDX file of unsigned bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Idx {
    /// The dimensions from the header, outermost first.
    pub dims: Vec<usize>,
    /// The values, row-major.
    pub data: Vec<u8>,
}

/// Parses the bytes of an (uncompressed) IDX file holding unsigned bytes.
///
/// Never panics: any input that is not a well-formed IDX file gives an [`IdxError`].
pub fn parse_idx(bytes: &[u8]) -> Result<Idx, IdxError> {
    match read_idx(&mut &bytes[..]) {
        Ok(idx) => Ok(idx),
        Err(IdxRead::Format(e)) => Err(e),
        // Reading a byte slice cannot fail.
        Err(IdxRead::Io(e)) => unreachable!("reading from memory: {e}"),
    }
}

/// What stops reading an IDX stream.
enum IdxRead {
    /// The bytes are not a well-formed IDX file.
    Format(IdxError),
    /// The stream itself failed (a file, a gzip decoder).
    Io(std::io::Error),
}

/// Reads an IDX file of unsigned bytes from `reader`: the header, then exactly the data it
/// promises, then one byte more to tell trailing data. Memory grows with the data that is
/// there, never beyond what the header promises.
fn read_idx(reader: &mut impl Read) -> Result<Idx, IdxRead> {
    let io = IdxRead::Io;
    let format = IdxRead::Format;
    let mut magic = [0u8; 4];
    let n = read_up_to(reader, &mut magic).map_err(io)?;
    if n < 4 {
        return Err(format(IdxError::TruncatedHeader { len: n }));
    }
    if magic[0] != 0 || magic[1] != 0 {
        return Err(format(IdxError::BadMagic { magic }));
    }
    if magic[2] != IDX_U8 {
        return Err(format(IdxError::UnsupportedType(magic[2])));
    }
    let ndim = usize::from(magic[3]);
    let mut header = vec![0u8; 4 * ndim];
    let n = read_up_to(reader, &mut header).map_err(io)?;
    if n < header.len() {
        return Err(format(IdxError::TruncatedHeader { len: 4 + n }));
    }
    let dims: Vec<usize> = header
        .chunks_exact(4)
        .map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]]) as usize)
        .collect();
    // u64 arithmetic with saturation: a hostile header cannot overflow the product.
    let expected = dims
        .iter()
        .fold(1u64, |acc, &d| acc.saturating_mul(d as u64));
    if expected > MAX_FILE_BYTES {
        return Err(format(IdxError::TooLarge { expected }));
    }
    // Capacity for an MNIST training file up front; a hostile header gets no more than that
    // until its data actually arrives.
    let mut data = Vec::with_capacity(expected.min(64 << 20) as usize);
    reader.take(expected).read_to_end(&mut data).map_err(io)?;
    if (data.len() as u64) < expected {
        return Err(format(IdxError::WrongLength {
            expected,
            found: data.len() as u64,
        }));
    }
    if read_up_to(reader, &mut [0u8; 1]).map_err(io)? > 0 {
        return Err(format(IdxError::TrailingData { expected }));
    }
    Ok(Idx { dims, data })
}

/// Reads the IDX file at `path`, decompressing it when it starts with the gzip magic.
fn read_idx_path(path: &Path) -> Result<Idx, DataError> {
    let io_err = |source| DataError::File(files::io_err(path)(source));
    let format = |problem| DataError::Format {
        path: path.to_path_buf(),
        problem,
    };
    let mut file = BufReader::new(File::open(path).map_err(io_err)?);
    let mut head = [0u8; 2];
    let n = read_up_to(&mut file, &mut head).map_err(io_err)?;
    let chained = std::io::Cursor::new(head[..n].to_vec()).chain(file);
    let read = if n == 2 && head == [0x1f, 0x8b] {
        read_idx(&mut GzDecoder::new(chained)).map_err(|e| match e {
            IdxRead::Io(e) => IdxRead::Io(std::io::Error::new(
                e.kind(),
                format!("corrupt or truncated gzip data: {e}"),
            )),
            other => other,
        })
    } else {
        read_idx(&mut { chained })
    };
    read.map_err(|e| match e {
        IdxRead::Format(problem) => format(problem),
        IdxRead::Io(e) => io_err(e),
    })
}

/// Reads into `buf` until it is full or the reader is exhausted; returns the bytes read.
fn read_up_to(reader: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match reader.read(&mut buf[filled..])? {
            0 => break,
            n => filled += n,
        }
    }
    Ok(filled)
}

/// Finds `NAME.gz` or else `NAME` in `dir`.
fn locate(dir: &Path, name: &str) -> Result<PathBuf, DataError> {
    [format!("{name}.gz"), name.to_string()]
        .into_iter()
        .map(|file| dir.join(file))
        .find(|p| p.is_file())
        .ok_or_else(|| DataError::Missing {
            dir: dir.to_path_buf(),
            name: name.to_string(),
        })
}

/// Reads an IDX file (gzip or raw) and checks it has `rank` dimensions.
pub fn read_idx_file(path: &Path, rank: usize) -> Result<Idx, DataError> {
    let format = |problem| DataError::Format {
        path: path.to_path_buf(),
        problem,
    };
    let idx = read_idx_path(path)?;
    if idx.dims.len() != rank {
        return Err(format(IdxError::WrongRank {
            found: idx.dims.len(),
            expected: rank,
        }));
    }
    Ok(idx)
}

/// Whether `dir` holds any of the four files of an IDX data directory.
pub fn present(dir: &Path) -> bool {
    [TRAIN_IMAGES, TRAIN_LABELS, TEST_IMAGES, TEST_LABELS]
        .iter()
        .any(|name| locate(dir, name).is_ok())
}

/// Reads one images file and its labels file into a split, checking them against each other:
/// any image size, labels below 256.
pub fn read_split(images_path: &Path, labels_path: &Path) -> Result<Split, DataError> {
    let images = read_idx_file(images_path, 3)?;
    let labels = read_idx_file(labels_path, 1)?;
    if images.dims[0] != labels.dims[0] {
        return Err(DataError::CountMismatch {
            images: images_path.to_path_buf(),
            labels: labels_path.to_path_buf(),
            n_images: images.dims[0],
            n_labels: labels.dims[0],
        });
    }
    let shape = ImageShape {
        channels: 1,
        height: images.dims[1],
        width: images.dims[2],
    };
    if shape.height == 0 || shape.width == 0 {
        return Err(DataError::Format {
            path: images_path.to_path_buf(),
            problem: IdxError::Empty {
                rows: shape.height,
                cols: shape.width,
            },
        });
    }
    Split::new(images.data, labels.data, shape)
}

/// Reads the four files of an IDX data directory (each `NAME.gz` or `NAME`), MNIST's
/// layout: the training split's last images are the validation set (`sizes.valid`, MNIST's
/// 5,000 by default), the t10k files the test set. The classes are the labels' numbers,
/// as many as the highest label says.
pub fn load(dir: &Path, sizes: SplitSizes) -> Result<Data, DataError> {
    let (train_images, train_labels) = (locate(dir, TRAIN_IMAGES)?, locate(dir, TRAIN_LABELS)?);
    let (test_images, test_labels) = (locate(dir, TEST_IMAGES)?, locate(dir, TEST_LABELS)?);
    let train = read_split(&train_images, &train_labels)?;
    let test = read_split(&test_images, &test_labels)?;
    if test.shape != train.shape {
        return Err(DataError::Source {
            path: test_images,
            problem: format!(
                "images are {}x{}, the training images {}x{}",
                test.shape.height, test.shape.width, train.shape.height, train.shape.width
            ),
        });
    }
    // The classes are those the training labels hold; a test label past them is out of range.
    let classes = train.max_label().map_or(0, |m| usize::from(m) + 1).max(2);
    if let Some((index, &label)) = test
        .labels()
        .iter()
        .enumerate()
        .find(|&(_, &l)| usize::from(l) >= classes)
    {
        return Err(DataError::Source {
            path: test_labels,
            problem: format!(
                "label {label} at index {index} is outside the training labels' 0-{}",
                classes - 1
            ),
        });
    }
    debug_assert!(classes <= MAX_CLASSES, "labels are bytes");
    let valid_size = sizes.valid.unwrap_or(5000);
    let (train, valid) = train.split_last(valid_size)?;
    let info = DataInfo {
        shape: train.shape,
        classes: (0..classes).map(|c| c.to_string()).collect(),
        style: if looks_centred(&train) {
            super::Style::Centred
        } else {
            super::Style::Plain
        },
    };
    Ok(Data {
        train,
        valid,
        test,
        info,
        skipped: 0,
        valid_size,
    })
}

/// Writes `split` as an IDX images file and an IDX labels file (uncompressed, gray images
/// only) — the inverse of [`read_split`], used by tests and tools that cut subsets.
pub fn write_split(split: &Split, images_path: &Path, labels_path: &Path) -> std::io::Result<()> {
    let n = split.len() as u32;
    let mut images = vec![0, 0, IDX_U8, 3];
    for d in [n, split.shape.height as u32, split.shape.width as u32] {
        images.extend_from_slice(&d.to_be_bytes());
    }
    images.extend_from_slice(split.images());
    let mut labels = vec![0, 0, IDX_U8, 1];
    labels.extend_from_slice(&n.to_be_bytes());
    labels.extend_from_slice(split.labels());
    std::fs::write(images_path, images)?;
    std::fs::write(labels_path, labels)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::io::Write;

    fn idx_bytes(dims: &[u32], data: &[u8]) -> Vec<u8> {
        let mut out = vec![0, 0, IDX_U8, dims.len() as u8];
        for d in dims {
            out.extend_from_slice(&d.to_be_bytes());
        }
        out.extend_from_slice(data);
        out
    }

    fn gzip(bytes: &[u8]) -> Vec<u8> {
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        enc.write_all(bytes).unwrap();
        enc.finish().unwrap()
    }

    /// A data dir with `n` training and `m` test images; `tweak` may overwrite files.
    fn data_dir(n: u32, m: u32) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let px = |k: u32| (0..k * 784).map(|i| (i % 251) as u8).collect::<Vec<_>>();
        let lb = |k: u32| (0..k).map(|i| (i % 10) as u8).collect::<Vec<_>>();
        let write = |name: &str, bytes: Vec<u8>| {
            std::fs::write(dir.path().join(format!("{name}.gz")), gzip(&bytes)).unwrap()
        };
        write(TRAIN_IMAGES, idx_bytes(&[n, 28, 28], &px(n)));
        write(TRAIN_LABELS, idx_bytes(&[n], &lb(n)));
        write(TEST_IMAGES, idx_bytes(&[m, 28, 28], &px(m)));
        write(TEST_LABELS, idx_bytes(&[m], &lb(m)));
        dir
    }

    const SIZES: SplitSizes = SplitSizes {
        valid: Some(0),
        test: None,
    };

    fn load_err(dir: &Path) -> String {
        load(dir, SIZES).unwrap_err().to_string()
    }

    #[test]
    fn parses_a_good_file() {
        let idx = parse_idx(&idx_bytes(&[2, 3], &[1, 2, 3, 4, 5, 6])).unwrap();
        assert_eq!(idx.dims, vec![2, 3]);
        assert_eq!(idx.data, vec![1, 2, 3, 4, 5, 6]);
    }

    #[test]
    fn rejects_each_kind_of_bad_header() {
        assert_eq!(
            parse_idx(&[0, 0]),
            Err(IdxError::TruncatedHeader { len: 2 })
        );
        assert!(matches!(
            parse_idx(&[0x50, 0x4b, 3, 4, 0, 0]),
            Err(IdxError::BadMagic { .. })
        ));
        assert_eq!(
            parse_idx(&[0, 0, 0x0d, 1, 0, 0, 0, 0]),
            Err(IdxError::UnsupportedType(0x0d))
        );
        assert_eq!(
            parse_idx(&[0, 0, 8, 2, 0, 0, 0, 1]),
            Err(IdxError::TruncatedHeader { len: 8 })
        );
        assert_eq!(
            parse_idx(&idx_bytes(&[4], &[1, 2, 3])),
            Err(IdxError::WrongLength {
                expected: 4,
                found: 3
            })
        );
        assert_eq!(
            parse_idx(&idx_bytes(&[2], &[1, 2, 3])),
            Err(IdxError::TrailingData { expected: 2 })
        );
        // A header whose product overflows usize on any platform still gives an error, before
        // anything is allocated for it.
        assert!(matches!(
            parse_idx(&idx_bytes(&[u32::MAX, u32::MAX, u32::MAX], &[])),
            Err(IdxError::TooLarge { .. })
        ));
    }

    /// A file is read no further than its header promises (and one byte to tell trailing
    /// data): a valid header followed by a gigabyte of gzip stream costs its promised bytes, not
    /// the gigabyte.
    #[test]
    fn reading_stops_at_what_the_header_promises() {
        use crate::test_support::Endless;
        let header = idx_bytes(&[3, 5], &[]);
        let mut reader = std::io::Cursor::new(header).chain(Endless(0));
        let Err(IdxRead::Format(e)) = read_idx(&mut reader) else {
            panic!("trailing data was accepted");
        };
        assert_eq!(e, IdxError::TrailingData { expected: 15 });
        let (_, endless) = reader.into_inner();
        assert!(
            endless.0 <= 15 + 8192,
            "read {} bytes past the header",
            endless.0
        );
    }

    #[test]
    fn loads_gzip_and_raw_files() {
        let dir = data_dir(5, 3);
        let mnist = load(dir.path(), SIZES).unwrap();
        assert_eq!(mnist.train.len(), 5);
        assert_eq!(mnist.test.len(), 3);
        assert_eq!(mnist.train.labels(), &[0, 1, 2, 3, 4]);
        assert_eq!(mnist.train.image(1)[0], (784 % 251) as u8);

        // The same test set, raw (uncompressed) and under the plain name.
        let gz = dir.path().join(format!("{TEST_IMAGES}.gz"));
        let mut raw = Vec::new();
        flate2::read::GzDecoder::new(File::open(&gz).unwrap())
            .read_to_end(&mut raw)
            .unwrap();
        std::fs::remove_file(&gz).unwrap();
        std::fs::write(dir.path().join(TEST_IMAGES), raw).unwrap();
        assert_eq!(
            load(dir.path(), SIZES).unwrap().test.images(),
            mnist.test.images()
        );
    }

    #[test]
    fn missing_file_names_the_file() {
        let dir = data_dir(2, 2);
        std::fs::remove_file(dir.path().join(format!("{TEST_LABELS}.gz"))).unwrap();
        let err = load_err(dir.path());
        assert!(err.contains(TEST_LABELS), "{err}");
    }

    #[test]
    fn truncated_gzip_names_the_file() {
        let dir = data_dir(4, 2);
        let path = dir.path().join(format!("{TRAIN_IMAGES}.gz"));
        let bytes = std::fs::read(&path).unwrap();
        std::fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
        let err = load_err(dir.path());
        assert!(err.contains(TRAIN_IMAGES) && err.contains("gzip"), "{err}");
    }

    #[test]
    fn truncated_raw_file_is_a_length_error() {
        let dir = data_dir(4, 2);
        let bytes = idx_bytes(&[4, 28, 28], &[0; 4 * 784 - 1]);
        std::fs::write(dir.path().join(format!("{TRAIN_IMAGES}.gz")), bytes).unwrap();
        let err = load_err(dir.path());
        assert!(
            err.contains(TRAIN_IMAGES) && err.contains("header promises"),
            "{err}"
        );
    }

    #[test]
    fn non_gzip_non_idx_file_is_a_magic_error() {
        let dir = data_dir(2, 2);
        let path = dir.path().join(format!("{TEST_IMAGES}.gz"));
        std::fs::write(&path, b"<html>not found</html>").unwrap();
        let err = load_err(dir.path());
        assert!(err.contains(TEST_IMAGES) && err.contains("magic"), "{err}");
    }

    /// Any image size loads, the training and test images must agree; three dimensions.
    #[test]
    fn other_sizes_load_and_must_agree() {
        let dir = data_dir(2, 2);
        let path = dir.path().join(format!("{TRAIN_IMAGES}.gz"));
        std::fs::write(&path, gzip(&idx_bytes(&[2, 32, 20], &[0; 2 * 640]))).unwrap();
        let err = load_err(dir.path());
        assert!(
            err.contains(TEST_IMAGES) && err.contains("28x28, the training images 32x20"),
            "{err}"
        );
        let test = dir.path().join(format!("{TEST_IMAGES}.gz"));
        std::fs::write(&test, gzip(&idx_bytes(&[2, 32, 20], &[0; 2 * 640]))).unwrap();
        let data = load(dir.path(), SIZES).unwrap();
        assert_eq!(
            data.info.shape,
            ImageShape {
                channels: 1,
                height: 32,
                width: 20
            }
        );
        std::fs::write(&path, gzip(&idx_bytes(&[2, 784], &[0; 2 * 784]))).unwrap();
        assert!(load_err(dir.path()).contains("2 dimensions where 3"));
        std::fs::write(&path, gzip(&idx_bytes(&[2, 0, 5], &[]))).unwrap();
        assert!(load_err(dir.path()).contains("no pixels"));
    }

    #[test]
    fn count_mismatch_names_both_files() {
        let dir = data_dir(3, 2);
        let path = dir.path().join(format!("{TRAIN_LABELS}.gz"));
        std::fs::write(&path, gzip(&idx_bytes(&[2], &[1, 2]))).unwrap();
        let err = load_err(dir.path());
        assert!(
            err.contains(TRAIN_IMAGES) && err.contains(TRAIN_LABELS) && err.contains("3 images"),
            "{err}"
        );
    }

    /// The classes are as many as the highest training label says (EMNIST's letters have
    /// 27), named by their numbers; a test label past them is out of range.
    #[test]
    fn the_training_labels_say_how_many_classes() {
        let dir = data_dir(3, 2);
        let path = dir.path().join(format!("{TRAIN_LABELS}.gz"));
        std::fs::write(&path, gzip(&idx_bytes(&[3], &[1, 26, 0]))).unwrap();
        let data = load(dir.path(), SIZES).unwrap();
        assert_eq!(data.info.class_count(), 27);
        assert_eq!(data.info.classes[26], "26");
        let test = dir.path().join(format!("{TEST_LABELS}.gz"));
        std::fs::write(&test, gzip(&idx_bytes(&[2], &[1, 27]))).unwrap();
        let err = load_err(dir.path());
        assert!(
            err.contains(TEST_LABELS) && err.contains("label 27 at index 1 is outside"),
            "{err}"
        );
    }

    #[test]
    fn written_split_reads_back() {
        let dir = tempfile::tempdir().unwrap();
        let split = Split::new(vec![7; 2 * 784], vec![3, 9], ImageShape::MNIST).unwrap();
        let (i, l) = (dir.path().join("i"), dir.path().join("l"));
        write_split(&split, &i, &l).unwrap();
        let back = read_split(&i, &l).unwrap();
        assert_eq!(back.images(), split.images());
        assert_eq!(back.labels(), split.labels());
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        #[test]
        fn parse_never_panics_on_random_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = parse_idx(&bytes);
        }

        #[test]
        fn parse_never_panics_on_random_headers(ndim in 0u8..6, dims in proptest::collection::vec(any::<u32>(), 0..6), tail in proptest::collection::vec(any::<u8>(), 0..32)) {
            let mut bytes = vec![0, 0, IDX_U8, ndim];
            for d in dims { bytes.extend_from_slice(&(d % 8).to_be_bytes()); }
            bytes.extend_from_slice(&tail);
            if let Ok(idx) = parse_idx(&bytes) {
                prop_assert_eq!(idx.data.len(), idx.dims.iter().product::<usize>());
            }
        }

        #[test]
        fn every_truncation_of_a_good_file_is_an_error(cut in 0usize..(16 + 2 * 9)) {
            let good = idx_bytes(&[2, 3, 3], &[5; 18]);
            prop_assert!(parse_idx(&good[..cut]).is_err());
        }
    }
}
