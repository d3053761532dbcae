// Fused evaluation, last kernel, a block of BLOCK rows a workgroup: every dense layer after
// the first, forward, then each row's cross-entropy, whether its arg-max is the label, and the arg-max itself,
// into `results` ([ROWS, 3] words: loss as f32 bits, hit 0 or 1, predicted digit; zero for
// padding rows). The host adds them up. The per-layer passes are those of mlp_head.wgsl.

@group(0) @binding(0) var<storage, read_write> labels: array<u32>;
@group(0) @binding(1) var<storage, read_write> step: array<u32>;
@group(0) @binding(2) var<storage, read_write> params: array<f32>;
@group(0) @binding(3) var<storage, read_write> z: array<f32>;
@group(0) @binding(4) var<storage, read_write> results: array<u32>;

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
    for (var r = lane; r < BLOCK; r += WORKGROUP) {
        let row = first + r;
        let at = {{ logits }}u + row * CLASSES;
        let image = step[ROWS_AT + row];
        if (image >= COUNT) {
            results[3u * row] = 0u;
            results[3u * row + 1u] = 0u;
            results[3u * row + 2u] = 0u;
            continue;
        }
        let label = labels[image];
        let row_logits = read_logits(at);
        results[3u * row] = bitcast<u32>(row_logits.log_total - z[at + label]);
        results[3u * row + 1u] = select(0u, 1u, row_logits.best == label);
        results[3u * row + 2u] = row_logits.best;
    }
}
