//! A sweep's tables (`results.md`, `results.csv`) and curves (`validation_curves.png/svg`),
//! rebuilt from its run directories by whichever worker finishes a point.

use std::path::Path;

use super::claims::Claims;
use super::{Point, SweepError, run_path};
use crate::files;
use crate::interrupts::Interrupts;
use crate::plot;
use crate::run::{RunDir, RunError};
use crate::session::EpochRecord;

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
    pub fn read(point: &Point, run: &RunDir) -> Result<Self, RunError> {
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
/// Which points are finished and which given up: what a table is built from.
fn state(out: &Path, points: &[Point], claims: &Claims, max: usize) -> Vec<(bool, Option<String>)> {
    points
        .iter()
        .map(|p| {
            (
                RunDir::is_finished(&run_path(out, p)),
                claims.given_up(&p.label(), max),
            )
        })
        .collect()
}

/// Rebuilds `results.md`, `results.csv` and the curves from the run directories, each written
/// atomically; returns the Markdown and how many points were given up (after `max` failures),
/// or `None` when a stop was asked for. Workers rebuild concurrently, so after writing it
/// looks again and rebuilds if a point finished meanwhile: the last tables written are always
/// those of every point finished before them.
pub fn rebuild(
    out: &Path,
    points: &[Point],
    claims: &Claims,
    max: usize,
    interrupts: &Interrupts,
) -> Result<Option<(String, usize)>, SweepError> {
    loop {
        if interrupts.requested() {
            return Ok(None);
        }
        let seen = state(out, points, claims, max);
        let mut rows = Vec::new();
        let mut failed = Vec::new();
        let mut pending = 0;
        for (point, (finished, given_up)) in points.iter().zip(&seen) {
            match (finished, given_up) {
                // Read only: `RunDir::open` would clear temporary files its worker is writing.
                (true, _) => rows.push(Row::read(point, &RunDir::at(&run_path(out, point)))?),
                (false, Some(why)) => failed.push((point.label(), why.clone())),
                (false, None) => pending += 1,
            }
        }
        let markdown = markdown(&rows) + &unfinished(&failed, pending);
        files::atomic_write_bytes(&out.join("results.md"), markdown.as_bytes())?;
        files::atomic_write_bytes(&out.join("results.csv"), csv(&rows).as_bytes())?;
        let curves: Vec<(String, Vec<_>)> = rows
            .iter()
            .map(|r| (r.label.clone(), r.history.clone()))
            .collect();
        if !curves.is_empty() {
            plot::sweep_curves(&curves, &out.join("validation_curves"))?;
        }
        if state(out, points, claims, max) == seen {
            return Ok(Some((markdown, failed.len())));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
