//! Ctrl-C and SIGTERM: the first asks the work under way to stop at its next safe point (a
//! run after its batch, with a checkpoint; a sweep worker within a second, wherever it is);
//! the second exits at once.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tracing::warn;

/// Ctrl-C / SIGTERM presses so far, shared with the process's handler. The first asks
/// training to stop at the next batch boundary and save a checkpoint; the second exits at once
/// (files are written atomically, so nothing on disk is left half-written).
#[derive(Debug, Clone, Default)]
pub struct Interrupts(Arc<AtomicUsize>);

impl Interrupts {
    /// Installs the handler (once per process: a sweep trains many runs, and a handler can
    /// only be set once) and returns the count it keeps.
    pub fn install() -> Self {
        Self::install_saying(
            "stopping (a run saves a checkpoint after this batch; again to quit at once)",
        )
    }

    /// As [`Interrupts::install`], the first interrupt answered with `stopping` (the first
    /// installation of the process decides).
    pub fn install_saying(stopping: &'static str) -> Self {
        static COUNT: std::sync::OnceLock<Interrupts> = std::sync::OnceLock::new();
        COUNT
            .get_or_init(|| {
                let count = Interrupts::default();
                let seen = count.clone();
                let installed = ctrlc::set_handler(move || {
                    if seen.0.fetch_add(1, Ordering::SeqCst) >= 1 {
                        eprintln!(
                            "error: interrupted twice: exiting at once (the last checkpoint is intact)"
                        );
                        std::process::exit(130);
                    }
                    eprintln!("interrupt: {stopping}");
                });
                if let Err(e) = installed {
                    warn!("Ctrl-C will stop training without a checkpoint: {e}");
                }
                count
            })
            .clone()
    }

    /// Whether a stop was asked for.
    pub fn requested(&self) -> bool {
        self.0.load(Ordering::SeqCst) > 0
    }

    /// Waits `duration`, or less when a stop is asked for meanwhile (noticed within 50 ms);
    /// returns whether one was.
    pub fn wait(&self, duration: std::time::Duration) -> bool {
        let end = std::time::Instant::now() + duration;
        while !self.requested() {
            let left = end.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                return false;
            }
            std::thread::sleep(left.min(std::time::Duration::from_millis(50)));
        }
        true
    }
}
