//! The run directory: what a run keeps for its user, under one directory — its configuration,
//! per-epoch history (CSV and JSON lines), checkpoints and model files, test result, plots and
//! TensorBoard events — the names of those files, the lock that keeps one process at a time in
//! it, what each epoch writes there ([`epochs`]), the plots' drawing ([`plots`]) and the
//! records' types ([`records`]).
//!
//! Every file here is written atomically (see [`crate::files::atomic_write`]).

pub mod epochs;
pub mod plots;
pub mod records;

use std::io::Write;
use std::path::{Path, PathBuf};

use crate::files::{self, FileError, atomic_write, io_err};
use crate::session::EpochRecord;
pub use records::{RunConfig, Start, TestReport, now, result_line};

/// Where runs go when `--out` is not given: `runs/<UTC time>` in the current directory.
pub const RUNS_DIR: &str = "runs";

/// What can go wrong with a run directory.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// A file of the run could not be read or written.
    #[error(transparent)]
    File(#[from] FileError),
    /// `--out` names a directory that already holds a run.
    #[error(
        "--out {0}: already holds a run (continue it with `trainer train --resume {0}`, or choose another --out)"
    )]
    Exists(PathBuf),
    /// Another process works in the run directory.
    #[error(
        "{0}: another trainer process is working in this run directory (it holds {0}/.lock); wait for it or stop it"
    )]
    Busy(PathBuf),
    /// `--resume` or `plot` names something that is not a run directory.
    #[error("{path}: not a run directory ({why})")]
    NotARun {
        /// The directory.
        path: PathBuf,
        /// What is missing.
        why: String,
    },
}

/// Why writing to a run directory may not go on: what a [`Guard`] says.
pub type GuardError = Box<dyn std::error::Error + Send + Sync>;

/// What must still hold before each write to a run directory: a sweep's claim on the run (a
/// worker whose claim was taken over must stop writing to it).
pub trait Guard: Sync {
    /// Ok while writing may go on; why not otherwise.
    fn check(&self) -> Result<(), GuardError>;
}

/// A run directory held by this process (see [`RunDir::lock`]).
#[derive(Debug)]
pub struct RunLock {
    _file: std::fs::File,
}

/// A run directory and the names of the files in it.
#[derive(Debug, Clone)]
pub struct RunDir {
    path: PathBuf,
}

impl RunDir {
    /// Creates a new run directory: `out` if given (it must not hold a run already), else a
    /// fresh `runs/<UTC time>[-N]`. Never reuses a directory that holds a run.
    pub fn create(out: Option<&Path>) -> Result<Self, RunError> {
        if let Some(out) = out {
            Self::ensure_free(out)?;
            std::fs::create_dir_all(out).map_err(io_err(out))?;
            return Ok(Self {
                path: out.to_path_buf(),
            });
        }
        let stamp = humantime::format_rfc3339_seconds(std::time::SystemTime::now())
            .to_string()
            .replace(':', "-");
        let base = Path::new(RUNS_DIR);
        std::fs::create_dir_all(base).map_err(io_err(base))?;
        for n in 1.. {
            let name = if n == 1 {
                stamp.clone()
            } else {
                format!("{stamp}-{n}")
            };
            let path = base.join(name);
            // `create_dir` fails when the directory exists: two runs never share one.
            match std::fs::create_dir(&path) {
                Ok(()) => return Ok(Self { path }),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(io_err(&path)(e).into()),
            }
        }
        unreachable!("an unbounded range always yields another name")
    }

    /// Fails when `out` already holds a run (cheap: lets a command refuse before it works).
    pub fn ensure_free(out: &Path) -> Result<(), RunError> {
        match Self::at(out).config().exists() {
            true => Err(RunError::Exists(out.to_path_buf())),
            false => Ok(()),
        }
    }

    /// Opens an existing run directory (for `--resume` or `plot`).
    pub fn open(path: &Path) -> Result<Self, RunError> {
        let run = Self::at(path);
        if !Self::is_started(path) {
            return Err(RunError::NotARun {
                path: path.to_path_buf(),
                why: "no config.json".into(),
            });
        }
        Ok(run)
    }

