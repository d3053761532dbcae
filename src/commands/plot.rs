//! `trainer plot`: a run directory's plots, redrawn.

use std::path::Path;

use super::Error;
use crate::run::{RunDir, plots};

/// Redraws the plots of the run in `dir`; returns the files written, one a line.
pub(super) fn plot(dir: &Path) -> Result<String, Error> {
    let run = RunDir::open(dir)?;
    let written = plots::draw(&run)?;
    Ok(written
        .iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join("\n"))
}
