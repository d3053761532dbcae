//! The command line: flags, and what running `trainer` does with them.

use std::path::PathBuf;

use clap::{ArgAction, Parser};
use tracing::{info, warn};

use crate::backend::{self, BackendError, BackendKind, DeviceRequest, WgpuApi};
use crate::data::{DataError, Mnist, default_data_dir};
use crate::report::{self, LogError, LogFormat, LogOptions};
use crate::training::{self, Sets, TrainConfig, TrainError};

/// Train the article's MNIST digit classifier (784-30-10-10 MLP, Adam, 30 epochs) on a GPU
/// through wgpu or on the CPU, logging train/validation loss and accuracy per epoch and
/// the test result at the end.
#[derive(Debug, Parser)]
#[command(version, about, long_about = None)]
pub struct Cli {
    /// Compute backend: wgpu (GPU via Vulkan/Metal/DX12), ndarray or flex (CPU)
    #[arg(long, value_enum, default_value_t = BackendKind::Ndarray)]
    pub backend: BackendKind,

    /// Graphics API for --backend wgpu
    #[arg(long, value_enum, default_value_t = WgpuApi::Auto)]
    pub wgpu_api: WgpuApi,

    /// GPU adapter for --backend wgpu, by its number in --list-devices [default: wgpu's pick, a high-performance GPU first]
    #[arg(long, value_name = "N")]
    pub device: Option<usize>,

    /// List the GPU adapters wgpu can see (for --wgpu-api) and exit
    #[arg(long)]
    pub list_devices: bool,

    /// Directory with the MNIST IDX files (train-images-idx3-ubyte[.gz] etc.); scripts/fetch_mnist.py fills the default
    #[arg(long, env = "TRAINER_DATA_DIR", value_name = "DIR", default_value_os_t = default_data_dir())]
    pub data_dir: PathBuf,

    /// Passes over the training set
    #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u32).range(1..))]
    pub epochs: u32,

    /// Images per training step
    #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u32).range(1..))]
    pub batch_size: u32,

    /// Adam learning rate
    #[arg(long, default_value_t = 1e-3, value_parser = parse_lr)]
    pub lr: f64,

    /// Seed for the initial weights and the per-epoch shuffles
    #[arg(long, default_value_t = 42)]
    pub seed: u64,

    /// Hidden layer widths, comma-separated (the article: 30,10)
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
    #[arg(long, value_name = "N")]
    pub train_limit: Option<usize>,

    /// Test on only the first N test images (quick runs)
    #[arg(long, value_name = "N")]
    pub test_limit: Option<usize>,

    /// Batches the loader prepares ahead of the training step on its own thread (0: none)
    #[arg(long, default_value_t = 2, value_name = "N")]
    pub prefetch: usize,

    /// Log format: of the --log-file if given (stderr then stays text), else of stderr
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    /// Append log events to this file
    #[arg(long, value_name = "PATH")]
    pub log_file: Option<PathBuf>,

    /// More detail in the logs (-v debug, -vv trace); RUST_LOG overrides
    #[arg(short, long, action = ArgAction::Count)]
    pub verbose: u8,

    /// Only warnings and errors on stderr
    #[arg(short, long)]
    pub quiet: bool,
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
}

fn parse_width(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(0) => Err("layer widths must be at least 1".into()),
        Ok(w) => Ok(w),
        Err(e) => Err(e.to_string()),
    }
}

fn parse_lr(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(lr) if lr.is_finite() && lr > 0.0 => Ok(lr),
        Ok(_) => Err("must be a positive number".into()),
        Err(e) => Err(e.to_string()),
    }
}

impl Cli {
    /// The training recipe these flags describe.
    pub fn train_config(&self) -> TrainConfig {
        TrainConfig {
            hidden: self.hidden.clone(),
            epochs: self.epochs as usize,
            batch_size: self.batch_size as usize,
            lr: self.lr,
            seed: self.seed,
            valid_size: self.valid_size,
            train_limit: self.train_limit,
            test_limit: self.test_limit,
            prefetch: self.prefetch,
        }
    }

    fn device_request(&self) -> DeviceRequest {
        DeviceRequest {
            backend: self.backend,
            api: self.wgpu_api,
            index: self.device,
        }
    }
}

/// Runs `trainer` as the flags say. Returns the line to print on stdout.
pub fn run(cli: &Cli) -> Result<String, Error> {
    report::init_logging(&LogOptions {
        format: cli.log_format,
        file: cli.log_file.clone(),
        verbose: cli.verbose,
        quiet: cli.quiet,
    })?;
    if cli.list_devices {
        let (api, adapters) = backend::adapters(cli.wgpu_api);
        if adapters.is_empty() {
            return Ok(format!("no {api:?} adapters"));
        }
        let lines: Vec<String> = adapters
            .iter()
            .enumerate()
            .map(|(i, a)| format!("{i}: {a}"))
            .collect();
        return Ok(lines.join("\n"));
    }
    let config = cli.train_config();
    // Data first: a bad file is reported before a slow GPU initialisation.
    let mnist = Mnist::load(&cli.data_dir)?;
    let sets = Sets::new(&mnist, &config)?;
    drop(mnist);
    let device = backend::init(cli.device_request())?;
    let d = &device.info;
    info!(backend = %d.backend, adapter = %d.name, api = %d.api, kind = %d.kind, driver = %d.driver, "device");
    if d.backend == BackendKind::Wgpu && d.kind == "Cpu" {
        warn!(adapter = %d.name, "this wgpu adapter is a software renderer on the CPU: expect it to be slow");
    }
    info!(
        data_dir = %cli.data_dir.display(),
        epochs = config.epochs,
        batch_size = config.batch_size,
        lr = config.lr,
        seed = config.seed,
        hidden = ?config.hidden,
        "recipe"
    );
    let result = training::train(&config, &sets, &device)?;
    Ok(report::result_line(&result.test))
}
