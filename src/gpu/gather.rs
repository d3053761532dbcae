//! A split kept on the GPU: its pixels are uploaded once, as u8, and every batch is gathered
//! and normalised on the device, so a training step sends only the batch's image numbers.
//!
//! Two ways to gather, chosen with `--gather`: the hand-written WGSL kernel in
//! `shaders/gather.wgsl` (u8 pixels, 47 MB for MNIST's training set, gathered and scaled by
//! one dispatch straight into the tensor the model reads), or burn's own `select` on a
//! resident f32 copy (four times the memory, no custom code). Both give the same bits as the
//! host path.
//!
//! For the kernels, each image's bytes are padded to a multiple of four (four pixels a
//! `u32`), and a split larger than WebGPU's guaranteed 128 MiB a binding is kept in up to
//! [`MAX_CHUNKS`] buffers of whole images, each bound on its own (60,000 colour 32 × 32 images
//! are 176 MiB: two).

use burn::cubecl::prelude::KernelId;
use burn::cubecl::server::Handle;
use burn::tensor::{DType, Device, Int, Tensor, TensorData};

use crate::batch::{Batch, Shift};
use crate::data::{ImageShape, Split};
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

/// The largest buffer a kernel binds: WebGPU's guaranteed storage binding size.
pub const MAX_BINDING_BYTES: usize = 128 << 20;

/// The most buffers a resident split is kept in (each kernel that reads images binds them
/// all; gather.wgsl's six bindings and two more stay within WebGPU's eight a stage).
pub const MAX_CHUNKS: usize = 3;

/// Where a resident split's images are, as the WGSL kernels read them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ImageLayout {
    /// The shape of an image.
    pub shape: ImageShape,
    /// `u32` words per image: its bytes, four to a word, padded.
    pub words: usize,
    /// Images per buffer.
    pub chunk: usize,
    /// Buffers.
    pub chunks: usize,
}

impl ImageLayout {
    /// The layout of `count` images of `shape`, or `None` when they need more than
    /// [`MAX_CHUNKS`] buffers.
    pub fn of(shape: ImageShape, count: usize) -> Option<Self> {
        let words = shape.pixels().div_ceil(4);
        let chunk = (MAX_BINDING_BYTES / (4 * words)).max(1);
        let chunks = count.div_ceil(chunk).max(1);
        (chunks <= MAX_CHUNKS).then_some(Self {
            shape,
            words,
            chunk,
            chunks,
        })
    }
}

/// Invocations per workgroup of the gather kernel.
const WORKGROUP: u32 = 64;

/// Why a split could not be kept on the device.
#[derive(Debug, thiserror::Error)]
pub enum GatherError {
    /// The device is not a wgpu one.
    #[error("--gather kernel|ops keeps the data on a wgpu device; this device is not one")]
    NotWgpu,
    /// The split needs more buffers than a kernel binds.
    #[error("{0} images of {1} need more than {MAX_CHUNKS} buffers of 128 MiB")]
    TooLarge(usize, ImageShape),
}

/// A split resident on a wgpu device.
pub struct Resident {
    store: Store,
    count: usize,
    /// The shape of an image.
    shape: ImageShape,
    gpu: Gpu,
}

