//! The fused training step of the MLP on a wgpu device: a whole step (gather, forward, loss,
//! backward, Adam, metrics) in three dispatches of hand-written WGSL (`shaders/mlp_*.wgsl`).
//!
//! burn's generic step is some fifty dispatches even with fusion, each a kernel launch that
//! costs a GPU 5–10 µs whatever it computes; for a network this small that is the whole step.
//! The fused step follows tiny-cuda-nn's "fully fused MLP" (Müller et al., 2021) as far as
//! WGSL allows (no grid-wide barrier, so the first layer, with most of the weights, gets
//! kernels of its own):
//!
//! 1. `mlp_forward`: the batch's pixels gathered from the resident split (shifted for
//!    `--augment`), and the first layer's pre-activations, several rows per workgroup;
//! 2. `mlp_head`: one workgroup does every later layer forward, the softmax cross-entropy
//!    and its gradient, the epoch's loss and hit sums, the backward pass, and Adam for every
//!    parameter but the first layer's weights;
//! 3. `mlp_update`: the first layer's weight gradient, each weight's Adam update as soon as
//!    its gradient is known.
//!
//! Weights and Adam's moments stay on the device in flat buffers, in burn's module order; they
//! come back into burn's `Model` and `ModuleOptimizer` (the same checkpoint format as the
//! generic step's) at the end of each epoch and on an interrupt. The numbers are burn's: the
//! same Adam in the same order of operations, the same loss, the same masks and shifts.

use std::sync::Arc;

use burn::backend::wgpu::{KernelSource, SourceTemplate};
use burn::cubecl::prelude::KernelId;
use burn::cubecl::server::Handle;
use burn::module::{Module, ModuleMapper, ModuleVisitor, Param, ParamId};
use burn::optim::ModuleOptimizer;
use burn::tensor::{Bytes, Tensor, TensorData};

use crate::data::{IMAGE_PIXELS, NUM_CLASSES};
use crate::gather::{Resident, batch_rows, pixels_source};
use crate::kernels::Gpu;
use crate::loader::Shift;
use crate::metrics::{ReadError, RunningSums};
use crate::model::Model;
use crate::training::{ADAM_BETA1, ADAM_BETA2, ADAM_EPSILON, TrainConfig, optimizer};

/// The widest hidden layer the fused step takes: its later layers run in one workgroup, which
/// suits the article's small network and not a wide one.
pub const MAX_WIDTH: usize = 256;

/// Words of the step buffer before the batch's rows (mlp_layout.wgsl).
const ROWS_AT: usize = 8;

/// Invocations per workgroup of the head kernel (a power of two, at most 256).
const HEAD_WORKGROUP: u32 = 64;

/// Invocations per workgroup of the first layer's update kernel.
const UPDATE_WORKGROUP: u32 = 64;

/// Why the fused step does not apply, in the words of the log line that says so.
pub fn unsupported(config: &TrainConfig, gather_kernel: bool) -> Option<String> {
    if config.model != crate::model::Architecture::Mlp {
        return Some("the fused step covers the MLP, not the CNN".into());
    }
    if !gather_kernel {
        return Some("--gather ops|host are reference paths".into());
    }
    if let Some(w) = config.hidden.iter().find(|&&w| w > MAX_WIDTH) {
        return Some(format!(
            "the fused step covers hidden layers up to {MAX_WIDTH} units, not {w}"
        ));
    }
    None
}

