//! The networks: the article's MLP (Flatten → Dense(30, ReLU) → Dense(10, ReLU) → Dense(10) →
//! softmax, hidden widths configurable) and a small CNN past it, each shaped by its data: the
//! input is the data's images (channels × rows × columns), the output one logit per class.
//! Initialised as Keras does it: Glorot-uniform weights, zero biases, drawn on the host from
//! the seed so that every backend starts from the same weights.

use burn::module::{Module, ModuleVisitor, Param};
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::pool::{MaxPool2d, MaxPool2dConfig};
use burn::nn::{Linear, LinearConfig, PaddingConfig2d};
use burn::tensor::activation::relu;
use burn::tensor::{Device, Tensor, TensorData};
use rand::RngExt;
use rand::rngs::StdRng;
use serde::{Deserialize, Serialize};

use crate::data::{DataInfo, ImageShape};
use crate::rng;

/// The smallest side the CNN takes: three 2×2 poolings leave one pixel of eight.
pub const CNN_MIN_SIDE: usize = 8;

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
    /// channels), then Dense(128, ReLU) and a dense layer to the classes
    Cnn,
}

impl Architecture {
    /// The layers with weights of the network with these hidden widths (the MLP's; the CNN
    /// has none to choose) for `data`'s images and classes, in forward order: plain numbers,
    /// whatever the widths.
    pub fn layer_shapes(self, hidden: &[usize], data: &DataInfo) -> Vec<LayerShape> {
        let dense = |widths: &[usize]| {
            widths
                .windows(2)
                .map(|w| LayerShape {
                    conv: false,
                    inputs: w[0],
                    outputs: w[1],
                })
                .collect::<Vec<_>>()
        };
        let classes = data.class_count();
        match self {
            Self::Mlp => {
                let widths: Vec<usize> = std::iter::once(data.shape.pixels())
                    .chain(hidden.iter().copied())
                    .chain(std::iter::once(classes))
                    .collect();
                dense(&widths)
            }
            Self::Cnn => {
                let mut layers = Vec::new();
                let mut channels = data.shape.channels;
                for outputs in CNN_CHANNELS {
                    layers.push(LayerShape {
                        conv: true,
                        inputs: channels,
                        outputs,
                    });
                    channels = outputs;
                }
                let (h, w) = cnn_pooled(data.shape);
                layers.extend(dense(&[channels * h * w, CNN_DENSE, classes]));
                layers
            }
        }
    }

    /// How many parameters the network has with these hidden widths on `data`, saturating
    /// rather than overflowing on absurd widths: a model file's header is checked against its
    /// weights with it before anything is built.
    pub fn parameter_count(self, hidden: &[usize], data: &DataInfo) -> u64 {
        self.layer_shapes(hidden, data)
            .iter()
            .fold(0u64, |acc, l| acc.saturating_add(l.parameters()))
    }
}

/// A layer with weights: a dense layer from `inputs` to `outputs` units, or a 3×3
/// convolution from `inputs` to `outputs` channels; each output has a bias.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LayerShape {
    /// A 3×3 convolution (else a dense layer).
    pub conv: bool,
    /// Input units or channels.
    pub inputs: usize,
    /// Output units or channels.
    pub outputs: usize,
}

impl LayerShape {
    /// Weights and biases, saturating.
    pub fn parameters(&self) -> u64 {
        let kernel = if self.conv { 9 } else { 1 };
        (self.inputs as u64)
            .saturating_mul(kernel)
            .saturating_add(1)
            .saturating_mul(self.outputs as u64)
    }
}

/// A layer of a built network, in forward order: what other tools' layouts are made from.
pub enum Layer<'a> {
    /// A dense layer (burn's weight is `[inputs, outputs]`).
    Dense(&'a Linear),
    /// A 3×3 convolution (weight `[outputs, inputs, 3, 3]`).
    Conv(&'a Conv2d),
}

/// A layer of a built network, to set its weights.
pub enum LayerMut<'a> {
    /// A dense layer.
    Dense(&'a mut Linear),
    /// A 3×3 convolution.
    Conv(&'a mut Conv2d),
}

impl std::fmt::Display for Architecture {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Mlp => "mlp",
            Self::Cnn => "cnn",
        })
    }
}

