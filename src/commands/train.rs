//! `trainer train`: a new run, or the one `--resume` names continued, from the recipe to the
//! test result and the plots.

use burn::module::Module;
use burn::optim::ModuleOptimizer;
use burn::tensor::Device;
use tracing::{info, warn};

use super::Error;
use crate::backend::{self, BackendKind};
use crate::checkpoint;
use crate::data::{self, DataInfo, DataRequest, SplitSizes};
use crate::interop;
use crate::interop::tensorboard::EventLog;
use crate::interrupts::Interrupts;
use crate::logging::{self, LogOptions, StepBar};
use crate::metrics::{RunningSums, round};
use crate::model::Model;
use crate::plan::{RunStart, TrainPlan};
use crate::recipe::TrainConfig;
use crate::run::epochs::EpochWriter;
use crate::run::records::{DataRecord, EndKind, Ending};
use crate::run::{self, Guard, RunConfig, RunDir, Start, TestReport, plots};
use crate::session::{Session, TrainingRecord};
use crate::training::{self, Feed, Observer, ObserverError, Outcome, Sets, StepMethod, TrainError};

/// Trains the run `plan` describes; returns the result line. Under a sweep's `guard` (its
/// claim on the point), the guard is checked before every write to the run directory.
pub(super) fn train(
    plan: &TrainPlan,
    log: &LogOptions,
    interrupts: &Interrupts,
    guard: Option<&dyn Guard>,
) -> Result<String, Error> {
    let (resumed, mut run_config) = run_config(plan)?;
    // Data first: a bad file is reported before a slow GPU initialisation, and neither
    // failure leaves an empty run directory behind.
    let (data, request) = load_data(plan, &mut run_config, resumed.is_some())?;
    let config = run_config.recipe.clone();
    let sets = Sets::new(&data, &config)?;
    // The data's splits live on in `sets` (limited copies, or shared with it).
    let info = data.info.clone();
    drop(data);
    // A resumed run continues on the backend it last ran on, unless --backend says otherwise.
    let recorded: Option<BackendKind> = run_config.starts.last().map(|s| s.device.backend);
    let asks_fused = plan.feed.step == StepMethod::Fused
        && plan.feed.gather == crate::gpu::gather::GatherMethod::Kernel;
    let device = backend::open(plan.device.request(recorded, asks_fused))?;
    let is_resumed = resumed.is_some();
    let run = match resumed {
        Some(run) => run,
        None => RunDir::create(match &plan.start {
            RunStart::New(out) => out.as_deref(),
            RunStart::Resume(dir) => Some(dir),
        })?,
    };
    // One process at a time in a run directory; the lock goes when the process does.
    let _lock = run.lock()?;
    if let Some(guard) = guard {
        guard.check().map_err(Error::Guard)?;
    }
    let mut observer = RunObserver {
        files: EpochWriter {
            events: EventLog::open(run.path())?,
            recipe: config.clone(),
            steps: sets.steps(config.batch_size),
            guard,
            run: &run,
            device: device.device.clone(),
            keep: plan.keep,
            patience: config.patience.is_some(),
            data: info.clone(),
        },
        bar: StepBar::new(logging::bar_allowed(log), config.batch_size),
        interrupts: interrupts.clone(),
    };
    let mut session = open_session(
        &run,
        is_resumed,
        &run_config,
        &info,
        &device.device,
        &mut observer,
    )?;
    run_config.starts.push(Start {
        at: run::now(),
        args: plan.args.clone(),
        device: device.info.clone(),
        from_epoch: session.record.epochs_done(),
        ended: None,
    });
    run_config.prefetch = plan.feed.prefetch;
    run.write_config(&run_config)?;
    log_recipe(&run, &request.path, &config, &sets);
    let feed = training::decide_step(
        &plan.feed,
        &config,
        &device.device,
        &session.model,
        &sets.train,
    );

    let result = (|| {
        let outcome = training::train(
            &config,
            &sets,
            &device.device,
            &feed,
            &mut session,
            &mut observer,
        );
        logging::set_progress_bar(None);
        match outcome? {
            Outcome::Interrupted { epoch } => {
                warn!(epoch, run = %run.path().display(), "interrupted; checkpoint saved");
                return Err(Error::Interrupted(run.path().to_path_buf()));
            }
            Outcome::EarlyStopped { best, .. } => {
                info!(
                    best_epoch = best,
                    "restored the weights of the best epoch by validation loss"
                );
            }
            Outcome::Completed => {}
        }
        if let Some(guard) = guard {
            guard.check().map_err(Error::Guard)?;
        }
        finish(
            &run,
            &mut observer.files.events,
            session.model.valid(),
            &info,
            &sets,
            &device.device,
            &feed,
        )
    })();
    record_ending(&run, &mut run_config, &result, guard);
    result
}