/// Why the fused step could not start or report.
#[derive(Debug, thiserror::Error)]
pub enum FusedError {
    /// The model is not the MLP or does not fit the fused kernels.
    #[error("the fused step cannot take this model: {0}")]
    Model(String),
    /// The split is not resident for the WGSL kernels.
    #[error("the fused step needs the training set resident for --gather kernel")]
    NotResident,
    /// Reading weights or optimizer state back failed.
    #[error(transparent)]
    Read(#[from] ReadError),
    /// burn's optimizer state could not be converted.
    #[error("optimizer state: {0}")]
    Optimizer(String),
}

/// Where each layer's numbers live in the flat buffers.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Layout {
    /// Layer widths, input first: `[784, 30, 10, 10]` for the article's model.
    widths: Vec<usize>,
    /// Offsets of each layer's weights and bias in the parameter buffer.
    w_at: Vec<usize>,
    b_at: Vec<usize>,
    /// Offsets of each layer's `[rows, out]` pre-activations in the activation buffer.
    z_at: Vec<usize>,
    /// Offsets of each hidden layer's dropout factors in the step buffer (0 for the output).
    mask_at: Vec<usize>,
    /// Parameters in all; activations in all; dropout factors in all.
    params: usize,
    activations: usize,
    masks: usize,
    /// Rows per batch.
    rows: usize,
}

impl Layout {
    /// The layout for `widths` and batches of `batch` rows, padded to a multiple of 4 (the
    /// kernels take rows four at a time).
    fn new(widths: &[usize], batch: usize) -> Self {
        let rows = batch.div_ceil(4) * 4;
        let layers = widths.len() - 1;
        let (mut w_at, mut b_at, mut z_at, mut mask_at) = (vec![], vec![], vec![], vec![]);
        let (mut params, mut activations) = (0, 0);
        let mut masks = ROWS_AT + 2 * rows;
        for l in 0..layers {
            let (n_in, n) = (widths[l], widths[l + 1]);
            w_at.push(params);
            b_at.push(params + n_in * n);
            params += n_in * n + n;
            z_at.push(activations);
            activations += rows * n;
            if l + 1 < layers {
                mask_at.push(masks);
                masks += rows * n;
            } else {
                mask_at.push(0);
            }
        }
        Self {
            widths: widths.to_vec(),
            w_at,
            b_at,
            z_at,
            mask_at,
            params,
            activations,
            masks: masks - ROWS_AT - 2 * rows,
            rows,
        }
    }

    fn layers(&self) -> usize {
        self.widths.len() - 1
    }

    /// Parameters in burn's module order, with the first layer's weights transposed to
    /// `[out, in]` as the kernels keep them (each unit's weights contiguous).
    fn to_device(&self, burn: &[f32]) -> Vec<f32> {
        let mut device = burn.to_vec();
        let (n_in, n) = (self.widths[0], self.widths[1]);
        for i in 0..n_in {
            for j in 0..n {
                device[j * n_in + i] = burn[i * n + j];
            }
        }
        device
    }

    /// The inverse of [`Layout::to_device`].
    fn to_burn(&self, device: &[f32]) -> Vec<f32> {
        let mut burn = device.to_vec();
        let (n_in, n) = (self.widths[0], self.widths[1]);
        for i in 0..n_in {
            for j in 0..n {
                burn[i * n + j] = device[j * n_in + i];
            }
        }
        burn
    }
}

/// What selects one compiled variant of the fused kernels.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Variant {
    layout: Layout,
    count: usize,
    dropout: bool,
}

impl Variant {
    /// mlp_layout.wgsl (and mlp_adam.wgsl for parameters of type `adam`, when given) with
    /// this variant's numbers, then `body`.
    fn template(&self, body: &str, adam: Option<&str>) -> SourceTemplate {
        let l = &self.layout;
        let mut source = SourceTemplate::new(include_str!("../shaders/mlp_layout.wgsl"));
        if adam.is_some() {
            source = source.add_template(include_str!("../shaders/mlp_adam.wgsl"));
        }
        let bits = |x: f32| format!("{:#x}", x.to_bits());
        source
            .add_template(body)
            .register("rows", l.rows.to_string())
            .register("count", self.count.to_string())
            .register("classes", NUM_CLASSES.to_string())
            .register("rows_at", ROWS_AT.to_string())
            .register("first_in", l.widths[0].to_string())
            .register("first_out", l.widths[1].to_string())
            .register("first_w", l.w_at[0].to_string())
            .register("first_b", l.b_at[0].to_string())
            .register("first_z", l.z_at[0].to_string())
            .register("beta1", bits(ADAM_BETA1))
            .register("beta2", bits(ADAM_BETA2))
            .register("one_minus_beta1", bits(1.0 - ADAM_BETA1))
            .register("one_minus_beta2", bits(1.0 - ADAM_BETA2))
            .register("value", adam.unwrap_or("f32"))
    }

