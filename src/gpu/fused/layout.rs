//! Where the fused step keeps each number on the device, and the kernels' WGSL with those
//! places written in.
//!
//! The parameters live in one flat buffer in burn's module order, each tensor in the layout
//! its kernels read best: the first dense layer's weights transposed (a unit's weights
//! contiguous), a convolution's weights as `[in, 3, 3, out]` (a vec4 of output channels per
//! input channel and tap), the first convolution's single input channel padded to four (the
//! padding weights are zero and stay zero: their gradient is zero). Adam's moments share the
//! layout.

use burn::backend::wgpu::{KernelSource, SourceTemplate};
use burn::cubecl::prelude::KernelId;

use super::ParamMeta;
use crate::gpu::gather::{ImageLayout, pixels_source};
use crate::recipe::{ADAM_BETA1, ADAM_BETA2};

/// Words of the step buffer before the batch's rows (mlp_layout.wgsl).
pub(super) const ROWS_AT: usize = 8;

/// Invocations per workgroup of the head and evaluation kernels (a power of two, at most 256).
pub(super) const HEAD_WORKGROUP: u32 = 64;

/// Rows per workgroup of the head and evaluation kernels: a batch of 256 spreads over 64
/// workgroups (rows come in fours).
pub(super) const BLOCK: usize = 4;

/// Workgroups a dispatch should have at least, where its work allows, to keep a GPU's compute
/// units busy: a workgroup runs on one of them, and a workstation GPU has 20 to 100 or more.
pub(super) const WIDE: usize = 32;

/// Invocations per workgroup of the other kernels.
pub(super) const WORKGROUP: u32 = 64;

/// Invocations per workgroup of the convolution weight kernels: few, each summing many
/// positions, so that adding up their sums at the end is cheap.
pub(super) const WEIGHTS_WORKGROUP: u32 = 16;

/// One parameter tensor, as burn keeps it and as the device does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Segment {
    /// The same on both sides.
    Plain(usize),
    /// A `[rows, cols]` matrix, transposed on the device.
    Transposed { rows: usize, cols: usize },
    /// A 3×3 convolution's `[out, in, 3, 3]` weights, `[padded, 3, 3, out]` on the device.
    Conv {
        inputs: usize,
        padded: usize,
        outputs: usize,
    },
}

impl Segment {
    fn burn_len(self) -> usize {
        match self {
            Self::Plain(n) => n,
            Self::Transposed { rows, cols } => rows * cols,
            Self::Conv {
                inputs, outputs, ..
            } => outputs * inputs * 9,
        }
    }

    fn device_len(self) -> usize {
        match self {
            Self::Conv {
                padded, outputs, ..
            } => padded * 9 * outputs,
            other => other.burn_len(),
        }
    }

    /// For each device index, the burn index it holds (`None`: padding, zero).
    fn burn_index(self, device: usize) -> Option<usize> {
        match self {
            Self::Plain(_) => Some(device),
            Self::Transposed { rows, cols } => {
                let (col, row) = (device / rows, device % rows);
                Some(row * cols + col)
            }
            Self::Conv {
                inputs, outputs, ..
            } => {
                let (input, tap, output) = (
                    device / (9 * outputs),
                    device / outputs % 9,
                    device % outputs,
                );
                (input < inputs).then_some((output * inputs + input) * 9 + tap)
            }
        }
    }
}

/// The fused step's dense layers: the MLP, or the CNN's two dense layers on top of its
/// convolutions.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(super) struct Layout {
    /// Layer widths, input first: `[784, 30, 10, 10]` for the article's model.
    pub widths: Vec<usize>,
    /// Offsets of each layer's weights and bias in the parameter buffer.
    pub w_at: Vec<usize>,
    pub b_at: Vec<usize>,
    /// Offsets of each layer's `[rows, out]` pre-activations in the activation buffer.
    pub z_at: Vec<usize>,
    /// Offsets of each hidden layer's dropout factors in the step buffer (0 for the output).
    pub mask_at: Vec<usize>,
    /// Activations in all; dropout factors in all.
    pub activations: usize,
    pub masks: usize,
    /// Rows per batch, a multiple of 4.
    pub rows: usize,
}

