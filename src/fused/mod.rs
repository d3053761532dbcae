//! The fused training step on a wgpu device: a whole step (gather, forward, loss, backward,
//! Adam, metrics) in a few dispatches of hand-written WGSL (`shaders/mlp_*.wgsl`,
//! `shaders/cnn_*.wgsl`), for the MLP and for the CNN.
//!
//! burn's generic step is some fifty dispatches even with fusion (over a hundred for the CNN),
//! each a kernel launch that costs a GPU 5–10 µs whatever it computes; for networks this small
//! that is the whole step. The fused step follows tiny-cuda-nn's "fully fused MLP" (Müller et
//! al., 2021) as far as WGSL allows (no grid-wide barrier, so the first dense layer, with most
//! of the MLP's weights, gets kernels of its own). The MLP's step is three dispatches:
//!
//! 1. `mlp_forward`: the batch's pixels gathered from the resident split (shifted for
//!    `--augment`), and the first layer's pre-activations, several rows per workgroup;
//! 2. `mlp_head`: one workgroup does every later layer forward, the softmax cross-entropy
//!    and its gradient, the epoch's loss and hit sums, the backward pass, and Adam for every
//!    parameter but the first layer's weights;
//! 3. `mlp_update`: the first layer's weight gradient, each weight's Adam update as soon as
//!    its gradient is known.
//!
//! The CNN's step adds, before them, one dispatch per convolution block (convolution, bias,
//! ReLU and pooling fused, reading the resident images for the first), and after the head the
//! gradient into the dense layer's input through the last pooling, then per block the
//! gradient into its input (through the pooling below) and its weight gradients with Adam:
//! twelve dispatches in all.
//!
//! Weights and Adam's moments stay on the device in flat buffers; they come back into burn's
//! `Model` and `ModuleOptimizer` (the same checkpoint format as the generic step's) at the end
//! of each epoch and on an interrupt. The numbers are burn's: the same Adam in the same order
//! of operations, the same loss, the same masks and shifts.

mod layout;
mod state;

use std::sync::Arc;

use burn::cubecl::server::Handle;
use burn::optim::ModuleOptimizer;

use crate::data::IMAGE_PIXELS;
use crate::gather::{Resident, batch_rows};
use crate::kernels::Gpu;
use crate::loader::Shift;
use crate::metrics::{ReadError, RunningSums};
use crate::model::{Architecture, Model};
use crate::training::{ADAM_BETA1, ADAM_BETA2, ADAM_EPSILON, TrainConfig};
use layout::{HEAD_WORKGROUP, Kernel, ROWS_AT, Source, Variant, WEIGHTS_WORKGROUP, WORKGROUP};
pub use state::Moments;
pub(crate) use state::ParamMeta;
use state::{flat_parameters, set_flat_parameters};

/// The widest hidden layer of the MLP the fused step takes: its later layers run in one
/// workgroup, which suits the article's small network and not a wide one.
pub const MAX_WIDTH: usize = 256;

/// Why the fused step does not apply, in the words of the log line that says so.
pub fn unsupported(config: &TrainConfig, gather_kernel: bool) -> Option<String> {
    if !gather_kernel {
        return Some("--gather ops|host are reference paths".into());
    }
    if config.model == Architecture::Mlp
        && let Some(w) = config.hidden.iter().find(|&&w| w > MAX_WIDTH)
    {
        return Some(format!(
            "the fused step covers hidden layers up to {MAX_WIDTH} units, not {w}"
        ));
    }
    None
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
    #[error("optimizer state: {0}")]
    Optimizer(String),
}

/// One convolution block's buffers: its pooled output (the dense input, `x`, for the last),
/// which window position won each pooling, and the loss gradient at its convolution's output.
struct ConvBuffers {
    pooled: Handle,
    winners: Handle,
    gradient: Handle,
}

