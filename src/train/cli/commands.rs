//! What each subcommand does: `train` (with the rules of `--resume`), `eval`, `inspect`,
//! and `--download`.

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use super::{DataArgs, EvalArgs, InspectArgs, TrainArgs};
use crate::checkpoint::StateDict;
use crate::data::cifar::CifarKind;
use crate::data::Dataset;
use crate::error::{Error, Result};
use crate::gpu::Gpu;
use crate::graph::exec::Executor;
use crate::graph::NodeId;
use crate::train::channel_drop::{self, DropPoint, DROP_FRACTIONS};
use crate::train::config::TrainConfig;
use crate::train::console::Console;
use crate::train::dataset::{DataSource, DatasetName, DEFAULT_DATA_DIR, DEFAULT_EPOCHS};
use crate::train::download::{self, Archive};
use crate::train::evaluate::{evaluate, model_of, save_logits, EvalReport};
use crate::train::inhibited::{self, InhibitedReport};
use crate::train::model::ModelName;
use crate::train::plot;
use crate::train::run_dir::write_atomically;
use crate::train::run_state;
use crate::train::schedule::DecayKind;
use crate::train::trainer::{self, RunOptions, TrainOutcome};

/// The options that may accompany `--resume`: they change how the run is carried out, not
/// what it computes.
const RESUME_OPTIONS: [&str; 8] = [
    "resume",
    "steps",
    "save",
    "log_every",
    "data",
    "download",
    "quiet",
    "no_progress",
];

pub(super) fn train(
    gpu: &Gpu,
    args: TrainArgs,
    explicit: &[String],
    console: Console,
    interrupt: Option<Arc<AtomicBool>>,
) -> Result<TrainOutcome> {
    let config = match &args.resume {
        Some(dir) => {
            let fixed: Vec<String> = explicit
                .iter()
                .filter(|id| !RESUME_OPTIONS.contains(&id.as_str()))
                .map(|id| format!("--{}", id.replace('_', "-")))
                .collect();
            if !fixed.is_empty() {
                return Err(Error::invalid(
                    "train",
                    format!(
                        "--resume continues with the settings saved in the run; {} cannot \
                         change (only --steps, --save, --log-every and --data may be given)",
                        fixed.join(", ")
                    ),
                ));
            }
            let mut config = run_state::resume_config(dir)?;
            if let Some(data) = &args.data.data {
                config.data.dir = Some(data.clone());
            }
            config
        }
        None => TrainConfig {
            model: args.model.parse()?,
            epochs: default_epochs(&args, console)?,
            data: data_source(&args.data)?,
            batch_size: args.batch_size,
            lr: args.lr,
            momentum: args.momentum,
            weight_decay: args.weight_decay,
            warmup_epochs: args.warmup_epochs,
            schedule: args.schedule.parse::<DecayKind>()?,
            milestones: args.milestones.clone(),
            gamma: args.gamma,
            label_smoothing: args.label_smoothing,
            seed: args.seed,
            augment: !args.no_augment,
            shuffle: !args.no_shuffle,
        },
    };
    config.validate()?;
    if args.data.download {
        fetch_if_asked(&config.data, console)?;
    }
    let data = config.data.load()?;
    console.say(&data.description);
    let options = RunOptions {
        out: args.resume.clone().or(args.out.clone()),
        resume: args.resume.is_some(),
        init: args.init.clone(),
        max_steps: args.steps,
        save: args.save.clone(),
        log_every: args.log_every,
        console,
        interrupt,
    };
    trainer::train(gpu, config, data, &options)
}

/// `--epochs`, or the default for the data set it will train on.
fn default_epochs(args: &TrainArgs, console: Console) -> Result<u64> {
    if let Some(epochs) = args.epochs {
        return Ok(epochs);
    }
    let (full, demo) = DEFAULT_EPOCHS;
    if data_source(&args.data)?.resolve()?.0 == DatasetName::Synthetic {
        console.say(&format!(
            "epochs: {demo} on the synthetic set unless --epochs is given ({full} on CIFAR)"
        ));
        return Ok(demo);
    }
    Ok(full)
}

fn data_source(args: &DataArgs) -> Result<DataSource> {
    Ok(DataSource {
        name: args.dataset.as_deref().map(str::parse).transpose()?,
        dir: args.data.clone(),
        train_images: args.train_images,
        test_images: args.test_images,
    })
}

pub(super) fn cifar_kind(name: &DatasetName) -> Result<CifarKind> {
    match name {
        DatasetName::Cifar10 => Ok(CifarKind::Cifar10),
        DatasetName::Cifar100 => Ok(CifarKind::Cifar100),
        other => Err(Error::invalid(
            "download",
            format!("only CIFAR-10 and CIFAR-100 can be downloaded, not {other}"),
        )),
    }
}

/// `--download`: fetches the named CIFAR set (CIFAR-10 by default) into the data folder.
fn fetch_if_asked(source: &DataSource, console: Console) -> Result<()> {
    let kind = cifar_kind(&source.name.unwrap_or(DatasetName::Cifar10))?;
    let dir = source
        .dir
        .clone()
        .unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR));
    download::prepare(&Archive::official(kind), &dir, true, console).map(|_| ())
}

/// A checkpoint ready to evaluate: its test set and an executor holding its weights.
struct Loaded {
    test: Dataset,
    exec: Executor,
    /// The BN(→CE)→ReLU sites, with `probes`.
    sites: Vec<inhibited::Site>,
    /// One global-average-pooling node per site, appended to the model's graph.
    probes: Vec<NodeId>,
}

