//! Streaming batches to the device: gather images in a given order, scale pixels to [0, 1],
//! upload — on a background thread that works `ahead` batches in front of the training step.
//! With the split resident on a GPU (`gather.rs`), the device gathers and the host only sends
//! each batch's image numbers; the GPU's queue is then what runs ahead.
//!
//! Every batch has exactly `batch_size` rows, so tensor shapes never change (a GPU never
//! recompiles kernels for a short last batch): the rows past the end of the data are zeros
//! with weight 0.

use std::sync::Arc;
use std::sync::mpsc::{Receiver, sync_channel};
use std::thread::JoinHandle;

use burn::tensor::{Device, Int, Tensor, TensorData};

use crate::data::{IMAGE_PIXELS, IMAGE_SIDE, Split};
use crate::gather::{GatherMethod, Resident};
use crate::metrics::{ReadError, read_floats, read_ints};

/// One batch on the device.
#[derive(Debug, Clone)]
pub struct Batch {
    /// Pixels / 255, `[batch_size, 784]`.
    pub images: Tensor<2>,
    /// Digits, `[batch_size]` (0 in padding rows).
    pub labels: Tensor<1, Int>,
    /// 1 for real rows, 0 for padding, `[batch_size]`.
    pub weights: Tensor<1>,
    /// Number of real rows.
    pub real: usize,
}

/// A batch's contents read back to the host, for checking what a way of assembling batches
/// produced.
#[derive(Debug, Clone, PartialEq)]
pub struct HostBatch {
    /// Pixels / 255, row after row.
    pub pixels: Vec<f32>,
    /// Digits (0 in padding rows).
    pub labels: Vec<i64>,
    /// 1 for real rows, 0 for padding.
    pub weights: Vec<f32>,
}

impl Batch {
    /// The batch read back to the host (one device sync).
    pub fn read(self) -> Result<HostBatch, ReadError> {
        Ok(HostBatch {
            pixels: read_floats(self.images)?,
            labels: read_ints(self.labels)?,
            weights: read_floats(self.weights)?,
        })
    }
}

/// Random shifts of training images (light augmentation): each image moves by up to `max`
/// pixels along each axis, the gap filled with background. The shift of image `i` is a pure
/// function of (`stream`, `i`), so a pass is reproducible and a resumed run sees the same.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shift {
    /// Largest shift, in pixels.
    pub max: usize,
    /// The pass's random stream (derived from the seed and the epoch).
    pub stream: u64,
}

impl Shift {
    /// The (dx, dy) of image `i`, each in `-max..=max`.
    pub fn of(&self, i: usize) -> (isize, isize) {
        let z = random_bits(self.stream, i as u64);
        let span = 2 * self.max as u64 + 1;
        let dx = (z % span) as isize - self.max as isize;
        let dy = ((z >> 32) % span) as isize - self.max as isize;
        (dx, dy)
    }
}

