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

use burn::tensor::Device;

use crate::batch::{Batch, Shift, make_batch};
use crate::data::Split;
use crate::gpu::gather::{GatherError, GatherMethod, Resident};

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
    /// Where `split`'s batches for `device` are put together: resident on a wgpu device
    /// (uploaded here, once) unless `gather` says host; on the host otherwise.
    pub fn of(split: &Split, device: &Device, gather: GatherMethod) -> Self {
        let host = || Self::Host {
            split: split.clone(),
            device: device.clone(),
        };
        if gather == GatherMethod::Host || split.is_empty() {
            return host();
        }
        match Resident::upload(split, device, gather) {
            Ok(resident) => Self::Resident(Arc::new(resident), None),
            Err(GatherError::NotWgpu) => host(),
            Err(e @ GatherError::TooLarge(..)) => {
                tracing::info!(reason = %e, "batches gathered on the host");
                host()
            }
        }
    }

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
            Self::Host { split, .. } | Self::Shifted { split, .. } => {
                let pixels = split.shape.pixels();
                batch_size * (pixels * size_of::<f32>() + size_of::<i64>() + size_of::<f32>())
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
    use crate::batch::HostBatch;

    fn split(n: usize) -> Split {
        let images = (0..n).flat_map(|i| [i as u8 * 10; 784]).collect();
        let labels = (0..n).map(|i| (i % 10) as u8).collect();
        Split::new(images, labels, crate::data::ImageShape::MNIST).unwrap()
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
        assert_eq!(b.pixels[784], 0.0);
        assert_eq!((b.weights.as_slice(), *real), (&[1.0, 1.0][..], 2));
        let (b, real) = &got[2];
        assert_eq!(b.pixels.len(), 2 * 784, "the last batch keeps the shape");
        assert_eq!(b.labels, vec![2, 0]);
        assert_eq!(b.pixels[784..], [0.0; 784][..]);
        assert_eq!((b.weights.as_slice(), *real), (&[1.0, 0.0][..], 1));
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
