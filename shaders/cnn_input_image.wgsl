// The first convolution's input: the batch's images as cnn_gather.wgsl left them, `image`,
// [ROWS, SIDE_IN, SIDE_IN] f32, one channel padded to four with zeros (the padding channels'
// weights are zero and stay zero; the kernels skip them).
fn input(b: u32, y: i32, x: i32, q: u32) -> vec4<f32> {
    if (y < 0 || x < 0 || y >= i32(SIDE_IN) || x >= i32(SIDE_IN)) {
        return vec4<f32>(0.0);
    }
    return vec4<f32>(image[(b * SIDE_IN + u32(y)) * SIDE_IN + u32(x)], 0.0, 0.0, 0.0);
}
