//! `trainer sweep`: a grid of recipes, each trained in its own run directory, then the tables
//! and the curves (the worker's loop is [`crate::sweep::worker`]'s; this trains a point and
//! says how the sweep ended).

use super::train::train;
use super::{Error, one_line};
use crate::data::{self, SplitSizes};
use crate::interrupts::Interrupts;
use crate::logging::LogOptions;
use crate::plan::SweepPlan;
use crate::run::RunError;
use crate::sweep::record::SweepRecord;
use crate::sweep::worker::{PointOutcome, Worker, WorkerEnd};

/// Runs (or resumes, or joins) the sweep `plan` describes, or only rebuilds its tables;
/// returns its Markdown table.
pub(super) fn sweep(
    plan: &SweepPlan,
    log: &LogOptions,
    interrupts: &Interrupts,
) -> Result<String, Error> {
    let worker = Worker {
        out: &plan.out,
        shard: plan.shard,
        stale_after: plan.stale_after,
        max_failures: plan.max_failures,
        interrupts,
    };
    let end = if plan.report {
        worker.report()?
    } else {
        // The data's identity goes into the record: a worker given other data is refused.
        let common = &plan.common;
        let sizes = SplitSizes {
            valid: common
                .gave("--valid-size")
                .then_some(common.recipe.valid_size),
            test: common.recipe.test_size,
        };
        let info = data::load(&common.data, sizes)?.info;
        let asked = SweepRecord {
            trainer_version: env!("CARGO_PKG_VERSION").into(),
            points: plan.points.clone(),
            common: plan.common_args.clone(),
            recipe: common.recipe.clone(),
            data: Some(info.clone()),
        };
        worker.run(asked, |point, dir, started, claim| {
            let mut run = common.at_point(point, dir, started);
            run.expected_data = Some(info.clone());
            match train(&run, log, interrupts, Some(claim)) {
                Ok(_) => PointOutcome::Done,
                Err(Error::Interrupted(_)) => PointOutcome::Interrupted,
                Err(Error::Run(RunError::Busy(_))) => PointOutcome::Busy,
                Err(e) => PointOutcome::Failed(one_line(&e)),
            }
        })?
    };
    match end {
        WorkerEnd::Finished { table, failed: 0 } => Ok(table),
        WorkerEnd::Finished { failed, .. } => Err(Error::PointsFailed(failed, plan.out.clone())),
        WorkerEnd::Interrupted => Err(Error::SweepInterrupted(plan.out.clone())),
    }
}
