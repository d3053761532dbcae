//! The networks: the article's MLP (Flatten → Dense(30, ReLU) → Dense(10, ReLU) → Dense(10) →
//! softmax, hidden widths configurable) and a small CNN past it. Initialised as Keras does it:
//! Glorot-uniform weights, zero biases, drawn on the host from the seed so that every backend
//! starts from the same weights.

use burn::module::{Module, ModuleVisitor, Param};
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::pool::{MaxPool2d, MaxPool2dConfig};
use burn::nn::{Linear, LinearConfig, PaddingConfig2d};
use burn::tensor::activation::relu;
use burn::tensor::{Device, Tensor, TensorData};
use rand::RngExt;
use rand::rngs::StdRng;
use serde::{Deserialize, Serialize};

use crate::data::{IMAGE_PIXELS, IMAGE_SIDE, NUM_CLASSES};
use crate::rng;

/// Which network to train.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Hash, clap::ValueEnum, Serialize, Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Architecture {
    /// The article's multi-layer perceptron (hidden widths from --hidden)
    #[default]
    Mlp,
    /// A small convolutional network: three 3×3 conv–ReLU–max-pool blocks (16, 32, 64
    /// channels), then Dense(128, ReLU) and Dense(10)
    Cnn,
}

impl Architecture {
    /// How many parameters the network has with these hidden widths (the MLP's; the CNN has
    /// none to choose), saturating rather than overflowing on absurd widths: a model file's
    /// header is checked against its weights with it before anything is built.
    pub fn parameter_count(self, hidden: &[usize]) -> u64 {
        let dense = |widths: &[u64]| {
            widths.windows(2).fold(0u64, |acc, w| {
                acc.saturating_add(w[0].saturating_add(1).saturating_mul(w[1]))
            })
        };
        match self {
            Self::Mlp => {
                let widths: Vec<u64> = std::iter::once(IMAGE_PIXELS)
                    .chain(hidden.iter().copied())
                    .chain(std::iter::once(NUM_CLASSES))
                    .map(|w| w as u64)
                    .collect();
                dense(&widths)
            }
            Self::Cnn => {
                let mut count = 0u64;
                let mut channels = 1u64;
                for out in CNN_CHANNELS.map(|c| c as u64) {
                    count += (channels * 9 + 1) * out;
                    channels = out;
                }
                let side = (IMAGE_SIDE >> CNN_CHANNELS.len()) as u64;
                count + dense(&[channels * side * side, CNN_DENSE as u64, NUM_CLASSES as u64])
            }
        }
    }
}

impl std::fmt::Display for Architecture {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Mlp => "mlp",
            Self::Cnn => "cnn",
        })
    }
}

/// A network `trainer` trains: images `[batch, 784]` in, logits `[batch, 10]` out.
#[derive(Module, Debug)]
// One model lives per run, and burn's Module derive does not see through a Box.
#[allow(clippy::large_enum_variant)]
pub enum Model {
    /// The multi-layer perceptron.
    Mlp(Mlp),
    /// The convolutional network.
    Cnn(Cnn),
}

impl Model {
    /// Builds `architecture` on `device` with weights seeded by `seed`; `hidden` are the MLP's
    /// hidden widths (the CNN has none).
    pub fn new(
        architecture: Architecture,
        hidden: &[usize],
        seed: u64,
        device: &Device,
    ) -> Result<Self, ModelError> {
        Ok(match architecture {
            Architecture::Mlp => Self::Mlp(Mlp::new(hidden, seed, device)?),
            Architecture::Cnn => Self::Cnn(Cnn::new(seed, device)),
        })
    }

    /// Maps images `[batch, 784]` (pixels in [0, 1]) to logits `[batch, 10]`.
    pub fn forward(&self, images: Tensor<2>) -> Tensor<2> {
        self.forward_dropped(images, &[])
    }

    /// [`Model::forward`] in training with dropout: the activations of hidden dense layer `i`
    /// are multiplied by `masks[i]` (see [`rng::dropout_factors`]); no mask, no dropout.
    pub fn forward_dropped(&self, images: Tensor<2>, masks: &[Tensor<2>]) -> Tensor<2> {
        match self {
            Self::Mlp(m) => m.forward_dropped(images, masks),
            Self::Cnn(c) => c.forward_dropped(images, masks),
        }
    }

