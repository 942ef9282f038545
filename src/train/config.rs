//! The settings of a training run, and their `key = value` form: saved in the run folder
//! (`config.txt`) and in the training state, from which `--resume` reads them back.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::PathBuf;

use super::dataset::DataSource;
use super::model::ModelName;
use super::schedule::{default_milestones, Decay, DecayKind, LrSchedule};
use crate::error::{Error, Result};
use crate::kernels::sgd::SgdConfig;

/// Everything that decides what a run computes. Two runs with equal configurations (and
/// the same data) train bit-identical weights.
#[derive(Clone, Debug, PartialEq)]
pub struct TrainConfig {
    /// The network.
    pub model: ModelName,
    /// The data set.
    pub data: DataSource,
    /// Images per training step (and per evaluation batch).
    pub batch_size: usize,
    /// Epochs to train.
    pub epochs: u64,
    /// Base learning rate.
    pub lr: f64,
    /// SGD momentum.
    pub momentum: f64,
    /// L2 weight decay, applied to every parameter as PyTorch's SGD does.
    pub weight_decay: f64,
    /// Epochs of linear warm-up.
    pub warmup_epochs: u64,
    /// What follows the warm-up.
    pub schedule: DecayKind,
    /// Epochs at which the step schedule decays (default: half and three quarters).
    pub milestones: Option<Vec<u64>>,
    /// The step schedule's factor.
    pub gamma: f64,
    /// Label smoothing ε of the loss.
    pub label_smoothing: f32,
    /// Seed of the initial weights, of the data order and of the augmentation.
    pub seed: u64,
    /// Random crop and flip (for sets where they make sense).
    pub augment: bool,
    /// A new random order each epoch; otherwise file order.
    pub shuffle: bool,
}

impl Default for TrainConfig {
    fn default() -> Self {
        TrainConfig {
            model: ModelName::ResNet {
                depth: 20,
                ce: true,
            },
            data: DataSource::default(),
            batch_size: 128,
            epochs: super::dataset::DEFAULT_EPOCHS.0,
            lr: 0.1,
            momentum: 0.9,
            weight_decay: 5e-4,
            warmup_epochs: 0,
            schedule: DecayKind::Cosine,
            milestones: None,
            gamma: 0.1,
            label_smoothing: 0.0,
            seed: 0,
            augment: true,
            shuffle: true,
        }
    }
}

impl TrainConfig {
    /// The learning-rate schedule for epochs of `steps_per_epoch` steps.
    pub fn schedule(&self, steps_per_epoch: u64) -> Result<LrSchedule> {
        let decay = match self.schedule {
            DecayKind::Cosine => Decay::Cosine,
            DecayKind::Constant => Decay::Constant,
            DecayKind::Step => Decay::Step {
                milestones: self
                    .milestones
                    .clone()
                    .unwrap_or_else(|| default_milestones(self.epochs)),
                gamma: self.gamma,
            },
        };
        LrSchedule::new(
            self.lr,
            self.epochs,
            steps_per_epoch,
            self.warmup_epochs,
            decay,
        )
    }

    /// SGD's settings at learning rate `lr`.
    pub fn sgd(&self, lr: f64) -> SgdConfig {
        SgdConfig {
            lr: lr as f32,
            momentum: self.momentum as f32,
            weight_decay: self.weight_decay as f32,
            nesterov: false,
        }
    }

    /// Checks the values that nothing downstream would check before the first step.
    pub fn validate(&self) -> Result<()> {
        let op = "train";
        if self.batch_size == 0 {
            return Err(Error::invalid(op, "--batch-size must be at least 1"));
        }
        if self.epochs == 0 {
            return Err(Error::invalid(op, "--epochs must be at least 1"));
        }
        if !(0.0..1.0).contains(&self.label_smoothing) {
            return Err(Error::invalid(
                op,
                format!(
                    "--label-smoothing must lie in [0, 1), got {}",
                    self.label_smoothing
                ),
            ));
        }
        self.sgd(self.lr).validate()?;
        self.schedule(1)?;
        Ok(())
    }

