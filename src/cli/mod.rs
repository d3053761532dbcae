//! The command line: clap's definitions of every command and flag, the checks clap cannot
//! make, and the conversion of flags into the configs the commands run with. No command logic
//! lives here (that is `commands`).

mod grid;
mod values;

use std::path::PathBuf;

use clap::{ArgAction, Args, CommandFactory, FromArgMatches, Parser, Subcommand};

use crate::backend::{BackendKind, DeviceRequest, WgpuApi};
use crate::data::default_data_dir;
use crate::gpu::gather::GatherMethod;
use crate::loader::{Feed, StepMethod};
use crate::logging::{LogFormat, LogOptions};
use crate::model::Architecture;
use crate::recipe::{Schedule, TrainConfig};
pub use grid::GridArgs;
use values::{
    parse_count, parse_duration, parse_fraction, parse_lr, parse_shard, parse_weight_decay,
    parse_width,
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
    /// Train a grid of recipes, each in its own run directory, and compare them (resumable; workers may share one --out)
    Sweep(SweepArgs),
    /// Write a model for other tools: PyTorch-layout safetensors or ONNX, by --out's extension
    Export(ExportArgs),
}

/// `trainer export`.
#[derive(Debug, Clone, Args)]
pub struct ExportArgs {
    /// The model: a model file, a checkpoint (its model), a run directory (its final model), or a safetensors file
    #[arg(long, value_name = "PATH")]
    pub model: PathBuf,

    /// With a run directory for --model: its best model by validation accuracy instead of the final one
    #[arg(long)]
    pub best: bool,

    /// The file to write: FILE.safetensors (PyTorch's layout and module names) or FILE.onnx (opset 13, pixels [N,1,28,28] in [0,1] to probabilities [N,10])
    #[arg(long, value_name = "FILE")]
    pub out: PathBuf,
}

/// `trainer sweep`.
#[derive(Debug, Clone, Args)]
pub struct SweepArgs {
    /// Sweep directory: one run directory per grid point, results.md, results.csv and
    /// validation_curves.png/svg; an earlier sweep's directory continues it, and any number of
    /// workers running the same command on it share the points
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,

    /// The grid.
    #[command(flatten)]
    pub grid: GridArgs,

    /// Run only the K-th of N equal shares of the grid's points (K from 1: points K, K+N, …), for a static split between workers; without it, workers claim points as they go
    #[arg(long, value_name = "K/N", value_parser = parse_shard)]
    pub shard: Option<Shard>,

    /// Only rebuild results.md, results.csv and the curves from the run directories (the grid and flags come from DIR/sweep.json)
    #[arg(long)]
    pub report: bool,

    /// A claim on a point whose holder has not shown a heartbeat for this long is stale and another worker takes the point over (resuming its checkpoint)
    #[arg(long, value_name = "DURATION", default_value = "10m", value_parser = parse_duration)]
    pub stale_after: std::time::Duration,

    /// A point that fails the same way this many times in a row is given up and marked failed in the table
    #[arg(long, value_name = "N", default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_failures: u32,

    /// Training flags for every run, after `--` (e.g. `-- --train-limit 10000 --backend flex`)
    #[arg(last = true, value_name = "TRAINING FLAGS")]
    pub common: Vec<String>,
}

/// `--shard K/N`: the K-th (from 1) of N shares of a sweep's points.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    /// Which share, from 1.
    pub k: usize,
    /// How many shares.
    pub n: usize,
}

