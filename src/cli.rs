//! The command line: `train` (the default), `evaluate`, `predict`, `plot`, and what each does.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use burn::module::Module;
use burn::optim::ModuleOptimizer;
use burn::tensor::activation::softmax;
use burn::tensor::{Tensor, TensorData};
use clap::{ArgAction, Args, CommandFactory, FromArgMatches, Parser, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use tracing::{info, warn};

use crate::backend::{self, BackendError, BackendKind, DeviceRequest, ReadyDevice, WgpuApi};
use crate::checkpoint::{self, CheckpointError};
use crate::data::{DataError, IMAGE_PIXELS, Mnist, default_data_dir};
use crate::gather::GatherMethod;
use crate::loader::Assembler;
use crate::logging::{self, LogError, LogFormat, LogOptions};
use crate::metrics::RunningSums;
use crate::model::{Architecture, Model};
use crate::plot::{self, PlotError};
use crate::predict::{self, ImageError};
use crate::report::{self, ReportError, RunConfig, RunDir, Start, TestReport};
use crate::sweep::{self, GridArgs};
use crate::training::{
    self, Feed, Observer, Outcome, Progress, Schedule, Session, Sets, StepMethod, TrainConfig,
    TrainError,
};

/// Train the article's MNIST digit classifier (784-30-10-10 MLP, Adam, 30 epochs) on a GPU
/// through wgpu or on the CPU, and keep what a run makes: checkpoints, history, plots, models.
///
/// Without a subcommand, `trainer` trains: `trainer --backend wgpu` is `trainer train --backend wgpu`.
#[derive(Debug, Parser)]
#[command(version, about)]
pub struct Cli {
    /// What to do (default: train).
    #[command(subcommand)]
    pub command: Option<Command>,

    /// Training flags, when no subcommand is given.
    #[command(flatten)]
    pub train: TrainArgs,

    /// Logging flags, for every command.
    #[command(flatten)]
    pub log: LogArgs,
}

/// Parses the command line: refuses misplaced flags (see [`check_flag_placement`]) and notes
/// which training flags were given (for `--resume`'s check of the recipe).
pub fn parse(matches: &clap::ArgMatches) -> Result<Cli, clap::Error> {
    check_flag_placement(matches)?;
    let mut cli = Cli::from_arg_matches(matches)?;
    match (&mut cli.command, matches.subcommand()) {
        (Some(Command::Train(args)), Some((_, sub))) => args.given = given_flags(sub),
        (None, _) => cli.train.given = given_flags(matches),
        _ => {}
    }
    Ok(cli)
}

/// The ids of the training flags written in `matches`.
fn given_flags(matches: &clap::ArgMatches) -> Vec<String> {
    let training = TrainArgs::augment_args(clap::Command::new("train"));
    training
        .get_arguments()
        .map(|arg| arg.get_id().as_str())
        .filter(|id| {
            matches.try_contains_id(id).unwrap_or(false)
                && matches.value_source(id) == Some(clap::parser::ValueSource::CommandLine)
        })
        .map(String::from)
        .collect()
}

/// Refuses a recipe flag given with `--resume` whose value differs from the run's recorded
/// one: a resumed run keeps its recipe, and a silently ignored flag would mislead. Flags that
/// repeat the recorded values pass (a sweep resumes its points that way); `--epochs` and the
/// device, data, logging and loader flags may change.
fn check_resumed_recipe(args: &TrainArgs, run: &Path, saved: &TrainConfig) -> Result<(), Error> {
    let asked = args.train_config();
    let fields: [(&str, String, String); 14] = [
        ("model", asked.model.to_string(), saved.model.to_string()),
        (
            "hidden",
            format!("{:?}", asked.hidden),
            format!("{:?}", saved.hidden),
        ),
        (
            "batch_size",
            asked.batch_size.to_string(),
            saved.batch_size.to_string(),
        ),
        ("lr", asked.lr.to_string(), saved.lr.to_string()),
        (
            "lr_schedule",
            format!("{:?}", asked.schedule),
            format!("{:?}", saved.schedule),
        ),
        (
            "augment",
            asked.augment.to_string(),
            saved.augment.to_string(),
        ),
        (
            "weight_decay",
            asked.weight_decay.to_string(),
            saved.weight_decay.to_string(),
        ),
        (
            "dropout",
            asked.dropout.to_string(),
            saved.dropout.to_string(),
        ),
        (
            "label_smoothing",
            asked.label_smoothing.to_string(),
            saved.label_smoothing.to_string(),
        ),
        ("seed", asked.seed.to_string(), saved.seed.to_string()),
        (
            "valid_size",
            asked.valid_size.to_string(),
            saved.valid_size.to_string(),
        ),
        (
            "train_limit",
            format!("{:?}", asked.train_limit),
            format!("{:?}", saved.train_limit),
        ),
        (
            "test_limit",
            format!("{:?}", asked.test_limit),
            format!("{:?}", saved.test_limit),
        ),
        (
            "patience",
            format!("{:?}", asked.patience),
            format!("{:?}", saved.patience),
        ),
    ];
    for (id, asked, saved) in fields {
        if asked != saved && args.given.iter().any(|g| g == id) {
            return Err(Error::ResumeRecipe {
                run: run.to_path_buf(),
                flag: format!("--{}", id.replace('_', "-")),
                asked,
                saved,
            });
        }
    }
    Ok(())
}

/// Refuses training flags written before a subcommand (`trainer --epochs 3 plot DIR`): they
/// would be silently ignored. Logging flags (`-v`, `-q`, `--log-*`) may go anywhere.
pub fn check_flag_placement(matches: &clap::ArgMatches) -> Result<(), clap::Error> {
    use clap::parser::ValueSource;
    let Some((sub, _)) = matches.subcommand() else {
        return Ok(());
    };
    let training = TrainArgs::augment_args(clap::Command::new("train"));
    for arg in training.get_arguments() {
        let id = arg.get_id().as_str();
        if matches.value_source(id) == Some(ValueSource::CommandLine) {
            let flag = arg
                .get_long()
                .map_or_else(|| id.to_string(), |l| format!("--{l}"));
            return Err(Cli::command().error(
                clap::error::ErrorKind::ArgumentConflict,
                format!("{flag} before the subcommand would be ignored: write `trainer {sub} {flag} ...`"),
            ));
        }
    }
    Ok(())
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Train a model into a new run directory, or continue one with --resume (the default command)
    Train(TrainArgs),
    /// Test loss and accuracy of a model file, per-class precision/recall/accuracy, confusion matrix
    Evaluate(EvaluateArgs),
    /// Classify image files (PNG, JPEG, GIF, BMP, WebP, TIFF; any size or colour)
    Predict(PredictArgs),
    /// Redraw a run directory's plots from its history and test result
    Plot(PlotArgs),
    /// Train a grid of recipes, each in its own run directory, and compare them (resumable)
    Sweep(SweepArgs),
}

/// `trainer sweep`.
#[derive(Debug, Clone, Args)]
pub struct SweepArgs {
    /// Sweep directory: one run directory per grid point, results.md, results.csv and
    /// validation_curves.png/svg; an earlier sweep's directory continues it
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,

    /// The grid.
    #[command(flatten)]
    pub grid: GridArgs,

    /// Training flags for every run, after `--` (e.g. `-- --train-limit 10000 --backend flex`)
    #[arg(last = true, value_name = "TRAINING FLAGS")]
    pub common: Vec<String>,
}

/// The grid's own flags, and those a sweep sets per run: not allowed after `--`.
const SWEEP_OWNED: [&str; 8] = [
    "model",
    "hidden",
    "lr",
    "batch_size",
    "epochs",
    "seed",
    "out",
    "resume",
];

/// Which device to compute on.
#[derive(Debug, Clone, Args)]
pub struct DeviceArgs {
    /// Compute backend: wgpu (GPU via Vulkan/Metal/DX12), or flex or ndarray (CPU) [default: flex; with --resume, the run's own]
    #[arg(long, value_enum)]
    pub backend: Option<BackendKind>,

    /// Graphics API for --backend wgpu
    #[arg(long, value_enum, default_value_t = WgpuApi::Auto)]
    pub wgpu_api: WgpuApi,

    /// GPU adapter for --backend wgpu, by its number in --list-devices [default: wgpu's pick, a high-performance GPU first]
    #[arg(long, value_name = "N")]
    pub device: Option<usize>,
}

/// The CPU backend used when `--backend` is not given: flex, 2.5× faster than ndarray on
/// the article's model with the same results (README, Performance).
pub const DEFAULT_BACKEND: BackendKind = BackendKind::Flex;

impl DeviceArgs {
    /// The device asked for; `usual` is the backend when `--backend` is not given; `batched`
    /// when the run takes the fused step (see [`DeviceRequest::batched`]).
    fn request(&self, usual: BackendKind, batched: bool) -> DeviceRequest {
        DeviceRequest {
            backend: self.backend.unwrap_or(usual),
            api: self.wgpu_api,
            index: self.device,
            batched,
        }
    }
}

/// Where the data is.
#[derive(Debug, Clone, Args)]
pub struct DataArgs {
    /// Directory with the MNIST IDX files (train-images-idx3-ubyte[.gz] etc.); scripts/fetch_mnist.py fills the default
    #[arg(long, env = "TRAINER_DATA_DIR", value_name = "DIR", default_value_os_t = default_data_dir())]
    pub data_dir: PathBuf,
}

/// Which checkpoints a run keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Keep {
    /// The latest checkpoint and the model with the best validation accuracy
    Best,
    /// The latest checkpoint only
    Last,
    /// A checkpoint after every epoch, and the best model
    All,
}

