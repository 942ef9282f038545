//! Batches for training and evaluation: an epoch-wise shuffled order, augmentation, and
//! conversion to normalised `f32` in `[B, C, 32, 32]` layout.
//!
//! Every random choice is a pure function of the seed, the epoch and the image's index, so
//! a [`BatcherState`] of four numbers resumes the exact sequence of batches, augmentation
//! included, after a restart.

use std::fmt;
use std::sync::Arc;

use super::augment::Augment;
use super::dataset::{Dataset, IMAGE_SIZE, PIXELS_PER_CHANNEL};
use crate::error::{Error, Result};
use crate::rng::SplitMix64;

/// How a [`Batcher`] walks its data set.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BatcherConfig {
    /// Images per batch (the last batch of an epoch may hold fewer, see `drop_last`).
    pub batch_size: usize,
    /// Visit images in a new random order each epoch; otherwise in file order.
    pub shuffle: bool,
    /// Skip an epoch's final batch when it would be smaller than `batch_size`.
    pub drop_last: bool,
    /// Augmentation drawn for every image served.
    pub augment: Augment,
    /// Seed of every shuffle and augmentation.
    pub seed: u64,
}

impl BatcherConfig {
    /// Training: shuffled, CIFAR augmentation (crop with 4-pixel padding and flip), and
    /// no short final batch. For digit sets, set `augment` to [`Augment::NONE`].
    pub fn train(batch_size: usize, seed: u64) -> Self {
        BatcherConfig {
            batch_size,
            shuffle: true,
            drop_last: true,
            augment: Augment::CIFAR,
            seed,
        }
    }

    /// Evaluation: every image once, in file order, unaugmented.
    pub fn eval(batch_size: usize) -> Self {
        BatcherConfig {
            batch_size,
            shuffle: false,
            drop_last: false,
            augment: Augment::NONE,
            seed: 0,
        }
    }

    /// The same configuration with another augmentation.
    pub fn with_augment(mut self, augment: Augment) -> Self {
        self.augment = augment;
        self
    }
}

/// Where a [`Batcher`] is: restoring it with [`Batcher::restore`] repeats the batches that
/// followed. The random generators are derived from `seed` and `epoch`, so these numbers
/// are their whole state.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct BatcherState {
    /// The seed of all shuffles and augmentations.
    pub seed: u64,
    /// The current epoch, from 0.
    pub epoch: u64,
    /// Images of this epoch already served.
    pub position: usize,
    /// Images in the data set, checked on restore: another set would give other batches.
    pub dataset_len: usize,
}

/// One batch: normalised images, labels, and which images of the data set they are.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Batch {
    /// `[B, C, 32, 32]` row-major, normalised with the data set's [`super::Normalization`].
    pub images: Vec<f32>,
    /// `[B]` class labels.
    pub labels: Vec<u32>,
    /// `[B]` index of each image in the data set.
    pub indices: Vec<u32>,
    /// `[B, C, 32, 32]`.
    pub shape: [usize; 4],
}

impl Batch {
    /// Number of images.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// Whether the batch holds no image.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }
}

/// Serves a data set as batches, epoch after epoch.
pub struct Batcher {
    dataset: Arc<Dataset>,
    config: BatcherConfig,
    /// Per-channel pixel → normalised value.
    tables: Vec<[f32; 256]>,
    /// This epoch's visiting order.
    order: Vec<u32>,
    epoch: u64,
    position: usize,
}

impl Batcher {
    /// A batcher at the start of epoch 0. The data set may be shared (`Arc<Dataset>`) or
    /// moved in.
    pub fn new(dataset: impl Into<Arc<Dataset>>, config: BatcherConfig) -> Result<Self> {
        let dataset = dataset.into();
        let op = "batcher";
        if config.batch_size == 0 {
            return Err(Error::invalid(op, "batch size is 0"));
        }
        if dataset.is_empty() {
            return Err(Error::invalid(
                op,
                format!("{} holds no image", dataset.name()),
            ));
        }
        if dataset.len() > u32::MAX as usize {
            return Err(Error::invalid(
                op,
                format!("{} holds more than 2^32 images", dataset.name()),
            ));
        }
        if config.drop_last && config.batch_size > dataset.len() {
            return Err(Error::invalid(
                op,
                format!(
                    "batch size {} exceeds the {} images of {} and drop_last leaves no batch",
                    config.batch_size,
                    dataset.len(),
                    dataset.name()
                ),
            ));
        }
        let tables = dataset.normalization().lookup_tables();
        let mut batcher = Batcher {
            dataset,
            config,
            tables,
            order: Vec::new(),
            epoch: 0,
            position: 0,
        };
        batcher.start_epoch(0);
        Ok(batcher)
    }