impl Layout {
    /// Dense layers of `widths` whose parameters start at `base`, for batches of `batch` rows,
    /// padded to a multiple of 4 (the kernels take rows four at a time).
    fn new(widths: &[usize], batch: usize, base: usize) -> Self {
        let rows = batch.div_ceil(4) * 4;
        let layers = widths.len() - 1;
        let (mut w_at, mut b_at, mut z_at, mut mask_at) = (vec![], vec![], vec![], vec![]);
        let (mut params, mut activations) = (base, 0);
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
            activations,
            masks: masks - ROWS_AT - 2 * rows,
            rows,
        }
    }

    pub fn layers(&self) -> usize {
        self.widths.len() - 1
    }
}

/// The workgroup size for a kernel of one invocation per item over `items`: the largest of
/// 64, 32, 16 and 8 that still makes [`WIDE`] workgroups (8 when none does), so that a small
/// dispatch is not left to a few compute units.
pub(super) fn spread(items: usize) -> u32 {
    [64, 32, 16]
        .into_iter()
        .find(|&size| items.div_ceil(size) >= WIDE)
        .unwrap_or(8) as u32
}

/// Sums each invocation of the convolution weight kernel keeps (cnn_conv_weights.wgsl's
/// `SUMS`): 3 taps × 4 input channels × 2 vec4s of output channels, and 2 of biases.
pub(super) const WEIGHT_SUMS: usize = 26;

/// One of the CNN's convolution blocks: 3×3 convolution (same padding), ReLU, 2×2 max-pooling.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(super) struct Conv {
    /// Input channels, padded to a multiple of 4; how many of them are real.
    pub inputs: usize,
    pub real_inputs: usize,
    /// Output channels (a multiple of 8: the weight kernel takes them eight at a time).
    pub outputs: usize,
    /// Side of the input (and of the convolution's output); the pooled side is half of it.
    pub side: usize,
    /// Offsets of the weights and the bias in the parameter buffer.
    pub w_at: usize,
    pub b_at: usize,
}

impl Conv {
    pub fn pooled(&self) -> usize {
        self.side / 2
    }

    /// Workgroups of the weight kernel's sums: one per four input channels, kernel row and
    /// eight output channels.
    pub fn weight_groups(&self) -> usize {
        self.inputs / 4 * 3 * self.outputs / 8
    }

    /// Slices of the batch's positions the weight kernel splits its sums into, each in
    /// workgroups of its own, when there are fewer than [`WIDE`] of them (the first
    /// convolution: 6); `cnn_conv_weights_sum.wgsl` adds the slices up and applies Adam.
    pub fn slices(&self) -> usize {
        WIDE.div_ceil(self.weight_groups())
    }

    /// Invocations of the slices' sum kernel: one per sum of each weight workgroup.
    pub fn sum_items(&self) -> usize {
        self.weight_groups() * WEIGHT_SUMS
    }
}

/// What selects one compiled variant of the fused kernels: the network's shape, the batch,
/// the split's size and how its images are kept, dropout.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(super) struct Variant {
    pub layout: Layout,
    pub convs: Vec<Conv>,
    segments: Vec<Segment>,
    pub count: usize,
    pub dropout: bool,
    pub images: ImageLayout,
}