/// `trainer train`.
#[derive(Debug, Clone, Args)]
pub struct TrainArgs {
    /// The device.
    #[command(flatten)]
    pub device: DeviceArgs,

    /// The data.
    #[command(flatten)]
    pub data: DataArgs,

    /// List the GPU adapters wgpu can see (for --wgpu-api) and exit
    #[arg(long)]
    pub list_devices: bool,

    /// Run directory to write [default: runs/<UTC time>, never an existing run]
    #[arg(long, value_name = "DIR", conflicts_with = "resume")]
    pub out: Option<PathBuf>,

    /// Continue the run in DIR from its last checkpoint (its recipe; --epochs may extend it)
    #[arg(long, value_name = "DIR")]
    pub resume: Option<PathBuf>,

    /// Passes over the training set [default: 30 for the MLP, as the article; 10 for the CNN]
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    pub epochs: Option<u32>,

    /// Images per training step
    #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u32).range(1..))]
    pub batch_size: u32,

    /// Adam learning rate (the peak, with --lr-schedule cosine)
    #[arg(long, default_value_t = 1e-3, value_parser = parse_lr)]
    pub lr: f64,

    /// How the learning rate changes over the run [default: constant for the MLP, as the article; cosine for the CNN]
    #[arg(long, value_enum)]
    pub lr_schedule: Option<Schedule>,

