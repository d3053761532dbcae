//! The data: labelled images from MNIST-format IDX files ([`idx`]), a folder of pictures with
//! one sub-folder per class ([`folder`]), or a CSV of pixels or of picture paths ([`csv`]),
//! pictures read within limits ([`pictures`], also how `predict` prepares a user's picture),
//! each read through burn-dataset's `Dataset` trait and decoded once, in parallel, into one
//! resident buffer of bytes ([`Split`]); the train / validation / test splits ([`splits`]);
//! a cache of decoded sets ([`cache`]); and the data's identity ([`DataInfo`]: image shape,
//! class names, how a new picture is prepared), which travels with runs and models.
//!
//! Pixels are bytes, one per channel, each image's channels one after another (planar:
//! channel, row, column — PyTorch's NCHW, so a network's flattened input and an exported
//! model's `[N, C, H, W]` input are the same numbers).

pub mod cache;
pub mod csv;
pub mod folder;
pub mod idx;
pub mod pictures;
pub mod splits;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use burn::data::dataset::Dataset;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::files::FileError;
pub use idx::{IdxError, TEST_IMAGES, TEST_LABELS, TRAIN_IMAGES, TRAIN_LABELS, write_split};
use pictures::ImageError;

/// The side of MNIST's images, the shape every model written before images of other shapes
/// has.
pub const MNIST_SIDE: usize = 28;

/// The most classes a data set may have: labels are bytes.
pub const MAX_CLASSES: usize = 256;

/// The shape of one image: channels (1 gray, 3 colour), rows, columns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ImageShape {
    /// 1 (gray) or 3 (RGB).
    pub channels: usize,
    /// Rows.
    pub height: usize,
    /// Columns.
    pub width: usize,
}

impl ImageShape {
    /// MNIST's 28 × 28 gray.
    pub const MNIST: Self = Self {
        channels: 1,
        height: MNIST_SIDE,
        width: MNIST_SIDE,
    };

    /// Bytes (and network inputs) per image.
    pub fn pixels(&self) -> usize {
        self.channels * self.height * self.width
    }
}

impl std::fmt::Display for ImageShape {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = if self.channels == 1 { "gray" } else { "RGB" };
        write!(f, "{}x{} {kind}", self.height, self.width)
    }
}

/// How a new picture is prepared for a model, as its data was: MNIST's way (gray, the object
/// light on dark, its box scaled into the central 20 × 20 and placed by its centre of mass)
/// for data that looks like MNIST's, or plain resizing for anything else (photos, colour,
/// dark on light, objects filling the frame as Fashion-MNIST's do).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Style {
    /// One light object on a dark field, scaled into the central box (MNIST, EMNIST).
    #[default]
    Centred,
    /// Anything else: the picture resized to the input, its aspect kept, padded.
    Plain,
}

/// What a model was trained on, as far as using it goes: the shape of its input, its classes
/// by name (the label is the index), how a picture is prepared for it. Recorded in runs,
/// sweeps, model files, checkpoints and exports; a model file without it is MNIST's.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct DataInfo {
    /// The shape of one image.
    pub shape: ImageShape,
    /// The class names, label order.
    pub classes: Vec<String>,
    /// How a new picture is prepared.
    #[serde(default)]
    pub style: Style,
}

impl DataInfo {
    /// MNIST's: 28 × 28 gray, the digits 0–9, centred.
    pub fn mnist() -> Self {
        Self {
            shape: ImageShape::MNIST,
            classes: (0..10).map(|d| d.to_string()).collect(),
            style: Style::Centred,
        }
    }

    /// How many classes.
    pub fn class_count(&self) -> usize {
        self.classes.len()
    }

    /// The name of class `label` (its number, past the names).
    pub fn name(&self, label: usize) -> String {
        self.classes
            .get(label)
            .cloned()
            .unwrap_or_else(|| label.to_string())
    }

    /// How `self` (what `whose` — "the model's", "the run's" — was trained on) differs
    /// from `given` (the data given now), in words, if it does.
    pub fn difference(&self, given: &DataInfo, whose: &str) -> Option<String> {
        if self.shape != given.shape {
            return Some(format!(
                "its images are {}, {whose} {}",
                given.shape, self.shape
            ));
        }
        if self.classes != given.classes {
            return Some(format!(
                "its classes are {}, {whose} {}",
                names(&given.classes),
                names(&self.classes)
            ));
        }
        None
    }
}

