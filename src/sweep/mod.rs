//! Hyper-parameter experiments: a grid over training flags, each point trained in its own run
//! directory under one sweep directory, then a results table (Markdown and CSV) and a plot of
//! every run's validation accuracy. Running the same command again resumes: finished runs are
//! read back, unfinished ones continue from their checkpoint. Any number of workers may run
//! it on one sweep directory: each claims points as it goes ([`claims`]), so each point runs
//! once.
//!
//! Here: the points ([`Point`]); the sweep's record, `sweep.json` ([`record`]); the tables
//! and curves ([`table`]); the claims; and the worker's loop ([`worker`]).

pub mod claims;
pub mod record;
pub mod table;
pub mod worker;

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::files::FileError;
use crate::model::Architecture;
use crate::plot::PlotError;
use crate::run::RunError;
use claims::ClaimError;

/// Where the README puts sweeps (`--out sweeps/NAME`), and where `trainer serve` looks
/// for them by default.
pub const SWEEPS_DIR: &str = "sweeps";

/// One point of the grid: the values of the swept flags.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Point {
    /// Network.
    pub model: Architecture,
    /// MLP hidden widths.
    pub hidden: Vec<usize>,
    /// Learning rate.
    pub lr: f64,
    /// Batch size.
    pub batch_size: u32,
    /// Epochs (`None`: the model's default).
    pub epochs: Option<u32>,
    /// Seed.
    pub seed: u64,
}

impl Point {
    /// A file-name-safe label that names the point's run directory: its recipe and its seed.
    pub fn label(&self) -> String {
        format!("{}-s{}", self.recipe(), self.seed)
    }

    /// The label without the seed: runs that differ only by seed share it.
    pub fn recipe(&self) -> String {
        let hidden = match self.model {
            Architecture::Mlp => format!(
                "-h{}",
                self.hidden
                    .iter()
                    .map(|w| w.to_string())
                    .collect::<Vec<_>>()
                    .join("x")
            ),
            Architecture::Cnn => String::new(),
        };
        let epochs = self.epochs.map_or(String::new(), |e| format!("-e{e}"));
        format!(
            "{}{hidden}-lr{}-b{}{epochs}",
            self.model, self.lr, self.batch_size
        )
    }
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

/// Where a sweep's run for `point` lives.
pub fn run_path(sweep: &Path, point: &Point) -> PathBuf {
    sweep.join(point.label())
}

/// What can stop a sweep worker (besides the training of a point, which it records).
#[derive(Debug, thiserror::Error)]
pub enum SweepError {
    /// A file of the sweep could not be read or written.
    #[error(transparent)]
    File(#[from] FileError),
    /// A run directory of the sweep could not be read.
    #[error(transparent)]
    Run(#[from] RunError),
    /// The curves could not be drawn.
    #[error(transparent)]
    Plot(#[from] PlotError),
    /// A claim on a point could not be made or kept.
    #[error(transparent)]
    Claim(#[from] ClaimError),
    /// The sweep directory holds another sweep than the one asked for.
    #[error(
        "--out {dir}: this sweep directory was started with {1} ({dir}/sweep.json); run the same grid and training flags, or use another --out",
        dir = .0.display()
    )]
    OtherSweep(PathBuf, String),
    /// `sweep --report` names a directory without a sweep record.
    #[error(
        "--out {}: not a sweep directory (no sweep.json; a sweep started before sweeps were recorded writes it when its command runs again)",
        .0.display()
    )]
    NotASweep(PathBuf),
}