impl Shard {
    /// Whether the point at `index` (from 0, in the grid's order) is in this share.
    pub fn has(&self, index: usize) -> bool {
        index % self.n == self.k - 1
    }
}

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
    pub fn request(&self, usual: BackendKind, batched: bool) -> DeviceRequest {
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

    /// Start from the weights of a safetensors file in PyTorch's layout (from `trainer export` or PyTorch; the network is the file's), with a fresh optimizer
    #[arg(long, value_name = "FILE", conflicts_with = "resume")]
    pub init_from: Option<PathBuf>,

    /// Passes over the training set [default: 30 for the MLP, as the article; 10 for the CNN]
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    pub epochs: Option<u32>,

    /// Images per training step
    #[arg(long, default_value_t = TrainConfig::default().batch_size as u32, value_parser = clap::value_parser!(u32).range(1..))]
    pub batch_size: u32,

    /// Adam learning rate (the peak, with --lr-schedule cosine)
    #[arg(long, default_value_t = TrainConfig::default().lr, value_parser = parse_lr)]
    pub lr: f64,

    /// How the learning rate changes over the run [default: constant for the MLP, as the article; cosine for the CNN]
    #[arg(long, value_enum)]
    pub lr_schedule: Option<Schedule>,

    /// Shift each training image randomly by up to N pixels per axis (augmentation; 0: off) [default: 0 for the MLP, 2 for the CNN]
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(0..=8))]
    pub augment: Option<u32>,

    /// Decoupled weight decay (AdamW, decay = lr × WD per step; 0: plain Adam, as the article)
    #[arg(long, default_value_t = TrainConfig::default().weight_decay, value_name = "WD", value_parser = parse_weight_decay)]
    pub weight_decay: f64,

    /// Dropout rate on the hidden dense layers while training (the MLP's hidden layers, the CNN's Dense(128)); 0: none
    #[arg(long, default_value_t = TrainConfig::default().dropout, value_name = "P", value_parser = parse_fraction)]
    pub dropout: f64,

    /// Label smoothing: train towards 1 − EPS on the label and EPS spread over all digits (reported losses stay plain cross-entropy)
    #[arg(long, default_value_t = TrainConfig::default().label_smoothing, value_name = "EPS", value_parser = parse_fraction)]
    pub label_smoothing: f64,

    /// Seed for the initial weights and the per-epoch shuffles
    #[arg(long, default_value_t = TrainConfig::default().seed)]
    pub seed: u64,

    /// Network to train
    #[arg(long, value_enum, default_value_t = TrainConfig::default().model)]
    pub model: Architecture,

    /// The MLP's hidden layer widths, comma-separated (the article: 30,10)
    #[arg(
        long,
        value_delimiter = ',',
        // TrainConfig::default().hidden, as clap writes a list (tested below).
        default_value = "30,10",
        value_name = "W,W,...",
        value_parser = parse_width
    )]
    pub hidden: Vec<usize>,

    /// Images at the end of the training file held out for validation (0: no validation)
    #[arg(long, default_value_t = TrainConfig::default().valid_size, value_name = "N")]
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
    /// How batches reach the step, as the loader and device flags say.
    pub fn feed(&self) -> Feed {
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
    /// The model: a model file (a run's model.model or best.model), a checkpoint (its model), a run directory (its final model), or a safetensors file in PyTorch's layout
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

    /// Also write each test image's label and predicted class to FILE (CSV: image,label,predicted), to compare with other tools
    #[arg(long, value_name = "FILE")]
    pub predictions: Option<PathBuf>,
}

/// `trainer predict`.
#[derive(Debug, Clone, Args)]
pub struct PredictArgs {
    /// The model: a model file (a run's model.model or best.model), a checkpoint (its model), a run directory (its final model), or a safetensors file in PyTorch's layout
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
    /// The logging setup these flags ask for.
    pub fn options(&self) -> LogOptions {
        LogOptions {
            format: self.log_format,
            file: self.log_file.clone(),
            verbose: self.verbose,
            quiet: self.quiet,
        }
    }
}

impl TrainArgs {
    /// The training recipe these flags describe.
    pub fn train_config(&self) -> TrainConfig {
        let defaults = TrainConfig::defaults(self.model);
        TrainConfig {
            model: self.model,
            // The CNN has no hidden widths to choose; the recipe says so rather than
            // carrying the MLP's default.
            hidden: match self.model {
                Architecture::Mlp => self.hidden.clone(),
                Architecture::Cnn => defaults.hidden,
            },
            epochs: self.epochs.map_or(defaults.epochs, |e| e as usize),
            batch_size: self.batch_size as usize,
            lr: self.lr,
            schedule: self.lr_schedule.unwrap_or(defaults.schedule),
            augment: self.augment.map_or(defaults.augment, |n| n as usize),
            weight_decay: self.weight_decay,
            dropout: self.dropout,
            label_smoothing: self.label_smoothing,
            seed: self.seed,
            valid_size: self.valid_size,
            train_limit: self.train_limit,
            test_limit: self.test_limit,
            patience: self.patience.map(|p| p as usize),
            // Whole, so that the recorded file is found from anywhere and a repeated flag
            // matches the record (a resumed sweep point repeats it).
            init_from: self
                .init_from
                .as_deref()
                .map(|p| std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf())),
        }
    }
}

/// A recipe flag given with `--resume` whose value differs from the run's recorded one.
#[derive(Debug, Clone, PartialEq)]
pub struct Contradiction {
    /// The flag, as written (`--lr`).
    pub flag: String,
    /// The value given.
    pub asked: String,
    /// The value recorded.
    pub saved: String,
}