    /// Shift each training image randomly by up to N pixels per axis (augmentation; 0: off) [default: 0 for the MLP, 2 for the CNN]
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(0..=8))]
    pub augment: Option<u32>,

    /// Decoupled weight decay (AdamW, decay = lr × WD per step; 0: plain Adam, as the article)
    #[arg(long, default_value_t = 0.0, value_name = "WD", value_parser = parse_weight_decay)]
    pub weight_decay: f64,

    /// Dropout rate on the hidden dense layers while training (the MLP's hidden layers, the CNN's Dense(128)); 0: none
    #[arg(long, default_value_t = 0.0, value_name = "P", value_parser = parse_fraction)]
    pub dropout: f64,

    /// Label smoothing: train towards 1 − EPS on the label and EPS spread over all digits (reported losses stay plain cross-entropy)
    #[arg(long, default_value_t = 0.0, value_name = "EPS", value_parser = parse_fraction)]
    pub label_smoothing: f64,

    /// Seed for the initial weights and the per-epoch shuffles
    #[arg(long, default_value_t = 42)]
    pub seed: u64,

    /// Network to train
    #[arg(long, value_enum, default_value_t = Architecture::Mlp)]
    pub model: Architecture,

    /// The MLP's hidden layer widths, comma-separated (the article: 30,10)
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "30,10",
        value_name = "W,W,...",
        value_parser = parse_width
    )]
    pub hidden: Vec<usize>,

    /// Images at the end of the training file held out for validation (0: no validation)
    #[arg(long, default_value_t = 5000, value_name = "N")]
    pub valid_size: usize,

    /// Train on only the first N training images (quick runs)
    #[arg(long, value_name = "N", value_parser = parse_count)]
    pub train_limit: Option<usize>,

    /// Test on only the first N test images (quick runs)
    #[arg(long, value_name = "N", value_parser = parse_count)]
    pub test_limit: Option<usize>,

    /// Stop when validation loss has not improved for N epochs and keep the best epoch's weights [default: off, all epochs run]
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub patience: Option<u32>,

    /// Checkpoints to keep
    #[arg(long, value_enum, default_value_t = Keep::Best)]
    pub keep: Keep,

    /// Batches the loader prepares ahead of the training step on its own thread (0: none)
    #[arg(long, default_value_t = 2, value_name = "N")]
    pub prefetch: usize,

    /// How batches reach a wgpu device: the data resident there, gathered by the WGSL kernel or by burn's ops, or gathered on the host and uploaded every step (CPU backends always use the host)
    #[arg(long, value_enum, default_value_t = GatherMethod::Kernel)]
    pub gather: GatherMethod,

    /// The training step on wgpu (CPU backends always take burn's generic step)
    #[arg(long, value_enum, default_value_t = StepMethod::Fused)]
    pub step: StepMethod,

    /// The ids of the flags written on the command line (not defaults): with --resume, those
    /// of the recipe must repeat the run's recorded values.
    #[arg(skip)]
    pub given: Vec<String>,
}

impl TrainArgs {
    fn feed(&self) -> Feed {
        Feed {
            prefetch: self.prefetch,
            gather: self.gather,
            step: self.step,
        }
    }
}

/// `trainer evaluate`.
#[derive(Debug, Clone, Args)]
pub struct EvaluateArgs {
    /// The model: a model file (a run's model.model or best.model), or a run directory (its final model)
    #[arg(long, value_name = "PATH")]
    pub model: PathBuf,

    /// With a run directory for --model: its best model by validation accuracy instead of the final one
    #[arg(long)]
    pub best: bool,

    /// The data.
    #[command(flatten)]
    pub data: DataArgs,

    /// The device.
    #[command(flatten)]
    pub device: DeviceArgs,

