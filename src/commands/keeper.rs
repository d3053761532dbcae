//! The checkpoint keeper: what each epoch leaves in the run directory (checkpoint, best
//! models, history files), the progress bar, and the stop Ctrl-C asks for.

use std::time::{Duration, Instant};

use burn::module::Module;
use burn::optim::ModuleOptimizer;
use burn::tensor::Device;
use indicatif::{ProgressBar, ProgressStyle};

use super::Interrupts;
use crate::checkpoint;
use crate::claims::Claim;
use crate::cli::Keep;
use crate::interop::tensorboard::EventLog;
use crate::logging;
use crate::metrics::RunningSums;
use crate::model::Model;
use crate::recipe::TrainConfig;
use crate::report::{ReportError, RunDir};
use crate::session::{Progress, Session};
use crate::train::{Observer, ObserverError};

/// Writes what each epoch leaves: checkpoint, best models, history files, TensorBoard events
/// (in that order: what follows the checkpoint can be written again from it), and drives the
/// progress bar. Stops training when Ctrl-C was pressed.
pub(super) struct Keeper<'a> {
    pub(super) run: &'a RunDir,
    /// Where a model read back from the run goes.
    pub(super) device: Device,
    pub(super) interrupts: Interrupts,
    pub(super) keep: Keep,
    pub(super) patience: bool,
    pub(super) bar: Option<ProgressBar>,
    pub(super) show_bar: bool,
    pub(super) batch_size: usize,
    pub(super) last_update: Instant,
    /// The run's TensorBoard event file.
    pub(super) events: EventLog,
    /// The recipe, for the learning rate each epoch ended with.
    pub(super) recipe: TrainConfig,
    /// Training steps in an epoch.
    pub(super) steps: usize,
    /// The sweep's claim on this run, checked before every write: a worker whose claim was
    /// taken over stops writing.
    pub(super) claim: Option<&'a Claim>,
}

impl Keeper<'_> {
    fn save(
        &self,
        model: &Model,
        optimizer: &ModuleOptimizer,
        progress: &Progress,
    ) -> Result<(), ObserverError> {
        if let Some(claim) = self.claim {
            claim.check()?;
        }
        // The session is rebuilt by reference-counted clones: no tensor data is copied.
        let session = Session {
            model: model.clone(),
            optimizer: optimizer.clone(),
            progress: progress.clone(),
        };
        Ok(checkpoint::save_checkpoint(
            &self.run.checkpoint(),
            &session,
        )?)
    }
}

impl Observer for Keeper<'_> {
    fn on_step(&mut self, epoch: usize, step: usize, steps: usize, sums: &dyn RunningSums) -> bool {
        if self.show_bar {
            let bar = self.bar.get_or_insert_with(|| {
                let bar = ProgressBar::new(steps as u64).with_style(
                    ProgressStyle::with_template(
                        "epoch {prefix} [{bar:30}] {pos}/{len} steps  {msg}  ETA {eta}",
                    )
                    .unwrap_or_else(|_| ProgressStyle::default_bar())
                    .progress_chars("=> "),
                );
                logging::set_progress_bar(Some(bar.clone()));
                bar
            });
            bar.set_prefix(epoch.to_string());
            bar.set_position(step as u64);
            // Reading the running loss syncs the device: a few times a second at most.
            if self.last_update.elapsed() > Duration::from_millis(250) {
                self.last_update = Instant::now();
                if let Ok(m) = sums.metrics() {
                    let rate = bar.per_sec() * self.batch_size as f64;
                    bar.set_message(format!(
                        "loss {:.4}  acc {:.4}  {:.0} images/s",
                        m.loss, m.accuracy, rate
                    ));
                }
            }
        }
        !self.interrupts.requested()
    }

    fn on_epoch(
        &mut self,
        model: &Model,
        optimizer: &ModuleOptimizer,
        progress: &Progress,
        improved: bool,
    ) -> Result<(), ObserverError> {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
            logging::set_progress_bar(None);
        }
        let epoch = progress.epochs_done();
        self.save(model, optimizer, progress)?;
        if self.keep == Keep::All {
            let path = self.run.epoch_checkpoint(epoch);
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir).map_err(|source| ReportError::Io {
                    path: dir.to_path_buf(),
                    source,
                })?;
            }
            // A copy written atomically like every other file: a kill mid-copy leaves no
            // half checkpoint under the epoch's name.
            let latest = self.run.checkpoint();
            checkpoint::atomic_write(&path, |f| {
                std::io::copy(&mut std::fs::File::open(&latest)?, f).map(|_| ())
            })?;
        }
        let valid_model = || model.clone().valid();
        if improved && self.keep != Keep::Last {
            checkpoint::save_model(&valid_model(), &self.run.best_model())?;
        }
        if self.patience && progress.best_val_loss.is_some_and(|(_, e)| e == epoch) {
            checkpoint::save_model(&valid_model(), &self.run.best_loss_model())?;
        }
        self.run.write_history(&progress.history)?;
        let (recipe, steps) = (&self.recipe, self.steps);
        Ok(self
            .events
            .epochs(&progress.history, |e| recipe.rate(e, steps - 1, steps))?)
    }

    fn best_weights(&mut self, _epoch: usize) -> Result<Option<Model>, ObserverError> {
        let (model, _) = checkpoint::load_model(&self.run.best_loss_model(), &self.device)?;
        Ok(Some(model))
    }

    fn on_interrupt(
        &mut self,
        model: &Model,
        optimizer: &ModuleOptimizer,
        progress: &Progress,
    ) -> Result<(), ObserverError> {
        if let Some(bar) = self.bar.take() {
            bar.abandon();
            logging::set_progress_bar(None);
        }
        self.save(model, optimizer, progress)
    }
}
