// Where pooled output channel c at (py, px) of image row b goes: channels-last, the next
// convolution's input.
fn output_index(b: u32, py: u32, px: u32, c: u32) -> u32 {
    return ((b * POOLED + py) * POOLED + px) * (4u * OC4) + c;
}
