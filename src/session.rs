//! The state of a run that is saved: the model being trained, the optimizer's state, and where
//! training stands (history, best epochs, a partly done epoch), with the bookkeeping of each
//! finished epoch (best epochs, early stopping).

use burn::optim::ModuleOptimizer;
use burn::tensor::Device;
use serde::{Deserialize, Serialize};

use crate::data::DataInfo;
use crate::metrics::Metrics;
use crate::model::{Model, ModelError};
use crate::recipe::{TrainConfig, optimizer};

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
pub struct TrainingRecord {
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
pub(crate) struct Verdict {
    /// A new best validation accuracy: the run's best model.
    pub(crate) improved: bool,
    /// A new lowest validation loss (with patience): the weights early stopping returns to.
    pub(crate) best_loss: bool,
    /// Patience ran out: the best epoch by validation loss.
    pub(crate) stop_early: Option<usize>,
}

impl TrainingRecord {
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
    pub(crate) fn record_epoch(&mut self, record: EpochRecord, patience: Option<usize>) -> Verdict {
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

impl Default for TrainingRecord {
    fn default() -> Self {
        Self::new()
    }
}

/// A model being trained: weights (with autodiff), optimizer state and its training record.
pub struct Session {
    /// The model, on the autodiff device.
    pub model: Model,
    /// Adam's state.
    pub optimizer: ModuleOptimizer,
    /// Where training stands.
    pub record: TrainingRecord,
    /// What the model is trained on (its input and classes).
    pub data: DataInfo,
}

impl Session {
    /// A new model for `config` on `data` on `device` (a plain device; autodiff is added
    /// here).
    pub fn new(config: &TrainConfig, data: &DataInfo, device: &Device) -> Result<Self, ModelError> {
        let model = Model::new(
            config.model,
            &config.hidden,
            data,
            config.seed,
            &device.clone().autodiff(),
        )?;
        Ok(Self::starting_from(model, config, data))
    }

    /// A new session that trains `model` (on an autodiff device, for `data`) with a fresh
    /// optimizer.
    pub fn starting_from(model: Model, config: &TrainConfig, data: &DataInfo) -> Self {
        Self {
            model,
            optimizer: optimizer(config),
            record: TrainingRecord::new(),
            data: data.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn epoch(epoch: usize, loss: f64, accuracy: f64) -> EpochRecord {
        let m = Metrics {
            loss,
            accuracy,
            count: 10,
        };
        EpochRecord {
            epoch,
            train: m,
            valid: Some(m),
            train_seconds: 1.0,
            seconds: 1.0,
        }
    }

    /// Best epochs by accuracy and by loss are tracked apart; patience counts epochs since the
    /// lowest loss, and the verdict names the epoch to go back to.
    #[test]
    fn early_stopping_waits_patience_epochs_after_the_lowest_loss() {
        let mut p = TrainingRecord::new();
        let v = p.record_epoch(epoch(1, 0.5, 0.80), Some(2));
        assert_eq!((v.improved, v.best_loss, v.stop_early), (true, true, None));
        // Better accuracy, worse loss: a new best model, not a new best loss.
        let v = p.record_epoch(epoch(2, 0.6, 0.85), Some(2));
        assert_eq!((v.improved, v.best_loss, v.stop_early), (true, false, None));
        let v = p.record_epoch(epoch(3, 0.7, 0.84), Some(2));
        assert_eq!(
            (v.improved, v.best_loss, v.stop_early),
            (false, false, Some(1))
        );
        assert_eq!(p.stopped_early, Some(1));
        assert_eq!(
            (p.best_val_acc, p.best_val_loss),
            (Some((0.85, 2)), Some((0.5, 1)))
        );
        assert_eq!(p.epochs_done(), 3);
        // Without patience the loss is not tracked and nothing stops.
        let mut p = TrainingRecord::new();
        for e in 1..=5 {
            let v = p.record_epoch(epoch(e, 0.5 + e as f64, 0.5), None);
            assert_eq!(v.stop_early, None);
        }
        assert_eq!(p.best_val_loss, None);
    }
}
