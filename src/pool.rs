//! 2×2 max-pooling with stride 2, the CNN's pooling, as an operation of this crate on the CPU
//! backend (flex, with and without autodiff); other backends take burn's `max_pool2d`.
//!
//! burn-flex runs every max-pool through its generic path: the input made contiguous in NCHW
//! (the convolution before it leaves NHWC strides), then per output element the window's
//! bounds, a scalar loop and an i64 index; that was a fifth of a CNN training step. Here the
//! input is read through its own strides, each output is the first largest of its four inputs
//! (burn's choice on ties), and the backward pass keeps one byte per output for where its
//! maximum came from. Upstream, the same would be a 2×2/stride-2 fast path in burn-flex's
//! `max_pool2d_with_indices` and its backward.

use burn::tensor::ops::MaxPoolOptions;
use burn::tensor::{DType, Shape, Tensor};
use burn_autodiff::Autodiff;
use burn_autodiff::checkpoint::base::Checkpointer;
use burn_autodiff::checkpoint::strategy::NoCheckpointing;
use burn_autodiff::grads::Gradients;
use burn_autodiff::ops::{Backward, Ops, OpsKind};
use burn_flex::{Flex, FlexTensor, Layout};
use rayon::prelude::*;

/// `x` `[n, c, h, w]` max-pooled by 2×2 windows with stride 2 to `[n, c, h / 2, w / 2]` (an odd
/// last row or column is left out, as burn's `MaxPool2d` does).
pub fn max_pool_2x2(x: Tensor<4>) -> Tensor<4> {
    if let Ok(ad) = x.clone().try_into_primitive::<Autodiff<Flex>>()
        && ad.primitive().dtype() == DType::F32
    {
        let (primitive, guard) = ad.into_parts();
        let pooled = match MaxPool2x2
            .prepare::<NoCheckpointing>([guard])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => {
                let shape = dims(&primitive);
                let (out, from) = forward(&primitive);
                let from = std::sync::Arc::new(from);
                prep.finish(Argmax { from, shape }, out)
            }
            OpsKind::UnTracked(prep) => prep.finish(forward(&primitive).0),
        };
        return Tensor::from_primitive::<Autodiff<Flex>>(pooled);
    }
    if let Ok(plain) = x.clone().try_into_primitive::<Flex>()
        && plain.dtype() == DType::F32
    {
        return Tensor::from_primitive::<Flex>(forward(&plain).0);
    }
    burn::tensor::module::max_pool2d(x, MaxPoolOptions::new([2, 2]))
}

/// Where each output's maximum came from (0–3, row-major in its window), and the input shape.
#[derive(Debug, Clone)]
struct Argmax {
    from: std::sync::Arc<Vec<u8>>,
    shape: [usize; 4],
}

#[derive(Debug)]
struct MaxPool2x2;

impl Backward<Flex, 1> for MaxPool2x2 {
    type State = Argmax;

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [parent] = ops.parents;
        let grad = grads.consume::<Flex>(&ops.node);
        if let Some(node) = parent {
            grads.register::<Flex>(node.id, backward(&grad, &ops.state));
        }
    }
}

fn dims(x: &FlexTensor) -> [usize; 4] {
    let s = x.layout().shape();
    [s[0], s[1], s[2], s[3]]
}

/// The pooled tensor (contiguous NCHW) and where each maximum came from.
fn forward(x: &FlexTensor) -> (FlexTensor, Vec<u8>) {
    let [n, c, h, w] = dims(x);
    let (h2, w2) = (h / 2, w / 2);
    let layout = x.layout();
    let st: Vec<isize> = layout.strides().to_vec();
    let start = layout.start_offset() as isize;
    let data: &[f32] = x.storage::<f32>();
    let plane = h2 * w2;
    let mut out = vec![0f32; n * c * plane];
    let mut from = vec![0u8; n * c * plane];
    out.par_chunks_mut(plane.max(1))
        .zip(from.par_chunks_mut(plane.max(1)))
        .enumerate()
        .for_each(|(nc, (out, from))| {
            let (b, ch) = (nc / c, nc % c);
            let base = start + b as isize * st[0] + ch as isize * st[1];
            for i in 0..h2 {
                for j in 0..w2 {
                    let at = |di: usize, dj: usize| {
                        let off =
                            base + (2 * i + di) as isize * st[2] + (2 * j + dj) as isize * st[3];
                        data[off as usize]
                    };
                    let mut best = at(0, 0);
                    let mut k = 0u8;
                    for (q, (di, dj)) in [(0, 1), (1, 0), (1, 1)].into_iter().enumerate() {
                        let v = at(di, dj);
                        if v > best {
                            best = v;
                            k = q as u8 + 1;
                        }
                    }
                    out[i * w2 + j] = best;
                    from[i * w2 + j] = k;
                }
            }
        });
    let shape = Shape::new([n, c, h2, w2]);
    (
        FlexTensor::new(
            burn::tensor::Bytes::from_elems(out),
            Layout::contiguous(shape),
            DType::F32,
        ),
        from,
    )
}

