//! The training loop: the article's recipe (Adam, sparse categorical cross-entropy, shuffled
//! mini-batches, validation after every epoch), with early stopping, on a state that can be
//! saved at any batch boundary and resumed bit for bit.

mod epoch;
mod evaluate;

pub use evaluate::{class_probabilities, evaluate, probabilities};

use std::time::Instant;

use burn::module::Module;
use burn::optim::ModuleOptimizer;
use burn::tensor::Device;
use tracing::{debug, info};

use crate::backend::read::ReadError;
use crate::backend::with_subnormals_flushed;
use crate::cpu::fused::{CpuStep, CpuStepError};
use crate::data::{Data, DataError, Split};
use crate::gpu::fused::{FusedError, FusedStep};
use crate::gpu::gather::GatherMethod;
use crate::gpu::kernels::Gpu;
use crate::loader::{Assembler, LoaderError};
use crate::metrics::round;
use crate::metrics::{Accumulator, RunningSums};
use crate::model::{Model, ModelError};
use crate::recipe::TrainConfig;
use crate::rng;
use crate::session::{EpochRecord, PartialEpoch, Session, TrainingRecord};
use epoch::EpochPlan;

/// What can stop a training run.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    /// The data does not fit the recipe.
    #[error(transparent)]
    Data(#[from] DataError),
    /// The model cannot be built.
    #[error(transparent)]
    Model(#[from] ModelError),
    /// The batch loader failed.
    #[error(transparent)]
    Loader(#[from] LoaderError),
    /// Metrics could not be read from the device.
    #[error(transparent)]
    Read(#[from] ReadError),
    /// The fused training step failed.
    #[error(transparent)]
    Fused(#[from] FusedError),
    /// The fused CPU step could not start or report.
    #[error(transparent)]
    CpuStep(#[from] CpuStepError),
    /// The observer (checkpoints, history files) failed.
    #[error(transparent)]
    Observer(ObserverError),
}

/// How batches reach the device, and what takes the training steps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Feed {
    /// Batches the loader thread prepares ahead of the step (host gathering only).
    pub prefetch: usize,
    /// How a wgpu device gets its batches; CPU backends always gather on the host.
    pub gather: GatherMethod,
    /// The training step: as asked for, until [`decide_step`] settles it for the run.
    pub step: StepMethod,
}

/// What takes a training step.
#[derive(
    Debug,
    Clone,
    Copy,
    Default,
    PartialEq,
    Eq,
    clap::ValueEnum,
    serde::Serialize,
    serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum StepMethod {
    /// The whole step, and evaluation, fused: on wgpu in a few hand-written WGSL kernels (the MLP's step in 4, the CNN's in 15; --gather kernel, hidden layers up to 256 units), on flex the MLP's in one pass of the CPU's own (ndarray keeps burn's); burn's generic step otherwise, with a log line saying why
    #[default]
    Fused,
    /// burn's autodiff and Adam: the reference the fused steps are tested against
    Generic,
}

impl Feed {
    /// Where `split`'s batches for `device` are put together: resident on a wgpu device
    /// (uploaded here, once) unless the feed says host; on the host otherwise.
    pub fn assembler(&self, split: &Split, device: &Device) -> Assembler {
        Assembler::of(split, device, self.gather)
    }
}

/// The training step a run takes, decided once, before training: the fused step when it was
/// asked for (the default), the device is a wgpu GPU, the images are gathered there by the
/// WGSL kernel, and the recipe and `model` fit the fused kernels; burn's generic step
/// otherwise, with one log line saying why when the fused step was asked for on wgpu. The
/// returned feed's `step` is what training and evaluation then take, without deciding again.
pub fn decide_step(
    feed: &Feed,
    config: &TrainConfig,
    device: &Device,
    model: &Model,
    train: &Split,
) -> Feed {
    let generic = Feed {
        step: StepMethod::Generic,
        ..*feed
    };
    if feed.step != StepMethod::Fused {
        return generic;
    }
    if crate::cpu::fused::on_flex(device) {
        return match crate::cpu::fused::fits(model, train.shape.pixels()) {
            Ok(()) => {
                debug!(model = %config.model, "fused CPU training step");
                *feed
            }
            Err(why) => {
                info!(reason = %why, "burn's generic training step");
                generic
            }
        };
    }
    if Gpu::of(device).is_none() {
        return generic;
    }
    let gather_kernel = feed.gather == GatherMethod::Kernel;
    match crate::gpu::fused::fits(
        config,
        gather_kernel,
        model,
        train.shape,
        train.len(),
        device,
    ) {
        Ok(()) => {
            debug!(model = %config.model, "fused training step");
            *feed
        }
        Err(why) => {
            info!(reason = %why, "burn's generic training step");
            generic
        }
    }
}

/// The three sets a run uses.
#[derive(Debug, Clone)]
pub struct Sets {
    /// Trained on.
    pub train: Split,
    /// Evaluated after every epoch (may be empty).
    pub valid: Split,
    /// Evaluated once, at the end.
    pub test: Split,
}

impl Sets {
    /// Training steps in an epoch of batches of `batch_size` (the last one may be short).
    pub fn steps(&self, batch_size: usize) -> usize {
        self.train.len().div_ceil(batch_size)
    }

    /// The data's splits (already split as the recipe says), with the recipe's limits.
    pub fn new(data: &Data, config: &TrainConfig) -> Result<Self, DataError> {
        let (mut train, valid) = (data.train.clone(), data.valid.clone());
        let mut test = data.test.clone();
        if let Some(n) = config.train_limit {
            train = train.slice(0..n.min(train.len()));
        }
        if let Some(n) = config.test_limit {
            test = test.slice(0..n.min(test.len()));
        }
        if train.is_empty() || test.is_empty() {
            return Err(DataError::Split(
                "--train-limit and --test-limit must leave at least one image".into(),
            ));
        }
        if config.patience.is_some() && valid.is_empty() {
            return Err(DataError::Split(
                "--patience needs a validation set (--valid-size > 0)".into(),
            ));
        }
        Ok(Self { train, valid, test })
    }
}

/// Why an observer could not do its work (a checkpoint or history file not written): its own
/// error, whatever the observer is, with its causes.
pub type ObserverError = Box<dyn std::error::Error + Send + Sync>;

/// What the loop asks of its caller, between steps and after epochs.
pub trait Observer {
    /// Called after every training step; return `false` to stop at this batch boundary.
    /// `sums` holds the epoch's running sums (reading them syncs the device: do it rarely).
    /// By default: go on.
    fn on_step(
        &mut self,
        _epoch: usize,
        _step: usize,
        _steps: usize,
        _sums: &dyn RunningSums,
    ) -> bool {
        true
    }

    /// Called after every epoch, with the state a checkpoint needs.
    /// `improved` is true when the epoch set a new best validation accuracy. By default: nothing.
    fn on_epoch(
        &mut self,
        _model: &Model,
        _optimizer: &ModuleOptimizer,
        _record: &TrainingRecord,
        _improved: bool,
    ) -> Result<(), ObserverError> {
        Ok(())
    }

    /// The weights of epoch `epoch`, the best by validation loss, when they were saved by an
    /// earlier process (a resumed run): early stopping returns to them. By default: none, and
    /// the weights stay those of the last epoch.
    fn best_weights(&mut self, _epoch: usize) -> Result<Option<Model>, ObserverError> {
        Ok(None)
    }

    /// Called when a step-level stop leaves an epoch unfinished, with the state to save.
    /// By default: nothing.
    fn on_interrupt(
        &mut self,
        _model: &Model,
        _optimizer: &ModuleOptimizer,
        _record: &TrainingRecord,
    ) -> Result<(), ObserverError> {
        Ok(())
    }
}

/// An observer that does nothing (tests).
#[cfg(test)]
pub struct Quiet;

#[cfg(test)]
impl Observer for Quiet {}

/// How a call to [`train`] ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// All epochs ran.
    Completed,
    /// Early stopping ended the run after this epoch; the model is the best epoch's.
    EarlyStopped {
        /// The last epoch run.
        epoch: usize,
        /// The epoch whose weights were restored.
        best: usize,
    },
    /// The observer stopped the run inside this epoch; its state was handed to `on_interrupt`.
    Interrupted {
        /// The unfinished epoch.
        epoch: usize,
    },
}

/// Trains `session` on `sets` with `config` on `device` until `config.epochs` epochs are done,
/// early stopping ends it, or `observer` stops it. Logs one event per epoch.
pub fn train(
    config: &TrainConfig,
    sets: &Sets,
    device: &Device,
    feed: &Feed,
    session: &mut Session,
    observer: &mut (dyn Observer + Send),
) -> Result<Outcome, TrainError> {
    with_subnormals_flushed(|| train_flushed(config, sets, device, feed, session, observer))
}

fn train_flushed(
    config: &TrainConfig,
    sets: &Sets,
    device: &Device,
    feed: &Feed,
    session: &mut Session,
    observer: &mut (dyn Observer + Send),
) -> Result<Outcome, TrainError> {
    if let Some(best) = session.record.stopped_early {
        // Stopped by an earlier process: its best weights are the observer's to give.
        return_to_best(session, None, best, observer)?;
        let epoch = session.record.epochs_done();
        return Ok(Outcome::EarlyStopped { epoch, best });
    }
    let plain = device.clone();
    let steps = sets.steps(config.batch_size);
    let (train_data, valid_data, mut fused) = feeds(config, sets, device, feed, session)?;
    let dropout_widths = session.model.dropout_widths();
    // Early stopping keeps the weights of the best epoch by validation loss.
    let mut best_weights: Option<Model> = None;
    while session.record.epochs_done() < config.epochs {
        let epoch = session.record.epochs_done() + 1;
        let start = Instant::now();
        let order = rng::epoch_order(sets.train.len(), config.seed, epoch);
        let (step, sums, count, earlier_seconds) = match session.record.partial.take() {
            Some(p) if p.epoch == epoch => (p.steps, p.sums, p.count, p.seconds),
            _ => (0, [0.0; 2], 0, 0.0),
        };
        let rest = order[(step * config.batch_size).min(order.len())..].to_vec();
        let mut generic_sums = Accumulator::from_sums(sums, count, &plain);
        if let Some(fused) = &mut fused {
            fused.start_epoch(sums, count);
        }
        let plan = EpochPlan {
            config,
            feed,
            train_data: &train_data,
            dropout_widths: &dropout_widths,
            device: &plain,
            epoch,
            steps,
        };
        let (step, stopped) = plan.run(
            rest,
            step,
            session,
            fused.as_mut(),
            &mut generic_sums,
            observer,
        )?;
        let running: &dyn RunningSums = match &fused {
            Some(f) => f,
            None => &generic_sums,
        };
        // Reading the sums back waits for the device: the epoch's steps are done after it.
        let (sums, count) = running.sums()?;
        let train = running.metrics()?;
        if let Some(f) = &fused {
            session.optimizer = f.store(&mut session.model, config)?;
        }
        if stopped {
            session.record.partial = Some(PartialEpoch {
                epoch,
                steps: step,
                sums,
                count,
                seconds: earlier_seconds + start.elapsed().as_secs_f64(),
            });
            observer
                .on_interrupt(&session.model, &session.optimizer, &session.record)
                .map_err(TrainError::Observer)?;
            return Ok(Outcome::Interrupted { epoch });
        }
        let train_seconds = earlier_seconds + start.elapsed().as_secs_f64();
        let valid = (!valid_data.is_empty())
            .then(|| evaluate(&session.model.valid(), &valid_data, feed))
            .transpose()?
            .map(|(metrics, _)| metrics);
        let record = EpochRecord {
            epoch,
            train,
            valid,
            train_seconds,
            seconds: earlier_seconds + start.elapsed().as_secs_f64(),
        };
        log_epoch(&record, config.epochs);
        let verdict = session.record.record_epoch(record, config.patience);
        if verdict.best_loss {
            best_weights = Some(session.model.clone());
        }
        log_memory(epoch);
        observer
            .on_epoch(
                &session.model,
                &session.optimizer,
                &session.record,
                verdict.improved,
            )
            .map_err(TrainError::Observer)?;
        if let Some(best) = verdict.stop_early {
            return_to_best(session, best_weights.take(), best, observer)?;
            info!(
                epoch,
                best_epoch = best,
                "early stopping: validation loss has not improved"
            );
            return Ok(Outcome::EarlyStopped { epoch, best });
        }
    }
    Ok(Outcome::Completed)
}

/// Early stopping's last act: the weights of epoch `best`, the best by validation loss, from
/// this process (`kept`) or, when they predate it (a resumed run), from the observer.
fn return_to_best(
    session: &mut Session,
    kept: Option<Model>,
    best: usize,
    observer: &mut (dyn Observer + Send),
) -> Result<(), TrainError> {
    let weights = match kept {
        Some(weights) => Some(weights),
        None => observer.best_weights(best).map_err(TrainError::Observer)?,
    };
    if let Some(weights) = weights {
        session.model = weights;
    }
    Ok(())
}

/// Where the epoch's batches come from (training and validation), and the fused step when
/// the run takes it.
fn feeds(
    config: &TrainConfig,
    sets: &Sets,
    device: &Device,
    feed: &Feed,
    session: &mut Session,
) -> Result<(Assembler, Assembler, Option<Fused>), TrainError> {
    // burn's select cannot shift images: with --gather ops, augmented batches come from the host.
    let train_data = if config.augment > 0 && feed.gather == GatherMethod::Ops {
        Assembler::Host {
            split: sets.train.clone(),
            device: device.clone(),
        }
    } else {
        feed.assembler(&sets.train, device)
    };
    let valid_data = feed.assembler(&sets.valid, device);
    let fused = fused_step(config, feed, &train_data, session)?;
    debug!(
        bytes_per_step = match &fused {
            Some(f) => f.upload_bytes(),
            None => train_data.upload_bytes(config.batch_size),
        },
        resident = matches!(train_data, Assembler::Resident(..)),
        "loader"
    );
    Ok((train_data, valid_data, fused))
}

/// Logs the process's resident memory after `epoch`, reading /proc only when the event will
/// be seen.
fn log_memory(epoch: usize) {
    if tracing::enabled!(tracing::Level::DEBUG)
        && let Some(rss_mb) = resident_mb()
    {
        debug!(epoch, rss_mb = round(rss_mb, 1), "memory");
    }
}

/// The fused training step, when the run takes it ([`decide_step`] chose it): on the GPU
/// over the resident split, on flex over the host's.
fn fused_step(
    config: &TrainConfig,
    feed: &Feed,
    train_data: &Assembler,
    session: &Session,
) -> Result<Option<Fused>, TrainError> {
    if feed.step != StepMethod::Fused {
        return Ok(None);
    }
    let (model, optimizer) = (&session.model, &session.optimizer);
    Ok(Some(match train_data {
        Assembler::Resident(resident, _) => Fused::Gpu(Box::new(FusedStep::new(
            model, optimizer, config, resident,
        )?)),
        Assembler::Host { split, .. } | Assembler::Shifted { split, .. } => {
            Fused::Cpu(Box::new(CpuStep::new(model, optimizer, config, split)?))
        }
    }))
}

/// A run's fused training step: the GPU's (WGSL kernels) or the CPU's.
pub(crate) enum Fused {
    /// On a wgpu device, over the split resident there.
    Gpu(Box<FusedStep>),
    /// On flex, over the host's split.
    Cpu(Box<CpuStep>),
}

impl Fused {
    /// Starts an epoch's running sums from `sums` over `count` images.
    fn start_epoch(&mut self, sums: [f32; 2], count: usize) {
        match self {
            Self::Gpu(f) => f.start_epoch(sums, count),
            Self::Cpu(f) => f.start_epoch(sums, count),
        }
    }

    /// One training step (see [`FusedStep::step`]).
    pub(crate) fn step(
        &mut self,
        indices: &[u32],
        shift: Option<crate::batch::Shift>,
        lr: f64,
        masks: &[Vec<f32>],
    ) -> Result<(), TrainError> {
        match self {
            Self::Gpu(f) => Ok(f.step(indices, shift, lr, masks)?),
            Self::Cpu(f) => {
                f.step(indices, shift, lr, masks);
                Ok(())
            }
        }
    }

    /// The weights into `model`, and burn's optimizer state.
    fn store(
        &self,
        model: &mut Model,
        config: &TrainConfig,
    ) -> Result<burn::optim::ModuleOptimizer, TrainError> {
        match self {
            Self::Gpu(f) => Ok(f.store(model, config)?),
            Self::Cpu(f) => Ok(f.store(model, config)?),
        }
    }

    /// Bytes sent to the device with each step (none for the CPU's).
    fn upload_bytes(&self) -> usize {
        match self {
            Self::Gpu(f) => f.upload_bytes(),
            Self::Cpu(_) => 0,
        }
    }
}

impl RunningSums for Fused {
    fn sums(&self) -> Result<([f32; 2], usize), crate::backend::read::ReadError> {
        match self {
            Self::Gpu(f) => f.sums(),
            Self::Cpu(f) => f.sums(),
        }
    }
}

fn log_epoch(r: &EpochRecord, epochs: usize) {
    let ips = round(r.images_per_s(), 0);
    match r.valid {
        Some(v) => info!(
            epoch = r.epoch,
            epochs,
            train_loss = round(r.train.loss, 4),
            train_acc = round(r.train.accuracy, 4),
            val_loss = round(v.loss, 4),
            val_acc = round(v.accuracy, 4),
            seconds = round(r.seconds, 3),
            images_per_s = ips,
            "epoch"
        ),
        None => info!(
            epoch = r.epoch,
            epochs,
            train_loss = round(r.train.loss, 4),
            train_acc = round(r.train.accuracy, 4),
            seconds = round(r.seconds, 3),
            images_per_s = ips,
            "epoch"
        ),
    }
}

/// This process's resident memory in MiB, where the system tells it (Linux: /proc).
fn resident_mb() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn feed(prefetch: usize) -> Feed {
        Feed {
            prefetch,
            gather: GatherMethod::Host,
            step: StepMethod::Generic,
        }
    }

    /// Learnable toy data of `n` training images (the last `valid` for validation) and `m`
    /// test images: the label is written into the image's brightness.
    fn toy(n: usize, m: usize, valid: usize) -> Data {
        let split = |n: usize| {
            let labels: Vec<u8> = (0..n).map(|i| (i * 7 % 10) as u8).collect();
            let images = labels
                .iter()
                .flat_map(|&l| (0..784).map(move |p| if p % 10 == l as usize { 250 } else { 3 }))
                .collect();
            Split::new(images, labels, crate::data::ImageShape::MNIST).unwrap()
        };
        let (train, valid_split) = split(n).split_last(valid).unwrap();
        Data {
            train,
            valid: valid_split,
            test: split(m),
            info: crate::data::DataInfo::mnist(),
            skipped: 0,
            valid_size: valid,
        }
    }

    #[test]
    fn sets_follow_the_split_and_limits() {
        let config = TrainConfig {
            valid_size: 30,
            train_limit: Some(50),
            test_limit: Some(5),
            ..TrainConfig::default()
        };
        let sets = Sets::new(&toy(100, 20, 30), &config).unwrap();
        assert_eq!(
            (sets.train.len(), sets.valid.len(), sets.test.len()),
            (50, 30, 5)
        );
        assert_eq!(sets.valid.labels()[0], 0, "validation starts at image 70");
        let config = TrainConfig {
            train_limit: Some(0),
            valid_size: 10,
            ..TrainConfig::default()
        };
        assert!(Sets::new(&toy(100, 20, 10), &config).is_err());
    }

    /// Stops after `at` steps in total.
    struct StopAfter {
        at: usize,
        seen: usize,
        saved: Option<(Model, ModuleOptimizer, TrainingRecord)>,
    }

    impl Observer for StopAfter {
        fn on_step(&mut self, _: usize, _: usize, _: usize, _: &dyn RunningSums) -> bool {
            self.seen += 1;
            self.seen < self.at
        }
        fn on_interrupt(
            &mut self,
            m: &Model,
            o: &ModuleOptimizer,
            p: &TrainingRecord,
        ) -> Result<(), ObserverError> {
            self.saved = Some((m.clone(), o.clone(), p.clone()));
            Ok(())
        }
    }

    #[test]
    fn interrupted_and_resumed_equals_straight_through() {
        let device = Device::flex();
        let config = TrainConfig {
            hidden: vec![16],
            epochs: 3,
            batch_size: 8,
            valid_size: 20,
            ..TrainConfig::default()
        };
        let sets = Sets::new(&toy(100, 10, config.valid_size), &config).unwrap();
        let mut straight = Session::new(&config, &crate::data::DataInfo::mnist(), &device).unwrap();
        let outcome = train(&config, &sets, &device, &feed(0), &mut straight, &mut Quiet).unwrap();
        assert_eq!(outcome, Outcome::Completed);

        // 10 steps an epoch: stop in the middle of epoch 2, then resume from the saved state.
        let mut first = Session::new(&config, &crate::data::DataInfo::mnist(), &device).unwrap();
        let mut stop = StopAfter {
            at: 14,
            seen: 0,
            saved: None,
        };
        let outcome = train(&config, &sets, &device, &feed(2), &mut first, &mut stop).unwrap();
        assert_eq!(outcome, Outcome::Interrupted { epoch: 2 });
        let (model, optimizer, record) = stop.saved.unwrap();
        assert_eq!(record.partial.as_ref().unwrap().steps, 4);
        let mut resumed = Session {
            model,
            optimizer,
            record,
            data: crate::data::DataInfo::mnist(),
        };
        train(&config, &sets, &device, &feed(1), &mut resumed, &mut Quiet).unwrap();

        assert_eq!(
            straight.model.parameters().unwrap(),
            resumed.model.parameters().unwrap()
        );
        let strip = |h: &[EpochRecord]| {
            h.iter()
                .map(|r| (r.epoch, r.train, r.valid))
                .collect::<Vec<_>>()
        };
        assert_eq!(
            strip(&straight.record.history),
            strip(&resumed.record.history)
        );
    }

    #[test]
    fn weight_decay_shrinks_the_weights_and_smoothing_and_dropout_change_the_training() {
        let device = Device::flex();
        let base = TrainConfig {
            hidden: vec![16],
            epochs: 2,
            batch_size: 8,
            lr: 1e-2,
            valid_size: 20,
            ..TrainConfig::default()
        };
        let sets = Sets::new(&toy(100, 10, base.valid_size), &base).unwrap();
        let run = |config: &TrainConfig| {
            let mut session =
                Session::new(config, &crate::data::DataInfo::mnist(), &device).unwrap();
            train(config, &sets, &device, &feed(0), &mut session, &mut Quiet).unwrap();
            session
        };
        let norm = |s: &Session| {
            s.model.parameters().unwrap()[0]
                .iter()
                .map(|w| w * w)
                .sum::<f32>()
        };
        let plain = run(&base);
        let decayed = run(&TrainConfig {
            weight_decay: 2.0,
            ..base.clone()
        });
        // 20 steps of decay by lr × 2 = 2 % each shrink the first layer by a third.
        assert!(
            norm(&decayed) < 0.8 * norm(&plain),
            "{} vs {}",
            norm(&decayed),
            norm(&plain)
        );

        let smoothed = run(&TrainConfig {
            label_smoothing: 0.1,
            ..base.clone()
        });
        assert_ne!(
            smoothed.model.parameters().unwrap(),
            plain.model.parameters().unwrap()
        );
        let dropped = run(&TrainConfig {
            dropout: 0.5,
            ..base.clone()
        });
        assert_ne!(
            dropped.model.parameters().unwrap(),
            plain.model.parameters().unwrap()
        );
        assert_eq!(
            dropped.model.parameters().unwrap(),
            run(&TrainConfig {
                dropout: 0.5,
                ..base.clone()
            })
            .model
            .parameters()
            .unwrap(),
            "dropout is reproducible"
        );
    }

    #[test]
    fn early_stopping_restores_the_best_epoch() {
        let device = Device::flex();
        // A learning rate so high that validation loss soon stops improving.
        let config = TrainConfig {
            hidden: vec![8],
            epochs: 40,
            batch_size: 10,
            lr: 0.5,
            valid_size: 20,
            patience: Some(2),
            ..TrainConfig::default()
        };
        let sets = Sets::new(&toy(100, 10, config.valid_size), &config).unwrap();
        let mut session = Session::new(&config, &crate::data::DataInfo::mnist(), &device).unwrap();
        let outcome = train(&config, &sets, &device, &feed(0), &mut session, &mut Quiet).unwrap();
        let Outcome::EarlyStopped { epoch, best } = outcome else {
            panic!("expected early stopping, got {outcome:?}");
        };
        assert_eq!(epoch - best, 2);
        assert_eq!(session.record.history.len(), epoch);
        let (v, _) = evaluate(
            &session.model.valid(),
            &feed(0).assembler(&sets.valid, &device),
            &feed(0),
        )
        .unwrap();
        let best_loss = session.record.history[best - 1].valid.unwrap().loss;
        assert!(
            (v.loss - best_loss).abs() < 1e-6,
            "{} vs {best_loss}",
            v.loss
        );
    }
}
