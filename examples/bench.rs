//! cenet's benchmark of record: the engine's matmul as the adapter's practical ceiling, every
//! distinct convolution of a CIFAR ResNet-20 at batch 128 in each training pass, the CE
//! blocks against the convolutions they follow, and whole training steps.
//!
//!     cargo run --release --example bench [-- --json FILE] [--quick] [--mobilenet]
//!
//! `--quick` times a 512³ matmul instead of 1024³, takes one run per kernel instead of the
//! median of three, and trains at batch 32 only. `--mobilenet` adds MobileNetV2 and
//! MobileNetV2-CE (width 1) training steps at batch 32, which take minutes each on a
//! software adapter. Progress goes to stderr, the table to stdout.
//!
//! Kernel times are GPU times: `k` repetitions are recorded into one `Recorder`, encoded,
//! then submitted and waited for (`Gpu::wait_idle`) under the clock; one warm-up run first
//! compiles the pipelines, and the median of several runs is reported. Training steps run in
//! a fresh process each (this program started again with `--train-entry`), so the first
//! step's time counts from that process's start and includes opening the device and
//! compiling every pipeline. Throughput is the batch over the median time of the steps after
//! the first (five, one with `--quick`), each waited for and timed alone.
//! Speeds are only compared within one run: the table reports ratios to the matmul, and each
//! CE block's ratio to its convolution is the median over pairs of the two timed back to
//! back (five, one with `--quick`).
//!
//!     cargo run --release --example bench -- --profile MODEL BATCH
//!
//! instead takes one training step of MODEL (`resnet20`, `resnet20-ce`, `mobilenetv2`,
//! `mobilenetv2-ce`), then runs the step again dispatch by dispatch and prints the time
//! spent in each kernel: where to look next.
//!
//!     cargo run --release --example bench -- --kernels [--quick]
//!
//! times every convolution kernel family that fits each pass of each ResNet-20 convolution
//! and marks the one the device runs by default: what a kernel search (`CENET_AUTOTUNE=1`)
//! would choose between. With `CENET_AUTOTUNE=1` the main benchmark's convolutions run the
//! searched kernels.

use std::error::Error;
use std::path::PathBuf;
use std::process::{Command, ExitCode, Stdio};
use std::sync::OnceLock;
use std::time::Instant;

use cenet::graph::exec::{Executor, Mode};
use cenet::kernels::ce::{self, CeGrads, CeOptions, CeSaved, CeState};
use cenet::kernels::conv::{self, Conv2d};
use cenet::kernels::linear::{self, MatmulSpec};
use cenet::kernels::sgd::SgdConfig;
use cenet::kernels::Recorder;
use cenet::nn::mobilenet::MobileNetV2Config;
use cenet::nn::resnet::ResNetConfig;
use cenet::nn::Model;
use cenet::rng::SplitMix64;
use cenet::{DType, Gpu, Tensor};

type BenchResult<T> = std::result::Result<T, Box<dyn Error>>;

/// When `main` began: the reference point of `first_step_s`.
static START: OnceLock<Instant> = OnceLock::new();

/// Batch of the convolution and CE measurements (ResNet-20's training batch).
const BATCH: usize = 128;

/// Why a training step is one submission: by construction (wgpu exposes no counter).
const SUBMITS_BASIS: &str = "Executor::train_step records the whole step into one Recorder \
    and calls Recorder::submit once, which encodes one command encoder and calls \
    queue.submit once; the image and label uploads are queue.write_buffer calls that ride on \
    that submission";

struct Options {
    json: Option<PathBuf>,
    quick: bool,
    mobilenet: bool,
}

/// How hard to measure.
#[derive(Clone, Copy)]
struct Effort {
    /// Timed runs after the warm-up; the median is reported.
    runs: usize,
    /// Repetitions are added to a run until it lasts about this long.
    target_s: f64,
}

fn main() -> ExitCode {
    START.get_or_init(Instant::now);
    let _ = env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn"))
        .try_init();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let outcome = match args.first().map(String::as_str) {
        Some("--train-entry") => train_entry_main(&args[1..]),
        Some("--profile") => profile_main(&args[1..]),
        Some("--kernels") => kernels_main(&args[1..]),
        _ => parse_options(&args).and_then(|options| run(&options)),
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bench: {e}");
            ExitCode::FAILURE
        }
    }
}