/// Writes how this start of the run ended into `config.json` (for `trainer serve` and for a
/// reader of the run): finished, stopped (interrupted) or failed with its error. Best effort:
/// a failure to write it is logged, the run's result stands; nothing is written once a
/// sweep's claim on the run was taken over.
fn record_ending(
    run: &RunDir,
    run_config: &mut RunConfig,
    result: &Result<String, Error>,
    guard: Option<&dyn Guard>,
) {
    if guard.is_some_and(|g| g.check().is_err()) {
        return;
    }
    let (how, error) = match result {
        Ok(_) => (EndKind::Finished, None),
        Err(Error::Interrupted(_)) => (EndKind::Stopped, None),
        Err(e) => (EndKind::Failed, Some(super::one_line(e))),
    };
    if let Some(start) = run_config.starts.last_mut() {
        start.ended = Some(Ending {
            at: run::now(),
            how,
            error,
        });
    }
    if let Err(e) = run.write_config(run_config) {
        warn!(error = %e, "how the run ended could not be recorded in config.json");
    }
}

/// The run's record: new, or the one of the run being resumed (its directory open). A
/// directory that holds no run yet (a run killed before it wrote anything) starts over there
/// with the flags given.
fn run_config(plan: &TrainPlan) -> Result<(Option<RunDir>, RunConfig), Error> {
    let resume = match &plan.start {
        RunStart::Resume(dir) if !dir.is_dir() || RunDir::is_started(dir) => Some(dir),
        _ => None,
    };
    if let Some(dir) = resume {
        let run = RunDir::open(dir)?;
        let mut saved = run.read_config()?;
        if let Some(c) = saved.recipe.contradiction(&plan.recipe, &plan.given) {
            return Err(Error::ResumeRecipe(dir.to_path_buf(), c));
        }
        if plan.gave("--epochs") {
            saved.recipe.epochs = plan.recipe.epochs;
        }
        return Ok((Some(run), saved));
    }
    match &plan.start {
        RunStart::New(Some(out)) => RunDir::ensure_free(out)?,
        RunStart::Resume(dir) => {
            RunDir::ensure_free(dir)?;
            info!(run = %dir.display(), "nothing was saved there yet: the run starts over");
        }
        RunStart::New(None) => {}
    }
    let config = RunConfig {
        trainer_version: env!("CARGO_PKG_VERSION").into(),
        recipe: new_recipe(plan)?,
        data_dir: plan.data.path.clone(),
        data: None,
        prefetch: plan.feed.prefetch,
        keep: format!("{:?}", plan.keep).to_lowercase(),
        starts: Vec::new(),
    };
    Ok((None, config))
}

