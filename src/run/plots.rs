//! A run's pictures: its learning curves and its confusion matrix, drawn from its records
//! into the run directory (the drawing itself is [`crate::plot`]'s).

use std::path::PathBuf;

use super::{RunDir, RunError};
use crate::plot::{self, PlotError};

/// Why a run's plots could not be drawn.
#[derive(Debug, thiserror::Error)]
pub enum PlotsError {
    /// A record could not be read.
    #[error(transparent)]
    Run(#[from] RunError),
    /// A picture could not be drawn or written.
    #[error(transparent)]
    Plot(#[from] PlotError),
}

/// Draws the learning curves (when there is a history) and the confusion matrix (when there is
/// a test result) into the run directory; returns the files written.
pub fn draw(run: &RunDir) -> Result<Vec<PathBuf>, PlotsError> {
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
        let names = match test.classes.is_empty() {
            true => run.data_info()?.classes,
            false => test.classes,
        };
        written.extend(plot::confusion(
            &test.confusion,
            &names,
            &run.plot("confusion"),
        )?);
    }
    Ok(written)
}
