//! The fused training step on a wgpu device: a whole step (gather, forward, loss, backward,
//! Adam, metrics) in a few dispatches of hand-written WGSL (`shaders/mlp_*.wgsl`,
//! `shaders/cnn_*.wgsl`), for the MLP and for the CNN.
//!
//! burn's generic step is some fifty dispatches even with fusion (over a hundred for the CNN),
//! each a kernel launch that costs a GPU 5–10 µs whatever it computes; for networks this small
//! that is the whole step. The fused step follows tiny-cuda-nn's "fully fused MLP" (Müller et
//! al., 2021) as far as WGSL allows (no grid-wide barrier, so the first dense layer, with most
//! of the MLP's weights, gets kernels of its own). The MLP's step is four dispatches, each
//! spread over at least 32 workgroups at a batch of 256 (a workgroup runs on one of a GPU's
//! compute units):
//!
//! 1. `mlp_forward`: the batch's pixels gathered from the resident split (shifted for
//!    `--augment`), and the first layer's pre-activations, four rows per workgroup;
//! 2. `mlp_head`: every later layer forward, the softmax cross-entropy and its gradient, each
//!    row's loss and hit, and the backward pass, four rows per workgroup;
//! 3. `mlp_gradients`: the gradient of every parameter but the first layer's weights, summed
//!    over the rows, and Adam; the epoch's loss and hit sums;
//! 4. `mlp_update`: the first layer's weight gradient, each weight's Adam update as soon as
//!    its gradient is known.
//!
//! The CNN's step adds, before them, one dispatch for the images and one per convolution
//! block (convolution, bias, ReLU and pooling fused), and after the gradients the gradient
//! into the dense layer's input through the last pooling, then per block the gradient into
//! its input (through the pooling below) and its weight gradients with Adam — for the first
//! block, whose weights are few, in slices of the batch added up by one more dispatch:
//! fifteen dispatches in all.
//!
//! Weights and Adam's moments stay on the device in flat buffers; they come back into burn's
//! `Model` and `ModuleOptimizer` (the same checkpoint format as the generic step's) at the end
//! of each epoch and on an interrupt. The numbers are burn's: the same Adam in the same order
//! of operations, the same loss, the same masks and shifts.

mod layout;

use std::sync::Arc;

use burn::cubecl::server::Handle;
use burn::optim::ModuleOptimizer;

use crate::backend::read::ReadError;
use crate::batch::Shift;
use crate::data::ImageShape;
use crate::flat::{
    Moments, ParamMeta, StateError, flat_parameters, param_meta, set_flat_parameters,
};
use crate::gpu::gather::{ImageLayout, Resident, batch_rows};
use crate::gpu::kernels::Gpu;
use crate::metrics::{Metrics, RunningSums};
use crate::model::{Architecture, Model};
use crate::recipe::{AdamStep, TrainConfig};
use layout::{
    BLOCK, HEAD_WORKGROUP, Kernel, ROWS_AT, Source, Variant, WEIGHT_SUMS, WEIGHTS_WORKGROUP,
    WORKGROUP, spread,
};

/// The widest hidden layer of the MLP the fused step takes: its later layers run in one
/// workgroup, which suits the article's small network and not a wide one.
pub const MAX_WIDTH: usize = 256;

/// The largest batch the fused step takes: one dispatch of the CNN's first convolution is
/// then 50,176 workgroups, within the 65,535 a GPU must accept.
pub const MAX_BATCH: usize = 4096;

/// The largest buffer the fused step binds: WebGPU's guaranteed storage binding size, 128 MiB
/// (the CNN's first convolution's gradient reaches it near a batch of 2,600).
const MAX_BUFFER_BYTES: usize = 128 << 20;