    /// Widths of the hidden dense layers, where dropout applies: the MLP's hidden layers,
    /// the CNN's Dense(128).
    pub fn dropout_widths(&self) -> Vec<usize> {
        match self {
            Self::Mlp(m) => {
                let widths = m.widths();
                widths[1..widths.len() - 1].to_vec()
            }
            Self::Cnn(_) => vec![CNN_DENSE],
        }
    }

    /// Which network this is.
    pub fn architecture(&self) -> Architecture {
        match self {
            Self::Mlp(_) => Architecture::Mlp,
            Self::Cnn(_) => Architecture::Cnn,
        }
    }

    /// Every parameter tensor as plain numbers, in the module's order: for comparing models
    /// exactly, whatever backend they live on.
    pub fn parameters(&self) -> Result<Vec<Vec<f32>>, crate::metrics::ReadError> {
        struct Collect(Vec<Result<Vec<f32>, crate::metrics::ReadError>>);
        impl ModuleVisitor for Collect {
            fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
                self.0.push(crate::metrics::read_floats(param.val()));
            }
        }
        let mut collect = Collect(Vec::new());
        self.visit(&mut collect);
        collect.0.into_iter().collect()
    }

    /// The MLP's hidden widths (empty for the CNN).
    pub fn hidden(&self) -> Vec<usize> {
        match self {
            Self::Mlp(m) => {
                let widths = m.widths();
                widths[1..widths.len() - 1].to_vec()
            }
            Self::Cnn(_) => Vec::new(),
        }
    }
}

/// One layer's parameters in PyTorch's layout and under the name of the PyTorch module the
/// README defines for the network (`fc1`, `fc2`, … for the MLP; `conv1`–`conv3`, `fc1`, `fc2`
/// for the CNN): a dense weight `[out, in]` (burn keeps `[in, out]`), a convolution weight
/// `[out, in, 3, 3]`. The CNN's flatten before `fc1` is NCHW's, as PyTorch's `flatten(1)`.
#[derive(Debug, Clone, PartialEq)]
pub struct TorchLayer {
    /// The module's name (`fc1`, `conv2`, …).
    pub name: String,
    /// The weight's shape in PyTorch's layout.
    pub weight_shape: Vec<usize>,
    /// The weight, row-major in that shape.
    pub weight: Vec<f32>,
    /// The bias, one per output.
    pub bias: Vec<f32>,
}

impl TorchLayer {
    /// Whether this is a 3×3 convolution (its weight has four dimensions).
    pub fn is_conv(&self) -> bool {
        self.weight_shape.len() == 4
    }
}

/// The layers of `architecture` as PyTorch names them, with their weight shapes in PyTorch's
/// layout: what a file in that layout must hold.
pub fn torch_shapes(architecture: Architecture, hidden: &[usize]) -> Vec<(String, Vec<usize>)> {
    let dense = |first: usize, widths: &[usize]| {
        widths
            .windows(2)
            .enumerate()
            .map(|(i, w)| (format!("fc{}", first + i), vec![w[1], w[0]]))
            .collect::<Vec<_>>()
    };
    match architecture {
        Architecture::Mlp => {
            let widths: Vec<usize> = std::iter::once(IMAGE_PIXELS)
                .chain(hidden.iter().copied())
                .chain(std::iter::once(NUM_CLASSES))
                .collect();
            dense(1, &widths)
        }
        Architecture::Cnn => {
            let mut layers = Vec::new();
            let mut channels = 1;
            for (i, out) in CNN_CHANNELS.into_iter().enumerate() {
                layers.push((format!("conv{}", i + 1), vec![out, channels, 3, 3]));
                channels = out;
            }
            let side = IMAGE_SIDE >> CNN_CHANNELS.len();
            layers.extend(dense(1, &[channels * side * side, CNN_DENSE, NUM_CLASSES]));
            layers
        }
    }
}