/// Up to eight class names, then how many more.
fn names(classes: &[String]) -> String {
    let shown: Vec<&str> = classes.iter().take(8).map(String::as_str).collect();
    match classes.len() {
        n if n > 8 => format!("{} ({} in all)", shown.join(", "), n),
        _ => shown.join(", "),
    }
}

/// Labelled images of one shape, as stored (one byte per pixel and channel).
///
/// Cheap to clone and to slice: a split is a window onto shared buffers, so cutting off the
/// validation images or limiting the test set copies nothing.
#[derive(Debug, Clone)]
pub struct Split {
    /// Image after image, each planar (channel, row, column), 0 = dark.
    images: Arc<Vec<u8>>,
    /// One class per image.
    labels: Arc<Vec<u8>>,
    /// The window: images `start..start + len` of the buffers.
    start: usize,
    len: usize,
    /// The shape of each image.
    pub shape: ImageShape,
}

impl Split {
    /// Builds a split, checking that there is one label per image of `shape` (the buffers are
    /// taken as they are, not copied).
    pub fn new(images: Vec<u8>, labels: Vec<u8>, shape: ImageShape) -> Result<Self, DataError> {
        if images.len() != labels.len() * shape.pixels() {
            return Err(DataError::Split(format!(
                "{} pixels do not make {} images of {}",
                images.len(),
                labels.len(),
                shape.pixels()
            )));
        }
        Ok(Self {
            len: labels.len(),
            start: 0,
            images: Arc::new(images),
            labels: Arc::new(labels),
            shape,
        })
    }

    /// Number of images.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when there are no images.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Every image's bytes, image after image.
    pub fn images(&self) -> &[u8] {
        let n = self.shape.pixels();
        &self.images[self.start * n..(self.start + self.len) * n]
    }

    /// Every image's class.
    pub fn labels(&self) -> &[u8] {
        &self.labels[self.start..self.start + self.len]
    }

    /// The pixels of image `i`.
    pub fn image(&self, i: usize) -> &[u8] {
        let n = self.shape.pixels();
        let at = self.start + i;
        &self.images[at * n..(at + 1) * n]
    }

    /// Images `range` as a split of the same buffers (nothing copied).
    pub fn slice(&self, range: std::ops::Range<usize>) -> Self {
        let end = range.end.min(self.len);
        let begin = range.start.min(end);
        Self {
            start: self.start + begin,
            len: end - begin,
            ..self.clone()
        }
    }

    /// The images at `indices`, in that order, as a new split (copied; a run of consecutive
    /// indices is a slice, and copies nothing).
    pub fn pick(&self, indices: &[usize]) -> Self {
        if let (Some(&first), Some(&last)) = (indices.first(), indices.last())
            && last + 1 == first + indices.len()
            && indices.windows(2).all(|w| w[1] == w[0] + 1)
        {
            return self.slice(first..last + 1);
        }
        if indices.is_empty() {
            return self.slice(0..0);
        }
        let n = self.shape.pixels();
        let mut images = Vec::with_capacity(indices.len() * n);
        for &i in indices {
            images.extend_from_slice(self.image(i));
        }
        let labels = indices.iter().map(|&i| self.labels()[i]).collect();
        Self {
            len: indices.len(),
            start: 0,
            images: Arc::new(images),
            labels: Arc::new(labels),
            shape: self.shape,
        }
    }

    /// The images in the order `order` gives (image `k` of the result is image `order[k]`;
    /// `order` a permutation of `0..len`). In place, one image at a time, when this split is
    /// the only user of its buffers; otherwise copied.
    pub fn reorder(mut self, order: &[usize]) -> Result<Self, DataError> {
        let n = self.len;
        let mut seen = vec![false; n];
        if order.len() != n
            || order
                .iter()
                .any(|&i| i >= n || std::mem::replace(&mut seen[i], true))
        {
            return Err(DataError::Split(format!("not an order of {n} images")));
        }
        let (size, start) = (self.shape.pixels(), self.start);
        let (Some(images), Some(labels)) = (
            Arc::get_mut(&mut self.images),
            Arc::get_mut(&mut self.labels),
        ) else {
            return Ok(self.pick(order));
        };
        // Each cycle of the permutation: its first image aside, the others moved up by one.
        let mut done = vec![false; n];
        let mut aside = vec![0u8; size];
        for first in 0..n {
            if done[first] || order[first] == first {
                continue;
            }
            let at = |i: usize| (start + i) * size..(start + i + 1) * size;
            aside.copy_from_slice(&images[at(first)]);
            let aside_label = labels[start + first];
            let mut to = first;
            loop {
                done[to] = true;
                let from = order[to];
                if from == first {
                    images[at(to)].copy_from_slice(&aside);
                    labels[start + to] = aside_label;
                    break;
                }
                images.copy_within(at(from), at(to).start);
                labels[start + to] = labels[start + from];
                to = from;
            }
        }
        Ok(self)
    }

