//! Matrix products on the CPU for the crate's own kernels (the fused MLP step, the CNN's
//! block): the instruction sets found at run time, `gemm` for any product, and a product in
//! vector registers for the shapes of small dense layers. It uses nothing of the crate.
//!
//! `gemm` (the crate burn-flex multiplies with) blocks for the cache and packs both operands
//! on every call; for the article's MLP, whose first layer is `784 × 30`, that is paid on
//! small products (the call's dispatch alone was 7 % of a batch-256 step's samples), and its
//! x86 kernels stop at AVX2 (AVX-512 needs its nightly feature).
//! [`broadcast_product`] multiplies in place instead: each output row's columns in vector
//! registers (the last one masked), the left operand's numbers broadcast one by one, read
//! through any strides (a weight gradient reads the batch transposed without a copy).

/// The vector instructions a kernel uses, found at run time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Isa {
    /// x86-64 with AVX-512 (16 floats a register).
    #[cfg(target_arch = "x86_64")]
    Avx512,
    /// x86-64 with AVX2 and FMA (8 floats a register).
    #[cfg(target_arch = "x86_64")]
    Avx2,
    /// Any CPU: element by element (the compiler vectorises what it can), or `gemm`.
    Any,
}

impl Isa {
    /// The widest of the sets this CPU has (AVX-512 only beside AVX2 and FMA: its code
    /// finishes short tiles with theirs).
    pub(crate) fn detect() -> Self {
        #[cfg(target_arch = "x86_64")]
        {
            use std::arch::is_x86_feature_detected as has;
            if has!("avx2") && has!("fma") {
                return if has!("avx512f") {
                    Isa::Avx512
                } else {
                    Isa::Avx2
                };
            }
        }
        Isa::Any
    }

    /// This CPU's sets, narrowest first (for tests that compare them).
    #[cfg(test)]
    pub(crate) fn all_here() -> Vec<Self> {
        match Isa::detect() {
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 => vec![Isa::Avx2, Isa::Avx512],
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => vec![Isa::Avx2],
            Isa::Any => Vec::new(),
        }
    }
}

/// `out = lhs · rhs` for row-major `lhs` `[m, k]` and `rhs` `[k, n]` (`rhs_t`: `rhs` given as
/// `[n, k]`, read transposed), `out` `[m, n]` row-major, by `gemm` on this thread.
pub(crate) fn product(
    out: &mut [f32],
    lhs: &[f32],
    rhs: &[f32],
    m: usize,
    k: usize,
    n: usize,
    rhs_t: bool,
) {
    assert!(out.len() >= m * n && lhs.len() >= m * k && rhs.len() >= k * n);
    let rhs_strides = if rhs_t { (k, 1) } else { (1, n) };
    // SAFETY: the slices hold `m × n`, `m × k` and `k × n` numbers (asserted), laid out as
    // the strides say.
    unsafe { strided_product(out, lhs, (1, k), rhs, rhs_strides, m, k, n) }
}

/// `out = lhs · rhs` by gemm on this thread: `out` `[m, n]` row-major, `lhs` `[m, k]` and
/// `rhs` `[k, n]` each given by its (column, row) strides.
///
/// # Safety
/// `lhs` and `rhs` hold every element their strides reach for `m`, `k` and `n`, and `out`
/// holds `m × n` numbers.
#[allow(clippy::too_many_arguments)]
unsafe fn strided_product(
    out: &mut [f32],
    lhs: &[f32],
    (lhs_cs, lhs_rs): (usize, usize),
    rhs: &[f32],
    (rhs_cs, rhs_rs): (usize, usize),
    m: usize,
    k: usize,
    n: usize,
) {
    // SAFETY: the caller's promise; `out` is borrowed mutably, so nothing else reads or
    // writes it.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            out.as_mut_ptr(),
            1,
            n as isize,
            false,
            lhs.as_ptr(),
            lhs_cs as isize,
            lhs_rs as isize,
            rhs.as_ptr(),
            rhs_cs as isize,
            rhs_rs as isize,
            0.0,
            1.0,
            false,
            false,
            false,
            gemm::Parallelism::None,
        );
    }
}

