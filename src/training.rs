//! The training loop: the article's recipe (Adam, sparse categorical cross-entropy, shuffled
//! mini-batches, validation after every epoch), with early stopping, and a state that can be
//! saved at any batch boundary and resumed bit for bit.

use std::sync::Arc;
use std::time::Instant;

use burn::module::Module;
use burn::optim::{AdamConfig, AdamWConfig, GradientsParams, ModuleOptimizer};
use burn::tensor::{Device, Tensor, TensorData};
use rand::SeedableRng;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use serde::{Deserialize, Serialize};
use tracing::{debug, info};

use crate::backend::with_subnormals_flushed;
use crate::data::{DataError, Mnist, Split};
use crate::fused::{FusedError, FusedStep};
use crate::gather::{GatherError, GatherMethod, Resident};
use crate::kernels::Gpu;
use crate::loader::{Assembler, Batch, Loader, LoaderError, Shift, random_bits};
use crate::metrics::{
    Accumulator, Metrics, ReadError, RunningSums, read_ints, weighted_correct, weighted_nll_sum,
    weighted_uniform_ce_sum,
};
use crate::model::{Architecture, Model, ModelError, dropout_factors};

/// Images per batch when evaluating (validation and test); the last batch is padded.
pub const EVAL_BATCH: usize = 1000;

/// The recipe: everything that decides what is trained and how.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainConfig {
    /// Which network (the article's MLP by default).
    #[serde(default)]
    pub model: Architecture,
    /// The MLP's hidden layer widths (`[30, 10]` in the article).
    pub hidden: Vec<usize>,
    /// Passes over the training set.
    pub epochs: usize,
    /// Images per training step.
    pub batch_size: usize,
    /// Adam's learning rate (the peak, with a schedule).
    pub lr: f64,
    /// How the learning rate changes over the run.
    #[serde(default)]
    pub schedule: Schedule,
    /// Largest random shift of a training image, in pixels (0: none).
    #[serde(default)]
    pub augment: usize,
    /// Decoupled weight decay per unit of learning rate (AdamW; 0: plain Adam, the article).
    #[serde(default)]
    pub weight_decay: f64,
    /// Dropout rate on the hidden dense layers while training (0: none, the article).
    #[serde(default)]
    pub dropout: f64,
    /// Label smoothing ε: the training target puts 1 − ε on the label and ε spread evenly over
    /// all ten digits (0: none, the article). Reported losses stay plain cross-entropy.
    #[serde(default)]
    pub label_smoothing: f64,
    /// Seed for the initial weights and the shuffles.
    pub seed: u64,
    /// Images at the end of the training file kept for validation.
    pub valid_size: usize,
    /// Train on only the first N training images (after the validation split).
    pub train_limit: Option<usize>,
    /// Test on only the first N test images.
    pub test_limit: Option<usize>,
    /// Stop when the validation loss has not improved for this many epochs, and go back to
    /// the weights of the best epoch (`None`: run every epoch, as the article does).
    pub patience: Option<usize>,
}

/// How the learning rate changes over a run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Schedule {
    /// The same rate throughout (the article)
    #[default]
    Constant,
    /// Cosine decay from --lr to 0 over all the run's steps
    Cosine,
}

impl Schedule {
    /// The rate for step `step` (0-based, counted over the whole run) of `total`.
    pub fn rate(self, lr: f64, step: usize, total: usize) -> f64 {
        match self {
            Self::Constant => lr,
            Self::Cosine => {
                let progress = step as f64 / total.max(1) as f64;
                0.5 * lr * (1.0 + (std::f64::consts::PI * progress.min(1.0)).cos())
            }
        }
    }
}

impl Default for TrainConfig {
    /// The article's recipe, as Keras runs it.
    fn default() -> Self {
        Self {
            model: Architecture::Mlp,
            hidden: vec![30, 10],
            epochs: 30,
            batch_size: 32,
            lr: 1e-3,
            schedule: Schedule::Constant,
            augment: 0,
            weight_decay: 0.0,
            dropout: 0.0,
            label_smoothing: 0.0,
            seed: 42,
            valid_size: 5000,
            train_limit: None,
            test_limit: None,
            patience: None,
        }
    }
}