impl Variant {
    /// The variant for a model with parameters `meta` (burn's order and shapes) over the
    /// images `images` describes: an MLP (only dense layers) or the CNN (3×3 convolutions,
    /// each followed by 2×2 pooling, then dense layers; square images). `Err`, with the
    /// reason, for anything else.
    pub fn new(
        meta: &[ParamMeta],
        batch: usize,
        count: usize,
        dropout: bool,
        images: ImageLayout,
    ) -> Result<Self, String> {
        let mut segments = Vec::new();
        let mut convs = Vec::new();
        let mut widths = Vec::new();
        let shape = images.shape;
        let (mut at, mut side, mut channels) = (0, shape.height, shape.channels);
        let mut dense_base = None;
        let mut shapes = meta.iter().map(|(_, shape)| shape.as_slice());
        while let Some(weights) = shapes.next() {
            let Some(&[bias]) = shapes.next() else {
                return Err("a layer without a bias".into());
            };
            match *weights {
                [outputs, inputs, 3, 3] if dense_base.is_none() && inputs == channels => {
                    if shape.height != shape.width {
                        return Err(format!(
                            "the fused CNN takes square images, not {}x{}",
                            shape.height, shape.width
                        ));
                    }
                    if bias != outputs
                        || outputs % 8 != 0
                        || side < 2
                        || inputs > 4 && convs.is_empty()
                    {
                        return Err(format!("a convolution to {outputs} channels"));
                    }
                    let padded = inputs.div_ceil(4) * 4;
                    let conv = Segment::Conv {
                        inputs,
                        padded,
                        outputs,
                    };
                    convs.push(Conv {
                        inputs: padded,
                        real_inputs: inputs,
                        outputs,
                        side,
                        w_at: at,
                        b_at: at + conv.device_len(),
                    });
                    at += conv.device_len() + bias;
                    segments.extend([conv, Segment::Plain(bias)]);
                    (side, channels) = (side / 2, outputs);
                }
                [inputs, outputs] if bias == outputs => {
                    if widths.is_empty() {
                        let expected = if convs.is_empty() {
                            shape.pixels()
                        } else {
                            channels * side * side
                        };
                        if inputs != expected || inputs % 4 != 0 {
                            return Err(format!("a dense layer of {inputs} inputs"));
                        }
                        widths.push(inputs);
                        dense_base = Some(at);
                        segments.push(Segment::Transposed {
                            rows: inputs,
                            cols: outputs,
                        });
                    } else {
                        segments.push(Segment::Plain(inputs * outputs));
                    }
                    widths.push(outputs);
                    segments.push(Segment::Plain(bias));
                    at += inputs * outputs + bias;
                }
                ref other => return Err(format!("a parameter of shape {other:?}")),
            }
        }
        let (Some(base), Some(&classes)) = (dense_base, widths.last()) else {
            return Err("no dense layers".into());
        };
        if !(2..=crate::data::MAX_CLASSES).contains(&classes) {
            return Err(format!("{classes} classes"));
        }
        Ok(Self {
            layout: Layout::new(&widths, batch, base),
            convs,
            segments,
            count,
            dropout,
            images,
        })
    }

    /// Floats in the largest buffer a training step of this variant binds (the first
    /// convolution's output gradient for the CNN, x or the activations for the MLP).
    pub fn largest_buffer(&self) -> usize {
        let l = &self.layout;
        let convs = self
            .convs
            .iter()
            .map(|c| l.rows * c.side * c.side * c.outputs);
        convs
            .chain([l.rows * l.widths[0], l.activations, self.device_params()])
            .max()
            .unwrap_or(0)
    }

    /// Length of the parameter buffer.
    pub fn device_params(&self) -> usize {
        self.segments.iter().map(|s| s.device_len()).sum()
    }

    /// Parameters in burn's module order, laid out for the device.
    pub fn to_device(&self, burn: &[f32]) -> Vec<f32> {
        let mut device = Vec::with_capacity(self.device_params());
        let mut base = 0;
        for segment in &self.segments {
            let part = &burn[base..base + segment.burn_len()];
            device.extend(
                (0..segment.device_len()).map(|i| segment.burn_index(i).map_or(0.0, |j| part[j])),
            );
            base += segment.burn_len();
        }
        device
    }

    /// The inverse of [`Variant::to_device`].
    pub fn to_burn(&self, device: &[f32]) -> Vec<f32> {
        let mut burn = Vec::new();
        let mut base = 0;
        for segment in &self.segments {
            let mut part = vec![0.0; segment.burn_len()];
            for i in 0..segment.device_len() {
                if let Some(j) = segment.burn_index(i) {
                    part[j] = device[base + i];
                }
            }
            burn.extend(part);
            base += segment.device_len();
        }
        burn
    }

