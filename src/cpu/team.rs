//! A team of threads for the fused CPU step's parallel loops, which are short (a step of the
//! article's MLP at batch 32 takes tens of microseconds) and come one after another.
//!
//! rayon's workers go to sleep as soon as they find no work, and the futex that wakes them
//! costs as much as a piece of the step: measured on 2 cores, the fused step ran faster on one
//! thread than on two at batch 32 and only 1.25 times faster at batch 256, while two
//! one-thread runs side by side each kept their speed. The team's helpers spin between jobs
//! instead (for [`SPIN`], then they sleep).
//!
//! Each thread takes the same pieces every time (piece `p` of `n` to thread `p % threads`),
//! so the parameters and moments a piece updates stay in one core's cache from step to step
//! instead of moving to whichever core took the piece first.
//!
//! Pieces are what the caller cuts, fixed by the shapes; which thread runs one does not change
//! what it computes, so the results do not depend on the number of threads.

use std::panic::{AssertUnwindSafe, catch_unwind, resume_unwind};
use std::sync::atomic::Ordering::{Acquire, Relaxed, Release, SeqCst};
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicU64, AtomicUsize};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::thread::Thread;
use std::time::{Duration, Instant};

/// How long a helper spins for the next job before it sleeps (the gaps between a step's loops
/// and between steps are far shorter; between epochs, longer).
const SPIN: Duration = Duration::from_millis(2);

/// A job: what to run for each piece.
type Job<'a> = &'a (dyn Fn(usize) + Sync);

/// The job word's fields: a job's generation (24 bits), its piece count and the threads
/// that share it (20 bits each).
const FIELD: u32 = 20;
const MASK: u64 = (1 << FIELD) - 1;
const GENERATIONS: u64 = 1 << 24;

fn generation(word: u64) -> u64 {
    word >> (2 * FIELD)
}

fn count(word: u64) -> u64 {
    (word >> FIELD) & MASK
}

fn threads(word: u64) -> u64 {
    word & MASK
}

/// What the caller and the helpers share.
struct Shared {
    /// The current job's generation, piece count and threads (see [`FIELD`]).
    word: AtomicU64,
    /// The current job (a pointer to the caller's [`Job`]): valid while a piece of it is not
    /// done.
    job: AtomicPtr<Job<'static>>,
    /// Pieces of the current job done.
    done: AtomicUsize,
    /// Helpers asleep or going to sleep.
    sleepers: AtomicUsize,
    /// A piece of the current job panicked.
    panicked: AtomicBool,
}

impl Shared {
    /// Runs the pieces of job `word` that are thread `thread`'s, then counts them done.
    fn work(&self, word: u64, thread: u64) {
        if thread >= threads(word).min(count(word)) {
            return;
        }
        // SAFETY: none of this thread's pieces of the job is done yet, so the caller is still
        // in `Team::run`, whose job this points to (see `job`).
        let job = unsafe { *self.job.load(Acquire) };
        let mut done = 0;
        for piece in (thread..count(word)).step_by(threads(word) as usize) {
            if catch_unwind(AssertUnwindSafe(|| job(piece as usize))).is_err() {
                self.panicked.store(true, Release);
            }
            done += 1;
        }
        self.done.fetch_add(done, Release);
    }
}

/// The caller's side of the team: the helpers and the last job's generation.
struct Team {
    shared: Arc<Shared>,
    helpers: Vec<Thread>,
    generation: u64,
}

/// The process's team, made on first use and grown to the threads asked for.
static TEAM: Mutex<Option<Team>> = Mutex::new(None);

