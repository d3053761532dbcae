//! The article's network: Flatten → Dense(30, ReLU) → Dense(10, ReLU) → Dense(10) → softmax,
//! with the hidden widths configurable. Initialised as Keras does it: Glorot-uniform weights,
//! zero biases.

use burn::module::{Module, Param};
use burn::nn::{Linear, LinearConfig};
use burn::tensor::activation::relu;
use burn::tensor::{Device, Tensor, TensorData};
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};

use crate::data::{IMAGE_PIXELS, NUM_CLASSES};

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
        let mut rng = StdRng::seed_from_u64(seed);
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
        let last = self.layers.len() - 1;
        self.layers
            .iter()
            .enumerate()
            .fold(images, |x, (i, layer)| {
                let y = layer.forward(x);
                if i < last { relu(y) } else { y }
            })
    }

    /// Every weight and bias as plain numbers, layer by layer (weights then bias): for
    /// comparing models exactly, whatever backend they live on.
    pub fn parameters(&self) -> Vec<Vec<f32>> {
        let read = |data: burn::tensor::TensorData| {
            data.convert::<f32>()
                .try_to_vec::<f32>()
                .unwrap_or_default()
        };
        self.layers
            .iter()
            .flat_map(|l| {
                let bias = l.bias.as_ref().map(|b| read(b.val().into_data()));
                [Some(read(l.weight.val().into_data())), bias]
            })
            .flatten()
            .collect()
    }

    /// The layer widths, input first: `[784, 30, 10, 10]` for the article's model.
    pub fn widths(&self) -> Vec<usize> {
        let mut widths = vec![IMAGE_PIXELS];
        widths.extend(self.layers.iter().map(|l| l.weight.dims()[1]));
        widths
    }
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
        let logits = model.forward(Tensor::zeros([5, 784], &device));
        assert_eq!(logits.dims(), [5, 10]);
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