/// A network being trained by the fused step: weights, Adam's moments and the step's scratch
/// buffers on the device.
pub struct FusedStep {
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
    /// The CNN's images, gathered (empty for the MLP).
    image: Handle,
    convs: Vec<ConvBuffers>,
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

impl FusedStep {
    /// Takes over `model` and `optimizer` (their values move to the device) to train on the
    /// resident split `train` in batches of `batch` rows.
    pub fn new(
        model: &Model,
        optimizer: &ModuleOptimizer,
        config: &TrainConfig,
        train: &Resident,
        batch: usize,
    ) -> Result<Self, FusedError> {
        let (images, labels) = train.buffers().ok_or(FusedError::NotResident)?;
        let gpu = train.gpu().clone();
        let (params_meta, values) = flat_parameters(model)?;
        let variant = Variant::new(&params_meta, batch, train.len(), config.dropout > 0.0)
            .map_err(FusedError::Model)?;
        if let Some(w) = variant.layout.widths[1..]
            .iter()
            .find(|&&w| w > MAX_WIDTH && variant.convs.is_empty())
        {
            return Err(FusedError::Model(format!("a hidden layer of {w} units")));
        }
        let moments = Moments::of(optimizer, &params_meta)?;
        let l = &variant.layout;
        let convs_empty = variant.convs.is_empty();
        let floats = |n: usize| gpu.empty(n * size_of::<f32>());
        let convs = variant
            .convs
            .iter()
            .map(|c| {
                let pooled = l.rows * c.pooled() * c.pooled() * c.outputs;
                ConvBuffers {
                    pooled: floats(pooled),
                    winners: floats(pooled),
                    gradient: floats(l.rows * c.side * c.side * c.outputs),
                }
            })
            .collect();
        Ok(Self {
            images: images.clone(),
            labels: labels.clone(),
            params: gpu.upload(&variant.to_device(&values)),
            moment_1: gpu.upload(&variant.to_device(&moments.first)),
            moment_2: gpu.upload(&variant.to_device(&moments.second)),
            x: floats(l.rows * l.widths[0]),
            image: floats(if convs_empty {
                1
            } else {
                l.rows * IMAGE_PIXELS
            }),
            z: floats(l.activations),
            d: floats(l.activations),
            convs,
            sums: gpu.upload(&[0f32; 2]),
            counted: 0,
            time: moments.time,
            params_meta,
            weight_decay: config.weight_decay as f32,
            label_smoothing: config.label_smoothing as f32,
            gpu,
            variant: Arc::new(variant),
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
            DenseUpdate,
            ConvForward,
            FeaturesGrad,
            ConvData,
            ConvWeights
        );
    }

    /// Launches `kernel` with one invocation per item of `items`, in workgroups of 64.
    fn launch_over(&self, kernel: Kernel, items: usize, buffers: &[&Handle]) {
        self.launch(
            kernel,
            WORKGROUP,
            items.div_ceil(WORKGROUP as usize),
            buffers,
        );
    }

    /// One training step on the images `indices` (at most a batch; the rest is padding), each
    /// moved by `shift` when given, at learning rate `lr`, with the hidden dense layers'
    /// dropout factors `masks` (one `[batch, width]` row-major vector per hidden layer; none
    /// without dropout).
    pub fn step(&mut self, indices: &[u32], shift: Option<Shift>, lr: f64, masks: &[Vec<f32>]) {
        let v = self.variant.clone();
        let l = &v.layout;
        let rows = l.rows;
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
            for (mask, width) in masks.iter().zip(&l.widths[1..]) {
                words.extend(mask.iter().map(|m| m.to_bits()));
                // Padding rows past the batch: dropped (their gradient is zero anyway).
                words.extend(std::iter::repeat_n(
                    0,
                    (rows * width).saturating_sub(mask.len()),
                ));
            }
        }
        let step = self.gpu.upload(&words);
        let (params, m, v2) = (&self.params, &self.moment_1, &self.moment_2);
        let last = v.convs.len().wrapping_sub(1);
        if !v.convs.is_empty() {
            let buffers = [&step, &self.images, &self.image];
            self.launch_over(Kernel::Gather, rows * IMAGE_PIXELS / 4, &buffers);
        }
        for (c, conv) in v.convs.iter().enumerate() {
            let out = if c == last {
                &self.x
            } else {
                &self.convs[c].pooled
            };
            let winners = &self.convs[c].winners;
            let items = rows * conv.pooled() * conv.pooled() * conv.outputs / 4;
            let input = if c == 0 {
                &self.image
            } else {
                &self.convs[c - 1].pooled
            };
            let buffers = [params, out, winners, input];
            self.launch_over(Kernel::ConvForward(c), items, &buffers);
        }
        let dense_forward = Kernel::DenseForward;
        let groups = rows / 4;
        if v.convs.is_empty() {
            let buffers = [params, &self.x, &self.z, &step, &self.images];
            self.launch(dense_forward, v.forward_workgroup(), groups, &buffers);
        } else {
            let buffers = [params, &self.x, &self.z];
            self.launch(dense_forward, v.forward_workgroup(), groups, &buffers);
        }
        let buffers = [
            &self.labels,
            &step,
            params,
            m,
            v2,
            &self.z,
            &self.d,
            &self.sums,
        ];
        self.launch(Kernel::Head, HEAD_WORKGROUP, 1, &buffers);
        let quads = l.widths[0] / 4;
        if let Some(top) = self.convs.last() {
            let buffers = [params, &self.d, &self.x, &top.winners, &top.gradient];
            self.launch_over(Kernel::FeaturesGrad, rows / 4 * quads, &buffers);
        }
        let buffers = [&step, params, m, v2, &self.x, &self.d];
        self.launch_over(Kernel::DenseUpdate, v.unit_groups() * quads, &buffers);
        for (c, conv) in v.convs.iter().enumerate().rev() {
            let here = &self.convs[c];
            if c > 0 {
                let below = &self.convs[c - 1];
                let blocks = conv.side.div_ceil(2);
                let items = rows * blocks * blocks * conv.inputs / 4;
                let buffers = [
                    params,
                    &here.gradient,
                    &below.pooled,
                    &below.winners,
                    &below.gradient,
                ];
                self.launch_over(Kernel::ConvData(c), items, &buffers);
            }
            let source = if c == 0 {
                &self.image
            } else {
                &self.convs[c - 1].pooled
            };
            let groups = conv.inputs / 4 * 3 * conv.outputs / 4;
            let buffers = [&step, params, m, v2, &here.gradient, source];
            self.launch(Kernel::ConvWeights(c), WEIGHTS_WORKGROUP, groups, &buffers);
        }
        self.counted += indices.len();
    }

    /// Writes the device's weights into `model` (keeping its parameter ids) and returns burn's
    /// optimizer state for them: what a checkpoint or an evaluation needs.
    pub fn store(
        &self,
        model: &mut Model,
        config: &TrainConfig,
    ) -> Result<ModuleOptimizer, FusedError> {
        let v = &self.variant;
        let values = v.to_burn(&self.gpu.read_f32(&self.params)?);
        let moments = Moments {
            time: self.time,
            first: v.to_burn(&self.gpu.read_f32(&self.moment_1)?),
            second: v.to_burn(&self.gpu.read_f32(&self.moment_2)?),
        };
        *model = set_flat_parameters(model.clone(), &values);
        moments.into_optimizer(config, &self.params_meta)
    }
}

impl RunningSums for FusedStep {
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
