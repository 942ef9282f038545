//! The training state saved beside the weights, so that training resumes exactly: optimizer
//! buffers, counters, the learning-rate schedule's position and the random-generator state.
//!
//! The file is safetensors too (`NAME.train.safetensors` beside `NAME.safetensors`), readable
//! by any safetensors reader:
//!
//! | tensor | dtype, shape | holds |
//! |---|---|---|
//! | `epoch` | I64 `[]` | [`TrainingState::epoch`] |
//! | `step` | I64 `[]` | [`TrainingState::step`] |
//! | `lr_schedule.position` | I64 `[]` | [`TrainingState::schedule_position`] |
//! | `lr_schedule.learning_rate` | F64 `[]` | [`TrainingState::learning_rate`] |
//! | `rng.state` | U64 `[k]` | [`TrainingState::rng_state`] |
//! | `optimizer.KEY` | any | [`TrainingState::optimizer`]'s tensor `KEY` |
//!
//! Its metadata holds `format` = `cenet-training-state`, `version` = `1`, and the entries of
//! [`TrainingState::metadata`].

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::atomic;
use super::format;
use super::host_tensor::{Element, HostTensor};
use super::state_dict::{checkpoint_error, StateDict};
use crate::{Error, Result};

const EPOCH: &str = "epoch";
const STEP: &str = "step";
const SCHEDULE_POSITION: &str = "lr_schedule.position";
const LEARNING_RATE: &str = "lr_schedule.learning_rate";
const RNG_STATE: &str = "rng.state";
const OPTIMIZER_PREFIX: &str = "optimizer.";

const FORMAT_KEY: &str = "format";
const FORMAT: &str = "cenet-training-state";
const VERSION_KEY: &str = "version";
const VERSION: &str = "1";

/// The weights file's metadata entry naming the step of the training state saved with it.
pub const WEIGHTS_STEP_KEY: &str = "cenet.training_step";

/// Everything besides the weights that training needs to resume exactly where it stopped.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct TrainingState {
    /// Epochs completed.
    pub epoch: u64,
    /// Optimizer steps taken.
    pub step: u64,
    /// Position in the learning-rate schedule (usually the steps taken under it).
    pub schedule_position: u64,
    /// The learning rate of the next step.
    pub learning_rate: f64,
    /// The random generator's state words (data order, augmentation, dropout).
    pub rng_state: Vec<u64>,
    /// Optimizer buffers keyed by parameter name: SGD's momentum of `layer1.0.conv1.weight`
    /// is under `layer1.0.conv1.weight`; an optimizer with several buffers per parameter adds
    /// a suffix (`layer1.0.conv1.weight.exp_avg_sq`).
    pub optimizer: StateDict,
    /// Free-form strings (optimizer name, hyperparameters). `format` and `version` are taken.
    pub metadata: BTreeMap<String, String>,
}

impl TrainingState {
    /// The training-state file beside a weights file: `run/model.safetensors` →
    /// `run/model.train.safetensors` (`run/model` → `run/model.train.safetensors`).
    pub fn path_beside(weights: impl AsRef<Path>) -> PathBuf {
        let weights = weights.as_ref();
        let stem = match weights.extension() {
            Some(ext) if ext == "safetensors" => weights.with_extension(""),
            _ => weights.to_path_buf(),
        };
        let mut name = stem.into_os_string();
        name.push(".train.safetensors");
        PathBuf::from(name)
    }

