// Fused CNN step, backward: a convolution's weight (and bias) gradients, summed over the batch
// and every output position, and Adam applied to them. One workgroup per four input channels,
// one kernel row and four output channels: its invocations share the positions, then add up
// their sums in workgroup memory.

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

// Per invocation: 3 taps × 4 input channels of weight sums (vec4s over the output channels),
// and the bias sum.
const SUMS: u32 = 13u;
var<workgroup> partial: array<vec4<f32>, {{ partial }}>;

{{ input }}

@compute @workgroup_size({{ workgroup }}, 1, 1)
fn main(
    @builtin(workgroup_id) group: vec3<u32>,
    @builtin(local_invocation_index) lane: u32,
) {
    let o = group.x % OC4;
    let ky = (group.x / OC4) % 3u;
    let q = group.x / (OC4 * 3u);
    var sums: array<vec4<f32>, 13>;
    for (var t = lane; t < ROWS * SIDE_IN * SIDE_IN; t += WORKGROUP) {
        let x = t % SIDE_IN;
        let y = (t / SIDE_IN) % SIDE_IN;
        let b = t / (SIDE_IN * SIDE_IN);
        let dv = gradient[t * OC4 + o];
        for (var kx = 0u; kx < 3u; kx++) {
            let inp = input(b, i32(y + ky) - 1, i32(x + kx) - 1, q);
            for (var k = 0u; k < 4u; k++) {
                sums[kx * 4u + k] += inp[k] * dv;
            }
        }
        sums[12] += dv;
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
    if (lane < 12u && 4u * q + lane % 4u < IC_REAL) {
        let kx = lane / 4u;
        let ic = 4u * q + lane % 4u;
        adam(WEIGHTS + (ic * 9u + ky * 3u + kx) * OC4 + o, partial[lane]);
    } else if (lane == 12u && q == 0u && ky == 0u) {
        adam(BIAS + o, partial[12]);
    }
}
