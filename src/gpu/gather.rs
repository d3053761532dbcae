//! A split kept on the GPU: its pixels are uploaded once, as u8, and every batch is gathered
//! and normalised on the device, so a training step sends only the batch's image numbers.
//!
//! Two ways to gather, chosen with `--gather`: the hand-written WGSL kernel in
//! `shaders/gather.wgsl` (u8 pixels, 47 MB for the training set, gathered and scaled by one
//! dispatch straight into the tensor the model reads), or burn's own `select` on a resident
//! f32 copy (four times the memory, no custom code). Both give the same bits as the host path.

use burn::cubecl::prelude::KernelId;
use burn::cubecl::server::Handle;
use burn::tensor::{DType, Device, Int, Tensor, TensorData};

use crate::batch::{Batch, Shift};
use crate::data::{IMAGE_PIXELS, IMAGE_SIDE, Split};
use crate::gpu::kernels::Gpu;
use burn::backend::wgpu::{KernelSource, SourceTemplate};

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
    gpu: Gpu,
}

/// The resident data, as each gather method wants it.
enum Store {
    /// u8 pixels packed four to a u32, and one u32 per label, for the WGSL kernels.
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
        f.debug_struct("Resident")
            .field("method", &self.method())
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
        let gpu = Gpu::of(device).ok_or(GatherError::NotWgpu)?;
        let store = if method == GatherMethod::Kernel {
            let labels: Vec<u32> = split.labels.iter().map(|&l| u32::from(l)).collect();
            Store::Kernel {
                images: gpu.upload(&split.images),
                labels: gpu.upload(&labels),
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
        Ok(Self { store, count, gpu })
    }

    /// Number of images.
    pub(crate) fn len(&self) -> usize {
        self.count
    }

    /// How batches are gathered from this split.
    pub fn method(&self) -> GatherMethod {
        match self.store {
            Store::Kernel { .. } => GatherMethod::Kernel,
            Store::Ops { .. } => GatherMethod::Ops,
        }
    }

    /// The device the split lives on.
    pub(crate) fn gpu(&self) -> &Gpu {
        &self.gpu
    }

    /// The packed pixels and the labels, for kernels that read the split directly (`None`
    /// when the split is kept for burn's ops).
    pub(crate) fn buffers(&self) -> Option<(&Handle, &Handle)> {
        match &self.store {
            Store::Kernel { images, labels } => Some((images, labels)),
            Store::Ops { .. } => None,
        }
    }

    /// The batch of images `indices` (at most `batch_size`), each moved by `shift` when given
    /// (kernel only: burn's `select` cannot shift), padded to `batch_size` rows with zero
    /// images of weight 0. Sends `8 × batch_size` bytes to the device (image numbers and shifts).
    pub fn batch(&self, indices: &[u32], batch_size: usize, shift: Option<Shift>) -> Batch {
        let real = indices.len();
        match &self.store {
            Store::Kernel { images, labels } => {
                let rows = self
                    .gpu
                    .upload(&batch_rows(indices, batch_size, self.count, shift));
                let pixels = self.gpu.empty(batch_size * IMAGE_PIXELS * size_of::<f32>());
                let targets = self.gpu.empty(batch_size * size_of::<i32>());
                let weights = self.gpu.empty(batch_size * size_of::<f32>());
                let kernel = GatherKernel {
                    rows: batch_size,
                    count: self.count,
                };
                let quads = (batch_size * WORDS) as u32;
                self.gpu.launch(
                    kernel,
                    WORKGROUP,
                    quads.div_ceil(WORKGROUP),
                    &[images, labels, &rows, &pixels, &targets, &weights],
                );
                Batch {
                    images: self
                        .gpu
                        .tensor(pixels, [batch_size, IMAGE_PIXELS], DType::F32),
                    labels: self.gpu.tensor(targets, [batch_size], DType::I32),
                    weights: self.gpu.tensor(weights, [batch_size], DType::F32),
                    real,
                }
            }
            Store::Ops { images, labels } => {
                let pad = self.count as u32;
                let mut rows: Vec<u32> = indices.to_vec();
                rows.resize(batch_size, pad);
                let index: Tensor<1, Int> =
                    self.gpu
                        .tensor(self.gpu.upload(&rows), [batch_size], DType::I32);
                Batch {
                    images: images.as_ref().clone().select(0, index.clone()),
                    labels: labels.as_ref().clone().select(0, index.clone()),
                    weights: index.lower_elem(pad as i32).float(),
                    real,
                }
            }
        }
    }
}

/// The rows a resident batch reads: `batch_size` image numbers (`count`, one past the last
/// image, for padding rows), then each row's shift packed as pixels.wgsl reads it.
pub(crate) fn batch_rows(
    indices: &[u32],
    batch_size: usize,
    count: usize,
    shift: Option<Shift>,
) -> Vec<u32> {
    let mut rows: Vec<u32> = indices.to_vec();
    rows.resize(batch_size, count as u32);
    rows.extend((0..batch_size).map(|row| match (shift, indices.get(row)) {
        (Some(shift), Some(&i)) => {
            let (dx, dy) = shift.of(i as usize);
            ((dx + 128) as u32) | (((dy + 128) as u32) << 8)
        }
        _ => NO_SHIFT,
    }));
    rows
}

/// A row's packed shift when it is not moved (pixels.wgsl).
const NO_SHIFT: u32 = 0x8080;

/// shaders/pixels.wgsl ready to prepend to a kernel that reads resident images.
pub(crate) fn pixels_source() -> String {
    SourceTemplate::new(include_str!("../../shaders/pixels.wgsl"))
        .register("side", IMAGE_SIDE.to_string())
        .register("words", WORDS.to_string())
        .register("pixels", IMAGE_PIXELS.to_string())
        .complete()
}

/// shaders/gather.wgsl for a batch of `rows` rows over a split of `count` images.
struct GatherKernel {
    rows: usize,
    count: usize,
}

impl KernelSource for GatherKernel {
    fn source(&self) -> SourceTemplate {
        SourceTemplate::new(pixels_source() + include_str!("../../shaders/gather.wgsl"))
            .register("rows", self.rows.to_string())
            .register("count", self.count.to_string())
            .register("workgroup", WORKGROUP.to_string())
    }

