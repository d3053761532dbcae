//! A sweep worker's loop: settle the sweep's record, then claim points one after another,
//! train each (through the caller), rebuild the tables, and wait for the points other workers
//! hold, until none is left. What to do with each outcome of a point is decided here: a stop
//! releases the point at once, a run another process of this machine still holds is left to
//! it, a failure is recorded (and the point given up after `max_failures` of the same), a point
//! whose claim was taken over is left to its new holder.

use std::path::{Path, PathBuf};
use std::time::Duration;

use tracing::{info, warn};

use super::claims::{Claim, Claims, worker_name};
use super::record::{self, SweepRecord};
use super::{Point, Shard, SweepError, run_path, table};
use crate::files;
use crate::interrupts::Interrupts;
use crate::run::RunDir;

/// How the training of one point ended, as the caller saw it.
#[derive(Debug)]
pub enum PointOutcome {
    /// The run is complete.
    Done,
    /// A stop was asked for; the run saved a checkpoint.
    Interrupted,
    /// Another process of this machine holds the run directory (one that was paused and
    /// taken over): the point waits until it lets go.
    Busy,
    /// The run failed, for this reason (one line).
    Failed(String),
}

/// How a worker's loop ended.
#[derive(Debug)]
pub enum WorkerEnd {
    /// Every point is complete or given up: the Markdown table, and how many were given up.
    Finished {
        /// The table.
        table: String,
        /// Points given up.
        failed: usize,
    },
    /// A stop was asked for; what the worker held is released.
    Interrupted,
}

/// A sweep worker: which sweep, which of its points, how claims go stale.
pub struct Worker<'a> {
    /// The sweep directory.
    pub out: &'a Path,
    /// This worker's share of the points (all without one).
    pub shard: Option<Shard>,
    /// A claim without a heartbeat for this long is stale.
    pub stale_after: Duration,
    /// A point failing the same way this many times in a row is given up.
    pub max_failures: usize,
    /// Ctrl-C and SIGTERM.
    pub interrupts: &'a Interrupts,
}

impl Worker<'_> {
    /// Only rebuilds the tables of the sweep recorded in `out`.
    pub fn report(&self) -> Result<WorkerEnd, SweepError> {
        let record = record::read(self.out)?;
        let claims = Claims::new(self.out, worker_name(), self.stale_after);
        self.end(&record.points, &claims)
    }

    /// Runs (or resumes, or joins) the sweep `asked` describes: `train` trains one point in its
    /// run directory under its claim (true when the run was started before). Ctrl-C or SIGTERM
    /// stops the loop within a second wherever it is: a claim it holds is released, so the
    /// next worker resumes that point at once.
    pub fn run(
        &self,
        asked: SweepRecord,
        mut train: impl FnMut(&Point, PathBuf, bool, &Claim) -> PointOutcome,
    ) -> Result<WorkerEnd, SweepError> {
        let claims = Claims::new(self.out, worker_name(), self.stale_after);
        files::create_dir_all(self.out)?;
        let record = record::settle(self.out, asked, claims.worker())?;
        let points = &record.points;
        let mine: Vec<(usize, &Point)> = points
            .iter()
            .enumerate()
            .filter(|(i, _)| self.shard.is_none_or(|s| s.has(*i)))
            .collect();
        info!(
            worker = claims.worker(),
            points = mine.len(),
            of = points.len(),
            "sweep worker"
        );
        loop {
            // Points neither complete nor given up, and whether this pass ran any of them.
            let (mut left, mut ran) = (0, false);
            for &(n, point) in &mine {
                if self.interrupts.requested() {
                    return Ok(WorkerEnd::Interrupted);
                }
                let label = point.label();
                let dir = run_path(self.out, point);
                // Complete, not only tested: a worker killed while plotting leaves it to the next.
                if RunDir::at(&dir).is_complete()
                    || claims.given_up(&label, self.max_failures).is_some()
                {
                    continue;
                }
                left += 1;
                let Some(claim) = claims.try_claim(&label)? else {
                    continue;
                };
                if self.interrupts.requested() {
                    claim.release();
                    return Ok(WorkerEnd::Interrupted);
                }
                info!(run = %label, number = n + 1, of = points.len(), worker = claims.worker(), "sweep");
                let started = RunDir::is_started(&dir);
                match train(point, dir, started, &claim) {
                    PointOutcome::Done => {}
                    PointOutcome::Interrupted => {
                        claim.release();
                        return Ok(WorkerEnd::Interrupted);
                    }
                    PointOutcome::Busy => {
                        claim.release();
                        continue;
                    }
                    PointOutcome::Failed(why) if claim.check().is_err() => {
                        warn!(run = %label, worker = claims.worker(), "another worker took this point over (this one was silent too long): leaving it ({why})");
                        continue;
                    }
                    PointOutcome::Failed(why) => {
                        warn!(run = %label, error = %why, "the point failed");
                        claims.record_failure(&label, &why)?;
                    }
                }
                ran = true;
                claim.release();
                if table::rebuild(
                    self.out,
                    points,
                    &claims,
                    self.max_failures,
                    self.interrupts,
                )?
                .is_none()
                {
                    return Ok(WorkerEnd::Interrupted);
                }
            }
            if left == 0 {
                break;
            }
            // Other workers hold the rest: wait for them to finish or to fall silent.
            if !ran && self.interrupts.wait(claims.poll()) {
                return Ok(WorkerEnd::Interrupted);
            }
        }
        self.end(points, &claims)
    }

    /// The tables rebuilt, as the loop's end.
    fn end(&self, points: &[Point], claims: &Claims) -> Result<WorkerEnd, SweepError> {
        Ok(
            match table::rebuild(self.out, points, claims, self.max_failures, self.interrupts)? {
                Some((table, failed)) => WorkerEnd::Finished { table, failed },
                None => WorkerEnd::Interrupted,
            },
        )
    }
}
