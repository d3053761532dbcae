//! What `trainer serve` shows: the runs and sweeps under its directories, found and read
//! without writing, creating or locking anything there. A run is a directory with a
//! `config.json`; a sweep one with a `sweep.json`, its points the runs inside it.
//!
//! Every read keeps its result: a file caught while it changes (a model replaced, a run
//! removed under the reader) is shown as it was last read, never as an error.

use std::collections::HashMap;
use std::path::{Component, Path, PathBuf};
use std::sync::Mutex;
use std::time::SystemTime;

use serde::Serialize;

use crate::run::records::EndKind;
use crate::run::{HeldLocks, RunDir, RunError};
use crate::session::EpochRecord;

/// How deep under a directory runs are looked for: `runs/<time>`, `sweeps/<name>/<point>`,
/// and one level of grouping more.
const DEPTH: usize = 3;

/// Why a request for a run is refused.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum LookupError {
    /// The id is not of the form `N:relative/path` with plain components.
    #[error("{0:?}: not a run id (DIR number, ':', a relative path without '..')")]
    BadId(String),
    /// Nothing is shown under that id (no such run, or a path leaving the directory).
    #[error("{0:?}: no such run")]
    NoRun(String),
}

/// Where a run stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RunState {
    /// A process holds the run's lock.
    Training,
    /// Its last start finished (or, recorded before starts recorded their end, it has a
    /// test result).
    Finished,
    /// Its last start was interrupted; `--resume` continues it.
    Stopped,
    /// Its last start failed with an error.
    Failed,
    /// Its last start ended without a record (the process was killed).
    Killed,
}

/// One run, as the runs table shows it.
#[derive(Debug, Clone, Serialize)]
pub struct RunSummary {
    /// How requests name it: `N:path`, the N-th directory served and the path under it.
    pub id: String,
    /// Its path under the directory served.
    pub name: String,
    /// The sweep it is a point of, by id.
    pub sweep: Option<String>,
    /// Where it stands.
    pub state: RunState,
    /// The error its last start failed with.
    pub error: Option<String>,
    /// When it was first started.
    pub started: Option<String>,
    /// The recipe, as config.json records it.
    pub recipe: serde_json::Value,
    /// The class names.
    pub classes: Vec<String>,
    /// The image shape: channels, height, width.
    pub shape: [usize; 3],
    /// Epochs with a history line.
    pub epochs_done: usize,
    /// Best validation accuracy over those epochs.
    pub best_valid_accuracy: Option<f64>,
    /// The last epoch's validation accuracy.
    pub valid_accuracy: Option<f64>,
    /// Test accuracy (a finished run).
    pub test_accuracy: Option<f64>,
    /// Test loss.
    pub test_loss: Option<f64>,
    /// Whether it has a model to classify with (its final one, or its best so far).
    pub has_model: bool,
}

/// One sweep: its runs, by id.
#[derive(Debug, Clone, Serialize)]
pub struct SweepSummary {
    /// How requests name it.
    pub id: String,
    /// Its path under the directory served.
    pub name: String,
    /// Its points' run ids, in name order.
    pub runs: Vec<String>,
}

/// Everything under the directories served.
#[derive(Debug, Clone, Serialize)]
pub struct Listing {
    /// The directories, as given.
    pub roots: Vec<String>,
    /// Every run, sweeps' points included.
    pub runs: Vec<RunSummary>,
    /// Every sweep.
    pub sweeps: Vec<SweepSummary>,
}

/// The files a summary was made from, by modification time and length: unchanged files
/// give the summary again without reading them.
pub(super) type Stamp = Vec<Option<(SystemTime, u64)>>;

/// The directories served, and what was last read from them.
#[derive(Debug)]
pub struct Catalog {
    /// Each directory as given, and its canonical path (None while it does not exist).
    roots: Vec<(PathBuf, Option<PathBuf>)>,
    /// Each run's last summary and the files' stamp it was made from.
    summaries: Mutex<HashMap<PathBuf, (Stamp, RunSummary)>>,
    /// Each run's last history read.
    histories: Mutex<HashMap<PathBuf, (Stamp, Vec<EpochRecord>)>>,
}