    /// Splits off the last `valid_size` images as a validation set, Keras' `validation_split`
    /// way: returns `(first len - valid_size, last valid_size)`.
    pub fn split_last(&self, valid_size: usize) -> Result<(Self, Self), DataError> {
        if valid_size >= self.len() {
            return Err(DataError::Split(format!(
                "--valid-size {valid_size} leaves no training images out of {}",
                self.len()
            )));
        }
        let cut = self.len() - valid_size;
        Ok((self.slice(0..cut), self.slice(cut..self.len())))
    }

    /// The highest label, if any.
    pub fn max_label(&self) -> Option<u8> {
        self.labels().iter().copied().max()
    }
}

/// One labelled image as a source gives it: what burn-dataset's `Dataset` items are here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LabelledImage {
    /// The image's bytes in the source's shape (planar).
    pub pixels: Vec<u8>,
    /// Its class.
    pub label: u8,
}

/// Which kind of source `--data` names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, clap::ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DataFormat {
    /// MNIST-format IDX files (train-images-idx3-ubyte[.gz] and the other three)
    Idx,
    /// A folder of pictures, one sub-folder per class (train/, valid/, test/ as splits if there)
    Folder,
    /// A CSV: label and pixel columns (Kaggle's digit-recognizer layout), or path,label rows
    Csv,
}

/// What to read, and how: the data flags.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DataRequest {
    /// The file or directory.
    pub path: PathBuf,
    /// Its kind (`None`: told from what is there).
    pub format: Option<DataFormat>,
    /// Pictures resized to this height and width (aspect kept, padded); `None`: their own
    /// size, which all must share.
    pub image_size: Option<(usize, usize)>,
    /// Pictures as 1 (gray) or 3 (RGB) channels; `None`: what the pictures are.
    pub channels: Option<usize>,
    /// Skip (and count) pictures and rows that cannot be read instead of stopping.
    pub skip_bad: bool,
}

impl DataRequest {
    /// MNIST's IDX files in `dir`.
    pub fn idx(dir: &Path) -> Self {
        Self {
            path: dir.to_path_buf(),
            format: Some(DataFormat::Idx),
            image_size: None,
            channels: None,
            skip_bad: false,
        }
    }

    /// The kind of source: as asked, else told from the path (a directory with the IDX files
    /// or `train.csv`, a `.csv` file, else a folder of pictures).
    pub fn format(&self) -> DataFormat {
        if let Some(format) = self.format {
            return format;
        }
        let p = &self.path;
        if p.is_dir() && idx::present(p) {
            DataFormat::Idx
        } else if (p.is_dir() && p.join("train.csv").is_file())
            || p.extension().is_some_and(|e| e.eq_ignore_ascii_case("csv"))
        {
            DataFormat::Csv
        } else if p.is_dir() {
            DataFormat::Folder
        } else {
            // A missing path: the IDX reader names the files it looked for.
            DataFormat::Idx
        }
    }
}

/// How many images go to validation and test where the source does not split them itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SplitSizes {
    /// Validation images: for IDX and CSV the last N training images; for a folder without
    /// `valid/`, N drawn per class. `None`: [`splits::default_valid`] (MNIST's 5,000, or a
    /// tenth of fewer than 10,000 training images).
    pub valid: Option<usize>,
    /// Test images for a folder (or a single CSV) without its own test split, drawn per
    /// class (`None`: a tenth).
    pub test: Option<usize>,
}