    /// The index in `d` of the loss gradient of layer `l`'s unit `unit` in row `row` (WGSL
    /// expressions): `[ROWS, OUT]` row-major, the first layer's `[OUT, ROWS]`.
    fn d_index(&self, l: usize, row: &str, unit: &str) -> String {
        let at = self.layout.z_at[l];
        if l == 0 {
            format!("{at}u + {unit} * ROWS + {row}")
        } else {
            format!("{at}u + {row} * {}u + {unit}", self.layout.widths[l + 1])
        }
    }

    /// Layer `l`'s output for unit `k` of `row` after ReLU and dropout (a WGSL expression):
    /// the next layer's input.
    fn activation(&self, l: usize) -> String {
        let n = self.layout.widths[l + 1];
        let value = format!("max(z[{}u + row * {n}u + k], 0.0)", self.layout.z_at[l]);
        format!("{value}{}", self.keep(l))
    }

    /// Dropout's factor on unit `k` of `row` of hidden layer `l`, as a WGSL `* factor` (empty
    /// without dropout).
    fn keep(&self, l: usize) -> String {
        if !self.dropout {
            return String::new();
        }
        let n = self.layout.widths[l + 1];
        format!(
            " * bitcast<f32>(step[{}u + row * {n}u + k])",
            self.layout.mask_at[l]
        )
    }

    /// mlp_head.wgsl with its per-layer passes written out.
    fn head_source(&self) -> String {
        let l = &self.layout;
        let last = l.layers() - 1;
        let layer = |template: &str, i: usize| {
            SourceTemplate::new(template)
                .register("l", i.to_string())
                .register("n_in", l.widths[i].to_string())
                .register("n", l.widths[i + 1].to_string())
                .register("w_at", l.w_at[i].to_string())
                .register("b_at", l.b_at[i].to_string())
                .register("z_at", l.z_at[i].to_string())
                .register("z_below", l.z_at[i - 1].to_string())
                .register("input", self.activation(i - 1))
                .register("keep", self.keep(i - 1))
                .register("d_here", self.d_index(i, "row", "j"))
                .register("d_below", self.d_index(i - 1, "row", "k"))
                .complete()
        };
        let forward: String = (1..=last)
            .map(|i| layer(include_str!("../shaders/mlp_head_forward.wgsl"), i))
            .collect();
        let backward: String = (1..=last)
            .rev()
            .map(|i| layer(include_str!("../shaders/mlp_head_backward.wgsl"), i))
            .collect();
        SourceTemplate::new(include_str!("../shaders/mlp_head.wgsl"))
            .register("forward", forward)
            .register("backward", backward)
            .register("logits", l.z_at[last].to_string())
            .register("d_logit", self.d_index(last, "row", "c"))
            .register("workgroup", HEAD_WORKGROUP.to_string())
            .complete()
    }

    /// Groups of four first-layer units: each invocation of the forward and update kernels
    /// takes one.
    fn unit_groups(&self) -> usize {
        self.layout.widths[1].div_ceil(4)
    }

    /// Invocations per workgroup of the forward kernel: one per group of four first-layer
    /// units, in whole groups of 8 (a CPU's vector), at most 64 (wider layers loop).
    fn forward_workgroup(&self) -> u32 {
        (self.unit_groups().div_ceil(8) * 8).min(64) as u32
    }
}

/// shaders/mlp_forward.wgsl.
struct ForwardKernel(Arc<Variant>);
/// shaders/mlp_head.wgsl.
struct HeadKernel(Arc<Variant>);
/// shaders/mlp_update.wgsl.
struct UpdateKernel(Arc<Variant>);

