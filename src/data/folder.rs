//! A folder of pictures, one sub-folder per class (`DIR/<class>/*.png|jpg|…`, torchvision's
//! `ImageFolder` layout): class names from the folder names, in sorted order; `train/`,
//! `valid/` and `test/` sub-folders as the splits when present, otherwise validation and
//! test images drawn per class ([`super::splits`]).
//!
//! The listing is streamed (one directory at a time, each sorted by name so that runs see the
//! same order), pictures in nested folders belong to their class folder, and a folder reached
//! twice through symbolic links is refused. Pictures are decoded in parallel through
//! burn-dataset's `Dataset` trait into one resident split, and the decoded set is cached
//! ([`super::cache`]).

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use burn::data::dataset::Dataset;
use tracing::{info, warn};

use super::splits::{default_test, default_valid, stratified};
use super::{
    Data, DataError, DataInfo, DataRequest, ImageShape, LabelledImage, MAX_CLASSES, Split,
    SplitSizes, Style, cache, decode_all, looks_centred, source_error,
};
use crate::data::pictures;

/// The extensions of the pictures a class folder may hold (case aside).
pub const PICTURE_EXTENSIONS: [&str; 8] =
    ["png", "jpg", "jpeg", "gif", "bmp", "webp", "tif", "tiff"];

/// Whether `path` names a picture by its extension.
pub(crate) fn is_picture(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| PICTURE_EXTENSIONS.iter().any(|p| e.eq_ignore_ascii_case(p)))
}

/// Which split a listed picture belongs to, when the source says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    /// Training pictures (all of them, for a source without its own splits).
    Train = 0,
    /// `valid/`.
    Valid = 1,
    /// `test/`.
    Test = 2,
}

/// The pictures of a data set, listed with their classes: a burn-dataset `Dataset` whose
/// items are the pictures decoded to `shape`.
pub struct Pictures {
    /// Each picture, its class and its part.
    pub entries: Vec<(PathBuf, u8, Part)>,
    /// The input every picture becomes.
    pub shape: ImageShape,
    /// Resize to `shape` (`--image-size`), rather than require it.
    pub resize: bool,
}

impl Dataset<LabelledImage, DataError> for Pictures {
    fn get(&self, index: usize) -> Result<LabelledImage, DataError> {
        let (path, label, _) = &self.entries[index];
        Ok(LabelledImage {
            pixels: pictures::read_as(path, self.shape, self.resize)?,
            label: *label,
        })
    }

    fn len(&self) -> usize {
        self.entries.len()
    }
}

impl Pictures {
    /// The pictures of `entries` as `request` asks for them: `--image-size` and `--channels`
    /// where given, otherwise the first picture's size and colour.
    pub fn new(
        entries: Vec<(PathBuf, u8, Part)>,
        request: &DataRequest,
    ) -> Result<Self, DataError> {
        let Some((first, _, _)) = entries.first() else {
            return Err(source_error(&request.path, "no pictures"));
        };
        let (width, height, colour) = pictures::probe(first)?;
        let (height, width) = request
            .image_size
            .unwrap_or((height as usize, width as usize));
        let shape = ImageShape {
            channels: request.channels.unwrap_or(if colour { 3 } else { 1 }),
            height,
            width,
        };
        Ok(Self {
            entries,
            shape,
            resize: request.image_size.is_some(),
        })
    }
}

/// A decoded set of pictures (or rows): the images, each one's part, how many were skipped.
#[derive(Debug, Clone)]
pub struct Decoded {
    /// The images read, in listing order.
    pub split: Split,
    /// Each image's part ([`Part`] as a byte).
    pub parts: Vec<u8>,
    /// Pictures or rows that could not be read and were skipped (`--skip-bad`).
    pub skipped: usize,
    /// The class names (label order).
    pub classes: Vec<String>,
}

