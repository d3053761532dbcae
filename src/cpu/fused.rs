//! The fused MLP training step on the CPU (flex): a whole step — gather and scale the batch,
//! every layer forward, softmax cross-entropy and its gradient, the backward pass, Adam on
//! every parameter, the epoch's loss and hit sums — in buffers allocated once, with no
//! autodiff graph and no tensor per operation.
//!
//! burn's generic step builds a graph and runs a dozen operations each way for a network of
//! 24,000 parameters: for the article's MLP that overhead is most of the step. Here the
//! products of the forward pass and the weight gradients run in the crate's own vector
//! kernel ([`broadcast_product`]: AVX-512 or AVX2 found at run time, `gemm` on other CPUs),
//! the backward products through the small later layers in `gemm`, and the rest are plain
//! loops over rows, compiled for the CPU's widest instructions too.
//!
//! Work is split into pieces fixed by the shapes, never by the thread count, so that sums do
//! not depend on it, and run on the crate's team of threads ([`team`]):
//! - first, blocks of row chunks (see [`blocks`]): each chunk of [`ROW_CHUNK`] rows gathers its
//!   pixels, runs the forward pass, the loss and the backward pass through the layers (rows
//!   are independent until their gradients are summed); then the block sums the first
//!   layer's weight gradient over its rows, while their pixels are in its core's cache;
//! - then the parameters by pieces of [`INPUT_CHUNK`] inputs of a layer (or its bias): the
//!   first layer's gradient as the blocks' sums added in block order, a later layer's as one
//!   product over the batch, and Adam on the piece as soon as its gradient is known;
//! - the batch's loss and hits are summed per row chunk, then chunk after chunk.
//!
//! The numbers are burn's: parameters and Adam's moments in burn's module order and layout
//! (a dense layer's weights `[in, out]`), Adam in burn's order of operations (the same as
//! `shaders/mlp_adam.wgsl`), the loss and its gradient as `shaders/mlp_head.wgsl` takes them.
//! Weights and moments go back into burn's `Model` and optimizer state at the end of each
//! epoch and on an interrupt, so checkpoints are the same whichever step wrote them.

use burn::optim::ModuleOptimizer;

use crate::backend::read::ReadError;
use crate::batch::{Shift, fill_pixels, prefetch_image};
use crate::cpu::team;
use crate::data::Split;
use crate::flat::{
    Moments, ParamMeta, StateError, flat_parameters, param_meta, set_flat_parameters,
};
use crate::metrics::{Metrics, RunningSums};
use crate::model::Model;
use crate::product::{Isa, broadcast_product, product};
use crate::recipe::{AdamStep, TrainConfig};

/// Why the fused CPU step could not start or report.
#[derive(Debug, thiserror::Error)]
pub enum CpuStepError {
    /// The model is not an MLP the step takes.
    #[error("the fused CPU step cannot take this model: {0}")]
    Model(String),
    /// Reading the weights out of burn's model failed.
    #[error(transparent)]
    Read(#[from] ReadError),
    /// burn's optimizer state could not be converted.
    #[error(transparent)]
    State(#[from] StateError),
}

/// Rows per piece of the forward and backward passes through the layers.
pub const ROW_CHUNK: usize = 16;

/// Most blocks of row chunks a batch's first-layer weight gradient is summed in (see
/// [`blocks`]): as many threads as take part in the first half of a step. Two were measured
/// ~4 % faster than four at batch 256 on 2 cores; four keep 4-core machines busy.
const BLOCKS: usize = 4;

/// How the row chunks of a batch of `rows` rows fall into blocks: `(blocks, chunks a block)`.
/// A block's chunks run one after another on one thread, which then sums the first layer's
/// weight gradient over the block's rows while their pixels are still in that core's cache;
/// the step adds the blocks' sums in block order. Fixed by the batch size, never by the
/// threads.
///
/// (Summed over the whole batch by input columns after the pass, the gradient read every
/// row's pixels again, most of them from another core's cache: on 2 cores, two threads took
/// 1.8 times as long a piece as one, so the weight gradients took as long on two as on one.)
fn blocks(rows: usize) -> (usize, usize) {
    let chunks = rows.div_ceil(ROW_CHUNK);
    let per = chunks.div_ceil(BLOCKS.min(chunks).max(1));
    (chunks.div_ceil(per.max(1)), per)
}

/// Images ahead of the one being gathered whose pixels are asked into the cache.
const PREFETCH: usize = 4;

/// Inputs per piece of a weight gradient (a piece is `INPUT_CHUNK × out` weights).
pub const INPUT_CHUNK: usize = 32;

/// The dense layers' shape and where each one's numbers sit in the flat parameter vector
/// (burn's module order: a layer's weights `[in, out]` row-major, then its bias).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Layers {
    /// Widths, input first: `[784, 30, 10, 10]` for the article's model.
    widths: Vec<usize>,
    /// Where each layer's weights and bias start.
    w_at: Vec<usize>,
    b_at: Vec<usize>,
}

impl Layers {
    /// The layers of a model with parameters `meta` on inputs of `inputs` numbers, or why the
    /// step cannot take it (anything but dense layers, each with a bias, chained).
    fn of(meta: &[ParamMeta], inputs: usize) -> Result<Self, String> {
        let mut widths = vec![inputs];
        let (mut w_at, mut b_at) = (Vec::new(), Vec::new());
        let mut at = 0;
        let mut shapes = meta.iter().map(|(_, shape)| shape.as_slice());
        while let Some(weights) = shapes.next() {
            let (Some(&[bias]), &[n_in, n_out]) = (shapes.next(), weights) else {
                return Err(format!("a parameter of shape {weights:?}"));
            };
            if n_in != widths[widths.len() - 1] || bias != n_out {
                return Err(format!("a dense layer {n_in} → {n_out}"));
            }
            w_at.push(at);
            b_at.push(at + n_in * n_out);
            at += n_in * n_out + n_out;
            widths.push(n_out);
        }
        if w_at.is_empty() {
            return Err("no dense layers".into());
        }
        Ok(Self { widths, w_at, b_at })
    }

