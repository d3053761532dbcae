//! Evaluation: loss, accuracy and each image's predicted digit, on validation or test images.

use super::TrainError;
use super::{Feed, StepMethod};
use crate::backend::read::read_ints;
use crate::backend::with_subnormals_flushed;
use crate::batch::EVAL_BATCH;
use crate::data::DataError;
use crate::loader::{Assembler, Loader};
use crate::metrics::{Accumulator, Metrics, RunningSums, weighted_correct, weighted_nll_sum};
use crate::model::Model;

/// One picture's class probabilities (`pixels`: the network's input in [0, 1]), computed as
/// in training and evaluation: what `predict` and the page's server answer.
pub fn probabilities(
    model: &Model,
    pixels: Vec<f32>,
    device: &burn::tensor::Device,
) -> Result<Vec<f32>, TrainError> {
    class_probabilities(model, pixels, 1, device)
}

/// The class probabilities of `rows` pictures (`pixels`: their inputs one after another),
/// row by row.
pub fn class_probabilities(
    model: &Model,
    pixels: Vec<f32>,
    rows: usize,
    device: &burn::tensor::Device,
) -> Result<Vec<f32>, TrainError> {
    use burn::tensor::activation::softmax;
    use burn::tensor::{Tensor, TensorData};
    with_subnormals_flushed(|| {
        let n = pixels.len() / rows.max(1);
        let x = Tensor::<2>::from_data(TensorData::new(pixels, [rows, n]), device);
        crate::backend::read::read_floats(softmax(model.forward(x), 1))
    })
    .map_err(TrainError::Read)
}

/// Loss and accuracy of `model` (without autodiff) on the images of `data`, in fixed-shape
/// batches, and each image's predicted digit: by the fused step's forward kernels when the
/// run takes the fused step (`feed.step`, as [`super::decide_step`] settled it), otherwise by
/// burn's.
pub fn evaluate(
    model: &Model,
    data: &Assembler,
    feed: &Feed,
) -> Result<(Metrics, Vec<u8>), TrainError> {
    with_subnormals_flushed(|| evaluate_flushed(model, data, feed))
}

fn evaluate_flushed(
    model: &Model,
    data: &Assembler,
    feed: &Feed,
) -> Result<(Metrics, Vec<u8>), TrainError> {
    if data.is_empty() {
        return Err(DataError::Split("there are no images to evaluate on".into()).into());
    }
    // The run took the fused step: its forward kernels evaluate on the resident images.
    if feed.step == StepMethod::Fused
        && let Assembler::Resident(resident, None) = data
    {
        return Ok(crate::gpu::fused::evaluate(model, resident)?);
    }
    // The fused CPU step's forward pass, on flex.
    if feed.step == StepMethod::Fused
        && let Assembler::Host { split, device } = data
        && crate::cpu::fused::on_flex(device)
        && crate::cpu::fused::fits(model, split.shape.pixels()).is_ok()
    {
        return Ok(crate::cpu::fused::evaluate(model, split, EVAL_BATCH)?);
    }
    let prefetch = feed.prefetch;
    let mut sums = Accumulator::default();
    let mut predicted = Vec::with_capacity(data.len());
    let batch = EVAL_BATCH.min(data.len()).max(1);
    let order = (0..data.len() as u32).collect();
    let mut loader = Loader::new(data.clone(), order, batch, prefetch);
    for b in loader.by_ref() {
        let logits = model.forward(b.images);
        let nll = weighted_nll_sum(logits.clone(), b.labels.clone(), b.weights.clone());
        let argmax = read_ints(logits.clone().argmax(1))?;
        predicted.extend(argmax.iter().take(b.real).map(|&d| d as u8));
        sums.add(nll, weighted_correct(logits, b.labels, b.weights), b.real);
    }
    loader.finish()?;
    Ok((sums.metrics()?, predicted))
}