    /// mlp_layout.wgsl (and mlp_adam.wgsl for parameters of WGSL type `adam`, when given)
    /// with this variant's numbers, then `body`.
    fn template(&self, body: &str, adam: Option<&str>) -> SourceTemplate {
        let l = &self.layout;
        let mut source = SourceTemplate::new(include_str!("../../../shaders/mlp_layout.wgsl"));
        if adam.is_some() {
            source = source.add_template(include_str!("../../../shaders/mlp_adam.wgsl"));
        }
        let bits = |x: f32| format!("{:#x}", x.to_bits());
        source
            .add_template(body)
            .register("rows", l.rows.to_string())
            .register("count", self.count.to_string())
            .register("classes", l.widths[l.widths.len() - 1].to_string())
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

    /// A per-layer pass (mlp_head_forward.wgsl or mlp_head_backward.wgsl) for dense layer `i`
    /// (at least 1).
    fn layer_pass(&self, template: &str, i: usize) -> String {
        let l = &self.layout;
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
    }

    /// The forward passes of the dense layers after the first.
    fn forward_passes(&self) -> String {
        (1..self.layout.layers())
            .map(|i| self.layer_pass(include_str!("../../../shaders/mlp_head_forward.wgsl"), i))
            .collect()
    }

    /// mlp_eval.wgsl with its per-layer passes written out.
    fn eval_source(&self) -> String {
        let l = &self.layout;
        SourceTemplate::new(include_str!("../../../shaders/mlp_eval.wgsl"))
            .register("forward", self.forward_passes())
            .register("logits", l.z_at[l.layers() - 1].to_string())
            .register("workgroup", HEAD_WORKGROUP.to_string())
            .register("block", BLOCK.to_string())
            .complete()
    }

    /// mlp_head.wgsl with its per-layer passes written out.
    fn head_source(&self) -> String {
        let l = &self.layout;
        let last = l.layers() - 1;
        let backward: String = (1..=last)
            .rev()
            .map(|i| self.layer_pass(include_str!("../../../shaders/mlp_head_backward.wgsl"), i))
            .collect();
        SourceTemplate::new(include_str!("../../../shaders/mlp_head.wgsl"))
            .register("forward", self.forward_passes())
            .register("backward", backward)
            .register("logits", l.z_at[last].to_string())
            .register("d_logit", self.d_index(last, "row", "c"))
            .register("workgroup", HEAD_WORKGROUP.to_string())
            .register("block", BLOCK.to_string())
            .complete()
    }

    /// mlp_gradients.wgsl with its per-layer sums written out.
    fn gradients_source(&self) -> String {
        let layers: String = (1..self.layout.layers())
            .map(|i| self.layer_pass(include_str!("../../../shaders/mlp_layer_gradients.wgsl"), i))
            .collect();
        SourceTemplate::new(include_str!("../../../shaders/mlp_gradients.wgsl"))
            .register("layers", layers)
            .register("workgroup", spread(self.gradient_items()).to_string())
            .complete()
    }

    /// Invocations of mlp_gradients.wgsl: one per weight and bias of the dense layers after
    /// the first, and per bias of the first.
    pub fn gradient_items(&self) -> usize {
        let w = &self.layout.widths;
        let later: usize = (1..self.layout.layers())
            .map(|i| w[i] * w[i + 1] + w[i + 1])
            .sum();
        later + w[1]
    }

    /// Invocations of the first dense layer's update kernel: one per four inputs of four units.
    pub fn update_items(&self) -> usize {
        self.unit_groups() * self.layout.widths[0] / 4
    }

    /// Groups of four first-dense-layer units: each invocation of the forward and update
    /// kernels takes one.
    pub fn unit_groups(&self) -> usize {
        self.layout.widths[1].div_ceil(4)
    }

    /// Quads (four inputs) of each of its four rows the dense forward kernel stages in
    /// workgroup memory at a time: all of them up to 256 (16 KiB for the four rows, WebGPU's
    /// baseline), in chunks of 256 past that.
    pub fn staged_quads(&self) -> usize {
        (self.layout.widths[0] / 4).min(256)
    }

    /// Invocations per workgroup of the dense forward kernel: one per group of four units, in
    /// whole groups of 8 (a CPU's vector), at most 64 (wider layers loop).
    pub fn forward_workgroup(&self) -> u32 {
        (self.unit_groups().div_ceil(8) * 8).min(64) as u32
    }

    /// The binding (numbered `n`) and the `input` function of convolution `c`'s kernels: the
    /// gathered images for the first, the pooled output below for the others.
    fn conv_input(&self, c: usize, n: usize) -> (String, String) {
        let bind = |name: &str, ty: &str| {
            format!("@group(0) @binding({n}) var<storage, read_write> {name}: array<{ty}>;\n")
        };
        if c == 0 {
            // A registered value cannot hold placeholders: the channels are written in here.
            let input = include_str!("../../../shaders/cnn_input_image.wgsl")
                .replace("{{ channels }}", &self.images.shape.channels.to_string());
            (bind("image", "f32"), input)
        } else {
            let input = include_str!("../../../shaders/cnn_input_pooled.wgsl");
            (bind("below", "vec4<f32>"), input.to_string())
        }
    }

    /// A convolution kernel's template with convolution `c`'s numbers.
    fn conv_template(&self, c: usize, body: &str, adam: bool, binding: usize) -> SourceTemplate {
        let conv = self.convs[c];
        let (bindings, input) = self.conv_input(c, binding);
        let last = c + 1 == self.convs.len();
        let output = if last {
            include_str!("../../../shaders/cnn_output_features.wgsl")
        } else {
            include_str!("../../../shaders/cnn_output_pooled.wgsl")
        };
        self.template(body, adam.then_some("vec4<f32>"))
            .register("input_bindings", bindings)
            .register("input", input)
            .register("output", output)
            .register("ic4", (conv.inputs / 4).to_string())
            .register("ic_real", conv.real_inputs.to_string())
            .register("oc4", (conv.outputs / 4).to_string())
            .register("side", conv.side.to_string())
            .register("pooled", conv.pooled().to_string())
            .register("w_at4", (conv.w_at / 4).to_string())
            .register("b_at4", (conv.b_at / 4).to_string())
            .register("workgroup", WORKGROUP.to_string())
    }
}

/// The fused step's kernels, each a WGSL source compiled once per [`Variant`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(super) enum Kernel {
    /// The CNN's images, gathered for the first convolution (cnn_gather.wgsl).
    Gather,
    /// The first dense layer forward (mlp_forward.wgsl), gathering the images for the MLP.
    DenseForward,
    /// The later dense layers, the loss and the backward pass, a block of rows a workgroup
    /// (mlp_head.wgsl).
    Head,
    /// The later dense layers' and the first layer's bias's gradients and Adam
    /// (mlp_gradients.wgsl).
    Gradients,
    /// The later dense layers and each row's loss and prediction (mlp_eval.wgsl).
    Eval,
    /// The first dense layer's weight gradient and Adam (mlp_update.wgsl).
    DenseUpdate,
    /// Convolution block `c` forward (cnn_conv_forward.wgsl).
    ConvForward(usize),
    /// The gradient into the dense layer's input and the last block's pooling
    /// (cnn_features_grad.wgsl).
    FeaturesGrad,
    /// The gradient into convolution `c`'s input and the pooling below (cnn_conv_data.wgsl).
    ConvData(usize),
    /// Convolution `c`'s weight gradient and Adam (cnn_conv_weights.wgsl); in slices, each
    /// slice's sums only, when the convolution has [`Conv::slices`].
    ConvWeights(usize),
    /// Convolution `c`'s slices of weight gradient added up, and Adam
    /// (cnn_conv_weights_sum.wgsl).
    ConvWeightsSum(usize),
}