    fn count(&self) -> usize {
        self.w_at.len()
    }

    fn classes(&self) -> usize {
        self.widths[self.count()]
    }
}

/// Whether `device` is flex's, where the fused CPU step runs (ndarray keeps burn's step).
pub fn on_flex(device: &burn::tensor::Device) -> bool {
    matches!(
        device.clone().inner().as_dispatch(),
        burn::backend::DispatchDevice::Flex(_)
    )
}

/// Whether the fused CPU step takes a run of `model` on images of `pixels` numbers: `Err`,
/// in the words of the log line that says so, when it does not (the CNN, say).
pub fn fits(model: &Model, pixels: usize) -> Result<(), String> {
    let meta = param_meta(model);
    Layers::of(&meta, pixels)
        .map(|_| ())
        .map_err(|why| format!("the fused CPU step takes MLPs, not a model with {why}"))
}

/// One batch's activations and gradients, allocated once for the run's batch size: every
/// layer's `[rows, out]` pre-activations `z`, hidden outputs after ReLU and dropout `a` and
/// loss gradients `d`, one after another in `acts`.
struct Scratch {
    /// The batch's pixels, `[rows, inputs]`.
    x: Vec<f32>,
    acts: Vec<f32>,
    /// Where each layer's `z`, `a` (hidden layers) and `d` start in `acts`.
    z_at: Vec<usize>,
    a_at: Vec<usize>,
    d_at: Vec<usize>,
    /// Every parameter's gradient (burn's order).
    grads: Vec<f32>,
    /// Each block's sum of the first layer's weight gradient (training only).
    partials: Vec<f32>,
    /// Each row chunk's loss and hit sums.
    sums: Vec<[f32; 2]>,
    /// The batch's labels and each row's prediction.
    labels: Vec<u8>,
    predicted: Vec<u8>,
}

impl Scratch {
    fn new(layers: &Layers, rows: usize, params: usize) -> Self {
        let outs = &layers.widths[1..];
        let mut at = 0;
        let mut place = |widths: &[usize]| -> Vec<usize> {
            widths
                .iter()
                .map(|&n| {
                    at += rows * n;
                    at - rows * n
                })
                .collect()
        };
        let z_at = place(outs);
        let a_at = place(&outs[..outs.len() - 1]);
        let d_at = place(outs);
        Self {
            x: vec![0.0; rows * layers.widths[0]],
            acts: vec![0.0; at],
            z_at,
            a_at,
            d_at,
            grads: vec![0.0; params],
            partials: if params > 0 {
                vec![0.0; BLOCKS * layers.widths[0] * layers.widths[1]]
            } else {
                Vec::new()
            },
            sums: vec![[0.0; 2]; rows.div_ceil(ROW_CHUNK)],
            labels: Vec::with_capacity(rows),
            predicted: vec![0; rows],
        }
    }