/// Mixed into the seed for the dropout masks' random stream.
const DROPOUT_STREAM: u64 = 0x5DEE_CE66_D1CE_5EED;

/// Adam's ε as Keras sets it (burn's default is 1e-5).
pub(crate) const ADAM_EPSILON: f32 = 1e-7;
/// Adam's β1 and β2: Keras' and burn's defaults, which `optimizer` leaves as they are.
pub(crate) const ADAM_BETA1: f32 = 0.9;
pub(crate) const ADAM_BETA2: f32 = 0.999;

/// A fresh optimizer for `config`: Adam with Keras' β1, β2 and ε, or AdamW with the same
/// and `config.weight_decay` when that is set.
pub fn optimizer(config: &TrainConfig) -> ModuleOptimizer {
    if config.weight_decay > 0.0 {
        AdamWConfig::new()
            .with_beta_1(ADAM_BETA1)
            .with_beta_2(ADAM_BETA2)
            .with_epsilon(ADAM_EPSILON)
            .with_weight_decay(config.weight_decay as f32)
            .init()
    } else {
        AdamConfig::new()
            .with_beta_1(ADAM_BETA1)
            .with_beta_2(ADAM_BETA2)
            .with_epsilon(ADAM_EPSILON)
            .init()
    }
}

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
    /// The observer (checkpoints, history files) failed.
    #[error("{0}")]
    Observer(String),
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
    /// Splits MNIST as the recipe says: the last `valid_size` training images for validation,
    /// then the optional limits.
    pub fn new(mnist: &Mnist, config: &TrainConfig) -> Result<Self, DataError> {
        let (mut train, valid) = mnist.train.split_last(config.valid_size)?;
        let mut test = mnist.test.clone();
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

/// One epoch's results.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EpochRecord {
    /// 1-based epoch number.
    pub epoch: usize,
    /// Loss and accuracy over the epoch's training steps (the running average Keras reports).
    pub train: Metrics,
    /// Loss and accuracy on the validation set after the epoch (`None` when it is empty).
    pub valid: Option<Metrics>,
    /// Seconds of the training phase (steps only, device synchronised).
    pub train_seconds: f64,
    /// Seconds of the whole epoch, validation included.
    pub seconds: f64,
}

impl EpochRecord {
    /// Training images per second of the training phase.
    pub fn images_per_s(&self) -> f64 {
        self.train.count as f64 / self.train_seconds
    }
}

/// Where an interrupted epoch stood, so that it can be finished exactly as it would have been.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PartialEpoch {
    /// The epoch (1-based).
    pub epoch: usize,
    /// Training steps already taken in it.
    pub steps: usize,
    /// The device's running `[loss sum, correct]`, bit for bit.
    pub sums: [f32; 2],
    /// Images trained on so far.
    pub count: usize,
    /// Seconds spent in it so far.
    pub seconds: f64,
}

/// Where training stands, apart from the tensors: what a checkpoint stores beside the model
/// and optimizer state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Progress {
    /// Completed epochs, in order.
    pub history: Vec<EpochRecord>,
    /// The epoch under way when the run was interrupted, if any.
    pub partial: Option<PartialEpoch>,
    /// Best validation accuracy so far and its epoch.
    pub best_val_acc: Option<(f64, usize)>,
    /// Lowest validation loss so far and its epoch (early stopping).
    pub best_val_loss: Option<(f64, usize)>,
    /// Early stopping ended the run after its last epoch; the best epoch by validation loss
    /// (its weights are the run's `best-loss.model`). Recorded in the checkpoint, so a run
    /// killed before its test pass finishes rather than trains on.
    #[serde(default)]
    pub stopped_early: Option<usize>,
}