/// A kernel of a variant, ready to launch. The type parameter names the kernel in cubecl's
/// logs and launch counts (`Fused<Head>`, …); [`Kernel`] says which it is.
pub(super) struct Source<K> {
    pub variant: std::sync::Arc<Variant>,
    pub kernel: Kernel,
    pub name: std::marker::PhantomData<K>,
}

/// Names of the fused kernels, for [`Source`]'s type parameter.
pub(super) mod names {
    /// [`super::Kernel::Gather`].
    pub struct Gather;
    /// [`super::Kernel::DenseForward`].
    pub struct DenseForward;
    /// [`super::Kernel::Head`].
    pub struct Head;
    /// [`super::Kernel::Gradients`].
    pub struct Gradients;
    /// [`super::Kernel::Eval`].
    pub struct Eval;
    /// [`super::Kernel::DenseUpdate`].
    pub struct DenseUpdate;
    /// [`super::Kernel::ConvForward`].
    pub struct ConvForward;
    /// [`super::Kernel::FeaturesGrad`].
    pub struct FeaturesGrad;
    /// [`super::Kernel::ConvData`].
    pub struct ConvData;
    /// [`super::Kernel::ConvWeights`].
    pub struct ConvWeights;
    /// [`super::Kernel::ConvWeightsSum`].
    pub struct ConvWeightsSum;
}

