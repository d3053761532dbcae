// Reading one pixel of a training image from a split resident on the device, shifted and
// scaled to [0, 1]. Prepended to the kernels that read images (gather.wgsl, mlp_forward.wgsl).
//
// The split's images are u8 pixels packed four to a u32 (WGSL has no 8-bit type), {{ words }}
// words per image, little-endian: byte k of word w is pixel 4 w + k.
//
// A row's shift packs (dx + 128) in bits 0-7 and (dy + 128) in bits 8-15: the image moves dx
// pixels right and dy down, the gap filled with background (0), as the host's augmentation
// does it. 0x8080 is no shift.

const SIDE: u32 = {{ side }}u;
const WORDS: u32 = {{ words }}u;
const PIXELS: u32 = {{ pixels }}u;
const NO_SHIFT: u32 = 0x8080u;

// Pixel p (row-major) of image `image` moved by `shift`, divided by 255 as the host divides
// it, so both paths give the same bits.
fn pixel(image: u32, shift: u32, p: u32) -> f32 {
    let dx = i32(shift & 0xffu) - 128;
    let dy = i32((shift >> 8u) & 0xffu) - 128;
    let x = i32(p % SIDE) - dx;
    let y = i32(p / SIDE) - dy;
    if (x < 0 || y < 0 || x >= i32(SIDE) || y >= i32(SIDE)) {
        return 0.0;
    }
    let source = u32(y) * SIDE + u32(x);
    let word = images[image * WORDS + source / 4u];
    return f32((word >> (8u * (source % 4u))) & 0xffu) / 255.0;
}

// Pixels 4q..4q+3 of image `image` moved by `shift`: one word when the image is not moved.
fn pixel_quad(image: u32, shift: u32, q: u32) -> vec4<f32> {
    if (shift == NO_SHIFT) {
        let word = images[image * WORDS + q];
        return vec4<f32>(
            f32(word & 0xffu),
            f32((word >> 8u) & 0xffu),
            f32((word >> 16u) & 0xffu),
            f32(word >> 24u),
        ) / 255.0;
    }
    return vec4<f32>(
        pixel(image, shift, 4u * q),
        pixel(image, shift, 4u * q + 1u),
        pixel(image, shift, 4u * q + 2u),
        pixel(image, shift, 4u * q + 3u),
    );
}
