//! `trainer sweep`: a grid of recipes, each trained in its own run directory, then the tables
//! and the curves. Any number of workers may run the same command on the same directory: each
//! claims points as it goes (see `claims`), so each point runs once; the same command again
//! resumes the sweep.

use std::path::Path;

use tracing::{info, warn};

use super::{Error, Interrupts, train::train};
use crate::checkpoint;
use crate::claims::{Claim, Claims, worker_name};
use crate::cli::{LogArgs, SweepArgs, TrainArgs};
use crate::plot;
use crate::report::{ReportError, RunDir};
use crate::sweep::{self, Point, Row, SweepRecord};

/// Runs (or resumes, or joins) the sweep `args` describe, `common` being the training flags
/// after `--`; returns its Markdown table. Ctrl-C or SIGTERM stops it within a second wherever
/// it is (training, claiming, waiting for other workers, rebuilding the tables): a claim it
/// holds is released, so the next worker resumes that point at once.
pub(super) fn sweep(
    args: &SweepArgs,
    common: &TrainArgs,
    log: &LogArgs,
    interrupts: &Interrupts,
) -> Result<String, Error> {
    let claims = Claims::new(&args.out, worker_name(), args.stale_after);
    let max_failures = args.max_failures as usize;
    let stopped = || Error::SweepInterrupted(args.out.clone());
    if args.report {
        if !record_path(&args.out).is_file() {
            return Err(Error::NotASweep(args.out.clone()));
        }
        let record = read_record(&args.out)?;
        return report(&args.out, &record.points, &claims, max_failures, interrupts)?
            .map(|(table, _)| table)
            .ok_or_else(stopped);
    }
    let asked = SweepRecord {
        trainer_version: env!("CARGO_PKG_VERSION").into(),
        points: args.grid.points(),
        common: args.common.clone(),
        recipe: common.train_config(),
    };
    std::fs::create_dir_all(&args.out).map_err(|source| ReportError::Io {
        path: args.out.clone(),
        source,
    })?;
    let record = settle_record(&args.out, asked)?;
    let points = &record.points;
    let mine: Vec<(usize, &Point)> = points
        .iter()
        .enumerate()
        .filter(|(i, _)| args.shard.is_none_or(|s| s.has(*i)))
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
            if interrupts.requested() {
                return Err(stopped());
            }
            let label = point.label();
            let dir = sweep::run_path(&args.out, point);
            // Complete, not only tested: a worker killed while plotting leaves it to the next.
            if RunDir::at(&dir).is_complete() || claims.given_up(&label, max_failures).is_some() {
                continue;
            }
            left += 1;
            let Some(claim) = claims.try_claim(&label)? else {
                continue;
            };
            if interrupts.requested() {
                claim.release();
                return Err(stopped());
            }
            info!(run = %label, number = n + 1, of = points.len(), worker = claims.worker(), "sweep");
            match run_point(point, &dir, common, log, interrupts, &claim) {
                Ok(()) => {}
                Err(Error::Interrupted(_)) => {
                    claim.release();
                    return Err(stopped());
                }
                Err(Error::Report(ReportError::Busy(_))) => {
                    // A process this machine's lock still knows holds the run (one that was
                    // paused and taken over): leave the point until it lets go.
                    claim.release();
                    continue;
                }
                Err(e) if claim.check().is_err() => {
                    warn!(run = %label, worker = claims.worker(), "another worker took this point over (this one was silent too long): leaving it ({e})");
                    continue;
                }
                Err(e) => {
                    let why = super::one_line(&e);
                    warn!(run = %label, error = %why, "the point failed");
                    claims.record_failure(&label, &why)?;
                }
            }
            ran = true;
            claim.release();
            if report(&args.out, points, &claims, max_failures, interrupts)?.is_none() {
                return Err(stopped());
            }
        }
        if left == 0 {
            break;
        }
        // Other workers hold the rest: wait for them to finish or to fall silent.
        if !ran && interrupts.wait(claims.poll()) {
            return Err(stopped());
        }
    }
    let (table, failed) =
        report(&args.out, points, &claims, max_failures, interrupts)?.ok_or_else(stopped)?;
    if failed > 0 {
        return Err(Error::PointsFailed(failed, args.out.clone()));
    }
    Ok(table)
}

