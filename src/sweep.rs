//! Hyper-parameter experiments: a grid over training flags, each point trained in its own run
//! directory under one sweep directory, then a results table (Markdown and CSV) and a plot of
//! every run's validation accuracy. Running the same command again resumes: finished runs are
//! read back, unfinished ones continue from their checkpoint.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::model::Architecture;
use crate::recipe::TrainConfig;
use crate::report::{ReportError, RunDir};
use crate::session::EpochRecord;

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

/// `sweep.json`: what a sweep directory is for, so that a worker started with another grid or
/// other training flags on it is refused, and `--report` knows the points.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SweepRecord {
    /// The version of `trainer` that started the sweep.
    pub trainer_version: String,
    /// The grid's points, in order.
    pub points: Vec<Point>,
    /// The training flags every run gets (after `--`), as given.
    pub common: Vec<String>,
    /// The recipe those flags make (before each point's values): what must match. Flags that
    /// are not the recipe's (the data directory, the backend, logging) may differ between
    /// workers, as machines differ.
    pub recipe: TrainConfig,
}

impl SweepRecord {
    /// How `self` (the recorded sweep) differs from `asked`, in words, if it does: the points
    /// in one grid and not the other (the same points in another order are the same grid),
    /// else each recipe field that differs, by its flag.
    pub fn difference(&self, asked: &SweepRecord) -> Option<String> {
        let only = |a: &SweepRecord, b: &SweepRecord| -> Vec<String> {
            a.points
                .iter()
                .filter(|p| !b.points.contains(p))
                .map(Point::label)
                .collect()
        };
        let (recorded_only, asked_only) = (only(self, asked), only(asked, self));
        if !recorded_only.is_empty() || !asked_only.is_empty() {
            return Some(format!(
                "another grid (only in the record: {}; only asked: {})",
                some_labels(&recorded_only),
                some_labels(&asked_only)
            ));
        }
        let fields = self.recipe.differences(&asked.recipe);
        (!fields.is_empty()).then(|| {
            let fields: Vec<String> = fields
                .iter()
                .map(|d| format!("{}: recorded {}, asked {}", d.flag, d.recorded, d.asked))
                .collect();
            format!("other training flags ({})", fields.join("; "))
        })
    }
}

/// Up to five labels, then how many more; "none" for none.
fn some_labels(labels: &[String]) -> String {
    const SHOWN: usize = 5;
    match labels.len() {
        0 => "none".into(),
        n if n <= SHOWN => labels.join(", "),
        n => format!("{} ({} more)", labels[..SHOWN].join(", "), n - SHOWN),
    }
}

/// The lines that follow a sweep's tables while it is not complete: points given up, and how
/// many are still to run.
pub fn unfinished(failed: &[(String, String)], pending: usize) -> String {
    let mut out = String::new();
    if !failed.is_empty() {
        out.push_str("\nFailed (given up after the same failure repeatedly):\n\n| run | error |\n|---|---|\n");
        for (label, why) in failed {
            out.push_str(&format!("| {label} | {} |\n", why.replace('|', "\\|")));
        }
    }
    if pending > 0 {
        out.push_str(&format!("\n{pending} more points to run.\n"));
    }
    out
}

/// What one finished run of a sweep achieved.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    /// The run's label (its directory name).
    pub label: String,
    /// Its recipe: the label without the seed.
    pub recipe: String,
    /// Epochs run.
    pub epochs: usize,
    /// Best validation accuracy and its epoch.
    pub best_val: Option<(f64, usize)>,
    /// Test accuracy of the final model.
    pub test_acc: f64,
    /// Test loss of the final model.
    pub test_loss: f64,
    /// Seconds of training, all epochs.
    pub seconds: f64,
    /// Per-epoch history, for the comparison plot.
    pub history: Vec<EpochRecord>,
}

impl Row {
    /// Reads the finished run directory of `point`.
    pub fn read(point: &Point, run: &RunDir) -> Result<Self, ReportError> {
        let history = run.read_history()?;
        let test = run.read_test()?;
        let best_val = history
            .iter()
            .filter_map(|r| r.valid.map(|v| (v.accuracy, r.epoch)))
            .fold(
                None,
                |best: Option<(f64, usize)>, (acc, epoch)| match best {
                    Some((b, _)) if b >= acc => best,
                    _ => Some((acc, epoch)),
                },
            );
        Ok(Self {
            label: point.label(),
            recipe: point.recipe(),
            epochs: history.len(),
            best_val,
            test_acc: test.metrics.accuracy,
            test_loss: test.metrics.loss,
            seconds: history.iter().map(|r| r.seconds).sum(),
            history,
        })
    }
}

