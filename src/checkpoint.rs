//! Files that keep a run's work: model files and checkpoints, written atomically.
//!
//! Both are one container: a magic tag, a JSON header, binary sections (burn's burnpack bytes
//! for the model and for the optimizer state), and a CRC-32 of everything before it, so a
//! truncated or corrupted file is reported as such instead of half-loaded.
//!
//! Both are written atomically (see [`crate::files::atomic_write`]): a crash, a full disk or a
//! second Ctrl-C mid-write leaves the previous file intact.

use std::fs::File;
use std::io::{BufReader, Read};
use std::path::Path;

use burn::module::Module;
use burn::store::ModuleRecord;
use burn::tensor::{Bytes, Device};
use serde::{Deserialize, Serialize};

use crate::files::{FileError, atomic_write_bytes, corrupt, io_err};
use crate::model::{Architecture, Model};
use crate::recipe::{TrainConfig, optimizer};
use crate::session::{Session, TrainingRecord};

const MODEL_MAGIC: &[u8; 8] = b"TRNRMDL1";
const CHECKPOINT_MAGIC: &[u8; 8] = b"TRNRCKP1";

/// Lays out a container: magic, header length, JSON header, section count, sections, CRC-32.
fn encode(magic: &[u8; 8], header: &[u8], sections: &[&[u8]]) -> Vec<u8> {
    let mut out =
        Vec::with_capacity(32 + header.len() + sections.iter().map(|s| s.len() + 8).sum::<usize>());
    out.extend_from_slice(magic);
    out.extend_from_slice(&(header.len() as u64).to_le_bytes());
    out.extend_from_slice(header);
    out.extend_from_slice(&(sections.len() as u32).to_le_bytes());
    for s in sections {
        out.extend_from_slice(&(s.len() as u64).to_le_bytes());
        out.extend_from_slice(s);
    }
    let crc = crc32fast::hash(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    out
}

/// The most header bytes a container may promise: a checkpoint's JSON header holds the run's
/// history, a few hundred bytes an epoch.
const MAX_HEADER_BYTES: u64 = 64 << 20;
/// The most sections a container may promise (a checkpoint has two).
const MAX_SECTIONS: u32 = 8;
/// The most bytes one section may promise (a model of a billion parameters' optimizer state).
const MAX_SECTION_BYTES: u64 = 8 << 30;

/// A container read from a stream: its JSON header and its sections.
struct Container {
    magic: [u8; 8],
    header: Vec<u8>,
    sections: Vec<Vec<u8>>,
}

/// What stops reading a container.
#[derive(Debug)]
enum ReadFail {
    /// The bytes are not a container of the expected kind, or are damaged.
    Corrupt(String),
    /// The stream itself failed.
    Io(std::io::Error),
}

impl From<std::io::Error> for ReadFail {
    fn from(e: std::io::Error) -> Self {
        ReadFail::Io(e)
    }
}

/// A reader that keeps a CRC-32 of what passes through it.
struct Crc<R> {
    inner: R,
    hasher: crc32fast::Hasher,
}

impl<R: Read> Read for Crc<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}

/// Names a file by its magic.
fn kind(magic: &[u8]) -> &'static str {
    match magic {
        m if m == MODEL_MAGIC => "a trainer model file",
        m if m == CHECKPOINT_MAGIC => "a trainer checkpoint",
        _ => "not a trainer file",
    }
}

/// Reads exactly `n` bytes, or says that the file ends before them. Memory grows with the
/// bytes that arrive, not with what a damaged length field promises.
fn take(reader: &mut impl Read, n: u64, what: &str) -> Result<Vec<u8>, ReadFail> {
    let mut out = Vec::with_capacity(n.min(1 << 20) as usize);
    reader.take(n).read_to_end(&mut out)?;
    if (out.len() as u64) < n {
        return Err(ReadFail::Corrupt(format!(
            "truncated: the file ends inside its {what}"
        )));
    }
    Ok(out)
}

fn take_u64(reader: &mut impl Read, what: &str) -> Result<u64, ReadFail> {
    let bytes = take(reader, 8, what)?;
    Ok(u64::from_le_bytes(bytes.try_into().unwrap_or([0xff; 8])))
}