    /// Evaluate on only the first N test images
    #[arg(long, value_name = "N", value_parser = parse_count)]
    pub test_limit: Option<usize>,

    /// Print the report as JSON instead of a table
    #[arg(long)]
    pub json: bool,
}

/// `trainer predict`.
#[derive(Debug, Clone, Args)]
pub struct PredictArgs {
    /// The model: a model file (a run's model.model or best.model), or a run directory (its final model)
    #[arg(long, value_name = "PATH")]
    pub model: PathBuf,

    /// With a run directory for --model: its best model by validation accuracy instead of the final one
    #[arg(long)]
    pub best: bool,

    /// Image files to classify
    #[arg(required = true, value_name = "IMAGE")]
    pub images: Vec<PathBuf>,

    /// The device.
    #[command(flatten)]
    pub device: DeviceArgs,

    /// How many of the most probable digits to show
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u8).range(1..=10))]
    pub top: u8,

    /// One JSON object per image instead of text
    #[arg(long)]
    pub json: bool,
}

/// `trainer plot`.
#[derive(Debug, Clone, Args)]
pub struct PlotArgs {
    /// The run directory
    #[arg(value_name = "DIR")]
    pub run: PathBuf,
}

/// Logging, for every command.
#[derive(Debug, Clone, Args)]
pub struct LogArgs {
    /// Log format: of the --log-file if given (stderr then stays text), else of stderr; json turns the progress bar off
    #[arg(long, value_enum, default_value_t = LogFormat::Text, global = true)]
    pub log_format: LogFormat,

    /// Append log events to this file
    #[arg(long, value_name = "PATH", global = true)]
    pub log_file: Option<PathBuf>,

    /// More detail in the logs (-v debug, -vv trace); RUST_LOG overrides
    #[arg(short, long, action = ArgAction::Count, global = true)]
    pub verbose: u8,

    /// Only warnings and errors on stderr, no progress bar
    #[arg(short, long, global = true)]
    pub quiet: bool,
}

impl LogArgs {
    fn options(&self) -> LogOptions {
        LogOptions {
            format: self.log_format,
            file: self.log_file.clone(),
            verbose: self.verbose,
            quiet: self.quiet,
        }
    }
}

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
    /// A run directory file could not be read or written.
    #[error(transparent)]
    Report(#[from] ReportError),
    /// A plot could not be drawn.
    #[error(transparent)]
    Plot(#[from] PlotError),
    /// The run was interrupted; its checkpoint is on disk.
    #[error("interrupted; the checkpoint is saved: continue with `trainer train --resume {}`", .0.display())]
    Interrupted(PathBuf),
    /// A sweep was interrupted; its current run's checkpoint is on disk.
    #[error("interrupted; run the same `trainer sweep --out {}` command again to continue", .0.display())]
    SweepInterrupted(PathBuf),
    /// The training flags given to a sweep after `--` are wrong.
    #[error("trainer sweep: {0}")]
    SweepFlags(String),
    /// Some images could not be classified (each was reported).
    #[error("{0} of the images could not be read")]
    Images(usize),
    /// A recipe flag given with `--resume` differs from the run's recorded value.
    #[error(
        "--resume {}: {flag} {asked} differs from the run's recipe ({flag} {saved}); a resumed run keeps its recipe: start a new run with --out to change it",
        run.display()
    )]
    ResumeRecipe {
        /// The run directory.
        run: PathBuf,
        /// The flag.
        flag: String,
        /// The value given.
        asked: String,
        /// The value recorded.
        saved: String,
    },
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

/// A number of images: a whole number of at least 1.
fn parse_count(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(0) => Err("must be at least 1".into()),
        Ok(n) => Ok(n),
        Err(e) => Err(e.to_string()),
    }
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

/// A layer width: a whole number of at least 1.
pub(crate) fn parse_width(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(0) => Err("layer widths must be at least 1".into()),
        Ok(w) => Ok(w),
        Err(e) => Err(e.to_string()),
    }
}

/// A learning rate: a finite positive number.
pub(crate) fn parse_lr(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(lr) if lr.is_finite() && lr > 0.0 => Ok(lr),
        Ok(_) => Err("must be a positive number".into()),
        Err(e) => Err(e.to_string()),
    }
}

fn parse_weight_decay(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(wd) if wd.is_finite() && wd >= 0.0 => Ok(wd),
        Ok(_) => Err("must be 0 or a positive number".into()),
        Err(e) => Err(e.to_string()),
    }
}

/// A rate in [0, 1): dropout, label smoothing.
fn parse_fraction(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(eps) if (0.0..1.0).contains(&eps) => Ok(eps),
        Ok(_) => Err("must be at least 0 and below 1".into()),
        Err(e) => Err(e.to_string()),
    }
}

