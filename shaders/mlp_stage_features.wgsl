// The CNN's dense input: the features its last convolution wrote into x.
fn stage(row: u32, q: u32) -> vec4<f32> {
    return x[row * QUADS + q];
}