    /// Pointers into the buffers for the pieces of a parallel pass, each taking its own rows.
    fn shared(&mut self) -> Shared<'_> {
        Shared {
            x: SharedMut::new(&mut self.x),
            acts: SharedMut::new(&mut self.acts),
            partials: SharedMut::new(&mut self.partials),
            sums: SharedMut::new(&mut self.sums),
            predicted: SharedMut::new(&mut self.predicted),
            z_at: &self.z_at,
            a_at: &self.a_at,
            d_at: &self.d_at,
        }
    }
}

/// [`Scratch`]'s buffers shared by the row chunks of a pass.
struct Shared<'a> {
    x: SharedMut<'a, f32>,
    acts: SharedMut<'a, f32>,
    partials: SharedMut<'a, f32>,
    sums: SharedMut<'a, [f32; 2]>,
    predicted: SharedMut<'a, u8>,
    z_at: &'a [usize],
    a_at: &'a [usize],
    d_at: &'a [usize],
}

/// Rows `first..` of `batch` (as many as `x` holds) into `x`: each image's pixels scaled,
/// padding rows zero, the images a few rows ahead asked into the cache meanwhile.
#[inline(always)]
fn gather(x: &mut [f32], batch: &Rows, first: usize) {
    let (split, indices) = (batch.split, batch.indices);
    let inputs = split.shape.pixels();
    let n_rows = x.len() / inputs;
    for &i in indices.iter().skip(first).take(PREFETCH.min(n_rows)) {
        prefetch_image(split, i as usize);
    }
    for (r, row) in x.chunks_exact_mut(inputs).enumerate() {
        if let Some(&i) = indices
            .get(first + r + PREFETCH)
            .filter(|_| r + PREFETCH < n_rows)
        {
            prefetch_image(split, i as usize);
        }
        match indices.get(first + r) {
            Some(&i) => fill_pixels(split, i as usize, batch.shift, row),
            None => row.fill(0.0),
        }
    }
}

/// The batch a pass runs on: `rows` rows (the run's batch size), the first `labels.len()` of
/// them real: images `indices` of `split`, each moved by `shift` when given.
#[derive(Clone, Copy)]
struct Rows<'a> {
    split: &'a Split,
    indices: &'a [u32],
    labels: &'a [u8],
    shift: Option<Shift>,
    rows: usize,
}

/// What a pass over row chunks does: the forward pass from the first layer to the logits,
/// each real row's loss and hit and its prediction, and for training the loss gradient and
/// the backward pass down to the first layer's pre-activations.
struct Pass<'a> {
    layers: &'a Layers,
    params: &'a [f32],
    /// Each hidden layer's dropout factors for the whole batch (none without dropout).
    masks: &'a [Vec<f32>],
    /// Label smoothing, and the batch's real rows (the loss is their mean).
    smoothing: f32,
    batch_real: usize,
    train: bool,
    /// The vector instructions of the products.
    isa: Isa,
}