/// Reads the run's data, refuses it where it is not what the run (or the sweep) was trained
/// on, and records it and the split it made in `run`.
fn load_data(
    plan: &TrainPlan,
    run: &mut RunConfig,
    resumed: bool,
) -> Result<(data::Data, DataRequest), Error> {
    let (request, sizes) = data_for(plan, run, resumed);
    let data = data::load(&request, sizes)?;
    if let Some(recorded) = &run.data
        && let Some(why) = recorded.info.difference(&data.info, "the run's")
    {
        return Err(Error::DataDiffers(format!(
            "--data {}: {why} (a resumed run keeps its data)",
            request.path.display()
        )));
    }
    if let Some(expected) = &plan.expected_data
        && let Some(why) = expected.difference(&data.info, "the sweep's")
    {
        return Err(Error::DataDiffers(format!(
            "--data {}: {why}",
            request.path.display()
        )));
    }
    run.recipe.valid_size = data.valid_size;
    run.data_dir = request.path.clone();
    run.data = Some(DataRecord {
        format: request.format(),
        image_size: request.image_size,
        channels: request.channels,
        skip_bad: request.skip_bad,
        info: data.info.clone(),
    });
    Ok((data, request))
}

/// The data to read and how to split it: as the flags say; for a resumed run, what the run
/// recorded (its data, its split) wherever a flag does not say otherwise.
fn data_for(plan: &TrainPlan, run: &RunConfig, resumed: bool) -> (DataRequest, SplitSizes) {
    let recipe = &run.recipe;
    let mut request = plan.data.clone();
    let given_valid = plan.gave("--valid-size") || resumed;
    let sizes = SplitSizes {
        valid: given_valid.then_some(recipe.valid_size),
        test: recipe.test_size,
    };
    if !resumed {
        return (request, sizes);
    }
    let same_data = !plan.gave("--data");
    if same_data {
        request.path = run.data_dir.clone();
    }
    if let Some(recorded) = &run.data {
        // The recorded kind where the data is the recorded data; other data is told by what
        // is there.
        if same_data && !plan.gave("--data-format") {
            request.format = Some(recorded.format);
        }
        if !plan.gave("--image-size") {
            request.image_size = recorded.image_size;
        }
        if !plan.gave("--channels") {
            request.channels = recorded.channels;
        }
        if !plan.gave("--skip-bad") {
            request.skip_bad = recorded.skip_bad;
        }
    }
    (request, sizes)
}

/// The recipe of a new run. With `--init-from` the network is the file's: `--model` and
/// `--hidden` may repeat it, not contradict it, and the defaults are that network's.
fn new_recipe(plan: &TrainPlan) -> Result<TrainConfig, Error> {
    let Some(path) = &plan.init_from else {
        return Ok(plan.recipe.clone());
    };
    if !interop::is_safetensors(path) {
        return Err(Error::InitFromFormat(path.clone()));
    }
    let file = interop::safetensors::read(path)?;
    let config = plan
        .recipe
        .for_network(file.architecture, &file.hidden, &plan.given);
    match config.contradiction(&plan.recipe, &plan.given) {
        Some(c) => Err(Error::InitFrom(path.clone(), c)),
        None => Ok(config),
    }
}

/// A new session for `config` on `data`: the seed's weights, or those of `--init-from`.
fn new_session(config: &TrainConfig, data: &DataInfo, device: &Device) -> Result<Session, Error> {
    let Some(path) = &config.init_from else {
        return Ok(Session::new(config, data, device).map_err(TrainError::from)?);
    };
    let loaded = interop::load_model(path, &device.clone().autodiff())?;
    if let Some(why) = loaded.data.difference(data, "the file's") {
        return Err(Error::DataDiffers(format!(
            "--init-from {}: the data does not fit: {why}",
            path.display()
        )));
    }
    info!(init_from = %path.display(), "starting from these weights");
    Ok(Session::starting_from(loaded.model, config, data))
}

