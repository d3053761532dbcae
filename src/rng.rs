//! Every seeded random stream of a run, in one place: the initial weights, the shuffle of each
//! epoch, the shifts of each image, the dropout masks of each step. Each is a pure function of
//! the seed and its position (epoch, step, image), never of a generator's state, so a run
//! reproduces exactly on any backend and a resumed run draws what the uninterrupted one would.

use rand::SeedableRng;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;

/// The generator the initial weights are drawn from (on the host, so every backend starts
/// from the same weights).
pub fn weights(seed: u64) -> StdRng {
    StdRng::seed_from_u64(seed)
}

/// The generator of the validation and test images drawn from a folder without its own
/// splits: a fixed seed, not the recipe's, so that runs with different `--seed`s share them.
pub fn splits() -> StdRng {
    StdRng::seed_from_u64(0x5EED_DA7A)
}

/// The shuffled order of `n` images for `epoch`: a pure function of (seed, epoch), so a run
/// reproduces exactly on any backend and resumes without any generator state.
pub fn epoch_order(n: usize, seed: u64, epoch: usize) -> Vec<u32> {
    let mut order: Vec<u32> = (0..n as u32).collect();
    // Distinct, well-mixed streams per epoch (the golden-ratio increment of SplitMix64).
    let stream = seed ^ (epoch as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    order.shuffle(&mut StdRng::seed_from_u64(stream));
    order
}

/// The stream of an epoch's image shifts: another than the shuffle's, fixed by (seed, epoch).
pub fn shift_stream(seed: u64, epoch: usize) -> u64 {
    !seed ^ (epoch as u64).wrapping_mul(0xD1B5_4A32_D192_ED03)
}

/// Sets the dropout streams apart from the others.
const DROPOUT_STREAM: u64 = 0x5DEE_CE66_D1CE_5EED;

/// The stream of training step `step`'s dropout masks (0-based within `epoch`).
pub fn dropout_stream(seed: u64, epoch: usize, step: usize) -> u64 {
    random_bits(seed ^ DROPOUT_STREAM, ((epoch as u64) << 32) | step as u64)
}

/// Inverted-dropout factors for one training step, one `batch × width` row-major vector per
/// width in `widths`: each entry 0 with probability `rate`, else 1 / (1 − `rate`), so the
/// expected activation is unchanged and evaluation needs no rescaling. Drawn on the host from
/// `stream` (a pure function of seed, epoch and step), so every backend and both training
/// steps drop the same units, and a resumed run drops what the uninterrupted one would have.
pub fn dropout_factors(widths: &[usize], batch: usize, rate: f64, stream: u64) -> Vec<Vec<f32>> {
    let keep = (1.0 / (1.0 - rate)) as f32;
    let mut drawn = 0u64;
    widths
        .iter()
        .map(|&width| {
            (0..batch * width)
                .map(|_| {
                    drawn += 1;
                    // The top 53 bits as a uniform number in [0, 1).
                    let u = (random_bits(stream, drawn) >> 11) as f64 / (1u64 << 53) as f64;
                    if u < rate { 0.0 } else { keep }
                })
                .collect()
        })
        .collect()
}

/// 64 random bits, a pure function of (`stream`, `i`): SplitMix64's output for element `i` of
/// the stream. Drawing with it, a pass is reproducible and a resumed run draws the same.
pub fn random_bits(stream: u64, i: u64) -> u64 {
    let mut z = stream.wrapping_add(i.wrapping_add(1).wrapping_mul(0x9E37_79B9_7F4A_7C15));
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn epoch_order_is_a_seeded_permutation() {
        let a = epoch_order(1000, 42, 1);
        let mut sorted = a.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, (0..1000).collect::<Vec<u32>>());
        assert_eq!(a, epoch_order(1000, 42, 1));
        assert_ne!(a, epoch_order(1000, 42, 2));
        assert_ne!(a, epoch_order(1000, 43, 1));
    }

    #[test]
    fn dropout_masks_drop_at_the_rate_and_keep_the_mean() {
        let masks = dropout_factors(&[128, 30], 64, 0.25, 7);
        assert_eq!(masks.len(), 2);
        assert_eq!((masks[0].len(), masks[1].len()), (64 * 128, 64 * 30));
        let values = &masks[0];
        let dropped = values.iter().filter(|v| **v == 0.0).count() as f64 / values.len() as f64;
        assert!((dropped - 0.25).abs() < 0.03, "{dropped}");
        assert!(
            values
                .iter()
                .all(|v| *v == 0.0 || (*v - 4.0 / 3.0).abs() < 1e-6)
        );
        // A pure function of the stream; another stream, other masks.
        let again = dropout_factors(&[128, 30], 64, 0.25, 7);
        let other = dropout_factors(&[128, 30], 64, 0.25, 8);
        assert_eq!(masks[1], again[1]);
        assert_ne!(masks[0], other[0]);
        // The layers draw different numbers.
        assert_ne!(masks[0][..30], masks[1][..30]);
    }
}
