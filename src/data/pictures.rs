//! Reading pictures, within limits: a data set's pictures as the network's input (gray or RGB,
//! their own size or resized to fit, padded), and a user's picture prepared as the model's data
//! was — for data like MNIST's (centred): grayscale, the object light on dark (inverted when
//! the background is light), its box scaled to fit 20/28 of the field, placed with its centre
//! of mass at the centre; for other data (plain): resized to the input, as the data set's
//! pictures were.

use std::fs::File;
use std::io::{BufRead, BufReader, Seek};
use std::path::{Path, PathBuf};

use image::imageops::FilterType;
use image::{DynamicImage, GrayImage, ImageDecoder, ImageReader, Limits, Luma};

use super::{DataInfo, ImageShape, Style};
use crate::files::{self, FileError};

/// MNIST digits fit a 20 × 20 box inside the 28 × 28 image.
const DIGIT_BOX: u32 = 20;
/// MNIST's field, which [`DIGIT_BOX`] is a part of.
const MNIST_FIELD: u32 = 28;

/// Ink at or above this level (of 255, after stretching the strongest ink to 255) belongs to
/// the digit's box; fainter is paper noise. MNIST's own anti-aliased edges go down to 1/255,
/// so the box must take in faint pixels, or a re-read MNIST digit comes out larger than it
/// was: at 5 % an MNIST digit comes back almost unchanged (tests/preprocess.rs), at 20 % it
/// did not, and the article's model lost 4 points of accuracy on re-read test digits.
const INK_THRESHOLD: u8 = 13;

/// Why a file could not be read as a digit.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    /// The file could not be read.
    #[error(transparent)]
    File(#[from] FileError),
    /// The file is empty.
    #[error("{0}: empty file")]
    Empty(PathBuf),
    /// The bytes are not an image in a known format, or are damaged.
    #[error("{path}: not a readable image ({why})")]
    Decode {
        /// The file.
        path: PathBuf,
        /// The decoder's explanation.
        why: String,
    },
    /// The image is uniform: there is no digit in it.
    #[error("{0}: blank image, no digit found")]
    Blank(PathBuf),
    /// The image is zero pixels wide or tall.
    #[error("{0}: the image has no pixels")]
    NoPixels(PathBuf),
    /// A data set's picture is not the size of the others (and no `--image-size` was given).
    #[error(
        "{path}: {width} × {height} pixels, where the first picture is {expected_width} × {expected_height} (give --image-size H,W to resize them all)"
    )]
    OtherSize {
        /// The file.
        path: PathBuf,
        /// Its width.
        width: u32,
        /// Its height.
        height: u32,
        /// The first picture's width.
        expected_width: u32,
        /// The first picture's height.
        expected_height: u32,
    },
    /// The image has more pixels than `trainer` decodes (a decompression bomb, or a photo far
    /// larger than a digit needs).
    #[error("{path}: {width} × {height} pixels, past the limit of {MAX_PICTURE_PIXELS} pixels")]
    TooLarge {
        /// The file.
        path: PathBuf,
        /// Its width in pixels.
        width: u32,
        /// Its height in pixels.
        height: u32,
    },
}

impl ImageError {
    /// The file the error is about.
    pub fn path(&self) -> &Path {
        match self {
            Self::File(e) => e.path(),
            Self::Decode { path, .. }
            | Self::TooLarge { path, .. }
            | Self::OtherSize { path, .. } => path,
            Self::Empty(path) | Self::Blank(path) | Self::NoPixels(path) => path,
        }
    }
}

/// The most pixels a picture may have: 2^25, about 33.5 megapixels (an 8K frame, 7680 × 4320,
/// fits). Past it a picture is refused from its header, before anything is decoded, so a small
/// file that unpacks to gigapixels (a decompression bomb) costs nothing.
pub const MAX_PICTURE_PIXELS: u64 = 1 << 25;