    fn id(&self) -> KernelId {
        KernelId::new::<Self>().info((self.rows, self.count))
    }

    fn lang(&self) -> &'static str {
        "wgsl"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The WGSL gather kernel and burn's ops, over the split resident on the GPU, give the same
    /// bits as gathering and scaling on the host, padding rows of a short batch included; the
    /// kernel's random shifts give the bits of the host's.
    #[test]
    fn gathering_on_the_gpu_matches_the_host_bit_for_bit() {
        use crate::batch::Shift;
        use crate::loader::Assembler;

        let Some(gpu) = crate::test_support::wgpu() else {
            return;
        };
        let split = crate::test_support::mnist().test.slice(0..1000);
        let host = Assembler::Host {
            split: split.clone(),
            device: gpu.clone(),
        };
        // A full batch in a scattered order, then a short one that needs padding.
        let full: Vec<u32> = (0..64).map(|i| (i * 397 + 11) % 1000).collect();
        let short = [999, 0, 500];
        let shift = Shift { max: 3, stream: 5 };
        for gather in [GatherMethod::Kernel, GatherMethod::Ops] {
            let resident = Assembler::of(&split, &gpu, gather);
            assert!(matches!(resident, Assembler::Resident(..)), "{gather:?}");
            let mut cases = vec![(&host, &resident)];
            let (shifted_host, shifted_resident) = (
                host.with_shift(Some(shift)),
                resident.with_shift(Some(shift)),
            );
            if gather == GatherMethod::Kernel {
                cases.push((&shifted_host, &shifted_resident));
            }
            for (host, resident) in cases {
                for indices in [&full[..], &short[..]] {
                    let want = host.batch(indices, 64).read().unwrap();
                    let got = resident.batch(indices, 64).read().unwrap();
                    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                    assert!(
                        bits(&got.pixels) == bits(&want.pixels),
                        "{gather:?}: pixels differ"
                    );
                    assert_eq!(got.labels, want.labels, "{gather:?}: labels");
                    assert_eq!(got.weights, want.weights, "{gather:?}: weights");
                }
            }
        }
    }
}
