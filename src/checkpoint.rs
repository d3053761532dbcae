//! Files that keep a run's work: model files and checkpoints, written atomically.
//!
//! Both are one container: a magic tag, a JSON header, binary sections (burn's burnpack bytes
//! for the model and for the optimizer state), and a CRC-32 of everything before it, so a
//! truncated or corrupted file is reported as such instead of half-loaded.
//!
//! Both are written atomically (see [`crate::files::atomic_write`]): a crash, a full disk or a
//! second Ctrl-C mid-write leaves the previous file intact.

use std::path::Path;

use burn::module::Module;
use burn::store::ModuleRecord;
use burn::tensor::{Bytes, Device};
use serde::{Deserialize, Serialize};

use crate::data::DataInfo;
use crate::files::container::{
    CHECKPOINT_MAGIC, MODEL_MAGIC, read_container_file, write_container,
};
use crate::files::{FileError, atomic_write, corrupt};
use crate::model::{Architecture, Model};
use crate::recipe::{TrainConfig, optimizer};
use crate::session::{Session, TrainingRecord};

/// What a model file says about its model, enough to rebuild it before loading the weights,
/// and what it was trained on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelHeader {
    /// Which network: `"mlp"` or `"cnn"`.
    pub architecture: Architecture,
    /// The MLP's hidden layer widths (empty for the CNN).
    pub hidden: Vec<usize>,
    /// The version of `trainer` that wrote the file.
    pub trainer_version: String,
    /// The data it was trained on: input shape, class names, how pictures are prepared
    /// (files written before these were MNIST's).
    #[serde(default = "DataInfo::mnist")]
    pub data: DataInfo,
}

impl ModelHeader {
    /// The header of `model`, trained on `data`.
    pub fn of(model: &Model, data: &DataInfo) -> Self {
        Self {
            architecture: model.architecture(),
            hidden: model.hidden(),
            trainer_version: env!("CARGO_PKG_VERSION").into(),
            data: data.clone(),
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
        .parameter_count(&header.hidden, &header.data)
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
    let blank = Model::new(header.architecture, &header.hidden, &header.data, 0, device)
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
pub fn save_model(model: &Model, data: &DataInfo, path: &Path) -> Result<(), FileError> {
    let header = serde_json::to_vec(&ModelHeader::of(model, data))
        .map_err(|e| corrupt(path, e.to_string()))?;
    let weights = model_bytes(model, path)?;
    atomic_write(path, |f| {
        write_container(f, MODEL_MAGIC, &header, &[&weights])
    })
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
        model: ModelHeader::of(&session.model, &session.data),
        progress: &session.record,
    })
    .map_err(|e| corrupt(path, e.to_string()))?;
    let weights = model_bytes(&session.model, path)?;
    let optim = session
        .optimizer
        .into_bytes()
        .map_err(|e| corrupt(path, format!("serialising the optimizer: {e}")))?;
    atomic_write(path, |f| {
        write_container(f, CHECKPOINT_MAGIC, &header, &[&weights, &optim[..]])
    })
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
        data: header.model.data,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::Tensor;

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
            let model = Model::new(Architecture::Mlp, &[3], &crate::data::DataInfo::mnist(), 1, &device).unwrap();
            save_model(&model, &crate::data::DataInfo::mnist(), &path).unwrap();
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
            data: DataInfo::mnist(),
            architecture: Architecture::Mlp,
            hidden: vec![1 << 40, 1 << 40],
            trainer_version: "0".into(),
        })
        .unwrap();
        crate::files::atomic_write_bytes(
            &path,
            &crate::files::container::encode_container(MODEL_MAGIC, &header, &[&[0; 64]]),
        )
        .unwrap();
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
            let model = Model::new(
                architecture,
                &hidden,
                &crate::data::DataInfo::mnist(),
                3,
                &device,
            )
            .unwrap();
            save_model(&model, &crate::data::DataInfo::mnist(), &path).unwrap();
            let (loaded, header) = load_model(&path, &device).unwrap();
            assert_eq!((header.architecture, header.hidden), (architecture, hidden));
            let x = Tensor::<2>::ones([2, 784], &device);
            let a = model.forward(x.clone()).into_data();
            let b = loaded.forward(x).into_data();
            assert_eq!(a, b);
        }
    }
}
