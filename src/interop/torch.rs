//! PyTorch's layout of `trainer`'s networks: the module names the README's PyTorch classes use
//! (`fc1`, `fc2`, … for the MLP; `conv1`–`conv3`, `fc1`, `fc2` for the CNN) and their weights'
//! shapes (a dense weight `[out, in]` where burn keeps `[in, out]`; a convolution weight
//! `[out, in, 3, 3]`; the CNN's flatten before `fc1` is NCHW's, as PyTorch's `flatten(1)`).
//! The safetensors and ONNX files are written in it, and safetensors files read from it.

use burn::module::Param;
use burn::nn::Linear;
use burn::tensor::{Device, TensorData};

use crate::backend::read::{ReadError, read_floats};
use crate::data::DataInfo;
use crate::model::{Architecture, Layer, LayerMut, Model, ModelError};

/// One layer's parameters in PyTorch's layout and under its PyTorch module name.
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

/// The layers of `architecture` on `data` as PyTorch names them, with their weight shapes in
/// PyTorch's layout: what a file in that layout must hold.
pub fn torch_shapes(
    architecture: Architecture,
    hidden: &[usize],
    data: &DataInfo,
) -> Vec<(String, Vec<usize>)> {
    let (mut convs, mut dense) = (0, 0);
    architecture
        .layer_shapes(hidden, data)
        .into_iter()
        .map(|l| {
            if l.conv {
                convs += 1;
                (format!("conv{convs}"), vec![l.outputs, l.inputs, 3, 3])
            } else {
                dense += 1;
                (format!("fc{dense}"), vec![l.outputs, l.inputs])
            }
        })
        .collect()
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

/// `model`'s parameters (trained on `data`) in PyTorch's layout, layer by layer (see
/// [`TorchLayer`]).
pub fn torch_layers(model: &Model, data: &DataInfo) -> Result<Vec<TorchLayer>, ReadError> {
    let values = model
        .layers()
        .into_iter()
        .map(|layer| -> Result<(Vec<f32>, Vec<f32>), ReadError> {
            let (weight, bias, outputs) = match layer {
                Layer::Dense(l) => (
                    read_floats(l.weight.val().transpose())?,
                    &l.bias,
                    l.weight.dims()[1],
                ),
                Layer::Conv(c) => (read_floats(c.weight.val())?, &c.bias, c.weight.dims()[0]),
            };
            let bias = match bias {
                Some(b) => read_floats(b.val())?,
                None => vec![0.0; outputs],
            };
            Ok((weight, bias))
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(torch_shapes(model.architecture(), &model.hidden(), data)
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

/// Builds `architecture` for `data` on `device` with the weights `layers` give in PyTorch's
/// layout; the layers must be exactly those of [`torch_shapes`], in that order.
pub fn from_torch_layers(
    architecture: Architecture,
    hidden: &[usize],
    data: &DataInfo,
    layers: Vec<TorchLayer>,
    device: &Device,
) -> Result<Model, TorchLayoutError> {
    let expected = torch_shapes(architecture, hidden, data);
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
    let mut model = Model::new(architecture, hidden, data, 0, device)?;
    for (target, layer) in model.layers_mut().into_iter().zip(layers) {
        match target {
            LayerMut::Dense(linear) => set_dense(linear, layer, device),
            LayerMut::Conv(conv) => {
                let shape: [usize; 4] = [0, 1, 2, 3].map(|i| layer.weight_shape[i]);
                conv.weight = Param::from_data(TensorData::new(layer.weight, shape), device);
                conv.bias = Some(Param::from_data(
                    TensorData::new(layer.bias, [shape[0]]),
                    device,
                ));
            }
        }
    }
    Ok(model)
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
