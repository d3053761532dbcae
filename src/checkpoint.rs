//! Files that keep a run's work: model files and checkpoints, written atomically.
//!
//! Both are one container: a magic tag, a JSON header, binary sections (burn's burnpack bytes
//! for the model and for the optimizer state), and a CRC-32 of everything before it, so a
//! truncated or corrupted file is reported as such instead of half-loaded.
//!
//! Every write goes to a temporary file in the same directory, is flushed to disk, then renamed
//! over the target: a crash, a full disk or a second Ctrl-C mid-write leaves the previous file
//! intact, never a half-written one under the real name.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use burn::module::Module;
use burn::store::ModuleRecord;
use burn::tensor::{Bytes, Device};
use serde::{Deserialize, Serialize};

use crate::model::{Architecture, Model};
use crate::training::{Progress, Session, TrainConfig, optimizer};

const MODEL_MAGIC: &[u8; 8] = b"TRNRMDL1";
const CHECKPOINT_MAGIC: &[u8; 8] = b"TRNRCKP1";

/// What can go wrong reading or writing a model file or checkpoint. Each names the file.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    /// The file system refused.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The bytes are not a file of the expected kind, or are damaged.
    #[error("{path}: {problem}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        problem: String,
    },
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> CheckpointError + '_ {
    move |source| CheckpointError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn corrupt(path: &Path, problem: impl Into<String>) -> CheckpointError {
    CheckpointError::Corrupt {
        path: path.to_path_buf(),
        problem: problem.into(),
    }
}

/// Writes `path` atomically: the bytes `write` produces go to a temporary file beside it, which
/// is synced and renamed over `path` only when complete. On any error the temporary file is
/// removed and `path` keeps its previous content.
pub fn atomic_write(
    path: &Path,
    write: impl FnOnce(&mut File) -> std::io::Result<()>,
) -> Result<(), CheckpointError> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
    let result = (|| {
        let mut file = File::create(&tmp)?;
        write(&mut file)?;
        file.sync_all()?;
        std::fs::rename(&tmp, path)?;
        // Make the rename itself durable (best effort: not every platform can open a directory).
        if let Ok(d) = File::open(dir) {
            let _ = d.sync_all();
        }
        Ok(())
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result.map_err(io_err(path))
}

/// Writes `bytes` to `path` atomically (see [`atomic_write`]).
pub fn atomic_write_bytes(path: &Path, bytes: &[u8]) -> Result<(), CheckpointError> {
    atomic_write(path, |f| f.write_all(bytes))
}

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

/// Splits a container into its JSON header and sections, checking magic, lengths and CRC.
fn decode<'a>(magic: &[u8; 8], bytes: &'a [u8]) -> Result<(&'a [u8], Vec<&'a [u8]>), String> {
    let kind = |m: &[u8]| match m {
        m if m == MODEL_MAGIC => "a trainer model file",
        m if m == CHECKPOINT_MAGIC => "a trainer checkpoint",
        _ => "not a trainer file",
    };
    if bytes.len() < 8 + 8 + 4 + 4 {
        return Err("too short: truncated or not a trainer file".into());
    }
    if &bytes[..8] != magic {
        return Err(format!("{}, expected {}", kind(&bytes[..8]), kind(magic)));
    }
    let (body, crc) = bytes.split_at(bytes.len() - 4);
    if crc32fast::hash(body) != u32::from_le_bytes([crc[0], crc[1], crc[2], crc[3]]) {
        return Err("checksum mismatch: the file is truncated or corrupted".into());
    }
    let mut rest = &body[8..];
    let mut take = |n: usize| -> Result<&'a [u8], String> {
        if rest.len() < n {
            return Err("section lengths run past the end of the file".into());
        }
        let (head, tail) = rest.split_at(n);
        rest = tail;
        Ok(head)
    };
    let len = |b: &[u8]| usize::try_from(u64::from_le_bytes(b.try_into().unwrap_or([0xff; 8])));
    let header_len = len(take(8)?).map_err(|e| e.to_string())?;
    let header = take(header_len)?;
    let count = u32::from_le_bytes(take(4)?.try_into().unwrap_or([0; 4]));
    let mut sections = Vec::with_capacity(count.min(16) as usize);
    for _ in 0..count {
        let n = len(take(8)?).map_err(|e| e.to_string())?;
        sections.push(take(n)?);
    }
    Ok((header, sections))
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
fn model_bytes(model: &Model, path: &Path) -> Result<Vec<u8>, CheckpointError> {
    let bytes = match model {
        Model::Mlp(m) => m.clone().into_record().into_bytes(),
        Model::Cnn(c) => c.clone().into_record().into_bytes(),
    }
    .map_err(|e| corrupt(path, format!("serialising the model: {e}")))?;
    Ok(bytes.to_vec())
}