impl Pass<'_> {
    /// The pass over every row chunk of `batch`, block by block in parallel (see [`blocks`]
    /// and [`Pass::chunk_with`]); each chunk's loss and hit sums are left in `scratch.sums`,
    /// in training each block's first-layer weight gradient in `scratch.partials`.
    fn batch(&self, scratch: &mut Scratch, batch: &Rows) {
        let shared = scratch.shared();
        team::for_each(blocks(batch.rows).0, &|b| self.block(&shared, b, batch));
    }

    /// [`Pass::block_with`] compiled for the widest instructions this CPU has (the products
    /// choose theirs; this is for the loops around them: pixels, bias, ReLU, the loss).
    fn block(&self, s: &Shared, b: usize, batch: &Rows) {
        match self.isa {
            // SAFETY: `Isa::detect` found the instructions on this CPU.
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 => unsafe { self.block_avx512(s, b, batch) },
            // SAFETY: as above.
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => unsafe { self.block_avx2(s, b, batch) },
            Isa::Any => self.block_with(s, b, batch),
        }
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f,avx2,fma")]
    fn block_avx512(&self, s: &Shared, b: usize, batch: &Rows) {
        self.block_with(s, b, batch);
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma")]
    fn block_avx2(&self, s: &Shared, b: usize, batch: &Rows) {
        self.block_with(s, b, batch);
    }

    /// Block `b`'s row chunks, one after another; in training then the first layer's weight
    /// gradient of the block's rows, while their pixels are in this core's cache.
    #[inline(always)]
    fn block_with(&self, s: &Shared, b: usize, batch: &Rows) {
        let per = blocks(batch.rows).1;
        let chunks = batch.rows.div_ceil(ROW_CHUNK);
        let (from, to) = (b * per, ((b + 1) * per).min(chunks));
        for c in from..to {
            self.chunk_with(s, c, batch);
        }
        if !self.train {
            return;
        }
        let l = self.layers;
        let (inputs, n) = (l.widths[0], l.widths[1]);
        let first = from * ROW_CHUNK;
        let rows = (to * ROW_CHUNK).min(batch.rows) - first;
        // SAFETY: the block's own rows of the pixels and of the first layer's gradient, and
        // its own sum; no other block takes them.
        let (x, d, sum) = unsafe {
            (
                s.x.range(first * inputs, rows * inputs),
                s.acts.range(s.d_at[0] + first * n, rows * n),
                s.partials.range(b * inputs * n, inputs * n),
            )
        };
        // The pixels read transposed: the weight gradient `inputs × n`.
        broadcast_product(sum, x, (1, inputs), d, inputs, rows, n, self.isa);
    }

    /// Each row's loss and hit summed over the real rows (the first `labels.len()`) of a
    /// chunk's `logits`, its prediction into `predicted`, and in training the loss gradient
    /// into `d_last`.
    #[inline(always)]
    fn loss(
        &self,
        logits: &[f32],
        predicted: &mut [u8],
        d_last: &mut [f32],
        labels: &[u8],
    ) -> [f32; 2] {
        let classes = self.layers.classes();
        let mut sums = [0f32; 2];
        for (r, predicted) in predicted.iter_mut().enumerate() {
            let row = &logits[r * classes..(r + 1) * classes];
            let (mut top, mut best) = (row[0], 0);
            for (c, &v) in row.iter().enumerate().skip(1) {
                if v > top {
                    (top, best) = (v, c);
                }
            }
            *predicted = best as u8;
            let total: f32 = row.iter().map(|&v| (v - top).exp()).sum();
            let log_total = top + total.ln();
            let label = labels.get(r).map(|&c| c as usize);
            if let Some(label) = label {
                sums[0] += log_total - row[label];
                sums[1] += f32::from(u8::from(best == label));
            }
            if self.train {
                let d = &mut d_last[r * classes..(r + 1) * classes];
                let real = self.batch_real as f32;
                for (c, (g, &v)) in d.iter_mut().zip(row).enumerate() {
                    *g = match label {
                        Some(label) => {
                            let mut want = self.smoothing / classes as f32;
                            if c == label {
                                want += 1.0 - self.smoothing;
                            }
                            ((v - log_total).exp() - want) / real
                        }
                        None => 0.0,
                    };
                }
            }
        }
        sums
    }

    /// Row chunk `c` of `batch`: its pixels gathered, then the pass.
    #[inline(always)]
    fn chunk_with(&self, s: &Shared, c: usize, batch: &Rows) {
        let (labels, rows) = (batch.labels, batch.rows);
        let l = self.layers;
        let first = c * ROW_CHUNK;
        let n_rows = ROW_CHUNK.min(rows - first);
        let real = labels.len().saturating_sub(first).min(n_rows);
        let labels = labels.get(first..first + real).unwrap_or(&[]);
        let inputs = l.widths[0];
        // SAFETY (every `range` below): each chunk takes rows first..first + n_rows of each
        // buffer, which no other chunk takes.
        let x = unsafe { s.x.range(first * inputs, n_rows * inputs) };
        gather(x, batch, first);
        let layer = |at: &[usize], i: usize| {
            let n = l.widths[i + 1];
            unsafe { s.acts.range(at[i] + first * n, n_rows * n) }
        };
        for i in 0..l.count() {
            let (n_in, n) = (l.widths[i], l.widths[i + 1]);
            let weights = &self.params[l.w_at[i]..l.b_at[i]];
            let bias = &self.params[l.b_at[i]..l.b_at[i] + n];
            let input: &[f32] = if i == 0 { x } else { layer(s.a_at, i - 1) };
            let z = layer(s.z_at, i);
            broadcast_product(z, input, (n_in, 1), weights, n_rows, n_in, n, self.isa);
            for row in z.chunks_exact_mut(n) {
                for (v, b) in row.iter_mut().zip(bias) {
                    *v += b;
                }
            }
            if i + 1 < l.count() {
                let a = layer(s.a_at, i);
                let mask = self.masks.get(i).map(|m| &m[first * n..]);
                for (k, (out, &v)) in a.iter_mut().zip(z.iter()).enumerate() {
                    let relu = v.max(0.0);
                    *out = mask.map_or(relu, |m| relu * m[k]);
                }
            }
        }
        let last = l.count() - 1;
        let logits: &[f32] = layer(s.z_at, last);
        let predicted = unsafe { s.predicted.range(first, n_rows) };
        let d_last = layer(s.d_at, last);
        let sums = self.loss(logits, predicted, d_last, labels);
        let slot = unsafe { s.sums.range(c, 1) };
        slot[0] = sums;
        if !self.train {
            return;
        }
        // Backward through the layers: the gradient into each hidden layer's pre-activations,
        // with the weights as they were before this step.
        for i in (1..l.count()).rev() {
            let (n_in, n) = (l.widths[i], l.widths[i + 1]);
            let weights = &self.params[l.w_at[i]..l.b_at[i]];
            let back = layer(s.d_at, i - 1);
            product(back, layer(s.d_at, i), weights, n_rows, n, n_in, true);
            let z = layer(s.z_at, i - 1);
            let mask = self.masks.get(i - 1).map(|m| &m[first * n_in..]);
            for (k, (g, &z)) in back.iter_mut().zip(z.iter()).enumerate() {
                *g = if z > 0.0 {
                    mask.map_or(*g, |m| *g * m[k])
                } else {
                    0.0
                };
            }
        }
    }
}

/// What [`CpuStep::update`]'s pieces read and write: the batch's activations and gradients,
/// and every parameter's gradient, value and moments (each piece its own range).
struct Update<'a> {
    layers: &'a Layers,
    /// Each block's sum of the first layer's weight gradient.
    partials: &'a [f32],
    acts: &'a [f32],
    a_at: &'a [usize],
    d_at: &'a [usize],
    rows: usize,
    isa: Isa,
    adam: &'a AdamStep,
    grads: SharedMut<'a, f32>,
    params: SharedMut<'a, f32>,
    first: SharedMut<'a, f32>,
    second: SharedMut<'a, f32>,
}

