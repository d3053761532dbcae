// Fused MLP step, kernel 1 of 4: the first dense layer's pre-activations z = x W + b (for the
// MLP, after gathering the batch's images from the resident split into x). Each workgroup
// takes 4 rows; each invocation four of the layer's units, so that every load feeds several
// multiply-adds (vec4 loads: x as [ROWS, FIRST_IN / 4] vec4s, the first layer's weights on the
// device transposed, [OUT, FIRST_IN], a unit's weights contiguous). The rows' inputs are
// staged in workgroup memory STAGE_QUADS quads at a time, so that the kernel needs at most 16 KiB
// of it (WebGPU's baseline) whatever the input's width; the sums still run over the inputs
// in order, so the chunks change no bit.

@group(0) @binding(0) var<storage, read_write> params: array<vec4<f32>>;
@group(0) @binding(1) var<storage, read_write> x: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read_write> z: array<f32>;

const QUADS: u32 = FIRST_IN / 4u;
const WORKGROUP: u32 = {{ workgroup }}u;
const STAGE_QUADS: u32 = {{ stage_quads }}u;

var<workgroup> staged: array<vec4<f32>, {{ staged }}>;

// `stage(row, q)`, inputs 4q..4q+3 of a row, comes from the input snippet: the MLP gathers
// them from the resident images (and keeps them in x for mlp_update.wgsl), the CNN's dense
// layer reads them from x, where its last convolution put them.
{{ stage }}

@compute @workgroup_size({{ workgroup }}, 1, 1)
fn main(
    @builtin(workgroup_id) group: vec3<u32>,
    @builtin(local_invocation_index) lane: u32,
) {
    let first = group.x * 4u;
    let n = FIRST_OUT;
    let weights = FIRST_W / 4u;
    // Four units an invocation, WORKGROUP groups of four a pass (one pass for layers up to
    // 4 × WORKGROUP units); the last group's spare units repeat the layer's last unit and
    // are not written. Every invocation takes every pass and chunk (barriers are uniform).
    for (var base = 0u; base * 4u < n; base += WORKGROUP) {
        let group4 = base + lane;
        let owned = group4 * 4u < n;
        let j = vec4<u32>(group4 * 4u) + vec4<u32>(0u, 1u, 2u, 3u);
        let unit = min(j, vec4<u32>(n - 1u));
        var a0 = vec4<f32>(0.0);
        var a1 = vec4<f32>(0.0);
        var a2 = vec4<f32>(0.0);
        var a3 = vec4<f32>(0.0);
        for (var start = 0u; start < QUADS; start += STAGE_QUADS) {
            let len = min(STAGE_QUADS, QUADS - start);
            for (var t = lane; t < 4u * len; t += WORKGROUP) {
                staged[t] = stage(first + t / len, start + t % len);
            }
            workgroupBarrier();
            if (owned) {
                for (var q = 0u; q < len; q++) {
                    let w0 = params[weights + unit.x * QUADS + start + q];
                    let w1 = params[weights + unit.y * QUADS + start + q];
                    let w2 = params[weights + unit.z * QUADS + start + q];
                    let w3 = params[weights + unit.w * QUADS + start + q];
                    let x0 = staged[q];
                    let x1 = staged[len + q];
                    let x2 = staged[2u * len + q];
                    let x3 = staged[3u * len + q];
                    // a_r holds row r's four units.
                    a0 += vec4<f32>(dot(x0, w0), dot(x0, w1), dot(x0, w2), dot(x0, w3));
                    a1 += vec4<f32>(dot(x1, w0), dot(x1, w1), dot(x1, w2), dot(x1, w3));
                    a2 += vec4<f32>(dot(x2, w0), dot(x2, w1), dot(x2, w2), dot(x2, w3));
                    a3 += vec4<f32>(dot(x3, w0), dot(x3, w1), dot(x3, w2), dot(x3, w3));
                }
            }
            workgroupBarrier();
        }
        if (owned) {
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
}