fn parse_options(args: &[String]) -> BenchResult<Options> {
    let mut options = Options {
        json: None,
        quick: false,
        mobilenet: false,
    };
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--json" => {
                let path = it.next().ok_or("--json needs a file name")?;
                options.json = Some(PathBuf::from(path));
            }
            "--quick" => options.quick = true,
            "--mobilenet" => options.mobilenet = true,
            "-h" | "--help" => {
                println!(
                    "usage: bench [--json FILE] [--quick] [--mobilenet] | --profile MODEL BATCH \
                     | --kernels [--quick] (see the source's header)"
                );
                std::process::exit(0);
            }
            other => return Err(format!("unknown argument {other:?} (try --help)").into()),
        }
    }
    Ok(options)
}

fn progress(what: &str) {
    let elapsed = START.get().map_or(0.0, |s| s.elapsed().as_secs_f64());
    eprintln!("[bench {elapsed:6.1} s] {what}");
}

fn run(options: &Options) -> BenchResult<()> {
    // On lavapipe a batch-128 convolution pass takes about a second and a ResNet-20 step at
    // batch 128 half a minute: the default stays within a few minutes there.
    let effort = if options.quick {
        Effort {
            runs: 1,
            target_s: 0.1,
        }
    } else {
        Effort {
            runs: 3,
            target_s: 0.3,
        }
    };
    let gpu = Gpu::new()?;
    let adapter = gpu.adapter().clone();
    progress(&format!("adapter: {adapter}"));

    let size = if options.quick { 512 } else { 1024 };
    progress(&format!("matmul {size}³"));
    let matmul = bench_matmul(&gpu, size, effort)?;
    let convs = bench_convs(&gpu, effort, matmul.gflops)?;
    let ces = bench_ce(&gpu, effort)?;
    drop(gpu);

    let mut entries: Vec<(&str, usize)> = Vec::new();
    let batches: &[usize] = if options.quick { &[32] } else { &[128, 32] };
    for &batch in batches {
        entries.push(("resnet20", batch));
        entries.push(("resnet20-ce", batch));
    }
    if options.mobilenet {
        entries.push(("mobilenetv2", 32));
        entries.push(("mobilenetv2-ce", 32));
    }
    let mut steps = Vec::new();
    for (model, batch) in entries {
        let timed = if options.quick { 1 } else { 5 };
        progress(&format!(
            "{model} batch {batch}: training steps in a fresh process"
        ));
        steps.push(train_in_fresh_process(model, batch, timed)?);
    }

    let report = Report {
        adapter,
        quick: options.quick,
        matmul,
        convs,
        ces,
        steps,
    };
    print!("{}", report.table());
    if let Some(path) = &options.json {
        std::fs::write(path, report.json().to_string())?;
        progress(&format!("wrote {}", path.display()));
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Timing

/// Milliseconds per repetition of the work `record` records: the median of `effort.runs`
/// timed runs, after one warm-up run that compiles the pipelines.
fn time_ms(
    gpu: &Gpu,
    effort: Effort,
    mut record: impl FnMut(&mut Recorder) -> cenet::Result<()>,
) -> BenchResult<f64> {
    let mut timed_run = |reps: usize| -> BenchResult<f64> {
        let mut rec = Recorder::new(gpu);
        for _ in 0..reps {
            record(&mut rec)?;
        }
        let commands = rec.finish()?;
        let start = Instant::now();
        gpu.scoped("benchmark submission", || gpu.queue().submit([commands]))?;
        gpu.wait_idle()?;
        Ok(start.elapsed().as_secs_f64() * 1e3 / reps as f64)
    };
    timed_run(1)?;
    let first = timed_run(1)?;
    let reps = ((effort.target_s * 1e3 / first.max(1e-3)).ceil() as usize).clamp(1, 64);
    let mut times = if reps == 1 { vec![first] } else { vec![] };
    while times.len() < effort.runs {
        times.push(timed_run(reps)?);
    }
    Ok(median(times))
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

fn random_tensor(gpu: &Gpu, shape: &[usize], seed: u64) -> cenet::Result<Tensor> {
    let mut rng = SplitMix64::new(seed);
    let n: usize = shape.iter().product();
    let values: Vec<f32> = (0..n).map(|_| rng.normal() as f32).collect();
    Tensor::from_slice(gpu, shape, &values)
}

// ---------------------------------------------------------------------------------------
// Matmul

struct MatmulResult {
    size: usize,
    ms: f64,
    gflops: f64,
}

fn bench_matmul(gpu: &Gpu, size: usize, effort: Effort) -> BenchResult<MatmulResult> {
    let spec = MatmulSpec {
        m: size,
        n: size,
        k: size,
        trans_a: false,
        trans_b: false,
    };
    let a = random_tensor(gpu, &[size, size], 1)?;
    let b = random_tensor(gpu, &[size, size], 2)?;
    let c = Tensor::uninit(gpu, &[size, size], DType::F32, "matmul output")?;
    let ms = time_ms(gpu, effort, |rec| {
        linear::matmul_into(rec, &a, &b, &c, spec)
    })?;
    Ok(MatmulResult {
        size,
        ms,
        gflops: spec.flops() / (ms * 1e6),
    })
}

// ---------------------------------------------------------------------------------------
// Convolutions

/// One distinct convolution of ResNet-20 (32×32 inputs).
struct ConvCase {
    in_channels: usize,
    out_channels: usize,
    /// Input height and width.
    size: usize,
    kernel: usize,
    stride: usize,
    /// How many convolutions of this shape one ResNet-20 step runs.
    per_step: usize,
    /// The stem: its input gradient is never needed in training.
    stem: bool,
}

impl ConvCase {
    fn geometry(&self) -> Conv2d {
        Conv2d::new(self.stride, self.kernel / 2)
    }

    fn label(&self) -> String {
        let (c, s, k) = (self.in_channels, self.size, self.kernel);
        format!("{c}→{} {s}×{s} {k}×{k} s{}", self.out_channels, self.stride)
    }

    fn output_size(&self) -> usize {
        (self.size + 2 * (self.kernel / 2) - self.kernel) / self.stride + 1
    }

    /// Multiply-adds times two, the same for each of the three passes.
    fn flops(&self) -> f64 {
        let o = self.output_size();
        2.0 * (BATCH * self.out_channels * o * o * self.in_channels * self.kernel * self.kernel)
            as f64
    }
}

const RESNET20_CONVS: [ConvCase; 8] = [
    conv_case(3, 16, 32, 3, 1, 1, true),
    conv_case(16, 16, 32, 3, 1, 6, false),
    conv_case(16, 32, 32, 3, 2, 1, false),
    conv_case(32, 32, 16, 3, 1, 5, false),
    conv_case(16, 32, 32, 1, 2, 1, false),
    conv_case(32, 64, 16, 3, 2, 1, false),
    conv_case(64, 64, 8, 3, 1, 5, false),
    conv_case(32, 64, 16, 1, 2, 1, false),
];

const fn conv_case(
    in_channels: usize,
    out_channels: usize,
    size: usize,
    kernel: usize,
    stride: usize,
    per_step: usize,
    stem: bool,
) -> ConvCase {
    ConvCase {
        in_channels,
        out_channels,
        size,
        kernel,
        stride,
        per_step,
        stem,
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Pass {
    Forward,
    BackwardData,
    BackwardWeight,
}

impl Pass {
    fn name(self) -> &'static str {
        match self {
            Pass::Forward => "forward",
            Pass::BackwardData => "backward_data",
            Pass::BackwardWeight => "backward_weight",
        }
    }
}

struct ConvResult {
    case: usize,
    pass: Pass,
    ms: f64,
    gflops: f64,
    ratio_to_matmul: f64,
}

fn bench_convs(gpu: &Gpu, effort: Effort, matmul_gflops: f64) -> BenchResult<Vec<ConvResult>> {
    let mut results = Vec::new();
    for (i, case) in RESNET20_CONVS.iter().enumerate() {
        let geometry = case.geometry();
        let (s, o, k) = (case.size, case.output_size(), case.kernel);
        let x = random_tensor(gpu, &[BATCH, case.in_channels, s, s], 10 + i as u64)?;
        let w_shape = [case.out_channels, case.in_channels, k, k];
        let w = random_tensor(gpu, &w_shape, 20 + i as u64)?;
        let dy = random_tensor(gpu, &[BATCH, case.out_channels, o, o], 30 + i as u64)?;
        let y = Tensor::uninit(gpu, dy.shape(), DType::F32, "conv output")?;
        let dx = Tensor::uninit(gpu, x.shape(), DType::F32, "conv input gradient")?;
        let dw = Tensor::uninit(gpu, &w_shape, DType::F32, "conv weight gradient")?;
        for pass in [Pass::Forward, Pass::BackwardData, Pass::BackwardWeight] {
            progress(&format!("conv {} {}", case.label(), pass.name()));
            let ms = time_ms(gpu, effort, |rec| match pass {
                Pass::Forward => conv::forward_into(rec, &geometry, &x, &w, None, &y),
                Pass::BackwardData => conv::backward_data_into(rec, &geometry, &dy, &w, &dx),
                Pass::BackwardWeight => conv::backward_weight_into(rec, &geometry, &x, &dy, &dw),
            })?;
            let gflops = case.flops() / (ms * 1e6);
            results.push(ConvResult {
                case: i,
                pass,
                ms,
                gflops,
                ratio_to_matmul: gflops / matmul_gflops,
            });
        }
    }
    Ok(results)
}

/// `--kernels`: every fitting kernel family on every pass of every ResNet-20 convolution.
fn kernels_main(args: &[String]) -> BenchResult<()> {
    let quick = match args {
        [] => false,
        [flag] if flag == "--quick" => true,
        _ => return Err("usage: bench --kernels [--quick]".into()),
    };
    let effort = Effort {
        runs: if quick { 1 } else { 3 },
        target_s: if quick { 0.1 } else { 0.3 },
    };
    let gpu = Gpu::new()?;
    println!("adapter: {} ({:?} tuning)", gpu.adapter(), gpu.tuning());
    println!(
        "{:<22} {:<16} {:<7} {:>9}  default",
        "conv (batch 128)", "pass", "kernel", "ms"
    );
    for (i, case) in RESNET20_CONVS.iter().enumerate() {
        let geometry = case.geometry();
        let (s, o, k) = (case.size, case.output_size(), case.kernel);
        let x_shape = [BATCH, case.in_channels, s, s];
        let w_shape = [case.out_channels, case.in_channels, k, k];
        let x = random_tensor(&gpu, &x_shape, 10 + i as u64)?;
        let w = random_tensor(&gpu, &w_shape, 20 + i as u64)?;
        let dy = random_tensor(&gpu, &[BATCH, case.out_channels, o, o], 30 + i as u64)?;
        let y = Tensor::uninit(&gpu, dy.shape(), DType::F32, "conv output")?;
        let dx = Tensor::uninit(&gpu, x.shape(), DType::F32, "conv input gradient")?;
        let dw = Tensor::uninit(&gpu, &w_shape, DType::F32, "conv weight gradient")?;
        for pass in [
            conv::Pass::Forward,
            conv::Pass::BackwardData,
            conv::Pass::BackwardWeight,
        ] {
            let (inputs, out) = match pass {
                conv::Pass::Forward => ([&x, &w], &y),
                conv::Pass::BackwardData => ([&dy, &w], &dx),
                conv::Pass::BackwardWeight => ([&x, &dy], &dw),
            };
            let kernels = conv::kernels_for(&gpu, pass, &geometry, &x_shape, &w_shape)?;
            let mut rows = Vec::new();
            for &kernel in &kernels.fitting {
                progress(&format!(
                    "conv {} {} {}",
                    case.label(),
                    pass.name(),
                    kernel.name()
                ));
                let ms = time_ms(&gpu, effort, |rec| {
                    conv::record_with_kernel(rec, pass, kernel, &geometry, inputs, out)
                })?;
                rows.push((kernel, ms));
            }
            let best = rows.iter().map(|r| r.1).fold(f64::INFINITY, f64::min);
            for (j, (kernel, ms)) in rows.iter().enumerate() {
                let mark = if kernels.defaults.contains(kernel) {
                    "*"
                } else {
                    ""
                };
                let fastest = if *ms == best { "  fastest" } else { "" };
                println!(
                    "{:<22} {:<16} {:<7} {:>9.2}  {mark:<7}{fastest}",
                    if j == 0 { case.label() } else { String::new() },
                    if j == 0 { pass.name() } else { "" },
                    kernel.name(),
                    ms
                );
            }
        }
    }
    Ok(())
}

/// The convolution time of one ResNet-20 training step at batch 128: every pass of every
/// convolution, times its count, except the stem's unneeded input gradient.
fn resnet20_conv_ms(convs: &[ConvResult]) -> f64 {
    convs
        .iter()
        .map(|r| {
            let case = &RESNET20_CONVS[r.case];
            let needed = !(case.stem && r.pass == Pass::BackwardData);
            if needed {
                r.ms * case.per_step as f64
            } else {
                0.0
            }
        })
        .sum()
}

// ---------------------------------------------------------------------------------------
// CE blocks

struct CeResult {
    channels: usize,
    size: usize,
    forward_ms: f64,
    ms: f64,
    /// The 3×3 stride-1 convolution of this width that precedes the block.
    conv_case: usize,
    /// Its forward and both backward passes, timed in pairs with the block's.
    conv_ms: f64,
    /// The median over those pairs of block time / convolution time.
    ratio: f64,
}

fn bench_ce(gpu: &Gpu, effort: Effort) -> BenchResult<Vec<CeResult>> {
    let mut results = Vec::new();
    for (channels, size) in [(16, 32), (32, 16), (64, 8)] {
        let shape = [BATCH, channels, size, size];
        let mut state = CeState::new(gpu, channels, CeOptions::default(), 7)?;
        let x = random_tensor(gpu, &shape, 40 + channels as u64)?;
        let dy = random_tensor(gpu, &shape, 50 + channels as u64)?;
        let y = Tensor::uninit(gpu, &shape, DType::F32, "ce output")?;
        let mut saved = CeSaved::new(gpu, &state, &shape)?;
        let grads = CeGrads::new(gpu, &state, &shape)?;

        progress(&format!("ce {channels}×{size}×{size} forward"));
        let forward_ms = time_ms(gpu, effort, |rec| {
            ce::ce_forward_train_into(rec, &mut state, &x, &y, &mut saved)
        })?;
        let conv_case = RESNET20_CONVS
            .iter()
            .position(|c| {
                c.in_channels == channels
                    && c.out_channels == channels
                    && c.size == size
                    && c.kernel == 3
                    && c.stride == 1
            })
            .expect("ResNet-20 has a 3×3 stride-1 convolution at every CE width");
        let geometry = RESNET20_CONVS[conv_case].geometry();
        let w_shape = [channels, channels, 3, 3];
        let w = random_tensor(gpu, &w_shape, 60 + channels as u64)?;
        let (conv_y, conv_dx) = (y.clone(), grads.x.clone());
        let dw = Tensor::uninit(gpu, &w_shape, DType::F32, "conv weight gradient")?;

        // The block and its convolution timed back to back, pair after pair, and the median
        // ratio taken: the machine's speed drifts more between the benchmark's sections
        // than within a pair.
        progress(&format!(
            "ce {channels}×{size}×{size} forward + backward, and its conv"
        ));
        let pairs = if effort.runs > 1 { 5 } else { 1 };
        let single = Effort { runs: 1, ..effort };
        let (mut ce_times, mut conv_times, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
        for _ in 0..pairs {
            let ce_ms = time_ms(gpu, single, |rec| {
                ce::ce_forward_train_into(rec, &mut state, &x, &y, &mut saved)?;
                ce::ce_backward_into(rec, &state, &x, &dy, &saved, &grads)
            })?;
            let conv_ms = time_ms(gpu, single, |rec| {
                conv::forward_into(rec, &geometry, &x, &w, None, &conv_y)?;
                conv::backward_data_into(rec, &geometry, &dy, &w, &conv_dx)?;
                conv::backward_weight_into(rec, &geometry, &x, &dy, &dw)
            })?;
            ce_times.push(ce_ms);
            conv_times.push(conv_ms);
            ratios.push(ce_ms / conv_ms);
        }
        results.push(CeResult {
            channels,
            size,
            forward_ms,
            ms: median(ce_times),
            conv_case,
            conv_ms: median(conv_times),
            ratio: median(ratios),
        });
    }
    Ok(results)
}

// ---------------------------------------------------------------------------------------
// Training steps

struct StepResult {
    model: String,
    batch: usize,
    first_step_s: f64,
    img_per_s: f64,
    steps_timed: usize,
    dispatches_per_step: usize,
    planned_peak_bytes: u64,
    live_bound_bytes: u64,
    pipelines_compiled: usize,
}

fn build_model(name: &str) -> BenchResult<Box<dyn Fn(usize) -> cenet::Result<Model>>> {
    Ok(match name {
        "resnet20" | "resnet20-ce" => {
            let config = ResNetConfig::new(20, name.ends_with("-ce"))?;
            Box::new(move |batch| config.build(batch))
        }
        "mobilenetv2" | "mobilenetv2-ce" => {
            let config = MobileNetV2Config::new(1.0, name.ends_with("-ce"))?;
            Box::new(move |batch| config.build(batch))
        }
        other => return Err(format!("no model named {other:?}").into()),
    })
}

/// Runs [`train_entry_main`] in a new process of this program and reads its result line.
fn train_in_fresh_process(model: &str, batch: usize, steps: usize) -> BenchResult<StepResult> {
    let exe = std::env::current_exe()?;
    let output = Command::new(exe)
        .args([
            "--train-entry",
            model,
            &batch.to_string(),
            &steps.to_string(),
        ])
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()?;
    if !output.status.success() {
        return Err(format!(
            "the {model} batch {batch} process failed ({})",
            output.status
        )
        .into());
    }
    let stdout = String::from_utf8_lossy(&output.stdout);
    let line = stdout
        .lines()
        .find_map(|l| l.strip_prefix("train-entry "))
        .ok_or("the training process printed no result")?;
    let field = |key: &str| -> BenchResult<f64> {
        line.split_whitespace()
            .find_map(|kv| kv.strip_prefix(key)?.strip_prefix('='))
            .ok_or_else(|| format!("the training result has no {key}"))?
            .parse::<f64>()
            .map_err(|e| format!("the training result's {key}: {e}").into())
    };
    Ok(StepResult {
        model: model.to_string(),
        batch,
        first_step_s: field("first_step_s")?,
        img_per_s: field("img_per_s")?,
        steps_timed: field("steps_timed")? as usize,
        dispatches_per_step: field("dispatches_per_step")? as usize,
        planned_peak_bytes: field("planned_peak_bytes")? as u64,
        live_bound_bytes: field("live_bound_bytes")? as u64,
        pipelines_compiled: field("pipelines_compiled")? as usize,
    })
}

/// `--train-entry MODEL BATCH STEPS`: opens the device, takes one training step (timed from
/// process start), then `STEPS` back-to-back steps, and prints one `train-entry key=value…`
/// line on stdout.
fn train_entry_main(args: &[String]) -> BenchResult<()> {
    let [model, batch, steps] = args else {
        return Err("usage: bench --train-entry MODEL BATCH STEPS".into());
    };
    let batch: usize = batch.parse()?;
    let steps: usize = steps.parse::<usize>()?.max(1);
    let gpu = Gpu::new()?;
    let mut exec = Executor::new(&gpu, build_model(model)?, 1)?;

    let (images, labels) = random_batch(batch);
    exec.train_step(&images, &labels, &SGD, false)?;
    gpu.wait_idle()?;
    let first_step_s = START.get().map_or(0.0, |s| s.elapsed().as_secs_f64());
    progress(&format!(
        "{model} batch {batch}: first step done, timing {steps} more"
    ));

    // Each step is waited for and timed alone; the median step stands for the run, so a
    // burst of load from elsewhere on a shared machine moves it less than it would a mean.
    let mut step_s = Vec::with_capacity(steps);
    for _ in 0..steps {
        let start = Instant::now();
        exec.train_step(&images, &labels, &SGD, false)?;
        gpu.wait_idle()?;
        step_s.push(start.elapsed().as_secs_f64());
    }
    step_s.sort_by(f64::total_cmp);
    let median_s = step_s[step_s.len() / 2];

    let (planned, live) = exec.memory(batch, Mode::Train).ok_or("no compiled step")?;
    let dispatches = exec
        .dispatches_per_step(batch, Mode::Train)
        .ok_or("no compiled step")?;
    println!(
        "train-entry first_step_s={first_step_s} img_per_s={} steps_timed={steps} \
         dispatches_per_step={dispatches} planned_peak_bytes={planned} live_bound_bytes={live} \
         pipelines_compiled={}",
        batch as f64 / median_s,
        gpu.pipelines_compiled()
    );
    Ok(())
}

/// `--profile MODEL BATCH`: one training step, then the same step dispatch by dispatch,
/// printed as a table of kernels, slowest first.
fn profile_main(args: &[String]) -> BenchResult<()> {
    let [model, batch] = args else {
        return Err("usage: bench --profile MODEL BATCH".into());
    };
    let batch: usize = batch.parse()?;
    let gpu = Gpu::new()?;
    let mut exec = Executor::new(&gpu, build_model(model)?, 1)?;
    let (images, labels) = random_batch(batch);
    exec.train_step(&images, &labels, &SGD, false)?;
    gpu.wait_idle()?;
    progress(&format!("{model} batch {batch}: profiling one step"));
    let times = exec.profile_train_step(batch)?;
    let total: f64 = times.iter().map(|t| t.ms).sum();
    println!("{:>10} {:>6} {:>6}  kernel", "ms", "%", "calls");
    for t in &times {
        println!(
            "{:>10.1} {:>6.1} {:>6}  {}",
            t.ms,
            100.0 * t.ms / total,
            t.count,
            t.name
        );
    }
    println!("{total:>10.1} {:>6.1}        total", 100.0);
    Ok(())
}

/// Random images and labels for a batch of CIFAR-sized inputs.
fn random_batch(batch: usize) -> (Vec<f32>, Vec<u32>) {
    let mut rng = SplitMix64::new(3);
    let images: Vec<f32> = (0..batch * 3 * 32 * 32)
        .map(|_| rng.normal() as f32)
        .collect();
    let labels: Vec<u32> = (0..batch).map(|_| rng.below(10) as u32).collect();
    (images, labels)
}

/// The optimiser of the timed training steps.
const SGD: SgdConfig = SgdConfig {
    lr: 0.01,
    momentum: 0.9,
    weight_decay: 5e-4,
    nesterov: false,
};

// ---------------------------------------------------------------------------------------
// Report

struct Report {
    adapter: cenet::gpu::AdapterSummary,
    quick: bool,
    matmul: MatmulResult,
    convs: Vec<ConvResult>,
    ces: Vec<CeResult>,
    steps: Vec<StepResult>,
}

impl Report {
    fn table(&self) -> String {
        use std::fmt::Write;
        let mut t = String::new();
        let m = &self.matmul;
        let _ = writeln!(t, "adapter: {}", self.adapter);
        let _ = writeln!(
            t,
            "matmul {n}×{n}×{n}: {:.1} ms, {:.2} GFLOP/s{}\n",
            m.ms,
            m.gflops,
            if self.quick { " (quick)" } else { "" },
            n = m.size,
        );
        let _ = writeln!(
            t,
            "{:<22} {:>4}  {:<16} {:>9} {:>8} {:>8}",
            "conv (batch 128)", "×", "pass", "ms", "GFLOP/s", "/matmul"
        );
        for r in &self.convs {
            let case = &RESNET20_CONVS[r.case];
            let first = r.pass == Pass::Forward;
            let unused = case.stem && r.pass == Pass::BackwardData;
            let _ = writeln!(
                t,
                "{:<22} {:>4}  {:<16} {:>9.2} {:>8.2} {:>8.2}",
                if first { case.label() } else { String::new() },
                if first {
                    case.per_step.to_string()
                } else {
                    String::new()
                },
                format!("{}{}", r.pass.name(), if unused { "*" } else { "" }),
                r.ms,
                r.gflops,
                r.ratio_to_matmul
            );
        }
        let _ = writeln!(
            t,
            "× = convolutions of this shape per ResNet-20 step; * = not needed in training"
        );
        let _ = writeln!(
            t,
            "all convolutions of one ResNet-20 training step at batch 128: {:.0} ms\n",
            resnet20_conv_ms(&self.convs)
        );
        let _ = writeln!(
            t,
            "{:<22} {:>11} {:>13} {:>15} {:>8}",
            "CE (batch 128)", "forward ms", "fwd+bwd ms", "3×3 conv f+b ms", "/conv"
        );
        for r in &self.ces {
            let _ = writeln!(
                t,
                "{:<22} {:>11.2} {:>13.2} {:>15.2} {:>8.2}",
                format!("{}×{}×{}", r.channels, r.size, r.size),
                r.forward_ms,
                r.ms,
                r.conv_ms,
                r.ratio
            );
        }
        let _ = writeln!(
            t,
            "\n{:<16} {:>5} {:>9} {:>12} {:>11} {:>8} {:>11} {:>11}",
            "training step",
            "batch",
            "img/s",
            "first step s",
            "dispatches",
            "submits",
            "planned MB",
            "bound MB"
        );
        for s in &self.steps {
            let _ = writeln!(
                t,
                "{:<16} {:>5} {:>9.2} {:>12.1} {:>11} {:>8} {:>11.1} {:>11.1}",
                s.model,
                s.batch,
                s.img_per_s,
                s.first_step_s,
                s.dispatches_per_step,
                1,
                s.planned_peak_bytes as f64 / 1e6,
                s.live_bound_bytes as f64 / 1e6
            );
        }
        t
    }

    fn json(&self) -> Json {
        let a = &self.adapter;
        let conv = self.convs.iter().map(|r| {
            let c = &RESNET20_CONVS[r.case];
            Json::obj([
                ("conv", Json::Str(c.label())),
                ("batch", Json::Int(BATCH as u64)),
                ("in_channels", Json::Int(c.in_channels as u64)),
                ("out_channels", Json::Int(c.out_channels as u64)),
                ("input_size", Json::Int(c.size as u64)),
                ("kernel", Json::Int(c.kernel as u64)),
                ("stride", Json::Int(c.stride as u64)),
                ("padding", Json::Int((c.kernel / 2) as u64)),
                ("per_step", Json::Int(c.per_step as u64)),
                ("pass", Json::Str(r.pass.name().into())),
                (
                    "needed_in_training",
                    Json::Bool(!(c.stem && r.pass == Pass::BackwardData)),
                ),
                ("ms", Json::Num(r.ms)),
                ("gflops", Json::Num(r.gflops)),
                ("ratio_to_matmul", Json::Num(r.ratio_to_matmul)),
            ])
        });
        let ce = self.ces.iter().map(|r| {
            Json::obj([
                ("channels", Json::Int(r.channels as u64)),
                ("size", Json::Int(r.size as u64)),
                ("batch", Json::Int(BATCH as u64)),
                ("forward_ms", Json::Num(r.forward_ms)),
                ("ms", Json::Num(r.ms)),
                ("conv", Json::Str(RESNET20_CONVS[r.conv_case].label())),
                ("conv_ms", Json::Num(r.conv_ms)),
                ("ratio_to_conv", Json::Num(r.ratio)),
            ])
        });
        let steps = self.steps.iter().map(|s| {
            Json::obj([
                ("model", Json::Str(s.model.clone())),
                ("batch", Json::Int(s.batch as u64)),
                ("img_per_s", Json::Num(s.img_per_s)),
                ("steps_timed", Json::Int(s.steps_timed as u64)),
                ("first_step_s", Json::Num(s.first_step_s)),
                ("submits_per_step", Json::Int(1)),
                (
                    "dispatches_per_step",
                    Json::Int(s.dispatches_per_step as u64),
                ),
                ("planned_peak_bytes", Json::Int(s.planned_peak_bytes)),
                ("live_bound_bytes", Json::Int(s.live_bound_bytes)),
                ("pipelines_compiled", Json::Int(s.pipelines_compiled as u64)),
            ])
        });
        Json::obj([
            ("schema", Json::Str("cenet-bench/1".into())),
            ("quick", Json::Bool(self.quick)),
            (
                "adapter",
                Json::obj([
                    ("name", Json::Str(a.name.clone())),
                    ("backend", Json::Str(format!("{:?}", a.backend))),
                    ("device_type", Json::Str(format!("{:?}", a.device_type))),
                    ("driver", Json::Str(a.driver.clone())),
                ]),
            ),
            (
                "matmul",
                Json::obj([
                    ("m", Json::Int(self.matmul.size as u64)),
                    ("n", Json::Int(self.matmul.size as u64)),
                    ("k", Json::Int(self.matmul.size as u64)),
                    ("ms", Json::Num(self.matmul.ms)),
                ]),
            ),
            ("matmul_gflops", Json::Num(self.matmul.gflops)),
            ("conv", Json::Arr(conv.collect())),
            (
                "conv_ms_per_resnet20_step",
                Json::Num(resnet20_conv_ms(&self.convs)),
            ),
            ("ce", Json::Arr(ce.collect())),
            ("train_step", Json::Arr(steps.collect())),
            ("submits_per_step_basis", Json::Str(SUBMITS_BASIS.into())),
        ])
    }
}

/// Just enough JSON for the report: no dependency for a few flat records.
enum Json {
    Bool(bool),
    Int(u64),
    /// Written with five significant digits; non-finite values as `null`.
    Num(f64),
    Str(String),
    Arr(Vec<Json>),
    Obj(Vec<(&'static str, Json)>),
}

impl Json {
    fn obj<const N: usize>(fields: [(&'static str, Json); N]) -> Json {
        Json::Obj(fields.into_iter().collect())
    }

    fn write(&self, out: &mut String, indent: usize) {
        let pad = |n: usize| "  ".repeat(n);
        match self {
            Json::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
            Json::Int(i) => out.push_str(&i.to_string()),
            Json::Num(x) if !x.is_finite() => out.push_str("null"),
            Json::Num(x) => {
                let magnitude = if *x == 0.0 {
                    0
                } else {
                    x.abs().log10().floor() as i32
                };
                let decimals = (4 - magnitude).max(0) as usize;
                out.push_str(&format!("{x:.decimals$}"));
            }
            Json::Str(s) => {
                out.push('"');
                for ch in s.chars() {
                    match ch {
                        '"' => out.push_str("\\\""),
                        '\\' => out.push_str("\\\\"),
                        c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
                        c => out.push(c),
                    }
                }
                out.push('"');
            }
            Json::Arr(items) => {
                out.push('[');
                for (i, item) in items.iter().enumerate() {
                    out.push_str(if i == 0 { "\n" } else { ",\n" });
                    out.push_str(&pad(indent + 1));
                    item.write(out, indent + 1);
                }
                if !items.is_empty() {
                    out.push('\n');
                    out.push_str(&pad(indent));
                }
                out.push(']');
            }
            Json::Obj(fields) => {
                out.push('{');
                for (i, (key, value)) in fields.iter().enumerate() {
                    out.push_str(if i == 0 { "\n" } else { ",\n" });
                    out.push_str(&pad(indent + 1));
                    Json::Str(key.to_string()).write(out, indent + 1);
                    out.push_str(": ");
                    value.write(out, indent + 1);
                }
                if !fields.is_empty() {
                    out.push('\n');
                    out.push_str(&pad(indent));
                }
                out.push('}');
            }
        }
    }
}

impl std::fmt::Display for Json {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut out = String::new();
        self.write(&mut out, 0);
        writeln!(f, "{out}")
    }
}
