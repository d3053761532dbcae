//! Loss and accuracy: computed per batch on the device, summed there, read back once per pass.
//!
//! Every batch has a fixed shape; rows past the end of the data are padding with weight 0,
//! so the sums below count real images only.

use burn::tensor::activation::log_softmax;
use burn::tensor::{Device, Int, Tensor, TensorData};

use crate::backend::read::ReadError;
use crate::backend::read::read_floats;

/// Sum over the batch of `weight × cross-entropy(softmax(logits), label)`, shape `[1]`.
/// Differentiable: divided by the number of real images it is the training loss.
pub fn weighted_nll_sum(
    logits: Tensor<2>,
    labels: Tensor<1, Int>,
    weights: Tensor<1>,
) -> Tensor<1> {
    let [batch, _] = logits.dims();
    let picked = log_softmax(logits, 1)
        .gather(1, labels.reshape([batch, 1]))
        .reshape([batch]);
    (picked * weights).sum().neg()
}

/// Sum over the batch of `weight × cross-entropy(softmax(logits), uniform over the digits)`,
/// shape `[1]`: the part of the label-smoothed loss that does not depend on the label.
pub fn weighted_uniform_ce_sum(logits: Tensor<2>, weights: Tensor<1>) -> Tensor<1> {
    let [batch, classes] = logits.dims();
    let mean = log_softmax(logits, 1)
        .sum_dim(1)
        .reshape([batch])
        .div_scalar(classes as f32);
    (mean * weights).sum().neg()
}

/// Number of real images whose arg-max logit is the label, as a float tensor of shape `[1]`.
pub fn weighted_correct(
    logits: Tensor<2>,
    labels: Tensor<1, Int>,
    weights: Tensor<1>,
) -> Tensor<1> {
    let [batch, _] = logits.dims();
    let hits = logits.argmax(1).reshape([batch]).equal(labels).float();
    (hits * weights).sum()
}

/// Loss and accuracy over a pass through a dataset.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Metrics {
    /// Mean cross-entropy per image.
    pub loss: f64,
    /// Fraction of images classified correctly.
    pub accuracy: f64,
    /// Number of images.
    pub count: usize,
}

/// Sums of per-batch loss and hit counts, kept on the device so the training loop never waits
/// for a read-back.
#[derive(Debug, Default)]
pub struct Accumulator {
    sums: Option<Tensor<1>>,
    count: usize,
}

impl Accumulator {
    /// Adds one batch: its loss sum and correct count (both `[1]`, without autodiff) and its
    /// number of real images.
    pub fn add(&mut self, nll_sum: Tensor<1>, correct: Tensor<1>, count: usize) {
        let pair = Tensor::cat(vec![nll_sum, correct], 0);
        self.sums = Some(match self.sums.take() {
            Some(sums) => sums + pair,
            None => pair,
        });
        self.count += count;
    }

    /// An accumulator that carries on from sums read with [`RunningSums::sums`].
    pub fn from_sums(sums: [f32; 2], count: usize, device: &Device) -> Self {
        Self {
            sums: (count > 0)
                .then(|| Tensor::from_data(TensorData::new(sums.to_vec(), [2]), device)),
            count,
        }
    }
}

/// An epoch's running loss and hit sums, wherever they are kept (read back rarely: each read
/// waits for the device).
pub trait RunningSums {
    /// The raw sums `[loss sum, correct]` exactly as the device holds them, and the image
    /// count (one device sync). Saved and restored, they let a pass stop and resume with
    /// bit-identical results.
    fn sums(&self) -> Result<([f32; 2], usize), ReadError>;

    /// The means so far (one device sync).
    fn metrics(&self) -> Result<Metrics, ReadError> {
        let ([loss, correct], count) = self.sums()?;
        let n = count as f64;
        Ok(Metrics {
            loss: f64::from(loss) / n,
            accuracy: f64::from(correct) / n,
            count,
        })
    }
}

