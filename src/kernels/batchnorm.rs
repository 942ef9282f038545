//! Batch normalisation over (N, H, W) for each channel of an NCHW tensor, with PyTorch's
//! `BatchNorm2d` semantics (`shaders/batchnorm_*.wgsl`).
//!
//! Training normalises with the batch mean and biased variance and moves the running
//! statistics towards the batch's (the variance unbiased, n/(n − 1)); evaluation normalises
//! with the running statistics. The batch statistics take two passes: workgroups summarise
//! chunks of a channel as (count, mean, M2) and a small pass merges them with Chan's parallel
//! formula, which stays accurate for large means where Σx² − (Σx)²/n would not.
//!
//! Dispatches: training forward 3 (partials, merge, normalise), evaluation forward 1,
//! training backward 3 (partials, merge, input gradient), evaluation backward 1.

use crate::error::{Error, Result};
use crate::gpu::{Binding, Gpu, KernelSpec, Tuning};
use crate::kernels::activation::Activation;
use crate::kernels::{expect_nchw, expect_shape, grid, grid_for, Recorder};
use crate::tensor::{DType, Tensor};

const OP: &str = "batchnorm2d";

/// PyTorch's default ε added to the variance.
pub const DEFAULT_EPS: f32 = 1e-5;
/// PyTorch's default momentum of the running statistics.
pub const DEFAULT_MOMENTUM: f32 = 0.1;

/// Values of one channel summarised by one workgroup of the reduction passes: under GPU
/// tuning enough workgroups to fill a large GPU; under CPU tuning 8 times as many per
/// workgroup, as each workgroup's closing merge tree (8 levels of Chan's formula between
/// barriers, run by one core over the SIMD groups in turn) cost more than its loads: the
/// statistics pass of a ResNet-20 step at batch 128 fell from about 65 to 37 ms on lavapipe.
const CHUNK: usize = 4096;
const CPU_CHUNK: usize = 8 * CHUNK;
/// Threads per workgroup of the elementwise passes.
const ELEMENTWISE_WORKGROUP: usize = 256;

const STATS_BINDINGS: &[Binding] = &[Binding::Read, Binding::ReadWrite, Binding::Uniform];
const STATS_FINALIZE_BINDINGS: &[Binding] = &[
    Binding::Read,
    Binding::ReadWrite,
    Binding::ReadWrite,
    Binding::ReadWrite,
    Binding::ReadWrite,
    Binding::Uniform,
];
/// The normalising pass's shaders, per element and per vec4.
const NORMALIZE: [&str; 2] = ["batchnorm_normalize", "batchnorm_normalize4"];
const NORMALIZE_BINDINGS: &[Binding] = &[
    Binding::Read,
    Binding::Read,
    Binding::Read,
    Binding::Read,
    Binding::Read,
    Binding::Read,
    Binding::ReadWrite,
    Binding::Uniform,
];
const BACKWARD_REDUCE_BINDINGS: &[Binding] = &[
    Binding::Read,
    Binding::Read,
    Binding::Read,
    Binding::Read,
    Binding::ReadWrite,
    Binding::Uniform,
];
const BACKWARD_FINALIZE_BINDINGS: &[Binding] = &[
    Binding::Read,
    Binding::Read,
    Binding::Read,
    Binding::Read,
    Binding::ReadWrite,
    Binding::ReadWrite,
    Binding::ReadWrite,
    Binding::Uniform,
];
const BACKWARD_DATA_BINDINGS: &[Binding] = &[
    Binding::Read,
    Binding::Read,
    Binding::Read,
    Binding::ReadWrite,
    Binding::Uniform,
];
const BACKWARD_EVAL_BINDINGS: &[Binding] = &[
    Binding::Read,
    Binding::Read,
    Binding::Read,
    Binding::ReadWrite,
    Binding::Uniform,
];