/// The data, read: the splits and what it is.
#[derive(Debug, Clone)]
pub struct Data {
    /// Trained on.
    pub train: Split,
    /// Evaluated after every epoch (may be empty).
    pub valid: Split,
    /// Evaluated at the end.
    pub test: Split,
    /// Its identity.
    pub info: DataInfo,
    /// Pictures or rows skipped as unreadable (`--skip-bad`).
    pub skipped: usize,
    /// How many validation images were taken (the recipe records it).
    pub valid_size: usize,
}

/// What can go wrong while reading data. Every variant names the file or the flag involved.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    /// Neither `NAME.gz` nor `NAME` exists in the data directory.
    #[error(
        "{dir}: no {name}.gz or {name} (provision MNIST with scripts/fetch_mnist.py, or pass --data)"
    )]
    Missing {
        /// The data directory searched.
        dir: PathBuf,
        /// The file name looked for.
        name: String,
    },
    /// A file could not be read or decompressed (for a corrupt gzip stream, flate2's
    /// description of it).
    #[error(transparent)]
    File(#[from] FileError),
    /// The file's bytes are not a valid IDX file of the expected kind.
    #[error("{path}: {problem}")]
    Format {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        problem: IdxError,
    },
    /// Two files that belong together disagree.
    #[error("{images} holds {n_images} images but {labels} holds {n_labels} labels")]
    CountMismatch {
        /// The images file.
        images: PathBuf,
        /// The labels file.
        labels: PathBuf,
        /// Images in the images file.
        n_images: usize,
        /// Labels in the labels file.
        n_labels: usize,
    },
    /// A picture could not be read.
    #[error(transparent)]
    Picture(#[from] ImageError),
    /// Something about a source is wrong (a folder, a CSV row, the pictures' sizes).
    #[error("{path}: {problem}")]
    Source {
        /// The file or directory.
        path: PathBuf,
        /// What is wrong.
        problem: String,
    },
    /// The requested split does not fit the data.
    #[error("{0}")]
    Split(String),
}

/// `path`'s `problem`, as a [`DataError::Source`].
pub(crate) fn source_error(path: &Path, problem: impl Into<String>) -> DataError {
    DataError::Source {
        path: path.to_path_buf(),
        problem: problem.into(),
    }
}

/// Where `trainer` looks for data when `--data` and `TRAINER_DATA_DIR` are not given, and
/// where `scripts/fetch_mnist.py` puts MNIST: `$XDG_CACHE_HOME/trainer/mnist`, else
/// `~/.cache/trainer/mnist` (on Windows `%LOCALAPPDATA%\trainer\mnist`).
pub fn default_data_dir() -> PathBuf {
    user_cache().join("trainer").join("mnist")
}

/// The per-user cache directory: `$XDG_CACHE_HOME`, else `~/.cache`, else `%LOCALAPPDATA%`.
pub(crate) fn user_cache() -> PathBuf {
    let env = |k: &str| {
        std::env::var_os(k)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    env("XDG_CACHE_HOME")
        .or_else(|| env("HOME").map(|h| h.join(".cache")))
        .or_else(|| env("LOCALAPPDATA"))
        .unwrap_or_else(|| PathBuf::from("."))
}

/// Reads the data `request` names and splits it (`sizes` where the source does not split it
/// itself).
pub fn load(request: &DataRequest, sizes: SplitSizes) -> Result<Data, DataError> {
    match request.format() {
        DataFormat::Idx => idx::load(&request.path, sizes),
        DataFormat::Folder => folder::load(request, sizes),
        DataFormat::Csv => csv::load(request, sizes),
    }
}

/// Decodes every item of `source` into one split of `shape`, in parallel, each item written
/// straight into its place (memory: the decoded set, plus what the decoders hold at once). An
/// item that cannot be read stops it with its error, or with `skip_bad` is left out. Returns
/// the split and the indices of the items it holds.
pub fn decode_all<D>(
    source: &D,
    shape: ImageShape,
    skip_bad: bool,
) -> Result<(Split, Vec<usize>), DataError>
where
    D: Dataset<LabelledImage, DataError>,
{
    let mut decoding = Decoding::new(source.len(), shape);
    decoding.fill(0, source, skip_bad)?;
    decoding.finish()
}

/// A split being decoded part by part into its final buffer (a source read in chunks, such
/// as a CSV too large to hold as text, fills it chunk after chunk).
pub struct Decoding {
    shape: ImageShape,
    images: Vec<u8>,
    labels: Vec<u8>,
    read: Vec<bool>,
}

impl Decoding {
    /// Room for `n` items of `shape`.
    pub fn new(n: usize, shape: ImageShape) -> Self {
        Self {
            shape,
            images: vec![0u8; n * shape.pixels()],
            labels: vec![0u8; n],
            read: vec![false; n],
        }
    }

    /// Decodes `source`'s items in parallel into items `at..at + source.len()`: an item that
    /// cannot be read stops it with its error (its index `at` + i in the message of a shape
    /// mismatch), or with `skip_bad` is left out.
    pub fn fill<D>(&mut self, at: usize, source: &D, skip_bad: bool) -> Result<(), DataError>
    where
        D: Dataset<LabelledImage, DataError>,
    {
        let (size, shape) = (self.shape.pixels(), self.shape);
        let n = source.len();
        if at + n > self.labels.len() {
            return Err(DataError::Split(format!(
                "items {at}..{} past the {} decoded",
                at + n,
                self.labels.len()
            )));
        }
        self.images[at * size..(at + n) * size]
            .par_chunks_mut(size.max(1))
            .zip(self.labels[at..at + n].par_iter_mut())
            .zip(self.read[at..at + n].par_iter_mut())
            .enumerate()
            .try_for_each(|(i, ((pixels, label), ok))| match source.get(i) {
                Ok(item) if item.pixels.len() == size => {
                    pixels.copy_from_slice(&item.pixels);
                    *label = item.label;
                    *ok = true;
                    Ok(())
                }
                Ok(_) => Err(DataError::Split(format!(
                    "item {} is not of the shape {shape}",
                    at + i
                ))),
                Err(_) if skip_bad => Ok(()),
                Err(e) => Err(e),
            })
    }

    /// The split of the items read, and their indices.
    pub fn finish(self) -> Result<(Split, Vec<usize>), DataError> {
        let n = self.labels.len();
        let kept: Vec<usize> = (0..n).filter(|&i| self.read[i]).collect();
        let whole = Split::new(self.images, self.labels, self.shape)?;
        if kept.len() < n {
            return Ok((whole.pick(&kept), kept));
        }
        Ok((whole, kept))
    }
}

/// The most of its light a centred image may have outside the central box: MNIST's digits
/// have 3.4 % there, Fashion-MNIST's garments, which fill the frame, 24 %.
const CENTRED_MARGIN_LIGHT: f64 = 0.10;

/// Whether gray images of `split` look like MNIST's: a dark field (the mean of the border
/// pixels below a tenth of full brightness) with something light on it, scaled into the
/// central box as MNIST's digits are (20 of 28 pixels: less than [`CENTRED_MARGIN_LIGHT`] of
/// the light in the margin around it), over up to 1,000 images. Colour images never do.
pub fn looks_centred(split: &Split) -> bool {
    let shape = split.shape;
    if shape.channels != 1 || split.is_empty() {
        return false;
    }
    let (h, w) = (shape.height, shape.width);
    // MNIST's margin: 4 pixels of 28.
    let (my, mx) = ((h * 4).div_ceil(28), (w * 4).div_ceil(28));
    let (mut border, mut count, mut light, mut margin) = (0u64, 0u64, 0u64, 0u64);
    for i in (0..split.len()).step_by((split.len() / 1000).max(1)) {
        let image = split.image(i);
        for y in 0..h {
            for x in 0..w {
                let v = u64::from(image[y * w + x]);
                light += v;
                if y < my || y >= h - my || x < mx || x >= w - mx {
                    margin += v;
                }
                if y == 0 || y == h - 1 || x == 0 || x == w - 1 {
                    border += v;
                    count += 1;
                }
            }
        }
    }
    count > 0
        && border < count * 255 / 10
        && light > 0
        && (margin as f64) < CENTRED_MARGIN_LIGHT * light as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_takes_the_last_images_for_validation() {
        let labels: Vec<u8> = (0..10).collect();
        let images: Vec<u8> = (0..10u8).flat_map(|i| [i; 784]).collect();
        let split = Split::new(images, labels, ImageShape::MNIST).unwrap();
        let (train, valid) = split.split_last(3).unwrap();
        assert_eq!(train.labels(), &[0, 1, 2, 3, 4, 5, 6]);
        assert_eq!(valid.labels(), &[7, 8, 9]);
        assert_eq!(valid.image(0), &[7; 784][..]);
        assert_eq!(train.len() + valid.len(), split.len());
        assert!(split.split_last(10).is_err());
        assert_eq!(split.split_last(0).unwrap().1.len(), 0);
        let picked = split.pick(&[9, 0]);
        assert_eq!(picked.labels(), &[9, 0]);
        assert_eq!(picked.image(0), &[9; 784][..]);
        let run = valid.pick(&[1, 2]);
        assert_eq!(run.labels(), &[8, 9]);
        assert_eq!(run.image(1), &[9; 784][..]);
        assert_eq!(run.slice(1..5).len(), 1, "a slice stops at the end");
    }

    /// A reorder moves every image with its label, in place or (shared) copied alike.
    #[test]
    fn reorder_moves_images_with_their_labels() {
        let shape = ImageShape {
            channels: 1,
            height: 1,
            width: 2,
        };
        let make = || {
            let images: Vec<u8> = (0..6u8).flat_map(|i| [i, 100 + i]).collect();
            Split::new(images, (0..6).collect(), shape).unwrap()
        };
        let order = [3, 0, 1, 2, 5, 4];
        let moved = make().reorder(&order).unwrap();
        assert_eq!(moved.labels(), &[3, 0, 1, 2, 5, 4]);
        assert_eq!(moved.image(0), &[3, 103]);
        assert_eq!(moved.image(5), &[4, 104]);
        let shared = make();
        let kept = shared.clone();
        assert_eq!(shared.reorder(&order).unwrap().images(), moved.images());
        assert_eq!(
            kept.labels(),
            &[0, 1, 2, 3, 4, 5],
            "the other user's view is untouched"
        );
        let window = make().slice(2..5).reorder(&[2, 1, 0]).unwrap();
        assert_eq!(window.labels(), &[4, 3, 2]);
        assert!(make().reorder(&[0, 0, 1, 2, 3, 4]).is_err());
        assert!(make().reorder(&[0, 1]).is_err());
    }

    /// MNIST's digits sit in the central box; objects that fill the frame (Fashion-MNIST's
    /// garments), a light field, or colour do not.
    #[test]
    fn centred_data_is_told_from_the_rest() {
        let mnist = crate::test_support::mnist().train.slice(0..2000);
        assert!(looks_centred(&mnist));
        let shape = ImageShape::MNIST;
        // Light everywhere but a dark one-pixel border, as a garment on its black field.
        let inside = |p: usize| (1..27).contains(&(p / 28)) && (1..27).contains(&(p % 28));
        let frame_filling: Vec<u8> = (0..100)
            .flat_map(|_| (0..784).map(|p| if inside(p) { 200 } else { 0 }))
            .collect();
        let filled = Split::new(frame_filling, vec![0; 100], shape).unwrap();
        assert!(!looks_centred(&filled), "a garment filling the frame");
        let inverted: Vec<u8> = mnist.images().iter().map(|&p| 255 - p).collect();
        let light = Split::new(inverted, mnist.labels().to_vec(), shape).unwrap();
        assert!(!looks_centred(&light), "dark on light");
        let dark = Split::new(vec![0; 784], vec![0], shape).unwrap();
        assert!(!looks_centred(&dark), "nothing on it");
    }

    #[test]
    fn identities_differ_by_shape_then_classes() {
        let mnist = DataInfo::mnist();
        assert_eq!(mnist.difference(&DataInfo::mnist(), "the model's"), None);
        let colour = DataInfo {
            shape: ImageShape {
                channels: 3,
                height: 32,
                width: 32,
            },
            ..DataInfo::mnist()
        };
        assert_eq!(
            mnist.difference(&colour, "the model's").unwrap(),
            "its images are 32x32 RGB, the model's 28x28 gray"
        );
        let letters = DataInfo {
            classes: (b'a'..=b'z').map(|c| (c as char).to_string()).collect(),
            ..DataInfo::mnist()
        };
        assert_eq!(
            mnist.difference(&letters, "the model's").unwrap(),
            "its classes are a, b, c, d, e, f, g, h (26 in all), the model's 0, 1, 2, 3, 4, 5, 6, 7 (10 in all)"
        );
    }
}