/// 64 random bits, a pure function of (`stream`, `i`): SplitMix64's output for element `i` of
/// the stream. Drawing with it, a pass is reproducible and a resumed run draws the same.
pub fn random_bits(stream: u64, i: u64) -> u64 {
    let mut z = stream.wrapping_add(i.wrapping_add(1).wrapping_mul(0x9E37_79B9_7F4A_7C15));
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Builds the batch of images `indices` (at most `batch_size` of them) on `device`, each
/// shifted by `shift` when given.
pub fn make_batch(
    split: &Split,
    indices: &[u32],
    batch_size: usize,
    device: &Device,
    shift: Option<Shift>,
) -> Batch {
    let mut pixels = vec![0f32; batch_size * IMAGE_PIXELS];
    let mut labels = vec![0i64; batch_size];
    let mut weights = vec![0f32; batch_size];
    for (row, &i) in indices.iter().enumerate() {
        let i = i as usize;
        let dst = &mut pixels[row * IMAGE_PIXELS..(row + 1) * IMAGE_PIXELS];
        let src = split.image(i);
        match shift.map(|s| s.of(i)) {
            None | Some((0, 0)) => {
                for (d, &s) in dst.iter_mut().zip(src) {
                    *d = f32::from(s) / 255.0;
                }
            }
            Some((dx, dy)) => {
                let side = IMAGE_SIDE as isize;
                for y in 0..side {
                    for x in 0..side {
                        let (sx, sy) = (x - dx, y - dy);
                        if (0..side).contains(&sx) && (0..side).contains(&sy) {
                            dst[(y * side + x) as usize] =
                                f32::from(src[(sy * side + sx) as usize]) / 255.0;
                        }
                    }
                }
            }
        }
        labels[row] = i64::from(split.labels[i]);
        weights[row] = 1.0;
    }
    Batch {
        images: Tensor::from_data(TensorData::new(pixels, [batch_size, IMAGE_PIXELS]), device),
        labels: Tensor::from_data(TensorData::new(labels, [batch_size]), device),
        weights: Tensor::from_data(TensorData::new(weights, [batch_size]), device),
        real: indices.len(),
    }
}

/// Where batches are put together.
#[derive(Debug, Clone)]
pub enum Assembler {
    /// On the host: gathered, scaled and uploaded, every batch.
    Host {
        /// The images.
        split: Split,
        /// Where the batches go.
        device: Device,
    },
    /// On the host, each image randomly shifted (training with augmentation).
    Shifted {
        /// The images.
        split: Split,
        /// Where the batches go.
        device: Device,
        /// The shifts.
        shift: Shift,
    },
    /// On the device, from a split resident there, each image shifted when a shift is given.
    Resident(Arc<Resident>, Option<Shift>),
}

impl Assembler {
    /// The batch of images `indices`, padded to `batch_size` rows.
    pub fn batch(&self, indices: &[u32], batch_size: usize) -> Batch {
        match self {
            Self::Host { split, device } => make_batch(split, indices, batch_size, device, None),
            Self::Shifted {
                split,
                device,
                shift,
            } => make_batch(split, indices, batch_size, device, Some(*shift)),
            Self::Resident(resident, shift) => resident.batch(indices, batch_size, *shift),
        }
    }

    /// Number of images.
    pub fn len(&self) -> usize {
        match self {
            Self::Host { split, .. } | Self::Shifted { split, .. } => split.len(),
            Self::Resident(resident, _) => resident.len(),
        }
    }

    /// Whether there are no images.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The same images, each shifted by `shift` (or not at all, for `None`): on the device when
    /// they are resident there, else on the host.
    pub fn with_shift(&self, shift: Option<Shift>) -> Self {
        match (self, shift) {
            (Self::Resident(resident, _), shift) => Self::Resident(resident.clone(), shift),
            (Self::Host { split, device } | Self::Shifted { split, device, .. }, None) => {
                Self::Host {
                    split: split.clone(),
                    device: device.clone(),
                }
            }
            (Self::Host { split, device } | Self::Shifted { split, device, .. }, Some(shift)) => {
                Self::Shifted {
                    split: split.clone(),
                    device: device.clone(),
                    shift,
                }
            }
        }
    }

    /// Bytes sent from host to device per batch of `batch_size`.
    pub fn upload_bytes(&self, batch_size: usize) -> usize {
        match self {
            Self::Host { .. } | Self::Shifted { .. } => {
                batch_size * (IMAGE_PIXELS * size_of::<f32>() + size_of::<i64>() + size_of::<f32>())
            }
            // Each row's image number, and its shift for the WGSL kernel.
            Self::Resident(resident, _) if resident.method() == GatherMethod::Kernel => {
                2 * batch_size * size_of::<u32>()
            }
            Self::Resident(..) => batch_size * size_of::<u32>(),
        }
    }
}

/// Images per hand-over from the loader's thread: batches smaller than this are passed in groups.
const HANDOVER_IMAGES: usize = 256;

/// The batches of one pass over a split, in `order`, produced ahead of their use.
pub struct Loader {
    source: Source,
}

enum Source {
    /// Batches built by a background thread, `ahead` of the consumer.
    Thread {
        rx: Option<Receiver<Vec<Batch>>>,
        /// Batches received and not yet handed out, in order.
        pending: std::collections::VecDeque<Batch>,
        handle: Option<JoinHandle<()>>,
    },
    /// Batches built on the consumer's thread when it asks (`ahead` = 0, or resident data).
    Inline {
        assembler: Assembler,
        order: Vec<u32>,
        batch_size: usize,
        next: usize,
    },
}

/// The loader's thread stopped before the end of the pass.
#[derive(Debug, thiserror::Error)]
#[error("the batch loader thread failed: {0}")]
pub struct LoaderError(String);

impl LoaderError {
    /// A pass that gave fewer batches than it was started with, without another error.
    pub(crate) fn short(done: usize, expected: usize) -> Self {
        Self(format!("the pass ended after {done} of {expected} batches"))
    }
}

impl Loader {
    /// Starts a pass in `order`, in batches of `batch_size`, built `ahead` batches in advance on
    /// a background thread (`ahead` = 0: built on demand on the caller's thread). Batches
    /// from resident data are always built on demand: their host work is one small upload,
    /// and the device queues the gather ahead of the step by itself.
    pub fn new(assembler: Assembler, order: Vec<u32>, batch_size: usize, ahead: usize) -> Self {
        if ahead == 0 || matches!(assembler, Assembler::Resident(..)) {
            return Self {
                source: Source::Inline {
                    assembler,
                    order,
                    batch_size,
                    next: 0,
                },
            };
        }
        // Small batches travel in groups: one hand-over (a thread wake-up) per group.
        let group = HANDOVER_IMAGES.div_ceil(batch_size).max(1);
        let (tx, rx) = sync_channel(ahead.div_ceil(group));
        let handle = std::thread::Builder::new()
            .name("trainer-loader".into())
            .spawn(move || {
                for images in order.chunks(batch_size * group) {
                    let batches = images
                        .chunks(batch_size)
                        .map(|chunk| assembler.batch(chunk, batch_size))
                        .collect();
                    if tx.send(batches).is_err() {
                        return; // the consumer stopped early
                    }
                }
            });
        let (rx, handle) = match handle {
            Ok(handle) => (Some(rx), Some(handle)),
            // Could not start a thread: the pass will report it in `finish`.
            Err(_) => (None, None),
        };
        Self {
            source: Source::Thread {
                rx,
                pending: Default::default(),
                handle,
            },
        }
    }

    /// Ends the pass, reporting a loader thread that could not start or that panicked.
    pub fn finish(mut self) -> Result<(), LoaderError> {
        match &mut self.source {
            Source::Inline { .. } => Ok(()),
            Source::Thread { rx, handle, .. } => {
                rx.take();
                match handle.take() {
                    None => Err(LoaderError("could not start a thread".into())),
                    Some(h) => h.join().map_err(|e| LoaderError(panic_message(&*e))),
                }
            }
        }
    }
}

impl Iterator for Loader {
    type Item = Batch;

    fn next(&mut self) -> Option<Batch> {
        match &mut self.source {
            Source::Thread { rx, pending, .. } => {
                if pending.is_empty() {
                    pending.extend(rx.as_ref()?.recv().ok()?);
                }
                pending.pop_front()
            }
            Source::Inline {
                assembler,
                order,
                batch_size,
                next,
            } => {
                let chunk = order.get(*next..)?.chunks(*batch_size).next()?;
                *next += chunk.len();
                Some(assembler.batch(chunk, *batch_size))
            }
        }
    }
}

impl Drop for Loader {
    fn drop(&mut self) {
        if let Source::Thread { rx, handle, .. } = &mut self.source {
            rx.take(); // unblocks the thread's send
            if let Some(h) = handle.take() {
                let _ = h.join();
            }
        }
    }
}

fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "panicked".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(n: usize) -> Split {
        let images = (0..n).flat_map(|i| [i as u8 * 10; IMAGE_PIXELS]).collect();
        let labels = (0..n).map(|i| (i % 10) as u8).collect();
        Split::new(images, labels).unwrap()
    }

    /// The batches of a small pass, read back, each with its number of real rows.
    fn batches(ahead: usize) -> Vec<(HostBatch, usize)> {
        let host = Assembler::Host {
            split: split(5),
            device: Device::flex(),
        };
        let mut loader = Loader::new(host, vec![4, 0, 3, 1, 2], 2, ahead);
        let out = loader
            .by_ref()
            .map(|b| {
                let real = b.real;
                (b.read().unwrap(), real)
            })
            .collect();
        loader.finish().unwrap();
        out
    }

    #[test]
    fn batches_follow_the_order_scale_pixels_and_pad_the_last() {
        let got = batches(2);
        assert_eq!(got.len(), 3);
        let (b, real) = &got[0];
        assert_eq!(b.labels, vec![4, 0]);
        assert_eq!(b.pixels[0], 40.0 / 255.0);
        assert_eq!(b.pixels[IMAGE_PIXELS], 0.0);
        assert_eq!((b.weights.as_slice(), *real), (&[1.0, 1.0][..], 2));
        let (b, real) = &got[2];
        assert_eq!(
            b.pixels.len(),
            2 * IMAGE_PIXELS,
            "the last batch keeps the shape"
        );
        assert_eq!(b.labels, vec![2, 0]);
        assert_eq!(b.pixels[IMAGE_PIXELS..], [0.0; IMAGE_PIXELS][..]);
        assert_eq!((b.weights.as_slice(), *real), (&[1.0, 0.0][..], 1));
    }

    #[test]
    fn shifted_images_move_by_at_most_max_and_reproducibly() {
        let shift = Shift { max: 2, stream: 9 };
        let mut seen = std::collections::HashSet::new();
        for i in 0..500 {
            let (dx, dy) = shift.of(i);
            assert!(dx.abs() <= 2 && dy.abs() <= 2);
            assert_eq!(shift.of(i), (dx, dy));
            seen.insert((dx, dy));
        }
        assert_eq!(seen.len(), 25, "every shift in -2..=2 squared occurs");
        // A single lit pixel moves by exactly the image's shift.
        let mut image = vec![0u8; IMAGE_PIXELS];
        image[14 * IMAGE_SIDE + 14] = 255;
        let one = Split::new(image, vec![3]).unwrap();
        let batch = make_batch(&one, &[0], 1, &Device::flex(), Some(shift));
        let pixels = batch.read().unwrap().pixels;
        let (dx, dy) = shift.of(0);
        let lit = ((14 + dy) * IMAGE_SIDE as isize + 14 + dx) as usize;
        assert_eq!(pixels[lit], 1.0);
        assert_eq!(pixels.iter().sum::<f32>(), 1.0);
    }

    #[test]
    fn inline_and_background_loading_agree() {
        assert_eq!(batches(0), batches(3));
    }

    #[test]
    fn dropping_a_loader_mid_pass_stops_its_thread() {
        let host = Assembler::Host {
            split: split(50),
            device: Device::flex(),
        };
        let mut loader = Loader::new(host, (0..50).collect(), 1, 1);
        assert!(loader.next().is_some());
        drop(loader); // must not hang
    }

    /// A loader thread that fails mid-pass ends the iteration and is reported by `finish`: a
    /// pass is never silently short.
    #[test]
    fn a_failing_loader_thread_is_reported() {
        let host = Assembler::Host {
            split: split(5),
            device: Device::flex(),
        };
        // Image 99 does not exist: the thread panics on the third group.
        let order: Vec<u32> = (0..5).cycle().take(600).chain([99]).collect();
        let mut loader = Loader::new(host, order, 1, 2);
        let got = loader.by_ref().count();
        assert!(got < 601, "{got} batches");
        let err = loader.finish().unwrap_err().to_string();
        assert!(err.contains("the batch loader thread failed"), "{err}");
    }
}