impl TrainArgs {
    /// The training recipe these flags describe.
    pub fn train_config(&self) -> TrainConfig {
        TrainConfig {
            model: self.model,
            // The CNN has no hidden widths to choose; the recipe says so rather than
            // carrying the MLP's default.
            hidden: match self.model {
                Architecture::Mlp => self.hidden.clone(),
                Architecture::Cnn => Vec::new(),
            },
            epochs: self
                .epochs
                .map_or(self.model.default_epochs(), |e| e as usize),
            batch_size: self.batch_size as usize,
            lr: self.lr,
            schedule: self.lr_schedule.unwrap_or(match self.model {
                Architecture::Mlp => Schedule::Constant,
                Architecture::Cnn => Schedule::Cosine,
            }),
            augment: self.augment.map_or(
                match self.model {
                    Architecture::Mlp => 0,
                    Architecture::Cnn => 2,
                },
                |n| n as usize,
            ),
            weight_decay: self.weight_decay,
            dropout: self.dropout,
            label_smoothing: self.label_smoothing,
            seed: self.seed,
            valid_size: self.valid_size,
            train_limit: self.train_limit,
            test_limit: self.test_limit,
            patience: self.patience.map(|p| p as usize),
        }
    }
}

/// Runs `trainer` as parsed. Returns what to print on stdout.
pub fn run(cli: Cli) -> Result<String, Error> {
    logging::init_logging(&cli.log.options())?;
    match cli.command {
        None => train(&cli.train, &cli.log),
        Some(Command::Train(args)) => train(&args, &cli.log),
        Some(Command::Evaluate(args)) => evaluate(&args),
        Some(Command::Predict(args)) => predict(&args),
        Some(Command::Sweep(args)) => sweep(&args, &cli.log),
        Some(Command::Plot(args)) => {
            let run = RunDir::open(&args.run)?;
            let written = draw_plots(&run)?;
            Ok(written
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join("\n"))
        }
    }
}

fn init_device(args: &DeviceArgs, usual: BackendKind, batched: bool) -> Result<ReadyDevice, Error> {
    let device = backend::init(args.request(usual, batched))?;
    let d = &device.info;
    info!(backend = %d.backend, adapter = %d.name, api = %d.api, kind = %d.kind, driver = %d.driver, "device");
    if d.backend == BackendKind::Wgpu && d.kind == "Cpu" {
        warn!(adapter = %d.name, "this wgpu adapter is a software renderer on the CPU: expect it to be slow");
    }
    Ok(device)
}

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

/// Ctrl-C / SIGTERM presses so far. The first asks training to stop at the next batch
/// boundary and save a checkpoint; the second exits at once (files are written atomically,
/// so nothing on disk is left half-written).
static INTERRUPTS: AtomicUsize = AtomicUsize::new(0);

fn install_interrupt_handler() {
    // Once per process: a sweep trains many runs, and the handler can only be set once.
    static INSTALLED: std::sync::Once = std::sync::Once::new();
    INSTALLED.call_once(install_interrupt_handler_now);
}

fn install_interrupt_handler_now() {
    let installed = ctrlc::set_handler(|| {
        if INTERRUPTS.fetch_add(1, Ordering::SeqCst) >= 1 {
            eprintln!("error: interrupted twice: exiting at once (the last checkpoint is intact)");
            std::process::exit(130);
        }
        eprintln!(
            "interrupt: stopping after this batch and saving a checkpoint (again to quit at once)"
        );
    });
    if let Err(e) = installed {
        warn!("Ctrl-C will stop training without a checkpoint: {e}");
    }
}