impl KernelSource for ForwardKernel {
    fn source(&self) -> SourceTemplate {
        let body = pixels_source() + include_str!("../shaders/mlp_forward.wgsl");
        self.0
            .template(&body, None)
            .register("staged", IMAGE_PIXELS.to_string())
            .register("workgroup", self.0.forward_workgroup().to_string())
    }
    fn id(&self) -> KernelId {
        KernelId::new::<Self>().info(self.0.as_ref().clone())
    }
    fn lang(&self) -> &'static str {
        "wgsl"
    }
}

impl KernelSource for HeadKernel {
    fn source(&self) -> SourceTemplate {
        self.0.template(&self.0.head_source(), Some("f32"))
    }
    fn id(&self) -> KernelId {
        KernelId::new::<Self>().info(self.0.as_ref().clone())
    }
    fn lang(&self) -> &'static str {
        "wgsl"
    }
}

impl KernelSource for UpdateKernel {
    fn source(&self) -> SourceTemplate {
        self.0
            .template(
                include_str!("../shaders/mlp_update.wgsl"),
                Some("vec4<f32>"),
            )
            .register("workgroup", UPDATE_WORKGROUP.to_string())
    }
    fn id(&self) -> KernelId {
        KernelId::new::<Self>().info(self.0.as_ref().clone())
    }
    fn lang(&self) -> &'static str {
        "wgsl"
    }
}

/// The MLP being trained by the fused step: weights, Adam's moments and the step's scratch
/// buffers on the device.
pub struct FusedMlp {
    gpu: Gpu,
    variant: Arc<Variant>,
    images: Handle,
    labels: Handle,
    params: Handle,
    moment_1: Handle,
    moment_2: Handle,
    x: Handle,
    z: Handle,
    d: Handle,
    sums: Handle,
    /// Images counted into `sums`.
    counted: usize,
    /// Adam steps taken (burn's `time`).
    time: usize,
    /// The model's parameters: id and shape, in module order.
    params_meta: Vec<ParamMeta>,
    weight_decay: f32,
    label_smoothing: f32,
}

impl FusedMlp {
    /// Takes over `model` and `optimizer` (their values move to the device) to train on the
    /// resident split `train` in batches of `rows`.
    pub fn new(
        model: &Model,
        optimizer: &ModuleOptimizer,
        config: &TrainConfig,
        train: &Resident,
        rows: usize,
    ) -> Result<Self, FusedError> {
        let Model::Mlp(mlp) = model else {
            return Err(FusedError::Model("not the MLP".into()));
        };
        let widths = mlp.widths();
        if let Some(w) = widths[1..widths.len() - 1].iter().find(|&&w| w > MAX_WIDTH) {
            return Err(FusedError::Model(format!("a hidden layer of {w} units")));
        }
        let (images, labels) = train.buffers().ok_or(FusedError::NotResident)?;
        let gpu = train.gpu().clone();
        let layout = Layout::new(&widths, rows);
        let (params_meta, values) = flat_parameters(model)?;
        if values.len() != layout.params {
            return Err(FusedError::Model(format!(
                "{} parameters where the layout has {}",
                values.len(),
                layout.params
            )));
        }
        let moments = Moments::of(optimizer, &params_meta)?;
        let variant = Arc::new(Variant {
            layout,
            count: train.len(),
            dropout: config.dropout > 0.0,
        });
        let l = &variant.layout;
        Ok(Self {
            images: images.clone(),
            labels: labels.clone(),
            params: gpu.upload(&l.to_device(&values)),
            moment_1: gpu.upload(&l.to_device(&moments.first)),
            moment_2: gpu.upload(&l.to_device(&moments.second)),
            x: gpu.empty(l.rows * IMAGE_PIXELS * size_of::<f32>()),
            z: gpu.empty(l.activations * size_of::<f32>()),
            d: gpu.empty(l.activations * size_of::<f32>()),
            sums: gpu.upload(&[0f32; 2]),
            counted: 0,
            time: moments.time,
            params_meta,
            weight_decay: config.weight_decay as f32,
            label_smoothing: config.label_smoothing as f32,
            gpu,
            variant,
        })
    }