impl Catalog {
    /// A catalog of `roots` (each may appear later: it is looked for at every listing).
    pub fn new(roots: &[PathBuf]) -> Self {
        Self {
            roots: roots
                .iter()
                .map(|r| (r.clone(), std::fs::canonicalize(r).ok()))
                .collect(),
            summaries: Mutex::default(),
            histories: Mutex::default(),
        }
    }

    /// The canonical path of root `n`, looked up again if it did not exist before.
    fn root(&self, n: usize) -> Option<PathBuf> {
        let (given, canonical) = self.roots.get(n)?;
        canonical
            .clone()
            .or_else(|| std::fs::canonicalize(given).ok())
    }

    /// Every run and sweep under the roots now.
    pub fn list(&self) -> Listing {
        let held = HeldLocks::read();
        let mut runs = Vec::new();
        let mut sweeps = Vec::new();
        for n in 0..self.roots.len() {
            let Some(root) = self.root(n) else { continue };
            let mut found = Vec::new();
            walk(&root, &root, DEPTH, &mut found);
            found.sort();
            for (rel, kind) in found {
                let id = format!("{n}:{}", rel_string(&rel));
                match kind {
                    Found::Sweep => sweeps.push(SweepSummary {
                        id,
                        name: rel_string(&rel),
                        runs: Vec::new(),
                    }),
                    Found::Run => {
                        let sweep = sweep_of(n, &root, &rel);
                        if let Some(summary) = self.summary(&root.join(&rel), id, sweep, &held) {
                            runs.push(summary);
                        }
                    }
                }
            }
        }
        for sweep in &mut sweeps {
            sweep.runs = runs
                .iter()
                .filter(|r| r.sweep.as_deref() == Some(&sweep.id))
                .map(|r| r.id.clone())
                .collect();
        }
        Listing {
            roots: self
                .roots
                .iter()
                .map(|(given, _)| given.display().to_string())
                .collect(),
            runs,
            sweeps,
        }
    }

    /// The run directory `id` names: under its root, through no `..`, no absolute path and
    /// no symbolic link that leaves the root, holding a `config.json`.
    pub fn resolve(&self, id: &str) -> Result<PathBuf, LookupError> {
        self.locate(id).map(|found| found.dir)
    }

    /// Where the run `id` names is: its root, its path under it, its directory (see
    /// [`Catalog::resolve`]).
    fn locate<'a>(&self, id: &'a str) -> Result<Located<'a>, LookupError> {
        let bad = || LookupError::BadId(id.to_string());
        let (n, rel) = id.split_once(':').ok_or_else(bad)?;
        let n: usize = n.parse().map_err(|_| bad())?;
        let rel = Path::new(rel);
        if rel.as_os_str().is_empty()
            || !rel.components().all(|c| matches!(c, Component::Normal(_)))
        {
            return Err(bad());
        }
        let none = || LookupError::NoRun(id.to_string());
        let root = self.root(n).ok_or_else(none)?;
        let dir = std::fs::canonicalize(root.join(rel)).map_err(|_| none())?;
        if !dir.starts_with(&root) || !RunDir::is_started(&dir) {
            return Err(none());
        }
        Ok(Located { n, root, rel, dir })
    }

    /// The summary of the run in `dir` (its last good one when a file is caught changing;
    /// None when it was never read and cannot be).
    pub fn summary(
        &self,
        dir: &Path,
        id: String,
        sweep: Option<String>,
        held: &HeldLocks,
    ) -> Option<RunSummary> {
        let run = RunDir::at(dir);
        let stamp = stamp(&[run.config(), run.history_jsonl(), run.test()]);
        let state_now = |s: &mut RunSummary| {
            if run.is_locked(held) == Some(true) {
                s.state = RunState::Training;
            } else if s.state == RunState::Training {
                // The lock was let go since the files were read: read them again.
                return false;
            }
            true
        };
        let mut summaries = lock(&self.summaries);
        if let Some((seen, summary)) = summaries.get_mut(dir)
            && *seen == stamp
            && state_now(summary)
        {
            return Some(summary.clone());
        }
        match read_summary(&run, &id, sweep, held) {
            Ok(summary) => {
                summaries.insert(dir.to_path_buf(), (stamp, summary.clone()));
                Some(summary)
            }
            Err(_) => summaries.get(dir).map(|(_, s)| s.clone()),
        }
    }

    /// The history of the run in `dir` (its last good read when the file is caught changing).
    pub fn history(&self, dir: &Path) -> Vec<EpochRecord> {
        let run = RunDir::at(dir);
        let stamp = stamp(&[run.history_jsonl()]);
        let mut histories = lock(&self.histories);
        if let Some((seen, history)) = histories.get(dir)
            && *seen == stamp
        {
            return history.clone();
        }
        match read_history(&run) {
            Ok(history) => {
                histories.insert(dir.to_path_buf(), (stamp, history.clone()));
                history
            }
            Err(_) => histories
                .get(dir)
                .map(|(_, h)| h.clone())
                .unwrap_or_default(),
        }
    }

    /// The summary of the run `id` names, as the listing shows it.
    pub fn summary_of(&self, id: &str) -> Result<RunSummary, LookupError> {
        let found = self.locate(id)?;
        let sweep = sweep_of(found.n, &found.root, found.rel);
        self.summary(&found.dir, id.to_string(), sweep, &HeldLocks::read())
            .ok_or_else(|| LookupError::NoRun(id.to_string()))
    }
}