/// Why weights in PyTorch's layout do not make a network.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TorchLayoutError {
    /// The layers' names or shapes are not those of the architecture.
    #[error(
        "{layer}: expected a weight of shape {expected:?} and {outputs} biases, got {got:?} and {biases}"
    )]
    Shape {
        /// The layer.
        layer: String,
        /// The shape the architecture needs.
        expected: Vec<usize>,
        /// The shape given.
        got: Vec<usize>,
        /// The biases the architecture needs.
        outputs: usize,
        /// The biases given.
        biases: usize,
    },
    /// A different number of layers, or layers under other names.
    #[error("expected the layers {expected:?}, got {got:?}")]
    Layers {
        /// The layers the architecture has.
        expected: Vec<String>,
        /// The layers given.
        got: Vec<String>,
    },
    /// The widths make no network.
    #[error(transparent)]
    Model(#[from] ModelError),
}

impl Model {
    /// The network's parameters in PyTorch's layout, layer by layer (see [`TorchLayer`]).
    pub fn torch_layers(&self) -> Result<Vec<TorchLayer>, crate::metrics::ReadError> {
        let dense = |l: &Linear| -> Result<(Vec<f32>, Vec<f32>), crate::metrics::ReadError> {
            let weight = crate::metrics::read_floats(l.weight.val().transpose())?;
            let bias = match &l.bias {
                Some(b) => crate::metrics::read_floats(b.val())?,
                None => vec![0.0; l.weight.dims()[1]],
            };
            Ok((weight, bias))
        };
        let conv = |c: &Conv2d| -> Result<(Vec<f32>, Vec<f32>), crate::metrics::ReadError> {
            let weight = crate::metrics::read_floats(c.weight.val())?;
            let bias = match &c.bias {
                Some(b) => crate::metrics::read_floats(b.val())?,
                None => vec![0.0; c.weight.dims()[0]],
            };
            Ok((weight, bias))
        };
        let values = match self {
            Self::Mlp(m) => m.layers.iter().map(dense).collect::<Result<Vec<_>, _>>()?,
            Self::Cnn(c) => {
                let mut v = c.convs.iter().map(conv).collect::<Result<Vec<_>, _>>()?;
                v.push(dense(&c.dense)?);
                v.push(dense(&c.output)?);
                v
            }
        };
        Ok(torch_shapes(self.architecture(), &self.hidden())
            .into_iter()
            .zip(values)
            .map(|((name, weight_shape), (weight, bias))| TorchLayer {
                name,
                weight_shape,
                weight,
                bias,
            })
            .collect())
    }

    /// Builds `architecture` on `device` with the weights `layers` give in PyTorch's layout;
    /// the layers must be exactly those of [`torch_shapes`], in that order.
    pub fn from_torch_layers(
        architecture: Architecture,
        hidden: &[usize],
        layers: Vec<TorchLayer>,
        device: &Device,
    ) -> Result<Self, TorchLayoutError> {
        let expected = torch_shapes(architecture, hidden);
        if expected.len() != layers.len()
            || expected.iter().zip(&layers).any(|((n, _), l)| *n != l.name)
        {
            return Err(TorchLayoutError::Layers {
                expected: expected.into_iter().map(|(n, _)| n).collect(),
                got: layers.into_iter().map(|l| l.name).collect(),
            });
        }
        for ((name, shape), layer) in expected.iter().zip(&layers) {
            // Shapes first: a described width may be absurd, the file's own shape is not.
            if layer.weight_shape != *shape
                || layer.weight.len() != shape.iter().product::<usize>()
                || layer.bias.len() != shape[0]
            {
                return Err(TorchLayoutError::Shape {
                    layer: name.clone(),
                    expected: shape.clone(),
                    got: layer.weight_shape.clone(),
                    outputs: shape[0],
                    biases: layer.bias.len(),
                });
            }
        }
        let mut model = Model::new(architecture, hidden, 0, device)?;
        let mut layers = layers.into_iter();
        match &mut model {
            Self::Mlp(m) => {
                for (linear, layer) in m.layers.iter_mut().zip(layers) {
                    set_dense(linear, layer, device);
                }
            }
            Self::Cnn(c) => {
                for (conv, layer) in c.convs.iter_mut().zip(layers.by_ref()) {
                    let shape: [usize; 4] = [0, 1, 2, 3].map(|i| layer.weight_shape[i]);
                    conv.weight = Param::from_data(TensorData::new(layer.weight, shape), device);
                    conv.bias = Some(Param::from_data(
                        TensorData::new(layer.bias, [shape[0]]),
                        device,
                    ));
                }
                for (linear, layer) in [&mut c.dense, &mut c.output].into_iter().zip(layers) {
                    set_dense(linear, layer, device);
                }
            }
        }
        Ok(model)
    }
}

