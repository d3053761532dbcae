//! The run's records: `config.json` (the recipe and every start), `test.json` (the test
//! result), and the plain result line on stdout.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::backend::DeviceInfo;
use crate::data::{DataFormat, DataInfo};
use crate::metrics::{ClassStats, Confusion, Metrics};
use crate::recipe::TrainConfig;

/// One start of a run (the first, or a resume).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Start {
    /// When, as RFC 3339 UTC.
    pub at: String,
    /// The command line.
    pub args: Vec<String>,
    /// The device trained on.
    pub device: DeviceInfo,
    /// Epochs already done at this start.
    pub from_epoch: usize,
    /// How this start ended, written as it does (none: still going, or its process was
    /// killed before it could say).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ended: Option<Ending>,
}

/// How a start of a run ended.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Ending {
    /// When, as RFC 3339 UTC.
    pub at: String,
    /// Finished, stopped or failed.
    pub how: EndKind,
    /// The error of a failed start, as the command printed it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// The ways a start of a run ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EndKind {
    /// Every epoch trained (or stopped early by `--patience`) and the model tested.
    Finished,
    /// Interrupted (Ctrl-C, SIGTERM): the checkpoint is kept, `--resume` continues.
    Stopped,
    /// Stopped by an error.
    Failed,
}

/// What a run was trained on: the data flags as resolved, and the data's identity.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DataRecord {
    /// The source's kind.
    pub format: DataFormat,
    /// `--image-size`, if given.
    #[serde(default)]
    pub image_size: Option<(usize, usize)>,
    /// `--channels`, if given.
    #[serde(default)]
    pub channels: Option<usize>,
    /// `--skip-bad`.
    #[serde(default)]
    pub skip_bad: bool,
    /// The data's identity: image shape, class names, how pictures are prepared.
    pub info: DataInfo,
}

/// `config.json`: everything needed to know, and to continue, what a run did.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunConfig {
    /// `trainer`'s version.
    pub trainer_version: String,
    /// The recipe.
    pub recipe: TrainConfig,
    /// The data (`--data`).
    pub data_dir: PathBuf,
    /// What the data was and how it was read (a run recorded before data other than MNIST's
    /// IDX files: MNIST's).
    #[serde(default)]
    pub data: Option<DataRecord>,
    /// Batches prepared ahead of the step.
    pub prefetch: usize,
    /// Which checkpoints are kept.
    pub keep: String,
    /// Every start of the run, first first.
    pub starts: Vec<Start>,
}

impl RunConfig {
    /// Whether the run's last start said it finished. A start killed after the run's last
    /// files were written, before it could say so, did not: the run is complete but not
    /// finished, and the same command again finishes it.
    pub fn last_start_finished(&self) -> bool {
        self.starts
            .last()
            .and_then(|s| s.ended.as_ref())
            .is_some_and(|e| e.how == EndKind::Finished)
    }
}

/// `test.json`, and what `evaluate --json` prints.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TestReport {
    /// The model file evaluated.
    pub model: PathBuf,
    /// Loss and accuracy.
    pub metrics: Metrics,
    /// Per-class precision, recall and accuracy.
    pub per_class: Vec<ClassStats>,
    /// The confusion matrix.
    pub confusion: Confusion,
    /// The class names, label order (a report written before names: the labels' numbers).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub classes: Vec<String>,
}

impl TestReport {
    /// The report of `metrics` and the confusion of `truth` vs `predicted` over the classes
    /// `classes` names. MNIST's digits are not written out (they are their numbers), so its
    /// `test.json` stays as it was.
    pub fn new(
        model: &Path,
        metrics: Metrics,
        truth: &[u8],
        predicted: &[u8],
        classes: &[String],
    ) -> Self {
        let confusion = Confusion::new(truth, predicted, classes.len());
        let numbered = classes.iter().enumerate().all(|(i, c)| *c == i.to_string());
        Self {
            model: model.to_path_buf(),
            metrics,
            per_class: confusion.per_class(),
            confusion,
            classes: if numbered {
                Vec::new()
            } else {
                classes.to_vec()
            },
        }
    }

    /// The report as a terminal table.
    pub fn table(&self) -> String {
        format!(
            "test loss {:.4}, accuracy {:.4} on {} images\n\n{}",
            self.metrics.loss,
            self.metrics.accuracy,
            self.metrics.count,
            self.confusion.table(&self.classes)
        )
    }
}

/// The plain line a script reads from stdout at the end of a run.
pub fn result_line(test: &Metrics) -> String {
    format!(
        "test_loss={:.4} test_acc={:.4} test_images={}",
        test.loss, test.accuracy, test.count
    )
}

/// The current time as RFC 3339 UTC, for the records.
pub fn now() -> String {
    humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string()
}
