//! What a run saves besides its weights, and how it is read back: the epoch's running sums,
//! the best epoch, the data order's position, and the settings, in the training-state file
//! beside `last.safetensors`.

use std::collections::BTreeMap;
use std::path::Path;

use super::config::TrainConfig;
use super::metrics::EpochRecord;
use super::run_dir::RunDir;
use crate::checkpoint::{save_checkpoint, StateDict, TrainingState};
use crate::data::{Batcher, BatcherState};
use crate::error::{Error, Result};
use crate::graph::exec::Executor;

pub use crate::checkpoint::MODEL_KEY;
/// Weights-file metadata: the data set's name.
pub const DATASET_KEY: &str = "cenet.dataset";
/// Weights-file metadata: how many test images the run used, when it was limited
/// (`--test-images`), so that `eval` and `inspect` see the same test set.
pub const TEST_IMAGES_KEY: &str = "cenet.test_images";
/// Weights-file metadata: the epochs completed.
pub const EPOCH_KEY: &str = "cenet.epoch";
/// Weights-file metadata of `best.safetensors`: its test accuracy.
pub const TEST_ACC_KEY: &str = "cenet.test_acc";

/// Sums over the steps of an epoch so far (kept in checkpoints taken mid-epoch).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub(crate) struct EpochSums {
    pub loss_sum: f64,
    pub correct: u64,
    pub seen: u64,
    pub train_seconds: f64,
    pub seconds: f64,
}

/// Where a run stands, besides the executor and the batcher.
#[derive(Clone, Debug, Default)]
pub(crate) struct Progress {
    /// Epochs completed.
    pub epoch: u64,
    /// (epoch, test accuracy) of the best epoch so far.
    pub best: Option<(u64, f64)>,
    /// The current epoch's sums so far.
    pub partial: EpochSums,
    /// One record per completed epoch.
    pub records: Vec<EpochRecord>,
}

impl Progress {
    fn entries(&self) -> BTreeMap<String, String> {
        let mut map = BTreeMap::new();
        if let Some((epoch, acc)) = self.best {
            map.insert("progress.best_epoch".into(), epoch.to_string());
            map.insert("progress.best_test_acc".into(), format!("{acc:?}"));
        }
        let p = &self.partial;
        // `{:?}` prints the shortest text that parses back to the same float.
        map.insert("progress.loss_sum".into(), format!("{:?}", p.loss_sum));
        map.insert("progress.correct".into(), p.correct.to_string());
        map.insert("progress.seen".into(), p.seen.to_string());
        map.insert(
            "progress.train_seconds".into(),
            format!("{:?}", p.train_seconds),
        );
        map.insert("progress.seconds".into(), format!("{:?}", p.seconds));
        map
    }

    /// The progress saved in `training`, with the `records` of the epochs it completed.
    pub fn restore(training: &TrainingState, records: Vec<EpochRecord>) -> Self {
        let m = &training.metadata;
        let number = |key: &str| m.get(key).and_then(|v| v.parse::<f64>().ok());
        let count = |key: &str| m.get(key).and_then(|v| v.parse::<u64>().ok());
        let best = match (
            count("progress.best_epoch"),
            number("progress.best_test_acc"),
        ) {
            (Some(epoch), Some(acc)) => Some((epoch, acc)),
            _ => None,
        };
        Progress {
            epoch: training.epoch,
            best,
            partial: EpochSums {
                loss_sum: number("progress.loss_sum").unwrap_or(0.0),
                correct: count("progress.correct").unwrap_or(0),
                seen: count("progress.seen").unwrap_or(0),
                train_seconds: number("progress.train_seconds").unwrap_or(0.0),
                seconds: number("progress.seconds").unwrap_or(0.0),
            },
            records: records
                .into_iter()
                .filter(|r| r.epoch <= training.epoch)
                .collect(),
        }
    }
}

/// The settings of the run in `run_dir`, as its last checkpoint saved them.
pub fn resume_config(run_dir: &Path) -> Result<TrainConfig> {
    let run = RunDir::open(run_dir)?;
    let path = TrainingState::path_beside(run.last());
    let training = TrainingState::load(&path)?;
    TrainConfig::from_entries(&training.metadata, &path.display().to_string())
}

/// The batcher state saved in a training state's `rng_state`: seed, epoch, position, length.
pub(crate) fn batcher_state(training: &TrainingState, file: &Path) -> Result<BatcherState> {
    match training.rng_state[..] {
        [seed, epoch, position, dataset_len] => Ok(BatcherState {
            seed,
            epoch,
            position: position as usize,
            dataset_len: dataset_len as usize,
        }),
        ref other => Err(Error::Checkpoint {
            file: file.to_path_buf(),
            message: format!(
                "rng.state holds {} words; a cenet run saves 4 (seed, epoch, position, images)",
                other.len()
            ),
        }),
    }
}

/// Saves `last.safetensors` and the training state beside it; returns the weights saved.
pub(crate) fn save_last(
    run: &RunDir,
    exec: &Executor,
    batcher: &Batcher,
    progress: &Progress,
    config: &TrainConfig,
    next_lr: f64,
) -> Result<StateDict> {
    let mut weights = exec.state_dict()?;
    weights.set_metadata(MODEL_KEY, config.model.to_string());
    if let Some(name) = config.data.name {
        weights.set_metadata(DATASET_KEY, name.to_string());
    }
    if let Some(n) = config.data.test_images {
        weights.set_metadata(TEST_IMAGES_KEY, n.to_string());
    }
    weights.set_metadata(EPOCH_KEY, progress.epoch.to_string());
    let s = batcher.state();
    let mut metadata = config.entries();
    metadata.extend(progress.entries());
    let training = TrainingState {
        epoch: progress.epoch,
        step: exec.steps,
        schedule_position: exec.steps,
        learning_rate: next_lr,
        rng_state: vec![s.seed, s.epoch, s.position as u64, s.dataset_len as u64],
        optimizer: exec.optimizer_state()?,
        metadata,
    };
    save_checkpoint(run.last(), &weights, &training)?;
    Ok(weights)
}