/// Decodes `pictures` of the classes `classes` (from the cache when it holds this very
/// listing), logging the rate.
pub fn decode(
    pictures: &Pictures,
    classes: &[String],
    request: &DataRequest,
) -> Result<Decoded, DataError> {
    let key = cache::Key::of_pictures(pictures, request)?;
    if let Some(hit) = cache::read(&key) {
        info!(pictures = hit.split.len(), cache = %key.path().display(), "decoded pictures, from the cache");
        return Ok(hit);
    }
    let start = std::time::Instant::now();
    let (split, kept) = decode_all(pictures, pictures.shape, request.skip_bad)?;
    let seconds = start.elapsed().as_secs_f64();
    info!(
        pictures = split.len(),
        seconds = crate::metrics::round(seconds, 2),
        pictures_per_s = crate::metrics::round(split.len() as f64 / seconds.max(1e-9), 0),
        "decoded pictures"
    );
    let skipped = pictures.len() - kept.len();
    if skipped > 0 {
        warn!(
            skipped,
            "pictures that could not be read were skipped (--skip-bad)"
        );
    }
    let decoded = Decoded {
        parts: kept.iter().map(|&i| pictures.entries[i].2 as u8).collect(),
        split,
        skipped,
        classes: classes.to_vec(),
    };
    cache::write(&key, &decoded);
    Ok(decoded)
}

/// Reads the folder `request` names (see the module's documentation).
pub fn load(request: &DataRequest, sizes: SplitSizes) -> Result<Data, DataError> {
    let root = &request.path;
    if !root.is_dir() {
        return Err(source_error(
            root,
            "not a folder of pictures (no such directory)",
        ));
    }
    let parts: Vec<(PathBuf, Part)> = if root.join("train").is_dir() {
        [
            ("train", Part::Train),
            ("valid", Part::Valid),
            ("test", Part::Test),
        ]
        .into_iter()
        .map(|(name, part)| (root.join(name), part))
        .filter(|(dir, _)| dir.is_dir())
        .collect()
    } else {
        vec![(root.clone(), Part::Train)]
    };
    let mut classes = class_folders(&parts[0].0)?;
    let mut entries = Vec::new();
    let mut skipped = 0;
    let mut seen = HashSet::new();
    for (dir, part) in &parts {
        let listing = Listing {
            classes: &classes,
            part: *part,
            skip_bad: request.skip_bad,
        };
        skipped += listing.list(dir, &mut entries, &mut seen)?;
    }
    skipped += drop_empty_classes(&parts[0].0, &mut classes, &mut entries, request.skip_bad)?;
    let pictures = Pictures::new(entries, request)?;
    let mut decoded = decode(&pictures, &classes, request)?;
    decoded.skipped += skipped;
    into_data(decoded, sizes)
}

/// The class folders of `dir`, sorted by name (hidden ones left out): two at least, at most
/// [`MAX_CLASSES`].
fn class_folders(dir: &Path) -> Result<Vec<String>, DataError> {
    let mut names = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(crate::files::io_err(dir))? {
        let entry = entry.map_err(crate::files::io_err(dir))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') {
            continue;
        }
        // Through symbolic links: a linked class folder is a class folder.
        if entry.path().is_dir() {
            names.push(name);
        }
    }
    names.sort();
    match names.len() {
        0 => Err(source_error(
            dir,
            "no class folders (expected DIR/<class>/<picture>) nor MNIST's IDX files (scripts/fetch_mnist.py provisions them)",
        )),
        1 => Err(source_error(
            dir,
            format!(
                "one class folder only ({}): a classifier needs two",
                names[0]
            ),
        )),
        n if n > MAX_CLASSES => Err(source_error(
            dir,
            format!("{n} class folders, at most {MAX_CLASSES}"),
        )),
        _ => Ok(names),
    }
}

/// How one split's folder is listed.
struct Listing<'a> {
    classes: &'a [String],
    part: Part,
    skip_bad: bool,
}