/// Chunking of the per-channel reductions (`batchnorm_stats`, `batchnorm_backward_reduce`).
#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct ReduceParams {
    channels: u32,
    plane: u32,
    count: u32,
    chunk: u32,
    chunks: u32,
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct StatsFinalizeParams {
    channels: u32,
    chunks: u32,
    eps: f32,
    momentum: f32,
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct BackwardFinalizeParams {
    channels: u32,
    chunks: u32,
    count: u32,
}

/// Elementwise passes (`batchnorm_normalize`, `batchnorm_backward_data`, `..._eval`).
#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct ElementwiseParams {
    n: u32,
    channels: u32,
    plane: u32,
    eps: f32,
}

/// The parameters and running statistics of one `BatchNorm2d` layer.
#[derive(Debug)]
pub struct BatchNorm2d {
    /// Scale γ, `[C]`.
    pub weight: Tensor,
    /// Shift β, `[C]`.
    pub bias: Tensor,
    /// Running mean used in evaluation, `[C]`.
    pub running_mean: Tensor,
    /// Running (unbiased) variance used in evaluation, `[C]`.
    pub running_var: Tensor,
    /// Training forward passes recorded so far.
    pub num_batches_tracked: u64,
    /// Added to the variance before the square root.
    pub eps: f32,
    /// Weight of the batch statistics in the running statistics' update.
    // Limitation: PyTorch's `momentum=None` (a cumulative average over all batches) has no
    // counterpart; it would need num_batches_tracked on the device side of the update.
    pub momentum: f32,
}

impl BatchNorm2d {
    /// A layer over `channels` channels initialised as PyTorch does: weight 1, bias 0,
    /// running mean 0, running variance 1, default ε and momentum.
    pub fn new(gpu: &Gpu, channels: usize) -> Result<Self> {
        let ones = vec![1.0f32; channels];
        Ok(BatchNorm2d {
            weight: Tensor::from_slice(gpu, &[channels], &ones)?,
            bias: Tensor::zeros(gpu, &[channels])?,
            running_mean: Tensor::zeros(gpu, &[channels])?,
            running_var: Tensor::from_slice(gpu, &[channels], &ones)?,
            num_batches_tracked: 0,
            eps: DEFAULT_EPS,
            momentum: DEFAULT_MOMENTUM,
        })
    }

    /// Number of channels.
    pub fn channels(&self) -> usize {
        self.weight.len()
    }
}

/// Batch statistics a training forward pass saves for its backward pass.
#[derive(Clone, Debug)]
pub struct SavedStats {
    /// Batch mean per channel, `[C]`.
    pub mean: Tensor,
    /// 1 / sqrt(biased batch variance + ε) per channel, `[C]`.
    pub inv_std: Tensor,
}

impl SavedStats {
    /// Uninitialised storage for `channels` channels.
    pub fn new(gpu: &Gpu, channels: usize) -> Result<Self> {
        Ok(SavedStats {
            mean: Tensor::uninit(gpu, &[channels], DType::F32, "batchnorm2d saved mean")?,
            inv_std: Tensor::uninit(gpu, &[channels], DType::F32, "batchnorm2d saved inv_std")?,
        })
    }
}

/// Gradients of a training-mode backward pass.
#[derive(Clone, Debug)]
pub struct BatchNormGrads {
    /// Gradient of the input, shaped like it.
    pub dx: Tensor,
    /// Gradient of the weight γ, `[C]`.
    pub dweight: Tensor,
    /// Gradient of the bias β, `[C]`.
    pub dbias: Tensor,
}

impl BatchNormGrads {
    /// Uninitialised storage for the gradients of an input of `shape` (NCHW).
    pub fn new(gpu: &Gpu, shape: &[usize]) -> Result<Self> {
        let channels = shape.get(1).copied().unwrap_or(0);
        Ok(BatchNormGrads {
            dx: Tensor::uninit(gpu, shape, DType::F32, "batchnorm2d input gradient")?,
            dweight: Tensor::uninit(gpu, &[channels], DType::F32, "batchnorm2d weight gradient")?,
            dbias: Tensor::uninit(gpu, &[channels], DType::F32, "batchnorm2d bias gradient")?,
        })
    }
}