/// The decoder's own allocation limit: the largest picture at 16 bits in four channels.
const MAX_DECODE_BYTES: u64 = MAX_PICTURE_PIXELS * 8;

/// A picture opened for decoding: its header read and checked, nothing decoded yet.
struct Opened {
    decoder: Box<dyn ImageDecoder>,
    width: u32,
    height: u32,
}

/// Opens the picture at `path` (any common format, told by content, not by name): streamed,
/// never read whole, opened once; its size checked against [`MAX_PICTURE_PIXELS`] from its
/// header before anything is decoded, and the decoder's allocations capped.
fn open(path: &Path) -> Result<Opened, ImageError> {
    let io = |source| ImageError::File(files::io_err(path)(source));
    let file = File::open(path).map_err(io)?;
    let len = file.metadata().map_err(io)?.len();
    open_from(BufReader::new(file), len, path)
}

/// Opens a picture read from `reader` (`len` bytes), as [`open`] does; `path` names it in
/// errors.
fn open_from<R: BufRead + Seek + 'static>(
    reader: R,
    len: u64,
    path: &Path,
) -> Result<Opened, ImageError> {
    if len == 0 {
        return Err(ImageError::Empty(path.to_path_buf()));
    }
    let io = |source| ImageError::File(files::io_err(path)(source));
    let mut reader = ImageReader::new(reader).with_guessed_format().map_err(io)?;
    let mut limits = Limits::default();
    limits.max_alloc = Some(MAX_DECODE_BYTES);
    reader.limits(limits);
    let decoder = reader.into_decoder().map_err(|e| decode_error(path, e))?;
    let (width, height) = decoder.dimensions();
    if width == 0 || height == 0 {
        return Err(ImageError::NoPixels(path.to_path_buf()));
    }
    if u64::from(width) * u64::from(height) > MAX_PICTURE_PIXELS {
        return Err(ImageError::TooLarge {
            path: path.to_path_buf(),
            width,
            height,
        });
    }
    Ok(Opened {
        decoder: Box::new(decoder),
        width,
        height,
    })
}

fn decode_error(path: &Path, e: image::ImageError) -> ImageError {
    ImageError::Decode {
        path: path.to_path_buf(),
        why: e.to_string(),
    }
}

impl Opened {
    fn decode(self, path: &Path) -> Result<DynamicImage, ImageError> {
        DynamicImage::from_decoder(self.decoder).map_err(|e| decode_error(path, e))
    }
}

/// A picture's width, height and whether it is in colour, from its header alone (checked
/// as [`open`] checks it).
pub fn probe(path: &Path) -> Result<(u32, u32, bool), ImageError> {
    let opened = open(path)?;
    let colour = opened.decoder.color_type().has_color();
    Ok((opened.width, opened.height, colour))
}

/// Reads a data set's picture as the input of `shape`: gray (luma) or RGB (alpha dropped),
/// planar bytes. With `resize` it is scaled to fit `shape` keeping its aspect and centred on
/// black; without, it must already be `shape`'s size.
pub fn read_as(path: &Path, shape: ImageShape, resize: bool) -> Result<Vec<u8>, ImageError> {
    fitted(open(path)?, path, shape, resize)
}

/// An opened picture as the input of `shape` (see [`read_as`]).
fn fitted(
    opened: Opened,
    path: &Path,
    shape: ImageShape,
    resize: bool,
) -> Result<Vec<u8>, ImageError> {
    let (w, h) = (shape.width as u32, shape.height as u32);
    if !resize && (opened.width, opened.height) != (w, h) {
        return Err(ImageError::OtherSize {
            path: path.to_path_buf(),
            width: opened.width,
            height: opened.height,
            expected_width: w,
            expected_height: h,
        });
    }
    let image = opened.decode(path)?;
    Ok(planar(&fit(image, w, h), shape.channels))
}