/// A network `trainer` trains: images `[batch, pixels]` in (channels × rows × columns,
/// flattened), logits `[batch, classes]` out.
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
    /// Builds `architecture` for `data`'s images and classes on `device` with weights seeded
    /// by `seed`; `hidden` are the MLP's hidden widths (the CNN has none).
    pub fn new(
        architecture: Architecture,
        hidden: &[usize],
        data: &DataInfo,
        seed: u64,
        device: &Device,
    ) -> Result<Self, ModelError> {
        let classes = data.class_count();
        if classes < 2 {
            return Err(ModelError::Classes(classes));
        }
        Ok(match architecture {
            Architecture::Mlp => Self::Mlp(Mlp::new(
                hidden,
                data.shape.pixels(),
                classes,
                seed,
                device,
            )?),
            Architecture::Cnn => Self::Cnn(Cnn::new(data.shape, classes, seed, device)?),
        })
    }

    /// Maps images `[batch, pixels]` (in [0, 1]) to logits `[batch, classes]`.
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
    pub fn parameters(&self) -> Result<Vec<Vec<f32>>, crate::backend::read::ReadError> {
        struct Collect(Vec<Result<Vec<f32>, crate::backend::read::ReadError>>);
        impl ModuleVisitor for Collect {
            fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
                self.0.push(crate::backend::read::read_floats(param.val()));
            }
        }
        let mut collect = Collect(Vec::new());
        self.visit(&mut collect);
        collect.0.into_iter().collect()
    }

    /// The layers with weights, in forward order.
    pub fn layers(&self) -> Vec<Layer<'_>> {
        match self {
            Self::Mlp(m) => m.layers.iter().map(Layer::Dense).collect(),
            Self::Cnn(c) => c
                .convs
                .iter()
                .map(Layer::Conv)
                .chain([Layer::Dense(&c.dense), Layer::Dense(&c.output)])
                .collect(),
        }
    }

    /// The layers with weights, in forward order, to set them.
    pub fn layers_mut(&mut self) -> Vec<LayerMut<'_>> {
        match self {
            Self::Mlp(m) => m.layers.iter_mut().map(LayerMut::Dense).collect(),
            Self::Cnn(c) => {
                let mut layers: Vec<LayerMut<'_>> =
                    c.convs.iter_mut().map(LayerMut::Conv).collect();
                layers.push(LayerMut::Dense(&mut c.dense));
                layers.push(LayerMut::Dense(&mut c.output));
                layers
            }
        }
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

/// A multi-layer perceptron over flattened images: ReLU hidden layers, then a linear layer to
/// one logit per class (softmax is folded into the loss).
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
    /// Images too small for the CNN's three poolings.
    #[error("--model cnn takes images of at least {CNN_MIN_SIDE}x{CNN_MIN_SIDE}, not {0}")]
    TooSmall(ImageShape),
    /// Fewer than two classes.
    #[error("a classifier needs two classes at least, the data has {0}")]
    Classes(usize),
}

impl Mlp {
    /// Builds the network `inputs → hidden[0] → … → classes` on `device`, with Glorot-uniform
    /// weights drawn from a generator seeded with `seed` (on the host, so every backend starts
    /// from the same weights) and zero biases.
    pub fn new(
        hidden: &[usize],
        inputs: usize,
        classes: usize,
        seed: u64,
        device: &Device,
    ) -> Result<Self, ModelError> {
        if hidden.contains(&0) {
            return Err(ModelError::ZeroWidth(hidden.to_vec()));
        }
        let mut rng = rng::weights(seed);
        let widths: Vec<usize> = std::iter::once(inputs)
            .chain(hidden.iter().copied())
            .chain(std::iter::once(classes))
            .collect();
        let layers = widths
            .windows(2)
            .map(|w| glorot_linear(w[0], w[1], &mut rng, device))
            .collect();
        Ok(Self { layers })
    }

    /// Maps images `[batch, pixels]` (in [0, 1]) to logits `[batch, classes]`.
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
        let mut widths: Vec<usize> = self
            .layers
            .first()
            .map(|l| l.weight.dims()[0])
            .into_iter()
            .collect();
        widths.extend(self.layers.iter().map(|l| l.weight.dims()[1]));
        widths
    }
}

/// Channels of the CNN's three conv blocks.
const CNN_CHANNELS: [usize; 3] = [16, 32, 64];
/// Width of the CNN's hidden dense layer.
const CNN_DENSE: usize = 128;

/// The rows and columns left of `shape` after the CNN's three 2×2 poolings (each rounding
/// down: 28 → 14 → 7 → 3).
fn cnn_pooled(shape: ImageShape) -> (usize, usize) {
    let pool = |side: usize| side >> CNN_CHANNELS.len();
    (pool(shape.height), pool(shape.width))
}

/// A small CNN: three blocks of 3×3 convolution (same padding), ReLU and 2×2 max-pooling
/// (28 → 14 → 7 → 3 for MNIST), then Dense(128, ReLU), optional dropout, and a dense layer to
/// the classes. No batch normalisation: it would make a row's result depend on the other rows
/// of its batch, padding rows included.
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
    /// The input's shape (not saved: the data's identity carries it).
    #[module(skip)]
    input: ImageShape,
}

impl Cnn {
    /// Builds the CNN for images of `shape` and `classes` classes on `device`, with
    /// Glorot-uniform weights seeded by `seed`.
    pub fn new(
        shape: ImageShape,
        classes: usize,
        seed: u64,
        device: &Device,
    ) -> Result<Self, ModelError> {
        if shape.height < CNN_MIN_SIDE || shape.width < CNN_MIN_SIDE {
            return Err(ModelError::TooSmall(shape));
        }
        let mut rng = rng::weights(seed);
        let mut convs = Vec::new();
        let mut channels = shape.channels;
        for out in CNN_CHANNELS {
            convs.push(glorot_conv(channels, out, &mut rng, device));
            channels = out;
        }
        let (h, w) = cnn_pooled(shape);
        Ok(Self {
            convs,
            pool: MaxPool2dConfig::new([2, 2]).with_strides([2, 2]).init(),
            dense: glorot_linear(channels * h * w, CNN_DENSE, &mut rng, device),
            output: glorot_linear(CNN_DENSE, classes, &mut rng, device),
            input: shape,
        })
    }