/// `out = a · b` on this thread: `out` `[m, n]` and `b` `[k, n]` row-major, `a` `[m, k]` read
/// at `a[p · a_rs + e · a_cs]` (`(k, 1)`: row-major; `(1, m)`: given transposed).
///
/// With AVX-512 or AVX2 each output's sum runs over `e` in order, one fused multiply-add
/// after another from zero, in vector registers: tiles of up to 8 rows (4 with AVX2) and 3
/// vectors of columns (2), the last vector of a row masked, so the bits are the same on both
/// and do not depend on how a caller splits rows between threads. Other CPUs take `gemm`.
#[allow(clippy::too_many_arguments)]
pub(crate) fn broadcast_product(
    out: &mut [f32],
    a: &[f32],
    (a_rs, a_cs): (usize, usize),
    b: &[f32],
    m: usize,
    k: usize,
    n: usize,
    isa: Isa,
) {
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        out[..m * n].fill(0.0);
        return;
    }
    assert!(out.len() >= m * n && b.len() >= k * n);
    assert!(a.len() > (m - 1) * a_rs + (k - 1) * a_cs);
    match isa {
        // SAFETY: `Isa::detect` found the instructions; the slices hold every element the
        // strides reach (asserted).
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 => unsafe { avx512::product(out, a, (a_rs, a_cs), b, m, k, n) },
        // SAFETY: as above.
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => unsafe { avx2::product(out, a, (a_rs, a_cs), b, m, k, n) },
        // SAFETY: as above.
        Isa::Any => unsafe { strided_product(out, a, (a_cs, a_rs), b, (1, n), m, k, n) },
    }
}

/// Asks the CPU to start bringing the cache line of `at` into its cache (any address: a
/// prefetch reads nothing the program sees). Nothing on other CPUs.
#[inline(always)]
pub(crate) fn prefetch<T>(at: *const T) {
    // SAFETY: a prefetch has no effect on memory; any address is allowed.
    #[cfg(target_arch = "x86_64")]
    unsafe {
        std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(at.cast())
    };
    #[cfg(not(target_arch = "x86_64"))]
    let _ = at;
}

/// [`broadcast_product`] in vector registers, for one x86 instruction set: the module that
/// invokes it defines `LANES`, `ROWS` (rows a tile), `VECTORS` (vectors of columns a tile),
/// `Mask` and `FULL` (every lane), `zero`, `broadcast`, `fmadd`, `mask` (the first `used`
/// lanes), `load` and `store` (masked) for it.
#[cfg(target_arch = "x86_64")]
macro_rules! broadcast_product_in {
    ($features:literal) => {
        /// How many `e` ahead [`tile`] asks for `a`'s numbers.
        const AHEAD: usize = 8;

        /// [`super::broadcast_product`] by groups of up to `VECTORS` vectors of columns, each
        /// by tiles of `ROWS` rows, then 4, 2 and 1.
        ///
        /// # Safety
        /// The CPU has the module's instructions; `out` holds `m × n` numbers, `b` `k × n`,
        /// `a` every element its strides reach.
        #[target_feature(enable = $features)]
        pub(super) unsafe fn product(
            out: &mut [f32],
            a: &[f32],
            strides: (usize, usize),
            b: &[f32],
            m: usize,
            k: usize,
            n: usize,
        ) {
            let mut j = 0;
            while j < n {
                let width = (n - j).min(VECTORS * LANES);
                let v = width.div_ceil(LANES);
                let last = mask(width - (v - 1) * LANES);
                let (out, b) = (&mut out[j..], &b[j..]);
                // SAFETY: the caller's promise, for the columns from `j`.
                unsafe {
                    match v {
                        1 => tiles::<1>(out, a, strides, b, m, k, n, last),
                        2 if VECTORS > 2 => tiles::<2>(out, a, strides, b, m, k, n, last),
                        _ => tiles::<VECTORS>(out, a, strides, b, m, k, n, last),
                    }
                }
                j += width;
            }
        }

        /// Every row of one group of `V` vectors of columns (from `out` and `b`'s starts),
        /// the last vector's lanes masked by `last`.
        #[target_feature(enable = $features)]
        #[allow(clippy::too_many_arguments)]
        unsafe fn tiles<const V: usize>(
            out: &mut [f32],
            a: &[f32],
            (a_rs, a_cs): (usize, usize),
            b: &[f32],
            m: usize,
            k: usize,
            n: usize,
            last: Mask,
        ) {
            let mut p = 0;
            let (o, b) = (out.as_mut_ptr(), b.as_ptr());
            let s = (a_rs, a_cs);
            // SAFETY: tile `p` reads rows p.. of `a` and writes rows p.. of `out`, all within
            // the caller's promise.
            unsafe {
                while m - p >= ROWS {
                    tile::<ROWS, V>(o.add(p * n), a.as_ptr().add(p * a_rs), s, b, k, n, last);
                    p += ROWS;
                }
                if ROWS > 4 && m - p >= 4 {
                    tile::<4, V>(o.add(p * n), a.as_ptr().add(p * a_rs), s, b, k, n, last);
                    p += 4;
                }
                if m - p >= 2 {
                    tile::<2, V>(o.add(p * n), a.as_ptr().add(p * a_rs), s, b, k, n, last);
                    p += 2;
                }
                if m - p >= 1 {
                    tile::<1, V>(o.add(p * n), a.as_ptr().add(p * a_rs), s, b, k, n, last);
                }
            }
        }

        /// `P` rows × `V` vectors of sums in registers: for each `e`, `b`'s row `e` loaded
        /// once, each row's `a` broadcast and multiplied into it; stored at the end.
        #[target_feature(enable = $features)]
        #[inline]
        #[allow(clippy::too_many_arguments)]
        unsafe fn tile<const P: usize, const V: usize>(
            out: *mut f32,
            a: *const f32,
            (a_rs, a_cs): (usize, usize),
            b: *const f32,
            k: usize,
            n: usize,
            last: Mask,
        ) {
            let mut acc = [[zero(); V]; P];
            for e in 0..k {
                let mut row = [zero(); V];
                // SAFETY (this block): row `e` of `b` holds the group's columns (the last
                // vector's masked lanes are not read); `a`'s rows p < P at column `e` are
                // within the caller's promise.
                unsafe {
                    let at = b.add(e * n);
                    for (v, r) in row.iter_mut().enumerate() {
                        *r = load(at.add(v * LANES), if v + 1 == V { last } else { FULL });
                    }
                    let ae = a.add(e * a_cs);
                    // Read a few `e` ahead: a transposed `a` (a weight gradient's batch) is a
                    // row of the batch an `e`, too far apart for the CPU's own prefetchers.
                    super::prefetch(ae.wrapping_add(AHEAD * a_cs));
                    for (p, acc) in acc.iter_mut().enumerate() {
                        let x = broadcast(*ae.add(p * a_rs));
                        for (s, r) in acc.iter_mut().zip(row) {
                            *s = fmadd(x, r, *s);
                        }
                    }
                }
            }
            for (p, acc) in acc.iter().enumerate() {
                for (v, &s) in acc.iter().enumerate() {
                    // SAFETY: row `p` of `out` holds the group's columns (masked lanes are
                    // not written).
                    unsafe {
                        store(
                            out.add(p * n + v * LANES),
                            if v + 1 == V { last } else { FULL },
                            s,
                        )
                    };
                }
            }
        }
    };
}

