// Fused MLP step, kernel 2 of 4: for a block of BLOCK rows a workgroup (the rows are
// independent until their gradients are summed), every dense layer after the first, forward;
// softmax cross-entropy, each row's loss and hit, and the loss gradient; then the backward
// pass down to the first layer's pre-activations, with the weights as they were before this
// step. mlp_gradients.wgsl then sums the gradients over the rows and applies Adam.
//
// The per-layer passes are written out for each layer by the host (mlp_head_forward.wgsl,
// mlp_head_backward.wgsl), every offset and width a constant.

@group(0) @binding(0) var<storage, read_write> labels: array<u32>;
@group(0) @binding(1) var<storage, read_write> step: array<u32>;
@group(0) @binding(2) var<storage, read_write> params: array<f32>;
@group(0) @binding(3) var<storage, read_write> z: array<f32>;
@group(0) @binding(4) var<storage, read_write> d: array<f32>;
// Each row's loss and hit (0 or 1; both 0 for padding rows), for mlp_gradients.wgsl's sums.
@group(0) @binding(5) var<storage, read_write> losses: array<vec2<f32>>;

const WORKGROUP: u32 = {{ workgroup }}u;
const BLOCK: u32 = {{ block }}u;

@compute @workgroup_size({{ workgroup }}, 1, 1)
fn main(
    @builtin(workgroup_id) group: vec3<u32>,
    @builtin(local_invocation_index) lane: u32,
) {
    // The weights are bound even when no later layer reads them (an MLP without hidden
    // layers): the pipeline's layout follows the resources the shader uses.
    _ = &params;
    let first = group.x * BLOCK;
{{ forward }}
    // Softmax cross-entropy on the logits, and its gradient, scaled by 1 / real rows.
    let real = f32(step[STEP_REAL]);
    let smoothing = bitcast<f32>(step[STEP_SMOOTHING]);
    for (var r = lane; r < BLOCK; r += WORKGROUP) {
        let row = first + r;
        let at = {{ logits }}u + row * CLASSES;
        let image = step[ROWS_AT + row];
        if (image >= COUNT) {
            for (var c = 0u; c < CLASSES; c++) {
                d[{{ d_logit }}] = 0.0;
            }
            losses[row] = vec2<f32>(0.0);
            continue;
        }
        let label = labels[image];
        let row_logits = read_logits(at);
        let log_total = row_logits.log_total;
        losses[row] = vec2<f32>(log_total - z[at + label], select(0.0, 1.0, row_logits.best == label));
        for (var c = 0u; c < CLASSES; c++) {
            var want = smoothing / f32(CLASSES);
            if (c == label) {
                want += 1.0 - smoothing;
            }
            d[{{ d_logit }}] = (exp(z[at + c] - log_total) - want) / real;
        }
    }
    storageBarrier();
{{ backward }}
}