/// The gradient of the input: each output's gradient at the place its maximum came from.
fn backward(grad: &FlexTensor, argmax: &Argmax) -> FlexTensor {
    let [n, c, h, w] = argmax.shape;
    let (h2, w2) = (h / 2, w / 2);
    let layout = grad.layout();
    let st: Vec<isize> = layout.strides().to_vec();
    let start = layout.start_offset() as isize;
    let g: &[f32] = grad.storage::<f32>();
    let mut out = vec![0f32; n * c * h * w];
    out.par_chunks_mut((h * w).max(1))
        .enumerate()
        .for_each(|(nc, input)| {
            let (b, ch) = (nc / c, nc % c);
            let base = start + b as isize * st[0] + ch as isize * st[1];
            for i in 0..h2 {
                for j in 0..w2 {
                    let k = argmax.from[nc * h2 * w2 + i * w2 + j] as usize;
                    let off = base + i as isize * st[2] + j as isize * st[3];
                    input[(2 * i + k / 2) * w + 2 * j + k % 2] = g[off as usize];
                }
            }
        });
    FlexTensor::new(
        burn::tensor::Bytes::from_elems(out),
        Layout::contiguous(Shape::new([n, c, h, w])),
        DType::F32,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::{Device, TensorData};
    use rand::{RngExt, SeedableRng};

    fn values(t: Tensor<4>) -> Vec<f32> {
        t.into_data().convert::<f32>().try_to_vec::<f32>().unwrap()
    }

    /// On random shapes (odd sides included), values rounded so that ties happen, and inputs
    /// laid out NHWC as the convolution leaves them: the same output and the same input
    /// gradient as burn's `max_pool2d`, to the bit.
    #[test]
    fn pooling_equals_burns_forward_and_backward() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(3);
        let device = Device::flex().autodiff();
        for _ in 0..30 {
            let shape = [
                rng.random_range(1..4usize),
                rng.random_range(1..6usize),
                rng.random_range(2..12usize),
                rng.random_range(2..12usize),
            ];
            let count: usize = shape.iter().product();
            let x: Vec<f32> = (0..count)
                .map(|_| (rng.random_range(-4.0f32..4.0)).round() / 2.0)
                .collect();
            let weights: Vec<f32> = (0..count).map(|_| rng.random_range(-1.0f32..1.0)).collect();
            let nhwc = rng.random_range(0..2) == 1;
            let input = || {
                if !nhwc {
                    let t = Tensor::<4>::from_data(TensorData::new(x.clone(), shape), &device)
                        .require_grad();
                    return (t.clone(), t);
                }
                // The same values stored NHWC, seen as NCHW through a permutation.
                let [n, c, h, w] = shape;
                let mut stored = vec![0f32; count];
                for (i, v) in x.iter().enumerate() {
                    let (b, ch, y, xx) = (i / (c * h * w), i / (h * w) % c, i / w % h, i % w);
                    stored[((b * h + y) * w + xx) * c + ch] = *v;
                }
                let leaf = Tensor::<4>::from_data(TensorData::new(stored, [n, h, w, c]), &device)
                    .require_grad();
                (leaf.clone(), leaf.permute([0, 3, 1, 2]))
            };
            let run = |pool: &dyn Fn(Tensor<4>) -> Tensor<4>| {
                let (leaf, laid) = input();
                let y = pool(laid);
                let [a, b, c, d] = y.dims();
                let w = Tensor::<4>::from_data(
                    TensorData::new(weights[..a * b * c * d].to_vec(), [a, b, c, d]),
                    &device,
                );
                let grads = (y.clone() * w).sum().backward();
                let g = leaf.grad(&grads).unwrap();
                (values(y.inner()), values(g))
            };
            let ours = run(&max_pool_2x2);
            let burns = run(&|t| burn::tensor::module::max_pool2d(t, MaxPoolOptions::new([2, 2])));
            assert_eq!(ours.0, burns.0, "forward, {shape:?} nhwc {nhwc}");
            // Without autodiff (evaluation) too.
            let plain = Tensor::<4>::from_data(TensorData::new(x.clone(), shape), &Device::flex());
            assert_eq!(
                values(max_pool_2x2(plain)),
                burns.0,
                "forward without autodiff"
            );
            assert_eq!(ours.1, burns.1, "backward, {shape:?} nhwc {nhwc}");
        }
    }
}
