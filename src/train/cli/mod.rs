//! The `cifar` command line (`cargo run --release --example cifar -- …`): its options here,
//! what each subcommand does in `commands`. The example's `main` only parses, installs the
//! Ctrl-C handler and calls [`execute`]; tests call [`parse`] and [`execute`] directly.

mod commands;

use std::ffi::OsString;
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use clap::parser::ValueSource;
use clap::{ArgMatches, Args, CommandFactory, FromArgMatches, Parser, Subcommand};

use super::channel_drop::DropPoint;
use super::console::Console;
use super::dataset::DEFAULT_DATA_DIR;
use super::download::{self, Archive};
use super::evaluate::EvalReport;
use super::inhibited::InhibitedReport;
use super::trainer::TrainOutcome;
use crate::error::Result;
use crate::gpu::Gpu;

/// Train, evaluate and inspect CIFAR networks with cenet.
#[derive(Debug, Parser)]
#[command(name = "cifar", version, about, long_about = None)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
    /// Print no messages (errors still go to standard error).
    #[arg(long, global = true)]
    pub quiet: bool,
    /// Draw no progress bars.
    #[arg(long, global = true)]
    pub no_progress: bool,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Train a network (or continue a run with --resume).
    Train(TrainArgs),
    /// Evaluate a checkpoint: accuracy, per-class accuracy, confusion matrix.
    Eval(EvalArgs),
    /// The inhibited-channel report and channel-drop curve of a checkpoint.
    Inspect(InspectArgs),
    /// Fetch CIFAR-10 or CIFAR-100 into the data folder.
    Download(DownloadArgs),
}

/// Where the images come from (shared by every subcommand).
#[derive(Debug, Args, Clone)]
pub struct DataArgs {
    /// Folder with the data set's files [default: ./data].
    #[arg(long, value_name = "DIR")]
    pub data: Option<PathBuf>,
    /// cifar10, cifar100, mnist, fashion-mnist or synthetic [default: cifar10 if
    /// ./data/cifar-10-batches-bin exists, else synthetic].
    #[arg(long)]
    pub dataset: Option<String>,
    /// Use only the first N training images (the synthetic set's size, default 5000).
    #[arg(long, value_name = "N")]
    pub train_images: Option<usize>,
    /// Use only the first N test images (the synthetic set's size, default 1000).
    #[arg(long, value_name = "N")]
    pub test_images: Option<usize>,
    /// Fetch CIFAR-10/100 into the data folder first if it is not there.
    #[arg(long)]
    pub download: bool,
}

/// `train`'s options.
#[derive(Debug, Args)]
pub struct TrainArgs {
    /// resnetN or resnetN-ce, N = 6n + 2 (8, 20, 32, 44, 56, 110); mobilenetv2,
    /// mobilenetv2-ce, mobilenetv2-ce-relu6 (optionally mobilenetv2-wALPHA-…).
    #[arg(long, default_value = "resnet20-ce")]
    pub model: String,
    /// The data.
    #[command(flatten)]
    pub data: DataArgs,
    /// Images per step.
    #[arg(long, default_value_t = 128)]
    pub batch_size: usize,
    /// Epochs to train [default: 200; 10 on the built-in synthetic set].
    #[arg(long)]
    pub epochs: Option<u64>,
    /// Base learning rate.
    #[arg(long, default_value_t = 0.1)]
    pub lr: f64,
    /// SGD momentum.
    #[arg(long, default_value_t = 0.9)]
    pub momentum: f64,
    /// L2 weight decay.
    #[arg(long, default_value_t = 5e-4)]
    pub weight_decay: f64,
    /// Epochs of linear learning-rate warm-up.
    #[arg(long, default_value_t = 0)]
    pub warmup_epochs: u64,
    /// cosine, step or constant.
    #[arg(long, default_value = "cosine")]
    pub schedule: String,
    /// Epochs at which the step schedule decays, comma-separated [default: 50% and 75%].
    #[arg(long, value_delimiter = ',')]
    pub milestones: Option<Vec<u64>>,
    /// Factor of the step schedule.
    #[arg(long, default_value_t = 0.1)]
    pub gamma: f64,
    /// Label smoothing ε.
    #[arg(long, default_value_t = 0.0)]
    pub label_smoothing: f32,
    /// Seed of the initial weights, data order and augmentation.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Run folder [default: runs/MODEL-DATASET-TIME].
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// Continue the run in DIR from its last checkpoint, with its saved settings.
    #[arg(long, value_name = "DIR")]
    pub resume: Option<PathBuf>,
    /// Start from this state dict (safetensors, e.g. saved by PyTorch).
    #[arg(long, value_name = "FILE")]
    pub init: Option<PathBuf>,
    /// No random crop or flip.
    #[arg(long)]
    pub no_augment: bool,
    /// Visit the training images in file order.
    #[arg(long)]
    pub no_shuffle: bool,
    /// Stop after K optimizer steps in all (saving a checkpoint).
    #[arg(long, value_name = "K")]
    pub steps: Option<u64>,
    /// Also write the final weights to FILE (safetensors state dict).
    #[arg(long, value_name = "FILE")]
    pub save: Option<PathBuf>,
    /// Read the training metrics back every N steps.
    #[arg(long, value_name = "N", default_value_t = 20)]
    pub log_every: u64,
}