fn train(args: &TrainArgs, log: &LogArgs) -> Result<String, Error> {
    if args.list_devices {
        return Ok(list_devices(args.device.wgpu_api));
    }
    // The recipe: new, or the one of the run being resumed. A directory that holds no run
    // yet (a run killed before it wrote anything) starts over there with the flags given.
    let resume = args
        .resume
        .as_deref()
        .filter(|dir| !dir.is_dir() || RunDir::is_started(dir));
    let (resumed, mut run_config) = match resume {
        Some(dir) => {
            let run = RunDir::open(dir)?;
            let mut saved = run.read_config()?;
            check_resumed_recipe(args, dir, &saved.recipe)?;
            if let Some(epochs) = args.epochs {
                saved.recipe.epochs = epochs as usize;
            }
            (Some(run), saved)
        }
        None => {
            let out = args.resume.as_ref().or(args.out.as_ref());
            if let Some(out) = out {
                RunDir::ensure_free(out)?;
            }
            if let Some(dir) = &args.resume {
                info!(run = %dir.display(), "nothing was saved there yet: the run starts over");
            }
            let config = RunConfig {
                trainer_version: env!("CARGO_PKG_VERSION").into(),
                recipe: args.train_config(),
                data_dir: args.data.data_dir.clone(),
                prefetch: args.prefetch,
                keep: format!("{:?}", args.keep).to_lowercase(),
                starts: Vec::new(),
            };
            (None, config)
        }
    };
    let config = run_config.recipe.clone();
    // Data first: a bad file is reported before a slow GPU initialisation, and neither
    // failure leaves an empty run directory behind.
    let mnist = Mnist::load(&args.data.data_dir)?;
    let sets = Sets::new(&mnist, &config)?;
    drop(mnist);
    // A resumed run continues on the backend it last ran on, unless --backend says otherwise.
    let usual = run_config
        .starts
        .last()
        .map_or(DEFAULT_BACKEND, |start| start.device.backend);
    let fused = args.step == StepMethod::Fused && args.gather == GatherMethod::Kernel;
    let device = init_device(&args.device, usual, fused)?;
    let is_resumed = resumed.is_some();
    let run = match resumed {
        Some(run) => run,
        None => RunDir::create(args.resume.as_deref().or(args.out.as_deref()))?,
    };
    // One process at a time in a run directory; the lock goes when the process does.
    let _lock = run.lock()?;
    let checkpoint = run.checkpoint();
    let mut keeper = Keeper {
        run: &run,
        keep: args.keep,
        patience: config.patience.is_some(),
        bar: None,
        show_bar: logging::bar_allowed(&log.options()),
        batch_size: config.batch_size,
        last_update: Instant::now(),
    };
    let mut session = if is_resumed && checkpoint.is_file() {
        let session = checkpoint::load_checkpoint(&checkpoint, &config, &device.device)?;
        let done = session.progress.epochs_done();
        let over = done >= config.epochs || session.progress.stopped_early.is_some();
        if over && run.is_complete() {
            return Err(Error::NothingToDo(run.path().to_path_buf(), done));
        }
        // A kill between the checkpoint and the files written after it (history, best
        // models) left them behind the checkpoint: write them again.
        if done > 0 && session.progress.partial.is_none() {
            let improved = session
                .progress
                .best_val_acc
                .is_some_and(|(_, e)| e == done);
            keeper
                .on_epoch(
                    &session.model,
                    &session.optimizer,
                    &session.progress,
                    improved,
                )
                .map_err(TrainError::Observer)?;
        }
        info!(run = %run.path().display(), epochs_done = done, "resuming");
        session
    } else {
        if is_resumed {
            info!(run = %run.path().display(), "no checkpoint was saved yet: the run starts over");
        }
        Session::new(&config, &device.device).map_err(TrainError::from)?
    };
    run_config.starts.push(Start {
        at: report::now(),
        args: std::env::args().collect(),
        device: device.info.clone(),
        from_epoch: session.progress.epochs_done(),
    });
    run_config.prefetch = args.prefetch;
    run.write_config(&run_config)?;
    info!(
        run = %run.path().display(),
        data_dir = %args.data.data_dir.display(),
        epochs = config.epochs,
        batch_size = config.batch_size,
        lr = config.lr,
        lr_schedule = ?config.schedule,
        augment = config.augment,
        weight_decay = config.weight_decay,
        dropout = config.dropout,
        label_smoothing = config.label_smoothing,
        seed = config.seed,
        model = %config.model,
        hidden = ?config.hidden,
        train = sets.train.len(),
        valid = sets.valid.len(),
        test = sets.test.len(),
        "recipe"
    );

    install_interrupt_handler();
    let outcome = training::train(
        &config,
        &sets,
        &device.device,
        &args.feed(),
        &mut session,
        &mut keeper,
    );
    logging::set_progress_bar(None);
    match outcome? {
        Outcome::Interrupted { epoch } => {
            warn!(epoch, run = %run.path().display(), "interrupted; checkpoint saved");
            return Err(Error::Interrupted(run.path().to_path_buf()));
        }
        Outcome::EarlyStopped { best, .. } => {
            // The weights of the best epoch; when it came before a resume they are on disk.
            let (model, _) = checkpoint::load_model(&run.best_loss_model(), &device.device)?;
            info!(
                best_epoch = best,
                "restored the weights of the best epoch by validation loss"
            );
            session.model = model;
        }
        Outcome::Completed => {}
    }

    let model = session.model.valid();
    checkpoint::save_model(&model, &run.final_model())?;
    let test_data = args.feed().assembler(&sets.test, &device.device);
    let (metrics, predicted) = training::evaluate(&model, &test_data, &args.feed())?;
    let test = TestReport::new(&run.final_model(), metrics, &sets.test.labels, &predicted);
    run.write_test(&test)?;
    info!(
        test_loss = training::round(metrics.loss, 4),
        test_acc = training::round(metrics.accuracy, 4),
        images = metrics.count,
        "test"
    );
    let plots = draw_plots(&run)?;
    info!(run = %run.path().display(), plots = plots.len(), "run saved");
    Ok(report::result_line(&metrics))
}

/// Writes what each epoch leaves: checkpoint, best models, history files, and drives the
/// progress bar. Stops training when Ctrl-C was pressed.
struct Keeper<'a> {
    run: &'a RunDir,
    keep: Keep,
    patience: bool,
    bar: Option<ProgressBar>,
    show_bar: bool,
    batch_size: usize,
    last_update: Instant,
}