/// Reads a container (magic, header length, JSON header, section count, sections, CRC-32)
/// no further than its lengths promise, plus one byte to tell trailing data. `accept` lists
/// the magics the caller takes.
fn read_container(reader: impl Read, accept: &[&[u8; 8]]) -> Result<Container, ReadFail> {
    let corrupt = |m: String| Err(ReadFail::Corrupt(m));
    let mut r = Crc {
        inner: reader,
        hasher: crc32fast::Hasher::new(),
    };
    // A file shorter than the tag is not a trainer file; a failing read stays what it is.
    let magic: [u8; 8] = take(&mut r, 8, "magic tag")
        .map_err(|e| match e {
            ReadFail::Corrupt(_) => {
                ReadFail::Corrupt("too short: truncated or not a trainer file".into())
            }
            io => io,
        })?
        .try_into()
        .unwrap_or([0; 8]);
    if !accept.contains(&&magic) {
        return corrupt(format!("{}, expected {}", kind(&magic), kind(accept[0])));
    }
    let header_len = take_u64(&mut r, "header length")?;
    if header_len > MAX_HEADER_BYTES {
        return corrupt(format!(
            "damaged: header length {header_len} is past the limit of {MAX_HEADER_BYTES}"
        ));
    }
    let header = take(&mut r, header_len, "header")?;
    let count = u32::from_le_bytes(
        take(&mut r, 4, "section count")?
            .try_into()
            .unwrap_or([0xff; 4]),
    );
    if count > MAX_SECTIONS {
        return corrupt(format!("damaged: {count} sections, at most {MAX_SECTIONS}"));
    }
    let mut sections = Vec::with_capacity(count as usize);
    for _ in 0..count {
        let n = take_u64(&mut r, "section length")?;
        if n > MAX_SECTION_BYTES {
            return corrupt(format!(
                "damaged: section length {n} is past the limit of {MAX_SECTION_BYTES}"
            ));
        }
        sections.push(take(&mut r, n, "data")?);
    }
    let computed = r.hasher.clone().finalize();
    let stored = take(&mut r.inner, 4, "checksum")?;
    if computed != u32::from_le_bytes(stored.try_into().unwrap_or([0; 4])) {
        return corrupt("checksum mismatch: the file is truncated or corrupted".into());
    }
    if r.inner.read(&mut [0u8; 1])? > 0 {
        return corrupt("damaged: data continues past the end of the container".into());
    }
    Ok(Container {
        magic,
        header,
        sections,
    })
}

/// Opens and reads the container at `path`.
fn read_container_file(path: &Path, accept: &[&[u8; 8]]) -> Result<Container, FileError> {
    let file = File::open(path).map_err(io_err(path))?;
    read_container(BufReader::new(file), accept).map_err(|e| match e {
        ReadFail::Corrupt(problem) => corrupt(path, problem),
        ReadFail::Io(e) => io_err(path)(e),
    })
}

/// What a model file says about its model, enough to rebuild it before loading the weights.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelHeader {
    /// Which network: `"mlp"` or `"cnn"`.
    pub architecture: Architecture,
    /// The MLP's hidden layer widths (empty for the CNN).
    pub hidden: Vec<usize>,
    /// The version of `trainer` that wrote the file.
    pub trainer_version: String,
}

impl ModelHeader {
    /// The header of `model`.
    pub fn of(model: &Model) -> Self {
        Self {
            architecture: model.architecture(),
            hidden: model.hidden(),
            trainer_version: env!("CARGO_PKG_VERSION").into(),
        }
    }
}

/// The weights of the network inside `model` (the variant's own record, so an MLP file reads
/// the same as before the CNN existed).
fn model_bytes(model: &Model, path: &Path) -> Result<Vec<u8>, FileError> {
    let bytes = match model {
        Model::Mlp(m) => m.clone().into_record().into_bytes(),
        Model::Cnn(c) => c.clone().into_record().into_bytes(),
    }
    .map_err(|e| corrupt(path, format!("serialising the model: {e}")))?;
    Ok(bytes.to_vec())
}

fn load_weights(
    header: &ModelHeader,
    weights: Vec<u8>,
    device: &Device,
    path: &Path,
) -> Result<Model, FileError> {
    // A header may describe a network far larger than its weights; check before building it.
    let needed = header
        .architecture
        .parameter_count(&header.hidden)
        .saturating_mul(4);
    if needed > weights.len() as u64 {
        return Err(corrupt(
            path,
            format!(
                "the header describes {} weights ({needed} bytes), the file holds {} bytes of them",
                header.architecture,
                weights.len()
            ),
        ));
    }
    let blank = Model::new(header.architecture, &header.hidden, 0, device)
        .map_err(|e| corrupt(path, e.to_string()))?;
    let record = ModuleRecord::from_bytes(Bytes::from_bytes_vec(weights))
        .map_err(|e| corrupt(path, format!("model weights: {e}")))?;
    let loaded = match blank {
        Model::Mlp(m) => m.try_load_record(record).map(Model::Mlp),
        Model::Cnn(c) => c.try_load_record(record).map(Model::Cnn),
    };
    loaded.map_err(|e| {
        corrupt(
            path,
            format!("model weights do not fit the architecture: {e}"),
        )
    })
}

