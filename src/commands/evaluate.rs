//! `trainer evaluate`: a model's test loss and accuracy, per-class metrics, confusion matrix,
//! on data of the model's kind (its input shape and classes), the classes by name.

use super::Error;
use crate::backend;
use crate::data::{self, SplitSizes};
use crate::files;
use crate::gpu::gather::GatherMethod;
use crate::interop;
use crate::loader::Assembler;
use crate::plan::EvaluatePlan;
use crate::run::TestReport;
use crate::training::{self, Feed, StepMethod};

/// Evaluates the model `plan` names on the test set.
pub(super) fn evaluate(plan: &EvaluatePlan) -> Result<String, Error> {
    let sizes = SplitSizes {
        valid: Some(0),
        test: plan.test_size,
    };
    let data = data::load(&plan.data, sizes)?;
    let test = match plan.test_limit {
        Some(n) => data.test.slice(0..n.min(data.test.len())),
        None => data.test,
    };
    let device = backend::open(plan.device.request(None, false))?;
    let loaded = interop::load_model(&plan.model, &device.device)?;
    if let Some(why) = loaded.data.difference(&data.info, "the model's") {
        return Err(Error::DataDiffers(format!(
            "--data {}: {why}",
            plan.data.path.display()
        )));
    }
    let assembler = Assembler::Host {
        split: test.clone(),
        device: device.device.clone(),
    };
    let host = Feed {
        prefetch: 2,
        gather: GatherMethod::Host,
        step: StepMethod::Generic,
    };
    let (metrics, predicted) = training::evaluate(&loaded.model, &assembler, &host)?;
    if let Some(path) = &plan.predictions {
        let mut csv = String::from("image,label,predicted\n");
        for (i, (label, class)) in test.labels().iter().zip(&predicted).enumerate() {
            csv.push_str(&format!("{i},{label},{class}\n"));
        }
        files::atomic_write_bytes(path, csv.as_bytes())?;
    }
    let report = TestReport::new(
        &plan.model,
        metrics,
        test.labels(),
        &predicted,
        &loaded.data.classes,
    );
    Ok(if plan.json {
        serde_json::to_string(&report).unwrap_or_default()
    } else {
        report.table()
    })
}