/// Runs `f(0)`, …, `f(pieces - 1)`, each once, on this thread and as many helpers as rayon's
/// current pool has other threads (`RAYON_NUM_THREADS`) and the machine other cores (a
/// spinning helper without a core of its own would only stand in the way), and returns when
/// all are done: piece `p` on thread `p % threads`, this one being thread 0. Callers from
/// different threads take turns.
pub(crate) fn for_each(pieces: usize, f: &(dyn Fn(usize) + Sync)) {
    static CORES: OnceLock<usize> = OnceLock::new();
    let cores = *CORES.get_or_init(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    for_each_with(rayon::current_num_threads().min(cores) - 1, pieces, f);
}

/// [`for_each`] with `helpers` helpers.
fn for_each_with(helpers: usize, pieces: usize, f: &(dyn Fn(usize) + Sync)) {
    if helpers == 0 || pieces <= 1 {
        (0..pieces).for_each(f);
        return;
    }
    let mut team = TEAM.lock().unwrap_or_else(PoisonError::into_inner);
    team.get_or_insert_with(Team::new).run(pieces, helpers, f);
}

impl Team {
    fn new() -> Self {
        Self {
            shared: Arc::new(Shared {
                word: AtomicU64::new(0),
                job: AtomicPtr::new(std::ptr::null_mut()),
                done: AtomicUsize::new(0),
                sleepers: AtomicUsize::new(0),
                panicked: AtomicBool::new(false),
            }),
            helpers: Vec::new(),
            generation: 0,
        }
    }

    /// [`for_each`] with `helpers` helpers, made if the team has fewer.
    fn run(&mut self, pieces: usize, helpers: usize, f: Job) {
        assert!(
            (pieces as u64) < MASK,
            "{pieces} pieces: too many for one job"
        );
        while self.helpers.len() < helpers {
            let (shared, index) = (Arc::clone(&self.shared), self.helpers.len());
            let spawned = std::thread::Builder::new()
                .name(format!("trainer-step-{}", index + 1))
                .spawn(move || help(&shared, index));
            match spawned {
                Ok(handle) => self.helpers.push(handle.thread().clone()),
                // No thread to be had: the team works with those it has.
                Err(_) => break,
            }
        }
        let s = &*self.shared;
        let threads = 1 + helpers.min(self.helpers.len());
        // The generation moves on (never 0, which helpers start from having seen).
        self.generation = self.generation % (GENERATIONS - 1) + 1;
        s.job.store((&raw const f).cast_mut().cast(), Release);
        s.done.store(0, Relaxed);
        s.panicked.store(false, Relaxed);
        let word = self.generation << (2 * FIELD) | (pieces as u64) << FIELD | threads as u64;
        s.word.store(word, SeqCst);
        if s.sleepers.load(SeqCst) > 0 {
            for helper in &self.helpers {
                helper.unpark();
            }
        }
        s.work(word, 0);
        // Every piece must be done before `f` goes out of scope, whatever happened.
        // Spin, then let the machine run something else between looks (a helper the
        // system has taken its core from, say).
        let mut looks = 0u32;
        while s.done.load(Acquire) < pieces {
            looks = looks.saturating_add(1);
            if looks < 1 << 14 {
                std::hint::spin_loop();
            } else {
                std::thread::yield_now();
            }
        }
        if s.panicked.load(Acquire) {
            resume_unwind(Box::new("a piece of a parallel step panicked"));
        }
    }
}

/// A helper's life: wait for a job (spinning, then asleep), run its pieces of it (none if
/// the job has fewer threads than this helper's number), again.
fn help(shared: &Shared, index: usize) {
    let mut seen = 0;
    loop {
        let mut since = Instant::now();
        let mut spins = 0u32;
        let word = loop {
            let word = shared.word.load(Acquire);
            if generation(word) != seen {
                break word;
            }
            std::hint::spin_loop();
            spins = spins.wrapping_add(1);
            if spins.is_multiple_of(256) && since.elapsed() > SPIN {
                shared.sleepers.fetch_add(1, SeqCst);
                if generation(shared.word.load(SeqCst)) == seen {
                    std::thread::park();
                }
                shared.sleepers.fetch_sub(1, SeqCst);
                since = Instant::now();
            }
        };
        seen = generation(word);
        shared.work(word, 1 + index as u64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicU32;

    /// Every piece runs exactly once, on one thread or several, jobs after jobs (helpers
    /// asleep in between included), and from several callers at once.
    #[test]
    fn every_piece_runs_once() {
        let callers: Vec<_> = (0..3)
            .map(|caller| {
                std::thread::spawn(move || {
                    let pool = rayon::ThreadPoolBuilder::new()
                        .num_threads(1 + caller)
                        .build()
                        .unwrap();
                    pool.install(|| {
                        for (job, pieces) in [0, 1, 2, 7, 64, 1000, 3].into_iter().enumerate() {
                            let runs: Vec<AtomicU32> =
                                (0..pieces).map(|_| AtomicU32::new(0)).collect();
                            for_each(pieces, &|p| {
                                runs[p].fetch_add(1, Relaxed);
                            });
                            assert!(runs.iter().all(|r| r.load(Relaxed) == 1), "job {job}");
                            if job == 4 {
                                std::thread::sleep(SPIN * 3);
                            }
                        }
                    })
                })
            })
            .collect();
        for caller in callers {
            caller.join().unwrap();
        }
    }

    /// A job for fewer threads than the team has runs each piece once: the helpers past the
    /// job's threads take no part (counted after the helpers have had time to finish
    /// anything they started).
    #[test]
    fn helpers_past_a_jobs_threads_take_no_part() {
        for_each_with(3, 8, &|_| ());
        let total = AtomicU32::new(0);
        let count = |_| {
            total.fetch_add(1, Relaxed);
        };
        for _ in 0..300 {
            for_each_with(1, 64, &count);
        }
        std::thread::sleep(Duration::from_millis(50));
        assert_eq!(total.load(Relaxed), 300 * 64);
    }

    /// A piece that panics makes the caller panic, after every other piece has run; the
    /// team works afterwards.
    #[test]
    fn a_panicking_piece_panics_the_caller() {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(2)
            .build()
            .unwrap();
        pool.install(|| {
            let runs = AtomicU32::new(0);
            let result = catch_unwind(AssertUnwindSafe(|| {
                for_each(50, &|p| {
                    runs.fetch_add(1, Relaxed);
                    assert_ne!(p, 17, "piece 17 fails");
                })
            }));
            assert!(result.is_err());
            assert_eq!(runs.load(Relaxed), 50);
            let again = AtomicU32::new(0);
            for_each(10, &|_| {
                again.fetch_add(1, Relaxed);
            });
            assert_eq!(again.load(Relaxed), 10);
        });
    }
}