impl Update<'_> {
    /// [`Update::piece_with`] compiled for the widest instructions this CPU has (Adam's loop
    /// and the bias sums; the products choose theirs).
    fn piece(&self, piece: usize) {
        match self.isa {
            // SAFETY: `Isa::detect` found the instructions on this CPU.
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 => unsafe { self.piece_avx512(piece) },
            // SAFETY: as above.
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => unsafe { self.piece_avx2(piece) },
            Isa::Any => self.piece_with(piece),
        }
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f,avx2,fma")]
    fn piece_avx512(&self, piece: usize) {
        self.piece_with(piece);
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma")]
    fn piece_avx2(&self, piece: usize) {
        self.piece_with(piece);
    }

    /// Piece `piece` (in layer order: a layer's chunks of inputs, then its bias): its
    /// gradient summed over the batch, then Adam on its parameters.
    #[inline(always)]
    fn piece_with(&self, mut piece: usize) {
        let (l, rows, acts) = (self.layers, self.rows, self.acts);
        // Piece → (layer, first input or the bias).
        let mut i = 0;
        while piece > l.widths[i].div_ceil(INPUT_CHUNK) {
            piece -= l.widths[i].div_ceil(INPUT_CHUNK) + 1;
            i += 1;
        }
        let (n_in, n) = (l.widths[i], l.widths[i + 1]);
        let d = &acts[self.d_at[i]..self.d_at[i] + rows * n];
        let (at, len) = if piece < n_in.div_ceil(INPUT_CHUNK) {
            let k0 = piece * INPUT_CHUNK;
            (l.w_at[i] + k0 * n, INPUT_CHUNK.min(n_in - k0) * n)
        } else {
            (l.b_at[i], n)
        };
        // SAFETY: the pieces cover disjoint ranges of the gradients, parameters and moments.
        let g = unsafe { self.grads.range(at, len) };
        if at == l.b_at[i] {
            g.fill(0.0);
            for row in d.chunks_exact(n) {
                for (s, v) in g.iter_mut().zip(row) {
                    *s += v;
                }
            }
        } else if i == 0 {
            // The blocks' sums, added in block order.
            let (size, from) = (n_in * n, at - l.w_at[0]);
            let (blocks, _) = blocks(rows);
            g.copy_from_slice(&self.partials[from..from + len]);
            for sum in self.partials.chunks_exact(size).take(blocks).skip(1) {
                for (g, v) in g.iter_mut().zip(&sum[from..from + len]) {
                    *g += v;
                }
            }
        } else {
            let k0 = (at - l.w_at[i]) / n;
            let input = &acts[self.a_at[i - 1]..self.a_at[i - 1] + rows * n_in];
            // The gradient of inputs k0.. by the batch's rows: the input read transposed.
            broadcast_product(g, &input[k0..], (1, n_in), d, len / n, rows, n, self.isa);
        }
        // SAFETY: as above.
        let (p, m, v) = unsafe {
            (
                self.params.range(at, len),
                self.first.range(at, len),
                self.second.range(at, len),
            )
        };
        for (((p, m), v), &g) in p
            .iter_mut()
            .zip(m.iter_mut())
            .zip(v.iter_mut())
            .zip(g.iter())
        {
            self.adam.apply(p, m, v, g);
        }
    }
}

/// A network being trained by the fused CPU step: its weights and Adam's moments, flat in
/// burn's order, and the step's buffers.
pub struct CpuStep {
    layers: Layers,
    params: Vec<f32>,
    first: Vec<f32>,
    second: Vec<f32>,
    scratch: Scratch,
    /// The training split, read as the steps gather their batches.
    split: Split,
    /// Rows a batch (the run's batch size; a short batch is padded).
    rows: usize,
    sums: [f32; 2],
    counted: usize,
    /// Adam steps taken (burn's `time`).
    time: usize,
    params_meta: Vec<ParamMeta>,
    weight_decay: f32,
    label_smoothing: f32,
    /// The vector instructions of the products, found once.
    isa: Isa,
}

impl CpuStep {
    /// Takes over `model` and `optimizer` (their values are copied out) to train on `train` in
    /// batches of `config.batch_size` rows.
    pub fn new(
        model: &Model,
        optimizer: &ModuleOptimizer,
        config: &TrainConfig,
        train: &Split,
    ) -> Result<Self, CpuStepError> {
        let (params_meta, params) = flat_parameters(model)?;
        let layers = Layers::of(&params_meta, train.shape.pixels()).map_err(CpuStepError::Model)?;
        let moments = Moments::of(optimizer, &params_meta)?;
        let rows = config.batch_size;
        Ok(Self {
            scratch: Scratch::new(&layers, rows, params.len()),
            layers,
            params,
            first: moments.first,
            second: moments.second,
            split: train.clone(),
            rows,
            sums: [0.0; 2],
            counted: 0,
            time: moments.time,
            params_meta,
            weight_decay: config.weight_decay as f32,
            label_smoothing: config.label_smoothing as f32,
            isa: Isa::detect(),
        })
    }

    /// Starts an epoch's running sums from `sums` over `count` images (zero, or where an
    /// interrupted epoch stood).
    pub fn start_epoch(&mut self, sums: [f32; 2], count: usize) {
        self.sums = sums;
        self.counted = count;
    }

    /// One training step on the images `indices` (at most a batch; the rest is padding), each
    /// moved by `shift` when given, at learning rate `lr`, with the hidden layers' dropout
    /// factors `masks` (one `[batch, width]` row-major vector per hidden layer; none without
    /// dropout).
    pub fn step(&mut self, indices: &[u32], shift: Option<Shift>, lr: f64, masks: &[Vec<f32>]) {
        self.time += 1;
        let split = &self.split;
        let scratch = &mut self.scratch;
        scratch.labels.clear();
        scratch
            .labels
            .extend(indices.iter().map(|&i| split.labels()[i as usize]));
        let pass = Pass {
            layers: &self.layers,
            params: &self.params,
            masks,
            smoothing: self.label_smoothing,
            batch_real: indices.len(),
            train: true,
            isa: self.isa,
        };
        let labels = std::mem::take(&mut scratch.labels);
        let batch = Rows {
            split,
            indices,
            labels: &labels,
            shift,
            rows: self.rows,
        };
        pass.batch(scratch, &batch);
        scratch.labels = labels;
        for s in &scratch.sums {
            self.sums[0] += s[0];
            self.sums[1] += s[1];
        }
        let adam = AdamStep::new(self.time, lr, f64::from(self.weight_decay));
        self.update(&adam);
        self.counted += indices.len();
    }

    /// The weight and bias gradients, summed over the batch, and Adam on every parameter:
    /// in pieces of [`INPUT_CHUNK`] inputs of a layer's weights, and each layer's bias.
    fn update(&mut self, adam: &AdamStep) {
        let l = &self.layers;
        let s = &mut self.scratch;
        let pieces: usize = l.widths[..l.count()]
            .iter()
            .map(|n_in| n_in.div_ceil(INPUT_CHUNK) + 1)
            .sum();
        let update = Update {
            layers: l,
            partials: &s.partials,
            acts: &s.acts,
            a_at: &s.a_at,
            d_at: &s.d_at,
            rows: self.rows,
            isa: self.isa,
            adam,
            grads: SharedMut::new(&mut s.grads),
            params: SharedMut::new(&mut self.params),
            first: SharedMut::new(&mut self.first),
            second: SharedMut::new(&mut self.second),
        };
        team::for_each(pieces, &|piece| update.piece(piece));
    }

    /// Writes the weights into `model` (keeping its parameter ids) and returns burn's
    /// optimizer state for them: what a checkpoint or an evaluation needs.
    pub fn store(
        &self,
        model: &mut Model,
        config: &TrainConfig,
    ) -> Result<ModuleOptimizer, CpuStepError> {
        let moments = Moments {
            time: self.time,
            first: self.first.clone(),
            second: self.second.clone(),
        };
        *model = set_flat_parameters(model.clone(), &self.params);
        Ok(moments.into_optimizer(config, &self.params_meta)?)
    }
}

impl RunningSums for CpuStep {
    fn sums(&self) -> Result<([f32; 2], usize), ReadError> {
        Ok((self.sums, self.counted))
    }
}

/// A mutable slice handed to the pieces of a parallel loop, each taking ranges no other
/// piece takes.
struct SharedMut<'a, T> {
    ptr: *mut T,
    len: usize,
    _slice: std::marker::PhantomData<&'a mut [T]>,
}