/// Sets a burn `Linear` (weight `[in, out]`) from a PyTorch-layout layer (`[out, in]`).
fn set_dense(linear: &mut Linear, layer: TorchLayer, device: &Device) {
    let (outputs, inputs) = (layer.weight_shape[0], layer.weight_shape[1]);
    let mut weight = vec![0f32; outputs * inputs];
    for o in 0..outputs {
        for i in 0..inputs {
            weight[i * outputs + o] = layer.weight[o * inputs + i];
        }
    }
    linear.weight = Param::from_data(TensorData::new(weight, [inputs, outputs]), device);
    linear.bias = Some(Param::from_data(
        TensorData::new(layer.bias, [outputs]),
        device,
    ));
}

/// A multi-layer perceptron over flattened 28 × 28 images: ReLU hidden layers, then a linear
/// layer to 10 logits (softmax is folded into the loss).
#[derive(Module, Debug)]
pub struct Mlp {
    layers: Vec<Linear>,
}

/// Why a model cannot be built as asked.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ModelError {
    /// A hidden layer of width zero.
    #[error("--hidden: layer widths must be at least 1, got {0:?}")]
    ZeroWidth(Vec<usize>),
}

impl Mlp {
    /// Builds the network `784 → hidden[0] → … → 10` on `device`, with Glorot-uniform weights
    /// drawn from a generator seeded with `seed` (on the host, so every backend starts from the
    /// same weights) and zero biases.
    pub fn new(hidden: &[usize], seed: u64, device: &Device) -> Result<Self, ModelError> {
        if hidden.contains(&0) {
            return Err(ModelError::ZeroWidth(hidden.to_vec()));
        }
        let mut rng = rng::weights(seed);
        let widths: Vec<usize> = std::iter::once(IMAGE_PIXELS)
            .chain(hidden.iter().copied())
            .chain(std::iter::once(NUM_CLASSES))
            .collect();
        let layers = widths
            .windows(2)
            .map(|w| glorot_linear(w[0], w[1], &mut rng, device))
            .collect();
        Ok(Self { layers })
    }

    /// Maps images `[batch, 784]` (pixels in [0, 1]) to logits `[batch, 10]`.
    pub fn forward(&self, images: Tensor<2>) -> Tensor<2> {
        self.forward_dropped(images, &[])
    }

    /// [`Mlp::forward`] with hidden layer `i`'s activations multiplied by `masks[i]`, if given.
    pub fn forward_dropped(&self, images: Tensor<2>, masks: &[Tensor<2>]) -> Tensor<2> {
        let last = self.layers.len() - 1;
        self.layers
            .iter()
            .enumerate()
            .fold(images, |x, (i, layer)| {
                let y = layer.forward(x);
                if i == last {
                    return y;
                }
                match masks.get(i) {
                    Some(mask) => relu(y) * mask.clone(),
                    None => relu(y),
                }
            })
    }

    /// The layer widths, input first: `[784, 30, 10, 10]` for the article's model.
    pub fn widths(&self) -> Vec<usize> {
        let mut widths = vec![IMAGE_PIXELS];
        widths.extend(self.layers.iter().map(|l| l.weight.dims()[1]));
        widths
    }
}

/// Channels of the CNN's three conv blocks.
const CNN_CHANNELS: [usize; 3] = [16, 32, 64];
/// Width of the CNN's hidden dense layer.
const CNN_DENSE: usize = 128;

/// A small CNN for 28 × 28 digits: three blocks of 3×3 convolution (same padding), ReLU and
/// 2×2 max-pooling (28 → 14 → 7 → 3), then Dense(128, ReLU), optional dropout, and Dense(10).
/// No batch normalisation: it would make a row's result depend on the other rows of its
/// batch, padding rows included.
#[derive(Module, Debug)]
pub struct Cnn {
    convs: Vec<Conv2d>,
    /// burn's 2×2 pooling layer, left in the module as it was (the module's structure is
    /// what model files are read into); the forward pass runs each block (convolution, ReLU,
    /// pooling) as `crate::conv_block::conv_relu_pool`, which gives the same numbers to float
    /// rounding.
    pool: MaxPool2d,
    dense: Linear,
    output: Linear,
}