impl RunningSums for Accumulator {
    fn sums(&self) -> Result<([f32; 2], usize), ReadError> {
        let Some(sums) = &self.sums else {
            return Ok(([0.0; 2], 0));
        };
        let values = read_floats(sums.clone())?;
        match values[..] {
            [loss, correct] => Ok(([loss, correct], self.count)),
            _ => Err(ReadError::new(format!(
                "expected 2 sums, got {}",
                values.len()
            ))),
        }
    }
}

/// Counts of (true class, predicted class) pairs, and the per-class figures derived from them.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Confusion {
    /// `counts[true][predicted]`, a row per class.
    pub counts: Vec<Vec<u32>>,
}

/// Precision, recall and accuracy of one class.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ClassStats {
    /// The class (its label; `digit` for MNIST's sake).
    pub digit: usize,
    /// Images of this class.
    pub support: u32,
    /// Of the images predicted as this digit, the fraction that are (`None` if none was).
    pub precision: Option<f64>,
    /// Of the images of this digit, the fraction predicted as it (`None` if there are none).
    pub recall: Option<f64>,
    /// Of all images, the fraction classified right with respect to this digit
    /// (true positives and true negatives), the one-vs-rest accuracy.
    pub accuracy: f64,
}

impl Confusion {
    /// Tallies `truth` against `predicted` (equal lengths, labels below `classes`).
    pub fn new(truth: &[u8], predicted: &[u8], classes: usize) -> Self {
        let mut counts = vec![vec![0u32; classes]; classes];
        for (&t, &p) in truth.iter().zip(predicted) {
            if let Some(cell) = counts
                .get_mut(usize::from(t))
                .and_then(|row| row.get_mut(usize::from(p)))
            {
                *cell += 1;
            }
        }
        Self { counts }
    }

    /// Number of classes.
    pub fn classes(&self) -> usize {
        self.counts.len()
    }

    /// Number of images tallied.
    pub fn total(&self) -> u32 {
        self.counts.iter().flatten().sum()
    }

    /// Per-class precision, recall and one-vs-rest accuracy.
    pub fn per_class(&self) -> Vec<ClassStats> {
        let total = f64::from(self.total());
        (0..self.classes())
            .map(|d| {
                let tp = f64::from(self.counts[d][d]);
                let actual: f64 = self.counts[d].iter().map(|&c| f64::from(c)).sum();
                let predicted: f64 = self.counts.iter().map(|row| f64::from(row[d])).sum();
                let fp = predicted - tp;
                let fn_ = actual - tp;
                ClassStats {
                    digit: d,
                    support: actual as u32,
                    precision: (predicted > 0.0).then(|| tp / predicted),
                    recall: (actual > 0.0).then(|| tp / actual),
                    accuracy: (total - fp - fn_) / total,
                }
            })
            .collect()
    }

    /// The matrix and the per-class figures as a plain-text table, the classes by `names`
    /// (their numbers past the names).
    pub fn table(&self, names: &[String]) -> String {
        let name = |d: usize| names.get(d).cloned().unwrap_or_else(|| d.to_string());
        let width = (0..self.classes())
            .map(|d| name(d).chars().count() + 1)
            .max()
            .unwrap_or(0)
            .max(6);
        let first = width.max(9);
        let mut out = format!("{:<first$}", "true\\pred");
        for d in 0..self.classes() {
            out += &format!("{:>width$}", name(d));
        }
        out += "   precision  recall  accuracy  support\n";
        for (d, stats) in self.per_class().iter().enumerate() {
            out += &format!("{:>first$}", name(d));
            for c in &self.counts[d] {
                out += &format!("{c:>width$}");
            }
            let or_dash = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.4}"));
            out += &format!(
                "   {:>9}  {:>6}  {:>8.4}  {:>7}\n",
                or_dash(stats.precision),
                or_dash(stats.recall),
                stats.accuracy,
                stats.support
            );
        }
        out
    }
}

