//! Checkpoints: model weights and training state as safetensors files that PyTorch reads.
//!
//! - [`StateDict`]: named host tensors keyed like PyTorch's `state_dict()`
//!   (`layer1.0.bn1.running_mean`), f32 weights and i64 counters (`num_batches_tracked`, shape
//!   `[]`) alike. [`StateDict::save`] writes what `safetensors.torch.load_file` followed by
//!   `model.load_state_dict(strict=True)` accepts; [`StateDict::load`] reads any safetensors
//!   file of the supported [`ElementType`]s; [`StateDict::expect`] is the strict check, listing
//!   every missing, unexpected and mis-shaped tensor in one error.
//! - [`TrainingState`]: optimizer buffers, counters, schedule position and random state, in a
//!   second file beside the weights; [`save_checkpoint`] and [`load_checkpoint`] handle both.
//!
//! Every file is written atomically (temporary file, flush, rename), so a crash leaves the old
//! checkpoint or the new one, never half of one. Loading never panics, whatever the bytes, and
//! every error names the file and what is wrong with it.
//!
//! ```
//! use cenet::checkpoint::{StateDict, TensorSpec};
//! let mut weights = StateDict::new();
//! weights.set_metadata("format", "pt");
//! weights.insert_f32("fc.weight", &[2, 3], vec![0.5; 6])?;
//! weights.insert_i64_scalar("bn.num_batches_tracked", 100)?;
//!
//! // `weights.save("model.safetensors")` writes these bytes to a file.
//! let bytes = weights.to_bytes()?;
//! let loaded = StateDict::from_bytes(&bytes, "model.safetensors")?;
//! loaded.expect(&[
//!     TensorSpec::f32("fc.weight", &[2, 3]),
//!     TensorSpec::i64_scalar("bn.num_batches_tracked"),
//! ])?;
//! assert_eq!(loaded.get_i64_scalar("bn.num_batches_tracked")?, 100);
//! assert_eq!(loaded, weights);
//! # Ok::<(), cenet::Error>(())
//! ```
//!
//! Limitation: a file is encoded in memory before it is written and read whole before it is
//! parsed, so saving or loading needs about twice the checkpoint's size in host memory.

mod atomic;
mod format;
mod host_tensor;
mod state_dict;
mod training;

pub(crate) use atomic::write_atomically;

pub use host_tensor::{Element, ElementType, HostTensor, TensorData};
pub use state_dict::{StateDict, TensorSpec, RESERVED_NAME};
pub use training::{load_checkpoint, save_checkpoint, TrainingState, WEIGHTS_STEP_KEY};

/// Weights-file metadata naming the model (`resnet20-ce`, `mobilenetv2-ce`, …), written by
/// the CIFAR runner and the browser demo, so that a checkpoint evaluates without `--model`.
pub const MODEL_KEY: &str = "cenet.model";