    /// The settings as `key → value` strings (see [`TrainConfig::from_entries`]).
    pub fn entries(&self) -> BTreeMap<String, String> {
        let mut map = BTreeMap::new();
        let mut put = |key: &str, value: String| {
            map.insert(key.to_string(), value);
        };
        put("model", self.model.to_string());
        if let Some(name) = self.data.name {
            put("dataset", name.to_string());
        }
        if let Some(dir) = &self.data.dir {
            put("data", dir.display().to_string());
        }
        if let Some(n) = self.data.train_images {
            put("train_images", n.to_string());
        }
        if let Some(n) = self.data.test_images {
            put("test_images", n.to_string());
        }
        put("batch_size", self.batch_size.to_string());
        put("epochs", self.epochs.to_string());
        // `{:?}` prints the shortest text that parses back to the same float.
        put("lr", format!("{:?}", self.lr));
        put("momentum", format!("{:?}", self.momentum));
        put("weight_decay", format!("{:?}", self.weight_decay));
        put("warmup_epochs", self.warmup_epochs.to_string());
        put("schedule", self.schedule.to_string());
        if let Some(m) = &self.milestones {
            let list: Vec<String> = m.iter().map(u64::to_string).collect();
            put("milestones", list.join(","));
        }
        put("gamma", format!("{:?}", self.gamma));
        put("label_smoothing", format!("{:?}", self.label_smoothing));
        put("seed", self.seed.to_string());
        put("augment", self.augment.to_string());
        put("shuffle", self.shuffle.to_string());
        map
    }

    /// The settings saved by [`TrainConfig::entries`]; `origin` names where they came from
    /// in errors. Keys it does not know are ignored.
    pub fn from_entries(map: &BTreeMap<String, String>, origin: &str) -> Result<Self> {
        let get = |key: &str| -> Result<&str> {
            map.get(key).map(String::as_str).ok_or_else(|| {
                Error::invalid(
                    "resume",
                    format!("{origin}: the saved settings lack `{key}`"),
                )
            })
        };
        fn parse<T: std::str::FromStr>(origin: &str, key: &str, text: &str) -> Result<T> {
            text.parse().map_err(|_| {
                Error::invalid(
                    "resume",
                    format!("{origin}: saved setting `{key}` = {text:?} does not parse"),
                )
            })
        }
        let optional = |key: &str| map.get(key).map(String::as_str);
        let milestones = match optional("milestones") {
            None => None,
            Some("") => Some(Vec::new()),
            Some(text) => Some(
                text.split(',')
                    .map(|m| parse(origin, "milestones", m))
                    .collect::<Result<Vec<u64>>>()?,
            ),
        };
        Ok(TrainConfig {
            model: get("model")?.parse()?,
            data: DataSource {
                name: optional("dataset").map(str::parse).transpose()?,
                dir: optional("data").map(PathBuf::from),
                train_images: optional("train_images")
                    .map(|t| parse(origin, "train_images", t))
                    .transpose()?,
                test_images: optional("test_images")
                    .map(|t| parse(origin, "test_images", t))
                    .transpose()?,
            },
            batch_size: parse(origin, "batch_size", get("batch_size")?)?,
            epochs: parse(origin, "epochs", get("epochs")?)?,
            lr: parse(origin, "lr", get("lr")?)?,
            momentum: parse(origin, "momentum", get("momentum")?)?,
            weight_decay: parse(origin, "weight_decay", get("weight_decay")?)?,
            warmup_epochs: parse(origin, "warmup_epochs", get("warmup_epochs")?)?,
            schedule: get("schedule")?.parse()?,
            milestones,
            gamma: parse(origin, "gamma", get("gamma")?)?,
            label_smoothing: parse(origin, "label_smoothing", get("label_smoothing")?)?,
            seed: parse(origin, "seed", get("seed")?)?,
            augment: parse(origin, "augment", get("augment")?)?,
            shuffle: parse(origin, "shuffle", get("shuffle")?)?,
        })
    }

    /// The settings as the text of `config.txt`.
    pub fn to_text(&self) -> String {
        let mut text = String::new();
        for (key, value) in self.entries() {
            let _ = writeln!(text, "{key} = {value}");
        }
        text
    }
}
