//! `trainer train`: a new run, or the one `--resume` names continued, from the recipe to the
//! test result and the plots.

use std::time::Instant;

use burn::module::Module;
use burn::tensor::Device;
use tracing::{info, warn};

use super::keeper::Keeper;
use super::plot::draw_plots;
use super::{Error, Interrupts, init_device, list_devices};
use crate::checkpoint;
use crate::claims::Claim;
use crate::cli::{DEFAULT_BACKEND, LogArgs, TrainArgs};
use crate::data::Mnist;
use crate::gpu::gather::GatherMethod;
use crate::interop;
use crate::interop::tensorboard::EventLog;
use crate::loader::{Feed, StepMethod};
use crate::logging;
use crate::metrics::round;
use crate::model::Model;
use crate::recipe::TrainConfig;
use crate::report::{self, RunConfig, RunDir, Start, TestReport};
use crate::session::Session;
use crate::train::{self, Observer, Outcome, Sets, TrainError};

/// Trains the run `args` describe; returns the result line. Under a sweep's `claim`, the
/// claim is checked before every write to the run directory.
pub(super) fn train(
    args: &TrainArgs,
    log: &LogArgs,
    interrupts: &Interrupts,
    claim: Option<&Claim>,
) -> Result<String, Error> {
    if args.list_devices {
        return Ok(list_devices(args.device.wgpu_api));
    }
    let (resumed, mut run_config) = recipe(args)?;
    let config = run_config.recipe.clone();
    // Data first: a bad file is reported before a slow GPU initialisation, and neither
    // failure leaves an empty run directory behind.
    let mnist = Mnist::load(&args.data.data_dir)?;
    let sets = Sets::new(&mnist, &config)?;
    drop(mnist);
    // A resumed run continues on the backend it last ran on, unless --backend says otherwise.
    let usual = run_config
        .starts
        .last()
        .map_or(DEFAULT_BACKEND, |start| start.device.backend);
    let fused = args.step == StepMethod::Fused && args.gather == GatherMethod::Kernel;
    let device = init_device(&args.device, usual, fused)?;
    let is_resumed = resumed.is_some();
    let run = match resumed {
        Some(run) => run,
        None => RunDir::create(args.resume.as_deref().or(args.out.as_deref()))?,
    };
    // One process at a time in a run directory; the lock goes when the process does.
    let _lock = run.lock()?;
    if let Some(claim) = claim {
        claim.check()?;
    }
    let mut keeper = Keeper {
        events: EventLog::open(run.path())?,
        recipe: config.clone(),
        steps: sets.steps(config.batch_size),
        claim,
        run: &run,
        device: device.device.clone(),
        interrupts: interrupts.clone(),
        keep: args.keep,
        patience: config.patience.is_some(),
        bar: None,
        show_bar: logging::bar_allowed(&log.options()),
        batch_size: config.batch_size,
        last_update: Instant::now(),
    };
    let mut session = open_session(&run, is_resumed, &config, &device.device, &mut keeper)?;
    run_config.starts.push(Start {
        at: report::now(),
        args: std::env::args().collect(),
        device: device.info.clone(),
        from_epoch: session.progress.epochs_done(),
    });
    run_config.prefetch = args.prefetch;
    run.write_config(&run_config)?;
    log_recipe(&run, args, &config, &sets);

    let outcome = train::train(
        &config,
        &sets,
        &device.device,
        &args.feed(),
        &mut session,
        &mut keeper,
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

    if let Some(claim) = claim {
        claim.check()?;
    }
    finish(
        &run,
        &mut keeper.events,
        session.model.valid(),
        &sets,
        &device.device,
        &args.feed(),
    )
}

/// The recipe: new, or the one of the run being resumed (its directory open). A directory
/// that holds no run yet (a run killed before it wrote anything) starts over there with the
/// flags given.
fn recipe(args: &TrainArgs) -> Result<(Option<RunDir>, RunConfig), Error> {
    let resume = args
        .resume
        .as_deref()
        .filter(|dir| !dir.is_dir() || RunDir::is_started(dir));
    match resume {
        Some(dir) => {
            let run = RunDir::open(dir)?;
            let mut saved = run.read_config()?;
            if let Some(c) = args.contradiction(&saved.recipe) {
                return Err(Error::ResumeRecipe(dir.to_path_buf(), c));
            }
            if let Some(epochs) = args.epochs {
                saved.recipe.epochs = epochs as usize;
            }
            Ok((Some(run), saved))
        }
        None => {
            let out = args.resume.as_ref().or(args.out.as_ref());
            if let Some(out) = out {
                RunDir::ensure_free(out)?;
            }
            if let Some(dir) = &args.resume {
                info!(run = %dir.display(), "nothing was saved there yet: the run starts over");
            }
            let config = RunConfig {
                trainer_version: env!("CARGO_PKG_VERSION").into(),
                recipe: new_recipe(args)?,
                data_dir: args.data.data_dir.clone(),
                prefetch: args.prefetch,
                keep: format!("{:?}", args.keep).to_lowercase(),
                starts: Vec::new(),
            };
            Ok((None, config))
        }
    }
}

/// The recipe of a new run. With `--init-from` the network is the file's: `--model` and
/// `--hidden` may repeat it, not contradict it, and the defaults are that network's.
fn new_recipe(args: &TrainArgs) -> Result<TrainConfig, Error> {
    let Some(path) = &args.init_from else {
        return Ok(args.train_config());
    };
    if !interop::is_safetensors(path) {
        return Err(Error::InitFromFormat(path.clone()));
    }
    let file = interop::safetensors::read(path)?;
    let mut from_file = args.clone();
    from_file.model = file.architecture;
    from_file.hidden = file.hidden;
    let config = from_file.train_config();
    match args.contradiction(&config) {
        Some(c) => Err(Error::InitFrom(path.clone(), c)),
        None => Ok(config),
    }
}

/// A new session for `config`: the seed's weights, or those of `--init-from`.
fn new_session(config: &TrainConfig, device: &Device) -> Result<Session, Error> {
    let Some(path) = &config.init_from else {
        return Ok(Session::new(config, device).map_err(TrainError::from)?);
    };
    let (model, ..) = interop::load_model(path, &device.clone().autodiff())?;
    info!(init_from = %path.display(), "starting from these weights");
    Ok(Session::starting_from(model, config))
}

/// The session to train: the run's checkpoint when it has one (the files written after the
/// checkpoint brought up to it: a kill may have come between them), else a new one.
fn open_session(
    run: &RunDir,
    is_resumed: bool,
    config: &TrainConfig,
    device: &Device,
    keeper: &mut Keeper,
) -> Result<Session, Error> {
    let checkpoint = run.checkpoint();
    if !(is_resumed && checkpoint.is_file()) {
        if is_resumed {
            info!(run = %run.path().display(), "no checkpoint was saved yet: the run starts over");
        }
        return new_session(config, device);
    }
    let session = checkpoint::load_checkpoint(&checkpoint, config, device)?;
    let done = session.progress.epochs_done();
    let over = done >= config.epochs || session.progress.stopped_early.is_some();
    if over && run.is_complete() {
        return Err(Error::NothingToDo(run.path().to_path_buf(), done));
    }
    // A kill between the checkpoint and the files written after it (history, best
    // models) left them behind the checkpoint: write them again.
    if done > 0 && session.progress.partial.is_none() {
        let improved = session
            .progress
            .best_val_acc
            .is_some_and(|(_, e)| e == done);
        keeper
            .on_epoch(
                &session.model,
                &session.optimizer,
                &session.progress,
                improved,
            )
            .map_err(TrainError::Observer)?;
    }
    info!(run = %run.path().display(), epochs_done = done, "resuming");
    Ok(session)
}

/// The log line that opens a run: where, on what data, with which recipe.
fn log_recipe(run: &RunDir, args: &TrainArgs, config: &TrainConfig, sets: &Sets) {
    info!(
        run = %run.path().display(),
        data_dir = %args.data.data_dir.display(),
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
    sets: &Sets,
    device: &Device,
    feed: &Feed,
) -> Result<String, Error> {
    checkpoint::save_model(&model, &run.final_model())?;
    let test_data = feed.assembler(&sets.test, device);
    let (metrics, predicted) = train::evaluate(&model, &test_data, feed)?;
    let test = TestReport::new(&run.final_model(), metrics, &sets.test.labels, &predicted);
    run.write_test(&test)?;
    events.test(&metrics)?;
    info!(
        test_loss = round(metrics.loss, 4),
        test_acc = round(metrics.accuracy, 4),
        images = metrics.count,
        "test"
    );
    let plots = draw_plots(run)?;
    info!(run = %run.path().display(), plots = plots.len(), "run saved");
    Ok(report::result_line(&metrics))
}
