//! A batch: images scaled to [0, 1], labels and row weights on the device, always of the
//! run's batch size (a short last batch is padded with zero-weight rows, so the GPU never sees
//! a new shape), and its assembly on the host. The host loader (`loader`) and the GPU gather
//! (`gather`) both make them.

use burn::tensor::{Device, Int, Tensor, TensorData};

use crate::backend::read::{ReadError, read_floats, read_ints};
use crate::data::Split;
use crate::product::prefetch;
use crate::rng::random_bits;

/// Images per batch when evaluating (validation and test); the last batch is padded.
pub const EVAL_BATCH: usize = 1000;

/// One batch on the device.
#[derive(Debug, Clone)]
pub struct Batch {
    /// Pixels / 255, `[batch_size, pixels]` (each image planar: channel, row, column).
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
/// pixels along each axis (every channel alike), the gap filled with black. The shift of image `i` is a pure
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

/// Builds the batch of images `indices` (at most `batch_size` of them) on `device`, each
/// shifted by `shift` when given.
pub fn make_batch(
    split: &Split,
    indices: &[u32],
    batch_size: usize,
    device: &Device,
    shift: Option<Shift>,
) -> Batch {
    let shape = split.shape;
    let size = shape.pixels();
    let mut pixels = vec![0f32; batch_size * size];
    let mut labels = vec![0i64; batch_size];
    let mut weights = vec![0f32; batch_size];
    for (row, &i) in indices.iter().enumerate() {
        let i = i as usize;
        fill_pixels(split, i, shift, &mut pixels[row * size..(row + 1) * size]);
        labels[row] = i64::from(split.labels()[i]);
        weights[row] = 1.0;
    }
    Batch {
        images: Tensor::from_data(TensorData::new(pixels, [batch_size, size]), device),
        labels: Tensor::from_data(TensorData::new(labels, [batch_size]), device),
        weights: Tensor::from_data(TensorData::new(weights, [batch_size]), device),
        real: indices.len(),
    }
}

/// Image `i` of `split`, moved by `shift` when given (the gap black), scaled to [0, 1] into
/// `dst` (its pixels' length).
#[inline(always)]
pub fn fill_pixels(split: &Split, i: usize, shift: Option<Shift>, dst: &mut [f32]) {
    let shape = split.shape;
    let src = split.image(i);
    match shift.map(|s| s.of(i)) {
        None | Some((0, 0)) => {
            for (d, &s) in dst.iter_mut().zip(src) {
                *d = f32::from(s) / 255.0;
            }
        }
        Some((dx, dy)) => {
            dst.fill(0.0);
            let (h, w) = (shape.height as isize, shape.width as isize);
            let plane = (h * w) as usize;
            for c in 0..shape.channels {
                let (dst, src) = (&mut dst[c * plane..], &src[c * plane..]);
                for y in 0..h {
                    for x in 0..w {
                        let (sx, sy) = (x - dx, y - dy);
                        if (0..w).contains(&sx) && (0..h).contains(&sy) {
                            dst[(y * w + x) as usize] =
                                f32::from(src[(sy * w + sx) as usize]) / 255.0;
                        }
                    }
                }
            }
        }
    }
}

/// Asks the CPU to start bringing image `i` of `split` into its cache, so that a
/// [`fill_pixels`] a few images later finds it there (batches gather images from all over the
/// data set: each image's first read otherwise waits for memory). Nothing on other CPUs.
pub fn prefetch_image(split: &Split, i: usize) {
    for line in split.image(i).chunks(64) {
        prefetch(line.as_ptr());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let mut image = vec![0u8; 784];
        image[14 * 28 + 14] = 255;
        let one = Split::new(image, vec![3], crate::data::ImageShape::MNIST).unwrap();
        let batch = make_batch(&one, &[0], 1, &Device::flex(), Some(shift));
        let pixels = batch.read().unwrap().pixels;
        let (dx, dy) = shift.of(0);
        let lit = ((14 + dy) * 28 + 14 + dx) as usize;
        assert_eq!(pixels[lit], 1.0);
        assert_eq!(pixels.iter().sum::<f32>(), 1.0);
    }
}