/// Whether the fused step takes a run of `config` training `model` on `train_len` images:
/// `Err`, in the words of the log line that says so, when it does not. `gather_kernel`: the
/// images are gathered on the device by the WGSL kernel. Checked once per run, before
/// anything is uploaded.
pub fn fits(
    config: &TrainConfig,
    gather_kernel: bool,
    model: &Model,
    shape: ImageShape,
    train_len: usize,
    device: &burn::tensor::Device,
) -> Result<(), String> {
    if !gather_kernel {
        return Err("--gather ops|host are reference paths".into());
    }
    if config.batch_size > MAX_BATCH {
        return Err(format!(
            "the fused step takes batches of up to {MAX_BATCH} images, not {}",
            config.batch_size
        ));
    }
    if config.model == Architecture::Mlp
        && let Some(w) = config.hidden.iter().find(|&&w| w > MAX_WIDTH)
    {
        return Err(format!(
            "the fused step covers hidden layers up to {MAX_WIDTH} units, not {w}"
        ));
    }
    let Some(images) = ImageLayout::of(shape, train_len) else {
        return Err(format!(
            "{train_len} images of {shape} need more than {} buffers of 128 MiB",
            crate::gpu::gather::MAX_CHUNKS
        ));
    };
    let meta = param_meta(model);
    let variant = training_variant(&meta, config, train_len, images)
        .map_err(|why| format!("the fused step cannot take this model: {why}"))?;
    let Some(gpu) = Gpu::of(device) else {
        return Ok(());
    };
    let eval = Variant::new(&meta, EVAL_ROWS.min(train_len), train_len, false, images)
        .map_err(|why| format!("the fused evaluation cannot take this model: {why}"))?;
    within_limits(&[variant, eval], gpu.limits())
}

/// Every kernel of a variant: the training step's and the evaluation's.
fn kernels(v: &Variant) -> Vec<Kernel> {
    let mut kernels = vec![
        Kernel::DenseForward,
        Kernel::Head,
        Kernel::Gradients,
        Kernel::Eval,
        Kernel::DenseUpdate,
    ];
    if !v.convs.is_empty() {
        kernels.extend([Kernel::Gather, Kernel::FeaturesGrad]);
        for (c, conv) in v.convs.iter().enumerate() {
            kernels.extend([Kernel::ConvForward(c), Kernel::ConvWeights(c)]);
            if c > 0 {
                kernels.push(Kernel::ConvData(c));
            }
            if conv.slices() > 1 {
                kernels.push(Kernel::ConvWeightsSum(c));
            }
        }
    }
    kernels
}

/// A kernel's WGSL, complete.
fn kernel_source(v: &Arc<Variant>, kernel: Kernel) -> String {
    let source = Source::<()> {
        variant: v.clone(),
        kernel,
        name: std::marker::PhantomData,
    };
    burn::backend::wgpu::KernelSource::source(&source).complete()
}

/// Whether every kernel of `variants` stays within a device's `limits` (storage buffers a
/// kernel, workgroup memory, invocations a workgroup), read from the generated WGSL; `Err`
/// names the first need past a limit, before anything is launched.
fn within_limits(variants: &[Variant], limits: (usize, usize, usize)) -> Result<(), String> {
    let (bindings, shared, units) = limits;
    for v in variants {
        let v = Arc::new(v.clone());
        for kernel in kernels(&v) {
            let source = kernel_source(&v, kernel);
            let bound = source.matches("@binding(").count();
            let memory = workgroup_bytes(&source);
            let size = source
                .split("@workgroup_size(")
                .nth(1)
                .and_then(|rest| rest.split(',').next())
                .and_then(|n| n.trim().parse::<usize>().ok())
                .unwrap_or(0);
            if bound > bindings {
                return Err(format!(
                    "its {kernel:?} kernel binds {bound} storage buffers, this adapter allows {bindings}"
                ));
            }
            if memory > shared {
                return Err(format!(
                    "its {kernel:?} kernel needs {memory} bytes of workgroup memory, this adapter has {shared}"
                ));
            }
            if size > units {
                return Err(format!(
                    "its {kernel:?} kernel runs {size} invocations a workgroup, this adapter allows {units}"
                ));
            }
        }
    }
    Ok(())
}

/// The kernels' variant for training with batches of `config.batch_size` on `count` images,
/// or why the fused step cannot take the model.
fn training_variant(
    meta: &[ParamMeta],
    config: &TrainConfig,
    count: usize,
    images: ImageLayout,
) -> Result<Variant, String> {
    let batch = config.batch_size;
    let variant = Variant::new(meta, batch, count, config.dropout > 0.0, images)?;
    let bytes = variant.largest_buffer() * size_of::<f32>();
    if bytes > MAX_BUFFER_BYTES {
        return Err(format!(
            "a batch of {batch} needs a {} MiB buffer, past the {} MiB a GPU must bind",
            bytes >> 20,
            MAX_BUFFER_BYTES >> 20
        ));
    }
    if let Some(w) = variant.layout.widths[1..]
        .iter()
        .find(|&&w| w > MAX_WIDTH && variant.convs.is_empty())
    {
        return Err(format!("a hidden layer of {w} units"));
    }
    Ok(variant)
}

