//! The CNN's block — 3×3 convolution (padding 1, stride 1), bias, ReLU and 2×2 max-pooling
//! (stride 2) — as one operation of this crate on the CPU backend (flex, with and without
//! autodiff), with its backward pass; other backends, and convolutions of other shapes, take
//! burn's `conv2d`, `relu` and `max_pool2d`.
//!
//! burn runs the block as four operations: flex's convolution makes its input NHWC, builds
//! im2col tiles, multiplies and hands back an NHWC result seen as NCHW; ReLU and pooling each
//! read and write every activation (the pooling after a copy to NCHW); the backward pass runs the ReLU mask and the
//! pooling's scatter, then two dense products as large as the forward one (weight gradient and
//! input gradient) over gradients of which at most a quarter are not zero (the pooling passes
//! one of four on, ReLU drops more). Here:
//! - activations stay NHWC from block to block (the result is NHWC, seen as NCHW through its
//!   strides; the next block reads it through them);
//! - the forward pass works on a few images at a time, so their im2col rows stay in the
//!   core's cache between being written and being multiplied (one `gemm` call per chunk), and
//!   adds the bias, applies ReLU and pools them in the same pass; rows the pooling drops (the
//!   last row and column of an odd side) are not computed;
//! - the backward pass visits only the gradients that are not zero: each is one output
//!   position and channel, whose weight gradient is its 3×3 input patch scaled by it and whose
//!   input gradient is the channel's 3×3 filter scaled by it (three contiguous runs of
//!   3 × input channels each in NHWC), a quarter or less of the dense products' work; they
//!   are listed first, then summed in vector registers (AVX-512 or AVX2 found at run time),
//!   per image and channel for the weights, per pooling window and position of the maximum
//!   for the input;
//! - results are the same whatever the number of threads: work is split into chunks of images
//!   fixed by the shapes, and per-chunk sums are added in chunk order.
//!
//! Upstream this would be a fused module operation in burn's backend traits (convolution, bias,
//! ReLU, max-pool, with a default that composes burn's four), implemented by burn-flex as here:
//! burn runs each operation as it comes, and its autodiff cannot know at the convolution that
//! the gradient came through a max-pool.

use std::sync::Arc;

use burn::nn::PaddingConfig2d;
use burn::nn::conv::Conv2d;
use burn::tensor::ops::MaxPoolOptions;
use burn::tensor::{DType, Shape, Tensor};
use burn_autodiff::Autodiff;
use burn_autodiff::checkpoint::base::Checkpointer;
use burn_autodiff::checkpoint::strategy::NoCheckpointing;
use burn_autodiff::grads::Gradients;
use burn_autodiff::ops::{Backward, Ops, OpsKind};
use burn_backend::AutodiffBackend;
use burn_flex::{Flex, FlexTensor, Layout};
use rayon::prelude::*;

use crate::product::{Isa, product};

/// `from` value of an output whose maximum was not above zero: ReLU passes no gradient.
const DEAD: u8 = 4;
/// im2col floats a forward chunk aims at (256 KiB: the matrix stays in a core's L2 cache).
const FORWARD_CHUNK_FLOATS: usize = 64 * 1024;
/// Images per backward chunk (each chunk sums its own weight gradient).
const BACKWARD_CHUNK_IMAGES: usize = 8;

/// `relu(conv(x))` max-pooled by 2×2 windows with stride 2: `x` `[n, c_in, h, w]` to
/// `[n, c_out, h / 2, w / 2]` (an odd last row or column is left out, as burn's `MaxPool2d`
/// does). The crate's fused operation where it applies (flex, f32, a 3×3 convolution with
/// stride 1, padding 1, no dilation or groups, and a bias), burn's operations otherwise.
pub fn conv_relu_pool(conv: &Conv2d, x: Tensor<4>) -> Tensor<4> {
    let padded_by_one = match conv.padding {
        PaddingConfig2d::Same => true,
        PaddingConfig2d::Explicit(t, l, b, r) => [t, l, b, r] == [1; 4],
        PaddingConfig2d::Valid => false,
    };
    let fits = conv.kernel_size == [3, 3]
        && conv.stride == [1, 1]
        && conv.dilation == [1, 1]
        && conv.groups == 1
        && padded_by_one;
    if fits && let Some(bias) = &conv.bias {
        let (weight, bias) = (conv.weight.val(), bias.val());
        if let Some(y) = fused_autodiff(&x, &weight, &bias).or_else(|| fused(&x, &weight, &bias)) {
            return y;
        }
    }
    burn::tensor::module::max_pool2d(
        burn::tensor::activation::relu(conv.forward(x)),
        MaxPoolOptions::new([2, 2]),
    )
}

/// The fused block on `Autodiff<Flex>`, recorded in the autodiff graph; `None` on other
/// backends or types.
fn fused_autodiff(x: &Tensor<4>, weight: &Tensor<4>, bias: &Tensor<1>) -> Option<Tensor<4>> {
    // The first block's input, the images, may come without autodiff (nothing to track).
    let x = match x.clone().try_into_primitive::<Autodiff<Flex>>() {
        Ok(x) => x,
        Err(_) => Autodiff::<Flex>::from_inner(x.clone().try_into_primitive::<Flex>().ok()?),
    };
    let weight = weight.clone().try_into_primitive::<Autodiff<Flex>>().ok()?;
    let bias = bias.clone().try_into_primitive::<Autodiff<Flex>>().ok()?;
    if [&x, &weight, &bias]
        .iter()
        .any(|t| t.primitive().dtype() != DType::F32)
    {
        return None;
    }
    let (x, x_node) = x.into_parts();
    let (weight, weight_node) = weight.into_parts();
    let (bias, bias_node) = bias.into_parts();
    let block = Block::new(&x, &weight, &bias)?;
    let out = match ConvReluPool
        .prepare::<NoCheckpointing>([x_node, weight_node, bias_node])
        .compute_bound()
        .stateful()
    {
        OpsKind::Tracked(prep) => {
            let (out, from) = block.forward();
            prep.finish(
                Saved {
                    block: Arc::new(block),
                    from: Arc::new(from),
                },
                out,
            )
        }
        OpsKind::UnTracked(prep) => prep.finish(block.forward().0),
    };
    Some(Tensor::from_primitive::<Autodiff<Flex>>(out))
}

