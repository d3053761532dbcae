// Fused CNN step, forward: one 3×3 convolution (same padding), its bias, ReLU and 2×2
// max-pooling. Each invocation takes one pooled position of one image and four output
// channels (a vec4): the four convolution outputs under the pooling window, from the 4×4
// input tile around them. Activations are channels-last, [ROWS, SIDE, SIDE, channels], with
// channels in vec4s; the weights [IC, 3, 3, OC] (a vec4 of output channels per input channel
// and tap). Writes the pooled value and which of the window's four outputs won (0 to 3, row
// by row), for the backward pass.
//
// `input(b, y, x, q)` (from the layer's input snippet, with the bindings it reads from 3 on) is
// input channels 4q..4q+3 of image row b at (y, x), zero outside the image.

@group(0) @binding(0) var<storage, read_write> params: array<vec4<f32>>;
@group(0) @binding(1) var<storage, read_write> pooled: array<f32>;
@group(0) @binding(2) var<storage, read_write> winners: array<u32>;
{{ input_bindings }}

const IC4: u32 = {{ ic4 }}u;
// Input channels that are not padding (the first convolution's 1 of 4).
const IC_REAL: u32 = {{ ic_real }}u;
const OC4: u32 = {{ oc4 }}u;
const SIDE_IN: u32 = {{ side }}u;
const POOLED: u32 = {{ pooled }}u;
const WEIGHTS: u32 = {{ w_at4 }}u;
const BIAS: u32 = {{ b_at4 }}u;

{{ input }}

{{ output }}

@compute @workgroup_size({{ workgroup }}, 1, 1)
fn main(@builtin(global_invocation_id) id: vec3<u32>) {
    let t = id.x;
    if (t >= ROWS * POOLED * POOLED * OC4) {
        return;
    }
    let o = t % OC4;
    let px = (t / OC4) % POOLED;
    let py = (t / (OC4 * POOLED)) % POOLED;
    let b = t / (OC4 * POOLED * POOLED);
    let y0 = i32(2u * py) - 1;
    let x0 = i32(2u * px) - 1;
    // The window's four outputs: (0, 0), (0, 1), (1, 0), (1, 1).
    var a0 = vec4<f32>(0.0);
    var a1 = vec4<f32>(0.0);
    var a2 = vec4<f32>(0.0);
    var a3 = vec4<f32>(0.0);
    for (var q = 0u; q < IC4; q++) {
        var tile: array<vec4<f32>, 16>;
        for (var r = 0; r < 4; r++) {
            for (var c = 0; c < 4; c++) {
                tile[r * 4 + c] = input(b, y0 + r, x0 + c, q);
            }
        }
        for (var k = 0u; k < min(4u, IC_REAL - 4u * q); k++) {
            let ic = 4u * q + k;
            for (var ky = 0u; ky < 3u; ky++) {
                for (var kx = 0u; kx < 3u; kx++) {
                    let w = params[WEIGHTS + (ic * 9u + ky * 3u + kx) * OC4 + o];
                    a0 += tile[ky * 4u + kx][k] * w;
                    a1 += tile[ky * 4u + kx + 1u][k] * w;
                    a2 += tile[(ky + 1u) * 4u + kx][k] * w;
                    a3 += tile[(ky + 1u) * 4u + kx + 1u][k] * w;
                }
            }
        }
    }
    let bias = params[BIAS + o];
    let outs = array<vec4<f32>, 4>(
        max(a0 + bias, vec4<f32>(0.0)),
        max(a1 + bias, vec4<f32>(0.0)),
        max(a2 + bias, vec4<f32>(0.0)),
        max(a3 + bias, vec4<f32>(0.0)),
    );
    for (var k = 0u; k < 4u; k++) {
        var best = outs[0][k];
        var winner = 0u;
        for (var w = 1u; w < 4u; w++) {
            if (outs[w][k] > best) {
                best = outs[w][k];
                winner = w;
            }
        }
        let at = output_index(b, py, px, 4u * o + k);
        pooled[at] = best;
        winners[at] = winner;
    }
}