/// `eval`'s options.
#[derive(Debug, Args)]
pub struct EvalArgs {
    /// The weights (safetensors state dict).
    #[arg(long, value_name = "FILE")]
    pub checkpoint: PathBuf,
    /// The model [default: the one the checkpoint names].
    #[arg(long)]
    pub model: Option<String>,
    /// The data.
    #[command(flatten)]
    pub data: DataArgs,
    /// Images per batch.
    #[arg(long, default_value_t = 128)]
    pub batch_size: usize,
    /// Write the logits [N, classes] in test-set order to FILE (safetensors, `logits`).
    #[arg(long, value_name = "FILE")]
    pub save_logits: Option<PathBuf>,
}

/// `inspect`'s options.
#[derive(Debug, Args)]
pub struct InspectArgs {
    /// The weights (safetensors state dict).
    #[arg(long, value_name = "FILE")]
    pub checkpoint: PathBuf,
    /// The model [default: the one the checkpoint names].
    #[arg(long)]
    pub model: Option<String>,
    /// The data.
    #[command(flatten)]
    pub data: DataArgs,
    /// Images per batch.
    #[arg(long, default_value_t = 128)]
    pub batch_size: usize,
    /// Folder for the tables and plots [default: CHECKPOINT's folder/inspect-STEM].
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// Skip the channel-drop curve (ten passes over the test set).
    #[arg(long)]
    pub no_drop: bool,
}

/// `download`'s options.
#[derive(Debug, Args)]
pub struct DownloadArgs {
    /// cifar10 or cifar100.
    #[arg(long, default_value = "cifar10")]
    pub dataset: String,
    /// The data folder.
    #[arg(long, value_name = "DIR", default_value = DEFAULT_DATA_DIR)]
    pub data: PathBuf,
}

/// A parsed command line and which `train` options were given explicitly.
#[derive(Debug)]
pub struct Invocation {
    /// The options.
    pub cli: Cli,
    /// `train` options typed on the command line (not defaults), by argument id.
    pub explicit: Vec<String>,
}

/// Parses `args` (the first is the program name). Help, version and usage errors come back
/// as clap's error, which prints itself (`err.exit()`).
pub fn parse<I, T>(args: I) -> std::result::Result<Invocation, clap::Error>
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let matches = Cli::command().try_get_matches_from(args)?;
    let cli = Cli::from_arg_matches(&matches)?;
    let explicit = matches
        .subcommand_matches("train")
        .map(explicit_ids)
        .unwrap_or_default();
    Ok(Invocation { cli, explicit })
}

fn explicit_ids(matches: &ArgMatches) -> Vec<String> {
    matches
        .ids()
        .filter(|id| matches.value_source(id.as_str()) == Some(ValueSource::CommandLine))
        .map(|id| id.as_str().to_string())
        .collect()
}

/// What a subcommand produced, for callers that go on (tests).
#[derive(Debug)]
pub enum Outcome {
    /// `train`.
    Trained(TrainOutcome),
    /// `eval`.
    Evaluated(EvalReport),
    /// `inspect`.
    Inspected(InhibitedReport, Vec<DropPoint>),
    /// `download`.
    Downloaded(PathBuf),
}

/// Carries out a parsed command line on `gpu` (opened here when `None`). `interrupt`, set by
/// a Ctrl-C handler, stops training after the current step with a checkpoint.
pub fn execute(
    invocation: Invocation,
    gpu: Option<&Gpu>,
    interrupt: Option<Arc<AtomicBool>>,
) -> Result<Outcome> {
    let Invocation { cli, explicit } = invocation;
    let console = Console {
        messages: !cli.quiet,
        progress: !cli.no_progress && !cli.quiet,
    };
    let opened;
    let gpu = match gpu {
        Some(gpu) => gpu,
        None => {
            opened = Gpu::new()?;
            console.say(&format!("device: {}", opened.adapter()));
            &opened
        }
    };
    match cli.command {
        Command::Train(args) => {
            commands::train(gpu, args, &explicit, console, interrupt).map(Outcome::Trained)
        }
        Command::Eval(args) => commands::eval(gpu, args, console).map(Outcome::Evaluated),
        Command::Inspect(args) => commands::inspect(gpu, args, console)
            .map(|(report, curve)| Outcome::Inspected(report, curve)),
        Command::Download(args) => {
            let kind = commands::cifar_kind(&args.dataset.parse()?)?;
            download::prepare(&Archive::official(kind), &args.data, true, console)
                .map(Outcome::Downloaded)
        }
    }
}