/// A run located under a root (see [`Catalog::locate`]).
struct Located<'a> {
    /// The root's number.
    n: usize,
    /// The root, canonical.
    root: PathBuf,
    /// The run's path under it, as the id gives it.
    rel: &'a Path,
    /// The run's directory, canonical.
    dir: PathBuf,
}

/// Whether `dir` is a sweep directory: it holds the sweep's record.
fn is_sweep(dir: &Path) -> bool {
    crate::sweep::record::path(dir).is_file()
}

/// The id of the sweep whose point the run at `rel` under root `n` is, if its parent
/// directory is a sweep.
fn sweep_of(n: usize, root: &Path, rel: &Path) -> Option<String> {
    let parent = rel.parent()?;
    is_sweep(&root.join(parent)).then(|| format!("{n}:{}", rel_string(parent)))
}

/// A poisoned cache is still a cache: a panic elsewhere does not stop the server.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The modification time and length of each file (None: not there).
pub(super) fn stamp(files: &[PathBuf]) -> Stamp {
    files
        .iter()
        .map(|f| {
            let meta = std::fs::metadata(f).ok()?;
            Some((meta.modified().ok()?, meta.len()))
        })
        .collect()
}

/// A path with `/` between components, whatever the system.
fn rel_string(rel: &Path) -> String {
    rel.components()
        .map(|c| c.as_os_str().to_string_lossy())
        .collect::<Vec<_>>()
        .join("/")
}

/// What a directory under a root is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Found {
    Run,
    Sweep,
}

/// Collects the runs and sweeps under `dir` (at most `depth` levels), as paths relative to
/// `root`; follows no symbolic link out of `root`, and does not look inside a run.
fn walk(root: &Path, dir: &Path, depth: usize, found: &mut Vec<(PathBuf, Found)>) {
    if depth == 0 {
        return;
    }
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let Ok(path) = std::fs::canonicalize(entry.path()) else {
            continue;
        };
        if !path.is_dir() || !path.starts_with(root) {
            continue;
        }
        let rel = dir.join(entry.file_name());
        let Ok(rel) = rel.strip_prefix(root).map(Path::to_path_buf) else {
            continue;
        };
        if RunDir::is_started(&path) {
            found.push((rel, Found::Run));
            continue;
        }
        if is_sweep(&path) {
            found.push((rel.clone(), Found::Sweep));
        }
        walk(root, &root.join(&rel), depth - 1, found);
    }
}

