//! `trainer export`: a model for other tools, as PyTorch-layout safetensors or ONNX.

use tracing::info;

use super::Error;
use crate::interop;
use crate::plan::ExportPlan;

/// Writes the model `plan` names to its `out` in the format of its extension; returns the
/// line that says what was written.
pub(super) fn export(plan: &ExportPlan) -> Result<String, Error> {
    // Read on the CPU: the weights are only copied into the file.
    let loaded = interop::load_model(&plan.model, &burn::tensor::Device::flex())?;
    let (architecture, hidden) = (loaded.architecture, &loaded.hidden);
    interop::export(&loaded.model, &loaded.data, &plan.out)?;
    info!(model = %plan.model.display(), out = %plan.out.display(), %architecture, ?hidden, "exported");
    Ok(format!(
        "{}: {architecture} {hidden:?} from {}",
        plan.out.display(),
        plan.model.display()
    ))
}