impl Listing<'_> {
    /// Lists the pictures of `dir`'s class folders into `entries`; returns how many files
    /// were skipped as not pictures.
    fn list(
        &self,
        dir: &Path,
        entries: &mut Vec<(PathBuf, u8, Part)>,
        seen: &mut HashSet<PathBuf>,
    ) -> Result<usize, DataError> {
        let mut skipped = 0;
        for (label, class) in self.classes.iter().enumerate() {
            let folder = dir.join(class);
            if !folder.is_dir() {
                // A class without pictures in valid/ or test/ is fine.
                continue;
            }
            skipped += self.walk(&folder, label as u8, entries, seen)?;
        }
        // A class folder in valid/ or test/ that training does not have.
        if self.part != Part::Train {
            for name in class_folders(dir).unwrap_or_default() {
                if !self.classes.contains(&name) {
                    return Err(source_error(
                        &dir.join(&name),
                        "a class the training folder does not have",
                    ));
                }
            }
        }
        Ok(skipped)
    }

    /// The pictures under `folder` (nested folders included), sorted by name at each level.
    fn walk(
        &self,
        folder: &Path,
        label: u8,
        entries: &mut Vec<(PathBuf, u8, Part)>,
        seen: &mut HashSet<PathBuf>,
    ) -> Result<usize, DataError> {
        let real = folder
            .canonicalize()
            .map_err(crate::files::io_err(folder))?;
        if !seen.insert(real) {
            return Err(source_error(
                folder,
                "reached twice through symbolic links (a loop, or a folder linked into two places)",
            ));
        }
        let mut names: Vec<PathBuf> = Vec::new();
        for entry in std::fs::read_dir(folder).map_err(crate::files::io_err(folder))? {
            let entry = entry.map_err(crate::files::io_err(folder))?;
            if !entry.file_name().to_string_lossy().starts_with('.') {
                names.push(entry.path());
            }
        }
        names.sort();
        let mut skipped = 0;
        for path in names {
            let meta = std::fs::metadata(&path).map_err(crate::files::io_err(&path))?;
            if meta.is_dir() {
                skipped += self.walk(&path, label, entries, seen)?;
            } else if is_picture(&path) {
                entries.push((path, label, self.part));
            } else if self.skip_bad {
                skipped += 1;
            } else {
                return Err(source_error(
                    &path,
                    format!(
                        "not a picture (class folders hold {} files; --skip-bad skips others)",
                        PICTURE_EXTENSIONS.join(", ")
                    ),
                ));
            }
        }
        Ok(skipped)
    }
}

/// A class folder without training pictures is an error, or with `skip_bad` the class is
/// left out (the others renumbered); returns how many were left out.
fn drop_empty_classes(
    dir: &Path,
    classes: &mut Vec<String>,
    entries: &mut [(PathBuf, u8, Part)],
    skip_bad: bool,
) -> Result<usize, DataError> {
    let mut count = vec![0usize; classes.len()];
    for (_, label, part) in entries.iter() {
        if *part == Part::Train {
            count[usize::from(*label)] += 1;
        }
    }
    let Some(empty) = count.iter().position(|&c| c == 0) else {
        return Ok(0);
    };
    if !skip_bad {
        return Err(source_error(
            &dir.join(&classes[empty]),
            "a class folder with no pictures",
        ));
    }
    let kept: Vec<usize> = (0..classes.len()).filter(|&c| count[c] > 0).collect();
    if kept.len() < 2 {
        return Err(source_error(dir, "fewer than two classes have pictures"));
    }
    let mut renumber = vec![0u8; classes.len()];
    for (new, &old) in kept.iter().enumerate() {
        renumber[old] = new as u8;
    }
    for (_, label, _) in entries.iter_mut() {
        *label = renumber[usize::from(*label)];
    }
    let dropped = classes.len() - kept.len();
    warn!(
        dropped,
        "class folders without pictures were left out (--skip-bad)"
    );
    *classes = kept.into_iter().map(|c| classes[c].clone()).collect();
    Ok(dropped)
}

