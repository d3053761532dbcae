//! Splits drawn from one set of labelled images: seeded, stratified by class (each class
//! gives its share), so that a folder without `valid/` or `test/` splits the same way every
//! run, whatever the recipe's seed.

use rand::seq::SliceRandom;

use super::DataError;
#[cfg(doc)]
use super::Split;

/// The default number of validation images of a training set of `n`: MNIST's 5,000, or a
/// tenth when there are fewer than 10,000.
pub fn default_valid(n: usize) -> usize {
    if n >= 10_000 { 5_000 } else { n / 10 }
}

/// The default number of test images drawn from a set of `n` without a test split: a tenth.
pub fn default_test(n: usize) -> usize {
    n / 10
}

/// Draws `take` of the images whose classes are `labels`, each class giving its share
/// (largest remainders first), chosen by [`crate::rng::splits`]; returns the positions in
/// `labels` of `(the rest, the drawn)`, each in order. Only labels are needed, so a split
/// can be laid out once, in its final order ([`Split::reorder`]). `what` names the flag for
/// the message when `take` leaves nothing.
pub fn stratified(
    labels: &[u8],
    take: usize,
    what: &str,
) -> Result<(Vec<usize>, Vec<usize>), DataError> {
    let n = labels.len();
    if take >= n {
        return Err(DataError::Split(format!(
            "{what} {take} leaves no training images out of {n}"
        )));
    }
    let classes = labels.iter().max().map_or(0, |&m| usize::from(m) + 1);
    let mut members: Vec<Vec<usize>> = vec![Vec::new(); classes];
    for (i, &label) in labels.iter().enumerate() {
        members[usize::from(label)].push(i);
    }
    // Each class's exact share, then the images left by rounding down to the classes with
    // the largest remainders (ties to the lower class).
    let exact: Vec<f64> = members
        .iter()
        .map(|m| m.len() as f64 * take as f64 / n as f64)
        .collect();
    let mut counts: Vec<usize> = exact.iter().map(|e| e.floor() as usize).collect();
    let mut order: Vec<usize> = (0..classes).collect();
    order.sort_by(|&a, &b| {
        let (ra, rb) = (exact[a] - exact[a].floor(), exact[b] - exact[b].floor());
        rb.total_cmp(&ra).then(a.cmp(&b))
    });
    let mut left = take - counts.iter().sum::<usize>();
    for &c in order.iter().cycle().take(classes * 2) {
        if left == 0 {
            break;
        }
        if counts[c] < members[c].len() {
            counts[c] += 1;
            left -= 1;
        }
    }
    let mut rng = crate::rng::splits();
    let mut drawn = vec![false; n];
    for (class, m) in members.iter_mut().enumerate() {
        m.shuffle(&mut rng);
        for &i in &m[..counts[class]] {
            drawn[i] = true;
        }
    }
    let rest: Vec<usize> = (0..n).filter(|&i| !drawn[i]).collect();
    let taken: Vec<usize> = (0..n).filter(|&i| drawn[i]).collect();
    Ok((rest, taken))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each class gives its share, the same images every time, and nothing is lost.
    #[test]
    fn a_stratified_draw_takes_each_class_share_reproducibly() {
        let labels: Vec<u8> = (0..100).map(|i| if i < 70 { 0 } else { 1 }).collect();
        let (rest, taken) = stratified(&labels, 10, "--test-size").unwrap();
        assert_eq!((rest.len(), taken.len()), (90, 10));
        assert_eq!(taken.iter().filter(|&&i| labels[i] == 0).count(), 7);
        assert_eq!(taken.iter().filter(|&&i| labels[i] == 1).count(), 3);
        let (_, again) = stratified(&labels, 10, "--test-size").unwrap();
        assert_eq!(again, taken);
        let mut all: Vec<usize> = rest.iter().chain(&taken).copied().collect();
        all.sort_unstable();
        assert_eq!(all, (0..100).collect::<Vec<usize>>());
        assert!(stratified(&labels, 100, "--test-size").is_err());
    }
}
