//! What each epoch leaves in the run directory: the checkpoint, the best models, the history
//! files and the TensorBoard events, in that order (what follows the checkpoint can be written
//! again from it); and which checkpoints a run keeps.

use burn::module::Module;
use burn::optim::ModuleOptimizer;
use burn::tensor::Device;

use super::{Guard, GuardError, RunDir, RunError};
use crate::checkpoint;
use crate::data::DataInfo;
use crate::files::{self, FileError};
use crate::interop::InteropError;
use crate::interop::tensorboard::EventLog;
use crate::model::Model;
use crate::recipe::TrainConfig;
use crate::session::{Session, TrainingRecord};

/// Which checkpoints a run keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Keep {
    /// The latest checkpoint and the model with the best validation accuracy
    Best,
    /// The latest checkpoint only
    Last,
    /// A checkpoint after every epoch, and the best model
    All,
}

/// Why an epoch's files could not be written.
#[derive(Debug, thiserror::Error)]
pub enum EpochFilesError {
    /// A file of the run.
    #[error(transparent)]
    File(#[from] FileError),
    /// A record of the run.
    #[error(transparent)]
    Run(#[from] RunError),
    /// The TensorBoard event file.
    #[error(transparent)]
    Events(#[from] InteropError),
    /// Writing may not go on (a sweep's claim on the run was taken over).
    #[error(transparent)]
    Guard(#[from] GuardError),
}

/// Writes what each epoch of a run leaves in its directory.
pub struct EpochWriter<'a> {
    /// The run directory.
    pub run: &'a RunDir,
    /// Where a model read back from the run goes.
    pub device: Device,
    /// Which checkpoints to keep.
    pub keep: Keep,
    /// Early stopping is on: keep the best model by validation loss too.
    pub patience: bool,
    /// The run's TensorBoard event file.
    pub events: EventLog,
    /// The recipe, for the learning rate each epoch ended with.
    pub recipe: TrainConfig,
    /// Training steps in an epoch.
    pub steps: usize,
    /// What the model is trained on, for the model files' headers.
    pub data: DataInfo,
    /// Checked before every write: a sweep's claim on this run (a worker whose claim was
    /// taken over stops writing).
    pub guard: Option<&'a dyn Guard>,
}

impl EpochWriter<'_> {
    /// Saves the state to resume from (an epoch's end, or a stop inside one).
    pub fn checkpoint(
        &self,
        model: &Model,
        optimizer: &ModuleOptimizer,
        record: &TrainingRecord,
    ) -> Result<(), EpochFilesError> {
        if let Some(guard) = self.guard {
            guard.check()?;
        }
        // The session is rebuilt by reference-counted clones: no tensor data is copied.
        let session = Session {
            model: model.clone(),
            optimizer: optimizer.clone(),
            record: record.clone(),
            data: self.data.clone(),
        };
        Ok(checkpoint::save_checkpoint(
            &self.run.checkpoint(),
            &session,
        )?)
    }

    /// Writes what a finished epoch leaves: checkpoint, epoch copy (`--keep all`), best
    /// models, history files, events. `improved`: the epoch set a new best validation
    /// accuracy.
    pub fn epoch(
        &mut self,
        model: &Model,
        optimizer: &ModuleOptimizer,
        record: &TrainingRecord,
        improved: bool,
    ) -> Result<(), EpochFilesError> {
        let epoch = record.epochs_done();
        self.checkpoint(model, optimizer, record)?;
        if self.keep == Keep::All {
            let path = self.run.epoch_checkpoint(epoch);
            if let Some(dir) = path.parent() {
                files::create_dir_all(dir)?;
            }
            // A copy written atomically like every other file: a kill mid-copy leaves no
            // half checkpoint under the epoch's name.
            let latest = self.run.checkpoint();
            files::atomic_write(&path, |f| {
                std::io::copy(&mut std::fs::File::open(&latest)?, f).map(|_| ())
            })?;
        }
        let valid_model = || model.clone().valid();
        if improved && self.keep != Keep::Last {
            checkpoint::save_model(&valid_model(), &self.data, &self.run.best_model())?;
        }
        if self.patience && record.best_val_loss.is_some_and(|(_, e)| e == epoch) {
            checkpoint::save_model(&valid_model(), &self.data, &self.run.best_loss_model())?;
        }
        self.run.write_history(&record.history)?;
        let (recipe, steps) = (&self.recipe, self.steps);
        Ok(self
            .events
            .epochs(&record.history, |e| recipe.rate(e, steps - 1, steps))?)
    }

    /// The weights of the best epoch by validation loss, as saved (early stopping returns to
    /// them).
    pub fn best_loss_weights(&self) -> Result<Model, EpochFilesError> {
        let (model, _) = checkpoint::load_model(&self.run.best_loss_model(), &self.device)?;
        Ok(model)
    }
}