/// The data of a decoded listing: its parts as the splits, and where the source has no
/// validation or test part, `sizes` drawn per class.
pub(crate) fn into_data(decoded: Decoded, sizes: SplitSizes) -> Result<Data, DataError> {
    let classes = decoded.classes.clone();
    let all = decoded.split;
    let of = |part: Part| -> Vec<usize> {
        (0..all.len())
            .filter(|&i| decoded.parts[i] == part as u8)
            .collect()
    };
    let (mut train, mut valid, mut test) = (of(Part::Train), of(Part::Valid), of(Part::Test));
    // Draws of images (positions in `from`) per class, by their labels alone.
    let draw = |from: &[usize], n: usize, flag: &str| -> Result<_, DataError> {
        let labels: Vec<u8> = from.iter().map(|&i| all.labels()[i]).collect();
        let (rest, drawn) = stratified(&labels, n, flag)?;
        let at = |positions: Vec<usize>| positions.iter().map(|&p| from[p]).collect::<Vec<_>>();
        Ok((at(rest), at(drawn)))
    };
    if test.is_empty() {
        let n = sizes.test.unwrap_or_else(|| default_test(train.len()));
        (train, test) = draw(&train, n, "--test-size")?;
    }
    if valid.is_empty() {
        let n = sizes.valid.unwrap_or_else(|| default_valid(train.len()));
        (train, valid) = draw(&train, n, "--valid-size")?;
    }
    let valid_size = valid.len();
    // One buffer laid out train, validation, test (in place: no second copy of the set); each
    // split a window onto it.
    let (a, b) = (train.len(), train.len() + valid.len());
    let all = all.reorder(&[train, valid, test].concat())?;
    let (train, valid, test) = (all.slice(0..a), all.slice(a..b), all.slice(b..all.len()));
    let style = if looks_centred(&train) {
        Style::Centred
    } else {
        Style::Plain
    };
    Ok(Data {
        info: DataInfo {
            shape: train.shape,
            classes,
            style,
        },
        train,
        valid,
        test,
        skipped: decoded.skipped,
        valid_size,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn png(path: &Path, w: u32, h: u32, level: u8, colour: bool) {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        if colour {
            image::RgbImage::from_fn(w, h, |x, _| image::Rgb([level, x as u8, 255 - level]))
                .save(path)
                .unwrap();
        } else {
            image::GrayImage::from_fn(w, h, |x, y| {
                image::Luma([level.wrapping_add((x + y) as u8)])
            })
            .save(path)
            .unwrap();
        }
    }

    fn request(path: &Path) -> DataRequest {
        DataRequest {
            path: path.to_path_buf(),
            format: None,
            image_size: None,
            channels: None,
            skip_bad: false,
        }
    }

    /// A folder with train/ and test/ splits: classes from the training folders' sorted
    /// names, each picture in its class and part, planar bytes as decoded, cached.
    #[test]
    fn a_folder_splits_by_its_sub_folders_and_names_its_classes() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("pics");
        for (part, n) in [("train", 6), ("test", 2)] {
            for (c, class) in ["zebra", "ant"].iter().enumerate() {
                for i in 0..n {
                    png(
                        &root.join(part).join(class).join(format!("{i}.png")),
                        5,
                        4,
                        (10 * c + i) as u8,
                        false,
                    );
                }
            }
        }
        let sizes = SplitSizes {
            valid: Some(2),
            test: None,
        };
        let req = request(&root);
        assert_eq!(req.format(), super::super::DataFormat::Folder);
        let data = load(&req, sizes).unwrap();
        assert_eq!(data.info.classes, ["ant", "zebra"]);
        assert_eq!(
            data.info.shape,
            ImageShape {
                channels: 1,
                height: 4,
                width: 5
            }
        );
        assert_eq!(
            (data.train.len(), data.valid.len(), data.test.len()),
            (10, 2, 4)
        );
        // Each class gives one validation picture.
        let mut valid = data.valid.labels().to_vec();
        valid.sort();
        assert_eq!(valid, [0, 1]);
        // The test pictures in listing order: ant's then zebra's, each by file name.
        assert_eq!(data.test.labels(), &[0, 0, 1, 1]);
        assert_eq!(data.test.image(2)[0], 0, "zebra/0.png's first pixel");
        assert_eq!(data.test.image(1)[0], 11, "ant/1.png's first pixel");
    }

    /// Colour pictures give three planes; `--channels 1` reads them gray; `--image-size`
    /// fits pictures of other sizes; without it they are refused, naming the picture.
    #[test]
    fn colour_sizes_and_channels_follow_the_flags() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("pics");
        for class in ["a", "b"] {
            for i in 0..5 {
                png(&root.join(class).join(format!("{i}.png")), 8, 8, 100, true);
            }
        }
        let sizes = SplitSizes {
            valid: Some(2),
            test: Some(2),
        };
        let data = load(&request(&root), sizes).unwrap();
        assert_eq!(
            data.info.shape,
            ImageShape {
                channels: 3,
                height: 8,
                width: 8
            }
        );
        let image = data.train.image(0);
        assert_eq!(
            (image[0], image[64 + 3], image[128]),
            (100, 3, 155),
            "planar R, G, B"
        );
        assert_eq!(data.info.style, Style::Plain, "colour is never centred");
        let gray = load(
            &DataRequest {
                channels: Some(1),
                ..request(&root)
            },
            sizes,
        )
        .unwrap();
        assert_eq!(gray.info.shape.channels, 1);
        png(&root.join("a/odd.png"), 10, 6, 50, true);
        let err = load(&request(&root), sizes).unwrap_err().to_string();
        assert!(
            err.contains("odd.png: 10 × 6 pixels, where the first picture is 8 × 8"),
            "{err}"
        );
        let fitted = load(
            &DataRequest {
                image_size: Some((8, 8)),
                ..request(&root)
            },
            sizes,
        )
        .unwrap();
        assert_eq!(
            fitted.train.len() + fitted.valid.len() + fitted.test.len(),
            11
        );
    }
}