/// Saves `model` (architecture and weights) to `path`, atomically.
pub fn save_model(model: &Model, path: &Path) -> Result<(), FileError> {
    let header =
        serde_json::to_vec(&ModelHeader::of(model)).map_err(|e| corrupt(path, e.to_string()))?;
    let weights = model_bytes(model, path)?;
    atomic_write_bytes(path, &encode(MODEL_MAGIC, &header, &[&weights]))
}

/// Loads a model file onto `device` (any backend: the weights are backend-neutral). A
/// checkpoint is accepted too, for the model it holds.
pub fn load_model(path: &Path, device: &Device) -> Result<(Model, ModelHeader), FileError> {
    #[derive(Deserialize)]
    struct CheckpointHeader {
        model: ModelHeader,
    }
    let file = read_container_file(path, &[MODEL_MAGIC, CHECKPOINT_MAGIC])?;
    let header: ModelHeader = if &file.magic == MODEL_MAGIC {
        serde_json::from_slice(&file.header)
    } else {
        serde_json::from_slice::<CheckpointHeader>(&file.header).map(|h| h.model)
    }
    .map_err(|e| corrupt(path, format!("header: {e}")))?;
    let sections = if &file.magic == MODEL_MAGIC { 1 } else { 2 };
    if file.sections.len() != sections {
        return Err(corrupt(
            path,
            format!("{} sections, expected {sections}", file.sections.len()),
        ));
    }
    let weights = file.sections.into_iter().next().unwrap_or_default();
    Ok((load_weights(&header, weights, device, path)?, header))
}

/// Writes the state of a training session to `path`, atomically: model, optimizer state and
/// progress (history, best epochs, a partly done epoch).
pub fn save_checkpoint(path: &Path, session: &Session) -> Result<(), FileError> {
    #[derive(Serialize)]
    struct Header<'a> {
        model: ModelHeader,
        progress: &'a TrainingRecord,
    }
    let header = serde_json::to_vec(&Header {
        model: ModelHeader::of(&session.model),
        progress: &session.record,
    })
    .map_err(|e| corrupt(path, e.to_string()))?;
    let weights = model_bytes(&session.model, path)?;
    let optim = session
        .optimizer
        .into_bytes()
        .map_err(|e| corrupt(path, format!("serialising the optimizer: {e}")))?;
    atomic_write_bytes(
        path,
        &encode(CHECKPOINT_MAGIC, &header, &[&weights, &optim[..]]),
    )
}

