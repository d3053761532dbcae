// A convolution's weight gradient sums, as cnn_conv_weights.wgsl's workgroups keep them, and
// Adam on them. Shared by cnn_conv_weights.wgsl and cnn_conv_weights_sum.wgsl.

const IC4: u32 = {{ ic4 }}u;
// Input channels that are not padding (the first convolution's 1 of 4).
const IC_REAL: u32 = {{ ic_real }}u;
const OC4: u32 = {{ oc4 }}u;
const WEIGHTS: u32 = {{ w_at4 }}u;
const BIAS: u32 = {{ b_at4 }}u;
// Workgroups of sums: four input channels × a kernel row × eight output channels each.
const GROUPS: u32 = IC4 * 3u * (OC4 / 2u);
// Slices of the positions (1: the workgroups sum them all and apply Adam themselves).
const SLICES: u32 = {{ slices }}u;

// Per invocation: for each of the workgroup's two groups of four output channels, 3 taps × 4
// input channels of weight sums (vec4s over the output channels), then the two bias sums.
const SUMS: u32 = 26u;

// Adam on sum `e` of group `g`: sums 0-23 a tap and input channel of one of the two vec4s of
// output channels, 24 and 25 their biases (applied by the groups of the first input channels
// and kernel row only); the padding input channels' weights stay zero.
fn apply(g: u32, e: u32, sum: vec4<f32>) {
    let pairs = OC4 / 2u;
    let o = 2u * (g % pairs);
    let ky = (g / pairs) % 3u;
    let q = g / (pairs * 3u);
    let which = e / 12u;
    let k = e % 12u;
    if (e < 24u && 4u * q + k % 4u < IC_REAL) {
        let ic = 4u * q + k % 4u;
        adam(WEIGHTS + (ic * 9u + ky * 3u + k / 4u) * OC4 + o + which, sum);
    } else if (e >= 24u && q == 0u && ky == 0u) {
        adam(BIAS + o + e - 24u, sum);
    }
}
