// Fused CNN step, backward: the loss gradient into a convolution's input (the layer below's
// pooled output), with the weights as they were before this step's update, and from there
// through the layer below's max-pooling and ReLU into its convolution's outputs: only the
// window's winner gets the gradient, and only where the pooled value is positive. One
// invocation per 2×2 block of input positions and four input channels.

@group(0) @binding(0) var<storage, read_write> params: array<vec4<f32>>;
@group(0) @binding(1) var<storage, read_write> gradient: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read_write> below: array<f32>;
@group(0) @binding(3) var<storage, read_write> below_winners: array<u32>;
@group(0) @binding(4) var<storage, read_write> below_gradient: array<vec4<f32>>;

const IC4: u32 = {{ ic4 }}u;
const OC4: u32 = {{ oc4 }}u;
const SIDE_IN: u32 = {{ side }}u;
const WEIGHTS: u32 = {{ w_at4 }}u;

const BLOCKS: u32 = (SIDE_IN + 1u) / 2u;

@compute @workgroup_size({{ workgroup }}, 1, 1)
fn main(@builtin(global_invocation_id) id: vec3<u32>) {
    let t = id.x;
    if (t >= ROWS * BLOCKS * BLOCKS * IC4) {
        return;
    }
    // A 2×2 block of input positions shares each weight load.
    let q = t % IC4;
    let bx = (t / IC4) % BLOCKS;
    let by = (t / (IC4 * BLOCKS)) % BLOCKS;
    let b = t / (IC4 * BLOCKS * BLOCKS);
    var g = array<vec4<f32>, 4>();
    for (var ky = 0u; ky < 3u; ky++) {
        for (var kx = 0u; kx < 3u; kx++) {
            let tap = ky * 3u + kx;
            // Input (y, x) reaches output (y + 1 - ky, x + 1 - kx) through (ky, kx): where
            // each of the block's four lands (or nowhere, at an edge).
            var at = array<u32, 4>();
            var inside = array<bool, 4>();
            for (var p = 0u; p < 4u; p++) {
                let yy = i32(2u * by + p / 2u) + 1 - i32(ky);
                let xx = i32(2u * bx + p % 2u) + 1 - i32(kx);
                inside[p] = yy >= 0 && xx >= 0 && yy < i32(SIDE_IN) && xx < i32(SIDE_IN);
                at[p] = select(0u, ((b * SIDE_IN + u32(yy)) * SIDE_IN + u32(xx)) * OC4, inside[p]);
            }
            for (var o = 0u; o < OC4; o++) {
                let w0 = params[WEIGHTS + ((4u * q) * 9u + tap) * OC4 + o];
                let w1 = params[WEIGHTS + ((4u * q + 1u) * 9u + tap) * OC4 + o];
                let w2 = params[WEIGHTS + ((4u * q + 2u) * 9u + tap) * OC4 + o];
                let w3 = params[WEIGHTS + ((4u * q + 3u) * 9u + tap) * OC4 + o];
                for (var p = 0u; p < 4u; p++) {
                    if (inside[p]) {
                        let dv = gradient[at[p] + o];
                        g[p] += vec4<f32>(dot(dv, w0), dot(dv, w1), dot(dv, w2), dot(dv, w3));
                    }
                }
            }
        }
    }
    // Through the layer below's pooling window at (2y, 2x) and its ReLU.
    let side = 2u * SIDE_IN;
    for (var p = 0u; p < 4u; p++) {
        let y = 2u * by + p / 2u;
        let x = 2u * bx + p % 2u;
        if (y >= SIDE_IN || x >= SIDE_IN) {
            continue;
        }
        let here = ((b * SIDE_IN + y) * SIDE_IN + x) * IC4 * 4u + 4u * q;
        for (var w = 0u; w < 4u; w++) {
            var value = vec4<f32>(0.0);
            for (var k = 0u; k < 4u; k++) {
                if (below_winners[here + k] == w && below[here + k] > 0.0) {
                    value[k] = g[p][k];
                }
            }
            let yy = 2u * y + w / 2u;
            let xx = 2u * x + w % 2u;
            below_gradient[((b * side + yy) * side + xx) * IC4 + q] = value;
        }
    }
}
