// Where pooled output channel c at (py, px) of image row b goes: the dense layer's input
// features, [ROWS, channels × POOLED × POOLED] in burn's flattening order (channel, row,
// column), as the CNN's `reshape` lays them out.
fn output_index(b: u32, py: u32, px: u32, c: u32) -> u32 {
    return b * (4u * OC4 * POOLED * POOLED) + (c * POOLED + py) * POOLED + px;
}
