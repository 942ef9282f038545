//! An image-classification data set held in memory as bytes.

use std::fmt;
use std::ops::Range;

use super::normalize::Normalization;
use crate::error::{Error, Result};

/// Height and width of every image, in pixels.
pub const IMAGE_SIZE: usize = 32;

/// Pixels in one channel of one image.
pub const PIXELS_PER_CHANNEL: usize = IMAGE_SIZE * IMAGE_SIZE;

/// Labelled images: `u8` pixels in `[N, C, 32, 32]` row-major layout (C = 3 for colour sets,
/// 1 for digit sets), one `u32` label per image, the class count and, when known, the class
/// names, and the normalisation the set is meant to be trained with.
#[derive(Clone)]
pub struct Dataset {
    name: String,
    channels: usize,
    images: Vec<u8>,
    labels: Vec<u32>,
    classes: usize,
    class_names: Option<Vec<String>>,
    normalization: Normalization,
}

impl Dataset {
    /// A data set named `name` of images with `channels` channels (1 or 3) and labels in
    /// `0..classes`. `images` holds `labels.len()` images of `channels × 32 × 32` bytes.
    /// Its normalisation is [`Normalization::identity`] until
    /// [`Dataset::with_normalization`] sets another.
    pub fn new(
        name: impl Into<String>,
        channels: usize,
        images: Vec<u8>,
        labels: Vec<u32>,
        classes: usize,
    ) -> Result<Self> {
        let name = name.into();
        let op = "dataset";
        if channels != 1 && channels != 3 {
            return Err(Error::invalid(
                op,
                format!("{name}: {channels} channels, expected 1 or 3"),
            ));
        }
        let image_len = channels * PIXELS_PER_CHANNEL;
        if images.len() != labels.len() * image_len {
            return Err(Error::invalid(
                op,
                format!(
                    "{name}: {} image bytes for {} labels, expected {} ({} per image)",
                    images.len(),
                    labels.len(),
                    labels.len() * image_len,
                    image_len
                ),
            ));
        }
        if classes == 0 {
            return Err(Error::invalid(op, format!("{name}: zero classes")));
        }
        if let Some((index, label)) = labels
            .iter()
            .enumerate()
            .find(|(_, &label)| label as usize >= classes)
        {
            return Err(Error::invalid(
                op,
                format!("{name}: label {label} of image {index} is not below {classes} classes"),
            ));
        }
        Ok(Dataset {
            name,
            channels,
            images,
            labels,
            classes,
            class_names: None,
            normalization: Normalization::identity(channels)?,
        })
    }

    /// The same set with class names, one per class.
    pub fn with_class_names<S: Into<String>>(
        mut self,
        names: impl IntoIterator<Item = S>,
    ) -> Result<Self> {
        let names: Vec<String> = names.into_iter().map(Into::into).collect();
        if names.len() != self.classes {
            return Err(Error::invalid(
                "dataset",
                format!(
                    "{}: {} class names given for {} classes",
                    self.name,
                    names.len(),
                    self.classes
                ),
            ));
        }
        self.class_names = Some(names);
        Ok(self)
    }

    /// The same set with the normalisation it should be trained with.
    pub fn with_normalization(mut self, normalization: Normalization) -> Result<Self> {
        if normalization.channels() != self.channels {
            return Err(Error::invalid(
                "dataset",
                format!(
                    "{}: normalisation for {} channels, images have {}",
                    self.name,
                    normalization.channels(),
                    self.channels
                ),
            ));
        }
        self.normalization = normalization;
        Ok(self)
    }