impl<K: Send + Sync + 'static> KernelSource for Source<K> {
    fn source(&self) -> SourceTemplate {
        let v = &self.variant;
        match self.kernel {
            Kernel::DenseForward => {
                let stage = if v.convs.is_empty() {
                    pixels_source(&v.images, 5)
                        + include_str!("../../../shaders/mlp_stage_pixels.wgsl")
                } else {
                    include_str!("../../../shaders/mlp_stage_features.wgsl").to_string()
                };
                v.template(include_str!("../../../shaders/mlp_forward.wgsl"), None)
                    .register("stage", stage)
                    .register("stage_quads", v.staged_quads().to_string())
                    .register("staged", (4 * v.staged_quads()).to_string())
                    .register("workgroup", v.forward_workgroup().to_string())
            }
            Kernel::Head => {
                let source =
                    include_str!("../../../shaders/mlp_logits.wgsl").to_string() + &v.head_source();
                v.template(&source, None)
            }
            Kernel::Gradients => v.template(&v.gradients_source(), Some("f32")),
            Kernel::Eval => {
                let source =
                    include_str!("../../../shaders/mlp_logits.wgsl").to_string() + &v.eval_source();
                v.template(&source, None)
            }
            Kernel::DenseUpdate => v
                .template(
                    include_str!("../../../shaders/mlp_update.wgsl"),
                    Some("vec4<f32>"),
                )
                .register("workgroup", spread(v.update_items()).to_string()),
            Kernel::Gather => v
                .template(
                    &(pixels_source(&v.images, 3)
                        + include_str!("../../../shaders/cnn_gather.wgsl")),
                    None,
                )
                .register("workgroup", WORKGROUP.to_string()),
            Kernel::ConvForward(c) => v.conv_template(
                c,
                include_str!("../../../shaders/cnn_conv_forward.wgsl"),
                false,
                3,
            ),
            Kernel::ConvData(c) => v.conv_template(
                c,
                include_str!("../../../shaders/cnn_conv_data.wgsl"),
                false,
                5,
            ),
            Kernel::ConvWeights(c) => {
                let sliced = v.convs[c].slices() > 1;
                let (finish, partials) = if sliced {
                    (
                        include_str!("../../../shaders/cnn_conv_weights_slice.wgsl"),
                        "@group(0) @binding(6) var<storage, read_write> partials: array<vec4<f32>>;",
                    )
                } else {
                    (
                        include_str!("../../../shaders/cnn_conv_weights_adam.wgsl"),
                        "",
                    )
                };
                let source = include_str!("../../../shaders/cnn_conv_weights.wgsl").to_string()
                    + include_str!("../../../shaders/cnn_conv_weights_apply.wgsl");
                v.conv_template(c, &source, true, 5)
                    .register("workgroup", WEIGHTS_WORKGROUP.to_string())
                    .register(
                        "partial",
                        (WEIGHTS_WORKGROUP as usize * WEIGHT_SUMS).to_string(),
                    )
                    .register("finish", finish)
                    .register("partials", partials)
                    .register("slices", v.convs[c].slices().to_string())
            }
            Kernel::ConvWeightsSum(c) => {
                let source = include_str!("../../../shaders/cnn_conv_weights_sum.wgsl").to_string()
                    + include_str!("../../../shaders/cnn_conv_weights_apply.wgsl");
                v.conv_template(c, &source, true, 5)
                    .register("workgroup", spread(v.convs[c].sum_items()).to_string())
                    .register("slices", v.convs[c].slices().to_string())
            }
            Kernel::FeaturesGrad => {
                let conv = v.convs[v.convs.len() - 1];
                v.template(
                    include_str!("../../../shaders/cnn_features_grad.wgsl"),
                    None,
                )
                .register("side", conv.side.to_string())
                .register("pooled", conv.pooled().to_string())
                .register("channels", conv.outputs.to_string())
                .register("workgroup", WORKGROUP.to_string())
            }
        }
    }

    fn id(&self) -> KernelId {
        KernelId::new::<Self>().info((self.variant.as_ref().clone(), self.kernel))
    }

    fn lang(&self) -> &'static str {
        "wgsl"
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::module::ParamId;

    fn mnist(count: usize) -> ImageLayout {
        ImageLayout::of(crate::data::ImageShape::MNIST, count).unwrap()
    }

    fn meta(shapes: &[&[usize]]) -> Vec<ParamMeta> {
        shapes
            .iter()
            .map(|s| (ParamId::new(), s.to_vec()))
            .collect()
    }

    #[test]
    fn the_mlp_layout_places_layers_one_after_another() {
        let meta = meta(&[&[784, 30], &[30], &[30, 10], &[10], &[10, 10], &[10]]);
        let v = Variant::new(&meta, 30, 1000, true, mnist(1000)).unwrap();
        let l = &v.layout;
        assert_eq!(l.rows, 32, "rows padded to a multiple of 4");
        assert_eq!(l.widths, vec![784, 30, 10, 10]);
        assert_eq!(l.w_at, vec![0, 23_550, 23_860]);
        assert_eq!(l.b_at, vec![23_520, 23_850, 23_960]);
        assert_eq!(v.device_params(), 23_970);
        assert_eq!(l.z_at, vec![0, 32 * 30, 32 * 40]);
        assert_eq!(l.activations, 32 * 50);
        let rows_end = ROWS_AT + 64;
        assert_eq!(l.mask_at, vec![rows_end, rows_end + 32 * 30, 0]);
        assert_eq!(l.masks, 32 * 40);
        assert!(v.convs.is_empty());
        // The first layer's weights go to the device transposed, and come back.
        let burn: Vec<f32> = (0..23_970).map(|i| i as f32).collect();
        let device = v.to_device(&burn);
        assert_eq!(device[1], burn[30], "unit 0's second weight");
        assert_eq!(device[784], burn[1], "unit 1's first weight");
        assert_eq!(device[23_520..], burn[23_520..], "the rest as it was");
        assert_eq!(v.to_burn(&device), burn);
    }

    #[test]
    fn the_cnn_layout_pads_the_first_convolution_and_puts_the_dense_layers_after() {
        let meta = meta(&[
            &[16, 1, 3, 3],
            &[16],
            &[32, 16, 3, 3],
            &[32],
            &[64, 32, 3, 3],
            &[64],
            &[576, 128],
            &[128],
            &[128, 10],
            &[10],
        ]);
        let v = Variant::new(&meta, 32, 1000, false, mnist(1000)).unwrap();
        let sides: Vec<_> = v
            .convs
            .iter()
            .map(|c| (c.inputs, c.outputs, c.side))
            .collect();
        assert_eq!(sides, vec![(4, 16, 28), (16, 32, 14), (32, 64, 7)]);
        assert_eq!(v.convs[0].real_inputs, 1);
        // conv 1: 4 × 9 × 16 padded weights and 16 biases, then conv 2 …
        assert_eq!((v.convs[0].w_at, v.convs[0].b_at), (0, 576));
        assert_eq!(v.convs[1].w_at, 592);
        let dense = 592 + 16 * 9 * 32 + 32 + 32 * 9 * 64 + 64;
        assert_eq!(v.layout.w_at, vec![dense, dense + 576 * 128 + 128]);
        assert_eq!(v.layout.widths, vec![576, 128, 10]);
        let burn_len = 98_442;
        assert_eq!(v.device_params(), burn_len + 3 * 9 * 16);
        let burn: Vec<f32> = (0..burn_len).map(|i| i as f32).collect();
        let device = v.to_device(&burn);
        // Weight (out 1, in 0, tap 0) of conv 1 is burn's 9th number; on the device it sits
        // at (in 0, tap 0, out 1); the padding inputs are zero.
        assert_eq!(device[1], burn[9]);
        assert_eq!(device[16], burn[1], "(in 0, tap 1, out 0)");
        assert!(device[9 * 16..4 * 9 * 16].iter().all(|&w| w == 0.0));
        assert_eq!(v.to_burn(&device), burn);
        assert_eq!(
            v.largest_buffer(),
            32 * 28 * 28 * 16,
            "the first convolution's gradient"
        );
    }

    #[test]
    fn shapes_the_kernels_cannot_take_are_refused_by_name() {
        let one = meta(&[&[784, 30], &[30], &[30, 1], &[1]]);
        assert!(
            Variant::new(&one, 32, 10, false, mnist(10))
                .unwrap_err()
                .contains("1 classes")
        );
        let conv = meta(&[&[6, 1, 3, 3], &[6], &[1176, 10], &[10]]);
        assert!(
            Variant::new(&conv, 32, 10, false, mnist(10))
                .unwrap_err()
                .contains("6 channels")
        );
        let wide = ImageLayout::of(
            crate::data::ImageShape {
                channels: 1,
                height: 28,
                width: 32,
            },
            10,
        )
        .unwrap();
        let cnn = meta(&[&[16, 1, 3, 3], &[16], &[1792, 10], &[10]]);
        assert!(
            Variant::new(&cnn, 32, 10, false, wide)
                .unwrap_err()
                .contains("square")
        );
    }
}
