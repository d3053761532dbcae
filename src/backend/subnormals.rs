//! Subnormal floats flushed to zero on the threads that compute, and nowhere else.

/// Runs `work` with subnormal floats flushed to zero: on a thread of a pool kept for it, whose
/// threads set flush-to-zero when they start and never run anything else, so burn's CPU
/// kernels that `work` spreads over rayon (burn-flex and ndarray use the pool they are called
/// from) run there too. The calling thread's floating-point mode never changes, nor does any
/// thread outside this pool. Nested calls run in place.
///
/// Why: Adam keeps, for every weight, running means of the gradient and its square that
/// decay by 0.9 and 0.999 a step; for weights whose gradient falls to zero (a dead ReLU) they
/// decay into the subnormal range, where x86 arithmetic takes a microcode slow path of the
/// order of a hundred times slower. The article's run spent about a third of its time there.
/// TensorFlow flushes subnormals in its CPU threads for the same reason, and GPUs flush them in
/// most kernels.
///
/// Why it is sound in practice: Rust and LLVM assume the default floating-point mode, so a
/// subnormal result the compiler folds at build time is kept where the same operation at run
/// time gives zero. That difference is confined to magnitudes below 1.2e-38 (f32) and to the
/// code that runs on these threads: `trainer`'s training, evaluation and classification and
/// the burn kernels they call, which compute only tensor values. No length, index, allocation
/// or branch that memory safety rests on is computed from such a float there; an index
/// computed from a float (an argmax) compares values, and flushing below 1.2e-38 cannot
/// reorder values apart from ties at zero. Only flush-to-zero is set, not denormals-are-zero:
/// it keeps the speed (README, "Subnormals") and leaves subnormal inputs read as they are.
/// tests/it/cli.rs checks that a run's results are the same with and without it where no
/// subnormal arises.
pub fn with_subnormals_flushed<R: Send>(work: impl FnOnce() -> R + Send) -> R {
    static POOL: std::sync::OnceLock<Option<rayon::ThreadPool>> = std::sync::OnceLock::new();
    // Decided once per process: no pool at all when the flush is turned off.
    let pool = POOL.get_or_init(|| {
        if !flush_subnormals() {
            return None;
        }
        let built = rayon::ThreadPoolBuilder::new()
            .thread_name(|i| format!("trainer-compute-{i}"))
            .start_handler(|_| fp_control::flush_to_zero())
            .build();
        match built {
            Ok(pool) => Some(pool),
            Err(e) => {
                tracing::warn!("no thread pool for flush-to-zero ({e}); subnormals are kept");
                None
            }
        }
    });
    match pool {
        Some(pool) => pool.install(work),
        None => work(),
    }
}

/// Whether to flush subnormals: yes, unless `TRAINER_SUBNORMALS=keep` asks for IEEE
/// arithmetic throughout (for measuring what flushing changes).
fn flush_subnormals() -> bool {
    std::env::var("TRAINER_SUBNORMALS").as_deref() != Ok("keep")
}

/// The thread's floating-point control register: flush-to-zero on.
mod fp_control {
    /// Sets flush-to-zero on the current thread (MXCSR bit 15 on x86-64, FPCR bit 24 on
    /// AArch64; nothing elsewhere). Called once, when a compute thread starts.
    pub fn flush_to_zero() {
        #[cfg(target_arch = "x86_64")]
        {
            // MXCSR bit 15, flush-to-zero (bit 6, denormals-are-zero, stays off).
            const FTZ: u32 = 1 << 15;
            let mut csr: u32 = 0;
            // SAFETY: stores MXCSR into a local, then loads it back with only the flush-to-zero
            // bit added; see `with_subnormals_flushed` for why that mode is sound here.
            unsafe {
                std::arch::asm!("stmxcsr [{}]", in(reg) &mut csr, options(nostack, preserves_flags));
                csr |= FTZ;
                std::arch::asm!("ldmxcsr [{}]", in(reg) &csr, options(nostack, preserves_flags));
            }
        }
        #[cfg(target_arch = "aarch64")]
        // SAFETY: reads FPCR and writes it back with only the flush-to-zero bit added.
        unsafe {
            let fpcr: u64;
            std::arch::asm!("mrs {}, fpcr", out(reg) fpcr, options(nomem, nostack, preserves_flags));
            std::arch::asm!("msr fpcr, {}", in(reg) fpcr | (1 << 24), options(nomem, nostack, preserves_flags));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Inside `with_subnormals_flushed`, subnormal results flush to zero, in the work and in
    /// the rayon jobs it spawns; outside, on the caller's thread, they never do.
    #[test]
    fn subnormals_flush_inside_and_only_inside() {
        // Read through black_box so the compiler cannot fold the product.
        let tiny = std::hint::black_box(1e-30_f32);
        let scale = std::hint::black_box(1e-10_f32);
        assert!((tiny * scale).is_subnormal());
        let (inside, spawned) = with_subnormals_flushed(|| {
            let spawned = rayon::join(|| std::hint::black_box(tiny * scale), || 0.0).0;
            (std::hint::black_box(tiny * scale), spawned)
        });
        if cfg!(any(target_arch = "x86_64", target_arch = "aarch64")) {
            assert_eq!((inside, spawned), (0.0, 0.0));
            // Flush-to-zero only: a subnormal input is read as it is.
            let sub = std::hint::black_box(f32::from_bits(1));
            let read = with_subnormals_flushed(|| std::hint::black_box(sub) > 0.0);
            assert!(read);
        }
        assert!(std::hint::black_box(tiny * scale).is_subnormal());
        assert!(
            rayon::join(|| std::hint::black_box(tiny * scale), || 0.0)
                .0
                .is_subnormal()
        );
    }
}