/// The fused block on `Flex` without autodiff (evaluation); `None` on other backends or types.
fn fused(x: &Tensor<4>, weight: &Tensor<4>, bias: &Tensor<1>) -> Option<Tensor<4>> {
    let x = x.clone().try_into_primitive::<Flex>().ok()?;
    let weight = weight.clone().try_into_primitive::<Flex>().ok()?;
    let bias = bias.clone().try_into_primitive::<Flex>().ok()?;
    if [&x, &weight, &bias].iter().any(|t| t.dtype() != DType::F32) {
        return None;
    }
    let block = Block::new(&x, &weight, &bias)?;
    Some(Tensor::from_primitive::<Flex>(block.forward().0))
}

/// Sizes of one block.
#[derive(Debug, Clone, Copy)]
struct Dims {
    n: usize,
    cin: usize,
    h: usize,
    w: usize,
    cout: usize,
}

impl Dims {
    /// Floats in one im2col row: a 3×3 patch of every input channel.
    fn k(&self) -> usize {
        9 * self.cin
    }

    /// The pooled output's height and width.
    fn pooled(&self) -> (usize, usize) {
        (self.h / 2, self.w / 2)
    }

    /// Floats in one image of the zero-padded input.
    fn padded_image(&self) -> usize {
        (self.h + 2) * (self.w + 2) * self.cin
    }

    /// Offset in the padded input of image `img`, padded row `y`, padded column `x`.
    fn padded_at(&self, img: usize, y: usize, x: usize) -> usize {
        ((img * (self.h + 2) + y) * (self.w + 2) + x) * self.cin
    }

    /// One image's pooling windows in order, from its outputs' `from` and gradient: each
    /// window's `c_out` of both, and its row and column.
    fn windows<'a>(
        &self,
        from: &'a [u8],
        grad: &'a [f32],
    ) -> impl Iterator<Item = (&'a [u8], &'a [f32], usize, usize)> + 'a {
        let (h2, w2) = self.pooled();
        let corners = (0..h2).flat_map(move |i| (0..w2).map(move |j| (i, j)));
        from.chunks_exact(self.cout)
            .zip(grad.chunks_exact(self.cout))
            .zip(corners)
            .map(|((from, grad), (i, j))| (from, grad, i, j))
    }
}

/// One block's operands, in the layouts its loops read: the input zero-padded NHWC, the
/// weights as `[c_out][kh][kw][c_in]` (a filter's rows are contiguous, as the input's patch
/// rows are), the bias.
#[derive(Debug)]
struct Block {
    dims: Dims,
    padded: Vec<f32>,
    filters: Vec<f32>,
    bias: Vec<f32>,
}

impl Block {
    /// The block's operands; `None` if their shapes do not fit together (burn's operations
    /// then say what is wrong).
    fn new(x: &FlexTensor, weight: &FlexTensor, bias: &FlexTensor) -> Option<Self> {
        let [n, cin, h, w] = dims4(x);
        let [cout, weight_cin, kh, kw] = dims4(weight);
        if [weight_cin, kh, kw] != [cin, 3, 3] || bias.layout().shape().as_slice() != [cout] {
            return None;
        }
        let dims = Dims { n, cin, h, w, cout };
        let padded = nhwc(x, 1);
        // [c_out, c_in, 3, 3] → [c_out][3][3][c_in]: the weights seen as [c_out, 3, 3, c_in].
        let filters = nhwc(weight, 0);
        let bias = strided_values(bias);
        Some(Self {
            dims,
            padded,
            filters,
            bias,
        })
    }

    /// The pooled output (NHWC, seen as NCHW) and, per output, where its maximum came from
    /// (0–3, row-major in the window; [`DEAD`] where it was not above zero).
    fn forward(&self) -> (FlexTensor, Vec<u8>) {
        let d = self.dims;
        let (h2, w2) = d.pooled();
        let per_image = h2 * w2 * d.cout;
        let images = (FORWARD_CHUNK_FLOATS / (4 * h2 * w2 * d.k()).max(1)).max(1);
        let mut out = vec![0f32; d.n * per_image];
        let mut from = vec![0u8; d.n * per_image];
        if per_image > 0 {
            out.par_chunks_mut(images * per_image)
                .zip(from.par_chunks_mut(images * per_image))
                .enumerate()
                .for_each(|(chunk, (out, from))| {
                    COLUMNS.with_borrow_mut(|(cols, pre)| {
                        self.forward_chunk(chunk * images, out, from, cols, pre)
                    })
                });
        }
        let shape = Shape::new([d.n, d.cout, h2, w2]);
        let strides = vec![
            per_image as isize,
            1,
            (w2 * d.cout) as isize,
            d.cout as isize,
        ];
        let out = FlexTensor::new(
            burn::tensor::Bytes::from_elems(out),
            Layout::new(shape, strides, 0),
            DType::F32,
        );
        (out, from)
    }

