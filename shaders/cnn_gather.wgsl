// Fused CNN step, first: the batch's images gathered from the resident split (shifted and
// scaled by pixels.wgsl, which comes first) into `gathered`, [ROWS, PIXELS] f32 as vec4s, the
// first convolution's input. One invocation per four pixels.

@group(0) @binding(0) var<storage, read_write> step: array<u32>;
@group(0) @binding(1) var<storage, read_write> images: array<u32>;
@group(0) @binding(2) var<storage, read_write> gathered: array<vec4<f32>>;

@compute @workgroup_size({{ workgroup }}, 1, 1)
fn main(@builtin(global_invocation_id) id: vec3<u32>) {
    let quads = PIXELS / 4u;
    let row = id.x / quads;
    if (row >= ROWS) {
        return;
    }
    var value = vec4<f32>(0.0);
    let image = step[ROWS_AT + row];
    if (image < COUNT) {
        value = pixel_quad(image, step[ROWS_AT + ROWS + row], id.x % quads);
    }
    gathered[id.x] = value;
}
