//! Loss and accuracy: computed per batch on the device, summed there, read back once per pass.
//!
//! Every batch has a fixed shape; rows past the end of the data are padding with weight 0,
//! so the sums below count real images only.

use burn::tensor::activation::log_softmax;
use burn::tensor::{Int, Tensor};

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

/// Why metrics could not be read back from the device.
#[derive(Debug, thiserror::Error)]
#[error("reading metrics back from the device: {0}")]
pub struct ReadError(String);

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

    /// Reads the sums back (one device sync) and turns them into means.
    pub fn finish(self) -> Result<Metrics, ReadError> {
        let Some(sums) = self.sums else {
            return Ok(Metrics {
                loss: f64::NAN,
                accuracy: f64::NAN,
                count: 0,
            });
        };
        let values = sums
            .into_data()
            .convert::<f64>()
            .try_to_vec::<f64>()
            .map_err(|e| ReadError(format!("{e:?}")))?;
        let n = self.count as f64;
        Ok(Metrics {
            loss: values[0] / n,
            accuracy: values[1] / n,
            count: self.count,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::{Device, TensorData};

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
        let m = acc.finish().unwrap();
        let ln = |x: f64| x.ln();
        // -log softmax: row 0 picks 2 of (2, 0); row 1 picks 0 of (3, 0).
        let expected = (-(2.0 - ln(2f64.exp() + 1.0)) - (0.0 - ln(3f64.exp() + 1.0))) / 2.0;
        assert!((m.loss - expected).abs() < 1e-5, "{} vs {expected}", m.loss);
        assert_eq!(m.accuracy, 0.5);
        assert_eq!(m.count, 2);
    }
}