    /// Forward pass of the images from `first` on that `out` holds (NHWC pooled outputs):
    /// im2col of the rows the pooling reads (the four of each window together), one GEMM
    /// with the filters, then bias, ReLU and pooling.
    fn forward_chunk(
        &self,
        first: usize,
        out: &mut [f32],
        from: &mut [u8],
        cols: &mut Vec<f32>,
        pre: &mut Vec<f32>,
    ) {
        let d = self.dims;
        let (h2, w2) = d.pooled();
        let (k, run) = (d.k(), 3 * d.cin);
        let windows = out.len() / d.cout;
        let rows = 4 * windows;
        cols.resize(rows * k, 0.0);
        pre.resize(rows * d.cout, 0.0);
        for (window, cols) in cols.chunks_exact_mut(4 * k).enumerate() {
            let (img, i, j) = (first + window / (h2 * w2), window / w2 % h2, window % w2);
            for (q, row) in cols.chunks_exact_mut(k).enumerate() {
                let (y, x) = (2 * i + q / 2, 2 * j + q % 2);
                for (kh, dst) in row.chunks_exact_mut(run).enumerate() {
                    let at = d.padded_at(img, y + kh, x);
                    dst.copy_from_slice(&self.padded[at..at + run]);
                }
            }
        }
        product(pre, cols, &self.filters, rows, k, d.cout, true);
        for (window, (out, from)) in out
            .chunks_exact_mut(d.cout)
            .zip(from.chunks_exact_mut(d.cout))
            .enumerate()
        {
            let pre = &pre[4 * window * d.cout..4 * (window + 1) * d.cout];
            for c in 0..d.cout {
                let mut best = pre[c] + self.bias[c];
                let mut k = 0u8;
                for q in 1..4 {
                    let v = pre[q * d.cout + c] + self.bias[c];
                    if v > best {
                        best = v;
                        k = q as u8;
                    }
                }
                let alive = best > 0.0;
                // NaN passes on, as burn's ReLU lets it.
                out[c] = if alive || best.is_nan() { best } else { 0.0 };
                from[c] = if alive { k } else { DEAD };
            }
        }
    }
}

thread_local! {
    /// Each thread's im2col matrix and GEMM result, kept between chunks and steps. Nothing in
    /// a chunk calls into rayon, so a thread never takes up another chunk while it holds them.
    static COLUMNS: std::cell::RefCell<(Vec<f32>, Vec<f32>)> =
        const { std::cell::RefCell::new((Vec::new(), Vec::new())) };
}

/// What the backward pass needs: the block's operands and where each maximum came from.
#[derive(Debug, Clone)]
struct Saved {
    block: Arc<Block>,
    from: Arc<Vec<u8>>,
}

#[derive(Debug)]
struct ConvReluPool;

impl Backward<Flex, 3> for ConvReluPool {
    type State = Saved;

    fn backward(self, ops: Ops<Self::State, 3>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [x_node, weight_node, bias_node] = ops.parents;
        let grad = grads.consume::<Flex>(&ops.node);
        let g = backward(&ops.state, &grad, x_node.is_some());
        if let Some(node) = x_node
            && let Some(x) = g.x
        {
            grads.register::<Flex>(node.id, x);
        }
        if let Some(node) = weight_node {
            grads.register::<Flex>(node.id, g.weight);
        }
        if let Some(node) = bias_node {
            grads.register::<Flex>(node.id, g.bias);
        }
    }
}

/// The block's gradients.
struct Grads {
    x: Option<FlexTensor>,
    weight: FlexTensor,
    bias: FlexTensor,
}

/// Gradients of the block's input (if `want_x`), weights and bias from its output's gradient.
fn backward(saved: &Saved, grad: &FlexTensor, want_x: bool) -> Grads {
    let block = &saved.block;
    let d = block.dims;
    let (h2, w2) = d.pooled();
    let per_image = h2 * w2 * d.cout;
    let grad = nhwc(grad, 0);
    let chunks = d.n.div_ceil(BACKWARD_CHUNK_IMAGES);
    let k = d.k();
    let mut partial = vec![0f32; chunks * d.cout * (k + 1)];
    let mut gx = vec![0f32; if want_x { d.n * d.padded_image() } else { 0 }];
    let mut gx_chunks: Vec<Option<&mut [f32]>> = if want_x {
        let floats = (BACKWARD_CHUNK_IMAGES * d.padded_image()).max(1);
        gx.chunks_mut(floats).map(Some).collect()
    } else {
        (0..chunks).map(|_| None).collect()
    };
    if per_image > 0 {
        partial
            .par_chunks_mut(d.cout * (k + 1))
            .zip(gx_chunks.par_iter_mut())
            .enumerate()
            .for_each(|(chunk, (sums, gx))| {
                let first = chunk * BACKWARD_CHUNK_IMAGES;
                let last = (first + BACKWARD_CHUNK_IMAGES).min(d.n);
                let part = Part {
                    block,
                    from: &saved.from[first * per_image..last * per_image],
                    grad: &grad[first * per_image..last * per_image],
                    first,
                };
                backward_chunk(&part, sums, gx.as_deref_mut());
            });
    }
    // Per-chunk sums in chunk order: [c_out][kh][kw][c_in] weights, then the bias.
    let mut sums = vec![0f32; d.cout * (k + 1)];
    for part in partial.chunks_exact(d.cout * (k + 1)) {
        for (s, p) in sums.iter_mut().zip(part) {
            *s += p;
        }
    }
    let (filters, bias) = sums.split_at(d.cout * k);
    let mut weight = vec![0f32; d.cout * k];
    for co in 0..d.cout {
        for ci in 0..d.cin {
            for t in 0..9 {
                weight[(co * d.cin + ci) * 9 + t] = filters[co * k + t * d.cin + ci];
            }
        }
    }
    let tensor = |values: Vec<f32>, layout: Layout| {
        FlexTensor::new(burn::tensor::Bytes::from_elems(values), layout, DType::F32)
    };
    let x = want_x.then(|| {
        // The padded NHWC gradient seen as the unpadded NCHW input.
        let (hp, wp) = (d.h + 2, d.w + 2);
        let strides = vec![
            (hp * wp * d.cin) as isize,
            1,
            (wp * d.cin) as isize,
            d.cin as isize,
        ];
        let layout = Layout::new(
            Shape::new([d.n, d.cin, d.h, d.w]),
            strides,
            (wp + 1) * d.cin,
        );
        tensor(gx, layout)
    });
    Grads {
        x,
        weight: tensor(
            weight,
            Layout::contiguous(Shape::new([d.cout, d.cin, 3, 3])),
        ),
        bias: tensor(bias.to_vec(), Layout::contiguous(Shape::new([d.cout]))),
    }
}

