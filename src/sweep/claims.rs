//! Claims on a sweep's points, so that any number of workers (processes on one machine, Slurm
//! array tasks, Kubernetes indexed-Job pods) share one sweep directory and each point runs
//! once, on file systems shared over the network.
//!
//! A claim on a point is a directory `.claims/LABEL/GEN` (`GEN` = 000001, 000002, …), made
//! with `mkdir`, which is atomic on every file system including NFS: of the workers that try
//! the same `GEN`, exactly one succeeds. The claim with the highest `GEN` is the point's
//! current one. Its holder writes `owner.json` (who, when) into it and touches `heartbeat`
//! every `stale_after / 4`. A claim is *stale* when neither its directory nor its heartbeat
//! has changed for `stale_after` by the file server's clock (read as the time stamp of a file
//! just written, so that clocks of different machines are never compared), when its holder
//! released it, or when its holder was a process of this machine that no longer exists. A stale claim is taken over by making the next `GEN`: nothing is
//! renamed or deleted, so a worker that was paused past `stale_after` finds a higher `GEN`
//! than its own when it checks, before every write, and stops working on the point.
//!
//! Each point's failures are kept in `.claims/LABEL/failures.json` by the holder; a point
//! that failed the same way `max_failures` times in a row is given up.

use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

use crate::files::{FileError, atomic_write_bytes, io_err};
use crate::host;
use crate::run::{Guard, GuardError};

/// What can go wrong with claims. Each names the file.
#[derive(Debug, thiserror::Error)]
pub enum ClaimError {
    /// The file system refused, reading or writing a claim's file.
    #[error(transparent)]
    File(#[from] FileError),
    /// Another worker took the claim over (this one was taken for dead) before a write.
    #[error("{0}: the claim on this point was taken over by another worker")]
    Lost(PathBuf),
}

/// Who a worker is, for claim files and logs: the Slurm array task, the Kubernetes indexed
/// Job's pod, or `host:pid`.
pub fn worker_name() -> String {
    let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
    let host = host::name();
    let pid = std::process::id();
    if let Some(job) = var("SLURM_ARRAY_JOB_ID").or_else(|| var("SLURM_JOB_ID")) {
        let task = var("SLURM_ARRAY_TASK_ID").map_or(String::new(), |t| format!("_{t}"));
        return format!("slurm-{job}{task}@{host}:{pid}");
    }
    if let Some(index) = var("JOB_COMPLETION_INDEX") {
        return format!("k8s-{index}@{host}:{pid}");
    }
    format!("{host}:{pid}")
}

/// What a claim's `owner.json` says.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Owner {
    /// The worker ([`worker_name`]).
    pub worker: String,
    /// The machine it runs on.
    pub host: String,
    /// Its process id there.
    pub pid: u32,
    /// When it claimed, RFC 3339.
    pub at: String,
}

impl Owner {
    /// Whether the owner is known to be gone: a process of this machine that no longer
    /// exists (a worker killed and started again on one machine need not wait for the stale
    /// time). Elsewhere, or where processes cannot be looked up, nothing is known.
    fn is_gone(&self) -> bool {
        host::has_ended(&self.host, self.pid)
    }
}

/// The claims of one sweep directory, as one worker sees them.
#[derive(Debug, Clone)]
pub struct Claims {
    dir: PathBuf,
    worker: String,
    stale_after: Duration,
}

/// A claim this worker holds; its heartbeat runs until it is released or dropped.
#[derive(Debug)]
pub struct Claim {
    point: PathBuf,
    generation: u64,
    stop: Option<mpsc::Sender<()>>,
    heartbeat: Option<std::thread::JoinHandle<()>>,
}

/// The numbered claim directories of a point, lowest first.
fn generations(point: &Path) -> Result<Vec<u64>, ClaimError> {
    let entries = match std::fs::read_dir(point) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io_err(point)(e).into()),
    };
    let mut gens: Vec<u64> = entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse().ok())
        .collect();
    gens.sort_unstable();
    Ok(gens)
}

fn generation_dir(point: &Path, generation: u64) -> PathBuf {
    point.join(format!("{generation:06}"))
}