fn load_weights(
    header: &ModelHeader,
    weights: &[u8],
    device: &Device,
    path: &Path,
) -> Result<Model, CheckpointError> {
    let blank = Model::new(header.architecture, &header.hidden, 0, device)
        .map_err(|e| corrupt(path, e.to_string()))?;
    let record = ModuleRecord::from_bytes(Bytes::from_bytes_vec(weights.to_vec()))
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
pub fn save_model(model: &Model, path: &Path) -> Result<(), CheckpointError> {
    let header =
        serde_json::to_vec(&ModelHeader::of(model)).map_err(|e| corrupt(path, e.to_string()))?;
    let weights = model_bytes(model, path)?;
    atomic_write_bytes(path, &encode(MODEL_MAGIC, &header, &[&weights]))
}

/// Loads a model file onto `device` (any backend: the weights are backend-neutral).
pub fn load_model(path: &Path, device: &Device) -> Result<(Model, ModelHeader), CheckpointError> {
    let bytes = std::fs::read(path).map_err(io_err(path))?;
    let (header, sections) = decode(MODEL_MAGIC, &bytes).map_err(|p| corrupt(path, p))?;
    let header: ModelHeader =
        serde_json::from_slice(header).map_err(|e| corrupt(path, format!("header: {e}")))?;
    let [weights] = sections[..] else {
        return Err(corrupt(path, "expected one weights section"));
    };
    Ok((load_weights(&header, weights, device, path)?, header))
}

/// Writes the state of a training session to `path`, atomically: model, optimizer state and
/// progress (history, best epochs, a partly done epoch).
pub fn save_checkpoint(path: &Path, session: &Session) -> Result<(), CheckpointError> {
    #[derive(Serialize)]
    struct Header<'a> {
        model: ModelHeader,
        progress: &'a Progress,
    }
    let header = serde_json::to_vec(&Header {
        model: ModelHeader::of(&session.model),
        progress: &session.progress,
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
) -> Result<Session, CheckpointError> {
    #[derive(Deserialize)]
    struct Header {
        model: ModelHeader,
        progress: Progress,
    }
    let bytes = std::fs::read(path).map_err(io_err(path))?;
    let (header, sections) = decode(CHECKPOINT_MAGIC, &bytes).map_err(|p| corrupt(path, p))?;
    let header: Header =
        serde_json::from_slice(header).map_err(|e| corrupt(path, format!("header: {e}")))?;
    let [weights, optim] = sections[..] else {
        return Err(corrupt(path, "expected weights and optimizer sections"));
    };
    let model = load_weights(&header.model, weights, &device.clone().autodiff(), path)?;
    let optimizer = optimizer(config)
        .from_bytes(Bytes::from_bytes_vec(optim.to_vec()))
        .map_err(|e| corrupt(path, format!("optimizer state: {e}")))?;
    Ok(Session {
        model,
        optimizer,
        progress: header.progress,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::Tensor;

    #[test]
    fn container_round_trips_and_detects_damage() {
        let bytes = encode(MODEL_MAGIC, b"{}", &[b"abc", b""]);
        let (h, s) = decode(MODEL_MAGIC, &bytes).unwrap();
        assert_eq!((h, s), (&b"{}"[..], vec![&b"abc"[..], &b""[..]]));
        for cut in 0..bytes.len() {
            assert!(decode(MODEL_MAGIC, &bytes[..cut]).is_err(), "cut at {cut}");
        }
        let mut flipped = bytes.clone();
        flipped[20] ^= 1;
        assert!(
            decode(MODEL_MAGIC, &flipped)
                .unwrap_err()
                .contains("checksum")
        );
        assert!(
            decode(CHECKPOINT_MAGIC, &bytes)
                .unwrap_err()
                .contains("a trainer model file, expected a trainer checkpoint")
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

    #[test]
    fn failed_write_leaves_the_previous_file_intact() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("checkpoint.ckpt");
        atomic_write_bytes(&path, b"good").unwrap();
        let err = atomic_write(&path, |f| {
            f.write_all(b"half")?;
            Err(std::io::Error::other("disk full"))
        })
        .unwrap_err();
        assert!(
            err.to_string().contains("checkpoint.ckpt") && err.to_string().contains("disk full")
        );
        assert_eq!(std::fs::read(&path).unwrap(), b"good");
        let leftovers: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(leftovers.len(), 1, "no temporary file left behind");
    }
}
