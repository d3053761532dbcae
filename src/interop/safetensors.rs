//! A model as safetensors in PyTorch's layout: the state dict of the PyTorch module the README
//! defines for the network (`fc1.weight`, `fc1.bias`, …), float32, with the architecture and
//! the data's identity (input shape, class names) in the file's metadata. Written with Hugging Face's `safetensors` crate, the reference
//! implementation of the format (burn's own store writes burn's parameter paths and layouts,
//! not those of a PyTorch module), and read back, from `trainer` or from PyTorch, as untrusted
//! input: the file is read only up to its size on disk (capped), the header is checked by the
//! crate, every tensor must be float32 and fit the network.

use std::collections::{BTreeMap, HashMap};
use std::io::Read;
use std::path::Path;

use safetensors::tensor::{Dtype, SafeTensors, TensorView};

use super::InteropError;
use super::torch::{TorchLayer, TorchLayoutError, torch_layers, torch_shapes};
use crate::data::{DataInfo, ImageShape, Style};
use crate::files::{corrupt, io_err};
use crate::model::{Architecture, Model};

/// The largest safetensors file read: 8 GiB, as a section of a model file.
const MAX_FILE_BYTES: u64 = 8 << 30;

/// Metadata keys `trainer` writes (and reads when present).
const ARCHITECTURE_KEY: &str = "architecture";
const HIDDEN_KEY: &str = "hidden";
/// `C,H,W` of the input.
const INPUT_KEY: &str = "input_shape";
/// The class names, a JSON array.
const CLASSES_KEY: &str = "classes";
/// How a picture is prepared: `centred` or `plain`.
const STYLE_KEY: &str = "style";

/// What a safetensors file holds: the network it describes and its layers.
#[derive(Debug)]
pub struct TorchFile {
    /// The network, from the metadata or the tensors' shapes.
    pub architecture: Architecture,
    /// The MLP's hidden widths.
    pub hidden: Vec<usize>,
    /// The layers in PyTorch's layout, in the network's order.
    pub layers: Vec<TorchLayer>,
    /// What it was trained on (from the metadata; MNIST's for a file without it).
    pub data: DataInfo,
}