/// The results as a Markdown table, best test accuracy first; when a recipe ran with several
/// seeds, a second table gives each recipe's median and range over its seeds.
pub fn markdown(rows: &[Row]) -> String {
    let mut out = String::from(
        "| run | epochs | best val acc (epoch) | test acc | test loss | seconds |\n|---|---|---|---|---|---|\n",
    );
    for r in sorted(rows) {
        let best = r
            .best_val
            .map_or("-".to_string(), |(a, e)| format!("{a:.4} ({e})"));
        out.push_str(&format!(
            "| {} | {} | {best} | {:.4} | {:.4} | {:.1} |\n",
            r.label, r.epochs, r.test_acc, r.test_loss, r.seconds
        ));
    }
    let recipes = over_seeds(rows);
    if recipes.iter().any(|r| r.runs > 1) {
        out.push_str(
            "\nOver seeds (median, and range of test accuracy):\n\n\
             | recipe | seeds | test acc | test acc range | test loss | best val acc | seconds |\n\
             |---|---|---|---|---|---|---|\n",
        );
        for r in recipes {
            out.push_str(&format!(
                "| {} | {} | {:.4} | {:.4}–{:.4} | {:.4} | {} | {:.1} |\n",
                r.recipe,
                r.runs,
                r.test_acc,
                r.test_acc_range.0,
                r.test_acc_range.1,
                r.test_loss,
                r.best_val_acc
                    .map_or("-".to_string(), |a| format!("{a:.4}")),
                r.seconds
            ));
        }
    }
    out
}

/// One recipe's results over the seeds it ran with: medians, and the range of test accuracy.
#[derive(Debug, Clone, PartialEq)]
pub struct RecipeSummary {
    /// The recipe (a run label without the seed).
    pub recipe: String,
    /// How many runs (seeds).
    pub runs: usize,
    /// Median test accuracy.
    pub test_acc: f64,
    /// Lowest and highest test accuracy.
    pub test_acc_range: (f64, f64),
    /// Median test loss.
    pub test_loss: f64,
    /// Median of the runs' best validation accuracy (`None` without validation).
    pub best_val_acc: Option<f64>,
    /// Median seconds of training.
    pub seconds: f64,
}

/// Every recipe's summary over its seeds, best median test accuracy first.
pub fn over_seeds(rows: &[Row]) -> Vec<RecipeSummary> {
    let mut recipes: Vec<&str> = Vec::new();
    for r in rows {
        if !recipes.contains(&r.recipe.as_str()) {
            recipes.push(&r.recipe);
        }
    }
    let mut out: Vec<RecipeSummary> = recipes
        .into_iter()
        .map(|recipe| {
            let runs: Vec<&Row> = rows.iter().filter(|r| r.recipe == recipe).collect();
            let of = |f: &dyn Fn(&Row) -> f64| median(runs.iter().map(|r| f(r)).collect());
            let accs = runs.iter().map(|r| r.test_acc);
            let best_vals: Vec<f64> = runs
                .iter()
                .filter_map(|r| r.best_val.map(|b| b.0))
                .collect();
            RecipeSummary {
                recipe: recipe.to_string(),
                runs: runs.len(),
                test_acc: of(&|r| r.test_acc),
                test_acc_range: (
                    accs.clone().fold(f64::INFINITY, f64::min),
                    accs.fold(f64::NEG_INFINITY, f64::max),
                ),
                test_loss: of(&|r| r.test_loss),
                best_val_acc: (best_vals.len() == runs.len()).then(|| median(best_vals)),
                seconds: of(&|r| r.seconds),
            }
        })
        .collect();
    out.sort_by(|a, b| b.test_acc.total_cmp(&a.test_acc));
    out
}

/// The median of `values` (the mean of the middle two for an even count; NaN for none).
fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    let n = values.len();
    match n {
        0 => f64::NAN,
        _ if n % 2 == 1 => values[n / 2],
        _ => (values[n / 2 - 1] + values[n / 2]) / 2.0,
    }
}

/// The results as CSV, best test accuracy first.
pub fn csv(rows: &[Row]) -> String {
    let mut out =
        String::from("run,epochs,best_val_acc,best_val_epoch,test_acc,test_loss,seconds\n");
    for r in sorted(rows) {
        let (acc, epoch) = r.best_val.map_or((String::new(), String::new()), |(a, e)| {
            (a.to_string(), e.to_string())
        });
        out.push_str(&format!(
            "{},{},{acc},{epoch},{},{},{}\n",
            r.label, r.epochs, r.test_acc, r.test_loss, r.seconds
        ));
    }
    out
}

