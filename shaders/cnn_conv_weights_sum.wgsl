// Fused CNN step, backward: a convolution's weight gradient sums from cnn_conv_weights.wgsl's
// slices of the positions, added up slice after slice, and Adam on them. One invocation per
// sum of each workgroup of sums.

@group(0) @binding(0) var<storage, read_write> step: array<u32>;
@group(0) @binding(1) var<storage, read_write> params: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read_write> m: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read_write> v: array<vec4<f32>>;
@group(0) @binding(4) var<storage, read_write> partials: array<vec4<f32>>;

@compute @workgroup_size({{ workgroup }}, 1, 1)
fn main(@builtin(global_invocation_id) id: vec3<u32>) {
    let e = id.x % SUMS;
    let g = id.x / SUMS;
    if (g >= GROUPS) {
        return;
    }
    var total = vec4<f32>(0.0);
    for (var s = 0u; s < SLICES; s++) {
        total += partials[(s * GROUPS + g) * SUMS + e];
    }
    apply(g, e, total);
}
