//! `trainer evaluate`: a model's test loss and accuracy, per-class metrics, confusion matrix.

use super::Error;
use crate::backend;
use crate::data::Mnist;
use crate::files;
use crate::gpu::gather::GatherMethod;
use crate::interop;
use crate::loader::Assembler;
use crate::plan::EvaluatePlan;
use crate::run::TestReport;
use crate::training::{self, Feed, StepMethod};

/// Evaluates the model `plan` names on the test set.
pub(super) fn evaluate(plan: &EvaluatePlan) -> Result<String, Error> {
    let mnist = Mnist::load(&plan.data_dir)?;
    let test = match plan.test_limit {
        Some(n) => mnist.test.slice(0..n.min(mnist.test.len())),
        None => mnist.test,
    };
    let device = backend::open(plan.device.request(None, false))?;
    let (model, ..) = interop::load_model(&plan.model, &device.device)?;
    let data = Assembler::Host {
        split: test.clone(),
        device: device.device.clone(),
    };
    let host = Feed {
        prefetch: 2,
        gather: GatherMethod::Host,
        step: StepMethod::Generic,
    };
    let (metrics, predicted) = training::evaluate(&model, &data, &host)?;
    if let Some(path) = &plan.predictions {
        let mut csv = String::from("image,label,predicted\n");
        for (i, (label, class)) in test.labels.iter().zip(&predicted).enumerate() {
            csv.push_str(&format!("{i},{label},{class}\n"));
        }
        files::atomic_write_bytes(path, csv.as_bytes())?;
    }
    let report = TestReport::new(&plan.model, metrics, &test.labels, &predicted);
    Ok(if plan.json {
        serde_json::to_string(&report).unwrap_or_default()
    } else {
        report.table()
    })
}
