//! What each command does with its plan: `train` (the default), `evaluate`, `predict`,
//! `plot`, `sweep`, `export`, one file each, with the error every command can end in.

mod evaluate;
mod export;
mod plot;
mod predict;
mod sweep;
mod train;

use std::path::PathBuf;

use crate::backend::{self, BackendError};
use crate::data::DataError;
use crate::files::FileError;
use crate::interop::InteropError;
use crate::interrupts::Interrupts;
use crate::logging::{self, LogError};
use crate::plan::{Invocation, Plan};
use crate::recipe::FieldDifference;
use crate::run::epochs::EpochFilesError;
use crate::run::plots::PlotsError;
use crate::run::{GuardError, RunError};
use crate::serve::{self, ServeError};
use crate::sweep::SweepError;
use crate::training::TrainError;

/// What can make `trainer` fail.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Logging could not be set up.
    #[error(transparent)]
    Log(#[from] LogError),
    /// The data could not be read.
    #[error(transparent)]
    Data(#[from] DataError),
    /// No device.
    #[error(transparent)]
    Backend(#[from] BackendError),
    /// Training failed.
    #[error(transparent)]
    Train(#[from] TrainError),
    /// A file (a model file, a checkpoint, a record) could not be read or written.
    #[error(transparent)]
    File(#[from] FileError),
    /// A file of another tool (safetensors, ONNX, TensorBoard) could not be read or written.
    #[error(transparent)]
    Interop(#[from] InteropError),
    /// The run directory refused (taken, busy, not a run) or a record of it failed.
    #[error(transparent)]
    Run(#[from] RunError),
    /// An epoch's files could not be written.
    #[error(transparent)]
    EpochFiles(#[from] EpochFilesError),
    /// A run's plots could not be drawn.
    #[error(transparent)]
    Plots(#[from] PlotsError),
    /// The page's server could not run.
    #[error(transparent)]
    Serve(#[from] ServeError),
    /// A sweep's record, claims or tables failed.
    #[error(transparent)]
    Sweep(#[from] SweepError),
    /// Writing to the run directory may not go on (a sweep's claim on it was taken over).
    #[error(transparent)]
    Guard(GuardError),
    /// The run was interrupted; its checkpoint is on disk.
    #[error("interrupted; the checkpoint is saved: continue with `trainer train --resume {}`", .0.display())]
    Interrupted(PathBuf),
    /// Some of a sweep's points were given up after failing the same way again and again.
    #[error("{0} of the sweep's points failed (see {dir}/results.md)", dir = .1.display())]
    PointsFailed(usize, PathBuf),
    /// A sweep was interrupted; its current run's checkpoint is on disk.
    #[error("interrupted; run the same `trainer sweep --out {}` command again to continue", .0.display())]
    SweepInterrupted(PathBuf),
    /// Some images could not be classified (each was reported).
    #[error("{0} of the images could not be read")]
    Images(usize),
    /// A recipe flag given with `--resume` differs from the run's recorded value.
    #[error(
        "--resume {}: {} {} differs from the run's recipe ({} {}); a resumed run keeps its recipe: start a new run with --out to change it",
        .0.display(), .1.flag, .1.asked, .1.flag, .1.recorded
    )]
    ResumeRecipe(PathBuf, FieldDifference),
    /// `--model` or `--hidden` contradicts the network of the `--init-from` file.
    #[error(
        "--init-from {}: {} {} differs from the file's network ({} {})",
        .0.display(), .1.flag, .1.asked, .1.flag, .1.recorded
    )]
    InitFrom(PathBuf, FieldDifference),
    /// `--init-from` names a file that is not safetensors.
    #[error(
        "--init-from {}: expected a .safetensors file in PyTorch's layout (`trainer export --out FILE.safetensors` writes one)",
        .0.display()
    )]
    InitFromFormat(PathBuf),
    /// The data given is not what a run, a sweep or a model was trained on (one line, naming
    /// the flag, the file and the difference).
    #[error("{0}")]
    DataDiffers(String),
    /// A resumed run's checkpoint says it is already done.
    #[error(
        "--resume {0}: the run has already done {1} epochs; pass a larger --epochs to train on"
    )]
    NothingToDo(PathBuf, usize),
}

impl Error {
    /// The process exit code for this error: 130 for an interruption (as shells report
    /// SIGINT), 1 for the rest.
    pub fn exit_code(&self) -> u8 {
        match self {
            Error::Interrupted(_) | Error::SweepInterrupted(_) => 130,
            _ => 1,
        }
    }
}

/// Carries out `invocation`. Returns what to print on stdout.
pub fn run(invocation: Invocation) -> Result<String, Error> {
    let log = &invocation.log;
    logging::init_logging(log)?;
    match &invocation.plan {
        Plan::Train(plan) => train::train(plan, log, &Interrupts::install(), None),
        Plan::ListDevices(api) => Ok(backend::list_devices(*api)),
        Plan::Evaluate(plan) => evaluate::evaluate(plan),
        Plan::Predict(plan) => predict::predict(plan),
        Plan::Sweep(plan) => sweep::sweep(plan, log, &Interrupts::install()),
        Plan::Plot(dir) => plot::plot(dir),
        Plan::Export(plan) => export::export(plan),
        Plan::Serve(plan) => Ok(serve::serve(
            plan,
            &Interrupts::install_saying("stopping the server"),
        )?),
    }
}

/// An error and its causes in one line, each cause once: an error whose message already
/// quotes its cause (`path: No such file or directory`) does not get it appended again.
pub fn one_line(error: &(dyn std::error::Error + 'static)) -> String {
    let mut line = String::new();
    let mut cause = Some(error);
    while let Some(e) = cause {
        let text = e.to_string();
        if !line.contains(&text) {
            if !line.is_empty() {
                line.push_str(": ");
            }
            line.push_str(&text);
        }
        cause = e.source();
    }
    line
}
