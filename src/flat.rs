//! A model's weights and burn's Adam state as flat vectors in burn's module order, and back:
//! what the fused steps (the GPU's and the CPU's) take over when they start and write back
//! into burn's `Model` and `ModuleOptimizer` (the checkpoint's format) when they report.

use burn::module::{Module, ModuleMapper, ModuleVisitor, Param, ParamId};
use burn::optim::ModuleOptimizer;
use burn::tensor::{Bytes, Tensor, TensorData};

use crate::backend::read::ReadError;
use crate::model::Model;
use crate::recipe::{TrainConfig, optimizer};

/// Why burn's optimizer state could not be read into flat moments or written back.
#[derive(Debug, thiserror::Error)]
#[error("optimizer state: {0}")]
pub struct StateError(String);

/// A parameter's id and shape.
pub(crate) type ParamMeta = (ParamId, Vec<usize>);

/// Every parameter of `model` as one flat vector in module order, with each one's id and shape.
pub(crate) fn flat_parameters(model: &Model) -> Result<(Vec<ParamMeta>, Vec<f32>), ReadError> {
    struct Collect {
        meta: Vec<ParamMeta>,
        tensors: Vec<Tensor<1>>,
    }
    impl ModuleVisitor for Collect {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            let value = param.val();
            self.meta.push((param.id, value.dims().to_vec()));
            self.tensors.push(value.flatten(0, D - 1));
        }
    }
    let mut collect = Collect {
        meta: Vec::new(),
        tensors: Vec::new(),
    };
    model.visit(&mut collect);
    let values = crate::backend::read::read_floats(Tensor::cat(collect.tensors, 0).inner())?;
    Ok((collect.meta, values))
}

/// Every parameter's id and shape, in module order (nothing is read from the device).
pub(crate) fn param_meta(model: &Model) -> Vec<ParamMeta> {
    struct Collect(Vec<ParamMeta>);
    impl ModuleVisitor for Collect {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            self.0.push((param.id, param.val().dims().to_vec()));
        }
    }
    let mut collect = Collect(Vec::new());
    model.visit(&mut collect);
    collect.0
}

/// `model` with its parameters replaced, in module order, by consecutive runs of `values`;
/// ids, devices and autodiff kept.
pub(crate) fn set_flat_parameters(model: Model, values: &[f32]) -> Model {
    struct Replace<'a> {
        values: &'a [f32],
    }
    impl ModuleMapper for Replace<'_> {
        fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
            let values = &mut self.values;
            param.map(|tensor| {
                let dims = tensor.dims();
                let n = dims.iter().product::<usize>().min(values.len());
                let (mine, rest) = values.split_at(n);
                *values = rest;
                let fresh =
                    Tensor::from_data(TensorData::new(mine.to_vec(), dims), &tensor.device());
                if tensor.is_require_grad() {
                    fresh.require_grad()
                } else {
                    fresh
                }
            })
        }
    }
    model.map(&mut Replace { values })
}

/// Adam's state for every parameter as flat vectors in module order.
#[derive(Debug, Clone, PartialEq)]
pub struct Moments {
    /// Steps taken (the same for every parameter in `trainer`).
    pub time: usize,
    /// The first moments.
    pub first: Vec<f32>,
    /// The second moments.
    pub second: Vec<f32>,
}

/// Name of a parameter's Adam state entry in burn's optimizer record (`AdamState` and
/// `AdamWState` both hold an `AdaptiveMomentumState` named `momentum`).
fn momentum_key(id: ParamId, leaf: &str) -> String {
    format!("{}.momentum.{leaf}", id.val())
}

impl Moments {
    /// Reads burn's Adam (or AdamW) state for the parameters `meta` out of `optimizer`'s record;
    /// a parameter without state (a fresh optimizer) starts from zero moments.
    pub fn of(optimizer: &ModuleOptimizer, meta: &[ParamMeta]) -> Result<Self, StateError> {
        let bytes = optimizer
            .into_bytes()
            .map_err(|e| StateError(e.to_string()))?;
        let reader = burn_pack::Reader::from_bytes(bytes).map_err(|e| StateError(e.to_string()))?;
        let scalars = reader.scalars().clone();
        let mut tensors = std::collections::HashMap::new();
        for tensor in reader
            .into_tensors()
            .map_err(|e| StateError(e.to_string()))?
        {
            let (name, dtype, shape, _, bytes) =
                tensor.into_parts().map_err(|e| StateError(e.to_string()))?;
            let values = TensorData::from_bytes(bytes, shape, dtype)
                .convert::<f32>()
                .try_into_vec::<f32>()
                .map_err(|e| StateError(format!("{name}: {e:?}")))?;
            tensors.insert(name, values);
        }
        let mut moments = Self {
            time: 0,
            first: Vec::new(),
            second: Vec::new(),
        };
        let mut times = Vec::new();
        for (id, shape) in meta {
            let n = shape.iter().product::<usize>();
            let time = scalars
                .get(&momentum_key(*id, "time"))
                .map(|s| u64::try_from(*s).map_err(|e| StateError(e.to_string())))
                .transpose()?;
            times.push(time.unwrap_or(0) as usize);
            for (leaf, out) in [
                ("moment_1", &mut moments.first),
                ("moment_2", &mut moments.second),
            ] {
                match tensors.remove(&momentum_key(*id, leaf)) {
                    Some(values) if values.len() == n => out.extend(values),
                    Some(values) => {
                        return Err(StateError(format!(
                            "{leaf} of parameter {} has {} values, not {n}",
                            id.val(),
                            values.len()
                        )));
                    }
                    None => out.extend(std::iter::repeat_n(0.0, n)),
                }
            }
        }
        // trainer steps every parameter every time; anything else is not a state it wrote.
        match times.iter().min().zip(times.iter().max()) {
            Some((lo, hi)) if lo != hi => Err(StateError(format!(
                "parameters at different Adam steps ({lo} to {hi})"
            ))),
            _ => {
                moments.time = times.first().copied().unwrap_or(0);
                Ok(moments)
            }
        }
    }