/// Why the fused step could not start or report.
#[derive(Debug, thiserror::Error)]
pub enum FusedError {
    /// The model does not fit the fused kernels.
    #[error("the fused step cannot take this model: {0}")]
    Model(String),
    /// The split is not resident for the WGSL kernels.
    #[error("the fused step needs the training set resident for --gather kernel")]
    NotResident,
    /// Reading weights or optimizer state back failed.
    #[error(transparent)]
    Read(#[from] ReadError),
    /// burn's optimizer state could not be converted.
    #[error(transparent)]
    State(#[from] StateError),
    /// A dispatch binds a training buffer where none is (an evaluation): a mistake in the
    /// dispatch lists, reported rather than launched.
    #[error("the fused {0} kernel binds the training step's buffers outside training")]
    Unbound(String),
}

/// One convolution block's buffers: its pooled output (the dense input, `x`, for the last) and
/// which window position won each pooling.
struct ConvBuffers {
    pooled: Handle,
    winners: Handle,
}

/// A network on the device and what its forward pass needs: the resident split, the weights,
/// the activations. Shared by the training step and the evaluation.
struct Net {
    gpu: Gpu,
    variant: Arc<Variant>,
    /// The resident images, one buffer a chunk.
    images: Vec<Handle>,
    labels: Handle,
    params: Handle,
    x: Handle,
    z: Handle,
    /// The CNN's images, gathered (a placeholder for the MLP).
    image: Handle,
    convs: Vec<ConvBuffers>,
    /// Each row's loss, hit and prediction (the evaluation's output).
    results: Handle,
}

impl Net {
    /// `values` (burn's order) on the device for `variant`, over the resident split `data`.
    fn new(variant: Variant, values: &[f32], data: &Resident) -> Result<Self, FusedError> {
        let (images, labels, _) = data.buffers().ok_or(FusedError::NotResident)?;
        let gpu = data.gpu().clone();
        let buffer = |b: Buffer| gpu.empty(buffer_words(&variant, b).max(1) * 4);
        let convs = (0..variant.convs.len())
            .map(|c| ConvBuffers {
                pooled: buffer(Buffer::Pooled(c)),
                winners: buffer(Buffer::Winners(c)),
            })
            .collect();
        Ok(Self {
            images: images.to_vec(),
            labels: labels.clone(),
            params: gpu.upload(&variant.to_device(values)),
            x: buffer(Buffer::X),
            z: buffer(Buffer::Z),
            image: buffer(Buffer::Image),
            results: buffer(Buffer::Results),
            convs,
            gpu,
            variant: Arc::new(variant),
        })
    }

    fn launch(&self, kernel: Kernel, workgroup: u32, groups: usize, buffers: &[&Handle]) {
        use layout::names;
        // Each kernel under its own type, so that cubecl's logs name it.
        macro_rules! launch_as {
            ($($variant:ident),*) => {
                match kernel {
                    $(Kernel::$variant { .. } => self.gpu.launch(
                        Source::<names::$variant> {
                            variant: self.variant.clone(),
                            kernel,
                            name: std::marker::PhantomData,
                        },
                        workgroup,
                        groups as u32,
                        buffers,
                    ),)*
                }
            };
        }
        launch_as!(
            Gather,
            DenseForward,
            Head,
            Gradients,
            Eval,
            DenseUpdate,
            ConvForward,
            FeaturesGrad,
            ConvData,
            ConvWeights,
            ConvWeightsSum
        );
    }

    /// Runs `dispatches` with the step buffer `step` and, for a training step, its buffers
    /// `training`.
    fn run(
        &self,
        dispatches: &[Dispatch],
        step: &Handle,
        training: Option<&Training>,
    ) -> Result<(), FusedError> {
        for d in dispatches {
            let buffers = d
                .buffers
                .iter()
                .map(|&b| self.handle(b, step, training))
                .collect::<Option<Vec<&Handle>>>()
                .ok_or_else(|| FusedError::Unbound(format!("{:?}", d.kernel)))?;
            self.launch(d.kernel, d.workgroup, d.groups, &buffers);
        }
        Ok(())
    }

    /// The buffer in role `b`: the step buffer `step`, the network's, or one of `training`'s.
    fn handle<'a>(
        &'a self,
        b: Buffer,
        step: &'a Handle,
        training: Option<&'a Training>,
    ) -> Option<&'a Handle> {
        Some(match b {
            Buffer::Step => step,
            Buffer::Images(c) => self.images.get(c)?,
            Buffer::Image => &self.image,
            Buffer::Params => &self.params,
            Buffer::X => &self.x,
            Buffer::Z => &self.z,
            Buffer::Pooled(c) => &self.convs.get(c)?.pooled,
            Buffer::Winners(c) => &self.convs.get(c)?.winners,
            Buffer::Labels => &self.labels,
            Buffer::Results => &self.results,
            Buffer::Moment1 => &training?.moment_1,
            Buffer::Moment2 => &training?.moment_2,
            Buffer::D => &training?.d,
            Buffer::Losses => &training?.losses,
            Buffer::Sums => &training?.sums,
            Buffer::Gradient(c) => training?.gradients.get(c)?,
            Buffer::Partials(c) => training?.partials.get(c)?,
        })
    }