// SAFETY: the pieces that share it touch disjoint ranges (see `range`), of `Send` values.
unsafe impl<T: Send> Sync for SharedMut<'_, T> {}

impl<'a, T> SharedMut<'a, T> {
    fn new(slice: &'a mut [T]) -> Self {
        Self {
            ptr: slice.as_mut_ptr(),
            len: slice.len(),
            _slice: std::marker::PhantomData,
        }
    }

    /// `len` values from `at`.
    ///
    /// # Safety
    /// No two callers may hold overlapping ranges at once.
    #[allow(clippy::mut_from_ref)]
    unsafe fn range(&self, at: usize, len: usize) -> &'a mut [T] {
        assert!(at + len <= self.len, "range {at}+{len} past {}", self.len);
        // SAFETY: in bounds (asserted), within the borrowed slice; disjoint from every other
        // range in use (the caller's promise).
        unsafe { std::slice::from_raw_parts_mut(self.ptr.add(at), len) }
    }
}

/// Loss, accuracy and each image's predicted class for `model` (an MLP) on `data`, through
/// the same forward pass as the fused CPU step, in batches of `batch` images.
pub fn evaluate(
    model: &Model,
    data: &Split,
    batch: usize,
) -> Result<(Metrics, Vec<u8>), CpuStepError> {
    let (meta, params) = flat_parameters(model)?;
    let layers = Layers::of(&meta, data.shape.pixels()).map_err(CpuStepError::Model)?;
    let rows = batch.min(data.len()).max(1);
    let mut scratch = Scratch::new(&layers, rows, 0);
    let pass = Pass {
        layers: &layers,
        params: &params,
        masks: &[],
        smoothing: 0.0,
        batch_real: 0,
        train: false,
        isa: Isa::detect(),
    };
    let (mut loss, mut correct) = (0f64, 0f64);
    let mut predicted = Vec::with_capacity(data.len());
    let order: Vec<u32> = (0..data.len() as u32).collect();
    for indices in order.chunks(rows) {
        let labels: Vec<u8> = indices.iter().map(|&i| data.labels()[i as usize]).collect();
        let batch = Rows {
            split: data,
            indices,
            labels: &labels,
            shift: None,
            rows,
        };
        pass.batch(&mut scratch, &batch);
        for s in &scratch.sums {
            loss += f64::from(s[0]);
            correct += f64::from(s[1]);
        }
        predicted.extend_from_slice(&scratch.predicted[..indices.len()]);
    }
    let count = data.len();
    Ok((
        Metrics {
            loss: loss / count as f64,
            accuracy: correct / count as f64,
            count,
        },
        predicted,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gpu::fused::tests::{
        assert_same_losses, decided, distance, flat, run, small, small_config,
    };
    use crate::model::Architecture;
    use crate::recipe::Schedule;
    use crate::training::StepMethod;
    use burn::module::Module;
    use burn::tensor::Device;

    /// The recipes the fused CPU step is checked on: the article's, every training flag at
    /// once (a padded last batch too: 300 images in batches of 64), a wide layer, none.
    fn recipes() -> Vec<(&'static str, TrainConfig)> {
        vec![
            ("article", small_config()),
            (
                "every flag",
                TrainConfig {
                    hidden: vec![40, 20, 12],
                    schedule: Schedule::Cosine,
                    augment: 2,
                    weight_decay: 0.05,
                    dropout: 0.3,
                    label_smoothing: 0.1,
                    lr: 3e-3,
                    batch_size: 64,
                    ..small_config()
                },
            ),
            (
                "a hidden layer of 300",
                TrainConfig {
                    hidden: vec![300],
                    ..small_config()
                },
            ),
            (
                "no hidden layer",
                TrainConfig {
                    hidden: vec![],
                    ..small_config()
                },
            ),
        ]
    }

    /// After two epochs (20 Adam steps) the fused CPU step's weights are burn's generic
    /// step's to float rounding (within 2e-6 of each other), for every recipe, and so are the
    /// losses (1e-5 relative); the CNN falls back to burn's step.
    #[test]
    fn the_fused_cpu_step_matches_burns_generic_step() {
        let device = Device::flex();
        for (name, config) in recipes() {
            let sets = small(&config);
            let fused = run(&config, &sets, &device, StepMethod::Fused);
            let generic = run(&config, &sets, &device, StepMethod::Generic);
            let (f, g) = (flat(&fused.model), flat(&generic.model));
            let (max, far) = distance(&f, &g, 1e-5);
            let scale = g.iter().fold(0f32, |m, w| m.max(w.abs()));
            eprintln!(
                "{name}: largest weight difference {max:e} ({:e} of the largest weight), {:.3} % above 1e-5",
                max / scale,
                far * 100.0
            );
            // Measured: at most 6.9e-7 (a hidden layer of 300), 1.5e-7 with every flag.
            assert!(max < 2e-6, "{name}: weights differ by up to {max}");
            assert_eq!(far, 0.0);
            assert_same_losses(name, &fused, &generic, 1e-5);
        }
        let cnn = TrainConfig {
            model: Architecture::Cnn,
            hidden: vec![],
            ..small_config()
        };
        let sets = small(&cnn);
        let session =
            crate::session::Session::new(&cnn, &crate::data::DataInfo::mnist(), &device).unwrap();
        let feed = decided(StepMethod::Fused, &cnn, &sets, &device, &session);
        assert_eq!(feed.step, StepMethod::Generic, "the CNN takes burn's step");
    }

    /// The step's sums do not depend on the number of threads: one thread and two give the
    /// same weights to the bit.
    #[test]
    fn the_fused_cpu_step_gives_the_same_bits_on_one_thread_and_two() {
        let device = Device::flex();
        let (_, config) = recipes().swap_remove(1);
        let sets = small(&config);
        let on = |threads: usize| {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap();
            pool.install(|| flat(&run(&config, &sets, &device, StepMethod::Fused).model))
        };
        assert_eq!(on(1), on(2));
    }

    /// Validation and test go through the same forward pass: the fused evaluation gives
    /// burn's loss and accuracy and the same predictions.
    #[test]
    fn the_fused_cpu_evaluation_matches_burns() {
        let device = Device::flex();
        let config = small_config();
        let sets = small(&config);
        let session = run(&config, &sets, &device, StepMethod::Generic);
        let model = session.model.valid();
        let ours = evaluate(&model, &sets.valid, 64).unwrap();
        let data = crate::loader::Assembler::Host {
            split: sets.valid.clone(),
            device: device.clone(),
        };
        let generic = crate::training::Feed {
            prefetch: 0,
            gather: crate::gpu::gather::GatherMethod::Host,
            step: StepMethod::Generic,
        };
        let theirs = crate::training::evaluate(&model, &data, &generic).unwrap();
        assert_eq!(ours.1, theirs.1, "predictions");
        assert_eq!(ours.0.accuracy, theirs.0.accuracy);
        assert!((ours.0.loss - theirs.0.loss).abs() <= 1e-6 * theirs.0.loss);
    }
}