/// `image` scaled to fit `w` × `h` keeping its aspect, centred on black (itself when it is
/// that size).
fn fit(image: DynamicImage, w: u32, h: u32) -> DynamicImage {
    if image.width() == w && image.height() == h {
        return image;
    }
    let scale = (w as f32 / image.width() as f32).min(h as f32 / image.height() as f32);
    let nw = ((image.width() as f32 * scale).round() as u32).clamp(1, w);
    let nh = ((image.height() as f32 * scale).round() as u32).clamp(1, h);
    let small = image.resize_exact(nw, nh, FilterType::Triangle).to_rgb8();
    let mut field = image::RgbImage::new(w, h);
    image::imageops::overlay(
        &mut field,
        &small,
        i64::from((w - nw) / 2),
        i64::from((h - nh) / 2),
    );
    DynamicImage::ImageRgb8(field)
}

/// The picture's bytes, planar: one plane (luma) or three (R, G, B).
fn planar(image: &DynamicImage, channels: usize) -> Vec<u8> {
    if channels == 1 {
        return image.to_luma8().into_raw();
    }
    let rgb = image.to_rgb8();
    let plane = (rgb.width() * rgb.height()) as usize;
    let mut out = vec![0u8; 3 * plane];
    for (i, p) in rgb.pixels().enumerate() {
        for c in 0..3 {
            out[c * plane + i] = p.0[c];
        }
    }
    out
}

/// Reads a user's picture of any common format and prepares it as `data`'s pictures were:
/// MNIST's way for centred data ([`mnist_like`]), fitted to the input for plain data.
/// Returns the network's input, pixels in [0, 1].
pub fn load_for(path: &Path, data: &DataInfo) -> Result<Vec<f32>, ImageError> {
    prepare(open(path)?, path, data)
}

/// A picture sent as bytes (a page's canvas, an upload), prepared as [`load_for`] prepares
/// a file; `name` stands for it in errors.
pub fn prepare_bytes(bytes: &[u8], name: &Path, data: &DataInfo) -> Result<Vec<f32>, ImageError> {
    let reader = std::io::Cursor::new(bytes.to_vec());
    prepare(open_from(reader, bytes.len() as u64, name)?, name, data)
}

/// An opened picture prepared as `data`'s pictures were.
fn prepare(opened: Opened, path: &Path, data: &DataInfo) -> Result<Vec<f32>, ImageError> {
    let shape = data.shape;
    if data.style == Style::Plain {
        let bytes = fitted(opened, path, shape, true)?;
        return Ok(bytes.iter().map(|&b| f32::from(b) / 255.0).collect());
    }
    let decoded = opened.decode(path)?;
    // Transparent areas count as paper: composite over white before going gray.
    let rgba = decoded.to_rgba8();
    let gray = GrayImage::from_fn(rgba.width(), rgba.height(), |x, y| {
        let [r, g, b, a] = rgba.get_pixel(x, y).0;
        let luma = 0.299 * f32::from(r) + 0.587 * f32::from(g) + 0.114 * f32::from(b);
        let alpha = f32::from(a) / 255.0;
        Luma([(luma * alpha + 255.0 * (1.0 - alpha)).round() as u8])
    });
    let field = mnist_like(&gray, shape.height, shape.width)
        .ok_or_else(|| ImageError::Blank(path.to_path_buf()))?;
    // A centred model of colour input takes the gray field in each channel.
    Ok(field.repeat(shape.channels))
}