    /// The step buffer for the images `indices` (the rest of the rows padding), each moved by
    /// `shift`, after the settings words `settings` (mlp_layout.wgsl).
    fn step_words(
        &self,
        settings: [u32; ROWS_AT],
        indices: &[u32],
        shift: Option<Shift>,
    ) -> Vec<u32> {
        step_words(&self.variant, settings, indices, shift)
    }
}

/// The training step's own buffers on the device: Adam's moments, gradients, sums.
struct Training {
    /// Adam's moments, laid out as the parameters.
    moment_1: Handle,
    moment_2: Handle,
    /// Loss gradients of the dense layers' pre-activations.
    d: Handle,
    /// Loss gradients of each convolution's outputs.
    gradients: Vec<Handle>,
    /// Each convolution's weight gradient sums by slice (unused when it has one slice).
    partials: Vec<Handle>,
    /// Each row's loss and hit.
    losses: Handle,
    /// The epoch's running loss and hit sums.
    sums: Handle,
}

/// A network being trained by the fused step: weights, Adam's moments and the step's scratch
/// buffers on the device.
pub struct FusedStep {
    net: Net,
    training: Training,
    /// The step's dispatches, the same every step.
    dispatches: Vec<Dispatch>,
    /// Images counted into the sums.
    counted: usize,
    /// Adam steps taken (burn's `time`).
    time: usize,
    /// The model's parameters: id and shape, in module order.
    params_meta: Vec<ParamMeta>,
    weight_decay: f32,
    label_smoothing: f32,
}

impl FusedStep {
    /// Takes over `model` and `optimizer` (their values move to the device) to train on the
    /// resident split `train` in batches of `config.batch_size` rows.
    pub fn new(
        model: &Model,
        optimizer: &ModuleOptimizer,
        config: &TrainConfig,
        train: &Resident,
    ) -> Result<Self, FusedError> {
        let (params_meta, values) = flat_parameters(model)?;
        let (_, _, images) = train.buffers().ok_or(FusedError::NotResident)?;
        let variant = training_variant(&params_meta, config, train.len(), images)
            .map_err(FusedError::Model)?;
        let moments = Moments::of(optimizer, &params_meta)?;
        let net = Net::new(variant, &values, train)?;
        let (gpu, v) = (&net.gpu, &net.variant);
        let rows = v.layout.rows;
        let gradients = v
            .convs
            .iter()
            .map(|c| gpu.empty(rows * c.side * c.side * c.outputs * size_of::<f32>()))
            .collect();
        let partials = v
            .convs
            .iter()
            .map(|c| gpu.empty(c.slices() * c.weight_groups() * WEIGHT_SUMS * 16))
            .collect();
        let training = Training {
            gradients,
            partials,
            moment_1: gpu.upload(&v.to_device(&moments.first)),
            moment_2: gpu.upload(&v.to_device(&moments.second)),
            d: gpu.empty(v.layout.activations * size_of::<f32>()),
            losses: gpu.empty(rows * 2 * size_of::<f32>()),
            sums: gpu.upload(&[0f32; 2]),
        };
        Ok(Self {
            dispatches: training_dispatches(v),
            training,
            counted: 0,
            time: moments.time,
            params_meta,
            weight_decay: config.weight_decay as f32,
            label_smoothing: config.label_smoothing as f32,
            net,
        })
    }

    /// Starts an epoch's running sums from `sums` over `count` images (zero, or where an
    /// interrupted epoch stood).
    pub fn start_epoch(&mut self, sums: [f32; 2], count: usize) {
        self.training.sums = self.net.gpu.upload(&sums);
        self.counted = count;
    }

    /// Words of dropout factors in the step buffer: rows (padded) × hidden units, 0 without
    /// dropout.
    fn mask_len(&self) -> usize {
        let v = &self.net.variant;
        if v.dropout { v.layout.masks } else { 0 }
    }

    /// Bytes sent to the device with each step: the step buffer (settings, image numbers,
    /// shifts, dropout factors).
    pub fn upload_bytes(&self) -> usize {
        (ROWS_AT + 2 * self.net.variant.layout.rows + self.mask_len()) * size_of::<u32>()
    }

