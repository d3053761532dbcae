// Fused MLP step, kernel 2 of 3, one workgroup: every dense layer after the first, forward;
// softmax cross-entropy, its gradient and the epoch's running loss and hit count; then the
// backward pass down to the first layer's pre-activations, with Adam applied to every
// parameter but the first layer's weights (mlp_update.wgsl does those).
//
// The per-layer passes are written out for each layer by the host (mlp_head_forward.wgsl,
// mlp_head_backward.wgsl), every offset and width a constant.

@group(0) @binding(0) var<storage, read_write> labels: array<u32>;
@group(0) @binding(1) var<storage, read_write> step: array<u32>;
@group(0) @binding(2) var<storage, read_write> params: array<f32>;
@group(0) @binding(3) var<storage, read_write> m: array<f32>;
@group(0) @binding(4) var<storage, read_write> v: array<f32>;
@group(0) @binding(5) var<storage, read_write> z: array<f32>;
@group(0) @binding(6) var<storage, read_write> d: array<f32>;
@group(0) @binding(7) var<storage, read_write> sums: array<f32>;

const WORKGROUP: u32 = {{ workgroup }}u;

var<workgroup> partial: array<vec2<f32>, {{ workgroup }}>;

@compute @workgroup_size({{ workgroup }}, 1, 1)
fn main(@builtin(local_invocation_index) lane: u32) {
{{ forward }}
    // Softmax cross-entropy on the logits, and its gradient, scaled by 1 / real rows.
    let real = f32(step[STEP_REAL]);
    let smoothing = bitcast<f32>(step[STEP_SMOOTHING]);
    var loss = 0.0;
    var hits = 0.0;
    for (var row = lane; row < ROWS; row += WORKGROUP) {
        let at = {{ logits }}u + row * CLASSES;
        let image = step[ROWS_AT + row];
        if (image >= COUNT) {
            for (var c = 0u; c < CLASSES; c++) {
                d[{{ d_logit }}] = 0.0;
            }
            continue;
        }
        let label = labels[image];
        let row_logits = read_logits(at);
        let log_total = row_logits.log_total;
        let best = row_logits.best;
        loss += log_total - z[at + label];
        if (best == label) {
            hits += 1.0;
        }
        for (var c = 0u; c < CLASSES; c++) {
            var want = smoothing / f32(CLASSES);
            if (c == label) {
                want += 1.0 - smoothing;
            }
            d[{{ d_logit }}] = (exp(z[at + c] - log_total) - want) / real;
        }
    }
    // The batch's sums, added up in a fixed order (one pass by one invocation is cheaper here
    // than a tree of barriers).
    partial[lane] = vec2<f32>(loss, hits);
    workgroupBarrier();
    if (lane == 0u) {
        var total = vec2<f32>(0.0);
        for (var i = 0u; i < WORKGROUP; i++) {
            total += partial[i];
        }
        sums[0] += total.x;
        sums[1] += total.y;
    }
    storageBarrier();
{{ backward }}
    // The first layer's bias.
    for (var j = lane; j < FIRST_OUT; j += WORKGROUP) {
        var g = 0.0;
        for (var row = 0u; row < ROWS; row++) {
            g += d[FIRST_Z + j * ROWS + row];
        }
        adam(FIRST_B + j, g);
    }
}
