// Fused MLP step, kernel 1 of 3: gathers the batch's images from the resident split (shifted
// and scaled by pixels.wgsl) into x, and computes the first dense layer's pre-activations
// z = x W + b. Each workgroup takes 4 rows; each invocation four of the layer's units, so that
// every load feeds several multiply-adds (vec4 loads: x as [ROWS, PIXELS / 4] vec4s, the
// first layer's weights on the device transposed, [OUT, PIXELS], a unit's weights contiguous).

@group(0) @binding(0) var<storage, read_write> images: array<u32>;
@group(0) @binding(1) var<storage, read_write> step: array<u32>;
@group(0) @binding(2) var<storage, read_write> params: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read_write> x: array<vec4<f32>>;
@group(0) @binding(4) var<storage, read_write> z: array<f32>;

const QUADS: u32 = PIXELS / 4u;
const WORKGROUP: u32 = {{ workgroup }}u;

var<workgroup> staged: array<vec4<f32>, {{ staged }}>;

@compute @workgroup_size({{ workgroup }}, 1, 1)
fn main(
    @builtin(workgroup_id) group: vec3<u32>,
    @builtin(local_invocation_index) lane: u32,
) {
    let first = group.x * 4u;
    for (var t = lane; t < 4u * QUADS; t += WORKGROUP) {
        let row = first + t / QUADS;
        let q = t % QUADS;
        var value = vec4<f32>(0.0);
        let image = step[ROWS_AT + row];
        if (image < COUNT) {
            let shift = step[ROWS_AT + ROWS + row];
            if (shift == NO_SHIFT) {
                let word = images[image * WORDS + q];
                value = vec4<f32>(
                    f32(word & 0xffu),
                    f32((word >> 8u) & 0xffu),
                    f32((word >> 16u) & 0xffu),
                    f32(word >> 24u),
                ) / 255.0;
            } else {
                value = vec4<f32>(
                    pixel(image, shift, 4u * q),
                    pixel(image, shift, 4u * q + 1u),
                    pixel(image, shift, 4u * q + 2u),
                    pixel(image, shift, 4u * q + 3u),
                );
            }
        }
        x[row * QUADS + q] = value;
        staged[t] = value;
    }
    workgroupBarrier();
    // Four units an invocation (the last group's spare units repeat the layer's last unit,
    // and are not written).
    let n = FIRST_OUT;
    let weights = FIRST_W / 4u;
    for (var group4 = lane; group4 * 4u < n; group4 += WORKGROUP) {
        let j = vec4<u32>(group4 * 4u) + vec4<u32>(0u, 1u, 2u, 3u);
        let unit = min(j, vec4<u32>(n - 1u));
        var a0 = vec4<f32>(0.0);
        var a1 = vec4<f32>(0.0);
        var a2 = vec4<f32>(0.0);
        var a3 = vec4<f32>(0.0);
        for (var q = 0u; q < QUADS; q++) {
            let w0 = params[weights + unit.x * QUADS + q];
            let w1 = params[weights + unit.y * QUADS + q];
            let w2 = params[weights + unit.z * QUADS + q];
            let w3 = params[weights + unit.w * QUADS + q];
            let x0 = staged[q];
            let x1 = staged[QUADS + q];
            let x2 = staged[2u * QUADS + q];
            let x3 = staged[3u * QUADS + q];
            // a_r holds row r's four units.
            a0 += vec4<f32>(dot(x0, w0), dot(x0, w1), dot(x0, w2), dot(x0, w3));
            a1 += vec4<f32>(dot(x1, w0), dot(x1, w1), dot(x1, w2), dot(x1, w3));
            a2 += vec4<f32>(dot(x2, w0), dot(x2, w1), dot(x2, w2), dot(x2, w3));
            a3 += vec4<f32>(dot(x3, w0), dot(x3, w1), dot(x3, w2), dot(x3, w3));
        }
        let rows = array<vec4<f32>, 4>(a0, a1, a2, a3);
        for (var k = 0u; k < 4u; k++) {
            if (j[k] < n) {
                let b = FIRST_B + j[k];
                let bias = params[b / 4u][b % 4u];
                for (var r = 0u; r < 4u; r++) {
                    z[FIRST_Z + (first + r) * n + j[k]] = rows[r][k] + bias;
                }
            }
        }
    }
}
