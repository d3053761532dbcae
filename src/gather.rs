//! A split kept on the GPU: its pixels are uploaded once, as u8, and every batch is gathered
//! and normalised on the device, so a training step sends only the batch's image numbers.
//!
//! Two ways to gather, chosen with `--gather`: the hand-written WGSL kernel in
//! `shaders/gather.wgsl` (u8 pixels, 47 MB for the training set, gathered and scaled by one
//! dispatch straight into the tensor the model reads), or burn's own `select` on a resident
//! f32 copy (four times the memory, no custom code). Both give the same bits as the host path.

use burn::backend::Wgpu;
use burn::backend::wgpu::{CubeTensor, KernelSource, SourceKernel, SourceTemplate};
use burn::cubecl::prelude::{CubeCount, CubeDim, KernelId};
use burn::cubecl::server::{Handle, KernelArguments};
use burn::tensor::{DType, Device, Int, Shape, Tensor, TensorData};

use crate::data::{IMAGE_PIXELS, Split};
use crate::loader::Batch;

/// How a batch gets onto the device when the data is resident there.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum GatherMethod {
    /// The WGSL kernel in shaders/gather.wgsl over u8 pixels (the default on wgpu)
    Kernel,
    /// burn's tensor ops (select) over a resident f32 copy
    Ops,
    /// No resident data: gather and scale on the host, upload every batch
    Host,
}

/// u32 words per image: four u8 pixels to a word.
const WORDS: usize = IMAGE_PIXELS / 4;

/// Invocations per workgroup of the gather kernel.
const WORKGROUP: u32 = 64;

/// Why a split could not be kept on the device.
#[derive(Debug, thiserror::Error)]
pub enum GatherError {
    /// The device is not a wgpu one.
    #[error("--gather kernel|ops keeps the data on a wgpu device; this device is not one")]
    NotWgpu,
}

/// A split resident on a wgpu device.
pub struct Resident {
    store: Store,
    count: usize,
    /// A tensor on the device: its compute client and device, for new tensors.
    anchor: CubeTensor,
}

/// The resident data, as each gather method wants it.
enum Store {
    /// u8 pixels packed four to a u32, and one u32 per label, for the WGSL kernel.
    Kernel { images: Handle, labels: Handle },
    /// Pixels as f32 / 255 and labels, each with one zero row after them for padding.
    /// (Boxed: a tensor handle is large beside a buffer handle.)
    Ops {
        images: Box<Tensor<2>>,
        labels: Box<Tensor<1, Int>>,
    },
}

impl std::fmt::Debug for Resident {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let method = match self.store {
            Store::Kernel { .. } => GatherMethod::Kernel,
            Store::Ops { .. } => GatherMethod::Ops,
        };
        f.debug_struct("Resident")
            .field("method", &method)
            .field("count", &self.count)
            .finish()
    }
}

impl Resident {
    /// Uploads `split` to `device` for gathering with `method` (`Kernel`, or `Ops` for
    /// anything else).
    pub fn upload(
        split: &Split,
        device: &Device,
        method: GatherMethod,
    ) -> Result<Self, GatherError> {
        let count = split.len();
        let anchor = Tensor::<1, Int>::zeros([1], device)
            .try_into_primitive::<Wgpu>()
            .map_err(|_| GatherError::NotWgpu)?;
        let store = if method == GatherMethod::Kernel {
            let client = &anchor.client;
            let labels: Vec<u32> = split.labels.iter().map(|&l| u32::from(l)).collect();
            Store::Kernel {
                images: client.create_from_slice(&split.images),
                labels: client.create_from_slice(bytemuck::cast_slice(&labels)),
            }
        } else {
            let mut pixels: Vec<f32> = split.images.iter().map(|&p| f32::from(p) / 255.0).collect();
            pixels.extend([0.0; IMAGE_PIXELS]);
            let mut labels: Vec<i32> = split.labels.iter().map(|&l| i32::from(l)).collect();
            labels.push(0);
            Store::Ops {
                images: Box::new(Tensor::from_data(
                    TensorData::new(pixels, [count + 1, IMAGE_PIXELS]),
                    device,
                )),
                labels: Box::new(Tensor::from_data(
                    TensorData::new(labels, [count + 1]),
                    device,
                )),
            }
        };
        Ok(Self {
            store,
            count,
            anchor,
        })
    }

