// Fused CNN step, backward: a convolution's weight (and bias) gradients, summed over the batch
// and every output position, and Adam applied to them. One workgroup per four input channels,
// one kernel row and eight output channels (two vec4s: each input load feeds both): its
// invocations share the positions, then add up their sums in workgroup memory.

@group(0) @binding(0) var<storage, read_write> step: array<u32>;
@group(0) @binding(1) var<storage, read_write> params: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read_write> m: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read_write> v: array<vec4<f32>>;
@group(0) @binding(4) var<storage, read_write> gradient: array<vec4<f32>>;
{{ input_bindings }}

const IC4: u32 = {{ ic4 }}u;
// Input channels that are not padding (the first convolution's 1 of 4).
const IC_REAL: u32 = {{ ic_real }}u;
const OC4: u32 = {{ oc4 }}u;
const SIDE_IN: u32 = {{ side }}u;
const WEIGHTS: u32 = {{ w_at4 }}u;
const BIAS: u32 = {{ b_at4 }}u;
const WORKGROUP: u32 = {{ workgroup }}u;

// Per invocation: for each of the workgroup's two groups of four output channels, 3 taps × 4
// input channels of weight sums (vec4s over the output channels), then the two bias sums.
const SUMS: u32 = 26u;
var<workgroup> partial: array<vec4<f32>, {{ partial }}>;

{{ input }}

@compute @workgroup_size({{ workgroup }}, 1, 1)
fn main(
    @builtin(workgroup_id) group: vec3<u32>,
    @builtin(local_invocation_index) lane: u32,
) {
    let pairs = OC4 / 2u;
    let o = 2u * (group.x % pairs);
    let ky = (group.x / pairs) % 3u;
    let q = group.x / (pairs * 3u);
    var sums: array<vec4<f32>, 26>;
    for (var t = lane; t < ROWS * SIDE_IN * SIDE_IN; t += WORKGROUP) {
        let x = t % SIDE_IN;
        let y = (t / SIDE_IN) % SIDE_IN;
        let b = t / (SIDE_IN * SIDE_IN);
        let dv0 = gradient[t * OC4 + o];
        let dv1 = gradient[t * OC4 + o + 1u];
        for (var kx = 0u; kx < 3u; kx++) {
            let inp = input(b, i32(y + ky) - 1, i32(x + kx) - 1, q);
            for (var k = 0u; k < 4u; k++) {
                sums[kx * 4u + k] += inp[k] * dv0;
                sums[12u + kx * 4u + k] += inp[k] * dv1;
            }
        }
        sums[24] += dv0;
        sums[25] += dv1;
    }
    for (var s = 0u; s < SUMS; s++) {
        partial[lane * SUMS + s] = sums[s];
    }
    workgroupBarrier();
    for (var half = WORKGROUP / 2u; half > 0u; half /= 2u) {
        if (lane < half) {
            for (var s = 0u; s < SUMS; s++) {
                partial[lane * SUMS + s] += partial[(lane + half) * SUMS + s];
            }
        }
        workgroupBarrier();
    }
    // Sums 0-23: a tap and input channel of one of the two groups each; 24 and 25: the biases.
    for (var e = lane; e < SUMS; e += WORKGROUP) {
        let which = e / 12u;
        let k = e % 12u;
        if (e < 24u && 4u * q + k % 4u < IC_REAL) {
            let ic = 4u * q + k % 4u;
            adam(WEIGHTS + (ic * 9u + ky * 3u + k / 4u) * OC4 + o + which, partial[e]);
        } else if (e >= 24u && q == 0u && ky == 0u) {
            adam(BIAS + o + e - 24u, partial[e]);
        }
    }
}
