//! Training runs: what `cargo run --release --example cifar` does, as reusable pieces.
//!
//! - [`trainer::train`]: SGD with momentum over a [`crate::data::Batcher`], a
//!   [`schedule::LrSchedule`] (warm-up, then cosine or step decay), metrics read back
//!   without blocking, an evaluation, a checkpoint, `metrics.csv` and `curves.svg` after
//!   every epoch in a [`run_dir::RunDir`]; exact resumption from the last checkpoint, a
//!   clean stop on Ctrl-C, and a clear error (keeping the last good checkpoint) when the
//!   loss stops being finite;
//! - [`evaluate`]: accuracy, per-class accuracy, confusion matrix and logits of a checkpoint;
//! - [`inhibited`] and [`channel_drop`]: the CE paper's inhibited-channel report and
//!   channel-drop curve;
//! - [`download`]: fetching and unpacking the CIFAR archives with a checksum check;
//! - [`cli`]: the `cifar` command line over all of these.
//!
//! ```no_run
//! use cenet::train::cli;
//! let args = [
//!     "cifar", "train", "--model", "resnet8-ce", "--dataset", "synthetic",
//!     "--epochs", "2", "--batch-size", "32", "--out", "runs/demo",
//! ];
//! let invocation = match cli::parse(args) {
//!     Ok(invocation) => invocation,
//!     Err(usage) => usage.exit(),
//! };
//! let outcome = cli::execute(invocation, None, None)?;
//! # Ok::<(), cenet::Error>(())
//! ```

pub mod channel_drop;
pub mod cli;
pub mod config;
pub mod console;
pub mod dataset;
pub mod download;
pub mod evaluate;
pub mod inhibited;
pub mod metrics;
pub mod model;
pub mod plot;
pub mod run_dir;
pub mod run_state;
pub mod schedule;
pub mod trainer;

pub use config::TrainConfig;
pub use console::Console;
pub use dataset::{DataSource, DatasetName};
pub use model::ModelName;
pub use schedule::{Decay, LrSchedule};
pub use trainer::{train, RunOptions, Stop, TrainOutcome};