impl Keeper<'_> {
    fn save(
        &self,
        model: &Model,
        optimizer: &ModuleOptimizer,
        progress: &Progress,
    ) -> Result<(), String> {
        // The session is rebuilt by reference-counted clones: no tensor data is copied.
        let session = Session {
            model: model.clone(),
            optimizer: optimizer.clone(),
            progress: progress.clone(),
        };
        checkpoint::save_checkpoint(&self.run.checkpoint(), &session).map_err(|e| e.to_string())
    }
}

impl Observer for Keeper<'_> {
    fn on_step(&mut self, epoch: usize, step: usize, steps: usize, sums: &dyn RunningSums) -> bool {
        if self.show_bar {
            let bar = self.bar.get_or_insert_with(|| {
                let bar = ProgressBar::new(steps as u64).with_style(
                    ProgressStyle::with_template(
                        "epoch {prefix} [{bar:30}] {pos}/{len} steps  {msg}  ETA {eta}",
                    )
                    .unwrap_or_else(|_| ProgressStyle::default_bar())
                    .progress_chars("=> "),
                );
                logging::set_progress_bar(Some(bar.clone()));
                bar
            });
            bar.set_prefix(epoch.to_string());
            bar.set_position(step as u64);
            // Reading the running loss syncs the device: a few times a second at most.
            if self.last_update.elapsed() > Duration::from_millis(250) {
                self.last_update = Instant::now();
                if let Ok(m) = sums.metrics() {
                    let rate = bar.per_sec() * self.batch_size as f64;
                    bar.set_message(format!(
                        "loss {:.4}  acc {:.4}  {:.0} images/s",
                        m.loss, m.accuracy, rate
                    ));
                }
            }
        }
        INTERRUPTS.load(Ordering::SeqCst) == 0
    }

    fn on_epoch(
        &mut self,
        model: &Model,
        optimizer: &ModuleOptimizer,
        progress: &Progress,
        improved: bool,
    ) -> Result<(), String> {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
            logging::set_progress_bar(None);
        }
        let epoch = progress.epochs_done();
        self.save(model, optimizer, progress)?;
        if self.keep == Keep::All {
            let path = self.run.epoch_checkpoint(epoch);
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
            }
            std::fs::copy(self.run.checkpoint(), &path)
                .map_err(|e| format!("{}: {e}", path.display()))?;
        }
        let valid_model = || model.clone().valid();
        if improved && self.keep != Keep::Last {
            checkpoint::save_model(&valid_model(), &self.run.best_model())
                .map_err(|e| e.to_string())?;
        }
        if self.patience && progress.best_val_loss.is_some_and(|(_, e)| e == epoch) {
            checkpoint::save_model(&valid_model(), &self.run.best_loss_model())
                .map_err(|e| e.to_string())?;
        }
        self.run
            .write_history(&progress.history)
            .map_err(|e| e.to_string())
    }

    fn on_interrupt(
        &mut self,
        model: &Model,
        optimizer: &ModuleOptimizer,
        progress: &Progress,
    ) -> Result<(), String> {
        if let Some(bar) = self.bar.take() {
            bar.abandon();
            logging::set_progress_bar(None);
        }
        self.save(model, optimizer, progress)
    }
}

/// Draws the learning curves (when there is a history) and the confusion matrix (when there is
/// a test result) into the run directory; returns the files written.
fn draw_plots(run: &RunDir) -> Result<Vec<PathBuf>, Error> {
    let mut written = Vec::new();
    if run.history_jsonl().is_file() {
        let history = run.read_history()?;
        written.extend(plot::learning_curves(
            &history,
            &run.plot("learning_curves"),
        )?);
    }
    if run.test().is_file() {
        let test = run.read_test()?;
        written.extend(plot::confusion(&test.confusion, &run.plot("confusion"))?);
    }
    Ok(written)
}

/// The training flags a sweep applies to every run (given after `--`).
fn sweep_common(flags: &[String]) -> Result<TrainArgs, Error> {
    #[derive(Parser)]
    #[command(name = "trainer sweep ... --")]
    struct Common {
        #[command(flatten)]
        train: TrainArgs,
    }
    let argv = std::iter::once("trainer").chain(flags.iter().map(String::as_str));
    let first_line = |e: clap::Error| {
        let text = e.to_string();
        let line = text.lines().next().unwrap_or_default();
        Error::SweepFlags(line.trim_start_matches("error: ").to_string())
    };
    let matches = Common::command()
        .try_get_matches_from(argv)
        .map_err(first_line)?;
    for id in SWEEP_OWNED {
        if matches.value_source(id) == Some(clap::parser::ValueSource::CommandLine) {
            let flag = format!("--{}", id.replace('_', "-"));
            return Err(Error::SweepFlags(format!(
                "{flag} is set by the sweep: give it before `--` (a list for the grid), or not at all"
            )));
        }
    }
    let mut common = Common::from_arg_matches(&matches).map_err(first_line)?;
    common.train.given = given_flags(&matches);
    Ok(common.train)
}

