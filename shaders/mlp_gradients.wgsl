// Fused MLP step, kernel 3 of 4: one invocation per parameter of the dense layers after the
// first, and per bias of the first: its gradient summed over the batch's rows in order, and
// Adam. The first invocation also adds the batch's loss and hits to the epoch's running sums
// (in the order one 64-invocation workgroup used to: rows 0, 64, … first). mlp_update.wgsl
// does the first layer's weights.

@group(0) @binding(0) var<storage, read_write> step: array<u32>;
@group(0) @binding(1) var<storage, read_write> params: array<f32>;
@group(0) @binding(2) var<storage, read_write> m: array<f32>;
@group(0) @binding(3) var<storage, read_write> v: array<f32>;
@group(0) @binding(4) var<storage, read_write> z: array<f32>;
@group(0) @binding(5) var<storage, read_write> d: array<f32>;
@group(0) @binding(6) var<storage, read_write> losses: array<vec2<f32>>;
@group(0) @binding(7) var<storage, read_write> sums: array<f32>;

const STRIDE: u32 = 64u;

@compute @workgroup_size({{ workgroup }}, 1, 1)
fn main(@builtin(global_invocation_id) id: vec3<u32>) {
    // z is bound even when no later layer reads it (an MLP without hidden layers).
    _ = &z;
    var t = id.x;
    if (t == 0u) {
        var total = vec2<f32>(0.0);
        for (var i = 0u; i < STRIDE; i++) {
            var part = vec2<f32>(0.0);
            for (var row = i; row < ROWS; row += STRIDE) {
                part += losses[row];
            }
            total += part;
        }
        sums[0] += total.x;
        sums[1] += total.y;
    }
{{ layers }}
    // The first layer's bias.
    if (t < FIRST_OUT) {
        let j = t;
        var g = 0.0;
        for (var row = 0u; row < ROWS; row++) {
            g += d[FIRST_Z + j * ROWS + row];
        }
        adam(FIRST_B + j, g);
    }
}
