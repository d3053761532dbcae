//! The training loop: the article's recipe (Adam, sparse categorical cross-entropy, shuffled
//! mini-batches, validation after every epoch, one test pass at the end).

use std::time::Instant;

use burn::module::Module;
use burn::optim::{AdamConfig, GradientsParams};
use burn::tensor::{Device, Tensor};
use rand::SeedableRng;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use tracing::info;

use crate::backend::ReadyDevice;
use crate::data::{DataError, Mnist, Split};
use crate::loader::{Loader, LoaderError};
use crate::metrics::{Accumulator, Metrics, ReadError, weighted_correct, weighted_nll_sum};
use crate::model::{Mlp, ModelError};

/// Images per batch when evaluating (validation and test); the last batch is padded.
pub const EVAL_BATCH: usize = 1000;

/// The recipe: everything that decides what is trained and how.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct TrainConfig {
    /// Hidden layer widths (`[30, 10]` in the article).
    pub hidden: Vec<usize>,
    /// Passes over the training set.
    pub epochs: usize,
    /// Images per training step.
    pub batch_size: usize,
    /// Adam's learning rate.
    pub lr: f64,
    /// Seed for the initial weights and the shuffles.
    pub seed: u64,
    /// Images at the end of the training file kept for validation.
    pub valid_size: usize,
    /// Train on only the first N training images (after the validation split).
    pub train_limit: Option<usize>,
    /// Test on only the first N test images.
    pub test_limit: Option<usize>,
    /// Batches the loader prepares ahead of the training step (0: none, built on demand).
    pub prefetch: usize,
}

impl Default for TrainConfig {
    /// The article's recipe, as Keras runs it.
    fn default() -> Self {
        Self {
            hidden: vec![30, 10],
            epochs: 30,
            batch_size: 32,
            lr: 1e-3,
            seed: 42,
            valid_size: 5000,
            train_limit: None,
            test_limit: None,
            prefetch: 2,
        }
    }
}

/// Adam's ε as Keras sets it (burn's default is 1e-5).
const ADAM_EPSILON: f32 = 1e-7;

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
        Ok(Self { train, valid, test })
    }
}

/// One epoch's results.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
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

/// A finished run.
#[derive(Debug)]
pub struct RunResult {
    /// The trained model (without autodiff).
    pub model: Mlp,
    /// Per-epoch history.
    pub history: Vec<EpochRecord>,
    /// Loss and accuracy on the test set.
    pub test: Metrics,
}

/// The shuffled order of `n` images for `epoch`: a pure function of (seed, epoch), so a run
/// reproduces exactly on any backend.
pub fn epoch_order(n: usize, seed: u64, epoch: usize) -> Vec<u32> {
    let mut order: Vec<u32> = (0..n as u32).collect();
    // Distinct, well-mixed streams per epoch (the golden-ratio increment of SplitMix64).
    let stream = seed ^ (epoch as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    order.shuffle(&mut StdRng::seed_from_u64(stream));
    order
}

/// Loss and accuracy of `model` (without autodiff) on `split`, in fixed-shape batches.
pub fn evaluate(
    model: &Mlp,
    split: &Split,
    device: &Device,
    prefetch: usize,
) -> Result<Metrics, TrainError> {
    let mut sums = Accumulator::default();
    let batch = EVAL_BATCH.min(split.len()).max(1);
    let mut loader = Loader::new(
        split.clone(),
        (0..split.len() as u32).collect(),
        batch,
        device.clone(),
        prefetch,
    );
    for b in loader.by_ref() {
        let logits = model.forward(b.images);
        let nll = weighted_nll_sum(logits.clone(), b.labels.clone(), b.weights.clone());
        sums.add(nll, weighted_correct(logits, b.labels, b.weights), b.real);
    }
    loader.finish()?;
    Ok(sums.finish()?)
}

/// Trains the article's model on `sets` with `config` on `device`, logging one event per
/// epoch and one for the test result.
pub fn train(
    config: &TrainConfig,
    sets: &Sets,
    device: &ReadyDevice,
) -> Result<RunResult, TrainError> {
    let plain = device.device.clone();
    let autodiff = plain.clone().autodiff();
    plain.seed(config.seed);
    let mut model = Mlp::new(&config.hidden, config.seed, &autodiff)?;
    let mut optim = AdamConfig::new().with_epsilon(ADAM_EPSILON).init();
    info!(
        widths = ?model.widths(),
        params = model.num_params(),
        train = sets.train.len(),
        valid = sets.valid.len(),
        test = sets.test.len(),
        "model and data ready"
    );

    let mut history = Vec::with_capacity(config.epochs);
    for epoch in 1..=config.epochs {
        let start = Instant::now();
        let order = epoch_order(sets.train.len(), config.seed, epoch);
        let mut sums = Accumulator::default();
        let mut loader = Loader::new(
            sets.train.clone(),
            order,
            config.batch_size,
            plain.clone(),
            config.prefetch,
        );
        for batch in loader.by_ref() {
            let logits = model.forward(batch.images);
            let nll = weighted_nll_sum(logits.clone(), batch.labels.clone(), batch.weights.clone());
            let loss: Tensor<1> = nll.clone().div_scalar(batch.real as f32);
            let grads = GradientsParams::from_grads(loss.backward(), &model);
            model = optim.step(config.lr, model, grads);
            let correct = weighted_correct(logits.inner(), batch.labels, batch.weights);
            sums.add(nll.inner(), correct, batch.real);
        }
        loader.finish()?;
        let train = sums.finish()?; // reads back, so the device has caught up
        let train_seconds = start.elapsed().as_secs_f64();
        let valid = if sets.valid.is_empty() {
            None
        } else {
            Some(evaluate(
                &model.valid(),
                &sets.valid,
                &plain,
                config.prefetch,
            )?)
        };
        let record = EpochRecord {
            epoch,
            train,
            valid,
            train_seconds,
            seconds: start.elapsed().as_secs_f64(),
        };
        log_epoch(&record, config.epochs);
        history.push(record);
    }

    let model = model.valid();
    let test = evaluate(&model, &sets.test, &plain, config.prefetch)?;
    info!(
        test_loss = round(test.loss, 4),
        test_acc = round(test.accuracy, 4),
        images = test.count,
        "test"
    );
    Ok(RunResult {
        model,
        history,
        test,
    })
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

/// Rounds for display in the logs (the run's records keep full precision).
fn round(x: f64, digits: i32) -> f64 {
    let scale = 10f64.powi(digits);
    (x * scale).round() / scale
}

#[cfg(test)]
mod tests {
    use super::*;

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

    #[test]
    fn sets_follow_the_split_and_limits() {
        let split = |n: usize| {
            Split::new(vec![0; n * 784], (0..n).map(|i| (i % 10) as u8).collect()).unwrap()
        };
        let mnist = Mnist {
            train: split(100),
            test: split(20),
        };
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
}
