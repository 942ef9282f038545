//! Softmax cross-entropy with mean reduction and label smoothing, with the top-1 hit count
//! for accuracy (`shaders/cross_entropy.wgsl`, `shaders/cross_entropy_mean.wgsl`).
//!
//! Semantics are PyTorch's `CrossEntropyLoss(label_smoothing=ε)`: the target of a row with
//! label `y` among `K` classes is `(1 − ε)·onehot(y) + ε/K`, the loss is the mean over rows of
//! `−Σ_j target_j · log softmax(logits)_j`, and its gradient is `(softmax − target) / N`.
//!
//! Labels must be below `K`. The convenience forms check that on the host and return an
//! error; the recording forms cannot see the labels, and on the GPU a row whose label is out
//! of range is ignored: it adds 0 to the loss sum (which is still divided by all N rows),
//! counts as a miss, and gets a zero gradient.

use crate::error::{Error, Result};
use crate::gpu::{Binding, Gpu, KernelSpec};
use crate::kernels::pool::lanes_for;
use crate::kernels::{expect_shape, grid_for, Recorder};
use crate::tensor::{DType, Tensor};

const OP: &str = "cross_entropy";
const WORKGROUP: usize = 256;

const ROWS_BINDINGS: &[Binding] = &[
    Binding::Read,
    Binding::Read,
    Binding::ReadWrite,
    Binding::ReadWrite,
    Binding::Uniform,
];
const MEAN_BINDINGS: &[Binding] = &[
    Binding::Read,
    Binding::ReadWrite,
    Binding::ReadWrite,
    Binding::Uniform,
];

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct RowsParams {
    rows: u32,
    classes: u32,
    smoothing: f32,
    grad_scale: f32,
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct MeanParams {
    rows: u32,
}

/// Checks logits `[N, K]` (f32, K ≥ 1), labels `[N]` (u32) and ε ∈ [0, 1]; returns (N, K).
fn check_inputs(logits: &Tensor, labels: &Tensor, smoothing: f32) -> Result<(usize, usize)> {
    let (n, k) = match logits.shape() {
        &[n, k] if k > 0 && logits.dtype() == DType::F32 => (n, k),
        other => {
            return Err(Error::invalid(
                OP,
                format!(
                    "logits must be f32 [N, K] with K ≥ 1, got {:?} {other:?}",
                    logits.dtype()
                ),
            ))
        }
    };
    expect_shape(OP, "labels", labels, &[n])?;
    if labels.dtype() != DType::U32 {
        return Err(Error::invalid(
            OP,
            format!("labels must be u32, got {:?}", labels.dtype()),
        ));
    }
    if !(0.0..=1.0).contains(&smoothing) {
        return Err(Error::invalid(
            OP,
            format!("label smoothing must be in [0, 1], got {smoothing}"),
        ));
    }
    Ok((n, k))
}

/// Checks host-side labels against the number of classes.
pub fn check_labels(labels: &[u32], classes: usize) -> Result<()> {
    match labels.iter().position(|&y| y as usize >= classes) {
        Some(i) => Err(Error::invalid(
            OP,
            format!(
                "label {} of row {i} is out of range for {classes} classes",
                labels[i]
            ),
        )),
        None => Ok(()),
    }
}

/// Records the per-row pass: loss and hit into `row_stats` (`[N, 2]`), and the gradient of
/// the mean loss into `dlogits` when given.
fn record_rows(
    rec: &mut Recorder,
    logits: &Tensor,
    labels: &Tensor,
    smoothing: f32,
    (n, k): (usize, usize),
    row_stats: &Tensor,
    dlogits: Option<&Tensor>,
) -> Result<()> {
    let lanes = lanes_for(k);
    let spec = KernelSpec::new("cross_entropy", "cross_entropy_rows", ROWS_BINDINGS)
        .with("LANES", lanes as f64)
        .with("WRITE_GRAD", dlogits.is_some() as u8 as f64);
    let params = RowsParams {
        rows: n as u32,
        classes: k as u32,
        smoothing,
        grad_scale: 1.0 / n as f32,
    };
    // Without a gradient the binding is never written; a scratch buffer stands in for it.
    let unused;
    let dlogits = match dlogits {
        Some(d) => d,
        None => {
            unused = rec.scratch(&[1], "cross_entropy unused gradient")?;
            &unused
        }
    };
    let groups = grid_for(rec.gpu(), n, WORKGROUP / lanes as usize);
    rec.dispatch(
        &spec,
        &[
            logits.buffer(),
            labels.buffer(),
            row_stats.buffer(),
            dlogits.buffer(),
        ],
        Some(&params),
        groups,
    )
}

fn record_mean(
    rec: &mut Recorder,
    n: usize,
    row_stats: &Tensor,
    loss: &Tensor,
    correct: &Tensor,
) -> Result<()> {
    let spec = KernelSpec::new("cross_entropy_mean", "cross_entropy_mean", MEAN_BINDINGS);
    let params = MeanParams { rows: n as u32 };
    rec.dispatch(
        &spec,
        &[row_stats.buffer(), loss.buffer(), correct.buffer()],
        Some(&params),
        [1, 1, 1],
    )
}

fn forward_backward(
    rec: &mut Recorder,
    logits: &Tensor,
    labels: &Tensor,
    smoothing: f32,
    outputs: Option<(&Tensor, &Tensor)>,
    dlogits: Option<&Tensor>,
) -> Result<()> {
    let (n, k) = check_inputs(logits, labels, smoothing)?;
    if let Some((loss, correct)) = outputs {
        expect_shape(OP, "loss", loss, &[1])?;
        expect_shape(OP, "correct count", correct, &[1])?;
    }
    if let Some(d) = dlogits {
        expect_shape(OP, "logits gradient", d, logits.shape())?;
    }
    if n == 0 {
        return Err(Error::invalid(
            OP,
            "the mean over an empty batch is undefined",
        ));
    }
    let row_stats = rec.scratch(&[n, 2], "cross_entropy row results")?;
    record_rows(rec, logits, labels, smoothing, (n, k), &row_stats, dlogits)?;
    if let Some((loss, correct)) = outputs {
        record_mean(rec, n, &row_stats, loss, correct)?;
    }
    Ok(())
}

/// Records the mean loss into `loss` (`[1]`) and the number of rows whose first largest
/// logit is at the label into `correct` (`[1]`, as f32), for `logits: [N, K]`, `labels: [N]`
/// (u32) and label smoothing `smoothing` ∈ [0, 1].
pub fn forward_into(
    rec: &mut Recorder,
    logits: &Tensor,
    labels: &Tensor,
    smoothing: f32,
    loss: &Tensor,
    correct: &Tensor,
) -> Result<()> {
    forward_backward(rec, logits, labels, smoothing, Some((loss, correct)), None)
}

/// Records the gradient of the mean loss, `dlogits = (softmax − target) / N` (`[N, K]`).
pub fn backward_into(
    rec: &mut Recorder,
    logits: &Tensor,
    labels: &Tensor,
    smoothing: f32,
    dlogits: &Tensor,
) -> Result<()> {
    forward_backward(rec, logits, labels, smoothing, None, Some(dlogits))
}

/// Records [`forward_into`] and [`backward_into`] together, reading the logits once.
pub fn forward_backward_into(
    rec: &mut Recorder,
    logits: &Tensor,
    labels: &Tensor,
    smoothing: f32,
    loss: &Tensor,
    correct: &Tensor,
    dlogits: &Tensor,
) -> Result<()> {
    forward_backward(
        rec,
        logits,
        labels,
        smoothing,
        Some((loss, correct)),
        Some(dlogits),
    )
}

/// Reads the labels back and checks them (native only; the web cannot block on a read).
fn check_labels_on_device(gpu: &Gpu, labels: &Tensor, classes: usize) -> Result<()> {
    #[cfg(not(target_arch = "wasm32"))]
    check_labels(&labels.to_vec_u32(gpu)?, classes)?;
    #[cfg(target_arch = "wasm32")]
    let _ = (gpu, labels, classes);
    Ok(())
}

/// The outputs of [`forward`].
#[derive(Debug)]
pub struct CrossEntropyOutput {
    /// Mean loss, `[1]`.
    pub loss: Tensor,
    /// Rows predicted correctly (top-1), `[1]`, as f32.
    pub correct: Tensor,
}

/// Mean loss and top-1 hit count, submitted at once. Reads the labels back first to report
/// one out of range as an error.
pub fn forward(
    gpu: &Gpu,
    logits: &Tensor,
    labels: &Tensor,
    smoothing: f32,
) -> Result<CrossEntropyOutput> {
    let (_, k) = check_inputs(logits, labels, smoothing)?;
    check_labels_on_device(gpu, labels, k)?;
    let loss = Tensor::uninit(gpu, &[1], DType::F32, "cross_entropy loss")?;
    let correct = Tensor::uninit(gpu, &[1], DType::F32, "cross_entropy correct count")?;
    let mut rec = Recorder::new(gpu);
    forward_into(&mut rec, logits, labels, smoothing, &loss, &correct)?;
    rec.submit()?;
    Ok(CrossEntropyOutput { loss, correct })
}

/// The gradient of the mean loss with respect to the logits, submitted at once. Reads the
/// labels back first to report one out of range as an error.
pub fn backward(gpu: &Gpu, logits: &Tensor, labels: &Tensor, smoothing: f32) -> Result<Tensor> {
    let (_, k) = check_inputs(logits, labels, smoothing)?;
    check_labels_on_device(gpu, labels, k)?;
    let dlogits = Tensor::uninit(gpu, logits.shape(), DType::F32, "cross_entropy gradient")?;
    let mut rec = Recorder::new(gpu);
    backward_into(&mut rec, logits, labels, smoothing, &dlogits)?;
    rec.submit()?;
    Ok(dlogits)
}
