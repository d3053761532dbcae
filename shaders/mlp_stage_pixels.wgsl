// The MLP's input: the batch's images gathered from the resident split (shifted and scaled
// by pixels.wgsl, which comes first), kept in x for mlp_update.wgsl.
@group(0) @binding(3) var<storage, read_write> step: array<u32>;
@group(0) @binding(4) var<storage, read_write> images: array<u32>;

fn stage(row: u32, q: u32) -> vec4<f32> {
    var value = vec4<f32>(0.0);
    let image = step[ROWS_AT + row];
    if (image < COUNT) {
        value = pixel_quad(image, step[ROWS_AT + ROWS + row], q);
    }
    x[row * QUADS + q] = value;
    return value;
}