    /// Takes the run directory for this process: a second process that tries (a resume of a
    /// run still going, the same sweep started twice) gets [`RunError::Busy`]. The lock is
    /// the operating system's on `.lock` and goes with the process, however it ends. Once
    /// it is held, the temporary files a killed process left behind are removed (never those
    /// of a process still writing: it would hold the lock).
    pub fn lock(&self) -> Result<RunLock, RunError> {
        let path = self.path.join(".lock");
        let file = std::fs::File::create(&path).map_err(io_err(&path))?;
        match file.try_lock() {
            Ok(()) => {
                files::remove_temporaries(&self.path);
                Ok(RunLock { _file: file })
            }
            Err(std::fs::TryLockError::WouldBlock) => Err(RunError::Busy(self.path.clone())),
            Err(std::fs::TryLockError::Error(e)) => Err(io_err(&path)(e).into()),
        }
    }

    /// Whether a process holds this run directory's lock (a run training, or a resume),
    /// found without opening `.lock` or taking it — a watcher that took it, even for a moment,
    /// could make a `--resume` find the run busy. Told from the table of locks `held` (read
    /// once for many runs); `None` where it cannot be told. No `.lock`: never held.
    pub fn is_locked(&self, held: &HeldLocks) -> Option<bool> {
        match std::fs::metadata(self.path.join(".lock")) {
            Ok(meta) => held.holds(&meta),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Some(false),
            Err(_) => None,
        }
    }