/// Reads a run's summary from its files.
fn read_summary(
    run: &RunDir,
    id: &str,
    sweep: Option<String>,
    held: &HeldLocks,
) -> Result<RunSummary, RunError> {
    let config = run.read_config()?;
    let history = match run.history_jsonl().is_file() {
        true => read_history(run)?,
        false => Vec::new(),
    };
    let test = match run.test().is_file() {
        true => Some(run.read_test()?),
        false => None,
    };
    let last = config.starts.last();
    let ended = last.and_then(|s| s.ended.as_ref());
    let state = if run.is_locked(held) == Some(true) {
        RunState::Training
    } else {
        match ended.map(|e| e.how) {
            Some(EndKind::Finished) => RunState::Finished,
            Some(EndKind::Stopped) => RunState::Stopped,
            Some(EndKind::Failed) => RunState::Failed,
            None if test.is_some() => RunState::Finished,
            None => RunState::Killed,
        }
    };
    let info = config
        .data
        .as_ref()
        .map_or_else(crate::data::DataInfo::mnist, |d| d.info.clone());
    let valid: Vec<f64> = history
        .iter()
        .filter_map(|r| r.valid.map(|v| v.accuracy))
        .collect();
    Ok(RunSummary {
        id: id.to_string(),
        name: id.split_once(':').map_or(id, |(_, r)| r).to_string(),
        sweep,
        state,
        error: ended.and_then(|e| e.error.clone()),
        started: config.starts.first().map(|s| s.at.clone()),
        recipe: serde_json::to_value(&config.recipe).unwrap_or_default(),
        classes: info.classes.clone(),
        shape: [info.shape.channels, info.shape.height, info.shape.width],
        epochs_done: history.len(),
        best_valid_accuracy: valid.iter().copied().reduce(f64::max),
        valid_accuracy: valid.last().copied(),
        test_accuracy: test.as_ref().map(|t| t.metrics.accuracy),
        test_loss: test.as_ref().map(|t| t.metrics.loss),
        has_model: model_of(run).is_some(),
    })
}

/// The model a run classifies with: its final model, or while it trains its best so far.
pub fn model_of(run: &RunDir) -> Option<PathBuf> {
    [run.final_model(), run.best_model()]
        .into_iter()
        .find(|p| p.is_file())
}

/// A run's history; none yet is an empty one.
fn read_history(run: &RunDir) -> Result<Vec<EpochRecord>, RunError> {
    match run.history_jsonl().is_file() {
        true => run.read_history(),
        false => Ok(Vec::new()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A run's directory with a config.json copied from a real run's shape.
    fn fake_run(dir: &Path) {
        std::fs::create_dir_all(dir).unwrap();
        let config = crate::run::RunConfig {
            trainer_version: "test".into(),
            recipe: crate::recipe::TrainConfig::default(),
            data_dir: PathBuf::from("data"),
            data: None,
            prefetch: 2,
            keep: "best".into(),
            starts: Vec::new(),
        };
        RunDir::at(dir).write_config(&config).unwrap();
    }

    /// Ids name runs under their root only: `..`, absolute paths, symbolic links out and
    /// directories that are not runs are refused.
    #[test]
    fn ids_stay_inside_the_directory_served() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("runs");
        fake_run(&root.join("a"));
        fake_run(&tmp.path().join("outside"));
        std::fs::create_dir_all(root.join("plain")).unwrap();
        #[cfg(unix)]
        std::os::unix::fs::symlink(tmp.path().join("outside"), root.join("link")).unwrap();
        let catalog = Catalog::new(std::slice::from_ref(&root));
        assert!(catalog.resolve("0:a").is_ok());
        for bad in [
            "a",
            "x:a",
            "0:",
            "0:../outside",
            "0:a/../a",
            "0:/etc",
            "0:./a",
        ] {
            assert_eq!(
                catalog.resolve(bad),
                Err(LookupError::BadId(bad.into())),
                "{bad}"
            );
        }
        for none in ["1:a", "0:plain", "0:missing", "0:link"] {
            assert_eq!(
                catalog.resolve(none),
                Err(LookupError::NoRun(none.into())),
                "{none}"
            );
        }
        let listing = catalog.list();
        let ids: Vec<_> = listing.runs.iter().map(|r| r.id.as_str()).collect();
        assert_eq!(ids, ["0:a"], "the link out is not listed");
    }

    /// A run whose config.json turns unreadable is shown as it was last read.
    #[test]
    fn a_run_caught_changing_is_shown_as_before() {
        let tmp = tempfile::tempdir().unwrap();
        fake_run(&tmp.path().join("a"));
        let catalog = Catalog::new(&[tmp.path().to_path_buf()]);
        let before = catalog.list();
        assert_eq!(before.runs.len(), 1);
        assert_eq!(before.runs[0].state, RunState::Killed);
        std::fs::write(tmp.path().join("a/config.json"), "{ half").unwrap();
        let after = catalog.list();
        assert_eq!(after.runs.len(), 1);
        assert_eq!(after.runs[0].recipe, before.runs[0].recipe);
    }
}