    /// Starts an epoch's running sums from `sums` over `count` images (zero, or where an
    /// interrupted epoch stood).
    pub fn start_epoch(&mut self, sums: [f32; 2], count: usize) {
        self.sums = self.gpu.upload(&sums);
        self.counted = count;
    }

    /// Words of dropout factors in the step buffer: rows (padded) × hidden units, 0 without
    /// dropout.
    fn mask_len(&self) -> usize {
        if self.variant.dropout {
            self.variant.layout.masks
        } else {
            0
        }
    }

    /// Bytes sent to the device with each step: the step buffer (settings, image numbers,
    /// shifts, dropout factors).
    pub fn upload_bytes(&self) -> usize {
        (ROWS_AT + 2 * self.variant.layout.rows + self.mask_len()) * size_of::<u32>()
    }

    /// One training step on the images `indices` (at most a batch; the rest is padding), each
    /// moved by `shift` when given, at learning rate `lr`, with the hidden layers' dropout
    /// factors `masks` (one `[batch, width]` row-major vector per hidden layer; none without
    /// dropout).
    pub fn step(&mut self, indices: &[u32], shift: Option<Shift>, lr: f64, masks: &[Vec<f32>]) {
        let v = &self.variant;
        let rows = v.layout.rows;
        self.time += 1;
        // burn's Adam: bias corrections in f32, from the step count (burn-optim adam.rs).
        let t = self.time as i32;
        let correction2 = (1.0 - ADAM_BETA2.powi(t)).sqrt();
        let correction = correction2 / (1.0 - ADAM_BETA1.powi(t));
        // burn's AdamW: the decay rate in f64, the factor applied as an f32 scalar.
        let decay = if self.weight_decay > 0.0 {
            (1.0 - lr * f64::from(self.weight_decay)) as f32
        } else {
            1.0
        };
        let mut words = vec![
            (lr as f32).to_bits(),
            correction.to_bits(),
            (ADAM_EPSILON * correction2).to_bits(),
            decay.to_bits(),
            indices.len() as u32,
            self.label_smoothing.to_bits(),
            0,
            0,
        ];
        words.extend(batch_rows(indices, rows, v.count, shift));
        if v.dropout {
            for (mask, width) in masks.iter().zip(&v.layout.widths[1..]) {
                words.extend(mask.iter().map(|m| m.to_bits()));
                // Padding rows past the batch: dropped (their gradient is zero anyway).
                words.extend(std::iter::repeat_n(
                    0,
                    (rows * width).saturating_sub(mask.len()),
                ));
            }
        }
        let step = self.gpu.upload(&words);
        self.gpu.launch(
            ForwardKernel(v.clone()),
            v.forward_workgroup(),
            (rows / 4) as u32,
            &[&self.images, &step, &self.params, &self.x, &self.z],
        );
        self.gpu.launch(
            HeadKernel(v.clone()),
            HEAD_WORKGROUP,
            1,
            &[
                &self.labels,
                &step,
                &self.params,
                &self.moment_1,
                &self.moment_2,
                &self.z,
                &self.d,
                &self.sums,
            ],
        );
        let invocations = (v.unit_groups() * IMAGE_PIXELS / 4) as u32;
        self.gpu.launch(
            UpdateKernel(v.clone()),
            UPDATE_WORKGROUP,
            invocations.div_ceil(UPDATE_WORKGROUP),
            &[
                &step,
                &self.params,
                &self.moment_1,
                &self.moment_2,
                &self.x,
                &self.d,
            ],
        );
        self.counted += indices.len();
    }

    /// Writes the device's weights into `model` (keeping its parameter ids) and returns burn's
    /// optimizer state for them: what a checkpoint or an evaluation needs.
    pub fn store(
        &self,
        model: &mut Model,
        config: &TrainConfig,
    ) -> Result<ModuleOptimizer, FusedError> {
        let l = &self.variant.layout;
        let values = l.to_burn(&self.gpu.read_f32(&self.params)?);
        let moments = Moments {
            time: self.time,
            first: l.to_burn(&self.gpu.read_f32(&self.moment_1)?),
            second: l.to_burn(&self.gpu.read_f32(&self.moment_2)?),
        };
        *model = set_flat_parameters(model.clone(), &values);
        moments.into_optimizer(config, &self.params_meta)
    }
}

