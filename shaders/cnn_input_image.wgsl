// The first convolution's input: the batch's images as cnn_gather.wgsl left them, `image`,
// [ROWS, CHANNELS, SIDE_IN, SIDE_IN] f32 (planar, as the images are kept), the channels
// padded to four with zeros (the padding channels' weights are zero and stay zero; the
// kernels skip them).
fn input(b: u32, y: i32, x: i32, q: u32) -> vec4<f32> {
    if (y < 0 || x < 0 || y >= i32(SIDE_IN) || x >= i32(SIDE_IN)) {
        return vec4<f32>(0.0);
    }
    let plane = SIDE_IN * SIDE_IN;
    let at = b * {{ channels }}u * plane + u32(y) * SIDE_IN + u32(x);
    var value = vec4<f32>(0.0);
    for (var c = 0u; c < {{ channels }}u; c++) {
        value[c] = image[at + c * plane];
    }
    return value;
}
