//! `trainer evaluate`: a model's test loss and accuracy, per-class metrics, confusion matrix.

use super::{Error, init_device, model_file};
use crate::checkpoint;
use crate::cli::{DEFAULT_BACKEND, EvaluateArgs};
use crate::data::Mnist;
use crate::gpu::gather::GatherMethod;
use crate::interop;
use crate::loader::Assembler;
use crate::loader::{Feed, StepMethod};
use crate::report::TestReport;
use crate::train;

/// Evaluates the model `args` name on the test set.
pub(super) fn evaluate(args: &EvaluateArgs) -> Result<String, Error> {
    let mnist = Mnist::load(&args.data.data_dir)?;
    let test = match args.test_limit {
        Some(n) => mnist.test.slice(0..n.min(mnist.test.len())),
        None => mnist.test,
    };
    let device = init_device(&args.device, DEFAULT_BACKEND, false)?;
    let model_path = model_file(&args.model, args.best);
    let (model, ..) = interop::load_model(&model_path, &device.device)?;
    let data = Assembler::Host {
        split: test.clone(),
        device: device.device.clone(),
    };
    let host = Feed {
        prefetch: 2,
        gather: GatherMethod::Host,
        step: StepMethod::Generic,
    };
    let (metrics, predicted) = train::evaluate(&model, &data, &host)?;
    if let Some(path) = &args.predictions {
        let mut csv = String::from("image,label,predicted\n");
        for (i, (label, class)) in test.labels.iter().zip(&predicted).enumerate() {
            csv.push_str(&format!("{i},{label},{class}\n"));
        }
        checkpoint::atomic_write_bytes(path, csv.as_bytes())?;
    }
    let report = TestReport::new(&model_path, metrics, &test.labels, &predicted);
    Ok(if args.json {
        serde_json::to_string(&report).unwrap_or_default()
    } else {
        report.table()
    })
}
