//! `trainer export`: a model for other tools, as PyTorch-layout safetensors or ONNX.

use tracing::info;

use super::{Error, model_file};
use crate::interop;

/// Writes the model `args` names to `args.out` in the format of its extension; returns the
/// line that says what was written.
pub(super) fn export(args: &crate::cli::ExportArgs) -> Result<String, Error> {
    let model_path = model_file(&args.model, args.best);
    // Read on the CPU: the weights are only copied into the file.
    let (model, architecture, hidden) =
        interop::load_model(&model_path, &burn::tensor::Device::flex())?;
    interop::export(&model, &args.out)?;
    info!(model = %model_path.display(), out = %args.out.display(), %architecture, ?hidden, "exported");
    Ok(format!(
        "{}: {architecture} {hidden:?} from {}",
        args.out.display(),
        model_path.display()
    ))
}