    /// Whether the run has everything a finished run has: its final model, test result and
    /// plots. A run killed after its last epoch lacks some, and a resume makes them.
    pub fn is_complete(&self) -> bool {
        let mut needed = vec![self.final_model(), self.test()];
        needed.extend(["confusion"].map(|p| self.plot(p).with_extension("png")));
        if self.history_jsonl().is_file() {
            needed.push(self.plot("learning_curves").with_extension("png"));
        }
        needed.iter().all(|p| p.is_file())
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether `dir` holds a run that has finished (its test result is written).
    pub fn is_finished(dir: &Path) -> bool {
        Self::at(dir).test().is_file()
    }

    /// Whether `dir` holds a run that was started (its configuration is written).
    pub fn is_started(dir: &Path) -> bool {
        Self::at(dir).config().is_file()
    }

    /// The file names of a run in `dir`, without looking at what is there.
    pub fn at(dir: &Path) -> Self {
        Self {
            path: dir.to_path_buf(),
        }
    }

    /// `config.json`: the recipe, the device, versions, every start of the run.
    pub fn config(&self) -> PathBuf {
        self.path.join("config.json")
    }
    /// `history.csv`: one row per epoch.
    pub fn history_csv(&self) -> PathBuf {
        self.path.join("history.csv")
    }
    /// `history.jsonl`: one JSON object per epoch.
    pub fn history_jsonl(&self) -> PathBuf {
        self.path.join("history.jsonl")
    }
    /// `checkpoint.ckpt`: the latest state, to resume from.
    pub fn checkpoint(&self) -> PathBuf {
        self.path.join("checkpoint.ckpt")
    }
    /// `checkpoints/epoch-NNN.ckpt`: the state after epoch `n` (`--keep all`).
    pub fn epoch_checkpoint(&self, n: usize) -> PathBuf {
        self.path
            .join("checkpoints")
            .join(format!("epoch-{n:03}.ckpt"))
    }
    /// `best.model`: the model of the epoch with the best validation accuracy.
    pub fn best_model(&self) -> PathBuf {
        self.path.join("best.model")
    }
    /// `best-loss.model`: the model of the epoch with the lowest validation loss (early
    /// stopping restores it).
    pub fn best_loss_model(&self) -> PathBuf {
        self.path.join("best-loss.model")
    }
    /// `model.model`: the final model.
    pub fn final_model(&self) -> PathBuf {
        self.path.join("model.model")
    }
    /// `test.json`: the test result with per-class figures and the confusion matrix.
    pub fn test(&self) -> PathBuf {
        self.path.join("test.json")
    }
    /// A plot's path without extension: the picture is `NAME.png` and `NAME.svg`.
    pub fn plot(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }

    /// Reads `config.json`.
    pub fn read_config(&self) -> Result<RunConfig, RunError> {
        Ok(files::read_json(&self.config())?)
    }

    /// Writes `config.json`.
    pub fn write_config(&self, config: &RunConfig) -> Result<(), RunError> {
        Ok(files::write_json(&self.config(), config)?)
    }

    /// Rewrites `history.csv` and `history.jsonl` from the full history.
    pub fn write_history(&self, history: &[EpochRecord]) -> Result<(), RunError> {
        atomic_write(&self.history_csv(), |f| {
            writeln!(
                f,
                "epoch,train_loss,train_acc,val_loss,val_acc,seconds,train_seconds,images_per_s"
            )?;
            for r in history {
                let (vl, va) = r
                    .valid
                    .map(|v| (v.loss.to_string(), v.accuracy.to_string()))
                    .unwrap_or_default();
                writeln!(
                    f,
                    "{},{},{},{vl},{va},{},{},{}",
                    r.epoch,
                    r.train.loss,
                    r.train.accuracy,
                    r.seconds,
                    r.train_seconds,
                    r.images_per_s()
                )?;
            }
            Ok(())
        })?;
        atomic_write(&self.history_jsonl(), |f| {
            for r in history {
                serde_json::to_writer(&mut *f, r)?;
                writeln!(f)?;
            }
            Ok(())
        })?;
        Ok(())
    }

    /// Reads the history back from `history.jsonl`.
    pub fn read_history(&self) -> Result<Vec<EpochRecord>, RunError> {
        let path = self.history_jsonl();
        let text = std::fs::read_to_string(&path).map_err(io_err(&path))?;
        text.lines()
            .enumerate()
            .map(|(i, line)| {
                serde_json::from_str(line)
                    .map_err(|e| files::corrupt(&path, format!("line {}: {e}", i + 1)).into())
            })
            .collect()
    }

    /// Writes `test.json`.
    pub fn write_test(&self, report: &TestReport) -> Result<(), RunError> {
        Ok(files::write_json(&self.test(), report)?)
    }

    /// Reads `test.json`.
    pub fn read_test(&self) -> Result<TestReport, RunError> {
        Ok(files::read_json(&self.test())?)
    }

    /// What the run was trained on, as its `config.json` records it (MNIST's for a run
    /// recorded before other data).
    pub fn data_info(&self) -> Result<crate::data::DataInfo, RunError> {
        Ok(self
            .read_config()?
            .data
            .map_or_else(crate::data::DataInfo::mnist, |d| d.info))
    }

    /// The model file `--model PATH` names: PATH itself, or for a run directory its final
    /// model (its best one by validation accuracy with `best`).
    pub fn model_file(path: &Path, best: bool) -> PathBuf {
        if !path.is_dir() {
            return path.to_path_buf();
        }
        let run = Self::at(path);
        if best {
            run.best_model()
        } else {
            run.final_model()
        }
    }
}

/// The file locks the kernel holds, read once (`/proc/locks` on Linux): what
/// [`RunDir::is_locked`] looks in, without taking any lock.
#[derive(Debug, Clone, Default)]
pub struct HeldLocks {
    /// Each held (not waiting) lock's file: device major, minor, inode.
    files: Option<Vec<(u64, u64, u64)>>,
}

impl HeldLocks {
    /// The table as it is now (empty of knowledge where the system has none to read).
    pub fn read() -> Self {
        let table = if cfg!(target_os = "linux") {
            std::fs::read_to_string("/proc/locks").ok()
        } else {
            None
        };
        Self {
            files: table.map(|t| Self::parse(&t)),
        }
    }