impl RunningSums for FusedMlp {
    fn sums(&self) -> Result<([f32; 2], usize), ReadError> {
        match self.gpu.read_f32(&self.sums)?[..] {
            [loss, correct] => Ok(([loss, correct], self.counted)),
            ref other => Err(ReadError::new(format!(
                "expected 2 sums, got {}",
                other.len()
            ))),
        }
    }
}

/// A parameter's id and shape.
type ParamMeta = (ParamId, Vec<usize>);

/// Every parameter of `model` as one flat vector in module order, with each one's id and shape.
fn flat_parameters(model: &Model) -> Result<(Vec<ParamMeta>, Vec<f32>), ReadError> {
    struct Collect {
        meta: Vec<ParamMeta>,
        tensors: Vec<Tensor<1>>,
    }
    impl ModuleVisitor for Collect {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            let value = param.val();
            self.meta.push((param.id, value.dims().to_vec()));
            self.tensors.push(value.flatten(0, D - 1));
        }
    }
    let mut collect = Collect {
        meta: Vec::new(),
        tensors: Vec::new(),
    };
    model.visit(&mut collect);
    let values = crate::metrics::read_floats(Tensor::cat(collect.tensors, 0).inner())?;
    Ok((collect.meta, values))
}

/// `model` with its parameters replaced, in module order, by consecutive runs of `values`;
/// ids, devices and autodiff kept.
fn set_flat_parameters(model: Model, values: &[f32]) -> Model {
    struct Replace<'a> {
        values: &'a [f32],
    }
    impl ModuleMapper for Replace<'_> {
        fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
            let values = &mut self.values;
            param.map(|tensor| {
                let dims = tensor.dims();
                let n = dims.iter().product::<usize>().min(values.len());
                let (mine, rest) = values.split_at(n);
                *values = rest;
                let fresh =
                    Tensor::from_data(TensorData::new(mine.to_vec(), dims), &tensor.device());
                if tensor.is_require_grad() {
                    fresh.require_grad()
                } else {
                    fresh
                }
            })
        }
    }
    model.map(&mut Replace { values })
}

/// Adam's state for every parameter as flat vectors in module order.
#[derive(Debug, Clone, PartialEq)]
pub struct Moments {
    /// Steps taken (the same for every parameter in `trainer`).
    pub time: usize,
    /// The first moments.
    pub first: Vec<f32>,
    /// The second moments.
    pub second: Vec<f32>,
}

/// Name of a parameter's Adam state entry in burn's optimizer record (`AdamState` and
/// `AdamWState` both hold an `AdaptiveMomentumState` named `momentum`).
fn momentum_key(id: ParamId, leaf: &str) -> String {
    format!("{}.momentum.{leaf}", id.val())
}