/// One backward chunk's inputs: the images from `first`, their outputs' `from` and gradient.
struct Part<'a> {
    block: &'a Block,
    from: &'a [u8],
    grad: &'a [f32],
    first: usize,
}

/// Sums one chunk's weight and bias gradient into `sums` (`[c_out][kh][kw][c_in]`, then
/// `[c_out]`) and writes its images' padded input gradient into `gx`, if given.
fn backward_chunk(part: &Part, sums: &mut [f32], gx: Option<&mut [f32]>) {
    LISTS.with_borrow_mut(|lists| match Isa::detect() {
        // SAFETY: `Isa::detect` found the instructions on this CPU.
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 => unsafe { backward_chunk_avx512(part, sums, gx, lists) },
        // SAFETY: as above.
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => unsafe { backward_chunk_avx2(part, sums, gx, lists) },
        Isa::Any => backward_chunk_with(part, sums, gx, lists, Isa::Any),
    })
}

/// [`backward_chunk_with`] compiled for AVX-512 (its loops outside the registers' sums too).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma")]
fn backward_chunk_avx512(part: &Part, sums: &mut [f32], gx: Option<&mut [f32]>, lists: &mut Lists) {
    backward_chunk_with(part, sums, gx, lists, Isa::Avx512);
}

/// [`backward_chunk_with`] compiled for AVX2 and FMA.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn backward_chunk_avx2(part: &Part, sums: &mut [f32], gx: Option<&mut [f32]>, lists: &mut Lists) {
    backward_chunk_with(part, sums, gx, lists, Isa::Avx2);
}

thread_local! {
    /// Each thread's lists of the gradients that passed, kept between chunks and steps.
    static LISTS: std::cell::RefCell<Lists> = const {
        std::cell::RefCell::new(Lists {
            patches: Vec::new(),
            patch_counts: Vec::new(),
            places: Vec::new(),
            patch: Vec::new(),
        })
    };
}

/// The gradients of a backward chunk that the pooling and ReLU passed on, listed so that the
/// sums over them run in registers. Each list has room for every gradient it could hold and
/// a count of those it holds: an entry is written whether or not it passed, and the count
/// moves past it only if it did (no branch to mispredict on which ones pass).
#[derive(Debug)]
struct Lists {
    /// Per output channel (room for one image's windows each), in window order: where the
    /// input patch of each passed gradient starts in the padded input, and the gradient.
    patches: Vec<(usize, f32)>,
    /// How many of each channel's entries in `patches` passed.
    patch_counts: Vec<usize>,
    /// One window's gradients by the position of their maximum in it (0–3, row-major; 4:
    /// [`DEAD`]; room for every channel in each), in channel order: where the channel's
    /// filter starts, and the gradient.
    places: Vec<(usize, f32)>,
    /// The input gradient of one patch (a 3×3 window of every input channel).
    patch: Vec<f32>,
}