/// Preprocesses a grayscale picture as MNIST's were, into a field of `height` × `width`
/// (MNIST's 28 × 28, its box 20 × 20: the box is 5/7 of the field's shorter side); `None`
/// when it holds no digit (an image without pixels included).
pub fn mnist_like(gray: &GrayImage, height: usize, width: usize) -> Option<Vec<f32>> {
    let (w, h) = gray.dimensions();
    if w == 0 || h == 0 {
        return None;
    }
    // The background is what the border mostly is; a light one means dark ink: invert.
    let mut border: Vec<u8> = (0..w)
        .flat_map(|x| [gray.get_pixel(x, 0)[0], gray.get_pixel(x, h - 1)[0]])
        .chain((0..h).flat_map(|y| [gray.get_pixel(0, y)[0], gray.get_pixel(w - 1, y)[0]]))
        .collect();
    border.sort_unstable();
    let background = border[border.len() / 2];
    let invert = background > 127;
    let ink = |v: u8| -> f32 {
        let v = if invert { 255 - v } else { v };
        let bg = if invert { 255 - background } else { background };
        f32::from(v.saturating_sub(bg))
    };
    let peak = gray.pixels().map(|p| ink(p[0])).fold(0.0, f32::max);
    if peak < 1.0 {
        return None;
    }
    // Ink from the background level up to full white, as in MNIST (max 255).
    let strength = GrayImage::from_fn(w, h, |x, y| {
        Luma([(ink(gray.get_pixel(x, y)[0]) * 255.0 / peak).round() as u8])
    });
    // The digit's bounding box.
    let on = |x: u32, y: u32| strength.get_pixel(x, y)[0] >= INK_THRESHOLD;
    let xs: Vec<u32> = (0..w).filter(|&x| (0..h).any(|y| on(x, y))).collect();
    let ys: Vec<u32> = (0..h).filter(|&y| (0..w).any(|x| on(x, y))).collect();
    let (x0, x1) = (*xs.first()?, *xs.last()?);
    let (y0, y1) = (*ys.first()?, *ys.last()?);
    let crop = image::imageops::crop_imm(&strength, x0, y0, x1 - x0 + 1, y1 - y0 + 1).to_image();
    // Longer side to the box (20 pixels of MNIST's 28), aspect kept.
    let digit_box = ((height.min(width) as u32 * DIGIT_BOX) / MNIST_FIELD).max(1);
    let (cw, ch) = crop.dimensions();
    let scale = digit_box as f32 / cw.max(ch) as f32;
    let nw = ((cw as f32 * scale).round() as u32).clamp(1, digit_box);
    let nh = ((ch as f32 * scale).round() as u32).clamp(1, digit_box);
    let small = image::imageops::resize(&crop, nw, nh, FilterType::Triangle);
    // Centre of mass of the small digit, placed at the field's centre (within bounds).
    let (mut mass, mut mx, mut my) = (0f32, 0f32, 0f32);
    for (x, y, p) in small.enumerate_pixels() {
        let v = f32::from(p[0]);
        mass += v;
        mx += v * x as f32;
        my += v * y as f32;
    }
    if mass == 0.0 {
        return None;
    }
    // MNIST's centres of mass sit at pixel index 14 (13.5 to 14.5 over the test set), not at
    // the geometric centre 13.5: match the data the model was trained on.
    let place = |com: f32, len: u32, side: usize| -> i64 {
        let offset = (side as f32 / 2.0 - com / mass).round() as i64;
        offset.clamp(0, side as i64 - i64::from(len))
    };
    let (ox, oy) = (place(mx, nw, width), place(my, nh, height));
    let mut field = vec![0f32; height * width];
    for (x, y, p) in small.enumerate_pixels() {
        let (fx, fy) = (ox as usize + x as usize, oy as usize + y as usize);
        field[fy * width + fx] = f32::from(p[0]) / 255.0;
    }
    Some(field)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A picture prepared for a model of MNIST.
    fn load_digit_for_mnist(path: &Path) -> Result<Vec<f32>, ImageError> {
        load_for(path, &DataInfo::mnist())
    }

    /// A light bar on a dark field, like an MNIST "1" drawn big and off-centre.
    fn bar(w: u32, h: u32, light_on_dark: bool) -> GrayImage {
        GrayImage::from_fn(w, h, |x, y| {
            let ink = (10..14).contains(&x) && (5..45).contains(&y);
            Luma([if ink == light_on_dark { 230 } else { 20 }])
        })
    }

    fn center_of_mass(field: &[f32]) -> (f32, f32) {
        let (mut m, mut x, mut y) = (0.0, 0.0, 0.0);
        for (i, v) in field.iter().enumerate() {
            m += v;
            x += v * (i % 28) as f32;
            y += v * (i / 28) as f32;
        }
        (x / m, y / m)
    }

    #[test]
    fn digit_is_scaled_into_the_box_and_centred_by_mass() {
        let field = mnist_like(&bar(60, 50, true), 28, 28).unwrap();
        assert_eq!(field.len(), 784);
        let rows: Vec<usize> = (0..28)
            .filter(|r| field[r * 28..(r + 1) * 28].iter().any(|&v| v > 0.2))
            .collect();
        assert_eq!(rows.len(), 20, "the 40-pixel-tall bar becomes 20 rows");
        let (cx, cy) = center_of_mass(&field);
        assert!(
            (cx - 13.5).abs() <= 1.0 && (cy - 13.5).abs() <= 1.0,
            "({cx}, {cy})"
        );
        assert!(field.iter().all(|v| (0.0..=1.0).contains(v)));
        assert!(field.iter().any(|&v| v > 0.99), "ink reaches full strength");
    }

    #[test]
    fn dark_on_light_is_inverted_to_the_same_digit() {
        let a = mnist_like(&bar(60, 50, true), 28, 28).unwrap();
        let b = mnist_like(&bar(60, 50, false), 28, 28).unwrap();
        let diff: f32 = a.iter().zip(&b).map(|(x, y)| (x - y).abs()).sum();
        assert!(diff < 1e-3, "{diff}");
    }

    #[test]
    fn blank_and_bad_files_are_errors() {
        assert!(mnist_like(&GrayImage::from_pixel(28, 28, Luma([255])), 28, 28).is_none());
        let dir = tempfile::tempdir().unwrap();
        let empty = dir.path().join("empty.png");
        std::fs::write(&empty, b"").unwrap();
        assert!(matches!(
            load_digit_for_mnist(&empty),
            Err(ImageError::Empty(_))
        ));
        let text = dir.path().join("notes.png");
        std::fs::write(&text, b"not an image at all").unwrap();
        let err = load_digit_for_mnist(&text).unwrap_err().to_string();
        assert!(
            err.contains("notes.png") && err.contains("not a readable image"),
            "{err}"
        );
        assert!(matches!(
            load_digit_for_mnist(&dir.path().join("missing.png")),
            Err(ImageError::File(FileError::Io { .. }))
        ));
    }

    /// A PNG file of just a header (signature, IHDR, an empty IDAT, IEND) claiming `width` × `height`.
    fn png_header(width: u32, height: u32) -> Vec<u8> {
        let chunk = |kind: &[u8], data: &[u8]| {
            let mut c = (data.len() as u32).to_be_bytes().to_vec();
            let mut body = kind.to_vec();
            body.extend_from_slice(data);
            c.extend_from_slice(&body);
            c.extend_from_slice(&crc32fast::hash(&body).to_be_bytes());
            c
        };
        let mut ihdr = width.to_be_bytes().to_vec();
        ihdr.extend_from_slice(&height.to_be_bytes());
        ihdr.extend_from_slice(&[8, 0, 0, 0, 0]);
        let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
        png.extend(chunk(b"IHDR", &ihdr));
        // An empty zlib stream: the pixels are missing, the header is whole.
        png.extend(chunk(b"IDAT", &[0x78, 0x9c, 0x03, 0, 0, 0, 0, 1]));
        png.extend(chunk(b"IEND", &[]));
        png
    }

    /// A file that claims gigapixels is refused from its header, at once; one without pixels
    /// and one of a single pixel get their own clear errors.
    #[test]
    fn bombs_empty_and_single_pixel_pictures_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let bomb = dir.path().join("bomb.png");
        std::fs::write(&bomb, png_header(100_000, 100_000)).unwrap();
        let err = load_digit_for_mnist(&bomb).unwrap_err();
        assert!(matches!(err, ImageError::TooLarge { .. }), "{err}");
        assert!(
            err.to_string().contains("bomb.png: 100000 × 100000 pixels"),
            "{err}"
        );
        let zero = dir.path().join("zero.png");
        std::fs::write(&zero, png_header(0, 5)).unwrap();
        let err = load_digit_for_mnist(&zero).unwrap_err();
        assert!(
            err.to_string().starts_with(&zero.display().to_string()),
            "{err}"
        );
        assert!(mnist_like(&GrayImage::new(0, 5), 28, 28).is_none());
        assert!(mnist_like(&GrayImage::new(5, 0), 28, 28).is_none());
        let one = dir.path().join("one.png");
        GrayImage::from_pixel(1, 1, Luma([200])).save(&one).unwrap();
        assert!(matches!(
            load_digit_for_mnist(&one),
            Err(ImageError::Blank(_))
        ));
    }

    proptest::proptest! {
        /// Random bytes under a picture's name give an error naming the file, never a panic.
        #[test]
        fn random_bytes_are_an_error_naming_the_file(
            bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..300),
            png in proptest::prelude::any::<bool>(),
        ) {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("noise.png");
            let mut data = if png { png_header(3, 3) } else { vec![] };
            data.extend_from_slice(&bytes);
            std::fs::write(&path, &data).unwrap();
            if let Err(e) = load_digit_for_mnist(&path) {
                proptest::prop_assert_eq!(e.path(), path.as_path());
                proptest::prop_assert!(e.to_string().contains("noise.png"));
            }
        }

        /// Any small picture, of any shape down to one pixel, gives 784 pixels in [0, 1] or
        /// "no digit", never a panic.
        #[test]
        fn any_small_picture_is_a_digit_or_blank(
            width in 1u32..9,
            height in 1u32..9,
            seed in proptest::prelude::any::<u64>(),
        ) {
            let mut state = seed;
            let picture = GrayImage::from_fn(width, height, |_, _| {
                state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                Luma([(state >> 56) as u8])
            });
            if let Some(field) = mnist_like(&picture, 28, 28) {
                proptest::prop_assert_eq!(field.len(), 784);
                proptest::prop_assert!(field.iter().all(|v| (0.0..=1.0).contains(v)));
            }
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("small.png");
            picture.save(&path).unwrap();
            match load_digit_for_mnist(&path) {
                Ok(field) => proptest::prop_assert_eq!(field.len(), 784),
                Err(e) => proptest::prop_assert!(matches!(e, ImageError::Blank(_)), "{}", e),
            }
        }
    }

    /// `predict` prepares a picture as MNIST's were made; an MNIST digit must come back as it was,
    /// or the model sees pictures unlike its training data (the centre-of-mass convention and the
    /// box's ink threshold both moved digits by a pixel before this test).
    #[test]
    fn predict_preprocessing_leaves_mnist_digits_as_they_were() {
        let mnist = crate::test_support::mnist();
        let n = 1000;
        let mut unchanged = 0;
        for i in 0..n {
            let pixels = mnist.test.image(i);
            let gray = GrayImage::from_raw(28, 28, pixels.to_vec()).unwrap();
            let field = mnist_like(&gray, 28, 28).expect("a digit");
            let l1: f32 = field
                .iter()
                .zip(pixels)
                .map(|(a, &b)| (a - f32::from(b) / 255.0).abs())
                .sum();
            if l1 < 1.0 {
                unchanged += 1;
            }
        }
        assert!(
            unchanged >= n * 95 / 100,
            "{unchanged} of {n} digits unchanged"
        );
    }
}
