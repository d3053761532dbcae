//! `sweep.json`: what a sweep directory is for, written by the first worker and checked by
//! every other, so that a worker started with another grid or other training flags is refused
//! with what differs, and `--report` knows the points.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::{Point, SweepError};
use crate::data::DataInfo;
use crate::files;
use crate::recipe::TrainConfig;

/// `sweep.json`: the grid's points and the recipe of the flags after `--`.
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
    /// The data every point trains on (a sweep recorded before other data: MNIST's).
    #[serde(default)]
    pub data: Option<DataInfo>,
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
        let data = |r: &SweepRecord| r.data.clone().unwrap_or_else(DataInfo::mnist);
        if fields.is_empty() {
            return data(self)
                .difference(&data(asked), "the sweep's")
                .map(|why| format!("other data ({why})"));
        }
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

/// Where a sweep directory's record is.
pub fn path(out: &Path) -> PathBuf {
    out.join("sweep.json")
}

/// Reads the record of the sweep in `out`.
pub fn read(out: &Path) -> Result<SweepRecord, SweepError> {
    let path = path(out);
    if !path.is_file() {
        return Err(SweepError::NotASweep(out.to_path_buf()));
    }
    Ok(files::read_json(&path)?)
}

/// The sweep's record: `asked`, written if the directory has none yet (by whichever worker
/// gets there first: the file is linked into place, never overwritten), or the one there,
/// which must be the same sweep. `worker` names the temporary file.
pub fn settle(out: &Path, asked: SweepRecord, worker: &str) -> Result<SweepRecord, SweepError> {
    let path = path(out);
    if !path.exists() {
        let tmp = out.join(format!(
            ".sweep.json.{}",
            worker.replace(['/', ':', '@'], "_")
        ));
        let bytes = serde_json::to_vec_pretty(&asked).unwrap_or_default();
        files::atomic_write_bytes(&tmp, &bytes)?;
        // A hard link fails if the name exists: of workers starting together, one record wins.
        let linked = std::fs::hard_link(&tmp, &path);
        let _ = std::fs::remove_file(&tmp);
        match linked {
            Ok(()) => return Ok(asked),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(source) => return Err(files::io_err(&path)(source).into()),
        }
    }
    let recorded = read(out)?;
    match recorded.difference(&asked) {
        Some(why) => Err(SweepError::OtherSweep(out.to_path_buf(), why)),
        None => Ok(recorded),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Architecture;

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
            data: None,
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
}
