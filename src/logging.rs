//! Log events through `tracing`: human-readable text on a terminal, JSON lines on request,
//! to stderr and/or a file, cooperating with the progress bar (log lines are printed above
//! it, never through it).

use std::fs::OpenOptions;
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use indicatif::ProgressBar;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::Layer;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

/// How log events are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// One human-readable line per event.
    Text,
    /// One JSON object per line, fields at the top level.
    Json,
}

/// Where and how to log.
#[derive(Debug, Clone)]
pub struct LogOptions {
    /// Format of the log file when there is one, else of stderr.
    pub format: LogFormat,
    /// Append log events to this file (stderr keeps a human-readable copy unless quiet).
    pub file: Option<PathBuf>,
    /// 0: info; 1: debug; 2+: trace. `RUST_LOG`, when set, wins.
    pub verbose: u8,
    /// Only warnings and errors on stderr.
    pub quiet: bool,
}

/// Logging could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    /// The log file could not be opened.
    #[error("--log-file {path}: {source}")]
    File {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// `RUST_LOG` does not parse.
    #[error("RUST_LOG: {0}")]
    Filter(String),
}

type BoxedLayer = Box<dyn Layer<tracing_subscriber::Registry> + Send + Sync>;

fn filter(level: &str) -> Result<EnvFilter, LogError> {
    match std::env::var("RUST_LOG") {
        Ok(spec) if !spec.is_empty() => {
            EnvFilter::try_new(spec).map_err(|e| LogError::Filter(e.to_string()))
        }
        // Our own events at `level`; the libraries' (burn, wgpu) only when they warn.
        _ => Ok(EnvFilter::new(format!("warn,trainer={level}"))),
    }
}

fn layer<W>(format: LogFormat, writer: W, ansi: bool) -> BoxedLayer
where
    W: for<'w> tracing_subscriber::fmt::MakeWriter<'w> + Send + Sync + 'static,
{
    let base = tracing_subscriber::fmt::layer()
        .with_writer(writer)
        .with_ansi(ansi);
    match format {
        LogFormat::Text => base.with_target(false).boxed(),
        LogFormat::Json => base.json().flatten_event(true).boxed(),
    }
}

/// Installs the global subscriber. Call once, before anything logs.
pub fn init_logging(options: &LogOptions) -> Result<(), LogError> {
    let level = match options.verbose {
        0 => "info",
        1 => "debug",
        _ => "trace",
    };
    let stderr_level = if options.quiet { "warn" } else { level };
    let stderr_format = match options.file {
        Some(_) => LogFormat::Text,
        None => options.format,
    };
    let ansi = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    let mut layers = vec![
        layer(stderr_format, || BarAwareStderr, ansi)
            .with_filter(filter(stderr_level)?)
            .boxed(),
    ];
    if let Some(path) = &options.file {
        layers.push(
            layer(options.format, open_log(path)?, false)
                .with_filter(filter(level)?)
                .boxed(),
        );
    }
    // A second initialisation (tests calling in one process) keeps the first subscriber.
    let _ = tracing_subscriber::registry().with(layers).try_init();
    Ok(())
}

/// Opens the log file for appending, so earlier runs' logs are never lost.
fn open_log(path: &Path) -> Result<Mutex<std::fs::File>, LogError> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map(Mutex::new)
        .map_err(|source| LogError::File {
            path: path.to_path_buf(),
            source,
        })
}

/// The progress bar on stderr, while one is shown: log lines to stderr are written through
/// [`ProgressBar::suspend`] so they appear above it.
static BAR: Mutex<Option<ProgressBar>> = Mutex::new(None);

/// Shows `bar` (or hides the current one with `None`); log output goes around it.
pub fn set_progress_bar(bar: Option<ProgressBar>) {
    if let Ok(mut slot) = BAR.lock() {
        if let Some(old) = slot.take() {
            old.finish_and_clear();
        }
        *slot = bar;
    }
}

/// Stderr, printing above the progress bar when there is one.
struct BarAwareStderr;

impl Write for BarAwareStderr {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.write_all(buf).map(|()| buf.len())
    }

    fn write_all(&mut self, buf: &[u8]) -> std::io::Result<()> {
        let bar = BAR.lock().ok().and_then(|b| b.clone());
        match bar {
            Some(bar) => bar.suspend(|| std::io::stderr().write_all(buf)),
            None => std::io::stderr().write_all(buf),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

/// Whether a progress bar may be drawn: stderr is a terminal, and neither JSON logs nor
/// quiet were asked for.
pub fn bar_allowed(options: &LogOptions) -> bool {
    std::io::stderr().is_terminal() && !options.quiet && options.format == LogFormat::Text
}

/// The progress bar of a run's training steps on stderr: the epoch, its steps, the running
/// loss, accuracy and images/s, and an ETA. Drawn only where [`bar_allowed`]; the running
/// sums are read (a device sync) a few times a second at most.
pub struct StepBar {
    bar: Option<ProgressBar>,
    show: bool,
    batch_size: usize,
    last_update: std::time::Instant,
}

impl StepBar {
    /// A bar for steps of `batch_size` images, shown if `show`.
    pub fn new(show: bool, batch_size: usize) -> Self {
        Self {
            bar: None,
            show,
            batch_size,
            last_update: std::time::Instant::now(),
        }
    }

    /// Step `step` of `steps` of `epoch` is done; `sums` are the epoch's running sums.
    pub fn step(
        &mut self,
        epoch: usize,
        step: usize,
        steps: usize,
        sums: &dyn crate::metrics::RunningSums,
    ) {
        if !self.show {
            return;
        }
        let bar = self.bar.get_or_insert_with(|| {
            let bar = ProgressBar::new(steps as u64).with_style(
                indicatif::ProgressStyle::with_template(
                    "epoch {prefix} [{bar:30}] {pos}/{len} steps  {msg}  ETA {eta}",
                )
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
                .progress_chars("=> "),
            );
            set_progress_bar(Some(bar.clone()));
            bar
        });
        bar.set_prefix(epoch.to_string());
        bar.set_position(step as u64);
        // Reading the running loss syncs the device: a few times a second at most.
        if self.last_update.elapsed() > std::time::Duration::from_millis(250) {
            self.last_update = std::time::Instant::now();
            if let Ok(m) = sums.metrics() {
                let rate = bar.per_sec() * self.batch_size as f64;
                bar.set_message(format!(
                    "loss {:.4}  acc {:.4}  {:.0} images/s",
                    m.loss, m.accuracy, rate
                ));
            }
        }
    }

    /// The epoch ended: the bar goes (the epoch's log line follows).
    pub fn finish(&mut self) {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
            set_progress_bar(None);
        }
    }

    /// Training stopped inside an epoch: the bar stays where it was.
    pub fn abandon(&mut self) {
        if let Some(bar) = self.bar.take() {
            bar.abandon();
            set_progress_bar(None);
        }
    }
}