    /// One training step on the images `indices` (at most a batch; the rest is padding), each
    /// moved by `shift` when given, at learning rate `lr`, with the hidden dense layers'
    /// dropout factors `masks` (one `[batch, width]` row-major vector per hidden layer; none
    /// without dropout).
    pub fn step(
        &mut self,
        indices: &[u32],
        shift: Option<Shift>,
        lr: f64,
        masks: &[Vec<f32>],
    ) -> Result<(), FusedError> {
        let net = &self.net;
        let v = net.variant.clone();
        let l = &v.layout;
        let rows = l.rows;
        self.time += 1;
        let adam = AdamStep::new(self.time, lr, f64::from(self.weight_decay));
        let settings = [
            adam.lr.to_bits(),
            adam.correction.to_bits(),
            adam.epsilon.to_bits(),
            adam.decay.to_bits(),
            indices.len() as u32,
            self.label_smoothing.to_bits(),
            0,
            0,
        ];
        let mut words = net.step_words(settings, indices, shift);
        if v.dropout {
            for (mask, width) in masks.iter().zip(&l.widths[1..]) {
                words.extend(mask.iter().map(|m| m.to_bits()));
                // Padding rows past the batch: dropped (their gradient is zero anyway).
                words.extend(std::iter::repeat_n(
                    0,
                    (rows * width).saturating_sub(mask.len()),
                ));
            }
        }
        let step = net.gpu.upload(&words);
        net.run(&self.dispatches, &step, Some(&self.training))?;
        self.counted += indices.len();
        Ok(())
    }

    /// Writes the device's weights into `model` (keeping its parameter ids) and returns burn's
    /// optimizer state for them: what a checkpoint or an evaluation needs.
    pub fn store(
        &self,
        model: &mut Model,
        config: &TrainConfig,
    ) -> Result<ModuleOptimizer, FusedError> {
        let (gpu, v) = (&self.net.gpu, &self.net.variant);
        let values = v.to_burn(&gpu.read_f32(&self.net.params)?);
        let moments = Moments {
            time: self.time,
            first: v.to_burn(&gpu.read_f32(&self.training.moment_1)?),
            second: v.to_burn(&gpu.read_f32(&self.training.moment_2)?),
        };
        *model = set_flat_parameters(model.clone(), &values);
        Ok(moments.into_optimizer(config, &self.params_meta)?)
    }
}

/// A buffer of the forward pass and the evaluation, by role.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Buffer {
    /// Settings words, then each row's image number and shift (mlp_layout.wgsl).
    Step,
    /// A chunk of the resident images (`u8`, four to a word).
    Images(usize),
    /// The CNN's gathered images.
    Image,
    /// The parameters, laid out for the device.
    Params,
    /// The first dense layer's input.
    X,
    /// Every dense layer's pre-activations.
    Z,
    /// Convolution block `c`'s pooled output.
    Pooled(usize),
    /// Which window position won each of block `c`'s poolings.
    Winners(usize),
    /// The split's labels.
    Labels,
    /// Each row's loss, hit and prediction.
    Results,
    /// Adam's first moments (training).
    Moment1,
    /// Adam's second moments (training).
    Moment2,
    /// The dense layers' loss gradients (training).
    D,
    /// Each row's loss and hit (training).
    Losses,
    /// The epoch's running sums (training).
    Sums,
    /// Convolution `c`'s output gradient (training).
    Gradient(usize),
    /// Convolution `c`'s weight gradient sums by slice (training).
    Partials(usize),
}

/// Words (4 bytes) of the scratch buffers of `v` (0 for those that come from elsewhere).
fn buffer_words(v: &Variant, b: Buffer) -> usize {
    let l = &v.layout;
    let pooled = |c: usize| {
        let conv = &v.convs[c];
        l.rows * conv.pooled() * conv.pooled() * conv.outputs
    };
    match b {
        Buffer::X => l.rows * l.widths[0],
        Buffer::Z => l.activations,
        Buffer::Image if !v.convs.is_empty() => l.rows * v.images.shape.pixels(),
        Buffer::Pooled(c) | Buffer::Winners(c) => pooled(c),
        Buffer::Results => 3 * l.rows,
        Buffer::Params => v.device_params(),
        Buffer::Images(_) => v.count.min(v.images.chunk) * v.images.words,
        Buffer::Labels => v.count,
        Buffer::Step | Buffer::Image => 0,
        // The training step's own (never handed to a page).
        Buffer::Moment1
        | Buffer::Moment2
        | Buffer::D
        | Buffer::Losses
        | Buffer::Sums
        | Buffer::Gradient(_)
        | Buffer::Partials(_) => 0,
    }
}

