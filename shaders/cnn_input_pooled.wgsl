// A convolution's input: the layer below's pooled output, `below`, [ROWS, SIDE_IN, SIDE_IN,
// IC4] vec4s.
fn input(b: u32, y: i32, x: i32, q: u32) -> vec4<f32> {
    if (y < 0 || x < 0 || y >= i32(SIDE_IN) || x >= i32(SIDE_IN)) {
        return vec4<f32>(0.0);
    }
    return below[((b * SIDE_IN + u32(y)) * SIDE_IN + u32(x)) * IC4 + q];
}
