//! The plan: what a command is to do, every flag resolved into the value it means. `cli`
//! makes it once from the command line; `commands` carry it out and never look at a flag
//! again.

use std::collections::BTreeSet;
use std::path::PathBuf;

use crate::backend::{DeviceChoice, WgpuApi};
use crate::data::{DataInfo, DataRequest};
use crate::logging::LogOptions;
use crate::recipe::TrainConfig;
use crate::run::epochs::Keep;
pub use crate::serve::ServePlan;
use crate::sweep::{Point, Shard};
use crate::training::Feed;

/// A command line, resolved: how to log, and what to do.
#[derive(Debug, Clone)]
pub struct Invocation {
    /// The logging the flags ask for (a sweep's flags after `--` included).
    pub log: LogOptions,
    /// What to do.
    pub plan: Plan,
}

/// What `trainer` is to do.
#[derive(Debug, Clone)]
pub enum Plan {
    /// Train a run (the default command).
    Train(TrainPlan),
    /// List the wgpu adapters of a graphics API.
    ListDevices(WgpuApi),
    /// Evaluate a model on the test set.
    Evaluate(EvaluatePlan),
    /// Classify pictures.
    Predict(PredictPlan),
    /// Redraw a run directory's plots.
    Plot(PathBuf),
    /// Train a grid of recipes, or rebuild its tables.
    Sweep(SweepPlan),
    /// Write a model for other tools.
    Export(ExportPlan),
    /// Serve the page over runs and sweeps.
    Serve(ServePlan),
}

/// Where a run's directory comes from.
#[derive(Debug, Clone, PartialEq)]
pub enum RunStart {
    /// A new run: in this directory, or a fresh `runs/<UTC time>`.
    New(Option<PathBuf>),
    /// Continue the run in this directory (or start it there if nothing was saved yet).
    Resume(PathBuf),
}

/// A training run, as the flags describe it.
#[derive(Debug, Clone)]
pub struct TrainPlan {
    /// New or resumed, and where.
    pub start: RunStart,
    /// The recipe the flags describe, defaults filled in for the network asked for.
    pub recipe: TrainConfig,
    /// The recipe flags written on the command line (`--lr`, …): on `--resume` each must
    /// repeat the run's recorded value (`--epochs` extends the run); with `--init-from`,
    /// `--model` and `--hidden` must be the file's network.
    pub given: BTreeSet<String>,
    /// `--init-from` as written (the recipe records it whole), for reading and messages.
    pub init_from: Option<PathBuf>,
    /// The device asked for.
    pub device: DeviceChoice,
    /// The data, and how to read it.
    pub data: DataRequest,
    /// The data's identity this run must find (a sweep's, as its record says).
    pub expected_data: Option<DataInfo>,
    /// How batches reach the step, and the step asked for.
    pub feed: Feed,
    /// Which checkpoints the run keeps.
    pub keep: Keep,
    /// The command line, for the run's record of its starts.
    pub args: Vec<String>,
}

impl TrainPlan {
    /// Whether the recipe flag `flag` (`--lr`) was written on the command line.
    pub fn gave(&self, flag: &str) -> bool {
        self.given.contains(flag)
    }

    /// This plan for a sweep's `point` in the run directory `dir`: the point's values for the
    /// grid's flags, as if written (so that resuming the point checks them), the run started
    /// there or resumed when it was started before.
    pub fn at_point(&self, point: &Point, dir: PathBuf, started: bool) -> Self {
        let mut recipe = TrainConfig {
            lr: point.lr,
            batch_size: point.batch_size as usize,
            seed: point.seed,
            ..self.recipe.clone()
        }
        .for_network(point.model, &point.hidden, &self.given);
        let mut given = self.given.clone();
        given.extend(["--model", "--hidden", "--lr", "--batch-size", "--seed"].map(String::from));
        if let Some(epochs) = point.epochs {
            recipe.epochs = epochs as usize;
            given.insert("--epochs".into());
        }
        Self {
            start: if started {
                RunStart::Resume(dir)
            } else {
                RunStart::New(Some(dir))
            },
            recipe,
            given,
            ..self.clone()
        }
    }
}

/// `trainer evaluate`, resolved.
#[derive(Debug, Clone)]
pub struct EvaluatePlan {
    /// The model file (a run directory's already resolved to its model).
    pub model: PathBuf,
    /// The data, and how to read it.
    pub data: DataRequest,
    /// The device asked for.
    pub device: DeviceChoice,
    /// Only the first N test images.
    pub test_limit: Option<usize>,
    /// The test images drawn from a source without its own test split.
    pub test_size: Option<usize>,
    /// Print JSON instead of a table.
    pub json: bool,
    /// Also write each test image's label and predicted class here.
    pub predictions: Option<PathBuf>,
}

/// `trainer predict`, resolved.
#[derive(Debug, Clone)]
pub struct PredictPlan {
    /// The model file.
    pub model: PathBuf,
    /// The pictures to classify.
    pub images: Vec<PathBuf>,
    /// The device asked for.
    pub device: DeviceChoice,
    /// How many of the most probable classes to show.
    pub top: usize,
    /// One JSON object per picture instead of text.
    pub json: bool,
}

/// `trainer export`, resolved.
#[derive(Debug, Clone)]
pub struct ExportPlan {
    /// The model file.
    pub model: PathBuf,
    /// The file to write (its extension names the format).
    pub out: PathBuf,
}

/// `trainer sweep`, resolved.
#[derive(Debug, Clone)]
pub struct SweepPlan {
    /// The sweep directory.
    pub out: PathBuf,
    /// The grid's points, in order.
    pub points: Vec<Point>,
    /// Only this share of the points (a static split), if given.
    pub shard: Option<Shard>,
    /// Only rebuild the tables from the run directories.
    pub report: bool,
    /// A claim without a heartbeat for this long is stale.
    pub stale_after: std::time::Duration,
    /// A point failing the same way this many times in a row is given up.
    pub max_failures: usize,
    /// The training every point gets (the flags after `--`), before the point's values.
    pub common: TrainPlan,
    /// The flags after `--` as written, for the sweep's record.
    pub common_args: Vec<String>,
}