/// One dispatch: the kernel, its workgroup size, how many workgroups, the buffers bound in
/// order (binding 0, 1, …).
#[derive(Debug, Clone)]
struct Dispatch {
    kernel: Kernel,
    workgroup: u32,
    groups: usize,
    buffers: Vec<Buffer>,
}

/// The forward pass up to the first dense layer's pre-activations, as dispatches: the
/// convolution blocks (gathering the images first), then the dense layer (gathering the
/// MLP's images). What the device runs and what a page is given.
fn forward_dispatches(v: &Variant) -> Vec<Dispatch> {
    let rows = v.layout.rows;
    let over = |kernel, items: usize, buffers| Dispatch {
        kernel,
        workgroup: WORKGROUP,
        groups: items.div_ceil(WORKGROUP as usize),
        buffers,
    };
    let more_images = (1..v.images.chunks).map(Buffer::Images);
    let mut dispatches = Vec::new();
    if !v.convs.is_empty() {
        let mut buffers = vec![Buffer::Step, Buffer::Images(0), Buffer::Image];
        buffers.extend(more_images.clone());
        dispatches.push(over(
            Kernel::Gather,
            rows * v.images.shape.pixels() / 4,
            buffers,
        ));
    }
    let last = v.convs.len().wrapping_sub(1);
    for (c, conv) in v.convs.iter().enumerate() {
        let out = if c == last {
            Buffer::X
        } else {
            Buffer::Pooled(c)
        };
        let input = if c == 0 {
            Buffer::Image
        } else {
            Buffer::Pooled(c - 1)
        };
        let items = rows * conv.pooled() * conv.pooled() * conv.outputs / 4;
        let buffers = vec![Buffer::Params, out, Buffer::Winners(c), input];
        dispatches.push(over(Kernel::ConvForward(c), items, buffers));
    }
    let mut buffers = vec![Buffer::Params, Buffer::X, Buffer::Z];
    if v.convs.is_empty() {
        buffers.extend([Buffer::Step, Buffer::Images(0)]);
        buffers.extend(more_images);
    }
    dispatches.push(Dispatch {
        kernel: Kernel::DenseForward,
        workgroup: v.forward_workgroup(),
        groups: rows / 4,
        buffers,
    });
    dispatches
}

/// The evaluation's last dispatch: the later dense layers, each row's loss and prediction.
fn eval_dispatch(v: &Variant) -> Dispatch {
    Dispatch {
        kernel: Kernel::Eval,
        workgroup: HEAD_WORKGROUP,
        groups: v.layout.rows / BLOCK,
        buffers: vec![
            Buffer::Labels,
            Buffer::Step,
            Buffer::Params,
            Buffer::Z,
            Buffer::Results,
        ],
    }
}

/// A training step, as dispatches: the forward pass, the head, the gradients, the first
/// dense layer's update, and for the CNN the gradients down through the convolutions.
fn training_dispatches(v: &Variant) -> Vec<Dispatch> {
    use Buffer::{D, Losses, Moment1, Moment2, Params, Step, X, Z};
    let rows = v.layout.rows;
    let over = |kernel, workgroup: u32, items: usize, buffers| Dispatch {
        kernel,
        workgroup,
        groups: items.div_ceil(workgroup as usize),
        buffers,
    };
    let mut dispatches = forward_dispatches(v);
    dispatches.push(Dispatch {
        kernel: Kernel::Head,
        workgroup: HEAD_WORKGROUP,
        groups: rows / BLOCK,
        buffers: vec![Buffer::Labels, Step, Params, Z, D, Losses],
    });
    let items = v.gradient_items();
    let buffers = vec![Step, Params, Moment1, Moment2, Z, D, Losses, Buffer::Sums];
    dispatches.push(over(Kernel::Gradients, spread(items), items, buffers));
    let quads = v.layout.widths[0] / 4;
    if let Some(top) = v.convs.len().checked_sub(1) {
        let buffers = vec![Params, D, X, Buffer::Winners(top), Buffer::Gradient(top)];
        dispatches.push(over(
            Kernel::FeaturesGrad,
            WORKGROUP,
            rows / 4 * quads,
            buffers,
        ));
    }
    let items = v.update_items();
    let buffers = vec![Step, Params, Moment1, Moment2, X, D];
    dispatches.push(over(Kernel::DenseUpdate, spread(items), items, buffers));
    for (c, conv) in v.convs.iter().enumerate().rev() {
        if c > 0 {
            let blocks = conv.side.div_ceil(2);
            let items = rows * blocks * blocks * conv.inputs / 4;
            let buffers = vec![
                Params,
                Buffer::Gradient(c),
                Buffer::Pooled(c - 1),
                Buffer::Winners(c - 1),
                Buffer::Gradient(c - 1),
            ];
            dispatches.push(over(Kernel::ConvData(c), WORKGROUP, items, buffers));
        }
        let source = if c == 0 {
            Buffer::Image
        } else {
            Buffer::Pooled(c - 1)
        };
        let sliced = conv.slices() > 1;
        let mut buffers = vec![Step, Params, Moment1, Moment2, Buffer::Gradient(c), source];
        if sliced {
            buffers.push(Buffer::Partials(c));
        }
        dispatches.push(Dispatch {
            kernel: Kernel::ConvWeights(c),
            workgroup: WEIGHTS_WORKGROUP,
            groups: conv.weight_groups() * conv.slices(),
            buffers,
        });
        if sliced {
            let items = conv.sum_items();
            let buffers = vec![Step, Params, Moment1, Moment2, Buffer::Partials(c)];
            dispatches.push(over(
                Kernel::ConvWeightsSum(c),
                spread(items),
                items,
                buffers,
            ));
        }
    }
    dispatches
}