fn modified(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

impl Claims {
    /// The claims under `sweep/.claims`, for `worker`; a claim is stale after `stale_after`
    /// without a heartbeat.
    pub fn new(sweep: &Path, worker: String, stale_after: Duration) -> Self {
        Self {
            dir: sweep.join(".claims"),
            worker,
            stale_after,
        }
    }

    /// The worker's name.
    pub fn worker(&self) -> &str {
        &self.worker
    }

    fn point(&self, label: &str) -> PathBuf {
        self.dir.join(label)
    }

    /// How often a holder touches its heartbeat.
    pub fn interval(&self) -> Duration {
        (self.stale_after / 4).clamp(Duration::from_millis(100), Duration::from_secs(30))
    }

    /// How often a worker with nothing to claim looks again: at least every 2 s, so that it
    /// ends soon after the last point does (a job-array task holds its allocation while it
    /// waits), and a point released or gone stale is taken soon.
    pub fn poll(&self) -> Duration {
        self.interval().min(Duration::from_secs(2))
    }

    /// The file server's time now: the time stamp of a file written just now.
    fn now(&self) -> Result<SystemTime, ClaimError> {
        let clock = self.dir.join(format!(
            ".clock-{}",
            self.worker.replace(['/', ':', '@'], "_")
        ));
        std::fs::write(&clock, b"").map_err(io_err(&clock))?;
        Ok(std::fs::metadata(&clock)
            .and_then(|m| m.modified())
            .map_err(io_err(&clock))?)
    }

    /// Whether the claim `generation` of the point in `point` is stale at `now`.
    fn is_stale(&self, point: &Path, generation: u64, now: SystemTime) -> bool {
        let dir = generation_dir(point, generation);
        let owner = std::fs::read(dir.join("owner.json"))
            .ok()
            .and_then(|b| serde_json::from_slice::<Owner>(&b).ok());
        if dir.join("released").exists() || owner.is_some_and(|o| o.is_gone()) {
            return true;
        }
        let last = [modified(&dir), modified(&dir.join("heartbeat"))]
            .into_iter()
            .flatten()
            .max();
        match last {
            Some(last) => now.duration_since(last).unwrap_or_default() > self.stale_after,
            // Gone (an odd state): treat as stale so that the point is not blocked forever.
            None => true,
        }
    }

    /// Claims the point `label` if no live claim holds it: `Some(claim)`, or `None` when
    /// another worker holds it (or took it at the same moment).
    pub fn try_claim(&self, label: &str) -> Result<Option<Claim>, ClaimError> {
        let point = self.point(label);
        std::fs::create_dir_all(&point).map_err(io_err(&point))?;
        let next = match generations(&point)?.last() {
            None => 1,
            Some(&g) if self.is_stale(&point, g, self.now()?) => g + 1,
            Some(_) => return Ok(None),
        };
        let dir = generation_dir(&point, next);
        match std::fs::create_dir(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => return Ok(None),
            Err(e) => return Err(io_err(&dir)(e).into()),
        }
        let owner = Owner {
            worker: self.worker.clone(),
            host: host::name(),
            pid: std::process::id(),
            at: crate::run::now(),
        };
        atomic_write_bytes(
            &dir.join("owner.json"),
            &serde_json::to_vec(&owner).unwrap_or_default(),
        )?;
        Ok(Some(Claim::hold(point, next, self.interval())))
    }

    /// The failures recorded for `label`, oldest first.
    pub fn failures(&self, label: &str) -> Vec<String> {
        std::fs::read(self.point(label).join("failures.json"))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default()
    }

    /// The reason `label` was given up for: the same failure `max` times in a row.
    pub fn given_up(&self, label: &str, max: usize) -> Option<String> {
        let failures = self.failures(label);
        let last = failures.last()?;
        (failures.len() >= max && failures.iter().rev().take(max).all(|f| f == last))
            .then(|| last.clone())
    }

    /// Records a failure of `label` (its holder does, under its claim).
    pub fn record_failure(&self, label: &str, why: &str) -> Result<(), ClaimError> {
        let mut failures = self.failures(label);
        failures.push(why.to_string());
        let path = self.point(label).join("failures.json");
        Ok(atomic_write_bytes(
            &path,
            &serde_json::to_vec(&failures).unwrap_or_default(),
        )?)
    }
}

impl Claim {
    /// Holds the claim `generation` of `point`, touching its heartbeat every `interval`.
    fn hold(point: PathBuf, generation: u64, interval: Duration) -> Self {
        let heartbeat = generation_dir(&point, generation).join("heartbeat");
        let (stop, stopped) = mpsc::channel::<()>();
        let beat = move || {
            // A failed touch is retried at the next beat; the claim goes stale if it never
            // succeeds, which is what it should then do.
            while let Err(mpsc::RecvTimeoutError::Timeout) = stopped.recv_timeout(interval) {
                let _ = std::fs::write(&heartbeat, b"");
            }
        };
        let heartbeat = std::thread::Builder::new()
            .name("claim-heartbeat".into())
            .spawn(beat)
            .ok();
        Self {
            point,
            generation,
            stop: Some(stop),
            heartbeat,
        }
    }

    /// The claim's directory.
    pub fn dir(&self) -> PathBuf {
        generation_dir(&self.point, self.generation)
    }

    /// Ok while this claim is the point's current one; [`ClaimError::Lost`] once another worker
    /// took it over. Called before every write for the point.
    pub fn check(&self) -> Result<(), ClaimError> {
        match generations(&self.point)?.last() {
            Some(&g) if g == self.generation => Ok(()),
            _ => Err(ClaimError::Lost(self.dir())),
        }
    }

    /// Gives the claim up: the heartbeat stops and other workers may claim the point at once.
    pub fn release(mut self) {
        self.stop_heartbeat();
        let _ = std::fs::write(self.dir().join("released"), b"");
    }

    fn stop_heartbeat(&mut self) {
        self.stop.take();
        if let Some(h) = self.heartbeat.take() {
            let _ = h.join();
        }
    }
}

/// A claim guards the writes to its point's run directory: they stop once it is lost.
impl Guard for Claim {
    fn check(&self) -> Result<(), GuardError> {
        Ok(Claim::check(self)?)
    }
}

impl Drop for Claim {
    fn drop(&mut self) {
        self.stop_heartbeat();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(dir: &Path, worker: &str, stale_ms: u64) -> Claims {
        Claims::new(dir, worker.into(), Duration::from_millis(stale_ms))
    }

    /// One claim per point among workers; a released claim is free at once.
    #[test]
    fn a_point_is_claimed_once_until_released() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (
            claims(dir.path(), "a", 60_000),
            claims(dir.path(), "b", 60_000),
        );
        let held = a.try_claim("p").unwrap().unwrap();
        assert!(b.try_claim("p").unwrap().is_none());
        assert!(b.try_claim("q").unwrap().is_some());
        held.check().unwrap();
        held.release();
        let again = b.try_claim("p").unwrap().unwrap();
        assert_eq!(again.generation, 2);
        let owner: Owner =
            serde_json::from_slice(&std::fs::read(again.dir().join("owner.json")).unwrap())
                .unwrap();
        assert_eq!(owner.worker, "b");
    }

    /// A claim whose heartbeat stopped (its holder paused or dead) is taken over after
    /// `stale_after`; its holder then finds it lost. A live holder's claim is never stale.
    #[test]
    fn a_silent_claim_goes_stale_and_its_holder_finds_out() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (claims(dir.path(), "a", 400), claims(dir.path(), "b", 400));
        let live = a.try_claim("live").unwrap().unwrap();
        let mut silent = a.try_claim("silent").unwrap().unwrap();
        silent.stop_heartbeat(); // as if the process were stopped
        std::thread::sleep(Duration::from_millis(900));
        assert!(b.try_claim("live").unwrap().is_none(), "heartbeat keeps it");
        let taken = b.try_claim("silent").unwrap().unwrap();
        assert!(matches!(silent.check(), Err(ClaimError::Lost(_))));
        taken.check().unwrap();
        live.check().unwrap();
    }

    /// A point is given up after the same failure `max` times in a row, not after different
    /// ones.
    #[test]
    fn the_same_failure_max_times_gives_a_point_up() {
        let dir = tempfile::tempdir().unwrap();
        let c = claims(dir.path(), "a", 60_000);
        std::fs::create_dir_all(dir.path().join(".claims/p")).unwrap();
        c.record_failure("p", "x").unwrap();
        c.record_failure("p", "y").unwrap();
        c.record_failure("p", "y").unwrap();
        assert_eq!(c.given_up("p", 3), None);
        c.record_failure("p", "y").unwrap();
        assert_eq!(c.given_up("p", 3).as_deref(), Some("y"));
        assert_eq!(c.given_up("q", 3), None);
    }

    /// Workers are named by their scheduler's variables.
    #[test]
    fn workers_are_named_by_their_scheduler() {
        let name = worker_name();
        assert!(name.contains(&format!(":{}", std::process::id())), "{name}");
    }
}