impl Cnn {
    /// Builds the CNN on `device` with Glorot-uniform weights seeded by `seed`.
    pub fn new(seed: u64, device: &Device) -> Self {
        let mut rng = rng::weights(seed);
        let mut convs = Vec::new();
        let mut channels = 1;
        for out in CNN_CHANNELS {
            convs.push(glorot_conv(channels, out, &mut rng, device));
            channels = out;
        }
        let side = IMAGE_SIDE >> CNN_CHANNELS.len();
        Self {
            convs,
            pool: MaxPool2dConfig::new([2, 2]).with_strides([2, 2]).init(),
            dense: glorot_linear(channels * side * side, CNN_DENSE, &mut rng, device),
            output: glorot_linear(CNN_DENSE, NUM_CLASSES, &mut rng, device),
        }
    }

    /// Maps images `[batch, 784]` (pixels in [0, 1]) to logits `[batch, 10]`.
    pub fn forward(&self, images: Tensor<2>) -> Tensor<2> {
        self.forward_dropped(images, &[])
    }

    /// [`Cnn::forward`] with the Dense(128) activations multiplied by `masks[0]`, if given.
    pub fn forward_dropped(&self, images: Tensor<2>, masks: &[Tensor<2>]) -> Tensor<2> {
        let [batch, _] = images.dims();
        let mut x: Tensor<4> = images.reshape([batch, 1, IMAGE_SIDE, IMAGE_SIDE]);
        for conv in &self.convs {
            x = crate::conv_block::conv_relu_pool(conv, x);
        }
        let [_, c, h, w] = x.dims();
        let mut x = relu(self.dense.forward(x.reshape([batch, c * h * w])));
        if let Some(mask) = masks.first() {
            x = x * mask.clone();
        }
        self.output.forward(x)
    }
}

/// A 3×3 `Conv2d` (same padding) with Glorot-uniform weights (fans counted over the kernel,
/// as Keras does) and zero biases.
fn glorot_conv(inputs: usize, outputs: usize, rng: &mut StdRng, device: &Device) -> Conv2d {
    let k = 3;
    let limit = (6.0 / ((inputs + outputs) * k * k) as f64).sqrt() as f32;
    let weights: Vec<f32> = (0..outputs * inputs * k * k)
        .map(|_| rng.random_range(-limit..limit))
        .collect();
    let mut conv = Conv2dConfig::new([inputs, outputs], [k, k])
        .with_padding(PaddingConfig2d::Same)
        .init(device);
    conv.weight = Param::from_data(TensorData::new(weights, [outputs, inputs, k, k]), device);
    conv.bias = Some(Param::from_data(
        TensorData::new(vec![0f32; outputs], [outputs]),
        device,
    ));
    conv
}