    /// Each line: `N: FLOCK ADVISORY WRITE PID MAJ:MIN:INODE START END` (majors and minors in
    /// hexadecimal); a waiting lock has `->` after `N:` and is skipped.
    fn parse(table: &str) -> Vec<(u64, u64, u64)> {
        table
            .lines()
            .filter(|line| !line.contains("->"))
            .filter_map(|line| {
                line.split_whitespace().find_map(|field| {
                    let mut parts = field.split(':');
                    match (parts.next(), parts.next(), parts.next(), parts.next()) {
                        (Some(a), Some(b), Some(c), None) => Some((
                            u64::from_str_radix(a, 16).ok()?,
                            u64::from_str_radix(b, 16).ok()?,
                            c.parse().ok()?,
                        )),
                        _ => None,
                    }
                })
            })
            .collect()
    }

    /// Whether a lock is held on the file of `meta`.
    #[cfg(unix)]
    fn holds(&self, meta: &std::fs::Metadata) -> Option<bool> {
        use std::os::unix::fs::MetadataExt;
        let files = self.files.as_ref()?;
        let dev = meta.dev();
        // glibc's major()/minor() of a dev_t.
        let major = ((dev >> 8) & 0xfff) | ((dev >> 32) & !0xfff);
        let minor = (dev & 0xff) | ((dev >> 12) & !0xff);
        Some(files.contains(&(major, minor, meta.ino())))
    }

    /// Elsewhere there is no table to read.
    #[cfg(not(unix))]
    fn holds(&self, _meta: &std::fs::Metadata) -> Option<bool> {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::Metrics;

    #[test]
    fn result_line_is_key_value() {
        let m = Metrics {
            loss: 0.123456,
            accuracy: 0.96459,
            count: 10000,
        };
        assert_eq!(
            result_line(&m),
            "test_loss=0.1235 test_acc=0.9646 test_images=10000"
        );
    }

    fn record(epoch: usize) -> EpochRecord {
        let m = Metrics {
            loss: 0.5 / epoch as f64,
            accuracy: 0.9,
            count: 100,
        };
        EpochRecord {
            epoch,
            train: m,
            valid: Some(m),
            train_seconds: 0.5,
            seconds: 0.6,
        }
    }

    #[test]
    fn history_round_trips_and_csv_has_a_row_per_epoch() {
        let dir = tempfile::tempdir().unwrap();
        let run = RunDir::create(Some(&dir.path().join("r"))).unwrap();
        let history = vec![record(1), record(2)];
        run.write_history(&history).unwrap();
        assert_eq!(run.read_history().unwrap(), history);
        let csv = std::fs::read_to_string(run.history_csv()).unwrap();
        assert_eq!(csv.lines().count(), 3);
        assert!(
            csv.lines()
                .nth(2)
                .unwrap()
                .starts_with("2,0.25,0.9,0.25,0.9,0.6,0.5,200")
        );
    }

    #[test]
    fn an_existing_run_is_never_reused() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("r");
        let run = RunDir::create(Some(&out)).unwrap();
        std::fs::write(run.config(), "{}").unwrap();
        assert!(matches!(
            RunDir::create(Some(&out)),
            Err(RunError::Exists(_))
        ));
        assert!(matches!(
            RunDir::open(&dir.path().join("nothing")),
            Err(RunError::NotARun { .. })
        ));
    }

    /// The lock is seen held while it is, and free once dropped, without being taken.
    #[cfg(target_os = "linux")]
    #[test]
    fn a_held_lock_is_seen_from_outside() {
        let tmp = tempfile::tempdir().unwrap();
        let run = RunDir::at(tmp.path());
        assert_eq!(
            run.is_locked(&HeldLocks::read()),
            Some(false),
            "no .lock yet"
        );
        let lock = run.lock().unwrap();
        assert_eq!(run.is_locked(&HeldLocks::read()), Some(true));
        drop(lock);
        assert_eq!(run.is_locked(&HeldLocks::read()), Some(false));
        // Looking did not take it: it can be taken again.
        assert!(run.lock().is_ok());
    }
}