/// The session to train: the run's checkpoint when it has one (the files written after the
/// checkpoint brought up to it: a kill may have come between them), else a new one. A run
/// whose last start finished and that has nothing left to train is refused; one killed
/// after its last files, before it could say it finished, is finished again (the test and
/// plots made again, to the same bits).
fn open_session(
    run: &RunDir,
    is_resumed: bool,
    run_config: &RunConfig,
    data: &DataInfo,
    device: &Device,
    observer: &mut RunObserver,
) -> Result<Session, Error> {
    let config = &run_config.recipe;
    let checkpoint = run.checkpoint();
    if !(is_resumed && checkpoint.is_file()) {
        if is_resumed {
            info!(run = %run.path().display(), "no checkpoint was saved yet: the run starts over");
        }
        return new_session(config, data, device);
    }
    let session = checkpoint::load_checkpoint(&checkpoint, config, device)?;
    let done = session.record.epochs_done();
    let over = done >= config.epochs || session.record.stopped_early.is_some();
    if over && run_config.last_start_finished() && run.is_complete() {
        return Err(Error::NothingToDo(run.path().to_path_buf(), done));
    }
    // A kill between the checkpoint and the files written after it (history, best
    // models) left them behind the checkpoint: write them again.
    if done > 0 && session.record.partial.is_none() {
        let improved = session.record.best_val_acc.is_some_and(|(_, e)| e == done);
        observer.files.epoch(
            &session.model,
            &session.optimizer,
            &session.record,
            improved,
        )?;
    }
    info!(run = %run.path().display(), epochs_done = done, "resuming");
    Ok(session)
}

/// The log line that opens a run: where, on what data, with which recipe.
fn log_recipe(run: &RunDir, data: &std::path::Path, config: &TrainConfig, sets: &Sets) {
    info!(
        run = %run.path().display(),
        data_dir = %data.display(),
        epochs = config.epochs,
        batch_size = config.batch_size,
        lr = config.lr,
        lr_schedule = ?config.schedule,
        augment = config.augment,
        weight_decay = config.weight_decay,
        dropout = config.dropout,
        label_smoothing = config.label_smoothing,
        seed = config.seed,
        model = %config.model,
        hidden = ?config.hidden,
        train = sets.train.len(),
        valid = sets.valid.len(),
        test = sets.test.len(),
        "recipe"
    );
}

/// What a run leaves after training: the final model, the test result, the plots; returns
/// the result line.
fn finish(
    run: &RunDir,
    events: &mut EventLog,
    model: Model,
    data: &DataInfo,
    sets: &Sets,
    device: &Device,
    feed: &Feed,
) -> Result<String, Error> {
    checkpoint::save_model(&model, data, &run.final_model())?;
    let test_data = feed.assembler(&sets.test, device);
    let (metrics, predicted) = training::evaluate(&model, &test_data, feed)?;
    let test = TestReport::new(
        &run.final_model(),
        metrics,
        sets.test.labels(),
        &predicted,
        &data.classes,
    );
    run.write_test(&test)?;
    events.test(&metrics)?;
    info!(
        test_loss = round(metrics.loss, 4),
        test_acc = round(metrics.accuracy, 4),
        images = metrics.count,
        "test"
    );
    let plots = plots::draw(run)?;
    info!(run = %run.path().display(), plots = plots.len(), "run saved");
    Ok(run::result_line(&metrics))
}

/// What training asks of the `train` command between steps and after epochs: the epoch's
/// files, the progress bar, and the stop Ctrl-C asks for.
struct RunObserver<'a> {
    files: EpochWriter<'a>,
    bar: StepBar,
    interrupts: Interrupts,
}

impl Observer for RunObserver<'_> {
    fn on_step(&mut self, epoch: usize, step: usize, steps: usize, sums: &dyn RunningSums) -> bool {
        self.bar.step(epoch, step, steps, sums);
        !self.interrupts.requested()
    }

    fn on_epoch(
        &mut self,
        model: &Model,
        optimizer: &ModuleOptimizer,
        record: &TrainingRecord,
        improved: bool,
    ) -> Result<(), ObserverError> {
        self.bar.finish();
        Ok(self.files.epoch(model, optimizer, record, improved)?)
    }

    fn best_weights(&mut self, _epoch: usize) -> Result<Option<Model>, ObserverError> {
        Ok(Some(self.files.best_loss_weights()?))
    }

    fn on_interrupt(
        &mut self,
        model: &Model,
        optimizer: &ModuleOptimizer,
        record: &TrainingRecord,
    ) -> Result<(), ObserverError> {
        self.bar.abandon();
        Ok(self.files.checkpoint(model, optimizer, record)?)
    }
}
