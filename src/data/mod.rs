//! Data sets for image classification, held in memory and fed to training as batches.
//!
//! Everything here runs on the CPU:
//! - [`Dataset`]: `u8` images `[N, C, 32, 32]` with `u32` labels, class names and the
//!   [`Normalization`] to train with; [`Split`] pairs a training set with its test set;
//! - readers for CIFAR-10 and CIFAR-100's binary files ([`load_cifar10`], [`load_cifar100`])
//!   and for MNIST and Fashion-MNIST's IDX files, gzipped or not ([`load_mnist`],
//!   [`load_fashion_mnist`]); digit images are padded to 32×32;
//! - [`synthetic`]: a built-in 10-class set of striped images, generated from a seed, for
//!   tests and for machines without a downloaded data set; [`write_cifar_bin`] writes any
//!   set in CIFAR-10's file format;
//! - [`Augment`]: random crop with zero padding and horizontal flip;
//! - [`Batcher`]: shuffled, augmented, normalised `f32` batches, with a [`BatcherState`]
//!   that resumes the exact sequence.
//!
//! All randomness comes from [`SplitMix64`] generators with explicit seeds.
//!
//! ```
//! use cenet::data::{synthetic, Batcher, BatcherConfig};
//! let split = synthetic::split(100, 20, 7)?;
//! let mut batcher = Batcher::new(split.train, BatcherConfig::train(32, 7))?;
//! while let Some(batch) = batcher.next_batch() {
//!     assert_eq!(batch.shape[1..], [3, 32, 32]);
//!     assert_eq!(batch.images.len(), batch.shape.iter().product::<usize>());
//! }
//! assert_eq!(batcher.epoch(), 1);
//! # Ok::<(), cenet::Error>(())
//! ```

pub mod augment;
pub mod batch;
pub mod cifar;
pub mod dataset;
pub mod idx;
pub mod normalize;
pub mod synthetic;

use std::path::Path;

pub use crate::rng::SplitMix64;
pub use augment::{Augment, CropFlip};
pub use batch::{Batch, Batcher, BatcherConfig, BatcherState};
pub use cifar::{load_cifar10, load_cifar100, write_cifar100_bin, write_cifar_bin, CifarKind};
pub use dataset::{Dataset, Split, IMAGE_SIZE, PIXELS_PER_CHANNEL};
pub use idx::{load_fashion_mnist, load_mnist, IdxSet};
pub use normalize::Normalization;

use crate::error::{Error, Result};

/// An [`Error::Data`] about `file`.
fn data_error(file: &Path, message: impl Into<String>) -> Error {
    Error::Data {
        file: file.to_path_buf(),
        message: message.into(),
    }
}

/// The whole of `file`, with an error that names it.
fn read_file(file: &Path) -> Result<Vec<u8>> {
    std::fs::read(file).map_err(|e| data_error(file, format!("cannot read: {e}")))
}