    /// The same set under another name.
    pub fn renamed(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// The set's name, e.g. `CIFAR-10 train`.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Number of images.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// Whether the set holds no image.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// Channels per image (1 or 3).
    pub fn channels(&self) -> usize {
        self.channels
    }

    /// Bytes per image: `channels × 32 × 32`.
    pub fn image_len(&self) -> usize {
        self.channels * PIXELS_PER_CHANNEL
    }

    /// The shape of one image: `[C, 32, 32]`.
    pub fn image_shape(&self) -> [usize; 3] {
        [self.channels, IMAGE_SIZE, IMAGE_SIZE]
    }

    /// Number of classes.
    pub fn classes(&self) -> usize {
        self.classes
    }

    /// Class names, when known.
    pub fn class_names(&self) -> Option<&[String]> {
        self.class_names.as_deref()
    }

    /// The normalisation the set is meant to be trained with.
    pub fn normalization(&self) -> Normalization {
        self.normalization
    }

    /// All pixels, `[N, C, 32, 32]` row-major.
    pub fn images(&self) -> &[u8] {
        &self.images
    }

    /// All labels.
    pub fn labels(&self) -> &[u32] {
        &self.labels
    }

    /// The pixels of image `index`, `[C, 32, 32]`. Panics if `index >= len()`.
    pub fn image(&self, index: usize) -> &[u8] {
        let len = self.image_len();
        &self.images[index * len..(index + 1) * len]
    }

    /// The label of image `index`. Panics if `index >= len()`.
    pub fn label(&self, index: usize) -> u32 {
        self.labels[index]
    }

    /// How many images each class has.
    pub fn class_counts(&self) -> Vec<usize> {
        let mut counts = vec![0; self.classes];
        for &label in &self.labels {
            counts[label as usize] += 1;
        }
        counts
    }

    /// The images in `range` as a set of their own, with the same classes, names and
    /// normalisation (e.g. the first 5,000 images for a quick run).
    pub fn slice(&self, range: Range<usize>) -> Result<Dataset> {
        if range.start > range.end || range.end > self.len() {
            return Err(Error::invalid(
                "dataset",
                format!(
                    "{}: range {range:?} is outside its {} images",
                    self.name,
                    self.len()
                ),
            ));
        }
        let len = self.image_len();
        Ok(Dataset {
            name: self.name.clone(),
            channels: self.channels,
            images: self.images[range.start * len..range.end * len].to_vec(),
            labels: self.labels[range].to_vec(),
            classes: self.classes,
            class_names: self.class_names.clone(),
            normalization: self.normalization,
        })
    }

    /// This set followed by `other`, which must have the same channels and classes.
    pub fn concat(mut self, other: &Dataset) -> Result<Dataset> {
        if other.channels != self.channels || other.classes != self.classes {
            return Err(Error::invalid(
                "dataset",
                format!(
                    "cannot append {} ({} channels, {} classes) to {} ({} channels, {} classes)",
                    other.name,
                    other.channels,
                    other.classes,
                    self.name,
                    self.channels,
                    self.classes
                ),
            ));
        }
        self.images.extend_from_slice(&other.images);
        self.labels.extend_from_slice(&other.labels);
        Ok(self)
    }

    /// Per-channel mean and standard deviation of the pixels scaled to `[0, 1]`, over the
    /// whole set (std floored at 1e-3 so a constant set still normalises).
    pub fn measure_normalization(&self) -> Result<Normalization> {
        let mut sum = vec![0f64; self.channels];
        let mut sum_sq = vec![0f64; self.channels];
        for image in self.images.chunks_exact(self.image_len().max(1)) {
            for (c, plane) in image.chunks_exact(PIXELS_PER_CHANNEL).enumerate() {
                // Integer sums per plane are exact and much faster than per-pixel floats.
                let s: u64 = plane.iter().map(|&p| u64::from(p)).sum();
                let s2: u64 = plane.iter().map(|&p| u64::from(p) * u64::from(p)).sum();
                sum[c] += s as f64;
                sum_sq[c] += s2 as f64;
            }
        }
        let count = (self.len() * PIXELS_PER_CHANNEL).max(1) as f64;
        let mean: Vec<f32> = sum.iter().map(|s| (s / count / 255.0) as f32).collect();
        let std: Vec<f32> = sum
            .iter()
            .zip(&sum_sq)
            .map(|(s, s2)| {
                let m = s / count;
                let var = (s2 / count - m * m).max(0.0);
                (var.sqrt() / 255.0).max(1e-3) as f32
            })
            .collect();
        Normalization::new(&mean, &std)
    }
}

impl fmt::Debug for Dataset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The pixels are left out: a CIFAR set holds 150 MB of them.
        f.debug_struct("Dataset")
            .field("name", &self.name)
            .field("len", &self.len())
            .field("channels", &self.channels)
            .field("classes", &self.classes)
            .field("normalization", &self.normalization)
            .finish_non_exhaustive()
    }
}

/// A training set and its test set.
#[derive(Clone, Debug)]
pub struct Split {
    /// The images to train on.
    pub train: Dataset,
    /// The held-out images to evaluate on.
    pub test: Dataset,
}
