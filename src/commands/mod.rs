//! What each command does: `train` (the default), `evaluate`, `predict`, `plot`, `sweep`,
//! `export`, one file each, with the error every command can end in.

mod evaluate;
mod export;
mod keeper;
mod plot;
mod predict;
mod sweep;
mod train;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tracing::{info, warn};

use crate::backend::{self, BackendError, BackendKind, ReadyDevice, WgpuApi};
use crate::checkpoint::CheckpointError;
use crate::claims::ClaimError;
use crate::cli::{Cli, Command, Contradiction, DeviceArgs, SweepFlagsError, sweep_common};
use crate::data::DataError;
use crate::interop::InteropError;
use crate::logging::{self, LogError};
use crate::plot::PlotError;
use crate::report::{ReportError, RunDir};
use crate::train::TrainError;

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
    /// A model file or checkpoint could not be read or written.
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    /// A file of another tool (safetensors, ONNX, TensorBoard) could not be read or written.
    #[error(transparent)]
    Interop(#[from] InteropError),
    /// A sweep's claim on a point could not be made or kept.
    #[error(transparent)]
    Claim(#[from] ClaimError),
    /// A run directory file could not be read or written.
    #[error(transparent)]
    Report(#[from] ReportError),
    /// A plot could not be drawn.
    #[error(transparent)]
    Plot(#[from] PlotError),
    /// The run was interrupted; its checkpoint is on disk.
    #[error("interrupted; the checkpoint is saved: continue with `trainer train --resume {}`", .0.display())]
    Interrupted(PathBuf),
    /// A sweep directory holds another sweep than the one asked for.
    #[error(
        "--out {dir}: this sweep directory was started with {1} ({dir}/sweep.json); run the same grid and training flags, or use another --out",
        dir = .0.display()
    )]
    OtherSweep(PathBuf, String),
    /// Some of a sweep's points were given up after failing the same way again and again.
    #[error("{0} of the sweep's points failed (see {dir}/results.md)", dir = .1.display())]
    PointsFailed(usize, PathBuf),
    /// A sweep was interrupted; its current run's checkpoint is on disk.
    #[error("interrupted; run the same `trainer sweep --out {}` command again to continue", .0.display())]
    SweepInterrupted(PathBuf),
    /// The training flags given to a sweep after `--` are wrong.
    #[error(transparent)]
    SweepFlags(#[from] SweepFlagsError),
    /// Some images could not be classified (each was reported).
    #[error("{0} of the images could not be read")]
    Images(usize),
    /// A recipe flag given with `--resume` differs from the run's recorded value.
    #[error(
        "--resume {}: {} {} differs from the run's recipe ({} {}); a resumed run keeps its recipe: start a new run with --out to change it",
        .0.display(), .1.flag, .1.asked, .1.flag, .1.saved
    )]
    ResumeRecipe(PathBuf, Contradiction),
    /// `--model` or `--hidden` contradicts the network of the `--init-from` file.
    #[error(
        "--init-from {}: {} {} differs from the file's network ({} {})",
        .0.display(), .1.flag, .1.asked, .1.flag, .1.saved
    )]
    InitFrom(PathBuf, Contradiction),
    /// `--init-from` names a file that is not safetensors.
    #[error(
        "--init-from {}: expected a .safetensors file in PyTorch's layout (`trainer export --out FILE.safetensors` writes one)",
        .0.display()
    )]
    InitFromFormat(PathBuf),
    /// `sweep --report` names a directory without a sweep record.
    #[error(
        "--out {}: not a sweep directory (no sweep.json; a sweep started before sweeps were recorded writes it when its command runs again)",
        .0.display()
    )]
    NotASweep(PathBuf),
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
            Error::SweepFlags(_) => 2,
            _ => 1,
        }
    }
}

/// Ctrl-C / SIGTERM presses so far, shared with the process's handler. The first asks
/// training to stop at the next batch boundary and save a checkpoint; the second exits at once
/// (files are written atomically, so nothing on disk is left half-written).
#[derive(Debug, Clone, Default)]
pub struct Interrupts(Arc<AtomicUsize>);