    /// Maps images `[batch, pixels]` (in [0, 1]) to logits `[batch, classes]`.
    pub fn forward(&self, images: Tensor<2>) -> Tensor<2> {
        self.forward_dropped(images, &[])
    }

    /// [`Cnn::forward`] with the Dense(128) activations multiplied by `masks[0]`, if given.
    pub fn forward_dropped(&self, images: Tensor<2>, masks: &[Tensor<2>]) -> Tensor<2> {
        let [batch, _] = images.dims();
        let s = self.input;
        let mut x: Tensor<4> = images.reshape([batch, s.channels, s.height, s.width]);
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

    fn mnist() -> DataInfo {
        DataInfo::mnist()
    }

    #[test]
    fn article_model_has_the_article_shapes() {
        let device = Device::flex();
        let model = Mlp::new(&[30, 10], 784, 10, 42, &device).unwrap();
        assert_eq!(model.widths(), vec![784, 30, 10, 10]);
        // 784·30+30 + 30·10+10 + 10·10+10 parameters, as Keras' summary counts them.
        assert_eq!(model.num_params(), 23_550 + 310 + 110);
        assert_eq!(
            Architecture::Mlp.parameter_count(&[30, 10], &mnist()),
            model.num_params() as u64
        );
        let logits = model.forward(Tensor::zeros([5, 784], &device));
        assert_eq!(logits.dims(), [5, 10]);
    }

    #[test]
    fn masks_reach_the_hidden_layers_only() {
        let device = Device::flex();
        for model in [
            Model::new(Architecture::Mlp, &[30, 10], &mnist(), 1, &device).unwrap(),
            Model::new(Architecture::Cnn, &[], &mnist(), 1, &device).unwrap(),
        ] {
            let images = Tensor::<2>::ones([2, 784], &device);
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
        let a = Mlp::new(&[30, 10], 784, 10, 7, &device).unwrap();
        let b = Mlp::new(&[30, 10], 784, 10, 7, &device).unwrap();
        let c = Mlp::new(&[30, 10], 784, 10, 8, &device).unwrap();
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
        let a = Model::new(Architecture::Cnn, &[], &mnist(), 5, &device).unwrap();
        let b = Model::new(Architecture::Cnn, &[], &mnist(), 5, &device).unwrap();
        assert_eq!(a.forward(Tensor::zeros([3, 784], &device)).dims(), [3, 10]);
        // 3·3 kernels: 1→16, 16→32, 32→64, then 576→128 and 128→10, with biases.
        let convs = (9 * 16 + 16) + (9 * 16 * 32 + 32) + (9 * 32 * 64 + 64);
        assert_eq!(a.num_params(), convs + 576 * 128 + 128 + 128 * 10 + 10);
        assert_eq!(
            Architecture::Cnn.parameter_count(&[], &mnist()),
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
        let model = Mlp::new(&[128, 64, 32], 784, 10, 1, &device).unwrap();
        assert_eq!(model.widths(), vec![784, 128, 64, 32, 10]);
        assert_eq!(
            Mlp::new(&[], 784, 10, 1, &device).unwrap().widths(),
            vec![784, 10]
        );
        assert_eq!(
            Mlp::new(&[30, 0], 784, 10, 1, &device).unwrap_err(),
            ModelError::ZeroWidth(vec![30, 0])
        );
    }

    /// The networks follow the data: a colour 32 × 32 CNN of 26 classes, an MLP over
    /// 3 × 32 × 32 inputs; images smaller than 8 × 8 are refused for the CNN.
    #[test]
    fn the_networks_follow_the_data() {
        let device = Device::flex();
        let data = DataInfo {
            shape: ImageShape {
                channels: 3,
                height: 32,
                width: 24,
            },
            classes: (0..26).map(|c| c.to_string()).collect(),
            style: crate::data::Style::Plain,
        };
        let cnn = Model::new(Architecture::Cnn, &[], &data, 1, &device).unwrap();
        let x = Tensor::<2>::ones([2, 3 * 32 * 24], &device);
        assert_eq!(cnn.forward(x.clone()).dims(), [2, 26]);
        assert_eq!(
            Architecture::Cnn.parameter_count(&[], &data),
            cnn.num_params() as u64
        );
        let mlp = Model::new(Architecture::Mlp, &[30], &data, 1, &device).unwrap();
        assert_eq!(mlp.forward(x).dims(), [2, 26]);
        let tiny = DataInfo {
            shape: ImageShape {
                channels: 1,
                height: 7,
                width: 28,
            },
            ..data
        };
        assert!(matches!(
            Model::new(Architecture::Cnn, &[], &tiny, 1, &device),
            Err(ModelError::TooSmall(_))
        ));
    }
}