impl Moments {
    /// Reads burn's Adam (or AdamW) state for the parameters `meta` out of `optimizer`'s record;
    /// a parameter without state (a fresh optimizer) starts from zero moments.
    pub fn of(optimizer: &ModuleOptimizer, meta: &[ParamMeta]) -> Result<Self, FusedError> {
        let bytes = optimizer
            .into_bytes()
            .map_err(|e| FusedError::Optimizer(e.to_string()))?;
        let reader = burn_pack::Reader::from_bytes(bytes)
            .map_err(|e| FusedError::Optimizer(e.to_string()))?;
        let scalars = reader.scalars().clone();
        let mut tensors = std::collections::HashMap::new();
        for tensor in reader
            .into_tensors()
            .map_err(|e| FusedError::Optimizer(e.to_string()))?
        {
            let (name, dtype, shape, _, bytes) = tensor
                .into_parts()
                .map_err(|e| FusedError::Optimizer(e.to_string()))?;
            let values = TensorData::from_bytes(bytes, shape, dtype)
                .convert::<f32>()
                .try_into_vec::<f32>()
                .map_err(|e| FusedError::Optimizer(format!("{name}: {e:?}")))?;
            tensors.insert(name, values);
        }
        let mut moments = Self {
            time: 0,
            first: Vec::new(),
            second: Vec::new(),
        };
        let mut times = Vec::new();
        for (id, shape) in meta {
            let n = shape.iter().product::<usize>();
            let time = scalars
                .get(&momentum_key(*id, "time"))
                .map(|s| u64::try_from(*s).map_err(|e| FusedError::Optimizer(e.to_string())))
                .transpose()?;
            times.push(time.unwrap_or(0) as usize);
            for (leaf, out) in [
                ("moment_1", &mut moments.first),
                ("moment_2", &mut moments.second),
            ] {
                match tensors.remove(&momentum_key(*id, leaf)) {
                    Some(values) if values.len() == n => out.extend(values),
                    Some(values) => {
                        return Err(FusedError::Optimizer(format!(
                            "{leaf} of parameter {} has {} values, not {n}",
                            id.val(),
                            values.len()
                        )));
                    }
                    None => out.extend(std::iter::repeat_n(0.0, n)),
                }
            }
        }
        // trainer steps every parameter every time; anything else is not a state it wrote.
        match times.iter().min().zip(times.iter().max()) {
            Some((lo, hi)) if lo != hi => Err(FusedError::Optimizer(format!(
                "parameters at different Adam steps ({lo} to {hi})"
            ))),
            _ => {
                moments.time = times.first().copied().unwrap_or(0);
                Ok(moments)
            }
        }
    }