/// The backward loop of [`backward_chunk`], in `isa`'s instructions. The weight gradient: per
/// image and channel, the sum of the input patches of its passed gradients scaled by them.
/// The input gradient: per pooling window and position of the maximum in it, the sum of the
/// filters of the channels whose maximum is there scaled by their gradients, added to the
/// input patch at that position. Both sums run in registers (see [`add_scaled`]).
#[inline(always)]
fn backward_chunk_with(
    part: &Part,
    sums: &mut [f32],
    gx: Option<&mut [f32]>,
    lists: &mut Lists,
    isa: Isa,
) {
    let block = part.block;
    let d = block.dims;
    let (h2, w2) = d.pooled();
    let (k, run, row) = (d.k(), 3 * d.cin, (d.w + 2) * d.cin);
    let (filters_grad, bias_grad) = sums.split_at_mut(d.cout * k);
    // Where the patch of the maximum at place q of a window starts, from the window's first.
    let place = |q: u8| usize::from(q / 2) * row + usize::from(q % 2) * d.cin;
    let passed = |q: u8, g: f32| usize::from((q != DEAD) & (g != 0.0));
    let Lists {
        patches,
        patch_counts,
        places,
        patch,
    } = lists;
    let per_image = h2 * w2 * d.cout;
    patches.resize(per_image, (0, 0.0));
    patch_counts.resize(d.cout, 0);
    places.resize(5 * d.cout, (0, 0.0));
    let images = part
        .from
        .chunks_exact(per_image)
        .zip(part.grad.chunks_exact(per_image));
    // The weight gradient an image at a time, whose input (a few KiB) stays in the core's
    // first cache while every channel's sum runs over it.
    for (local, (from, grad)) in images.clone().enumerate() {
        patch_counts.fill(0);
        for (from, grad, i, j) in d.windows(from, grad) {
            let corner = d.padded_at(part.first + local, 2 * i, 2 * j);
            for (c, (&q, &g)) in from.iter().zip(grad).enumerate() {
                patches[c * h2 * w2 + patch_counts[c]] = (corner + place(q), g);
                patch_counts[c] += passed(q, g);
            }
            for ((b, &q), &g) in bias_grad.iter_mut().zip(from).zip(grad) {
                *b += if q != DEAD { g } else { 0.0 };
            }
        }
        for (c, &count) in patch_counts.iter().enumerate() {
            let entries = &patches[c * h2 * w2..c * h2 * w2 + count];
            let filter_grad = &mut filters_grad[c * k..(c + 1) * k];
            if d.cin == 1 {
                add_scaled_3x3(filter_grad, &block.padded, entries, row);
                continue;
            }
            for (kh, dst) in filter_grad.chunks_exact_mut(run).enumerate() {
                add_scaled::<4>(dst, &block.padded, entries, kh * row, isa);
            }
        }
    }
    let Some(gx) = gx else { return };
    patch.resize(k, 0.0);
    for (local, (from, grad)) in images.enumerate() {
        for (from, grad, i, j) in d.windows(from, grad) {
            // How many of each position's entries in `places` passed.
            let mut place_counts = [0usize; 5];
            for (c, (&q, &g)) in from.iter().zip(grad).enumerate() {
                let q = usize::from(q);
                places[q * d.cout + place_counts[q]] = (c * k, g);
                place_counts[q] += usize::from(g != 0.0);
            }
            let corner = d.padded_at(local, 2 * i, 2 * j);
            for q in 0..4u8 {
                let at = usize::from(q) * d.cout;
                let entries = &places[at..at + place_counts[usize::from(q)]];
                if entries.is_empty() {
                    continue;
                }
                patch.fill(0.0);
                add_scaled::<1>(patch, &block.filters, entries, 0, isa);
                for (kh, sums) in patch.chunks_exact(run).enumerate() {
                    let at = corner + place(q) + kh * row;
                    for (v, s) in gx[at..at + run].iter_mut().zip(sums) {
                        *v += s;
                    }
                }
            }
        }
    }
}

/// [`add_scaled`] for the nine taps of a one-channel patch (three rows of three at `row`
/// floats from each other), in one pass over the entries: nine running sums in registers.
#[inline(always)]
fn add_scaled_3x3(dst: &mut [f32], src: &[f32], entries: &[(usize, f32)], row: usize) {
    let mut acc = [0f32; 9];
    for &(at, g) in entries {
        for (kh, acc) in acc.chunks_exact_mut(3).enumerate() {
            let taps = &src[at + kh * row..at + kh * row + 3];
            for (a, s) in acc.iter_mut().zip(taps) {
                *a = s.mul_add(g, *a);
            }
        }
    }
    for (d, a) in dst.iter_mut().zip(acc) {
        *d += a;
    }
}

/// `dst[t] += Σ g · src[at + base + t]` over `entries` `(at, g)`, with `SETS` running sums an
/// element: entry `e` goes into sum `e % SETS`, and the sums are added to `dst` in set order
/// at the end (so `SETS` chains of multiply-adds run at once where entries are many). The
/// order is fixed by the entries, never by the machine's threads; the vector versions
/// compute the same sums, a register of elements at a time.
#[inline(always)]
fn add_scaled<const SETS: usize>(
    dst: &mut [f32],
    src: &[f32],
    entries: &[(usize, f32)],
    base: usize,
    isa: Isa,
) {
    match isa {
        // SAFETY: `Isa::detect` found the instructions on this CPU.
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 => unsafe { avx512::add_scaled::<SETS>(dst, src, entries, base) },
        // SAFETY: as above.
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => unsafe { avx2::add_scaled::<SETS>(dst, src, entries, base) },
        Isa::Any => add_scaled_each::<SETS>(dst, src, entries, base),
    }
}

/// [`add_scaled`] element by element, for any CPU.
#[inline(always)]
fn add_scaled_each<const SETS: usize>(
    dst: &mut [f32],
    src: &[f32],
    entries: &[(usize, f32)],
    base: usize,
) {
    let (groups, rest) = entries.as_chunks::<SETS>();
    for (t, d) in dst.iter_mut().enumerate() {
        let mut acc = [0f32; SETS];
        for group in groups {
            for (a, &(at, g)) in acc.iter_mut().zip(group) {
                *a = src[at + base + t].mul_add(g, *a);
            }
        }
        for (a, &(at, g)) in acc.iter_mut().zip(rest) {
            *a = src[at + base + t].mul_add(g, *a);
        }
        for a in acc {
            *d += a;
        }
    }
}

