//! The command line: clap's definitions of every command and flag ("low" arguments, here),
//! and their resolution, once, into the [`crate::plan`] a command runs (`resolve`). No command
//! logic lives here (that is `commands`), and no command looks at these types.

mod grid;
mod resolve;
mod values;

use std::path::PathBuf;

use clap::{ArgAction, Args, Parser, Subcommand};

use crate::backend::{BackendKind, WgpuApi};
use crate::data::{DataFormat, default_data_dir};
use crate::gpu::gather::GatherMethod;
use crate::logging::{LogFormat, LogOptions};
use crate::model::Architecture;
use crate::recipe::{Schedule, TrainConfig};
use crate::run::epochs::Keep;
use crate::sweep::Shard;
use crate::training::StepMethod;
pub use grid::GridArgs;
pub use resolve::{ResolveError, SweepFlagsError, resolve};
use values::{
    parse_channels, parse_count, parse_duration, parse_fraction, parse_image_size, parse_lr,
    parse_shard, parse_weight_decay, parse_width,
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
    /// Serve a local page over the runs and sweeps: the runs table and live curves (read-only)
    Serve(ServeArgs),
}

/// `trainer serve`.
#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// A directory of run directories and sweeps to show, repeatable [default: runs and sweeps]
    #[arg(long = "runs", value_name = "DIR")]
    pub runs: Vec<PathBuf>,

    /// Address to listen on: the loopback keeps the page on this machine (any other address is warned about)
    #[arg(long, value_name = "IP", default_value = "127.0.0.1")]
    pub host: std::net::IpAddr,

    /// Port to listen on (0: a free one, printed)
    #[arg(long, default_value_t = 8080)]
    pub port: u16,

    /// Require this token on every request (open the page as http://HOST:PORT/?token=TOKEN)
    #[arg(
        long,
        env = "TRAINER_SERVE_TOKEN",
        hide_env_values = true,
        value_name = "TOKEN"
    )]
    pub token: Option<String>,
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

/// Which device to compute on.
#[derive(Debug, Clone, Args)]
pub struct DeviceArgs {
    /// Compute backend: wgpu (GPU via Vulkan/Metal/DX12), or flex or ndarray (CPU) [default: flex; with --resume, the run's own]
    #[arg(long, value_enum)]
    pub backend: Option<BackendKind>,

    /// Graphics API for --backend wgpu
    #[arg(long, value_enum, default_value_t = WgpuApi::Auto, env = "TRAINER_WGPU_API")]
    pub wgpu_api: WgpuApi,

    /// GPU adapter for --backend wgpu, by its number in --list-devices (the variable is ignored by the CPU backends) [default: wgpu's pick, a high-performance GPU first]
    #[arg(long, value_name = "N", env = "TRAINER_WGPU_DEVICE")]
    pub device: Option<usize>,
}

/// Where the data is, and how to read it.
#[derive(Debug, Clone, Args)]
pub struct DataArgs {
    /// The data: a directory of MNIST-format IDX files (scripts/fetch_mnist.py fills the default), a folder of pictures with one sub-folder per class, or a CSV (label and pixel columns, or path,label rows)
    #[arg(long = "data", visible_alias = "data-dir", env = "TRAINER_DATA_DIR", value_name = "PATH", default_value_os_t = default_data_dir())]
    pub data: PathBuf,

    /// What --data is [default: told from what is there]
    #[arg(long, value_enum)]
    pub data_format: Option<DataFormat>,

    /// Resize every picture to H,W (rows,columns), keeping its aspect and padding with black [default: the pictures' own size, which all must share]
    #[arg(long, value_name = "H,W", value_parser = parse_image_size)]
    pub image_size: Option<(usize, usize)>,

    /// Read pictures as 1 (gray) or 3 (RGB) channels [default: what the first picture is]
    #[arg(long, value_name = "1|3", value_parser = parse_channels)]
    pub channels: Option<usize>,

    /// Skip pictures, files and rows that cannot be read (counted in one log line) instead of stopping at the first
    #[arg(long)]
    pub skip_bad: bool,
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

    /// Images held out for validation: the last of the training file (IDX, CSV), or drawn per class from a folder without valid/ (0: no validation) [default: 5000, or a tenth of fewer than 10,000 training images]
    #[arg(long, value_name = "N")]
    pub valid_size: Option<usize>,

    /// Images drawn per class for the test set from a folder (or one CSV file) without its own test split [default: a tenth]
    #[arg(long, value_name = "N", value_parser = parse_count)]
    pub test_size: Option<usize>,

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

    /// The training step: fused on wgpu and flex where the model fits it, burn's generic step otherwise (ndarray always takes burn's)
    #[arg(long, value_enum, default_value_t = StepMethod::Fused)]
    pub step: StepMethod,
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

    /// For a folder (or one CSV file) without its own test split: the test images drawn per class, as the run drew them [default: a tenth]
    #[arg(long, value_name = "N", value_parser = parse_count)]
    pub test_size: Option<usize>,

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
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u8).range(1..))]
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
