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
//!   3 × input channels each in NHWC), a quarter or less of the dense products' work;
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
        // SAFETY: `pre` is rows × c_out, `cols` rows × k and `filters` c_out × k, all
        // contiguous, as the strides below say; nothing else borrows them.
        unsafe {
            gemm::gemm(
                rows,
                d.cout,
                k,
                pre.as_mut_ptr(),
                1,
                d.cout as isize,
                false,
                cols.as_ptr(),
                1,
                k as isize,
                self.filters.as_ptr(),
                k as isize,
                1,
                0.0,
                1.0,
                false,
                false,
                false,
                gemm::Parallelism::None,
            );
        }
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
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
        // SAFETY: the CPU has the features the function is compiled for.
        unsafe { backward_chunk_fma(part, sums, gx) };
        return;
    }
    backward_chunk_any(part, sums, gx);
}

/// [`backward_chunk_any`] compiled for AVX2 and FMA: the same operations (`mul_add` is one
/// rounding either way), eight lanes at a time.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn backward_chunk_fma(part: &Part, sums: &mut [f32], gx: Option<&mut [f32]>) {
    backward_chunk_any(part, sums, gx);
}

/// The backward loop of [`backward_chunk`], for any CPU: per window of the pooling, per channel
/// whose gradient passed, the input patch into the weight gradient and the filter into the
/// input gradient.
#[inline(always)]
fn backward_chunk_any(part: &Part, sums: &mut [f32], mut gx: Option<&mut [f32]>) {
    let block = part.block;
    let d = block.dims;
    let (h2, w2) = d.pooled();
    let (k, run) = (d.k(), 3 * d.cin);
    let (filters_grad, bias_grad) = sums.split_at_mut(d.cout * k);
    let windows = part.from.len() / d.cout;
    for window in 0..windows {
        let local = window / (h2 * w2);
        let (img, i, j) = (part.first + local, window / w2 % h2, window % w2);
        let from = &part.from[window * d.cout..(window + 1) * d.cout];
        let grad = &part.grad[window * d.cout..(window + 1) * d.cout];
        for c in 0..d.cout {
            let (q, g) = (from[c], grad[c]);
            if q == DEAD || g == 0.0 {
                continue;
            }
            let (y, x) = (2 * i + usize::from(q / 2), 2 * j + usize::from(q % 2));
            bias_grad[c] += g;
            let filter_grad = &mut filters_grad[c * k..(c + 1) * k];
            let filter = &block.filters[c * k..(c + 1) * k];
            for kh in 0..3 {
                let at = d.padded_at(img, y + kh, x);
                let patch = &block.padded[at..at + run];
                axpy(&mut filter_grad[kh * run..(kh + 1) * run], g, patch);
                if let Some(gx) = gx.as_deref_mut() {
                    let at = d.padded_at(local, y + kh, x);
                    axpy(&mut gx[at..at + run], g, &filter[kh * run..(kh + 1) * run]);
                }
            }
        }
    }
}

/// `dst += g · src`, element by element, each a fused multiply-add.
#[inline(always)]
fn axpy(dst: &mut [f32], g: f32, src: &[f32]) {
    for (d, s) in dst.iter_mut().zip(src) {
        *d = s.mul_add(g, *d);
    }
}

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
    #[test]
    fn block_equals_burns_operations_forward_and_backward() {
        let mut rng = StdRng::seed_from_u64(5);
        let device = Device::flex().autodiff();
        for trial in 0..40 {
            // Some batches span several of the forward's and the backward's chunks.
            let images = if trial % 5 == 1 { 9..20 } else { 1..5 };
            let [n, cin, h, w] = [
                rng.random_range(images),
                rng.random_range(1..5usize),
                rng.random_range(2..13usize),
                rng.random_range(2..13usize),
            ];
            let two = h >= 4 && w >= 4 && trial % 2 == 0;
            let mut channels = vec![cin];
            for _ in 0..if two { 2 } else { 1 } {
                channels.push(rng.random_range(1..9));
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