/// What a finished epoch's validation decided.
#[derive(Debug, Default, PartialEq)]
struct Verdict {
    /// A new best validation accuracy: the run's best model.
    improved: bool,
    /// A new lowest validation loss (with patience): the weights early stopping returns to.
    best_loss: bool,
    /// Patience ran out: the best epoch by validation loss.
    stop_early: Option<usize>,
}

impl Progress {
    /// Nothing trained yet.
    pub fn new() -> Self {
        Self {
            history: Vec::new(),
            partial: None,
            best_val_acc: None,
            best_val_loss: None,
            stopped_early: None,
        }
    }

    /// Records a finished epoch: the best epochs so far by validation accuracy and (with
    /// `patience`, for early stopping) by validation loss, and whether `patience` epochs have
    /// passed without a lower loss.
    fn record_epoch(&mut self, record: EpochRecord, patience: Option<usize>) -> Verdict {
        let epoch = record.epoch;
        let mut verdict = Verdict::default();
        if let Some(v) = record.valid {
            if self.best_val_acc.is_none_or(|(best, _)| v.accuracy > best) {
                self.best_val_acc = Some((v.accuracy, epoch));
                verdict.improved = true;
            }
            if let Some(patience) = patience {
                if self.best_val_loss.is_none_or(|(best, _)| v.loss < best) {
                    self.best_val_loss = Some((v.loss, epoch));
                    verdict.best_loss = true;
                } else if let Some((_, best)) = self.best_val_loss
                    && epoch - best >= patience
                {
                    verdict.stop_early = Some(best);
                }
            }
        }
        self.history.push(record);
        self.stopped_early = verdict.stop_early;
        verdict
    }

    /// Completed epochs.
    pub fn epochs_done(&self) -> usize {
        self.history.len()
    }
}

impl Default for Progress {
    fn default() -> Self {
        Self::new()
    }
}

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
        _progress: &Progress,
        _improved: bool,
    ) -> Result<(), String> {
        Ok(())
    }

    /// Called when a step-level stop leaves an epoch unfinished, with the state to save.
    /// By default: nothing.
    fn on_interrupt(
        &mut self,
        _model: &Model,
        _optimizer: &ModuleOptimizer,
        _progress: &Progress,
    ) -> Result<(), String> {
        Ok(())
    }
}

/// An observer that does nothing (tests, quick runs).
pub struct Quiet;

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

/// A model being trained: weights (with autodiff), optimizer state and progress.
pub struct Session {
    /// The model, on the autodiff device.
    pub model: Model,
    /// Adam's state.
    pub optimizer: ModuleOptimizer,
    /// Where training stands.
    pub progress: Progress,
}

impl Session {
    /// A new model for `config` on `device` (a plain device; autodiff is added here).
    pub fn new(config: &TrainConfig, device: &Device) -> Result<Self, ModelError> {
        let model = Model::new(
            config.model,
            &config.hidden,
            config.seed,
            &device.clone().autodiff(),
        )?;
        Ok(Self {
            model,
            optimizer: optimizer(config),
            progress: Progress::new(),
        })
    }
}

/// The shuffled order of `n` images for `epoch`: a pure function of (seed, epoch), so a run
/// reproduces exactly on any backend and resumes without any generator state.
pub fn epoch_order(n: usize, seed: u64, epoch: usize) -> Vec<u32> {
    let mut order: Vec<u32> = (0..n as u32).collect();
    // Distinct, well-mixed streams per epoch (the golden-ratio increment of SplitMix64).
    let stream = seed ^ (epoch as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    order.shuffle(&mut StdRng::seed_from_u64(stream));
    order
}

/// How batches reach the device, and what takes the training steps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Feed {
    /// Batches the loader thread prepares ahead of the step (host gathering only).
    pub prefetch: usize,
    /// How a wgpu device gets its batches; CPU backends always gather on the host.
    pub gather: GatherMethod,
    /// The training step on a wgpu device (CPU backends always take burn's generic step).
    pub step: StepMethod,
}

