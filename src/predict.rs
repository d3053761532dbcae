//! Reading a user's picture of a digit the way MNIST's were made: grayscale, digit light on
//! dark (inverted when the background is light), the digit's box scaled to fit 20 × 20,
//! placed in a 28 × 28 field with its centre of mass at the centre.

use std::path::{Path, PathBuf};

use image::imageops::FilterType;
use image::{GrayImage, Luma};

use crate::data::{IMAGE_PIXELS, IMAGE_SIDE};

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
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
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
}

/// Reads an image file of any common format (by content, not by name) and turns it into 784
/// MNIST-like pixels in [0, 1].
pub fn load_digit(path: &Path) -> Result<Vec<f32>, ImageError> {
    let bytes = std::fs::read(path).map_err(|source| ImageError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    if bytes.is_empty() {
        return Err(ImageError::Empty(path.to_path_buf()));
    }
    let decoded = image::load_from_memory(&bytes).map_err(|e| ImageError::Decode {
        path: path.to_path_buf(),
        why: e.to_string(),
    })?;
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

/// Preprocesses a grayscale picture as MNIST's were; `None` when it holds no digit.
pub fn mnist_like(gray: &GrayImage) -> Option<Vec<f32>> {
    let (w, h) = gray.dimensions();
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
            Err(ImageError::Io { .. })
        ));
    }
}