/// The step buffer of `v` for the images `indices` (the rest of the rows padding), each
/// moved by `shift`, after the settings words `settings` (mlp_layout.wgsl).
fn step_words(
    v: &Variant,
    settings: [u32; ROWS_AT],
    indices: &[u32],
    shift: Option<Shift>,
) -> Vec<u32> {
    let mut words = settings.to_vec();
    words.extend(batch_rows(indices, v.layout.rows, v.count, shift));
    words
}

/// The fused evaluation of one picture, for a WebGPU page: the kernels' WGSL filled in for
/// the model (the same templates, the same dispatches as on the device), the buffers with
/// the parameters laid out and the step words written, and where the logits end up.
#[derive(Debug, Clone, serde::Serialize)]
pub struct WebProgram {
    /// The dispatches, in order.
    pub kernels: Vec<WebKernel>,
    /// The buffers the dispatches bind.
    pub buffers: Vec<WebBuffer>,
    /// The buffer the picture goes in: its pixels as bytes (0–255), four to a word, padded.
    pub input: usize,
    /// The buffer and offset (in floats) of the picture's logits, one per class.
    pub logits: (usize, usize),
    /// Classes.
    pub classes: usize,
}

/// One dispatch of a [`WebProgram`].
#[derive(Debug, Clone, serde::Serialize)]
pub struct WebKernel {
    /// The kernel, for messages.
    pub name: String,
    /// Its WGSL, complete.
    pub source: String,
    /// Workgroups to dispatch (x; y and z are 1).
    pub groups: usize,
    /// The [`WebProgram::buffers`] bound, by index, at bindings 0, 1, ….
    pub buffers: Vec<usize>,
}

/// One buffer of a [`WebProgram`]: its size and initial contents (zeros when none).
#[derive(Debug, Clone, serde::Serialize)]
pub struct WebBuffer {
    /// Its role.
    pub name: String,
    /// Bytes.
    pub bytes: usize,
    /// Initial contents as floats.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub f32: Option<Vec<f32>>,
    /// Initial contents as words.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub u32: Option<Vec<u32>>,
}

/// The [`WebProgram`] of `model` for pictures of `shape`, or why the fused kernels do not
/// take it (the page then lets the server classify).
pub fn web_program(model: &Model, shape: ImageShape) -> Result<WebProgram, String> {
    let (meta, values) = flat_parameters(model).map_err(|e| e.to_string())?;
    let images = ImageLayout::of(shape, 1).ok_or("an image too large")?;
    let variant = Variant::new(&meta, 1, 1, false, images)?;
    if let Some(w) = variant.layout.widths[1..]
        .iter()
        .find(|&&w| w > MAX_WIDTH && variant.convs.is_empty())
    {
        return Err(format!("a hidden layer of {w} units"));
    }
    let mut dispatches = forward_dispatches(&variant);
    dispatches.push(eval_dispatch(&variant));
    let step = step_words(&variant, [0; ROWS_AT], &[0], None);
    let variant = Arc::new(variant);
    let mut roles: Vec<Buffer> = Vec::new();
    let mut kernels = Vec::new();
    for d in &dispatches {
        let buffers = d
            .buffers
            .iter()
            .map(|b| match roles.iter().position(|r| r == b) {
                Some(i) => i,
                None => {
                    roles.push(*b);
                    roles.len() - 1
                }
            })
            .collect();
        kernels.push(WebKernel {
            name: format!("{:?}", d.kernel),
            source: kernel_source(&variant, d.kernel),
            groups: d.groups,
            buffers,
        });
    }
    let buffers = roles
        .iter()
        .map(|&b| {
            let (f32, u32) = match b {
                Buffer::Params => (Some(variant.to_device(&values)), None),
                Buffer::Step => (None, Some(step.clone())),
                _ => (None, None),
            };
            let words = match b {
                Buffer::Step => step.len(),
                other => buffer_words(&variant, other),
            };
            WebBuffer {
                name: format!("{b:?}"),
                bytes: words.max(1) * 4,
                f32,
                u32,
            }
        })
        .collect();
    let position = |b: Buffer| roles.iter().position(|&r| r == b).unwrap_or(0);
    let l = &variant.layout;
    Ok(WebProgram {
        kernels,
        buffers,
        input: position(Buffer::Images(0)),
        logits: (position(Buffer::Z), l.z_at[l.layers() - 1]),
        classes: l.widths[l.layers()],
    })
}

