// Adam's update of one parameter (f32 in mlp_gradients.wgsl) or four (vec4<f32> in
// mlp_update.wgsl and the CNN's weight kernels), as burn's Adam and AdamW compute it
// (burn-optim adam.rs, adamw.rs), in the same order of operations. Prepended to those
// kernels, which declare `step`, `params`, `m` and `v` as arrays of that type.

// The constants are given as their f32 bits, so they are burn's to the last bit (WGSL cannot
// bitcast in a constant expression, hence the lets).
fn adam(p: u32, g: {{ value }}) {
    let beta1 = bitcast<f32>({{ beta1 }}u);
    let beta2 = bitcast<f32>({{ beta2 }}u);
    let one_minus_beta1 = bitcast<f32>({{ one_minus_beta1 }}u);
    let one_minus_beta2 = bitcast<f32>({{ one_minus_beta2 }}u);
    let m1 = m[p] * beta1 + g * one_minus_beta1;
    let m2 = v[p] * beta2 + (g * g) * one_minus_beta2;
    m[p] = m1;
    v[p] = m2;
    let update = (m1 * bitcast<f32>(step[STEP_CORRECTION]))
        / (sqrt(m2) + bitcast<f32>(step[STEP_EPSILON]));
    params[p] = params[p] * bitcast<f32>(step[STEP_DECAY]) - update * bitcast<f32>(step[STEP_LR]);
}
