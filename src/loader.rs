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

use crate::data::{IMAGE_PIXELS, Split};
use crate::gather::Resident;

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

/// Builds the batch of images `indices` (at most `batch_size` of them) on `device`.
pub fn make_batch(split: &Split, indices: &[u32], batch_size: usize, device: &Device) -> Batch {
    let mut pixels = vec![0f32; batch_size * IMAGE_PIXELS];
    let mut labels = vec![0i64; batch_size];
    let mut weights = vec![0f32; batch_size];
    for (row, &i) in indices.iter().enumerate() {
        let i = i as usize;
        let dst = &mut pixels[row * IMAGE_PIXELS..(row + 1) * IMAGE_PIXELS];
        for (d, &s) in dst.iter_mut().zip(split.image(i)) {
            *d = f32::from(s) / 255.0;
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
    /// On the device, from a split resident there.
    Resident(Arc<Resident>),
}

impl Assembler {
    /// The batch of images `indices`, padded to `batch_size` rows.
    pub fn batch(&self, indices: &[u32], batch_size: usize) -> Batch {
        match self {
            Self::Host { split, device } => make_batch(split, indices, batch_size, device),
            Self::Resident(resident) => resident.batch(indices, batch_size),
        }
    }

    /// Number of images.
    pub fn len(&self) -> usize {
        match self {
            Self::Host { split, .. } => split.len(),
            Self::Resident(resident) => resident.len(),
        }
    }

    /// Whether there are no images.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Bytes sent from host to device per batch of `batch_size`.
    pub fn upload_bytes(&self, batch_size: usize) -> usize {
        match self {
            Self::Host { .. } => {
                batch_size * (IMAGE_PIXELS * size_of::<f32>() + size_of::<i64>() + size_of::<f32>())
            }
            Self::Resident(_) => batch_size * size_of::<u32>(),
        }
    }
}

/// The batches of one pass over a split, in `order`, produced ahead of their use.
pub struct Loader {
    source: Source,
}

enum Source {
    /// Batches built by a background thread, `ahead` of the consumer.
    Thread {
        rx: Option<Receiver<Batch>>,
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

impl Loader {
    /// Starts a pass in `order`, in batches of `batch_size`, built `ahead` batches in advance on
    /// a background thread (`ahead` = 0: built on demand on the caller's thread). Batches
    /// from resident data are always built on demand: their host work is one small upload,
    /// and the device queues the gather ahead of the step by itself.
    pub fn new(assembler: Assembler, order: Vec<u32>, batch_size: usize, ahead: usize) -> Self {
        if ahead == 0 || matches!(assembler, Assembler::Resident(_)) {
            return Self {
                source: Source::Inline {
                    assembler,
                    order,
                    batch_size,
                    next: 0,
                },
            };
        }
        let (tx, rx) = sync_channel(ahead);
        let handle = std::thread::Builder::new()
            .name("trainer-loader".into())
            .spawn(move || {
                for chunk in order.chunks(batch_size) {
                    if tx.send(assembler.batch(chunk, batch_size)).is_err() {
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
            source: Source::Thread { rx, handle },
        }
    }

    /// Ends the pass, reporting a loader thread that could not start or that panicked.
    pub fn finish(mut self) -> Result<(), LoaderError> {
        match &mut self.source {
            Source::Inline { .. } => Ok(()),
            Source::Thread { rx, handle } => {
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
            Source::Thread { rx, .. } => rx.as_ref()?.recv().ok(),
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
        if let Source::Thread { rx, handle } = &mut self.source {
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

    /// A batch read back: pixels, labels, weights, real rows.
    type HostBatch = (Vec<f32>, Vec<i64>, Vec<f32>, usize);

    fn batches(ahead: usize) -> Vec<HostBatch> {
        let host = Assembler::Host {
            split: split(5),
            device: Device::flex(),
        };
        let mut loader = Loader::new(host, vec![4, 0, 3, 1, 2], 2, ahead);
        let out = loader
            .by_ref()
            .map(|b| {
                (
                    b.images.into_data().try_to_vec::<f32>().unwrap(),
                    b.labels
                        .into_data()
                        .convert::<i64>()
                        .try_to_vec::<i64>()
                        .unwrap(),
                    b.weights.into_data().try_to_vec::<f32>().unwrap(),
                    b.real,
                )
            })
            .collect();
        loader.finish().unwrap();
        out
    }

    #[test]
    fn batches_follow_the_order_scale_pixels_and_pad_the_last() {
        let got = batches(2);
        assert_eq!(got.len(), 3);
        let (images, labels, weights, real) = &got[0];
        assert_eq!(labels, &vec![4, 0]);
        assert_eq!(images[0], 40.0 / 255.0);
        assert_eq!(images[IMAGE_PIXELS], 0.0);
        assert_eq!((weights.as_slice(), *real), (&[1.0, 1.0][..], 2));
        let (images, labels, weights, real) = &got[2];
        assert_eq!(
            images.len(),
            2 * IMAGE_PIXELS,
            "the last batch keeps the shape"
        );
        assert_eq!(labels, &vec![2, 0]);
        assert_eq!(images[IMAGE_PIXELS..], [0.0; IMAGE_PIXELS][..]);
        assert_eq!((weights.as_slice(), *real), (&[1.0, 0.0][..], 1));
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
}