/// Dimensions of one call, checked against the layer.
struct Dims {
    channels: usize,
    plane: usize,
    /// Values per channel, N·H·W.
    count: usize,
    len: usize,
    /// Values per workgroup of the reduction passes.
    chunk: usize,
}

impl Dims {
    fn chunks(&self) -> usize {
        self.count.div_ceil(self.chunk).max(1)
    }

    fn reduce_params(&self) -> ReduceParams {
        ReduceParams {
            channels: self.channels as u32,
            plane: self.plane as u32,
            count: self.count as u32,
            chunk: self.chunk as u32,
            chunks: self.chunks() as u32,
        }
    }

    /// A first-level reduction over every element of `shader`: its vec4 variant (`shader`
    /// + "4") when the plane size is a multiple of 4, with plane, count and chunk in vec4s.
    fn reduce_pass(&self, [shader, shader4]: [&'static str; 2]) -> (&'static str, ReduceParams) {
        let mut params = self.reduce_params();
        if !self.plane.is_multiple_of(4) {
            return (shader, params);
        }
        params.plane /= 4;
        params.count /= 4;
        params.chunk /= 4;
        (shader4, params)
    }

    fn elementwise_params(&self, eps: f32) -> ElementwiseParams {
        ElementwiseParams {
            n: self.len as u32,
            channels: self.channels as u32,
            plane: self.plane as u32,
            eps,
        }
    }

    /// One pass over every element of `shader`'s `entry`: its vec4 form (`shader` + "4",
    /// four elements of one channel per thread) when the plane size is a multiple of 4,
    /// with its parameters and workgroups.
    fn elementwise_pass(
        &self,
        gpu: &Gpu,
        [shader, shader4]: [&'static str; 2],
        entry: &'static str,
        bindings: &'static [Binding],
        eps: f32,
    ) -> (KernelSpec, ElementwiseParams, [u32; 3]) {
        let mut params = self.elementwise_params(eps);
        let mut shader = shader;
        if self.plane.is_multiple_of(4) {
            shader = shader4;
            params.n /= 4;
            params.plane /= 4;
        }
        let groups = grid_for(gpu, params.n as usize, ELEMENTWISE_WORKGROUP);
        (KernelSpec::new(shader, entry, bindings), params, groups)
    }
}

/// Checks `x` is NCHW with as many channels as the layer has in every per-channel tensor.
fn dims(gpu: &Gpu, bn: &BatchNorm2d, x: &Tensor) -> Result<Dims> {
    let [n, c, h, w] = expect_nchw(OP, "input", x)?;
    for (what, t) in [
        ("weight", &bn.weight),
        ("bias", &bn.bias),
        ("running_mean", &bn.running_mean),
        ("running_var", &bn.running_var),
    ] {
        expect_channels(what, t, x.shape(), c)?;
    }
    if x.len() > u32::MAX as usize {
        return Err(Error::invalid(
            OP,
            format!("input {:?} has more than 2^32 elements", x.shape()),
        ));
    }
    Ok(Dims {
        channels: c,
        plane: h * w,
        count: n * h * w,
        len: x.len(),
        chunk: match gpu.tuning() {
            Tuning::Cpu => CPU_CHUNK,
            Tuning::Gpu => CHUNK,
        },
    })
}

fn expect_channels(what: &str, t: &Tensor, x_shape: &[usize], channels: usize) -> Result<()> {
    if t.shape() != [channels] {
        return Err(Error::invalid(
            OP,
            format!(
                "input {x_shape:?} has {channels} channels, {what} has shape {:?} \
                 (expected [{channels}])",
                t.shape()
            ),
        ));
    }
    Ok(())
}

/// Training needs two or more values per channel for a variance, as in PyTorch.
fn expect_batch(d: &Dims, x: &Tensor) -> Result<()> {
    if d.count <= 1 {
        return Err(Error::invalid(
            OP,
            format!(
                "expected more than 1 value per channel when training, got input {:?}",
                x.shape()
            ),
        ));
    }
    Ok(())
}

/// Records the training forward pass: normalises `x` with its batch statistics into `y`,
/// saves the batch mean and inv_std in `saved`, updates the running statistics in place and
/// counts the batch in `bn.num_batches_tracked`. `y` must not alias `x`.
pub fn forward_train_into(
    rec: &mut Recorder,
    bn: &mut BatchNorm2d,
    x: &Tensor,
    y: &Tensor,
    saved: &SavedStats,
) -> Result<()> {
    forward_train_fused_into(rec, bn, x, y, saved, Epilogue::default())
}

/// [`forward_train_into`] followed by `epilogue` in the normalising pass: `y` then holds,
/// say, relu(bn(x) + residual). The saved statistics are those of `x`, as without it.
pub fn forward_train_fused_into(
    rec: &mut Recorder,
    bn: &mut BatchNorm2d,
    x: &Tensor,
    y: &Tensor,
    saved: &SavedStats,
    epilogue: Epilogue,
) -> Result<()> {
    let d = dims(rec.gpu(), bn, x)?;
    expect_batch(&d, x)?;
    expect_shape(OP, "output", y, x.shape())?;
    expect_channels("saved mean", &saved.mean, x.shape(), d.channels)?;
    expect_channels("saved inv_std", &saved.inv_std, x.shape(), d.channels)?;

    let chunks = d.chunks();
    let partials = rec.scratch(&[d.channels, chunks, 3], "batchnorm2d partial statistics")?;
    let gpu = rec.gpu();
    let (shader, reduce) = d.reduce_pass(["batchnorm_stats", "batchnorm_stats4"]);
    rec.dispatch(
        &KernelSpec::new(shader, "channel_partials", STATS_BINDINGS),
        &[x.buffer(), partials.buffer()],
        Some(&reduce),
        grid(gpu, (d.channels * chunks) as u32),
    )?;
    rec.dispatch(
        &KernelSpec::new(
            "batchnorm_stats_finalize",
            "finalize_stats",
            STATS_FINALIZE_BINDINGS,
        ),
        &[
            partials.buffer(),
            saved.mean.buffer(),
            saved.inv_std.buffer(),
            bn.running_mean.buffer(),
            bn.running_var.buffer(),
        ],
        Some(&StatsFinalizeParams {
            channels: d.channels as u32,
            chunks: chunks as u32,
            eps: bn.eps,
            momentum: bn.momentum,
        }),
        grid(gpu, d.channels as u32),
    )?;
    let stats = [&saved.mean, &saved.inv_std];
    normalize(rec, &d, "normalize_batch", bn, stats, [x, y], epilogue)?;
    bn.num_batches_tracked += 1;
    Ok(())
}

/// What the normalising pass of a batch norm does next in the same pass: the normalised
/// value is never written out and read back.
#[derive(Clone, Copy, Debug, Default)]
pub struct Epilogue<'a> {
    /// Added to the normalised value: a residual shortcut of the input's shape.
    pub residual: Option<&'a Tensor>,
    /// Applied last.
    pub activation: Option<Activation>,
}

/// Records the elementwise pass `entry` of `batchnorm_normalize` from `x` into `y` with the
/// per-channel `[mean, spread]`, followed by `epilogue`.
fn normalize(
    rec: &mut Recorder,
    d: &Dims,
    entry: &'static str,
    bn: &BatchNorm2d,
    [mean, spread]: [&Tensor; 2],
    [x, y]: [&Tensor; 2],
    epilogue: Epilogue,
) -> Result<()> {
    if let Some(r) = epilogue.residual {
        expect_shape(OP, "residual", r, x.shape())?;
    }
    let (spec, params, groups) =
        d.elementwise_pass(rec.gpu(), NORMALIZE, entry, NORMALIZE_BINDINGS, bn.eps);
    let activation = match epilogue.activation {
        None => 0,
        Some(Activation::Relu) => 1,
        Some(Activation::Relu6) => 2,
    };
    let spec = spec
        .with("RESIDUAL", epilogue.residual.is_some() as u32 as f64)
        .with("ACTIVATION", activation as f64);
    rec.dispatch(
        &spec,
        &[
            x.buffer(),
            mean.buffer(),
            spread.buffer(),
            bn.weight.buffer(),
            bn.bias.buffer(),
            epilogue.residual.unwrap_or(x).buffer(),
            y.buffer(),
        ],
        Some(&params),
        groups,
    )
}

/// Records the evaluation forward pass: normalises `x` with the running statistics into `y`.
pub fn forward_eval_into(
    rec: &mut Recorder,
    bn: &BatchNorm2d,
    x: &Tensor,
    y: &Tensor,
) -> Result<()> {
    forward_eval_fused_into(rec, bn, x, y, Epilogue::default())
}

/// [`forward_eval_into`] followed by `epilogue` in the same pass.
pub fn forward_eval_fused_into(
    rec: &mut Recorder,
    bn: &BatchNorm2d,
    x: &Tensor,
    y: &Tensor,
    epilogue: Epilogue,
) -> Result<()> {
    let d = dims(rec.gpu(), bn, x)?;
    expect_shape(OP, "output", y, x.shape())?;
    let stats = [&bn.running_mean, &bn.running_var];
    normalize(rec, &d, "normalize_running", bn, stats, [x, y], epilogue)
}

/// Records the training-mode backward pass through the batch statistics: from the forward
/// input `x`, the upstream gradient `dy` and the statistics `saved` by the forward pass,
/// writes `grads.dx`, `grads.dweight` and `grads.dbias` (overwriting them).
pub fn backward_into(
    rec: &mut Recorder,
    bn: &BatchNorm2d,
    x: &Tensor,
    dy: &Tensor,
    saved: &SavedStats,
    grads: &BatchNormGrads,
) -> Result<()> {
    let d = dims(rec.gpu(), bn, x)?;
    expect_batch(&d, x)?;
    expect_shape(OP, "upstream gradient", dy, x.shape())?;
    expect_shape(OP, "input gradient", &grads.dx, x.shape())?;
    expect_channels("saved mean", &saved.mean, x.shape(), d.channels)?;
    expect_channels("saved inv_std", &saved.inv_std, x.shape(), d.channels)?;
    expect_channels("weight gradient", &grads.dweight, x.shape(), d.channels)?;
    expect_channels("bias gradient", &grads.dbias, x.shape(), d.channels)?;

    let chunks = d.chunks();
    let partials = rec.scratch(
        &[d.channels, chunks, 2],
        "batchnorm2d partial gradient sums",
    )?;
    let coefficients = rec.scratch(&[d.channels, 4], "batchnorm2d gradient coefficients")?;
    let gpu = rec.gpu();
    let (shader, reduce) =
        d.reduce_pass(["batchnorm_backward_reduce", "batchnorm_backward_reduce4"]);
    rec.dispatch(
        &KernelSpec::new(shader, "gradient_partials", BACKWARD_REDUCE_BINDINGS),
        &[
            x.buffer(),
            dy.buffer(),
            saved.mean.buffer(),
            saved.inv_std.buffer(),
            partials.buffer(),
        ],
        Some(&reduce),
        grid(gpu, (d.channels * chunks) as u32),
    )?;
    rec.dispatch(
        &KernelSpec::new(
            "batchnorm_backward_finalize",
            "finalize_gradients",
            BACKWARD_FINALIZE_BINDINGS,
        ),
        &[
            partials.buffer(),
            bn.weight.buffer(),
            saved.mean.buffer(),
            saved.inv_std.buffer(),
            grads.dweight.buffer(),
            grads.dbias.buffer(),
            coefficients.buffer(),
        ],
        Some(&BackwardFinalizeParams {
            channels: d.channels as u32,
            chunks: chunks as u32,
            count: d.count as u32,
        }),
        grid(gpu, d.channels as u32),
    )?;
    let (spec, params, groups) = d.elementwise_pass(
        gpu,
        ["batchnorm_backward_data", "batchnorm_backward_data4"],
        "input_gradient",
        BACKWARD_DATA_BINDINGS,
        0.0,
    );
    rec.dispatch(
        &spec,
        &[
            x.buffer(),
            dy.buffer(),
            coefficients.buffer(),
            grads.dx.buffer(),
        ],
        Some(&params),
        groups,
    )
}

/// Records the evaluation-mode backward pass, where the running statistics are constants:
/// `dx = dy · weight / sqrt(running_var + ε)`. (The weight and bias gradients are not
/// computed here.)
pub fn backward_eval_into(
    rec: &mut Recorder,
    bn: &BatchNorm2d,
    dy: &Tensor,
    dx: &Tensor,
) -> Result<()> {
    let d = dims(rec.gpu(), bn, dy)?;
    expect_shape(OP, "input gradient", dx, dy.shape())?;
    let gpu = rec.gpu();
    rec.dispatch(
        &KernelSpec::new(
            "batchnorm_backward_eval",
            "input_gradient_eval",
            BACKWARD_EVAL_BINDINGS,
        ),
        &[
            dy.buffer(),
            bn.weight.buffer(),
            bn.running_var.buffer(),
            dx.buffer(),
        ],
        Some(&d.elementwise_params(bn.eps)),
        grid_for(gpu, d.len, ELEMENTWISE_WORKGROUP),
    )
}

/// Training forward pass, submitted at once: returns `y` and the saved batch statistics,
/// and updates the layer's running statistics.
pub fn forward_train(gpu: &Gpu, bn: &mut BatchNorm2d, x: &Tensor) -> Result<(Tensor, SavedStats)> {
    let y = Tensor::uninit(gpu, x.shape(), DType::F32, "batchnorm2d output")?;
    let saved = SavedStats::new(gpu, x.shape().get(1).copied().unwrap_or(0))?;
    let mut rec = Recorder::new(gpu);
    forward_train_into(&mut rec, bn, x, &y, &saved)?;
    rec.submit()?;
    Ok((y, saved))
}

/// Evaluation forward pass with the running statistics, submitted at once.
pub fn forward_eval(gpu: &Gpu, bn: &BatchNorm2d, x: &Tensor) -> Result<Tensor> {
    let y = Tensor::uninit(gpu, x.shape(), DType::F32, "batchnorm2d output")?;
    let mut rec = Recorder::new(gpu);
    forward_eval_into(&mut rec, bn, x, &y)?;
    rec.submit()?;
    Ok(y)
}

/// Training-mode backward pass, submitted at once.
pub fn backward(
    gpu: &Gpu,
    bn: &BatchNorm2d,
    x: &Tensor,
    dy: &Tensor,
    saved: &SavedStats,
) -> Result<BatchNormGrads> {
    let grads = BatchNormGrads::new(gpu, x.shape())?;
    let mut rec = Recorder::new(gpu);
    backward_into(&mut rec, bn, x, dy, saved, &grads)?;
    rec.submit()?;
    Ok(grads)
}

/// Evaluation-mode input gradient, submitted at once.
pub fn backward_eval(gpu: &Gpu, bn: &BatchNorm2d, dy: &Tensor) -> Result<Tensor> {
    let dx = Tensor::uninit(gpu, dy.shape(), DType::F32, "batchnorm2d input gradient")?;
    let mut rec = Recorder::new(gpu);
    backward_eval_into(&mut rec, bn, dy, &dx)?;
    rec.submit()?;
    Ok(dx)
}