/// [`add_scaled`] in vector registers: one module per x86 instruction set, the same code.
#[cfg(target_arch = "x86_64")]
macro_rules! add_scaled_in {
    ($module:ident, $features:literal, $doc:literal, $vector:ident, $lanes:literal,
     $zero:ident, $set1:ident, $load:ident, $store:ident, $fmadd:ident, $add:ident,
     $rest:path) => {
        #[doc = $doc]
        mod $module {
            use std::arch::x86_64::{$add, $fmadd, $load, $set1, $store, $vector, $zero};

            /// [`super::add_scaled`] by tiles of `dst` whose sums stay in registers: up to 12
            /// vectors at a time with one set, 2 or 1 with more, then the rest by the next
            /// narrower instructions.
            #[target_feature(enable = $features)]
            pub(super) fn add_scaled<const SETS: usize>(
                dst: &mut [f32],
                src: &[f32],
                entries: &[(usize, f32)],
                base: usize,
            ) {
                let mut t = 0;
                if SETS == 1 {
                    // Up to 12 registers of sums in one pass over the entries.
                    while dst.len() - t >= 12 * $lanes {
                        tile::<12, SETS>(&mut dst[t..t + 12 * $lanes], src, entries, base + t);
                        t += 12 * $lanes;
                    }
                    let (d, b) = (&mut dst[t..], base + t);
                    t += match d.len() / $lanes {
                        0 => 0,
                        1 => tile::<1, SETS>(&mut d[..$lanes], src, entries, b),
                        2 => tile::<2, SETS>(&mut d[..2 * $lanes], src, entries, b),
                        3 => tile::<3, SETS>(&mut d[..3 * $lanes], src, entries, b),
                        4 => tile::<4, SETS>(&mut d[..4 * $lanes], src, entries, b),
                        5 => tile::<5, SETS>(&mut d[..5 * $lanes], src, entries, b),
                        6 => tile::<6, SETS>(&mut d[..6 * $lanes], src, entries, b),
                        7 => tile::<7, SETS>(&mut d[..7 * $lanes], src, entries, b),
                        8 => tile::<8, SETS>(&mut d[..8 * $lanes], src, entries, b),
                        9 => tile::<9, SETS>(&mut d[..9 * $lanes], src, entries, b),
                        10 => tile::<10, SETS>(&mut d[..10 * $lanes], src, entries, b),
                        _ => tile::<11, SETS>(&mut d[..11 * $lanes], src, entries, b),
                    };
                }
                while dst.len() - t >= 2 * $lanes {
                    tile::<2, SETS>(&mut dst[t..t + 2 * $lanes], src, entries, base + t);
                    t += 2 * $lanes;
                }
                if dst.len() - t >= $lanes {
                    tile::<1, SETS>(&mut dst[t..t + $lanes], src, entries, base + t);
                    t += $lanes;
                }
                $rest(&mut dst[t..], src, entries, base + t);
            }

            /// One tile of `V` vectors of `dst`: `SETS × V` registers of sums. Returns the
            /// floats it summed.
            #[target_feature(enable = $features)]
            #[inline]
            fn tile<const V: usize, const SETS: usize>(
                dst: &mut [f32],
                src: &[f32],
                entries: &[(usize, f32)],
                base: usize,
            ) -> usize {
                let mut acc = [[$zero(); V]; SETS];
                let (groups, rest) = entries.as_chunks::<SETS>();
                for group in groups {
                    for (acc, &(at, g)) in acc.iter_mut().zip(group) {
                        add_row(acc, &src[at + base..at + base + $lanes * V], g);
                    }
                }
                for (acc, &(at, g)) in acc.iter_mut().zip(rest) {
                    add_row(acc, &src[at + base..at + base + $lanes * V], g);
                }
                for (v, out) in dst.chunks_exact_mut($lanes).enumerate() {
                    // SAFETY: `out` holds one vector's floats.
                    let mut sum = unsafe { $load(out.as_ptr()) };
                    for set in &acc {
                        sum = $add(sum, set[v]);
                    }
                    // SAFETY: as above.
                    unsafe { $store(out.as_mut_ptr(), sum) };
                }
                $lanes * V
            }

            /// `acc += g · row`, `row` holding `V` vectors' floats.
            #[target_feature(enable = $features)]
            #[inline]
            fn add_row<const V: usize>(acc: &mut [$vector; V], row: &[f32], g: f32) {
                let g = $set1(g);
                for (a, s) in acc.iter_mut().zip(row.chunks_exact($lanes)) {
                    // SAFETY: `s` holds one vector's floats.
                    *a = $fmadd(unsafe { $load(s.as_ptr()) }, g, *a);
                }
            }
        }
    };
}

#[cfg(target_arch = "x86_64")]
add_scaled_in!(
    avx2,
    "avx2,fma",
    "[`add_scaled`] in AVX2 registers (8 floats).",
    __m256,
    8,
    _mm256_setzero_ps,
    _mm256_set1_ps,
    _mm256_loadu_ps,
    _mm256_storeu_ps,
    _mm256_fmadd_ps,
    _mm256_add_ps,
    super::add_scaled_each::<SETS>
);
#[cfg(target_arch = "x86_64")]
add_scaled_in!(
    avx512,
    "avx512f,avx2,fma",
    "[`add_scaled`] in AVX-512 registers (16 floats).",
    __m512,
    16,
    _mm512_setzero_ps,
    _mm512_set1_ps,
    _mm512_loadu_ps,
    _mm512_storeu_ps,
    _mm512_fmadd_ps,
    _mm512_add_ps,
    super::avx2::add_scaled::<SETS>
);

fn dims4(x: &FlexTensor) -> [usize; 4] {
    let s = x.layout().shape();
    [s[0], s[1], s[2], s[3]]
}

