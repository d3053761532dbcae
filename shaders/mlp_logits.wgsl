// A row's logits, z[at .. at + CLASSES]: their log-sum-exp, computed from the largest as burn's
// log_softmax does, and their arg-max (the first of equal largest). Shared by mlp_head.wgsl and
// mlp_eval.wgsl, which declare `z`.
struct Logits {
    log_total: f32,
    best: u32,
}

fn read_logits(at: u32) -> Logits {
    var top = z[at];
    var best = 0u;
    for (var c = 1u; c < CLASSES; c++) {
        if (z[at + c] > top) {
            top = z[at + c];
            best = c;
        }
    }
    var total = 0.0;
    for (var c = 0u; c < CLASSES; c++) {
        total += exp(z[at + c] - top);
    }
    return Logits(top + log(total), best);
}
