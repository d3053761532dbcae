//! `trainer plot`: a run directory's plots, redrawn.

use std::path::PathBuf;

use super::Error;
use crate::cli::PlotArgs;
use crate::plot;
use crate::report::RunDir;

/// Redraws the plots of the run `args` names; returns the files written, one a line.
pub(super) fn plot(args: &PlotArgs) -> Result<String, Error> {
    let run = RunDir::open(&args.run)?;
    let written = draw_plots(&run)?;
    Ok(written
        .iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join("\n"))
}

/// Draws the learning curves (when there is a history) and the confusion matrix (when there is
/// a test result) into the run directory; returns the files written.
pub(super) fn draw_plots(run: &RunDir) -> Result<Vec<PathBuf>, Error> {
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