    /// Number of images.
    pub fn len(&self) -> usize {
        self.count
    }

    /// Whether there are no images.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The batch of images `indices` (at most `batch_size`), padded to `batch_size` rows with
    /// zero images of weight 0. Sends `4 × batch_size` bytes to the device.
    pub fn batch(&self, indices: &[u32], batch_size: usize) -> Batch {
        let pad = self.count as u32;
        let mut rows: Vec<u32> = indices.to_vec();
        rows.resize(batch_size, pad);
        let client = &self.anchor.client;
        let index_handle = client.create_from_slice(bytemuck::cast_slice(&rows));
        let real = indices.len();
        match &self.store {
            Store::Kernel { images, labels } => {
                let pixels = client.empty(batch_size * IMAGE_PIXELS * size_of::<f32>());
                let targets = client.empty(batch_size * size_of::<i32>());
                let weights = client.empty(batch_size * size_of::<f32>());
                let kernel = GatherKernel {
                    rows: batch_size,
                    count: self.count,
                };
                let words = (batch_size * WORDS) as u32;
                client.launch(
                    Box::new(SourceKernel::new(kernel, CubeDim::new_1d(WORKGROUP))),
                    CubeCount::Static(words.div_ceil(WORKGROUP), 1, 1),
                    KernelArguments::new()
                        .with_buffer(images.clone().binding())
                        .with_buffer(labels.clone().binding())
                        .with_buffer(index_handle.binding())
                        .with_buffer(pixels.clone().binding())
                        .with_buffer(targets.clone().binding())
                        .with_buffer(weights.clone().binding()),
                );
                Batch {
                    images: Tensor::from_primitive::<Wgpu>(self.wrap(
                        pixels,
                        [batch_size, IMAGE_PIXELS],
                        DType::F32,
                    )),
                    labels: Tensor::from_primitive::<Wgpu>(self.wrap(
                        targets,
                        [batch_size],
                        DType::I32,
                    )),
                    weights: Tensor::from_primitive::<Wgpu>(self.wrap(
                        weights,
                        [batch_size],
                        DType::F32,
                    )),
                    real,
                }
            }
            Store::Ops { images, labels } => {
                let index: Tensor<1, Int> = Tensor::from_primitive::<Wgpu>(self.wrap(
                    index_handle,
                    [batch_size],
                    DType::I32,
                ));
                Batch {
                    images: images.as_ref().clone().select(0, index.clone()),
                    labels: labels.as_ref().clone().select(0, index.clone()),
                    weights: index.lower_elem(pad as i32).float(),
                    real,
                }
            }
        }
    }

    /// A device buffer as a contiguous tensor of `shape` and `dtype`.
    fn wrap<const D: usize>(&self, handle: Handle, shape: [usize; D], dtype: DType) -> CubeTensor {
        CubeTensor::new_contiguous(
            self.anchor.client.clone(),
            self.anchor.device.clone(),
            Shape::new(shape),
            handle,
            dtype,
        )
    }
}

/// shaders/gather.wgsl for a batch of `rows` rows over a split of `count` images.
struct GatherKernel {
    rows: usize,
    count: usize,
}

impl KernelSource for GatherKernel {
    fn source(&self) -> SourceTemplate {
        SourceTemplate::new(include_str!("../shaders/gather.wgsl"))
            .register("rows", self.rows.to_string())
            .register("count", self.count.to_string())
            .register("words", WORDS.to_string())
            .register("pixels", IMAGE_PIXELS.to_string())
            .register("workgroup", WORKGROUP.to_string())
    }

    fn id(&self) -> KernelId {
        KernelId::new::<Self>().info((self.rows, self.count))
    }

    fn lang(&self) -> &'static str {
        "wgsl"
    }
}
