//! The recipe: everything that decides what is trained and how (network, optimizer, rates,
//! regularisation, data split, seed), its defaults, and the optimizer it makes.

use std::collections::BTreeSet;

use burn::optim::{AdamConfig, AdamWConfig, ModuleOptimizer};
use serde::{Deserialize, Serialize};

use crate::model::Architecture;

/// The recipe: everything that decides what is trained and how.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainConfig {
    /// Which network (the article's MLP by default).
    #[serde(default)]
    pub model: Architecture,
    /// The MLP's hidden layer widths (`[30, 10]` in the article).
    pub hidden: Vec<usize>,
    /// Passes over the training set.
    pub epochs: usize,
    /// Images per training step.
    pub batch_size: usize,
    /// Adam's learning rate (the peak, with a schedule).
    pub lr: f64,
    /// How the learning rate changes over the run.
    #[serde(default)]
    pub schedule: Schedule,
    /// Largest random shift of a training image, in pixels (0: none).
    #[serde(default)]
    pub augment: usize,
    /// Decoupled weight decay per unit of learning rate (AdamW; 0: plain Adam, the article).
    #[serde(default)]
    pub weight_decay: f64,
    /// Dropout rate on the hidden dense layers while training (0: none, the article).
    #[serde(default)]
    pub dropout: f64,
    /// Label smoothing ε: the training target puts 1 − ε on the label and ε spread evenly over
    /// all ten digits (0: none, the article). Reported losses stay plain cross-entropy.
    #[serde(default)]
    pub label_smoothing: f64,
    /// Seed for the initial weights and the shuffles.
    pub seed: u64,
    /// Validation images: the last of the training file (IDX, CSV), or drawn per class from
    /// a folder without `valid/`.
    pub valid_size: usize,
    /// Test images drawn per class from a folder (or one CSV file) without its own test
    /// split (`None`: a tenth of the images).
    #[serde(default)]
    pub test_size: Option<usize>,
    /// Train on only the first N training images (after the validation split).
    pub train_limit: Option<usize>,
    /// Test on only the first N test images.
    pub test_limit: Option<usize>,
    /// Stop when the validation loss has not improved for this many epochs, and go back to
    /// the weights of the best epoch (`None`: run every epoch, as the article does).
    pub patience: Option<usize>,
    /// The safetensors file (PyTorch's layout) the weights started from, instead of the
    /// seed's Glorot draw (`None`: the seed's).
    #[serde(default)]
    pub init_from: Option<std::path::PathBuf>,
}

/// How the learning rate changes over a run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Schedule {
    /// The same rate throughout (the article)
    #[default]
    Constant,
    /// Cosine decay from --lr to 0 over all the run's steps
    Cosine,
}

impl Schedule {
    /// The rate for step `step` (0-based, counted over the whole run) of `total`.
    pub fn rate(self, lr: f64, step: usize, total: usize) -> f64 {
        match self {
            Self::Constant => lr,
            Self::Cosine => {
                let progress = step as f64 / total.max(1) as f64;
                0.5 * lr * (1.0 + (std::f64::consts::PI * progress.min(1.0)).cos())
            }
        }
    }
}

impl TrainConfig {
    /// The default recipe for `model`, the one place the defaults are written: for the MLP the
    /// article's, as Keras runs it; the CNN is near its best after 10 epochs, with a cosine
    /// schedule and shifts of up to 2 pixels.
    pub fn defaults(model: Architecture) -> Self {
        let article = Self {
            model: Architecture::Mlp,
            hidden: vec![30, 10],
            epochs: 30,
            batch_size: 32,
            lr: 1e-3,
            schedule: Schedule::Constant,
            augment: 0,
            weight_decay: 0.0,
            dropout: 0.0,
            label_smoothing: 0.0,
            seed: 42,
            valid_size: 5000,
            test_size: None,
            train_limit: None,
            test_limit: None,
            patience: None,
            init_from: None,
        };
        match model {
            Architecture::Mlp => article,
            Architecture::Cnn => Self {
                model,
                hidden: Vec::new(),
                epochs: 10,
                schedule: Schedule::Cosine,
                augment: 2,
                ..article
            },
        }
    }
}