/// [`broadcast_product`] in AVX-512 registers (16 floats; 8 rows × 3 vectors of sums).
#[cfg(target_arch = "x86_64")]
mod avx512 {
    use std::arch::x86_64::{
        __m512, __mmask16, _mm512_fmadd_ps, _mm512_mask_storeu_ps, _mm512_maskz_loadu_ps,
        _mm512_set1_ps, _mm512_setzero_ps,
    };

    const LANES: usize = 16;
    const ROWS: usize = 8;
    const VECTORS: usize = 3;
    type Mask = __mmask16;
    const FULL: Mask = u16::MAX;

    #[target_feature(enable = "avx512f")]
    #[inline]
    fn zero() -> __m512 {
        _mm512_setzero_ps()
    }

    #[target_feature(enable = "avx512f")]
    #[inline]
    fn broadcast(x: f32) -> __m512 {
        _mm512_set1_ps(x)
    }

    #[target_feature(enable = "avx512f")]
    #[inline]
    fn fmadd(a: __m512, b: __m512, c: __m512) -> __m512 {
        _mm512_fmadd_ps(a, b, c)
    }

    /// The first `used` (1–16) lanes.
    fn mask(used: usize) -> Mask {
        (u32::MAX >> (32 - used)) as Mask
    }

    /// # Safety
    /// The lanes `mask` selects are readable at `at`.
    #[target_feature(enable = "avx512f")]
    #[inline]
    unsafe fn load(at: *const f32, mask: Mask) -> __m512 {
        // SAFETY: the caller's promise; masked lanes are not read.
        unsafe { _mm512_maskz_loadu_ps(mask, at) }
    }

    /// # Safety
    /// The lanes `mask` selects are writable at `at`.
    #[target_feature(enable = "avx512f")]
    #[inline]
    unsafe fn store(at: *mut f32, mask: Mask, v: __m512) {
        // SAFETY: the caller's promise; masked lanes are not written.
        unsafe { _mm512_mask_storeu_ps(at, mask, v) }
    }

    broadcast_product_in!("avx512f,avx2,fma");
}