/// Rounds for display in the logs (the run's records keep full precision).
pub fn round(x: f64, digits: i32) -> f64 {
    let scale = 10f64.powi(digits);
    (x * scale).round() / scale
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn padding_rows_do_not_count() {
        let device = Device::flex();
        // Two real rows (label 0 right, label 1 wrong) and one padding row.
        let logits = Tensor::<2>::from_data(
            TensorData::new(vec![2.0f32, 0.0, 3.0, 0.0, 9.0, -9.0], [3, 2]),
            &device,
        );
        let labels = Tensor::<1, Int>::from_data(TensorData::new(vec![0i64, 1, 1], [3]), &device);
        let weights = Tensor::<1>::from_data(TensorData::new(vec![1.0f32, 1.0, 0.0], [3]), &device);
        let nll = weighted_nll_sum(logits.clone(), labels.clone(), weights.clone());
        let correct = weighted_correct(logits, labels, weights);
        let mut acc = Accumulator::default();
        acc.add(nll, correct, 2);
        let m = acc.metrics().unwrap();
        let ln = |x: f64| x.ln();
        // -log softmax: row 0 picks 2 of (2, 0); row 1 picks 0 of (3, 0).
        let expected = (-(2.0 - ln(2f64.exp() + 1.0)) - (0.0 - ln(3f64.exp() + 1.0))) / 2.0;
        assert!((m.loss - expected).abs() < 1e-5, "{} vs {expected}", m.loss);
        assert_eq!(m.accuracy, 0.5);
        assert_eq!(m.count, 2);
    }

    #[test]
    fn uniform_cross_entropy_is_the_mean_negative_log_probability() {
        let device = Device::flex();
        // Two real rows and one padding row of three classes.
        let logits = Tensor::<2>::from_data(
            TensorData::new(
                vec![1.0f32, 2.0, 3.0, 0.0, 0.0, 0.0, 5.0, -5.0, 0.0],
                [3, 3],
            ),
            &device,
        );
        let weights = Tensor::<1>::from_data(TensorData::new(vec![1.0f32, 1.0, 0.0], [3]), &device);
        let got: f32 = weighted_uniform_ce_sum(logits, weights).into_scalar();
        let lse = |r: [f64; 3]| r.iter().map(|x| x.exp()).sum::<f64>().ln();
        // Row 0: mean of (lse - x); row 1: log 3 (all equal).
        let expected = (lse([1.0, 2.0, 3.0]) - 2.0) + 3f64.ln();
        assert!(
            (f64::from(got) - expected).abs() < 1e-5,
            "{got} vs {expected}"
        );
    }

    #[test]
    fn confusion_counts_and_per_class_figures() {
        let truth = [0u8, 0, 1, 1, 1, 2];
        let predicted = [0u8, 1, 1, 1, 2, 2];
        let c = Confusion::new(&truth, &predicted, 10);
        assert_eq!(c.total(), 6);
        assert_eq!(c.counts[0][1], 1);
        assert_eq!(c.counts[1][1], 2);
        let s = c.per_class();
        assert_eq!(s[1].support, 3);
        assert!((s[1].precision.unwrap() - 2.0 / 3.0).abs() < 1e-12);
        assert!((s[1].recall.unwrap() - 2.0 / 3.0).abs() < 1e-12);
        assert!((s[2].precision.unwrap() - 0.5).abs() < 1e-12);
        // Digit 0: one false negative, no false positive: 5 of 6 right one-vs-rest.
        assert!((s[0].accuracy - 5.0 / 6.0).abs() < 1e-12);
        assert_eq!((s[5].precision, s[5].recall), (None, None));
        let table = c.table(&[]);
        assert_eq!(table.lines().count(), 11);
        assert!(table.contains("precision"));
        let names: Vec<String> = ["cat", "dog", "T-shirt/top"].map(String::from).to_vec();
        let named = Confusion::new(&truth, &predicted, 3).table(&names);
        assert_eq!(named.lines().count(), 4);
        assert!(
            named
                .lines()
                .nth(3)
                .unwrap()
                .trim_start()
                .starts_with("T-shirt/top"),
            "{named}"
        );
    }
}