    /// burn's optimizer for `config` holding this state for the parameters `meta`: the record
    /// burn's `ModuleOptimizer` writes, built directly.
    pub fn into_optimizer(
        self,
        config: &TrainConfig,
        meta: &[ParamMeta],
    ) -> Result<ModuleOptimizer, FusedError> {
        let fresh = optimizer(config);
        if self.time == 0 {
            return Ok(fresh);
        }
        let mut tensors = Vec::new();
        let mut writer_scalars = Vec::new();
        let mut at = 0;
        for (id, shape) in meta {
            let n = shape.iter().product::<usize>();
            for (leaf, values) in [("moment_1", &self.first), ("moment_2", &self.second)] {
                let data = TensorData::new(values[at..at + n].to_vec(), shape.clone());
                let (bytes, shape, dtype) = data.into_parts();
                tensors.push(burn_pack::Tensor::new(
                    momentum_key(*id, leaf),
                    dtype,
                    shape,
                    Some(id.val()),
                    bytes,
                ));
            }
            writer_scalars.push((
                momentum_key(*id, "time"),
                burn_pack::Scalar::from(self.time),
            ));
            writer_scalars.push((
                format!("{}.__rank", id.val()),
                burn_pack::Scalar::from(shape.len()),
            ));
            at += n;
        }
        let writer = writer_scalars
            .iter()
            .fold(burn_pack::Writer::new(tensors), |w, (key, value)| {
                w.with_scalar(key, *value)
            });
        let bytes: Bytes = writer
            .into_bytes()
            .map_err(|e| FusedError::Optimizer(e.to_string()))?;
        fresh
            .from_bytes(bytes)
            .map_err(|e| FusedError::Optimizer(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::optim::GradientsParams;
    use burn::tensor::Device;

    #[test]
    fn layout_places_layers_one_after_another() {
        let l = Layout::new(&[784, 30, 10, 10], 30);
        assert_eq!(l.rows, 32, "rows padded to a multiple of 4");
        assert_eq!(l.w_at, vec![0, 23_550, 23_860]);
        assert_eq!(l.b_at, vec![23_520, 23_850, 23_960]);
        assert_eq!(l.params, 23_970);
        assert_eq!(l.z_at, vec![0, 32 * 30, 32 * 40]);
        assert_eq!(l.activations, 32 * 50);
        let rows_end = ROWS_AT + 64;
        assert_eq!(l.mask_at, vec![rows_end, rows_end + 32 * 30, 0]);
        assert_eq!(l.masks, 32 * 40);
        // The first layer's weights go to the device transposed, and come back.
        let burn: Vec<f32> = (0..l.params).map(|i| i as f32).collect();
        let device = l.to_device(&burn);
        assert_eq!(device[1], burn[30], "unit 0's second weight");
        assert_eq!(device[784], burn[1], "unit 1's first weight");
        assert_eq!(device[23_520..], burn[23_520..], "the rest as it was");
        assert_eq!(l.to_burn(&device), burn);
    }

    /// A model and an optimizer that has taken `steps` generic steps on random data.
    fn trained(config: &TrainConfig, steps: usize) -> (Model, ModuleOptimizer) {
        let device = Device::flex().autodiff();
        let mut model = Model::new(config.model, &config.hidden, 3, &device).unwrap();
        let mut optim = optimizer(config);
        for s in 0..steps {
            let x = Tensor::<2>::ones([4, IMAGE_PIXELS], &device).mul_scalar(0.1 + s as f32);
            let loss = model.forward(x).powi_scalar(2).sum();
            let grads = GradientsParams::from_grads(loss.backward(), &model);
            model = optim.step(1e-3, model, grads);
        }
        (model, optim)
    }

    #[test]
    fn moments_round_trip_through_burns_optimizer_record() {
        for weight_decay in [0.0, 0.01] {
            let config = TrainConfig {
                hidden: vec![6, 5],
                weight_decay,
                ..TrainConfig::default()
            };
            let (model, optim) = trained(&config, 3);
            let (meta, values) = flat_parameters(&model).unwrap();
            assert_eq!(values.len(), 784 * 6 + 6 + 6 * 5 + 5 + 5 * 10 + 10);
            let moments = Moments::of(&optim, &meta).unwrap();
            assert_eq!(moments.time, 3);
            assert_eq!(moments.first.len(), values.len());
            assert!(moments.second.iter().any(|&v| v > 0.0));
            let rebuilt = moments.clone().into_optimizer(&config, &meta).unwrap();
            assert_eq!(Moments::of(&rebuilt, &meta).unwrap(), moments);
            // burn's next step from the rebuilt state is the step from the original one.
            let device = Device::flex().autodiff();
            let next = |mut optim: ModuleOptimizer| {
                let x = Tensor::<2>::ones([4, IMAGE_PIXELS], &device);
                let loss = model.forward(x).powi_scalar(2).sum();
                let grads = GradientsParams::from_grads(loss.backward(), &model);
                let stepped = optim.step(1e-3, model.clone(), grads);
                flat_parameters(&stepped).unwrap().1
            };
            assert_eq!(next(optim), next(rebuilt));
        }
    }

    #[test]
    fn a_fresh_optimizer_has_zero_moments_and_back() {
        let config = TrainConfig::default();
        let (model, optim) = trained(&config, 0);
        let (meta, values) = flat_parameters(&model).unwrap();
        let moments = Moments::of(&optim, &meta).unwrap();
        assert_eq!(moments.time, 0);
        assert!(
            moments
                .first
                .iter()
                .chain(&moments.second)
                .all(|&v| v == 0.0)
        );
        assert_eq!(moments.first.len(), values.len());
        let rebuilt = moments.into_optimizer(&config, &meta).unwrap();
        assert_eq!(Moments::of(&rebuilt, &meta).unwrap().time, 0);
    }

    #[test]
    fn flat_parameters_write_back_in_place() {
        let config = TrainConfig {
            hidden: vec![3],
            ..TrainConfig::default()
        };
        let (model, _) = trained(&config, 1);
        let (meta, values) = flat_parameters(&model).unwrap();
        let doubled: Vec<f32> = values.iter().map(|v| v * 2.0).collect();
        let written = set_flat_parameters(model.clone(), &doubled);
        let (meta_after, after) = flat_parameters(&written).unwrap();
        assert_eq!(after, doubled);
        assert_eq!(meta_after, meta, "ids and shapes kept");
    }
}