    /// The safetensors bytes of this state; `file` labels errors.
    fn encode(&self, file: &Path) -> Result<Vec<u8>> {
        let fail = |message: String| checkpoint_error(file, message);
        if let Some(key) = [FORMAT_KEY, VERSION_KEY]
            .into_iter()
            .find(|key| self.metadata.contains_key(*key))
        {
            return Err(fail(format!(
                "metadata key `{key}` is reserved for the file format"
            )));
        }
        let counter = |name: &str, value: u64| {
            let value = i64::try_from(value)
                .map_err(|_| fail(format!("{name} = {value} does not fit the int64 counter")))?;
            scalar_tensor(name, value)
        };
        let counters = [
            (EPOCH, counter(EPOCH, self.epoch)?),
            (STEP, counter(STEP, self.step)?),
            (
                SCHEDULE_POSITION,
                counter(SCHEDULE_POSITION, self.schedule_position)?,
            ),
            (
                LEARNING_RATE,
                scalar_tensor(LEARNING_RATE, self.learning_rate)?,
            ),
            (
                RNG_STATE,
                HostTensor::new(
                    RNG_STATE,
                    &[self.rng_state.len()],
                    u64::wrap(self.rng_state.clone()),
                )?,
            ),
        ];

        let mut tensors: Vec<(Cow<'_, str>, &HostTensor)> = counters
            .iter()
            .map(|(name, tensor)| (Cow::Borrowed(*name), tensor))
            .collect();
        for (key, buffer) in self.optimizer.iter() {
            tensors.push((Cow::Owned(format!("{OPTIMIZER_PREFIX}{key}")), buffer));
        }
        let mut metadata = self.metadata.clone();
        metadata.insert(FORMAT_KEY.to_string(), FORMAT.to_string());
        metadata.insert(VERSION_KEY.to_string(), VERSION.to_string());
        format::encode_tensors(tensors, &metadata, file)
    }

    /// Writes this state to `path` as safetensors, atomically, like
    /// [`StateDict::save`].
    pub fn save(&self, path: impl AsRef<Path>) -> Result<()> {
        let path = path.as_ref();
        let bytes = self.encode(path)?;
        atomic::write_atomically(path, &bytes)?;
        log::info!(
            "training state written: {} (epoch {}, step {})",
            path.display(),
            self.epoch,
            self.step
        );
        Ok(())
    }

    /// Reads a state written by [`save`](TrainingState::save); errors name the file and every
    /// missing, mistyped or unexpected entry.
    pub fn load(path: impl AsRef<Path>) -> Result<Self> {
        Self::from_state_dict(StateDict::load(path)?)
    }

    /// Parses the bytes of a training-state file; `origin` labels every error.
    pub fn from_bytes(bytes: &[u8], origin: impl AsRef<Path>) -> Result<Self> {
        Self::from_state_dict(StateDict::from_bytes(bytes, origin)?)
    }

    /// The bytes [`save`](TrainingState::save) writes.
    pub fn to_bytes(&self) -> Result<Vec<u8>> {
        self.encode(Path::new("(in memory)"))
    }

    fn from_state_dict(mut file: StateDict) -> Result<Self> {
        match file.metadata().get(FORMAT_KEY).map(String::as_str) {
            Some(FORMAT) => {}
            found => {
                let found =
                    found.map_or("no format entry".to_string(), |f| format!("format = {f:?}"));
                return Err(file.error(format!(
                    "not a cenet training-state file: its metadata has {found}, \
                     expected format = {FORMAT:?}"
                )));
            }
        }
        match file.metadata().get(VERSION_KEY).map(String::as_str) {
            Some(VERSION) => {}
            found => {
                return Err(file.error(format!(
                    "training-state version {found:?} is not the version {VERSION} this cenet reads"
                )))
            }
        }

        let counter = |name: &str| -> Result<u64> {
            let value = file.scalar::<i64>(name)?;
            u64::try_from(value).map_err(|_| file.error(format!("`{name}` is negative: {value}")))
        };
        let epoch = counter(EPOCH)?;
        let step = counter(STEP)?;
        let schedule_position = counter(SCHEDULE_POSITION)?;
        let learning_rate = file.scalar::<f64>(LEARNING_RATE)?;
        let rng_state = match file.values::<u64>(RNG_STATE)? {
            ([_], words) => words.to_vec(),
            (shape, _) => {
                return Err(file.error(format!(
                    "`{RNG_STATE}` has shape {shape:?}, expected one dimension"
                )))
            }
        };

        let names: Vec<String> = file.names().map(str::to_string).collect();
        let known = [EPOCH, STEP, SCHEDULE_POSITION, LEARNING_RATE, RNG_STATE];
        let unexpected: Vec<String> = names
            .iter()
            .filter(|name| !known.contains(&name.as_str()) && !name.starts_with(OPTIMIZER_PREFIX))
            .map(|name| format!("`{name}`"))
            .collect();
        if !unexpected.is_empty() {
            return Err(file.error(format!(
                "unexpected tensors in a training-state file: {}",
                unexpected.join(", ")
            )));
        }
        let mut optimizer = StateDict::new();
        for name in &names {
            if let Some(key) = name.strip_prefix(OPTIMIZER_PREFIX) {
                if let Some(buffer) = file.remove(name) {
                    optimizer.insert(key, buffer)?;
                }
            }
        }

        let mut metadata = file.metadata().clone();
        metadata.remove(FORMAT_KEY);
        metadata.remove(VERSION_KEY);
        Ok(TrainingState {
            epoch,
            step,
            schedule_position,
            learning_rate,
            rng_state,
            optimizer,
            metadata,
        })
    }
}

fn scalar_tensor<T: Element>(name: &str, value: T) -> Result<HostTensor> {
    HostTensor::new(name, &[], T::wrap(vec![value]))
}

/// Saves a whole checkpoint: `training` to [`TrainingState::path_beside`]`(weights_path)`,
/// then `weights` to `weights_path` with [`WEIGHTS_STEP_KEY`] = `training.step` added to its
/// metadata, each atomically. A crash between the two writes leaves files of different steps,
/// which [`load_checkpoint`] detects.
pub fn save_checkpoint(
    weights_path: impl AsRef<Path>,
    weights: &StateDict,
    training: &TrainingState,
) -> Result<()> {
    let weights_path = weights_path.as_ref();
    training.save(TrainingState::path_beside(weights_path))?;
    let step = BTreeMap::from([(WEIGHTS_STEP_KEY.to_string(), training.step.to_string())]);
    weights.save_with(weights_path, &step)
}

/// Loads the weights at `weights_path` and the training state beside them, checking that
/// both were saved at the same step.
pub fn load_checkpoint(weights_path: impl AsRef<Path>) -> Result<(StateDict, TrainingState)> {
    let weights_path = weights_path.as_ref();
    let weights = StateDict::load(weights_path)?;
    let training_path = TrainingState::path_beside(weights_path);
    let training = TrainingState::load(&training_path)?;
    if let Some(weights_step) = weights.metadata().get(WEIGHTS_STEP_KEY) {
        if *weights_step != training.step.to_string() {
            return Err(Error::Checkpoint {
                file: weights_path.to_path_buf(),
                message: format!(
                    "the weights are from step {weights_step} but {} is from step {}: a save \
                     was interrupted between the two files",
                    training_path.display(),
                    training.step
                ),
            });
        }
    }
    Ok((weights, training))
}