    /// A batcher resumed at `state` (saved by [`Batcher::state`] with the same data set and
    /// configuration).
    pub fn resume(
        dataset: impl Into<Arc<Dataset>>,
        config: BatcherConfig,
        state: BatcherState,
    ) -> Result<Self> {
        let mut batcher = Batcher::new(dataset, config)?;
        batcher.restore(state)?;
        Ok(batcher)
    }

    /// The data set served.
    pub fn dataset(&self) -> &Dataset {
        &self.dataset
    }

    /// The configuration.
    pub fn config(&self) -> &BatcherConfig {
        &self.config
    }

    /// The current epoch, from 0.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// Images of the current epoch already served.
    pub fn position(&self) -> usize {
        self.position
    }

    /// Batches in one epoch.
    pub fn batches_per_epoch(&self) -> usize {
        let len = self.dataset.len();
        if self.config.drop_last {
            len / self.config.batch_size
        } else {
            len.div_ceil(self.config.batch_size)
        }
    }

    /// The state to save in a checkpoint.
    pub fn state(&self) -> BatcherState {
        BatcherState {
            seed: self.config.seed,
            epoch: self.epoch,
            position: self.position,
            dataset_len: self.dataset.len(),
        }
    }

    /// Moves to `state`; the seed in `state` replaces the configuration's.
    pub fn restore(&mut self, state: BatcherState) -> Result<()> {
        let len = self.dataset.len();
        if state.dataset_len != len || state.position > len {
            return Err(Error::invalid(
                "batcher",
                format!(
                    "state at image {} of a {}-image set cannot resume {} ({} images)",
                    state.position,
                    state.dataset_len,
                    self.dataset.name(),
                    len
                ),
            ));
        }
        self.config.seed = state.seed;
        self.start_epoch(state.epoch);
        self.position = state.position;
        Ok(())
    }

    /// The next batch of this epoch, or `None` when the epoch is over, in which case the
    /// batcher has moved on to the next epoch.
    pub fn next_batch(&mut self) -> Option<Batch> {
        let mut batch = Batch::default();
        self.next_batch_into(&mut batch).then_some(batch)
    }

    /// Fills `batch` (reusing its allocations) with the next batch of this epoch and returns
    /// true, or returns false when the epoch is over and moves on to the next epoch.
    pub fn next_batch_into(&mut self, batch: &mut Batch) -> bool {
        let remaining = self.order.len() - self.position;
        let size = remaining.min(self.config.batch_size);
        if size == 0 || (self.config.drop_last && size < self.config.batch_size) {
            self.start_epoch(self.epoch + 1);
            return false;
        }

        let channels = self.dataset.channels();
        let image_len = self.dataset.image_len();
        batch.shape = [size, channels, IMAGE_SIZE, IMAGE_SIZE];
        batch.images.resize(size * image_len, 0.0);
        batch.labels.clear();
        batch.indices.clear();

        let augment_seed = self.augment_seed();
        let picked = &self.order[self.position..self.position + size];
        for (&index, out) in picked.iter().zip(batch.images.chunks_exact_mut(image_len)) {
            let image = self.dataset.image(index as usize);
            let mut rng = SplitMix64::stream(augment_seed, u64::from(index));
            let crop_flip = self.config.augment.sample(&mut rng);
            let tables = &self.tables;
            crop_flip.for_each_pixel(image, channels, |c, offset, pixel| {
                out[c * PIXELS_PER_CHANNEL + offset] = tables[c][usize::from(pixel)];
            });
            batch.labels.push(self.dataset.label(index as usize));
            batch.indices.push(index);
        }
        self.position += size;
        true
    }

    /// Sets the visiting order of `epoch` and rewinds to its start.
    fn start_epoch(&mut self, epoch: u64) {
        self.epoch = epoch;
        self.position = 0;
        self.order.clear();
        self.order.extend(0..self.dataset.len() as u32);
        if self.config.shuffle {
            SplitMix64::stream(self.config.seed, 2 * epoch).shuffle(&mut self.order);
        }
    }

    /// The seed of this epoch's augmentation draws; image `i` draws from its stream `i`, so
    /// its augmentation does not depend on where the batches split the epoch.
    fn augment_seed(&self) -> u64 {
        SplitMix64::stream(self.config.seed, 2 * self.epoch + 1).next_u64()
    }
}

impl fmt::Debug for Batcher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The visiting order and lookup tables are left out: thousands of numbers.
        f.debug_struct("Batcher")
            .field("dataset", &self.dataset.name())
            .field("config", &self.config)
            .field("epoch", &self.epoch)
            .field("position", &self.position)
            .finish_non_exhaustive()
    }
}