/// Reads a checkpoint back into a session on `device` (a plain device: the model gets autodiff
/// here), ready to continue training. burn puts the optimizer state on its default device
/// (`BURN_DEVICE`, else the GPU when wgpu is built in) and moves it at the next step; the
/// `trainer` binary sets `BURN_DEVICE=flex` so no GPU is opened unasked.
/// `config` is the run's recipe, which decides the optimizer.
pub fn load_checkpoint(
    path: &Path,
    config: &TrainConfig,
    device: &Device,
) -> Result<Session, FileError> {
    #[derive(Deserialize)]
    struct Header {
        model: ModelHeader,
        progress: TrainingRecord,
    }
    let file = read_container_file(path, &[CHECKPOINT_MAGIC])?;
    let header: Header =
        serde_json::from_slice(&file.header).map_err(|e| corrupt(path, format!("header: {e}")))?;
    let Ok([weights, optim]) = <[Vec<u8>; 2]>::try_from(file.sections) else {
        return Err(corrupt(path, "expected weights and optimizer sections"));
    };
    let model = load_weights(&header.model, weights, &device.clone().autodiff(), path)?;
    let optimizer = optimizer(config)
        .from_bytes(Bytes::from_bytes_vec(optim))
        .map_err(|e| corrupt(path, format!("optimizer state: {e}")))?;
    Ok(Session {
        model,
        optimizer,
        record: header.progress,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::Tensor;

    fn decode(magic: &[u8; 8], bytes: &[u8]) -> Result<(Vec<u8>, Vec<Vec<u8>>), String> {
        match read_container(bytes, &[magic]) {
            Ok(c) => Ok((c.header, c.sections)),
            Err(ReadFail::Corrupt(m)) => Err(m),
            Err(ReadFail::Io(e)) => Err(e.to_string()),
        }
    }

    #[test]
    fn container_round_trips_and_detects_damage() {
        let bytes = encode(MODEL_MAGIC, b"{}", &[b"abc", b""]);
        let (h, s) = decode(MODEL_MAGIC, &bytes).unwrap();
        assert_eq!((h, s), (b"{}".to_vec(), vec![b"abc".to_vec(), vec![]]));
        for cut in 0..bytes.len() {
            assert!(decode(MODEL_MAGIC, &bytes[..cut]).is_err(), "cut at {cut}");
        }
        for at in 0..bytes.len() {
            let mut flipped = bytes.clone();
            flipped[at] ^= 1;
            assert!(decode(MODEL_MAGIC, &flipped).is_err(), "flip at {at}");
        }
        let mut flipped = bytes.clone();
        flipped[30] ^= 1; // the "a" of "abc": only the checksum can tell
        assert!(
            decode(MODEL_MAGIC, &flipped)
                .unwrap_err()
                .contains("checksum")
        );
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(
            decode(MODEL_MAGIC, &longer)
                .unwrap_err()
                .contains("continues past")
        );
        assert!(
            decode(CHECKPOINT_MAGIC, &bytes)
                .unwrap_err()
                .contains("a trainer model file, expected a trainer checkpoint")
        );
    }

    /// A container is read no further than its lengths promise (and one byte to tell trailing
    /// data), and a damaged length costs no memory it does not have data for.
    #[test]
    fn reading_stops_at_what_the_lengths_promise() {
        use crate::test_support::Endless;
        let bytes = encode(MODEL_MAGIC, b"{}", &[b"abc"]);
        let mut reader = std::io::Cursor::new(bytes).chain(Endless(0));
        assert!(matches!(
            read_container(&mut reader, &[MODEL_MAGIC]),
            Err(ReadFail::Corrupt(m)) if m.contains("continues past")
        ));
        assert!(reader.into_inner().1.0 <= 8192);
        // A section that promises the limit, followed by only a little data.
        let mut bytes = MODEL_MAGIC.to_vec();
        bytes.extend_from_slice(&0u64.to_le_bytes());
        bytes.extend_from_slice(&1u32.to_le_bytes());
        bytes.extend_from_slice(&MAX_SECTION_BYTES.to_le_bytes());
        bytes.extend_from_slice(&[0; 100]);
        assert!(matches!(
            read_container(&bytes[..], &[MODEL_MAGIC]),
            Err(ReadFail::Corrupt(m)) if m.contains("truncated")
        ));
    }

    proptest::proptest! {
        /// Random bytes, and random damage to a real model file, give an error or a model,
        /// never a panic.
        #[test]
        fn model_files_never_panic(
            noise in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..200),
            at in 0usize..1_000_000,
            byte in proptest::prelude::any::<u8>(),
        ) {
            let device = Device::flex();
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("m.model");
            std::fs::write(&path, &noise).unwrap();
            proptest::prop_assert!(load_model(&path, &device).is_err());
            let model = Model::new(Architecture::Mlp, &[3], 1, &device).unwrap();
            save_model(&model, &path).unwrap();
            let mut bytes = std::fs::read(&path).unwrap();
            let at = at % bytes.len();
            bytes[at] = byte;
            std::fs::write(&path, &bytes).unwrap();
            let _ = load_model(&path, &device);
        }
    }

    /// A well-formed file whose header describes an enormous network is refused before the
    /// network is built.
    #[test]
    fn a_header_larger_than_its_weights_is_refused() {
        let path = tempfile::tempdir().unwrap().keep().join("huge.model");
        let header = serde_json::to_vec(&ModelHeader {
            architecture: Architecture::Mlp,
            hidden: vec![1 << 40, 1 << 40],
            trainer_version: "0".into(),
        })
        .unwrap();
        atomic_write_bytes(&path, &encode(MODEL_MAGIC, &header, &[&[0; 64]])).unwrap();
        let err = load_model(&path, &Device::flex()).unwrap_err().to_string();
        assert!(
            err.contains("huge.model") && err.contains("the header describes mlp"),
            "{err}"
        );
    }

    #[test]
    fn model_file_round_trips() {
        let device = Device::flex();
        let dir = tempfile::tempdir().unwrap();
        for (architecture, hidden) in [
            (Architecture::Mlp, vec![12, 7]),
            (Architecture::Cnn, vec![]),
        ] {
            let path = dir.path().join("m.model");
            let model = Model::new(architecture, &hidden, 3, &device).unwrap();
            save_model(&model, &path).unwrap();
            let (loaded, header) = load_model(&path, &device).unwrap();
            assert_eq!((header.architecture, header.hidden), (architecture, hidden));
            let x = Tensor::<2>::ones([2, 784], &device);
            let a = model.forward(x.clone()).into_data();
            let b = loaded.forward(x).into_data();
            assert_eq!(a, b);
        }
    }
}
