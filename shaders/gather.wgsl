// Gathers a batch of MNIST images and labels from a split resident on the device, and
// normalises the pixels, straight into the tensors the model reads: one dispatch per batch.
//
// images:  the whole split, u8 pixels packed four to a u32 (WGSL has no 8-bit type),
//          {{ words }} words per image; uploaded once.
// labels:  the split's labels, one u32 each; uploaded once.
// indices: the batch's image numbers, {{ rows }} of them; a number >= {{ count }} is a
//          padding row (the last, short batch): zero pixels, label 0, weight 0.
// pixels:  out, [{{ rows }}, {{ pixels }}] f32, pixel / 255.
// targets: out, [{{ rows }}] i32 labels.
// weights: out, [{{ rows }}] f32, 1 for a real row, 0 for padding.
//
// One invocation per packed word: it reads one u32 and writes four floats; the first word
// of each row also writes the row's label and weight.

// All read_write, though three are only read: cubecl sub-allocates its buffers from shared
// pages, so two bindings can be one wgpu buffer, and wgpu refuses a buffer bound both
// read-only and read-write in one dispatch.
@group(0) @binding(0) var<storage, read_write> images: array<u32>;
@group(0) @binding(1) var<storage, read_write> labels: array<u32>;
@group(0) @binding(2) var<storage, read_write> indices: array<u32>;
@group(0) @binding(3) var<storage, read_write> pixels: array<f32>;
@group(0) @binding(4) var<storage, read_write> targets: array<i32>;
@group(0) @binding(5) var<storage, read_write> weights: array<f32>;

const ROWS: u32 = {{ rows }}u;
const COUNT: u32 = {{ count }}u;
const WORDS: u32 = {{ words }}u;
const PIXELS: u32 = {{ pixels }}u;

@compute @workgroup_size({{ workgroup }}, 1, 1)
fn main(@builtin(global_invocation_id) id: vec3<u32>) {
    let word = id.x;
    if (word >= ROWS * WORDS) {
        return;
    }
    let row = word / WORDS;
    let column = word % WORDS;
    let image = indices[row];
    let real = image < COUNT;
    var packed = 0u;
    if (real) {
        packed = images[image * WORDS + column];
    }
    // Little-endian packing: byte k of the word is pixel 4 * column + k. Division by 255,
    // as the host path does it, so both paths give the same bits.
    let base = row * PIXELS + column * 4u;
    pixels[base] = f32(packed & 0xffu) / 255.0;
    pixels[base + 1u] = f32((packed >> 8u) & 0xffu) / 255.0;
    pixels[base + 2u] = f32((packed >> 16u) & 0xffu) / 255.0;
    pixels[base + 3u] = f32(packed >> 24u) / 255.0;
    if (column == 0u) {
        if (real) {
            targets[row] = i32(labels[image]);
            weights[row] = 1.0;
        } else {
            targets[row] = 0;
            weights[row] = 0.0;
        }
    }
}
