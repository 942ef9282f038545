//! Stochastic gradient descent with momentum, weight decay and Nesterov momentum, PyTorch's
//! `torch.optim.SGD` rule with dampening 0, one parameter tensor per dispatch
//! (`shaders/sgd.wgsl`).

use crate::error::{Error, Result};
use crate::gpu::{Binding, Gpu, KernelSpec};
use crate::kernels::{expect_shape, grid_for, Recorder};
use crate::tensor::Tensor;

const OP: &str = "sgd";
const BINDINGS: &[Binding] = &[
    Binding::ReadWrite,
    Binding::Read,
    Binding::ReadWrite,
    Binding::Read,
    Binding::Uniform,
];
const WORKGROUP: usize = 256;

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    n: u32,
    first_step: u32,
}

/// Hyperparameters of SGD. Per step, with gradient `g` and parameter `w`:
/// `d = g + weight_decay·w`; with `momentum` μ > 0, `buf = d` on the first step and
/// `buf = μ·buf + d` afterwards, then `d = d + μ·buf` (Nesterov) or `d = buf`; finally
/// `w -= lr·d`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SgdConfig {
    /// Learning rate.
    pub lr: f32,
    /// Momentum μ; 0 disables the momentum buffer.
    pub momentum: f32,
    /// L2 penalty added to the gradient as `weight_decay·w`.
    pub weight_decay: f32,
    /// Nesterov momentum (needs `momentum > 0`).
    pub nesterov: bool,
}

impl SgdConfig {
    /// Plain SGD with learning rate `lr`: no momentum, no weight decay.
    pub fn new(lr: f32) -> Self {
        SgdConfig {
            lr,
            momentum: 0.0,
            weight_decay: 0.0,
            nesterov: false,
        }
    }

    /// The values as the shader reads them: lr, momentum, weight decay, nesterov (1 or 0).
    pub fn to_hyper(&self) -> [f32; 4] {
        [
            self.lr,
            self.momentum,
            self.weight_decay,
            if self.nesterov { 1.0 } else { 0.0 },
        ]
    }

    /// Checks the values as PyTorch does: finite and non-negative, and Nesterov only with
    /// momentum.
    pub fn validate(&self) -> Result<()> {
        for (name, value) in [
            ("learning rate", self.lr),
            ("momentum", self.momentum),
            ("weight decay", self.weight_decay),
        ] {
            if !value.is_finite() || value < 0.0 {
                return Err(Error::invalid(
                    OP,
                    format!("{name} must be finite and non-negative, got {value}"),
                ));
            }
        }
        if self.nesterov && self.momentum == 0.0 {
            return Err(Error::invalid(
                OP,
                "Nesterov momentum requires a momentum above 0",
            ));
        }
        Ok(())
    }
}

/// Records one SGD step on `param` in place. `grad` has the parameter's shape; with momentum,
/// `momentum_buf` (same shape) carries the buffer between steps and `first_step` says it is
/// to be initialised rather than read. Without momentum the buffer is not needed and, if
/// given, left untouched.
pub fn sgd_step_into(
    rec: &mut Recorder,
    config: &SgdConfig,
    first_step: bool,
    param: &Tensor,
    grad: &Tensor,
    momentum_buf: Option<&Tensor>,
) -> Result<()> {
    config.validate()?;
    expect_shape(OP, "gradient", grad, param.shape())?;
    if param.len() > u32::MAX as usize {
        return Err(Error::invalid(
            OP,
            format!("parameter {:?} has more than 2^32 elements", param.shape()),
        ));
    }
    let buf = if config.momentum != 0.0 {
        let buf = momentum_buf.ok_or_else(|| {
            Error::invalid(
                OP,
                format!(
                    "momentum {} needs a momentum buffer shaped like the parameter {:?}",
                    config.momentum,
                    param.shape()
                ),
            )
        })?;
        expect_shape(OP, "momentum buffer", buf, param.shape())?;
        buf.clone()
    } else {
        // The shader never touches its buffer binding without momentum; bind a placeholder.
        rec.scratch(&[1], "sgd momentum placeholder")?
    };

    // A buffer of its own per recorded step, written now: queue writes precede the
    // submission that reads them.
    let hyper = rec.scratch(&[4], "sgd hyperparameters")?;
    rec.gpu()
        .queue()
        .write_buffer(hyper.buffer(), 0, bytemuck::cast_slice(&config.to_hyper()));
    sgd_step_scheduled_into(rec, &hyper, first_step, param, grad, &buf)
}

/// Records one SGD step whose hyperparameters are read from `hyper` when it runs
/// ([`SgdConfig::to_hyper`]'s layout), so a recorded step can be replayed with a new
/// learning rate. `momentum_buf` is bound either way and only touched when the momentum in
/// `hyper` is non-zero.
pub fn sgd_step_scheduled_into(
    rec: &mut Recorder,
    hyper: &Tensor,
    first_step: bool,
    param: &Tensor,
    grad: &Tensor,
    momentum_buf: &Tensor,
) -> Result<()> {
    expect_shape(OP, "gradient", grad, param.shape())?;
    expect_shape(OP, "hyperparameters", hyper, &[4])?;
    if momentum_buf.len() != 1 {
        expect_shape(OP, "momentum buffer", momentum_buf, param.shape())?;
    }
    let params = Params {
        n: param.len() as u32,
        first_step: first_step as u32,
    };
    let groups = grid_for(rec.gpu(), param.len(), WORKGROUP);
    rec.dispatch(
        &KernelSpec::new("sgd", "sgd_step", BINDINGS),
        &[
            param.buffer(),
            grad.buffer(),
            momentum_buf.buffer(),
            hyper.buffer(),
        ],
        Some(&params),
        groups,
    )
}

/// One SGD step on `param`, submitted at once.
pub fn sgd_step(
    gpu: &Gpu,
    config: &SgdConfig,
    first_step: bool,
    param: &Tensor,
    grad: &Tensor,
    momentum_buf: Option<&Tensor>,
) -> Result<()> {
    let mut rec = Recorder::new(gpu);
    sgd_step_into(&mut rec, config, first_step, param, grad, momentum_buf)?;
    rec.submit()
}
