//! Reading a user's picture of a digit the way MNIST's were made: grayscale, digit light on
//! dark (inverted when the background is light), the digit's box scaled to fit 20 × 20,
//! placed in a 28 × 28 field with its centre of mass at the centre.

use std::fs::File;
use std::io::BufReader;
use std::path::{Path, PathBuf};

use image::imageops::FilterType;
use image::{DynamicImage, GrayImage, ImageDecoder, ImageReader, Limits, Luma};

use crate::data::{IMAGE_PIXELS, IMAGE_SIDE};
use crate::files::{self, FileError};

/// MNIST digits fit a 20 × 20 box inside the 28 × 28 image.
const DIGIT_BOX: u32 = 20;

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
            Self::Decode { path, .. } | Self::TooLarge { path, .. } => path,
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

/// Reads an image file of any common format (by content, not by name) and turns it into 784
/// MNIST-like pixels in [0, 1].
///
/// The file is streamed, never read whole, and opened once; its size in pixels is checked
/// against [`MAX_PICTURE_PIXELS`] from its header before it is decoded.
pub fn load_digit(path: &Path) -> Result<Vec<f32>, ImageError> {
    let io = |source| ImageError::File(files::io_err(path)(source));
    let decode = |e: image::ImageError| ImageError::Decode {
        path: path.to_path_buf(),
        why: e.to_string(),
    };
    let file = File::open(path).map_err(io)?;
    if file.metadata().map_err(io)?.len() == 0 {
        return Err(ImageError::Empty(path.to_path_buf()));
    }
    let mut reader = ImageReader::new(BufReader::new(file))
        .with_guessed_format()
        .map_err(io)?;
    let mut limits = Limits::default();
    limits.max_alloc = Some(MAX_DECODE_BYTES);
    reader.limits(limits);
    // The decoder reads the header only; the pixels are decoded after the size is checked.
    let decoder = reader.into_decoder().map_err(decode)?;
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
    let decoded = DynamicImage::from_decoder(decoder).map_err(decode)?;
    // Transparent areas count as paper: composite over white before going gray.
    let rgba = decoded.to_rgba8();
    let gray = GrayImage::from_fn(rgba.width(), rgba.height(), |x, y| {
        let [r, g, b, a] = rgba.get_pixel(x, y).0;
        let luma = 0.299 * f32::from(r) + 0.587 * f32::from(g) + 0.114 * f32::from(b);
        let alpha = f32::from(a) / 255.0;
        Luma([(luma * alpha + 255.0 * (1.0 - alpha)).round() as u8])
    });
    mnist_like(&gray).ok_or_else(|| ImageError::Blank(path.to_path_buf()))
}

/// Preprocesses a grayscale picture as MNIST's were; `None` when it holds no digit (an image
/// without pixels included).
pub fn mnist_like(gray: &GrayImage) -> Option<Vec<f32>> {
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
    // Longer side to 20 pixels, aspect kept.
    let (cw, ch) = crop.dimensions();
    let scale = DIGIT_BOX as f32 / cw.max(ch) as f32;
    let nw = ((cw as f32 * scale).round() as u32).clamp(1, DIGIT_BOX);
    let nh = ((ch as f32 * scale).round() as u32).clamp(1, DIGIT_BOX);
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
    let side = IMAGE_SIDE as f32;
    let place = |com: f32, len: u32| -> i64 {
        let offset = (side / 2.0 - com / mass).round() as i64;
        offset.clamp(0, IMAGE_SIDE as i64 - i64::from(len))
    };
    let (ox, oy) = (place(mx, nw), place(my, nh));
    let mut field = vec![0f32; IMAGE_PIXELS];
    for (x, y, p) in small.enumerate_pixels() {
        let (fx, fy) = (ox as usize + x as usize, oy as usize + y as usize);
        field[fy * IMAGE_SIDE + fx] = f32::from(p[0]) / 255.0;
    }
    Some(field)
}

#[cfg(test)]
mod tests {
    use super::*;

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
            x += v * (i % IMAGE_SIDE) as f32;
            y += v * (i / IMAGE_SIDE) as f32;
        }
        (x / m, y / m)
    }

    #[test]
    fn digit_is_scaled_into_the_box_and_centred_by_mass() {
        let field = mnist_like(&bar(60, 50, true)).unwrap();
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
        let a = mnist_like(&bar(60, 50, true)).unwrap();
        let b = mnist_like(&bar(60, 50, false)).unwrap();
        let diff: f32 = a.iter().zip(&b).map(|(x, y)| (x - y).abs()).sum();
        assert!(diff < 1e-3, "{diff}");
    }

    #[test]
    fn blank_and_bad_files_are_errors() {
        assert!(mnist_like(&GrayImage::from_pixel(28, 28, Luma([255]))).is_none());
        let dir = tempfile::tempdir().unwrap();
        let empty = dir.path().join("empty.png");
        std::fs::write(&empty, b"").unwrap();
        assert!(matches!(load_digit(&empty), Err(ImageError::Empty(_))));
        let text = dir.path().join("notes.png");
        std::fs::write(&text, b"not an image at all").unwrap();
        let err = load_digit(&text).unwrap_err().to_string();
        assert!(
            err.contains("notes.png") && err.contains("not a readable image"),
            "{err}"
        );
        assert!(matches!(
            load_digit(&dir.path().join("missing.png")),
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
        let err = load_digit(&bomb).unwrap_err();
        assert!(matches!(err, ImageError::TooLarge { .. }), "{err}");
        assert!(
            err.to_string().contains("bomb.png: 100000 × 100000 pixels"),
            "{err}"
        );
        let zero = dir.path().join("zero.png");
        std::fs::write(&zero, png_header(0, 5)).unwrap();
        let err = load_digit(&zero).unwrap_err();
        assert!(
            err.to_string().starts_with(&zero.display().to_string()),
            "{err}"
        );
        assert!(mnist_like(&GrayImage::new(0, 5)).is_none());
        assert!(mnist_like(&GrayImage::new(5, 0)).is_none());
        let one = dir.path().join("one.png");
        GrayImage::from_pixel(1, 1, Luma([200])).save(&one).unwrap();
        assert!(matches!(load_digit(&one), Err(ImageError::Blank(_))));
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
            if let Err(e) = load_digit(&path) {
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
            if let Some(field) = mnist_like(&picture) {
                proptest::prop_assert_eq!(field.len(), IMAGE_PIXELS);
                proptest::prop_assert!(field.iter().all(|v| (0.0..=1.0).contains(v)));
            }
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("small.png");
            picture.save(&path).unwrap();
            match load_digit(&path) {
                Ok(field) => proptest::prop_assert_eq!(field.len(), IMAGE_PIXELS),
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
            let field = mnist_like(&gray).expect("a digit");
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
