//! `trainer sweep`: a grid of recipes, each trained in its own run directory, then the tables
//! and the curves. The same command again resumes it.

use tracing::info;

use super::{Error, Interrupts, train::train};
use crate::checkpoint;
use crate::cli::{LogArgs, SweepArgs, sweep_common};
use crate::plot;
use crate::report::{ReportError, RunDir};
use crate::sweep;

/// Runs (or resumes) the sweep `args` describes; returns its Markdown table.
pub(super) fn sweep(
    args: &SweepArgs,
    log: &LogArgs,
    interrupts: &Interrupts,
) -> Result<String, Error> {
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
            let mut run = point.apply(&common);
            // A run directory with a config was started before: continue it.
            if RunDir::is_started(&dir) {
                run.resume = Some(dir.clone());
            } else {
                run.out = Some(dir.clone());
            }
            info!(run = %label, number = n + 1, of = points.len(), "sweep");
            match train(&run, log, interrupts) {
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