/// One field in which two recipes differ, named by the flag that sets it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldDifference {
    /// The flag, as written (`--lr`).
    pub flag: String,
    /// The value in the recorded recipe, as a flag's value is written.
    pub recorded: String,
    /// The value in the recipe asked for.
    pub asked: String,
}

/// The flag that sets the recipe field `field` (its serialized name): the field's name in
/// kebab case, the one field named otherwise excepted.
pub fn flag_of(field: &str) -> String {
    match field {
        "schedule" => "--lr-schedule".into(),
        other => format!("--{}", other.replace('_', "-")),
    }
}

/// A recipe value as its flag's value is written: lists comma-separated, nothing as `none`.
fn flag_value(value: &serde_json::Value) -> String {
    use serde_json::Value;
    match value {
        Value::Null => "none".into(),
        Value::String(s) => s.clone(),
        Value::Array(items) => items.iter().map(flag_value).collect::<Vec<_>>().join(","),
        other => other.to_string(),
    }
}

impl TrainConfig {
    /// This recipe for the network `model` with the hidden widths `hidden`: the fields whose
    /// defaults depend on the network (epochs, the learning-rate schedule, the shifts) take
    /// `model`'s defaults unless their flag is in `given`; the CNN has no hidden widths.
    pub fn for_network(
        &self,
        model: Architecture,
        hidden: &[usize],
        given: &BTreeSet<String>,
    ) -> Self {
        let defaults = Self::defaults(model);
        let kept = |flag: &str| given.contains(flag);
        Self {
            model,
            hidden: match model {
                Architecture::Mlp => hidden.to_vec(),
                Architecture::Cnn => defaults.hidden,
            },
            epochs: if kept("--epochs") {
                self.epochs
            } else {
                defaults.epochs
            },
            schedule: if kept("--lr-schedule") {
                self.schedule
            } else {
                defaults.schedule
            },
            augment: if kept("--augment") {
                self.augment
            } else {
                defaults.augment
            },
            ..self.clone()
        }
    }

    /// The first field, among those whose flag is in `given`, in which `asked` differs from
    /// `self` (the recorded recipe): a recipe flag that contradicts a run's recipe. `--epochs`
    /// is never one (it extends a run).
    pub fn contradiction(
        &self,
        asked: &TrainConfig,
        given: &BTreeSet<String>,
    ) -> Option<FieldDifference> {
        self.differences(asked)
            .into_iter()
            .find(|d| d.flag != "--epochs" && given.contains(&d.flag))
    }

    /// Every field in which `self` (recorded) and `asked` differ, in the order of the
    /// recipe's serialized names: found field by field through serde, so a new field needs
    /// nothing here.
    pub fn differences(&self, asked: &TrainConfig) -> Vec<FieldDifference> {
        let fields = |c: &TrainConfig| match serde_json::to_value(c) {
            Ok(serde_json::Value::Object(map)) => map,
            _ => serde_json::Map::new(),
        };
        let (recorded, asked) = (fields(self), fields(asked));
        recorded
            .iter()
            .filter_map(|(name, value)| {
                let other = asked.get(name).unwrap_or(&serde_json::Value::Null);
                (value != other).then(|| FieldDifference {
                    flag: flag_of(name),
                    recorded: flag_value(value),
                    asked: flag_value(other),
                })
            })
            .collect()
    }

    /// The learning rate of step `step` (0-based) of epoch `epoch` (1-based), with `steps`
    /// steps an epoch.
    pub fn rate(&self, epoch: usize, step: usize, steps: usize) -> f64 {
        self.schedule
            .rate(self.lr, (epoch - 1) * steps + step, self.epochs * steps)
    }
}

impl Default for TrainConfig {
    /// The article's recipe.
    fn default() -> Self {
        Self::defaults(Architecture::Mlp)
    }
}

/// Adam's ε as Keras sets it (burn's default is 1e-5).
pub(crate) const ADAM_EPSILON: f32 = 1e-7;
/// Adam's β1 and β2: Keras' and burn's defaults, which `optimizer` leaves as they are.
pub(crate) const ADAM_BETA1: f32 = 0.9;
pub(crate) const ADAM_BETA2: f32 = 0.999;