/// The bytes of `model` (trained on `data`) as a safetensors file (`path` is for error
/// messages).
pub fn encode(model: &Model, data: &DataInfo, path: &Path) -> Result<Vec<u8>, InteropError> {
    let layers = torch_layers(model, data)?;
    let le = |v: &[f32]| v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>();
    let mut tensors = Vec::new();
    for layer in &layers {
        tensors.push((
            format!("{}.weight", layer.name),
            layer.weight_shape.clone(),
            le(&layer.weight),
        ));
        tensors.push((
            format!("{}.bias", layer.name),
            vec![layer.bias.len()],
            le(&layer.bias),
        ));
    }
    let views = tensors
        .iter()
        .map(|(name, shape, bytes)| {
            TensorView::new(Dtype::F32, shape.clone(), bytes)
                .map(|view| (name.clone(), view))
                .map_err(|e| corrupt(path, format!("{name}: {e}")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let mut metadata: HashMap<String, String> = described(model, data).into_iter().collect();
    metadata.insert("format".into(), "pt".into());
    metadata.insert(
        "producer".into(),
        format!("trainer {}", env!("CARGO_PKG_VERSION")),
    );
    Ok(safetensors::serialize(views, Some(metadata)).map_err(|e| corrupt(path, e.to_string()))?)
}

/// What both exports' metadata say of the model and its data: the architecture, the hidden
/// widths, the input shape, the class names (JSON), how a picture is prepared.
pub(crate) fn described(model: &Model, data: &DataInfo) -> Vec<(String, String)> {
    let style = match data.style {
        Style::Centred => "centred",
        Style::Plain => "plain",
    };
    [
        (ARCHITECTURE_KEY, model.architecture().to_string()),
        (HIDDEN_KEY, widths(&model.hidden())),
        (INPUT_KEY, input_shape(data.shape)),
        (
            CLASSES_KEY,
            serde_json::to_string(&data.classes).unwrap_or_default(),
        ),
        (STYLE_KEY, style.to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect()
}

/// The input shape as the metadata writes it: `C,H,W`.
pub(crate) fn input_shape(shape: ImageShape) -> String {
    format!("{},{},{}", shape.channels, shape.height, shape.width)
}

/// The data the metadata describes; MNIST's where it says nothing (a file written before, or
/// by PyTorch), with as many classes as the last layer has.
fn data_of(meta: &HashMap<String, String>, classes: usize) -> Result<DataInfo, Decode> {
    let mut data = DataInfo::mnist();
    data.classes = (0..classes).map(|c| c.to_string()).collect();
    if let Some(shape) = meta.get(INPUT_KEY) {
        let dims: Vec<usize> = shape
            .split(',')
            .map(|d| d.trim().parse::<usize>())
            .collect::<Result<_, _>>()
            .map_err(|e| Decode::Corrupt(format!("metadata: input_shape {shape:?}: {e}")))?;
        let [channels, height, width] = dims[..] else {
            return Err(Decode::Corrupt(format!(
                "metadata: input_shape {shape:?}: expected C,H,W"
            )));
        };
        if !matches!(channels, 1 | 3) || height == 0 || width == 0 || height > 4096 || width > 4096
        {
            return Err(Decode::Corrupt(format!("metadata: input_shape {shape:?}")));
        }
        data.shape = ImageShape {
            channels,
            height,
            width,
        };
    }
    if let Some(names) = meta.get(CLASSES_KEY) {
        data.classes = serde_json::from_str(names)
            .map_err(|e| Decode::Corrupt(format!("metadata: classes: {e}")))?;
    }
    if meta.get(STYLE_KEY).is_some_and(|s| s == "plain") {
        data.style = Style::Plain;
    }
    if !(2..=crate::data::MAX_CLASSES).contains(&data.classes.len()) {
        return Err(Decode::Corrupt(format!(
            "metadata: {} classes (2 to {})",
            data.classes.len(),
            crate::data::MAX_CLASSES
        )));
    }
    Ok(data)
}

/// Widths as the metadata writes them: `30,10`.
fn widths(hidden: &[usize]) -> String {
    hidden
        .iter()
        .map(usize::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

/// Reads the safetensors file at `path`: its layers and the network they make (from the
/// metadata `trainer` writes, else from the shapes, as for a file PyTorch saved).
pub fn read(path: &Path) -> Result<TorchFile, InteropError> {
    let file = std::fs::File::open(path).map_err(io_err(path))?;
    let mut bytes = Vec::new();
    file.take(MAX_FILE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(io_err(path))?;
    if bytes.len() as u64 > MAX_FILE_BYTES {
        return Err(corrupt(path, format!("larger than {} GiB", MAX_FILE_BYTES >> 30)).into());
    }
    decode(&bytes).map_err(|e| match e {
        Decode::Corrupt(problem) => corrupt(path, problem).into(),
        Decode::Layout(source) => InteropError::Layout {
            path: path.to_path_buf(),
            source,
        },
    })
}

/// Why bytes do not decode, before a file name is attached.
#[derive(Debug)]
enum Decode {
    Corrupt(String),
    Layout(TorchLayoutError),
}

/// The weight and bias tensors of each layer, by layer name.
type Parts = BTreeMap<String, [Option<(Vec<usize>, Vec<f32>)>; 2]>;

fn decode(bytes: &[u8]) -> Result<TorchFile, Decode> {
    let tensors = SafeTensors::deserialize(bytes)
        .map_err(|e| Decode::Corrupt(format!("not a safetensors file: {e}")))?;
    let (_, metadata) = SafeTensors::read_metadata(bytes)
        .map_err(|e| Decode::Corrupt(format!("not a safetensors file: {e}")))?;
    let mut parts = Parts::new();
    for (name, view) in tensors.tensors() {
        if view.dtype() != Dtype::F32 {
            return Err(Decode::Corrupt(format!(
                "{name}: {:?} tensor, expected F32 (save the state dict as float32)",
                view.dtype()
            )));
        }
        let (layer, slot) = match name.rsplit_once('.') {
            Some((layer, "weight")) => (layer, 0),
            Some((layer, "bias")) => (layer, 1),
            _ => {
                return Err(Decode::Corrupt(format!(
                    "{name}: not a layer's weight or bias"
                )));
            }
        };
        let values = view
            .data()
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        parts.entry(layer.to_string()).or_default()[slot] = Some((view.shape().to_vec(), values));
    }
    let meta = metadata.metadata().clone().unwrap_or_default();
    let (architecture, hidden) = match meta.get(ARCHITECTURE_KEY) {
        Some(name) => from_metadata(name, meta.get(HIDDEN_KEY))?,
        None => from_shapes(&parts),
    };
    // The classes: the last dense layer's outputs, where the metadata does not name them.
    let last = parts
        .iter()
        .filter(|(name, _)| name.starts_with("fc"))
        .max_by_key(|(name, _)| name[2..].parse::<usize>().unwrap_or(0))
        .and_then(|(_, [weight, _])| weight.as_ref())
        .and_then(|(shape, _)| shape.first().copied())
        .unwrap_or(10);
    let data = data_of(&meta, last)?;
    let layers = in_order(architecture, &hidden, &data, parts)?;
    Ok(TorchFile {
        architecture,
        hidden,
        layers,
        data,
    })
}

/// The network the metadata names.
fn from_metadata(
    name: &str,
    hidden: Option<&String>,
) -> Result<(Architecture, Vec<usize>), Decode> {
    let architecture = match name {
        "mlp" => Architecture::Mlp,
        "cnn" => Architecture::Cnn,
        other => {
            return Err(Decode::Corrupt(format!(
                "metadata: unknown architecture {other:?} (mlp or cnn)"
            )));
        }
    };
    let hidden = match hidden.map(String::as_str) {
        None | Some("") => Vec::new(),
        Some(list) => list
            .split(',')
            .map(|w| w.trim().parse::<usize>())
            .collect::<Result<_, _>>()
            .map_err(|e| Decode::Corrupt(format!("metadata: hidden {list:?}: {e}")))?,
    };
    Ok((architecture, hidden))
}

/// The network the tensors' names and shapes describe: the CNN if there are convolutions,
/// else an MLP whose hidden widths are the outputs of `fc1` … `fc(n-1)`. Whether the shapes
/// really fit is checked after, layer by layer.
fn from_shapes(parts: &Parts) -> (Architecture, Vec<usize>) {
    if parts.keys().any(|name| name.starts_with("conv")) {
        return (Architecture::Cnn, Vec::new());
    }
    let hidden = (1..parts.len())
        .map(|i| {
            parts
                .get(&format!("fc{i}"))
                .and_then(|[weight, _]| weight.as_ref())
                .and_then(|(shape, _)| shape.first().copied())
                .unwrap_or(0)
        })
        .collect();
    (Architecture::Mlp, hidden)
}

/// The layers of the network in its order, each checked to be there with a weight and a bias;
/// a tensor the network has no place for is an error.
fn in_order(
    architecture: Architecture,
    hidden: &[usize],
    data: &DataInfo,
    mut parts: Parts,
) -> Result<Vec<TorchLayer>, Decode> {
    let expected = torch_shapes(architecture, hidden, data);
    let names: Vec<String> = expected.iter().map(|(n, _)| n.clone()).collect();
    let mismatch = |parts: &Parts| {
        Decode::Layout(TorchLayoutError::Layers {
            expected: names.clone(),
            got: parts.keys().cloned().collect(),
        })
    };
    if hidden.contains(&0) || parts.len() != expected.len() {
        return Err(mismatch(&parts));
    }
    let mut layers = Vec::new();
    for (name, shape) in expected {
        let Some([Some((weight_shape, weight)), Some((bias_shape, bias))]) = parts.remove(&name)
        else {
            return Err(mismatch(&parts));
        };
        if bias_shape.len() != 1 {
            return Err(Decode::Layout(TorchLayoutError::Shape {
                layer: name,
                expected: shape.clone(),
                got: weight_shape,
                outputs: shape[0],
                biases: bias.len(),
            }));
        }
        layers.push(TorchLayer {
            name,
            weight_shape,
            weight,
            bias,
        });
    }
    Ok(layers)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::interop::torch::from_torch_layers;
    use burn::tensor::Device;

    fn model(architecture: Architecture, hidden: &[usize]) -> Model {
        Model::new(
            architecture,
            hidden,
            &crate::data::DataInfo::mnist(),
            3,
            &Device::flex(),
        )
        .unwrap()
    }

    /// Layers as `decode` collects them from a file: weight and bias by layer name.
    fn parts_of(layers: Vec<TorchLayer>) -> Parts {
        layers
            .into_iter()
            .map(|l| {
                let n = l.bias.len();
                (
                    l.name,
                    [Some((l.weight_shape, l.weight)), Some((vec![n], l.bias))],
                )
            })
            .collect()
    }

    /// Written and read back, a model has the same parameters, to the bit, and the same
    /// architecture, for the MLP of any widths and for the CNN.
    #[test]
    fn a_model_round_trips_bit_for_bit() {
        for (architecture, hidden) in [
            (Architecture::Mlp, vec![30, 10]),
            (Architecture::Mlp, vec![]),
            (Architecture::Mlp, vec![64, 32, 16]),
            (Architecture::Cnn, vec![]),
        ] {
            let before = model(architecture, &hidden);
            let bytes = encode(
                &before,
                &crate::data::DataInfo::mnist(),
                Path::new("m.safetensors"),
            )
            .unwrap();
            let file = decode(&bytes).unwrap();
            assert_eq!((file.architecture, &file.hidden), (architecture, &hidden));
            let after = from_torch_layers(
                file.architecture,
                &file.hidden,
                &crate::data::DataInfo::mnist(),
                file.layers,
                &Device::flex(),
            )
            .unwrap();
            assert_eq!(after.parameters().unwrap(), before.parameters().unwrap());
        }
    }

    /// Without metadata (as PyTorch's `save_file` writes it) the shapes tell the network.
    #[test]
    fn the_shapes_tell_the_network_without_metadata() {
        for (architecture, hidden) in [
            (Architecture::Mlp, vec![30, 10]),
            (Architecture::Mlp, vec![7]),
            (Architecture::Cnn, vec![]),
        ] {
            let layers = torch_layers(
                &model(architecture, &hidden),
                &crate::data::DataInfo::mnist(),
            )
            .unwrap();
            let parts = parts_of(layers);
            assert_eq!(from_shapes(&parts), (architecture, hidden.clone()));
            assert!(
                in_order(
                    architecture,
                    &hidden,
                    &crate::data::DataInfo::mnist(),
                    parts
                )
                .is_ok()
            );
        }
    }

    proptest::proptest! {
        /// Random bytes, and random damage to a real file, give an error or a model, never a
        /// panic, and never a network larger than the file.
        #[test]
        fn safetensors_files_never_panic(
            noise in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..200),
            at in 0usize..1_000_000,
            byte in proptest::prelude::any::<u8>(),
        ) {
            proptest::prop_assert!(decode(&noise).is_err());
            let mut bytes = encode(&model(Architecture::Mlp, &[3]), &crate::data::DataInfo::mnist(), Path::new("m")).unwrap();
            let at = at % bytes.len();
            bytes[at] = byte;
            if let Ok(file) = decode(&bytes) {
                let _ = from_torch_layers(
                    file.architecture,
                    &file.hidden,
                    &crate::data::DataInfo::mnist(),
                    file.layers,
                    &Device::flex(),
                );
            }
        }
    }

    /// Metadata that describes another network than the tensors (an enormous one included)
    /// is refused before any network is built.
    #[test]
    fn metadata_that_does_not_fit_the_tensors_is_refused() {
        let good = encode(
            &model(Architecture::Mlp, &[3]),
            &crate::data::DataInfo::mnist(),
            Path::new("m"),
        )
        .unwrap();
        let with_hidden = |hidden: &str| {
            let tensors = SafeTensors::deserialize(&good).unwrap().tensors();
            let meta = HashMap::from([
                (ARCHITECTURE_KEY.to_string(), "mlp".to_string()),
                (HIDDEN_KEY.to_string(), hidden.to_string()),
            ]);
            safetensors::serialize(tensors, Some(meta)).unwrap()
        };
        let file = decode(&with_hidden("9999999999999999999")).unwrap();
        let err = from_torch_layers(
            file.architecture,
            &file.hidden,
            &crate::data::DataInfo::mnist(),
            file.layers,
            &Device::flex(),
        )
        .unwrap_err();
        assert!(matches!(err, TorchLayoutError::Shape { .. }), "{err}");
        assert!(matches!(
            decode(&with_hidden("3,3")),
            Err(Decode::Layout(TorchLayoutError::Layers { .. }))
        ));
        assert!(matches!(decode(&with_hidden("x")), Err(Decode::Corrupt(_))));
        assert_eq!(decode(&with_hidden("3")).unwrap().hidden, [3]);
    }

    /// Files that fit no network, or are not safetensors at all, are refused with a reason.
    #[test]
    fn what_fits_no_network_is_refused() {
        let good = encode(
            &model(Architecture::Mlp, &[30, 10]),
            &crate::data::DataInfo::mnist(),
            Path::new("m"),
        )
        .unwrap();
        assert!(matches!(
            decode(&good[..good.len() - 1]),
            Err(Decode::Corrupt(_))
        ));
        assert!(matches!(decode(b"not a file"), Err(Decode::Corrupt(_))));
        // A layer of the wrong width.
        let mut m = torch_layers(
            &model(Architecture::Mlp, &[30, 10]),
            &crate::data::DataInfo::mnist(),
        )
        .unwrap();
        m[1].weight_shape = vec![10, 29];
        let parts = parts_of(m);
        let (architecture, hidden) = from_shapes(&parts);
        let layers = in_order(
            architecture,
            &hidden,
            &crate::data::DataInfo::mnist(),
            parts,
        )
        .unwrap();
        let err = from_torch_layers(
            architecture,
            &hidden,
            &crate::data::DataInfo::mnist(),
            layers,
            &Device::flex(),
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.starts_with("fc2: expected a weight of shape [10, 30]"),
            "{err}"
        );
        // A tensor with no place in the network.
        let mut parts = Parts::new();
        parts.insert("head".into(), [None, None]);
        assert!(matches!(
            in_order(
                Architecture::Mlp,
                &[],
                &crate::data::DataInfo::mnist(),
                parts
            ),
            Err(Decode::Layout(TorchLayoutError::Layers { .. }))
        ));
    }
}