/// Trains `point` in `dir` under `claim`: continued if it was started before (by any worker).
fn run_point(
    point: &Point,
    dir: &Path,
    common: &TrainArgs,
    log: &LogArgs,
    interrupts: &Interrupts,
    claim: &Claim,
) -> Result<(), Error> {
    let mut run = point.apply(common);
    if RunDir::is_started(dir) {
        run.resume = Some(dir.to_path_buf());
    } else {
        run.out = Some(dir.to_path_buf());
    }
    train(&run, log, interrupts, Some(claim)).map(|_| ())
}

fn record_path(out: &Path) -> std::path::PathBuf {
    out.join("sweep.json")
}

fn read_record(out: &Path) -> Result<SweepRecord, Error> {
    let path = record_path(out);
    let bytes = std::fs::read(&path).map_err(|source| ReportError::Io {
        path: path.clone(),
        source,
    })?;
    serde_json::from_slice(&bytes).map_err(|e| {
        ReportError::Parse {
            path,
            why: e.to_string(),
        }
        .into()
    })
}

/// The sweep's record: `asked`, written if the directory has none yet (by whichever worker
/// gets there first: the file is linked into place, never overwritten), or the one there,
/// which must be the same sweep.
fn settle_record(out: &Path, asked: SweepRecord) -> Result<SweepRecord, Error> {
    let path = record_path(out);
    if !path.exists() {
        let tmp = out.join(format!(
            ".sweep.json.{}",
            worker_name().replace(['/', ':', '@'], "_")
        ));
        let bytes = serde_json::to_vec_pretty(&asked).unwrap_or_default();
        checkpoint::atomic_write_bytes(&tmp, &bytes)?;
        // A hard link fails if the name exists: of workers starting together, one record wins.
        let linked = std::fs::hard_link(&tmp, &path);
        let _ = std::fs::remove_file(&tmp);
        match linked {
            Ok(()) => return Ok(asked),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(source) => return Err(ReportError::Io { path, source }.into()),
        }
    }
    let recorded = read_record(out)?;
    match recorded.difference(&asked) {
        Some(why) => Err(Error::OtherSweep(out.to_path_buf(), why)),
        None => Ok(recorded),
    }
}

/// Which points are finished and which given up: what a table is built from.
fn state(out: &Path, points: &[Point], claims: &Claims, max: usize) -> Vec<(bool, Option<String>)> {
    points
        .iter()
        .map(|p| {
            (
                RunDir::is_finished(&sweep::run_path(out, p)),
                claims.given_up(&p.label(), max),
            )
        })
        .collect()
}

/// Rebuilds `results.md`, `results.csv` and the curves from the run directories, each written
/// atomically; returns the Markdown and how many points were given up, or `None` when a stop
/// was asked for. Workers rebuild concurrently, so after writing it looks again and rebuilds
/// if a point finished meanwhile: the last tables written are always those of every point
/// finished before them.
fn report(
    out: &Path,
    points: &[Point],
    claims: &Claims,
    max: usize,
    interrupts: &Interrupts,
) -> Result<Option<(String, usize)>, Error> {
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
                (true, _) => {
                    rows.push(Row::read(point, &RunDir::at(&sweep::run_path(out, point)))?)
                }
                (false, Some(why)) => failed.push((point.label(), why.clone())),
                (false, None) => pending += 1,
            }
        }
        let markdown = sweep::markdown(&rows) + &sweep::unfinished(&failed, pending);
        checkpoint::atomic_write_bytes(&out.join("results.md"), markdown.as_bytes())?;
        checkpoint::atomic_write_bytes(&out.join("results.csv"), sweep::csv(&rows).as_bytes())?;
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