/// Loads `checkpoint` as the model it names (or `model`) with the test set of `data_args`;
/// with `probe_sites`, the graph also gets one probe per inhibited-channel site.
fn load_for_eval(
    gpu: &Gpu,
    checkpoint: &Path,
    model: Option<&str>,
    data_args: &DataArgs,
    console: Console,
    probe_sites: bool,
) -> Result<Loaded> {
    let weights = StateDict::load(checkpoint)?;
    let given = model.map(str::parse::<ModelName>).transpose()?;
    let model = model_of(&weights, given, checkpoint)?;
    let mut source = data_source(data_args)?;
    if source.name.is_none() && source.dir.is_none() {
        // A checkpoint of this runner names the data set it was trained on.
        let metadata = weights.metadata();
        if let Some(name) = metadata.get(run_state::DATASET_KEY) {
            source.name = name.parse().ok();
        }
        if source.test_images.is_none() {
            let limit = metadata.get(run_state::TEST_IMAGES_KEY);
            source.test_images = limit.and_then(|n| n.parse().ok());
        }
    }
    if source.resolve()?.0 == DatasetName::Synthetic && source.train_images.is_none() {
        // Only the test images are needed: generate no training set.
        source.train_images = Some(0);
    }
    if data_args.download {
        fetch_if_asked(&source, console)?;
    }
    let data = source.load()?;
    console.say(&data.description);
    let test = data.split.test;
    let net = model.config(test.channels(), test.classes(), 0.0)?;
    let mut graph = net.build(1)?.graph;
    let sites = if probe_sites {
        inhibited::find_sites(&graph)
    } else {
        Vec::new()
    };
    let probes = inhibited::with_probes(&mut graph, &sites)?;
    let build_sites = sites.clone();
    let mut exec = Executor::new(
        gpu,
        move |batch| {
            let mut m = net.build(batch)?;
            inhibited::with_probes(&mut m.graph, &build_sites)?;
            Ok(m)
        },
        0,
    )?;
    exec.load_state_dict(&weights)?;
    console.say(&format!("{model}: weights from {}", checkpoint.display()));
    Ok(Loaded {
        test,
        exec,
        sites,
        probes,
    })
}

pub(super) fn eval(gpu: &Gpu, args: EvalArgs, console: Console) -> Result<EvalReport> {
    let Loaded { test, mut exec, .. } = load_for_eval(
        gpu,
        &args.checkpoint,
        args.model.as_deref(),
        &args.data,
        console,
        false,
    )?;
    let bar = console.bar(test.len() as u64, "eval".into());
    let report = evaluate(
        &mut exec,
        &test,
        args.batch_size,
        args.save_logits.is_some(),
        &bar,
    )?;
    bar.finish_and_clear();
    if let (Some(path), Some(logits)) = (&args.save_logits, &report.logits) {
        save_logits(path, logits, test.classes())?;
        console.say(&format!("logits: {}", path.display()));
    }
    console.say(&report.to_text());
    Ok(report)
}

pub(super) fn inspect(
    gpu: &Gpu,
    args: InspectArgs,
    console: Console,
) -> Result<(InhibitedReport, Vec<DropPoint>)> {
    let Loaded {
        test,
        mut exec,
        sites,
        probes,
    } = load_for_eval(
        gpu,
        &args.checkpoint,
        args.model.as_deref(),
        &args.data,
        console,
        true,
    )?;
    let out = args.out.clone().unwrap_or_else(|| {
        let stem = args
            .checkpoint
            .file_stem()
            .map_or("checkpoint".into(), |s| s.to_string_lossy().into_owned());
        args.checkpoint
            .parent()
            .unwrap_or(Path::new("."))
            .join(format!("inspect-{stem}"))
    });
    std::fs::create_dir_all(&out).map_err(|e| Error::Data {
        file: out.clone(),
        message: format!("cannot create the output folder: {e}"),
    })?;

    let bar = console.bar(test.len() as u64, "activations".into());
    let report = inhibited::measure(&mut exec, &sites, &probes, &test, args.batch_size, &bar)?;
    bar.finish_and_clear();
    console.say(&report.to_text());
    write_file(&out.join("inhibited.csv"), &report.to_csv())?;
    write_file(&out.join("channels.csv"), &report.channels_csv())?;

    let curve = if args.no_drop {
        Vec::new()
    } else {
        let bar = console.bar(DROP_FRACTIONS.len() as u64, "channel drop".into());
        let curve = channel_drop::channel_drop_curve(
            &mut exec,
            &report,
            &test,
            args.batch_size,
            &DROP_FRACTIONS,
            &bar,
        )?;
        bar.finish_and_clear();
        console.say(&channel_drop::drop_table(&curve));
        write_file(
            &out.join("channel_drop.csv"),
            &channel_drop::drop_csv(&curve),
        )?;
        curve
    };
    let mut charts = vec![report.chart()];
    if !curve.is_empty() {
        charts.push(channel_drop::drop_chart(&curve));
    }
    write_file(&out.join("inspect.svg"), &plot::svg(&charts))?;
    console.say(&format!("tables and plots: {}", out.display()));
    Ok((report, curve))
}

fn write_file(path: &Path, text: &str) -> Result<()> {
    write_atomically(path, text.as_bytes()).map_err(|e| Error::Data {
        file: path.to_path_buf(),
        message: format!("cannot write: {e}"),
    })
}