fn sweep(args: &SweepArgs, log: &LogArgs) -> Result<String, Error> {
    let common = sweep_common(&args.common)?;
    let points = args.grid.points();
    std::fs::create_dir_all(&args.out).map_err(|source| ReportError::Io {
        path: args.out.clone(),
        source,
    })?;
    let mut rows = Vec::new();
    for (n, point) in points.iter().enumerate() {
        let dir = sweep::run_path(&args.out, point);
        let label = point.label();
        if !RunDir::is_finished(&dir) {
            let mut run = common.clone();
            run.model = point.model;
            run.hidden = point.hidden.clone();
            run.lr = point.lr;
            run.batch_size = point.batch_size;
            run.epochs = point.epochs;
            run.seed = point.seed;
            // A run directory with a config was started before: continue it.
            if RunDir::is_started(&dir) {
                run.resume = Some(dir.clone());
            } else {
                run.out = Some(dir.clone());
            }
            info!(run = %label, number = n + 1, of = points.len(), "sweep");
            match train(&run, log) {
                Err(Error::Interrupted(_)) => {
                    return Err(Error::SweepInterrupted(args.out.clone()));
                }
                other => other?,
            };
        }
        rows.push(sweep::Row::read(point, &RunDir::open(&dir)?)?);
        // Tables after every run, so a long sweep shows its results as they come.
        checkpoint::atomic_write_bytes(
            &args.out.join("results.md"),
            sweep::markdown(&rows).as_bytes(),
        )?;
        checkpoint::atomic_write_bytes(
            &args.out.join("results.csv"),
            sweep::csv(&rows).as_bytes(),
        )?;
    }
    let curves: Vec<(String, Vec<_>)> = rows
        .iter()
        .map(|r| (r.label.clone(), r.history.clone()))
        .collect();
    plot::sweep_curves(&curves, &args.out.join("validation_curves"))?;
    Ok(sweep::markdown(&rows))
}

fn evaluate(args: &EvaluateArgs) -> Result<String, Error> {
    let mnist = Mnist::load(&args.data.data_dir)?;
    let test = match args.test_limit {
        Some(n) => mnist.test.slice(0..n.min(mnist.test.len())),
        None => mnist.test,
    };
    let device = init_device(&args.device, DEFAULT_BACKEND, false)?;
    let model_path = model_file(&args.model, args.best);
    let (model, _) = checkpoint::load_model(&model_path, &device.device)?;
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
    let report = TestReport::new(&model_path, metrics, &test.labels, &predicted);
    Ok(if args.json {
        serde_json::to_string(&report).unwrap_or_default()
    } else {
        report.table()
    })
}

/// One image's answer: the digit and the probabilities, most likely first.
fn classify(
    model: &Model,
    pixels: Vec<f32>,
    device: &burn::tensor::Device,
) -> Result<Vec<f32>, Error> {
    // As in training and evaluation.
    crate::backend::with_subnormals_flushed(|| {
        let x = Tensor::<2>::from_data(TensorData::new(pixels, [1, IMAGE_PIXELS]), device);
        crate::metrics::read_floats(softmax(model.forward(x), 1))
    })
    .map_err(|e| TrainError::Read(e).into())
}

fn predict(args: &PredictArgs) -> Result<String, Error> {
    let device = init_device(&args.device, DEFAULT_BACKEND, false)?;
    let model_path = model_file(&args.model, args.best);
    let (model, _) = checkpoint::load_model(&model_path, &device.device)?;
    let mut lines = Vec::new();
    let mut failed = 0;
    for path in &args.images {
        match predict::load_digit(path) {
            Ok(pixels) => {
                let probs = classify(&model, pixels, &device.device)?;
                let mut ranked: Vec<(usize, f32)> = probs.iter().copied().enumerate().collect();
                ranked.sort_by(|a, b| b.1.total_cmp(&a.1));
                ranked.truncate(usize::from(args.top));
                lines.push(if args.json {
                    serde_json::json!({
                        "file": path,
                        "digit": ranked[0].0,
                        "probability": ranked[0].1,
                        "top": ranked.iter().map(|(d, p)| serde_json::json!({"digit": d, "probability": p})).collect::<Vec<_>>(),
                    })
                    .to_string()
                } else {
                    let top: Vec<String> = ranked.iter().map(|(d, p)| format!("{d} {p:.4}")).collect();
                    format!("{}: {} (top: {})", path.display(), ranked[0].0, top.join(", "))
                });
            }
            Err(e) => {
                failed += 1;
                report_image_error(&e, args.json, &mut lines);
            }
        }
    }
    if failed > 0 {
        // The answers still go to stdout before the failure is reported.
        println!("{}", lines.join("\n"));
        return Err(Error::Images(failed));
    }
    Ok(lines.join("\n"))
}

fn report_image_error(e: &ImageError, json: bool, lines: &mut Vec<String>) {
    if json {
        lines.push(serde_json::json!({"file": e.path(), "error": e.to_string()}).to_string());
    }
    eprintln!("error: {e}");
}
