//! Files other tools read and write: a model in PyTorch's layout ([`torch`]) as safetensors
//! (read and written), as an ONNX graph (written), and a run's history as a TensorBoard event
//! file.

pub mod onnx;
pub mod safetensors;
pub mod tensorboard;
pub mod torch;

use std::path::{Path, PathBuf};

use burn::tensor::Device;

use crate::backend::read::ReadError;
use crate::checkpoint;
use crate::data::DataInfo;
use crate::files::{self, FileError};
use crate::model::{Architecture, Model};
use torch::{TorchLayoutError, from_torch_layers};

/// What can go wrong reading or writing a file of another tool. Each names the file.
#[derive(Debug, thiserror::Error)]
pub enum InteropError {
    /// The file system refused, or the bytes are not a file of the expected kind or are
    /// damaged: the errors of `trainer`'s own files, with the same words.
    #[error(transparent)]
    File(#[from] FileError),
    /// The tensors make no network `trainer` has.
    #[error("{path}: {source}")]
    Layout {
        /// The file.
        path: PathBuf,
        /// What does not fit.
        source: TorchLayoutError,
    },
    /// The file's extension names no format `trainer` writes.
    #[error("--out {0}: the extension must be .safetensors or .onnx")]
    Format(PathBuf),
    /// The model's weights could not be read back from the device.
    #[error(transparent)]
    Read(#[from] ReadError),
}

/// Whether `path` names a safetensors file (by its extension).
pub fn is_safetensors(path: &Path) -> bool {
    path.extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("safetensors"))
}

/// Writes `model` (trained on `data`) to `out` in the format its extension names:
/// `.safetensors` (PyTorch's layout) or `.onnx`.
pub fn export(model: &Model, data: &DataInfo, out: &Path) -> Result<(), InteropError> {
    let extension = out
        .extension()
        .map(|e| e.to_string_lossy().to_ascii_lowercase());
    let bytes = match extension.as_deref() {
        Some("safetensors") => safetensors::encode(model, data, out)?,
        Some("onnx") => onnx::encode(model, data, out)?,
        _ => return Err(InteropError::Format(out.to_path_buf())),
    };
    Ok(files::atomic_write_bytes(out, &bytes)?)
}

/// A model read from a file, and what the file says of it.
pub struct Loaded {
    /// The network.
    pub model: Model,
    /// Which network.
    pub architecture: Architecture,
    /// The MLP's hidden widths.
    pub hidden: Vec<usize>,
    /// What it was trained on (MNIST's for files that do not say).
    pub data: DataInfo,
}

/// Loads the model at `path` onto `device`: a safetensors file in PyTorch's layout, or
/// `trainer`'s own model file or checkpoint.
pub fn load_model(path: &Path, device: &Device) -> Result<Loaded, InteropError> {
    if is_safetensors(path) {
        let file = safetensors::read(path)?;
        let model = from_torch_layers(
            file.architecture,
            &file.hidden,
            &file.data,
            file.layers,
            device,
        )
        .map_err(|source| InteropError::Layout {
            path: path.to_path_buf(),
            source,
        })?;
        return Ok(Loaded {
            model,
            architecture: file.architecture,
            hidden: file.hidden,
            data: file.data,
        });
    }
    let (model, header) = checkpoint::load_model(path, device)?;
    Ok(Loaded {
        model,
        architecture: header.architecture,
        hidden: header.hidden,
        data: header.data,
    })
}
