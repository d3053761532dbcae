// Gathers a batch of images and labels from a split resident on the device, shifts and
// scales the pixels, straight into the tensors the model reads: one dispatch per batch.
// (pixels.wgsl, prepended, reads the pixels, and binds the split's later chunks after these.)
//
// images:  the split (its first chunk), u8 pixels packed four to a u32; uploaded once.
// labels:  the split's labels, one u32 each; uploaded once.
// rows:    {{ rows }} image numbers, then {{ rows }} shifts (see pixels.wgsl); a number >=
//          {{ count }} is a padding row (the last, short batch): zero pixels, label 0, weight 0.
// pixels:  out, [{{ rows }}, PIXELS] f32, byte / 255.
// targets: out, [{{ rows }}] i32 labels.
// weights: out, [{{ rows }}] f32, 1 for a real row, 0 for padding.
//
// One invocation per four output pixels; the first of each row also writes the row's label
// and weight.

// All read_write, though three are only read: cubecl sub-allocates its buffers from shared
// pages, so two bindings can be one wgpu buffer, and wgpu refuses a buffer bound both
// read-only and read-write in one dispatch.
@group(0) @binding(0) var<storage, read_write> images: array<u32>;
@group(0) @binding(1) var<storage, read_write> labels: array<u32>;
@group(0) @binding(2) var<storage, read_write> rows: array<u32>;
@group(0) @binding(3) var<storage, read_write> pixels: array<f32>;
@group(0) @binding(4) var<storage, read_write> targets: array<i32>;
@group(0) @binding(5) var<storage, read_write> weights: array<f32>;

const ROWS: u32 = {{ rows }}u;
const COUNT: u32 = {{ count }}u;

@compute @workgroup_size({{ workgroup }}, 1, 1)
fn main(@builtin(global_invocation_id) id: vec3<u32>) {
    let quad = id.x;
    if (quad >= ROWS * WORDS) {
        return;
    }
    let row = quad / WORDS;
    let first = (quad % WORDS) * 4u;
    let image = rows[row];
    let shift = rows[ROWS + row];
    let real = image < COUNT;
    let base = row * PIXELS + first;
    for (var k = 0u; k < 4u; k++) {
        if (first + k >= PIXELS) {
            break;
        }
        var value = 0.0;
        if (real) {
            value = pixel(image, shift, first + k);
        }
        pixels[base + k] = value;
    }
    if (first == 0u) {
        if (real) {
            targets[row] = i32(labels[image]);
            weights[row] = 1.0;
        } else {
            targets[row] = 0;
            weights[row] = 0.0;
        }
    }
}