/// A 4-D tensor `[n, c, h, w]`, read through its strides, as contiguous `[n][h + 2p][w + 2p][c]`
/// with a border of `pad` zeros around each image.
fn nhwc(t: &FlexTensor, pad: usize) -> Vec<f32> {
    let [n, c, h, w] = dims4(t);
    let layout = t.layout();
    let st: Vec<isize> = layout.strides().to_vec();
    let start = layout.start_offset() as isize;
    let data: &[f32] = t.storage::<f32>();
    let (hp, wp) = (h + 2 * pad, w + 2 * pad);
    let mut out = vec![0f32; n * hp * wp * c];
    if out.is_empty() {
        return out;
    }
    out.par_chunks_mut(hp * wp * c)
        .enumerate()
        .for_each(|(b, image)| {
            for y in 0..h {
                for x in 0..w {
                    let base = start + b as isize * st[0] + y as isize * st[2] + x as isize * st[3];
                    let dst = &mut image[((y + pad) * wp + x + pad) * c..][..c];
                    if st[1] == 1 {
                        // Already NHWC (a block's output, a block's input gradient): one copy.
                        dst.copy_from_slice(&data[base as usize..base as usize + c]);
                        continue;
                    }
                    for (ch, v) in dst.iter_mut().enumerate() {
                        *v = data[(base + ch as isize * st[1]) as usize];
                    }
                }
            }
        });
    out
}

