//! The grid flags of `trainer sweep` and the points they span.

use clap::Args;

use super::values::{parse_lr, parse_width};
use crate::model::Architecture;
use crate::sweep::Point;

/// The grid flags of `trainer sweep`: each takes a comma-separated list of values (`--hidden`
/// a colon-separated list of width lists). Every other training flag comes from `--` and
/// applies to every run.
#[derive(Debug, Clone, Args)]
pub struct GridArgs {
    /// Networks to try
    #[arg(
        long = "model",
        value_enum,
        value_delimiter = ',',
        default_value = "mlp"
    )]
    pub models: Vec<Architecture>,

    /// MLP hidden widths to try, lists separated by ':' (e.g. 30,10:128,64)
    #[arg(long = "hidden", value_delimiter = ':', default_value = "30,10", value_parser = parse_widths)]
    pub hidden: Vec<Vec<usize>>,

    /// Learning rates to try
    #[arg(long = "lr", value_delimiter = ',', default_value = "0.001", value_parser = parse_lr)]
    pub lrs: Vec<f64>,

    /// Batch sizes to try
    #[arg(long = "batch-size", value_delimiter = ',', default_value = "32", value_parser = clap::value_parser!(u32).range(1..))]
    pub batch_sizes: Vec<u32>,

    /// Epoch counts to try [default: each model's default]
    #[arg(long = "epochs", value_delimiter = ',', value_parser = clap::value_parser!(u32).range(1..))]
    pub epochs: Vec<u32>,

    /// Seeds to try
    #[arg(long = "seed", value_delimiter = ',', default_value = "42")]
    pub seeds: Vec<u64>,
}

/// One width list of `--hidden` (`30,10`), each width checked as `trainer train` checks it.
fn parse_widths(s: &str) -> Result<Vec<usize>, String> {
    s.split(',').map(|w| parse_width(w.trim())).collect()
}

impl GridArgs {
    /// Every combination, in a fixed order (model, hidden, lr, batch, epochs, seed). The CNN
    /// has no hidden widths, so it appears once per combination of the rest.
    pub fn points(&self) -> Vec<Point> {
        let epochs: Vec<Option<u32>> = if self.epochs.is_empty() {
            vec![None]
        } else {
            self.epochs.iter().copied().map(Some).collect()
        };
        let mut points = Vec::new();
        for &model in &self.models {
            let hidden: Vec<Vec<usize>> = match model {
                Architecture::Mlp => self.hidden.clone(),
                Architecture::Cnn => vec![Vec::new()],
            };
            for h in &hidden {
                for &lr in &self.lrs {
                    for &batch_size in &self.batch_sizes {
                        for &e in &epochs {
                            for &seed in &self.seeds {
                                points.push(Point {
                                    model,
                                    hidden: h.clone(),
                                    lr,
                                    batch_size,
                                    epochs: e,
                                    seed,
                                });
                            }
                        }
                    }
                }
            }
        }
        points
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Wrap {
        #[command(flatten)]
        grid: GridArgs,
    }

    fn grid(args: &[&str]) -> GridArgs {
        Wrap::try_parse_from(std::iter::once("sweep").chain(args.iter().copied()))
            .unwrap()
            .grid
    }

    #[test]
    fn the_grid_is_every_combination_once() {
        let g = grid(&[
            "--lr",
            "1e-3,3e-3",
            "--batch-size",
            "32,128",
            "--hidden",
            "30,10:128,64",
            "--model",
            "mlp,cnn",
        ]);
        let points = g.points();
        // MLP: 2 widths × 2 rates × 2 batches; CNN: 2 × 2.
        assert_eq!(points.len(), 8 + 4);
        let labels: std::collections::HashSet<String> = points.iter().map(Point::label).collect();
        assert_eq!(labels.len(), points.len(), "labels are distinct");
        assert!(labels.contains("mlp-h128x64-lr0.003-b128-s42"));
        assert!(labels.contains("cnn-lr0.001-b32-s42"));
    }

    #[test]
    fn bad_grid_values_are_refused() {
        for args in [
            &["--lr", "1e-3,-1"][..],
            &["--hidden", "30,0"][..],
            &["--batch-size", "0"][..],
        ] {
            assert!(
                Wrap::try_parse_from(std::iter::once("sweep").chain(args.iter().copied())).is_err(),
                "{args:?}"
            );
        }
    }
}