    /// burn's optimizer for `config` holding this state for the parameters `meta`: the record
    /// burn's `ModuleOptimizer` writes, built directly.
    pub fn into_optimizer(
        self,
        config: &TrainConfig,
        meta: &[ParamMeta],
    ) -> Result<ModuleOptimizer, StateError> {
        let fresh = optimizer(config);
        if self.time == 0 {
            return Ok(fresh);
        }
        let mut tensors = Vec::new();
        let mut writer_scalars = Vec::new();
        let mut at = 0;
        for (id, shape) in meta {
            let n = shape.iter().product::<usize>();
            for (leaf, values) in [("moment_1", &self.first), ("moment_2", &self.second)] {
                let data = TensorData::new(values[at..at + n].to_vec(), shape.clone());
                let (bytes, shape, dtype) = data.into_parts();
                tensors.push(burn_pack::Tensor::new(
                    momentum_key(*id, leaf),
                    dtype,
                    shape,
                    Some(id.val()),
                    bytes,
                ));
            }
            writer_scalars.push((
                momentum_key(*id, "time"),
                burn_pack::Scalar::from(self.time),
            ));
            writer_scalars.push((
                format!("{}.__rank", id.val()),
                burn_pack::Scalar::from(shape.len()),
            ));
            at += n;
        }
        let writer = writer_scalars
            .iter()
            .fold(burn_pack::Writer::new(tensors), |w, (key, value)| {
                w.with_scalar(key, *value)
            });
        let bytes: Bytes = writer.into_bytes().map_err(|e| StateError(e.to_string()))?;
        fresh
            .from_bytes(bytes)
            .map_err(|e| StateError(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::optim::GradientsParams;
    use burn::tensor::Device;

    /// A model and an optimizer that has taken `steps` generic steps on random data.
    fn trained(config: &TrainConfig, steps: usize) -> (Model, ModuleOptimizer) {
        let device = Device::flex().autodiff();
        let mut model = Model::new(
            config.model,
            &config.hidden,
            &crate::data::DataInfo::mnist(),
            3,
            &device,
        )
        .unwrap();
        let mut optim = optimizer(config);
        for s in 0..steps {
            let x = Tensor::<2>::ones([4, 784], &device).mul_scalar(0.1 + s as f32);
            let loss = model.forward(x).powi_scalar(2).sum();
            let grads = GradientsParams::from_grads(loss.backward(), &model);
            model = optim.step(1e-3, model, grads);
        }
        (model, optim)
    }

    #[test]
    fn moments_round_trip_through_burns_optimizer_record() {
        for weight_decay in [0.0, 0.01] {
            let config = TrainConfig {
                hidden: vec![6, 5],
                weight_decay,
                ..TrainConfig::default()
            };
            let (model, optim) = trained(&config, 3);
            let (meta, values) = flat_parameters(&model).unwrap();
            assert_eq!(values.len(), 784 * 6 + 6 + 6 * 5 + 5 + 5 * 10 + 10);
            let moments = Moments::of(&optim, &meta).unwrap();
            assert_eq!(moments.time, 3);
            assert_eq!(moments.first.len(), values.len());
            assert!(moments.second.iter().any(|&v| v > 0.0));
            let rebuilt = moments.clone().into_optimizer(&config, &meta).unwrap();
            assert_eq!(Moments::of(&rebuilt, &meta).unwrap(), moments);
            // burn's next step from the rebuilt state is the step from the original one.
            let device = Device::flex().autodiff();
            let next = |mut optim: ModuleOptimizer| {
                let x = Tensor::<2>::ones([4, 784], &device);
                let loss = model.forward(x).powi_scalar(2).sum();
                let grads = GradientsParams::from_grads(loss.backward(), &model);
                let stepped = optim.step(1e-3, model.clone(), grads);
                flat_parameters(&stepped).unwrap().1
            };
            assert_eq!(next(optim), next(rebuilt));
        }
    }

    #[test]
    fn a_fresh_optimizer_has_zero_moments_and_back() {
        let config = TrainConfig::default();
        let (model, optim) = trained(&config, 0);
        let (meta, values) = flat_parameters(&model).unwrap();
        let moments = Moments::of(&optim, &meta).unwrap();
        assert_eq!(moments.time, 0);
        assert!(
            moments
                .first
                .iter()
                .chain(&moments.second)
                .all(|&v| v == 0.0)
        );
        assert_eq!(moments.first.len(), values.len());
        let rebuilt = moments.into_optimizer(&config, &meta).unwrap();
        assert_eq!(Moments::of(&rebuilt, &meta).unwrap().time, 0);
    }

    #[test]
    fn flat_parameters_write_back_in_place() {
        let config = TrainConfig {
            hidden: vec![3],
            ..TrainConfig::default()
        };
        let (model, _) = trained(&config, 1);
        let (meta, values) = flat_parameters(&model).unwrap();
        let doubled: Vec<f32> = values.iter().map(|v| v * 2.0).collect();
        let written = set_flat_parameters(model.clone(), &doubled);
        let (meta_after, after) = flat_parameters(&written).unwrap();
        assert_eq!(after, doubled);
        assert_eq!(meta_after, meta, "ids and shapes kept");
    }
}