/// A 1-D tensor's values, read through its stride.
fn strided_values(t: &FlexTensor) -> Vec<f32> {
    let layout = t.layout();
    let (len, stride, start) = (
        layout.shape()[0],
        layout.strides()[0],
        layout.start_offset() as isize,
    );
    let data: &[f32] = t.storage::<f32>();
    (0..len)
        .map(|i| data[(start + i as isize * stride) as usize])
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::module::{Module, Param};
    use burn::nn::conv::Conv2dConfig;
    use burn::tensor::{Device, TensorData};
    use rand::rngs::StdRng;
    use rand::{RngExt, SeedableRng};

    fn values<const D: usize>(t: Tensor<D>) -> Vec<f32> {
        t.into_data().convert::<f32>().try_to_vec::<f32>().unwrap()
    }

    fn random(rng: &mut StdRng, count: usize) -> Vec<f32> {
        (0..count).map(|_| rng.random_range(-1.0f32..1.0)).collect()
    }

    fn conv(rng: &mut StdRng, cin: usize, cout: usize, device: &Device) -> Conv2d {
        let mut conv = Conv2dConfig::new([cin, cout], [3, 3])
            .with_padding(PaddingConfig2d::Same)
            .init(device);
        let weights = random(rng, cout * cin * 9);
        conv.weight = Param::from_data(TensorData::new(weights, [cout, cin, 3, 3]), device);
        let bias = random(rng, cout);
        conv.bias = Some(Param::from_data(TensorData::new(bias, [cout]), device));
        conv
    }

    fn assert_close(ours: &[f32], burns: &[f32], what: &str) {
        assert_eq!(ours.len(), burns.len(), "{what}: lengths");
        for (i, (a, b)) in ours.iter().zip(burns).enumerate() {
            assert!(
                (a - b).abs() <= 1e-5 * (1.0 + b.abs()),
                "{what}[{i}]: ours {a}, burn's {b}"
            );
        }
    }

    /// Operands whose shapes do not fit together are left to burn's operations.
    #[test]
    fn operands_that_do_not_fit_are_left_to_burn() {
        let flex4 = |shape: [usize; 4]| {
            let t = Tensor::<4>::zeros(shape, &Device::flex());
            t.try_into_primitive::<Flex>().unwrap()
        };
        let x = flex4([2, 3, 8, 8]);
        let fits = |weight: [usize; 4], bias: usize| {
            let bias = Tensor::<1>::zeros([bias], &Device::flex());
            let bias = bias.try_into_primitive::<Flex>().unwrap();
            Block::new(&x, &flex4(weight), &bias).is_some()
        };
        assert!(fits([5, 3, 3, 3], 5));
        assert!(!fits([5, 4, 3, 3], 5), "input channels");
        assert!(!fits([5, 3, 5, 5], 5), "kernel size");
        assert!(!fits([5, 3, 3, 3], 4), "bias length");
    }

    /// How a trial's input is made.
    #[derive(Debug, Clone, Copy)]
    enum Input {
        /// NCHW, with autodiff.
        Nchw,
        /// Stored NHWC, seen as NCHW through a permutation, with autodiff.
        Nhwc,
        /// Without autodiff, as the loader's images.
        Plain,
    }

    /// The input `x` (`[n, c, h, w]` values) made `how`: the leaf to ask for its gradient,
    /// if any, and the tensor to feed.
    fn input(
        x: &[f32],
        [n, c, h, w]: [usize; 4],
        how: Input,
        device: &Device,
    ) -> (Option<Tensor<4>>, Tensor<4>) {
        match how {
            Input::Plain => {
                let t = Tensor::<4>::from_data(
                    TensorData::new(x.to_vec(), [n, c, h, w]),
                    &Device::flex(),
                );
                (None, t)
            }
            Input::Nchw => {
                let t = Tensor::<4>::from_data(TensorData::new(x.to_vec(), [n, c, h, w]), device)
                    .require_grad();
                (Some(t.clone()), t)
            }
            Input::Nhwc => {
                let mut stored = vec![0f32; x.len()];
                for (i, v) in x.iter().enumerate() {
                    let (b, ch, y, xx) = (i / (c * h * w), i / (h * w) % c, i / w % h, i % w);
                    stored[((b * h + y) * w + xx) * c + ch] = *v;
                }
                let leaf = Tensor::<4>::from_data(TensorData::new(stored, [n, h, w, c]), device)
                    .require_grad();
                (Some(leaf.clone()), leaf.permute([0, 3, 1, 2]))
            }
        }
    }

    /// On random shapes (odd sides, one channel, one image, batches of several chunks
    /// included), inputs laid out NCHW or NHWC or without autodiff (as the loader's images),
    /// one block or two in a row (the second reads the first's NHWC output and hands back a
    /// strided gradient): the same output and the same gradients of the input, weights and
    /// biases as burn's `conv2d`, `relu` and `max_pool2d`, to float rounding; and the same
    /// output without autodiff.
    /// The vector sums give the element-by-element sums' bits, for every tile size and tail,
    /// on this CPU's instructions.
    #[test]
    fn vector_sums_equal_the_element_by_element_sums() {
        let mut rng = StdRng::seed_from_u64(9);
        let src = random(&mut rng, 4096);
        let isas = Isa::all_here();
        println!("vector sums checked on {isas:?}");
        for isa in isas {
            for len in (0..40).chain([48, 64, 96, 128, 144, 160, 200, 288]) {
                for count in [0, 1, 3, 4, 7, 13] {
                    let entries: Vec<(usize, f32)> = (0..count)
                        .map(|_| (rng.random_range(0..3000), rng.random_range(-1.0..1.0)))
                        .collect();
                    let start = random(&mut rng, len);
                    let (mut each, mut vector) = (start.clone(), start.clone());
                    add_scaled_each::<4>(&mut each, &src, &entries, 7);
                    add_scaled::<4>(&mut vector, &src, &entries, 7, isa);
                    let (mut each1, mut vector1) = (start.clone(), start);
                    add_scaled_each::<1>(&mut each1, &src, &entries, 7);
                    add_scaled::<1>(&mut vector1, &src, &entries, 7, isa);
                    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                    assert_eq!(
                        bits(&each),
                        bits(&vector),
                        "{isa:?}, {len} floats, {count} entries"
                    );
                    assert_eq!(
                        bits(&each1),
                        bits(&vector1),
                        "{isa:?}, {len} floats, {count} entries, one set"
                    );
                }
            }
        }
    }

    #[test]
    fn block_equals_burns_operations_forward_and_backward() {
        let mut rng = StdRng::seed_from_u64(5);
        let device = Device::flex().autodiff();
        for trial in 0..40 {
            // Some batches span several of the forward's and the backward's chunks.
            let images = if trial % 5 == 1 { 9..20 } else { 1..5 };
            let [n, cin, h, w] = [
                rng.random_range(images),
                // Wide inputs now and then: patches that fill every tile size of the sums.
                rng.random_range(if trial % 4 == 3 { 1..48 } else { 1..5usize }),
                rng.random_range(2..13usize),
                rng.random_range(2..13usize),
            ];
            let two = h >= 4 && w >= 4 && trial % 2 == 0;
            let mut channels = vec![cin];
            for _ in 0..if two { 2 } else { 1 } {
                channels.push(rng.random_range(if trial % 4 == 3 { 1..40 } else { 1..9 }));
            }
            let convs: Vec<Conv2d> = channels
                .windows(2)
                .map(|io| conv(&mut rng, io[0], io[1], &device))
                .collect();
            let x = random(&mut rng, n * cin * h * w);
            let how = [Input::Nchw, Input::Nhwc, Input::Plain][trial % 3];
            let scale_seed = rng.random_range(0..u64::MAX);
            let run = |block: &dyn Fn(&Conv2d, Tensor<4>) -> Tensor<4>| {
                let (leaf, mut y) = input(&x, [n, cin, h, w], how, &device);
                for conv in &convs {
                    y = block(conv, y);
                }
                let dims = y.dims();
                let scale = random(
                    &mut StdRng::seed_from_u64(scale_seed),
                    dims.iter().product(),
                );
                let grads = (y.clone()
                    * Tensor::<4>::from_data(TensorData::new(scale, dims), &device))
                .sum()
                .backward();
                let mut all = vec![values(y.inner())];
                if let Some(leaf) = leaf {
                    all.push(values(leaf.grad(&grads).unwrap()));
                }
                for conv in &convs {
                    all.push(values(conv.weight.val().grad(&grads).unwrap()));
                    all.push(values(
                        conv.bias.as_ref().unwrap().val().grad(&grads).unwrap(),
                    ));
                }
                all
            };
            let ours = run(&conv_relu_pool);
            let burns = run(&|conv, x| {
                burn::tensor::module::max_pool2d(
                    burn::tensor::activation::relu(conv.forward(x)),
                    MaxPoolOptions::new([2, 2]),
                )
            });
            let shape = format!("[{n}, {cin}, {h}, {w}], {how:?} input, two blocks {two}");
            let mut what = vec!["output".to_string()];
            if !matches!(how, Input::Plain) {
                what.push("input gradient".into());
            }
            for b in 1..=convs.len() {
                what.push(format!("weight gradient of block {b}"));
                what.push(format!("bias gradient of block {b}"));
            }
            assert_eq!((ours.len(), burns.len()), (what.len(), what.len()));
            for (what, (a, b)) in what.iter().zip(ours.iter().zip(&burns)) {
                assert_close(a, b, &format!("{what}, {shape}"));
            }
            // Without autodiff (evaluation).
            let mut y =
                Tensor::<4>::from_data(TensorData::new(x.clone(), [n, cin, h, w]), &Device::flex());
            for conv in &convs {
                y = conv_relu_pool(&conv.valid(), y);
            }
            assert_close(
                &values(y),
                &burns[0],
                &format!("output without autodiff, {shape}"),
            );
        }
    }
}
