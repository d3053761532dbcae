// Fused MLP step, kernel 4 of 4: the first layer's weight gradient x^T d, summed over the
// batch, and Adam applied to each weight as soon as its gradient is known, no gradient
// buffer. Each invocation takes 4 inputs (a vec4 of x) of four units: the weights are
// [OUT, PIXELS] on the device, the head leaves this layer's gradient d as [OUT, ROWS].

@group(0) @binding(0) var<storage, read_write> step: array<u32>;
@group(0) @binding(1) var<storage, read_write> params: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read_write> m: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read_write> v: array<vec4<f32>>;
@group(0) @binding(4) var<storage, read_write> x: array<vec4<f32>>;
@group(0) @binding(5) var<storage, read_write> d: array<vec4<f32>>;

@compute @workgroup_size({{ workgroup }}, 1, 1)
fn main(@builtin(global_invocation_id) id: vec3<u32>) {
    let quads = FIRST_IN / 4u;
    let n = FIRST_OUT;
    let group4 = id.x / quads;
    let q = id.x % quads;
    if (group4 * 4u >= n) {
        return;
    }
    // Four units an invocation; spare units of the last group repeat the last unit, unwritten.
    let j = vec4<u32>(group4 * 4u) + vec4<u32>(0u, 1u, 2u, 3u);
    let unit = min(j, vec4<u32>(n - 1u));
    let blocks = ROWS / 4u;
    let gradients = FIRST_Z / 4u;
    var g0 = vec4<f32>(0.0);
    var g1 = vec4<f32>(0.0);
    var g2 = vec4<f32>(0.0);
    var g3 = vec4<f32>(0.0);
    for (var b = 0u; b < blocks; b++) {
        // Rows 4b..4b+3 of each unit's gradient, and of x at these four inputs.
        let d0 = d[gradients + unit.x * blocks + b];
        let d1 = d[gradients + unit.y * blocks + b];
        let d2 = d[gradients + unit.z * blocks + b];
        let d3 = d[gradients + unit.w * blocks + b];
        let x0 = x[(4u * b) * quads + q];
        let x1 = x[(4u * b + 1u) * quads + q];
        let x2 = x[(4u * b + 2u) * quads + q];
        let x3 = x[(4u * b + 3u) * quads + q];
        g0 += x0 * d0.x + x1 * d0.y + x2 * d0.z + x3 * d0.w;
        g1 += x0 * d1.x + x1 * d1.y + x2 * d1.z + x3 * d1.w;
        g2 += x0 * d2.x + x1 * d2.y + x2 * d2.z + x3 * d2.w;
        g3 += x0 * d3.x + x1 * d3.y + x2 * d3.z + x3 * d3.w;
    }
    let weights = FIRST_W / 4u;
    let g = array<vec4<f32>, 4>(g0, g1, g2, g3);
    for (var k = 0u; k < 4u; k++) {
        if (j[k] < n) {
            adam(weights + j[k] * quads + q, g[k]);
        }
    }
}
