// Reading one pixel of a training image from a split resident on the device, shifted and
// scaled to [0, 1]. Prepended to the kernels that read images (gather.wgsl, mlp_forward.wgsl,
// cnn_gather.wgsl), which bind the split's first buffer as `images`.
//
// The split's images are u8 bytes packed four to a u32 (WGSL has no 8-bit type), {{ words }}
// words per image (its {{ pixels }} bytes padded to a multiple of four), little-endian: byte k
// of word w is byte 4 w + k of the image. An image's bytes are planar: channel after channel,
// each {{ height }} rows of {{ width }}. A split larger than one binding is kept in chunks of
// {{ chunk }} whole images, the later ones bound here.
//
// A row's shift packs (dx + 128) in bits 0-7 and (dy + 128) in bits 8-15: the image moves dx
// pixels right and dy down (every channel alike), the gap filled with black (0), as the
// host's augmentation does it. 0x8080 is no shift.

{{ chunk_bindings }}
const HEIGHT: u32 = {{ height }}u;
const WIDTH: u32 = {{ width }}u;
const PLANE: u32 = {{ height }}u * {{ width }}u;
const WORDS: u32 = {{ words }}u;
const PIXELS: u32 = {{ pixels }}u;
const CHUNK: u32 = {{ chunk }}u;
const NO_SHIFT: u32 = 0x8080u;

// Word w of image `image`, from whichever buffer holds it.
fn word(image: u32, w: u32) -> u32 {
{{ chunk_reads }}
}

// Byte p (planar) of image `image` moved by `shift`, divided by 255 as the host divides it,
// so both paths give the same bits.
fn pixel(image: u32, shift: u32, p: u32) -> f32 {
    let dx = i32(shift & 0xffu) - 128;
    let dy = i32((shift >> 8u) & 0xffu) - 128;
    let plane = p / PLANE;
    let at = p % PLANE;
    let x = i32(at % WIDTH) - dx;
    let y = i32(at / WIDTH) - dy;
    if (p >= PIXELS || x < 0 || y < 0 || x >= i32(WIDTH) || y >= i32(HEIGHT)) {
        return 0.0;
    }
    let source = plane * PLANE + u32(y) * WIDTH + u32(x);
    let w = word(image, source / 4u);
    return f32((w >> (8u * (source % 4u))) & 0xffu) / 255.0;
}

// Bytes 4q..4q+3 of image `image` moved by `shift`: one word when the image is not moved
// (the padding bytes past PIXELS are zero).
fn pixel_quad(image: u32, shift: u32, q: u32) -> vec4<f32> {
    if (shift == NO_SHIFT) {
        let w = word(image, q);
        return vec4<f32>(
            f32(w & 0xffu),
            f32((w >> 8u) & 0xffu),
            f32((w >> 16u) & 0xffu),
            f32(w >> 24u),
        ) / 255.0;
    }
    return vec4<f32>(
        pixel(image, shift, 4u * q),
        pixel(image, shift, 4u * q + 1u),
        pixel(image, shift, 4u * q + 2u),
        pixel(image, shift, 4u * q + 3u),
    );
}