/// The resident data, as each gather method wants it.
enum Store {
    /// u8 pixels packed four to a u32 (in up to [`MAX_CHUNKS`] buffers), and one u32 per
    /// label, for the WGSL kernels.
    Kernel {
        images: Vec<Handle>,
        labels: Handle,
        layout: ImageLayout,
    },
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
        let (count, shape) = (split.len(), split.shape);
        let layout = ImageLayout::of(shape, count).ok_or(GatherError::TooLarge(count, shape))?;
        Self::upload_in(split, device, method, layout)
    }

    /// [`Resident::upload`] with the images kept as `layout` says (the tests choose small
    /// chunks to see several).
    pub(crate) fn upload_in(
        split: &Split,
        device: &Device,
        method: GatherMethod,
        layout: ImageLayout,
    ) -> Result<Self, GatherError> {
        let count = split.len();
        let shape = split.shape;
        let gpu = Gpu::of(device).ok_or(GatherError::NotWgpu)?;
        let size = shape.pixels();
        let store = if method == GatherMethod::Kernel {
            let labels: Vec<u32> = split.labels().iter().map(|&l| u32::from(l)).collect();
            let padded = 4 * layout.words;
            let images = (0..layout.chunks)
                .map(|c| {
                    let range = c * layout.chunk..((c + 1) * layout.chunk).min(count);
                    if padded == size {
                        return gpu.upload(&split.images()[range.start * size..range.end * size]);
                    }
                    let mut bytes = vec![0u8; range.len() * padded];
                    for (i, image) in range.enumerate() {
                        bytes[i * padded..i * padded + size].copy_from_slice(split.image(image));
                    }
                    gpu.upload(&bytes)
                })
                .collect();
            Store::Kernel {
                images,
                labels: gpu.upload(&labels),
                layout,
            }
        } else {
            let mut pixels: Vec<f32> = split
                .images()
                .iter()
                .map(|&p| f32::from(p) / 255.0)
                .collect();
            pixels.extend(vec![0.0; size]);
            let mut labels: Vec<i32> = split.labels().iter().map(|&l| i32::from(l)).collect();
            labels.push(0);
            Store::Ops {
                images: Box::new(Tensor::from_data(
                    TensorData::new(pixels, [count + 1, size]),
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
            shape,
            gpu,
        })
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

    /// The packed pixels (one buffer a chunk), the labels and the images' layout, for
    /// kernels that read the split directly (`None` when the split is kept for burn's ops).
    pub(crate) fn buffers(&self) -> Option<(&[Handle], &Handle, ImageLayout)> {
        match &self.store {
            Store::Kernel {
                images,
                labels,
                layout,
            } => Some((images, labels, *layout)),
            Store::Ops { .. } => None,
        }
    }

    /// The batch of images `indices` (at most `batch_size`), each moved by `shift` when given
    /// (kernel only: burn's `select` cannot shift), padded to `batch_size` rows with zero
    /// images of weight 0. Sends `8 × batch_size` bytes to the device (image numbers and shifts).
    pub fn batch(&self, indices: &[u32], batch_size: usize, shift: Option<Shift>) -> Batch {
        let real = indices.len();
        match &self.store {
            Store::Kernel {
                images,
                labels,
                layout,
            } => {
                let size = self.shape.pixels();
                let rows = self
                    .gpu
                    .upload(&batch_rows(indices, batch_size, self.count, shift));
                let pixels = self.gpu.empty(batch_size * size * size_of::<f32>());
                let targets = self.gpu.empty(batch_size * size_of::<i32>());
                let weights = self.gpu.empty(batch_size * size_of::<f32>());
                let kernel = GatherKernel {
                    rows: batch_size,
                    count: self.count,
                    layout: *layout,
                };
                let quads = (batch_size * layout.words) as u32;
                let mut buffers = vec![&images[0], labels, &rows, &pixels, &targets, &weights];
                buffers.extend(&images[1..]);
                self.gpu
                    .launch(kernel, WORKGROUP, quads.div_ceil(WORKGROUP), &buffers);
                Batch {
                    images: self.gpu.tensor(pixels, [batch_size, size], DType::F32),
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

/// shaders/pixels.wgsl for images of `layout`, ready to prepend to a kernel that reads
/// resident images: the kernel binds the first chunk as `images`, and the others are bound
/// here as `images1`, `images2` at `binding`, `binding + 1`.
pub(crate) fn pixels_source(layout: &ImageLayout, binding: usize) -> String {
    let mut chunks = String::new();
    let mut reads = String::new();
    for c in 1..layout.chunks {
        chunks += &format!(
            "@group(0) @binding({}) var<storage, read_write> images{c}: array<u32>;\n",
            binding + c - 1
        );
    }
    for c in 0..layout.chunks {
        let name = if c == 0 {
            "images".to_string()
        } else {
            format!("images{c}")
        };
        let read = format!("return {name}[(image - {c}u * CHUNK) * WORDS + w];");
        if c + 1 < layout.chunks {
            reads += &format!("    if (image < {}u * CHUNK) {{ {read} }}\n", c + 1);
        } else {
            reads += &format!("    {read}\n");
        }
    }
    let shape = layout.shape;
    SourceTemplate::new(include_str!("../../shaders/pixels.wgsl"))
        .register("height", shape.height.to_string())
        .register("width", shape.width.to_string())
        .register("words", layout.words.to_string())
        .register("pixels", shape.pixels().to_string())
        .register("chunk", layout.chunk.to_string())
        .register("chunk_bindings", chunks)
        .register("chunk_reads", reads)
        .complete()
}

/// The gather kernel's WGSL for a batch of `rows` rows over `count` images kept as `layout`
/// says (for checks of the generated text).
#[cfg(test)]
pub(crate) fn gather_source(rows: usize, count: usize, layout: ImageLayout) -> String {
    GatherKernel {
        rows,
        count,
        layout,
    }
    .source()
    .complete()
}

/// shaders/gather.wgsl for a batch of `rows` rows over a split of `count` images.
struct GatherKernel {
    rows: usize,
    count: usize,
    layout: ImageLayout,
}

impl KernelSource for GatherKernel {
    fn source(&self) -> SourceTemplate {
        SourceTemplate::new(
            pixels_source(&self.layout, 6) + include_str!("../../shaders/gather.wgsl"),
        )
        .register("rows", self.rows.to_string())
        .register("count", self.count.to_string())
        .register("workgroup", WORKGROUP.to_string())
    }

    fn id(&self) -> KernelId {
        KernelId::new::<Self>().info((self.rows, self.count, self.layout))
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

    /// A batch of `rows` (padded to 8) from `resident` has the bits of the same batch from
    /// `host`, unshifted and moved by `shift`.
    fn gathers_as_the_host(
        resident: &crate::loader::Assembler,
        host: &crate::loader::Assembler,
        rows: &[u32],
        shift: crate::batch::Shift,
    ) {
        for shift in [None, Some(shift)] {
            let want = host.with_shift(shift).batch(rows, 8).read().unwrap();
            let got = resident.with_shift(shift).batch(rows, 8).read().unwrap();
            assert_eq!(got.labels, want.labels);
            assert!(
                got.pixels
                    .iter()
                    .zip(&want.pixels)
                    .all(|(a, b)| a.to_bits() == b.to_bits()),
                "pixels differ ({shift:?})"
            );
        }
    }

    /// Colour images of an odd size (3 × 10 × 13: 390 bytes, padded to 98 words on the GPU)
    /// gather and shift as on the host, bit for bit.
    #[test]
    fn colour_images_of_any_size_gather_and_shift_as_the_host_does() {
        use crate::batch::Shift;
        use crate::data::{ImageShape, Split};
        use crate::loader::Assembler;

        let Some(gpu) = crate::test_support::wgpu() else {
            return;
        };
        let shape = ImageShape {
            channels: 3,
            height: 10,
            width: 13,
        };
        let n = 50;
        let images: Vec<u8> = (0..n * shape.pixels())
            .map(|i| (i * 7919 % 251) as u8)
            .collect();
        let labels: Vec<u8> = (0..n).map(|i| (i % 4) as u8).collect();
        let split = Split::new(images, labels, shape).unwrap();
        let resident = Assembler::of(&split, &gpu, GatherMethod::Kernel);
        assert!(matches!(resident, Assembler::Resident(..)));
        let host = Assembler::Host {
            split: split.clone(),
            device: gpu.clone(),
        };
        gathers_as_the_host(
            &resident,
            &host,
            &[49, 0, 17, 33, 1],
            Shift { max: 3, stream: 9 },
        );
    }

    /// A split kept in three buffers (chunks of 400 images here, of 128 MiB in use) gathers
    /// the same bits as the host, rows of every chunk in one batch, shifted or not.
    #[test]
    fn a_split_in_chunks_gathers_as_the_host_does() {
        use crate::batch::Shift;
        use crate::loader::Assembler;

        let Some(gpu) = crate::test_support::wgpu() else {
            return;
        };
        let split = crate::test_support::mnist().test.slice(0..1000);
        let layout = ImageLayout {
            shape: split.shape,
            words: 196,
            chunk: 400,
            chunks: 3,
        };
        let resident = Resident::upload_in(&split, &gpu, GatherMethod::Kernel, layout).unwrap();
        let resident = Assembler::Resident(std::sync::Arc::new(resident), None);
        let host = Assembler::Host {
            split: split.clone(),
            device: gpu.clone(),
        };
        let rows = [0, 399, 400, 799, 800, 999, 5, 650];
        gathers_as_the_host(&resident, &host, &rows, Shift { max: 2, stream: 3 });
    }
}