/// What takes a training step on a wgpu device.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StepMethod {
    /// The whole step, and evaluation, in a few hand-written WGSL kernels (the MLP's step in 3, the CNN's in 13) where it applies (--gather kernel, hidden layers up to 256 units); burn's generic step otherwise, with a log line saying why
    #[default]
    Fused,
    /// burn's autodiff and Adam on the fused wgpu backend: the reference the fused step is tested against
    Generic,
}

impl Feed {
    /// Where `split`'s batches for `device` are put together: resident on a wgpu device
    /// (uploaded here, once) unless the feed says host; on the host otherwise.
    pub fn assembler(&self, split: &Split, device: &Device) -> Assembler {
        let host = || Assembler::Host {
            split: split.clone(),
            device: device.clone(),
        };
        if self.gather == GatherMethod::Host || split.is_empty() {
            return host();
        }
        match Resident::upload(split, device, self.gather) {
            Ok(resident) => Assembler::Resident(Arc::new(resident), None),
            Err(GatherError::NotWgpu) => host(),
        }
    }
}

/// Loss and accuracy of `model` (without autodiff) on the images of `data`, in fixed-shape
/// batches, and each image's predicted digit. On a wgpu device with the data resident for
/// the WGSL kernels and the fused step asked for, by the fused step's forward kernels;
/// otherwise by burn's.
pub fn evaluate(
    model: &Model,
    data: &Assembler,
    feed: &Feed,
) -> Result<(Metrics, Vec<u8>), TrainError> {
    with_subnormals_flushed(|| evaluate_flushed(model, data, feed))
}