fn sorted(rows: &[Row]) -> Vec<&Row> {
    let mut rows: Vec<&Row> = rows.iter().collect();
    rows.sort_by(|a, b| b.test_acc.total_cmp(&a.test_acc));
    rows
}

/// Where a sweep's run for `point` lives.
pub fn run_path(sweep: &Path, point: &Point) -> PathBuf {
    sweep.join(point.label())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(lrs: &[f64], recipe: TrainConfig) -> SweepRecord {
        let point = |lr| Point {
            model: Architecture::Mlp,
            hidden: vec![30, 10],
            lr,
            batch_size: 32,
            epochs: None,
            seed: 42,
        };
        SweepRecord {
            trainer_version: "0".into(),
            points: lrs.iter().copied().map(point).collect(),
            common: Vec::new(),
            recipe,
        }
    }

    /// Another grid is named by the points in one and not the other (five a side at most);
    /// the same points in another order are the same grid; another recipe by its flags.
    #[test]
    fn a_differing_sweep_is_named_by_what_differs() {
        let base = TrainConfig::default();
        let recorded = record(&[0.001, 0.002, 0.003, 0.004], base.clone());
        let asked = record(&[0.001, 0.002, 0.003, 0.005], base.clone());
        assert_eq!(
            recorded.difference(&asked).unwrap(),
            "another grid (only in the record: mlp-h30x10-lr0.004-b32-s42; only asked: mlp-h30x10-lr0.005-b32-s42)"
        );
        let reordered = record(&[0.004, 0.003, 0.002, 0.001], base.clone());
        assert_eq!(recorded.difference(&reordered), None);
        let many: Vec<f64> = (1..=8).map(|i| i as f64).collect();
        let why = recorded.difference(&record(&many, base.clone())).unwrap();
        assert!(why.ends_with("mlp-h30x10-lr5-b32-s42 (3 more))"), "{why}");
        let other = TrainConfig {
            lr: 0.005,
            train_limit: Some(500),
            ..base.clone()
        };
        let why = recorded
            .difference(&record(&[0.001, 0.002, 0.003, 0.004], other))
            .unwrap();
        assert_eq!(
            why,
            "other training flags (--lr: recorded 0.001, asked 0.005; --train-limit: recorded none, asked 500)"
        );
    }
    #[test]
    fn tables_put_the_best_first() {
        let row = |label: &str, test_acc| Row {
            label: label.into(),
            recipe: label.into(),
            epochs: 3,
            best_val: Some((0.9, 2)),
            test_acc,
            test_loss: 0.3,
            seconds: 1.5,
            history: Vec::new(),
        };
        let rows = [row("a", 0.91), row("b", 0.95)];
        let md = markdown(&rows);
        assert!(md.find("| b |").unwrap() < md.find("| a |").unwrap());
        assert!(md.contains("0.9000 (2)"));
        let csv = csv(&rows);
        assert_eq!(csv.lines().count(), 3);
        assert!(csv.lines().nth(1).unwrap().starts_with("b,3,0.9,2,0.95,"));
        assert!(
            !md.contains("Over seeds"),
            "one seed per recipe: no summary"
        );
    }

    #[test]
    fn recipes_are_summarised_over_their_seeds() {
        let row = |recipe: &str, seed: u64, test_acc: f64| Row {
            label: format!("{recipe}-s{seed}"),
            recipe: recipe.into(),
            epochs: 3,
            best_val: Some((test_acc + 0.01, 2)),
            test_acc,
            test_loss: 1.0 - test_acc,
            seconds: seed as f64,
            history: Vec::new(),
        };
        let rows = [
            row("a", 1, 0.90),
            row("b", 1, 0.95),
            row("a", 2, 0.96),
            row("a", 3, 0.92),
            row("b", 2, 0.97),
        ];
        let summary = over_seeds(&rows);
        assert_eq!(summary.len(), 2);
        // b: median of 0.95 and 0.97; a: median of three.
        assert_eq!(summary[0].recipe, "b");
        assert!((summary[0].test_acc - 0.96).abs() < 1e-12);
        assert_eq!(summary[1].recipe, "a");
        assert_eq!(summary[1].runs, 3);
        assert_eq!(summary[1].test_acc, 0.92);
        assert_eq!(summary[1].test_acc_range, (0.90, 0.96));
        assert_eq!(summary[1].seconds, 2.0);
        let md = markdown(&rows);
        assert!(md.contains("| a | 3 | 0.9200 | 0.9000–0.9600 |"), "{md}");
    }
}