/// A `Linear` layer with Keras' `glorot_uniform` weights (U(±√(6 / (fan_in + fan_out))))
/// and zero biases.
fn glorot_linear(fan_in: usize, fan_out: usize, rng: &mut StdRng, device: &Device) -> Linear {
    let limit = (6.0 / (fan_in + fan_out) as f64).sqrt() as f32;
    let weights: Vec<f32> = (0..fan_in * fan_out)
        .map(|_| rng.random_range(-limit..limit))
        .collect();
    let mut layer = LinearConfig::new(fan_in, fan_out).init(device);
    layer.weight = Param::from_data(TensorData::new(weights, [fan_in, fan_out]), device);
    layer.bias = Some(Param::from_data(
        TensorData::new(vec![0f32; fan_out], [fan_out]),
        device,
    ));
    layer
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn article_model_has_the_article_shapes() {
        let device = Device::flex();
        let model = Mlp::new(&[30, 10], 42, &device).unwrap();
        assert_eq!(model.widths(), vec![784, 30, 10, 10]);
        // 784·30+30 + 30·10+10 + 10·10+10 parameters, as Keras' summary counts them.
        assert_eq!(model.num_params(), 23_550 + 310 + 110);
        assert_eq!(
            Architecture::Mlp.parameter_count(&[30, 10]),
            model.num_params() as u64
        );
        let logits = model.forward(Tensor::zeros([5, 784], &device));
        assert_eq!(logits.dims(), [5, 10]);
    }

    #[test]
    fn masks_reach_the_hidden_layers_only() {
        let device = Device::flex();
        for model in [
            Model::new(Architecture::Mlp, &[30, 10], 1, &device).unwrap(),
            Model::new(Architecture::Cnn, &[], 1, &device).unwrap(),
        ] {
            let images = Tensor::<2>::ones([2, IMAGE_PIXELS], &device);
            let widths = model.dropout_widths();
            let ones: Vec<Tensor<2>> = widths
                .iter()
                .map(|&w| Tensor::ones([2, w], &device))
                .collect();
            let zeros: Vec<Tensor<2>> = widths
                .iter()
                .map(|&w| Tensor::zeros([2, w], &device))
                .collect();
            let v = |t: Tensor<2>| t.into_data().try_to_vec::<f32>().unwrap();
            // All-ones masks change nothing; all-zero masks leave only the output layer's
            // bias (zero at initialisation).
            assert_eq!(
                v(model.forward_dropped(images.clone(), &ones)),
                v(model.forward(images.clone()))
            );
            assert!(
                v(model.forward_dropped(images, &zeros))
                    .iter()
                    .all(|x| *x == 0.0)
            );
        }
    }

    #[test]
    fn weights_are_glorot_uniform_and_seeded() {
        let device = Device::flex();
        let a = Mlp::new(&[30, 10], 7, &device).unwrap();
        let b = Mlp::new(&[30, 10], 7, &device).unwrap();
        let c = Mlp::new(&[30, 10], 8, &device).unwrap();
        let w = |m: &Mlp| {
            m.layers[0]
                .weight
                .val()
                .into_data()
                .try_to_vec::<f32>()
                .unwrap()
        };
        let limit = (6.0f32 / (784.0 + 30.0)).sqrt();
        assert!(w(&a).iter().all(|v| v.abs() <= limit));
        // Spread over the whole interval, not clustered: the extremes come within 1% of it.
        let max = w(&a).iter().fold(0f32, |m, v| m.max(v.abs()));
        assert!(max > 0.99 * limit, "{max} vs {limit}");
        assert_eq!(w(&a), w(&b));
        assert_ne!(w(&a), w(&c));
        let bias = a.layers[0].bias.as_ref().unwrap().val().into_data();
        assert!(bias.try_to_vec::<f32>().unwrap().iter().all(|v| *v == 0.0));
    }

    #[test]
    fn cnn_maps_images_to_logits_and_is_seeded() {
        let device = Device::flex();
        let a = Model::new(Architecture::Cnn, &[], 5, &device).unwrap();
        let b = Model::new(Architecture::Cnn, &[], 5, &device).unwrap();
        assert_eq!(a.forward(Tensor::zeros([3, 784], &device)).dims(), [3, 10]);
        // 3·3 kernels: 1→16, 16→32, 32→64, then 576→128 and 128→10, with biases.
        let convs = (9 * 16 + 16) + (9 * 16 * 32 + 32) + (9 * 32 * 64 + 64);
        assert_eq!(a.num_params(), convs + 576 * 128 + 128 + 128 * 10 + 10);
        assert_eq!(
            Architecture::Cnn.parameter_count(&[]),
            a.num_params() as u64
        );
        let x = Tensor::<2>::ones([2, 784], &device);
        let (ya, yb) = (a.forward(x.clone()), b.forward(x));
        assert_eq!(
            ya.into_data().try_to_vec::<f32>().unwrap(),
            yb.into_data().try_to_vec::<f32>().unwrap()
        );
        assert_eq!(a.architecture(), Architecture::Cnn);
        assert!(a.hidden().is_empty());
    }

    #[test]
    fn widths_are_configurable_and_checked() {
        let device = Device::flex();
        let model = Mlp::new(&[128, 64, 32], 1, &device).unwrap();
        assert_eq!(model.widths(), vec![784, 128, 64, 32, 10]);
        assert_eq!(Mlp::new(&[], 1, &device).unwrap().widths(), vec![784, 10]);
        assert_eq!(
            Mlp::new(&[30, 0], 1, &device).unwrap_err(),
            ModelError::ZeroWidth(vec![30, 0])
        );
    }
}