fn evaluate_flushed(
    model: &Model,
    data: &Assembler,
    feed: &Feed,
) -> Result<(Metrics, Vec<u8>), TrainError> {
    if data.is_empty() {
        return Err(DataError::Split("there are no images to evaluate on".into()).into());
    }
    if let Assembler::Resident(resident, None) = data
        && resident.method() == GatherMethod::Kernel
        && feed.step == StepMethod::Fused
    {
        match crate::fused::evaluate(model, resident) {
            Err(FusedError::Model(why)) => debug!(reason = %why, "burn's generic evaluation"),
            done => return Ok(done?),
        }
    }
    let prefetch = feed.prefetch;
    let mut sums = Accumulator::default();
    let mut predicted = Vec::with_capacity(data.len());
    let batch = EVAL_BATCH.min(data.len()).max(1);
    let order = (0..data.len() as u32).collect();
    let mut loader = Loader::new(data.clone(), order, batch, prefetch);
    for b in loader.by_ref() {
        let logits = model.forward(b.images);
        let nll = weighted_nll_sum(logits.clone(), b.labels.clone(), b.weights.clone());
        let argmax = read_ints(logits.clone().argmax(1))?;
        predicted.extend(argmax.iter().take(b.real).map(|&d| d as u8));
        sums.add(nll, weighted_correct(logits, b.labels, b.weights), b.real);
    }
    loader.finish()?;
    Ok((sums.metrics()?, predicted))
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
    if let Some(best) = session.progress.stopped_early {
        let epoch = session.progress.epochs_done();
        return Ok(Outcome::EarlyStopped { epoch, best });
    }
    let plain = device.clone();
    let steps = sets.train.len().div_ceil(config.batch_size);
    let (train_data, valid_data, mut fused) = feeds(config, sets, device, feed, session)?;
    let dropout_widths = session.model.dropout_widths();
    // Early stopping keeps the weights of the best epoch by validation loss.
    let mut best_weights: Option<Model> = None;
    while session.progress.epochs_done() < config.epochs {
        let epoch = session.progress.epochs_done() + 1;
        let start = Instant::now();
        let order = epoch_order(sets.train.len(), config.seed, epoch);
        let (step, sums, count, earlier_seconds) = match session.progress.partial.take() {
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
            session.progress.partial = Some(PartialEpoch {
                epoch,
                steps: step,
                sums,
                count,
                seconds: earlier_seconds + start.elapsed().as_secs_f64(),
            });
            observer
                .on_interrupt(&session.model, &session.optimizer, &session.progress)
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
        let verdict = session.progress.record_epoch(record, config.patience);
        if verdict.best_loss {
            best_weights = Some(session.model.clone());
        }
        log_memory(epoch);
        observer
            .on_epoch(
                &session.model,
                &session.optimizer,
                &session.progress,
                verdict.improved,
            )
            .map_err(TrainError::Observer)?;
        if let Some(best) = verdict.stop_early {
            // After a resume the best weights may predate this process: they are then in the
            // run's best-by-validation-loss model, which the caller restores.
            if let Some(weights) = best_weights {
                session.model = weights;
            }
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

/// Where the epoch's batches come from (training and validation), and the fused step when
/// the run takes it.
fn feeds(
    config: &TrainConfig,
    sets: &Sets,
    device: &Device,
    feed: &Feed,
    session: &mut Session,
) -> Result<(Assembler, Assembler, Option<FusedStep>), TrainError> {
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
    let fused = fused_step(config, feed, device, &train_data, session)?;
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

/// What every step of one epoch shares.
struct EpochPlan<'a> {
    config: &'a TrainConfig,
    feed: &'a Feed,
    train_data: &'a Assembler,
    dropout_widths: &'a [usize],
    /// The device without autodiff (dropout masks are built there).
    device: &'a Device,
    epoch: usize,
    /// Steps in a whole epoch.
    steps: usize,
}

impl EpochPlan<'_> {
    /// Runs the epoch's steps from `step` on, over the images of `rest`, with the fused step
    /// when there is one and burn's otherwise. Returns the steps done and whether the observer
    /// stopped the epoch before its end; a loader that ends the epoch early is an error.
    fn run(
        &self,
        rest: Vec<u32>,
        mut step: usize,
        session: &mut Session,
        fused: Option<&mut FusedStep>,
        generic_sums: &mut Accumulator,
        observer: &mut (dyn Observer + Send),
    ) -> Result<(usize, bool), TrainError> {
        let (config, epoch, steps) = (self.config, self.epoch, self.steps);
        let shift = (config.augment > 0).then(|| Shift {
            max: config.augment,
            // Another stream than the shuffle's, fixed by (seed, epoch).
            stream: !config.seed ^ (epoch as u64).wrapping_mul(0xD1B5_4A32_D192_ED03),
        });
        let rate = |step: usize| {
            config
                .schedule
                .rate(config.lr, (epoch - 1) * steps + step, config.epochs * steps)
        };
        if let Some(fused) = fused {
            for chunk in rest.chunks(config.batch_size) {
                let masks = step_masks(config, self.dropout_widths, epoch, step);
                fused.step(chunk, shift, rate(step), &masks);
                step += 1;
                if !observer.on_step(epoch, step, steps, fused) {
                    return Ok((step, step < steps));
                }
            }
            return Ok((step, false));
        }
        let epoch_data = self.train_data.with_shift(shift);
        let mut loader = Loader::new(epoch_data, rest, config.batch_size, self.feed.prefetch);
        let mut stopped = false;
        for batch in loader.by_ref() {
            let masks = step_masks(config, self.dropout_widths, epoch, step)
                .into_iter()
                .zip(self.dropout_widths)
                .map(|(values, &width)| {
                    Tensor::from_data(
                        TensorData::new(values, [config.batch_size, width]),
                        self.device,
                    )
                })
                .collect::<Vec<_>>();
            generic_step(config, session, batch, &masks, rate(step), generic_sums);
            step += 1;
            if !observer.on_step(epoch, step, steps, &*generic_sums) {
                stopped = step < steps;
                break;
            }
        }
        loader.finish()?;
        if !stopped && step < steps {
            return Err(LoaderError::short(step, steps).into());
        }
        Ok((step, stopped))
    }
}

/// The fused training step for this run, when it asked for one on a wgpu device and the
/// fused step covers its recipe; otherwise `None` (burn's generic step), with a log line
/// saying why when the fused step was asked for on wgpu.
fn fused_step(
    config: &TrainConfig,
    feed: &Feed,
    device: &Device,
    train_data: &Assembler,
    session: &Session,
) -> Result<Option<FusedStep>, TrainError> {
    if feed.step != StepMethod::Fused || Gpu::of(device).is_none() {
        return Ok(None);
    }
    let resident = match train_data {
        Assembler::Resident(resident, _) if resident.method() == GatherMethod::Kernel => {
            Some(resident)
        }
        _ => None,
    };
    if let Some(why) = crate::fused::unsupported(config, resident.is_some()) {
        info!(reason = %why, "burn's generic training step");
        return Ok(None);
    }
    let Some(resident) = resident else {
        return Ok(None);
    };
    match FusedStep::new(
        &session.model,
        &session.optimizer,
        config,
        resident,
        config.batch_size,
    ) {
        Ok(fused) => {
            debug!(model = %config.model, "fused training step");
            Ok(Some(fused))
        }
        Err(FusedError::Model(why)) => {
            info!(reason = %why, "burn's generic training step");
            Ok(None)
        }
        Err(e) => Err(e.into()),
    }
}

/// One step of burn's generic training: forward (with dropout `masks`), loss, backward,
/// Adam at rate `lr`; the batch's loss and hits added to `sums`.
fn generic_step(
    config: &TrainConfig,
    session: &mut Session,
    batch: Batch,
    masks: &[Tensor<2>],
    lr: f64,
    sums: &mut Accumulator,
) {
    let model = session.model.clone();
    let logits = model.forward_dropped(batch.images, masks);
    let nll = weighted_nll_sum(logits.clone(), batch.labels.clone(), batch.weights.clone());
    let eps = config.label_smoothing;
    let objective = if eps > 0.0 {
        let uniform = weighted_uniform_ce_sum(logits.clone(), batch.weights.clone());
        nll.clone().mul_scalar(1.0 - eps) + uniform.mul_scalar(eps)
    } else {
        nll.clone()
    };
    let loss: Tensor<1> = objective.div_scalar(batch.real as f32);
    let grads = GradientsParams::from_grads(loss.backward(), &model);
    session.model = session.optimizer.step(lr, model, grads);
    let correct = weighted_correct(logits.inner(), batch.labels, batch.weights);
    sums.add(nll.inner(), correct, batch.real);
}

/// The dropout factors of training step `step` (0-based within `epoch`), one vector per
/// hidden layer; none without dropout. Their random stream differs from the shuffle's and the
/// shifts' and is fixed by (seed, epoch, step), so a resumed run draws the same.
fn step_masks(config: &TrainConfig, widths: &[usize], epoch: usize, step: usize) -> Vec<Vec<f32>> {
    if config.dropout <= 0.0 {
        return Vec::new();
    }
    let stream = random_bits(
        config.seed ^ DROPOUT_STREAM,
        ((epoch as u64) << 32) | step as u64,
    );
    dropout_factors(widths, config.batch_size, config.dropout, stream)
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

/// Rounds for display in the logs (the run's records keep full precision).
pub fn round(x: f64, digits: i32) -> f64 {
    let scale = 10f64.powi(digits);
    (x * scale).round() / scale
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

    #[test]
    fn epoch_order_is_a_seeded_permutation() {
        let a = epoch_order(1000, 42, 1);
        let mut sorted = a.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, (0..1000).collect::<Vec<u32>>());
        assert_eq!(a, epoch_order(1000, 42, 1));
        assert_ne!(a, epoch_order(1000, 42, 2));
        assert_ne!(a, epoch_order(1000, 43, 1));
    }

    fn mnist(n: usize, m: usize) -> Mnist {
        // Learnable toy data: the label is written into the image's brightness.
        let split = |n: usize| {
            let labels: Vec<u8> = (0..n).map(|i| (i * 7 % 10) as u8).collect();
            let images = labels
                .iter()
                .flat_map(|&l| (0..784).map(move |p| if p % 10 == l as usize { 250 } else { 3 }))
                .collect();
            Split::new(images, labels).unwrap()
        };
        Mnist {
            train: split(n),
            test: split(m),
        }
    }

    #[test]
    fn sets_follow_the_split_and_limits() {
        let mnist = mnist(100, 20);
        let config = TrainConfig {
            valid_size: 30,
            train_limit: Some(50),
            test_limit: Some(5),
            ..TrainConfig::default()
        };
        let sets = Sets::new(&mnist, &config).unwrap();
        assert_eq!(
            (sets.train.len(), sets.valid.len(), sets.test.len()),
            (50, 30, 5)
        );
        assert_eq!(sets.valid.labels[0], 0, "validation starts at image 70");
        let config = TrainConfig {
            train_limit: Some(0),
            valid_size: 10,
            ..TrainConfig::default()
        };
        assert!(Sets::new(&mnist, &config).is_err());
    }

    /// Stops after `at` steps in total.
    struct StopAfter {
        at: usize,
        seen: usize,
        saved: Option<(Model, ModuleOptimizer, Progress)>,
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
            p: &Progress,
        ) -> Result<(), String> {
            self.saved = Some((m.clone(), o.clone(), p.clone()));
            Ok(())
        }
    }

    #[test]
    fn cosine_schedule_decays_from_the_rate_to_zero() {
        let s = Schedule::Cosine;
        assert_eq!(s.rate(0.01, 0, 100), 0.01);
        assert!((s.rate(0.01, 50, 100) - 0.005).abs() < 1e-12);
        assert!(s.rate(0.01, 100, 100).abs() < 1e-12);
        assert!(s.rate(0.01, 30, 100) > s.rate(0.01, 31, 100));
        assert_eq!(Schedule::Constant.rate(0.01, 99, 100), 0.01);
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
        let sets = Sets::new(&mnist(100, 10), &config).unwrap();
        let mut straight = Session::new(&config, &device).unwrap();
        let outcome = train(&config, &sets, &device, &feed(0), &mut straight, &mut Quiet).unwrap();
        assert_eq!(outcome, Outcome::Completed);

        // 10 steps an epoch: stop in the middle of epoch 2, then resume from the saved state.
        let mut first = Session::new(&config, &device).unwrap();
        let mut stop = StopAfter {
            at: 14,
            seen: 0,
            saved: None,
        };
        let outcome = train(&config, &sets, &device, &feed(2), &mut first, &mut stop).unwrap();
        assert_eq!(outcome, Outcome::Interrupted { epoch: 2 });
        let (model, optimizer, progress) = stop.saved.unwrap();
        assert_eq!(progress.partial.as_ref().unwrap().steps, 4);
        let mut resumed = Session {
            model,
            optimizer,
            progress,
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
            strip(&straight.progress.history),
            strip(&resumed.progress.history)
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
        let sets = Sets::new(&mnist(100, 10), &base).unwrap();
        let run = |config: &TrainConfig| {
            let mut session = Session::new(config, &device).unwrap();
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
        let sets = Sets::new(&mnist(100, 10), &config).unwrap();
        let mut session = Session::new(&config, &device).unwrap();
        let outcome = train(&config, &sets, &device, &feed(0), &mut session, &mut Quiet).unwrap();
        let Outcome::EarlyStopped { epoch, best } = outcome else {
            panic!("expected early stopping, got {outcome:?}");
        };
        assert_eq!(epoch - best, 2);
        assert_eq!(session.progress.history.len(), epoch);
        let (v, _) = evaluate(
            &session.model.valid(),
            &feed(0).assembler(&sets.valid, &device),
            &feed(0),
        )
        .unwrap();
        let best_loss = session.progress.history[best - 1].valid.unwrap().loss;
        assert!(
            (v.loss - best_loss).abs() < 1e-6,
            "{} vs {best_loss}",
            v.loss
        );
    }
}
