//! One epoch's training steps: burn's generic step or the fused one, with the epoch's shifts,
//! dropout masks and learning rates.

use burn::optim::GradientsParams;
use burn::tensor::{Device, Tensor, TensorData};

use super::Feed;
use super::{Observer, TrainError};
use crate::batch::{Batch, Shift};
use crate::loader::{Assembler, Loader, LoaderError};
use crate::metrics::{Accumulator, weighted_correct, weighted_nll_sum, weighted_uniform_ce_sum};
use crate::recipe::TrainConfig;
use crate::rng;
use crate::session::Session;

/// What every step of one epoch shares.
pub(super) struct EpochPlan<'a> {
    pub(super) config: &'a TrainConfig,
    pub(super) feed: &'a Feed,
    pub(super) train_data: &'a Assembler,
    pub(super) dropout_widths: &'a [usize],
    /// The device without autodiff (dropout masks are built there).
    pub(super) device: &'a Device,
    pub(super) epoch: usize,
    /// Steps in a whole epoch.
    pub(super) steps: usize,
}

impl EpochPlan<'_> {
    /// Runs the epoch's steps from `step` on, over the images of `rest`, with the fused step
    /// when there is one and burn's otherwise. Returns the steps done and whether the observer
    /// stopped the epoch before its end; a loader that ends the epoch early is an error.
    pub(super) fn run(
        &self,
        rest: Vec<u32>,
        mut step: usize,
        session: &mut Session,
        fused: Option<&mut super::Fused>,
        generic_sums: &mut Accumulator,
        observer: &mut (dyn Observer + Send),
    ) -> Result<(usize, bool), TrainError> {
        let (config, epoch, steps) = (self.config, self.epoch, self.steps);
        let shift = (config.augment > 0).then(|| Shift {
            max: config.augment,
            stream: rng::shift_stream(config.seed, epoch),
        });
        let rate = |step: usize| config.rate(epoch, step, steps);
        if let Some(fused) = fused {
            for chunk in rest.chunks(config.batch_size) {
                let masks = step_masks(config, self.dropout_widths, epoch, step);
                fused.step(chunk, shift, rate(step), &masks)?;
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
    let stream = rng::dropout_stream(config.seed, epoch, step);
    rng::dropout_factors(widths, config.batch_size, config.dropout, stream)
}