/// Bytes of workgroup memory a kernel's WGSL declares (`var<workgroup> NAME: array<T, N>;`
/// and plain `var<workgroup> NAME: T;`), for checking it against a device's limit.
pub(crate) fn workgroup_bytes(source: &str) -> usize {
    let size = |ty: &str| match ty.trim() {
        "vec4<f32>" | "vec4<u32>" => 16,
        "vec2<f32>" | "vec2<u32>" => 8,
        _ => 4,
    };
    source
        .lines()
        .filter_map(|line| line.trim().strip_prefix("var<workgroup>"))
        .map(|decl| {
            let ty = decl
                .split_once(':')
                .map_or("", |(_, t)| t)
                .trim_end_matches(';')
                .trim();
            match ty.strip_prefix("array<").and_then(|t| t.strip_suffix('>')) {
                Some(inner) => match inner.rsplit_once(',') {
                    Some((t, n)) => {
                        size(t) * n.trim().trim_end_matches('u').parse::<usize>().unwrap_or(0)
                    }
                    None => 0,
                },
                None => size(ty),
            }
        })
        .sum()
}

/// Images per evaluation batch: what the generic evaluation takes too.
const EVAL_ROWS: usize = crate::batch::EVAL_BATCH;

/// Loss, accuracy and each image's predicted digit for `model` on the resident split `data`,
/// with the fused step's forward kernels: no burn kernel to compile or tune, so a run on the
/// fused step warms up in a fraction of a second once Mesa's shader cache has its kernels.
pub fn evaluate(model: &Model, data: &Resident) -> Result<(Metrics, Vec<u8>), FusedError> {
    let (meta, values) = flat_parameters(model)?;
    let (_, _, images) = data.buffers().ok_or(FusedError::NotResident)?;
    let variant = Variant::new(&meta, EVAL_ROWS.min(data.len()), data.len(), false, images)
        .map_err(FusedError::Model)?;
    let net = Net::new(variant, &values, data)?;
    let rows = net.variant.layout.rows;
    let mut dispatches = forward_dispatches(&net.variant);
    dispatches.push(eval_dispatch(&net.variant));
    let (mut loss, mut correct) = (0f64, 0f64);
    let mut predicted = Vec::with_capacity(data.len());
    let order: Vec<u32> = (0..data.len() as u32).collect();
    for chunk in order.chunks(rows) {
        let step = net.gpu.upload(&net.step_words([0; ROWS_AT], chunk, None));
        net.run(&dispatches, &step, None)?;
        let words = net.gpu.read_u32(&net.results)?;
        for row in words.chunks(3).take(chunk.len()) {
            loss += f64::from(f32::from_bits(row[0]));
            correct += f64::from(row[1]);
            predicted.push(row[2] as u8);
        }
    }
    let count = data.len();
    let metrics = Metrics {
        loss: loss / count as f64,
        accuracy: correct / count as f64,
        count,
    };
    Ok((metrics, predicted))
}

impl RunningSums for FusedStep {
    fn sums(&self) -> Result<([f32; 2], usize), ReadError> {
        match self.net.gpu.read_f32(&self.training.sums)?[..] {
            [loss, correct] => Ok(([loss, correct], self.counted)),
            ref other => Err(ReadError::new(format!(
                "expected 2 sums, got {}",
                other.len()
            ))),
        }
    }
}

#[cfg(test)]
pub(crate) mod tests;
#[cfg(test)]
mod translation;