impl Interrupts {
    /// Installs the handler (once per process: a sweep trains many runs, and a handler can
    /// only be set once) and returns the count it keeps.
    pub fn install() -> Self {
        static COUNT: std::sync::OnceLock<Interrupts> = std::sync::OnceLock::new();
        COUNT
            .get_or_init(|| {
                let count = Interrupts::default();
                let seen = count.clone();
                let installed = ctrlc::set_handler(move || {
                    if seen.0.fetch_add(1, Ordering::SeqCst) >= 1 {
                        eprintln!(
                            "error: interrupted twice: exiting at once (the last checkpoint is intact)"
                        );
                        std::process::exit(130);
                    }
                    eprintln!(
                        "interrupt: stopping (a run saves a checkpoint after this batch; again to quit at once)"
                    );
                });
                if let Err(e) = installed {
                    warn!("Ctrl-C will stop training without a checkpoint: {e}");
                }
                count
            })
            .clone()
    }

    /// Whether a stop was asked for.
    pub fn requested(&self) -> bool {
        self.0.load(Ordering::SeqCst) > 0
    }

    /// Waits `duration`, or less when a stop is asked for meanwhile (noticed within 50 ms);
    /// returns whether one was.
    pub fn wait(&self, duration: std::time::Duration) -> bool {
        let end = std::time::Instant::now() + duration;
        while !self.requested() {
            let left = end.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                return false;
            }
            std::thread::sleep(left.min(std::time::Duration::from_millis(50)));
        }
        true
    }
}

/// Runs `trainer` as parsed. Returns what to print on stdout.
pub fn run(cli: Cli) -> Result<String, Error> {
    let command = match cli.command {
        Some(Command::Sweep(args)) => {
            // The flags after `--` are checked before anything runs, and logging flags among
            // them set up the logging as they would before `--`.
            let common = sweep_common(&args.common, &cli.log)?;
            let log = common.log.unwrap_or(cli.log);
            logging::init_logging(&log.options())?;
            return sweep::sweep(&args, &common.train, &log, &Interrupts::install());
        }
        other => other,
    };
    logging::init_logging(&cli.log.options())?;
    let log = &cli.log;
    match command {
        None => train::train(&cli.train, log, &Interrupts::install(), None),
        Some(Command::Train(args)) => train::train(&args, log, &Interrupts::install(), None),
        Some(Command::Evaluate(args)) => evaluate::evaluate(&args),
        Some(Command::Predict(args)) => predict::predict(&args),
        Some(Command::Plot(args)) => plot::plot(&args),
        Some(Command::Export(args)) => export::export(&args),
        Some(Command::Sweep(_)) => Ok(String::new()), // handled above
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

/// Opens the device the flags ask for and logs what it is.
fn init_device(args: &DeviceArgs, usual: BackendKind, batched: bool) -> Result<ReadyDevice, Error> {
    let device = backend::init(args.request(usual, batched))?;
    let d = &device.info;
    info!(backend = %d.backend, adapter = %d.name, api = %d.api, kind = %d.kind, driver = %d.driver, "device");
    if d.backend == BackendKind::Wgpu && d.kind == "Cpu" {
        warn!(adapter = %d.name, "this wgpu adapter is a software renderer on the CPU: expect it to be slow");
    }
    Ok(device)
}

/// The wgpu adapters of `api`, one a line.
fn list_devices(api: WgpuApi) -> String {
    let (api, adapters) = backend::adapters(api);
    if adapters.is_empty() {
        return format!("no {api:?} adapters");
    }
    adapters
        .iter()
        .enumerate()
        .map(|(i, a)| format!("{i}: {a}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The model file `--model PATH` names: PATH itself, or for a run directory its final model
/// (its best one with `--best`).
fn model_file(path: &Path, best: bool) -> PathBuf {
    if !path.is_dir() {
        return path.to_path_buf();
    }
    let run = RunDir::at(path);
    if best {
        run.best_model()
    } else {
        run.final_model()
    }
}