/// One Adam step's factors, as burn's Adam and AdamW compute them (burn-optim adam.rs,
/// adamw.rs): the bias corrections in f32 from the step count, the decay factor in f64 applied
/// as an f32 scalar. The fused steps (`shaders/mlp_adam.wgsl`, the CPU's) apply them in
/// burn's order of operations.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct AdamStep {
    /// The learning rate.
    pub lr: f32,
    /// `sqrt(1 - β2^t) / (1 - β1^t)`.
    pub correction: f32,
    /// `ε · sqrt(1 - β2^t)`.
    pub epsilon: f32,
    /// `1 - lr · weight decay` (1 without decay).
    pub decay: f32,
}

impl AdamStep {
    /// The factors of step `time` (counted from 1) at learning rate `lr` with `weight_decay`.
    pub fn new(time: usize, lr: f64, weight_decay: f64) -> Self {
        let t = time as i32;
        let correction2 = (1.0 - ADAM_BETA2.powi(t)).sqrt();
        Self {
            lr: lr as f32,
            correction: correction2 / (1.0 - ADAM_BETA1.powi(t)),
            epsilon: ADAM_EPSILON * correction2,
            decay: if weight_decay > 0.0 {
                (1.0 - lr * weight_decay) as f32
            } else {
                1.0
            },
        }
    }

    /// Parameter `p` and its moments `m`, `v` after a step with gradient `g`.
    #[inline(always)]
    pub fn apply(&self, p: &mut f32, m: &mut f32, v: &mut f32, g: f32) {
        let m1 = *m * ADAM_BETA1 + g * (1.0 - ADAM_BETA1);
        let m2 = *v * ADAM_BETA2 + (g * g) * (1.0 - ADAM_BETA2);
        *m = m1;
        *v = m2;
        let update = (m1 * self.correction) / (m2.sqrt() + self.epsilon);
        *p = *p * self.decay - update * self.lr;
    }
}

/// A fresh optimizer for `config`: Adam with Keras' β1, β2 and ε, or AdamW with the same
/// and `config.weight_decay` when that is set.
pub fn optimizer(config: &TrainConfig) -> ModuleOptimizer {
    if config.weight_decay > 0.0 {
        AdamWConfig::new()
            .with_beta_1(ADAM_BETA1)
            .with_beta_2(ADAM_BETA2)
            .with_epsilon(ADAM_EPSILON)
            .with_weight_decay(config.weight_decay as f32)
            .init()
    } else {
        AdamConfig::new()
            .with_beta_1(ADAM_BETA1)
            .with_beta_2(ADAM_BETA2)
            .with_epsilon(ADAM_EPSILON)
            .init()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each field changed in turn is found, named by the flag that sets it.
    #[test]
    fn every_differing_field_is_named_by_its_flag() {
        let base = TrainConfig::default();
        let changed = [
            TrainConfig {
                lr: 0.005,
                ..base.clone()
            },
            TrainConfig {
                schedule: Schedule::Cosine,
                ..base.clone()
            },
            TrainConfig {
                hidden: vec![128, 64],
                ..base.clone()
            },
            TrainConfig {
                train_limit: Some(500),
                ..base.clone()
            },
        ];
        let flags: Vec<Vec<FieldDifference>> =
            changed.iter().map(|c| base.differences(c)).collect();
        let one = |flag: &str, recorded: &str, asked: &str| {
            vec![FieldDifference {
                flag: flag.into(),
                recorded: recorded.into(),
                asked: asked.into(),
            }]
        };
        assert_eq!(flags[0], one("--lr", "0.001", "0.005"));
        assert_eq!(flags[1], one("--lr-schedule", "constant", "cosine"));
        assert_eq!(flags[2], one("--hidden", "30,10", "128,64"));
        assert_eq!(flags[3], one("--train-limit", "none", "500"));
        assert!(base.differences(&base).is_empty());
    }

    #[test]
    fn cosine_schedule_decays_from_the_rate_to_zero() {
        let s = Schedule::Cosine;
        assert_eq!(s.rate(0.01, 0, 100), 0.01);
        assert!((s.rate(0.01, 50, 100) - 0.005).abs() < 1e-12);
        assert!(s.rate(0.01, 100, 100).abs() < 1e-12);
        assert!(s.rate(0.01, 30, 100) > s.rate(0.01, 31, 100));
        assert_eq!(Schedule::Constant.rate(0.01, 99, 100), 0.01);
    }
}