impl TrainArgs {
    /// The first recipe flag given on the command line whose value differs from the recorded
    /// recipe `saved`: a resumed run keeps its recipe, and a silently ignored flag would
    /// mislead. Flags that repeat the recorded values pass (a sweep resumes its points that
    /// way); `--epochs` and the device, data, logging and loader flags may change.
    pub fn contradiction(&self, saved: &TrainConfig) -> Option<Contradiction> {
        let asked = self.train_config();
        let fields: [(&str, String, String); 15] = [
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
            (
                "init_from",
                format!("{:?}", asked.init_from),
                format!("{:?}", saved.init_from),
            ),
        ];
        fields
            .into_iter()
            .find(|(id, asked, saved)| asked != saved && self.given.iter().any(|g| g == id))
            .map(|(id, asked, saved)| Contradiction {
                flag: format!("--{}", id.replace('_', "-")),
                asked,
                saved,
            })
    }
}

/// Training flags after `trainer sweep ... --` that cannot be used: one line, clap's or ours.
#[derive(Debug, thiserror::Error)]
#[error("trainer sweep: {0}")]
pub struct SweepFlagsError(String);

/// What the flags after `trainer sweep ... --` say: the training flags every run gets, and
/// the logging flags among them (valid for `train`, so valid here, meaning what they mean
/// before `--`).
#[derive(Debug, Clone)]
pub struct SweepCommon {
    /// The training flags.
    pub train: TrainArgs,
    /// The logging flags given after `--` (`None`: none was).
    pub log: Option<LogArgs>,
}

impl LogArgs {
    /// These flags with those given after a sweep's `--` (`later`, parsed from `matches`)
    /// applied: a flag given there replaces the one before `--`, `-v` adds up.
    fn then(&self, later: &LogArgs, matches: &clap::ArgMatches) -> LogArgs {
        let given =
            |id: &str| matches.value_source(id) == Some(clap::parser::ValueSource::CommandLine);
        LogArgs {
            log_format: if given("log_format") {
                later.log_format
            } else {
                self.log_format
            },
            log_file: later.log_file.clone().or_else(|| self.log_file.clone()),
            verbose: self.verbose.saturating_add(later.verbose),
            quiet: self.quiet || later.quiet,
        }
    }
}

/// The training flags a sweep applies to every run (given after `--`), with any logging flags
/// among them applied over `log`, the ones given before `--`.
pub fn sweep_common(flags: &[String], log: &LogArgs) -> Result<SweepCommon, SweepFlagsError> {
    #[derive(Parser)]
    #[command(name = "trainer sweep ... --")]
    struct Common {
        #[command(flatten)]
        train: TrainArgs,
        #[command(flatten)]
        log: LogArgs,
    }
    let argv = std::iter::once("trainer").chain(flags.iter().map(String::as_str));
    let first_line = |e: clap::Error| {
        let text = e.to_string();
        let line = text.lines().next().unwrap_or_default();
        SweepFlagsError(line.trim_start_matches("error: ").to_string())
    };
    let matches = Common::command()
        .try_get_matches_from(argv)
        .map_err(first_line)?;
    // The grid's own flags, and the run directory the sweep gives each point.
    let grid = GridArgs::augment_args(clap::Command::new("grid"));
    let owned: Vec<&str> = grid
        .get_arguments()
        .filter_map(|arg| arg.get_long())
        .chain(["out", "resume"])
        .collect();
    let training = TrainArgs::augment_args(clap::Command::new("train"));
    for arg in training.get_arguments() {
        let given = matches.value_source(arg.get_id().as_str())
            == Some(clap::parser::ValueSource::CommandLine);
        if let Some(long) = arg.get_long().filter(|l| given && owned.contains(l)) {
            return Err(SweepFlagsError(format!(
                "--{long} is set by the sweep: give it before `--` (a list for the grid), or not at all"
            )));
        }
    }
    let mut common = Common::from_arg_matches(&matches).map_err(first_line)?;
    common.train.given = given_flags(&matches);
    let logging = LogArgs::augment_args(clap::Command::new("log"));
    let any_log = logging.get_arguments().any(|arg| {
        matches.value_source(arg.get_id().as_str()) == Some(clap::parser::ValueSource::CommandLine)
    });
    Ok(SweepCommon {
        train: common.train,
        log: any_log.then(|| log.then(&common.log, &matches)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The flags' defaults are the recipe's defaults (`TrainConfig::defaults`), for each model.
    #[test]
    fn flag_defaults_are_the_recipe_defaults() {
        for (args, model) in [
            (&["trainer"][..], Architecture::Mlp),
            (&["trainer", "--model", "cnn"][..], Architecture::Cnn),
        ] {
            let cli = Cli::try_parse_from(args).unwrap();
            assert_eq!(cli.train.train_config(), TrainConfig::defaults(model));
        }
    }
}
