//! MNIST-format data: the IDX reader, the dataset files, and the train / validation split.
//!
//! IDX is the format of the original MNIST files (and of Fashion-MNIST and friends): a
//! 4-byte magic (`0, 0, type, ndim`), `ndim` big-endian `u32` dimensions, then the values.
//! Files may be gzip-compressed or raw; which one is told by the content, not the name.

use std::fs::File;
use std::io::{BufReader, Read};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use flate2::read::GzDecoder;

use crate::files::{self, FileError};

/// Side length of an MNIST image in pixels.
pub const IMAGE_SIDE: usize = 28;
/// Pixels in one MNIST image (28 × 28).
pub const IMAGE_PIXELS: usize = IMAGE_SIDE * IMAGE_SIDE;
/// Number of classes (the digits 0–9).
pub const NUM_CLASSES: usize = 10;

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

/// Where `trainer` looks for MNIST when `--data-dir` and `TRAINER_DATA_DIR` are not given, and
/// where `scripts/fetch_mnist.py` puts it: `$XDG_CACHE_HOME/trainer/mnist`, else
/// `~/.cache/trainer/mnist` (on Windows `%LOCALAPPDATA%\trainer\mnist`).
pub fn default_data_dir() -> PathBuf {
    let env = |k: &str| {
        std::env::var_os(k)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    let cache = env("XDG_CACHE_HOME")
        .or_else(|| env("HOME").map(|h| h.join(".cache")))
        .or_else(|| env("LOCALAPPDATA"))
        .unwrap_or_else(|| PathBuf::from("."));
    cache.join("trainer").join("mnist")
}

/// What can go wrong while reading a dataset. Every variant names the file involved.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    /// Neither `NAME.gz` nor `NAME` exists in the data directory.
    #[error(
        "{dir}: no {name}.gz or {name} (provision MNIST with scripts/fetch_mnist.py, or pass --data-dir)"
    )]
    Missing {
        /// The data directory searched.
        dir: PathBuf,
        /// The file name looked for.
        name: String,
    },
    /// The file could not be read or decompressed (for a corrupt gzip stream, flate2's
    /// description of it).
    #[error(transparent)]
    File(#[from] FileError),
    /// The file's bytes are not a valid IDX file of the expected kind.
    #[error("{path}: {problem}")]
    Format {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        problem: IdxError,
    },
    /// Two files that belong together disagree.
    #[error("{images} holds {n_images} images but {labels} holds {n_labels} labels")]
    CountMismatch {
        /// The images file.
        images: PathBuf,
        /// The labels file.
        labels: PathBuf,
        /// Images in the images file.
        n_images: usize,
        /// Labels in the labels file.
        n_labels: usize,
    },
    /// A label is not a digit 0–9.
    #[error("{path}: label {value} at index {index} is outside 0-9")]
    BadLabel {
        /// The labels file.
        path: PathBuf,
        /// Position of the bad label.
        index: usize,
        /// Its value.
        value: u8,
    },
    /// The requested split does not fit the data.
    #[error("{0}")]
    Split(String),
}

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
    /// Image size other than 28 × 28.
    #[error("images are {rows}x{cols}, expected {IMAGE_SIDE}x{IMAGE_SIDE}")]
    WrongImageSize {
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

/// Labelled 28 × 28 grayscale images, as stored in the files (one byte per pixel).
///
/// Cheap to clone: the pixel and label buffers are shared.
#[derive(Debug, Clone)]
pub struct Split {
    /// `len() × 784` pixels, image after image, row-major, 0 = background.
    pub images: Arc<[u8]>,
    /// One digit 0–9 per image.
    pub labels: Arc<[u8]>,
}

impl Split {
    /// Builds a split, checking that there is one label (0–9) per 784 pixels.
    pub fn new(images: Vec<u8>, labels: Vec<u8>) -> Result<Self, DataError> {
        if images.len() != labels.len() * IMAGE_PIXELS {
            return Err(DataError::Split(format!(
                "{} pixels do not make {} images of {IMAGE_PIXELS}",
                images.len(),
                labels.len()
            )));
        }
        if let Some((index, value)) = bad_label(&labels) {
            return Err(DataError::Split(format!(
                "label {value} at index {index} is outside 0-9"
            )));
        }
        Ok(Self {
            images: images.into(),
            labels: labels.into(),
        })
    }

    /// Number of images.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// True when there are no images.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// The pixels of image `i`.
    pub fn image(&self, i: usize) -> &[u8] {
        &self.images[i * IMAGE_PIXELS..(i + 1) * IMAGE_PIXELS]
    }

    /// Images `range` as a new split (copies the range).
    pub fn slice(&self, range: std::ops::Range<usize>) -> Self {
        Self {
            images: self.images[range.start * IMAGE_PIXELS..range.end * IMAGE_PIXELS].into(),
            labels: self.labels[range].into(),
        }
    }

    /// Splits off the last `valid_size` images as a validation set, Keras' `validation_split`
    /// way: returns `(first len - valid_size, last valid_size)`.
    pub fn split_last(&self, valid_size: usize) -> Result<(Self, Self), DataError> {
        if valid_size >= self.len() {
            return Err(DataError::Split(format!(
                "--valid-size {valid_size} leaves no training images out of {}",
                self.len()
            )));
        }
        let cut = self.len() - valid_size;
        Ok((self.slice(0..cut), self.slice(cut..self.len())))
    }
}

/// The first label that is not a digit (0 to `NUM_CLASSES` − 1), with its index.
fn bad_label(labels: &[u8]) -> Option<(usize, u8)> {
    labels
        .iter()
        .copied()
        .enumerate()
        .find(|&(_, l)| usize::from(l) >= NUM_CLASSES)
}

/// Reads one images file and its labels file into a [`Split`], checking them against
/// each other.
pub fn read_split(images_path: &Path, labels_path: &Path) -> Result<Split, DataError> {
    let images = read_idx_file(images_path, 3)?;
    if images.dims[1..] != [IMAGE_SIDE, IMAGE_SIDE] {
        return Err(DataError::Format {
            path: images_path.to_path_buf(),
            problem: IdxError::WrongImageSize {
                rows: images.dims[1],
                cols: images.dims[2],
            },
        });
    }
    let labels = read_idx_file(labels_path, 1)?;
    if images.dims[0] != labels.dims[0] {
        return Err(DataError::CountMismatch {
            images: images_path.to_path_buf(),
            labels: labels_path.to_path_buf(),
            n_images: images.dims[0],
            n_labels: labels.dims[0],
        });
    }
    if let Some((index, value)) = bad_label(&labels.data) {
        return Err(DataError::BadLabel {
            path: labels_path.to_path_buf(),
            index,
            value,
        });
    }
    Split::new(images.data, labels.data)
}

/// The MNIST training and test sets, as read from a data directory.
#[derive(Debug, Clone)]
pub struct Mnist {
    /// The 60,000 training images (before the validation split).
    pub train: Split,
    /// The 10,000 test images.
    pub test: Split,
}

impl Mnist {
    /// Reads the four standard files (each `NAME.gz` or `NAME`) from `dir`.
    pub fn load(dir: &Path) -> Result<Self, DataError> {
        let train = read_split(&locate(dir, TRAIN_IMAGES)?, &locate(dir, TRAIN_LABELS)?)?;
        let test = read_split(&locate(dir, TEST_IMAGES)?, &locate(dir, TEST_LABELS)?)?;
        Ok(Self { train, test })
    }
}

/// Writes `split` as an IDX images file and an IDX labels file (uncompressed) — the inverse of
/// [`read_split`], used by tests and tools that cut subsets.
pub fn write_split(split: &Split, images_path: &Path, labels_path: &Path) -> std::io::Result<()> {
    let n = split.len() as u32;
    let mut images = vec![0, 0, IDX_U8, 3];
    for d in [n, IMAGE_SIDE as u32, IMAGE_SIDE as u32] {
        images.extend_from_slice(&d.to_be_bytes());
    }
    images.extend_from_slice(&split.images);
    let mut labels = vec![0, 0, IDX_U8, 1];
    labels.extend_from_slice(&n.to_be_bytes());
    labels.extend_from_slice(&split.labels);
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

    fn load_err(dir: &Path) -> String {
        Mnist::load(dir).unwrap_err().to_string()
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
        let mnist = Mnist::load(dir.path()).unwrap();
        assert_eq!(mnist.train.len(), 5);
        assert_eq!(mnist.test.len(), 3);
        assert_eq!(mnist.train.labels.as_ref(), &[0, 1, 2, 3, 4]);
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
            Mnist::load(dir.path()).unwrap().test.images,
            mnist.test.images
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

    #[test]
    fn wrong_dimensions_are_rejected() {
        let dir = data_dir(2, 2);
        let path = dir.path().join(format!("{TRAIN_IMAGES}.gz"));
        std::fs::write(&path, gzip(&idx_bytes(&[2, 32, 32], &[0; 2 * 1024]))).unwrap();
        assert!(load_err(dir.path()).contains("32x32"));
        std::fs::write(&path, gzip(&idx_bytes(&[2, 784], &[0; 2 * 784]))).unwrap();
        assert!(load_err(dir.path()).contains("2 dimensions where 3"));
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

    #[test]
    fn label_out_of_range_is_rejected() {
        let dir = data_dir(3, 2);
        let path = dir.path().join(format!("{TEST_LABELS}.gz"));
        std::fs::write(&path, gzip(&idx_bytes(&[2], &[1, 10]))).unwrap();
        let err = load_err(dir.path());
        assert!(
            err.contains(TEST_LABELS) && err.contains("label 10 at index 1"),
            "{err}"
        );
    }

    #[test]
    fn split_takes_the_last_images_for_validation() {
        let labels: Vec<u8> = (0..10).collect();
        let images: Vec<u8> = (0..10u8).flat_map(|i| [i; 784]).collect();
        let split = Split::new(images, labels).unwrap();
        let (train, valid) = split.split_last(3).unwrap();
        assert_eq!(train.labels.as_ref(), &[0, 1, 2, 3, 4, 5, 6]);
        assert_eq!(valid.labels.as_ref(), &[7, 8, 9]);
        assert_eq!(valid.image(0), &[7; 784][..]);
        assert_eq!(train.len() + valid.len(), split.len());
        assert!(split.split_last(10).is_err());
        assert_eq!(split.split_last(0).unwrap().1.len(), 0);
    }

    #[test]
    fn written_split_reads_back() {
        let dir = tempfile::tempdir().unwrap();
        let split = Split::new(vec![7; 2 * 784], vec![3, 9]).unwrap();
        let (i, l) = (dir.path().join("i"), dir.path().join("l"));
        write_split(&split, &i, &l).unwrap();
        let back = read_split(&i, &l).unwrap();
        assert_eq!(back.images, split.images);
        assert_eq!(back.labels, split.labels);
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
