// Fused CNN step, backward: a convolution's weight (and bias) gradients, summed over the batch
// and every output position, and Adam applied to them. One workgroup per four input channels,
// one kernel row and eight output channels (two vec4s: each input load feeds both): its
// invocations share the positions, then add up their sums in workgroup memory. A convolution
// with few such workgroups (the first: 6) splits the positions into SLICES slices, a
// workgroup each, which write their sums to `partials`; cnn_conv_weights_sum.wgsl adds them
// up and applies Adam.

@group(0) @binding(0) var<storage, read_write> step: array<u32>;
@group(0) @binding(1) var<storage, read_write> params: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read_write> m: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read_write> v: array<vec4<f32>>;
@group(0) @binding(4) var<storage, read_write> gradient: array<vec4<f32>>;
{{ input_bindings }}
{{ partials }}

const SIDE_IN: u32 = {{ side }}u;
const WORKGROUP: u32 = {{ workgroup }}u;

var<workgroup> partial: array<vec4<f32>, {{ partial }}>;

{{ input }}

@compute @workgroup_size({{ workgroup }}, 1, 1)
fn main(
    @builtin(workgroup_id) group: vec3<u32>,
    @builtin(local_invocation_index) lane: u32,
) {
    let g = group.x % GROUPS;
    let slice = group.x / GROUPS;
    let pairs = OC4 / 2u;
    let o = 2u * (g % pairs);
    let ky = (g / pairs) % 3u;
    let q = g / (pairs * 3u);
    let positions = ROWS * SIDE_IN * SIDE_IN;
    let per_slice = (positions + SLICES - 1u) / SLICES;
    let end = min(positions, (slice + 1u) * per_slice);
    var sums: array<vec4<f32>, 26>;
    for (var t = slice * per_slice + lane; t < end; t += WORKGROUP) {
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
{{ finish }}
}