/// [`broadcast_product`] in AVX2 registers (8 floats; 4 rows × 2 vectors of sums).
#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::{
        __m256, __m256i, _mm256_fmadd_ps, _mm256_maskload_ps, _mm256_maskstore_ps, _mm256_set1_ps,
        _mm256_setr_epi32, _mm256_setzero_ps,
    };

    const LANES: usize = 8;
    const ROWS: usize = 4;
    const VECTORS: usize = 2;
    type Mask = __m256i;
    // SAFETY: any bits are an `__m256i`; all ones selects every lane.
    const FULL: Mask = unsafe { std::mem::transmute::<[i32; 8], __m256i>([-1; 8]) };

    #[target_feature(enable = "avx2,fma")]
    #[inline]
    fn zero() -> __m256 {
        _mm256_setzero_ps()
    }

    #[target_feature(enable = "avx2,fma")]
    #[inline]
    fn broadcast(x: f32) -> __m256 {
        _mm256_set1_ps(x)
    }

    #[target_feature(enable = "avx2,fma")]
    #[inline]
    fn fmadd(a: __m256, b: __m256, c: __m256) -> __m256 {
        _mm256_fmadd_ps(a, b, c)
    }

    /// The first `used` (1–8) lanes.
    #[target_feature(enable = "avx2,fma")]
    fn mask(used: usize) -> Mask {
        let on = |lane: i32| -i32::from((lane as usize) < used);
        _mm256_setr_epi32(on(0), on(1), on(2), on(3), on(4), on(5), on(6), on(7))
    }

    /// # Safety
    /// The lanes `mask` selects are readable at `at`.
    #[target_feature(enable = "avx2,fma")]
    #[inline]
    unsafe fn load(at: *const f32, mask: Mask) -> __m256 {
        // SAFETY: the caller's promise; masked lanes are not read.
        unsafe { _mm256_maskload_ps(at, mask) }
    }

    /// # Safety
    /// The lanes `mask` selects are writable at `at`.
    #[target_feature(enable = "avx2,fma")]
    #[inline]
    unsafe fn store(at: *mut f32, mask: Mask, v: __m256) {
        // SAFETY: the caller's promise; masked lanes are not written.
        unsafe { _mm256_maskstore_ps(at, mask, v) }
    }

    broadcast_product_in!("avx2,fma");
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::{RngExt, SeedableRng};

    /// [`broadcast_product`]'s sums element by element: one fused multiply-add after another.
    #[allow(clippy::too_many_arguments)]
    fn each(
        a: &[f32],
        (a_rs, a_cs): (usize, usize),
        b: &[f32],
        m: usize,
        k: usize,
        n: usize,
    ) -> Vec<f32> {
        let mut out = vec![0f32; m * n];
        for p in 0..m {
            for j in 0..n {
                let mut s = 0f32;
                for e in 0..k {
                    s = a[p * a_rs + e * a_cs].mul_add(b[e * n + j], s);
                }
                out[p * n + j] = s;
            }
        }
        out
    }

    /// On every instruction set this CPU has, for row counts through every tile and tail,
    /// column counts through every vector group and mask, and the left operand row-major or
    /// transposed: the element-by-element sums' bits; nothing written past the output; and
    /// `gemm` (other CPUs) the same to float rounding.
    #[test]
    fn vector_products_give_the_element_by_element_sums() {
        let mut rng = StdRng::seed_from_u64(4);
        let isas = Isa::all_here();
        println!("products checked on {isas:?}");
        for m in [1, 2, 3, 4, 5, 7, 8, 9, 15, 16, 17, 30, 32] {
            for n in [
                1, 5, 8, 10, 15, 16, 17, 24, 30, 31, 32, 33, 40, 48, 49, 64, 97,
            ] {
                for (k, transposed) in [(1, false), (7, true), (30, false), (45, true)] {
                    let a: Vec<f32> = (0..m * k).map(|_| rng.random_range(-1.0..1.0)).collect();
                    let b: Vec<f32> = (0..k * n).map(|_| rng.random_range(-1.0..1.0)).collect();
                    let strides = if transposed { (1, m) } else { (k, 1) };
                    let want = each(&a, strides, &b, m, k, n);
                    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                    for isa in isas.iter().copied().chain([Isa::Any]) {
                        let mut out = vec![f32::NAN; m * n + 3];
                        broadcast_product(&mut out, &a, strides, &b, m, k, n, isa);
                        let what = format!("{isa:?}: {m}x{k} by {k}x{n}, transposed {transposed}");
                        assert!(
                            out[m * n..].iter().all(|v| v.is_nan()),
                            "{what}: wrote past"
                        );
                        if isa == Isa::Any {
                            for (o, w) in out.iter().zip(&want) {
                                assert!((o - w).abs() <= 1e-5 * (1.0 + w.abs()), "{what}");
                            }
                        } else {
                            assert_eq!(bits(&out[..m * n]), bits(&want), "{what}");
                        }
                    }
                }
            }
        }
    }
}
