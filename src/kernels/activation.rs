//! ReLU, ReLU6 and elementwise addition (`shaders/elementwise.wgsl`, in its vec4 variant
//! `elementwise4` on lengths that are multiples of 4).

use crate::error::Result;
use crate::gpu::{Binding, Gpu, KernelSpec};
use crate::kernels::{expect_shape, grid_for, Recorder};
use crate::tensor::{DType, Tensor};

const BINDINGS: &[Binding] = &[
    Binding::Read,
    Binding::Read,
    Binding::ReadWrite,
    Binding::Uniform,
];
const WORKGROUP: usize = 256;

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    n: u32,
}

/// Which activation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Activation {
    /// max(x, 0)
    Relu,
    /// min(max(x, 0), 6)
    Relu6,
}

/// Records `entry` of the elementwise shader, with `activation` (0 none, 1 ReLU, 2 ReLU6) for
/// `add_forward`.
fn record(
    rec: &mut Recorder,
    entry: &'static str,
    activation: u32,
    a: &Tensor,
    b: &Tensor,
    out: &Tensor,
) -> Result<()> {
    // Four elements per thread where the length allows (the vec4 variant).
    let (shader, n) = if out.len().is_multiple_of(4) {
        ("elementwise4", out.len() / 4)
    } else {
        ("elementwise", out.len())
    };
    let mut spec = KernelSpec::new(shader, entry, BINDINGS);
    if activation != 0 {
        spec = spec.with("ACTIVATION", activation as f64);
    }
    let groups = grid_for(rec.gpu(), n, WORKGROUP);
    let params = Params { n: n as u32 };
    rec.dispatch(
        &spec,
        &[a.buffer(), b.buffer(), out.buffer()],
        Some(&params),
        groups,
    )
}

/// Records `y = act(x)`.
pub fn forward_into(rec: &mut Recorder, act: Activation, x: &Tensor, y: &Tensor) -> Result<()> {
    let op = op_name(act);
    expect_shape(op, "output", y, x.shape())?;
    let entry = match act {
        Activation::Relu => "relu_forward",
        Activation::Relu6 => "relu6_forward",
    };
    record(rec, entry, 0, x, x, y)
}

/// Records `dx = dy · act'(x)`, with `x` the forward input or its output: ReLU and ReLU6 pass
/// the gradient where their output is strictly between its bounds, which is where their
/// input is.
pub fn backward_into(
    rec: &mut Recorder,
    act: Activation,
    x: &Tensor,
    dy: &Tensor,
    dx: &Tensor,
) -> Result<()> {
    let op = op_name(act);
    expect_shape(op, "upstream gradient", dy, x.shape())?;
    expect_shape(op, "input gradient", dx, x.shape())?;
    let entry = match act {
        Activation::Relu => "relu_backward",
        Activation::Relu6 => "relu6_backward",
    };
    record(rec, entry, 0, x, dy, dx)
}

/// Records `out = a + b`.
pub fn add_into(rec: &mut Recorder, a: &Tensor, b: &Tensor, out: &Tensor) -> Result<()> {
    add_act_into(rec, None, a, b, out)
}

/// Records `out = act(a + b)` in one pass (`out = a + b` without an activation).
pub fn add_act_into(
    rec: &mut Recorder,
    act: Option<Activation>,
    a: &Tensor,
    b: &Tensor,
    out: &Tensor,
) -> Result<()> {
    expect_shape("add", "second operand", b, a.shape())?;
    expect_shape("add", "output", out, a.shape())?;
    let code = match act {
        None => 0,
        Some(Activation::Relu) => 1,
        Some(Activation::Relu6) => 2,
    };
    record(rec, "add_forward", code, a, b, out)
}

fn op_name(act: Activation) -> &'static str {
    match act {
        Activation::Relu => "relu",
        Activation::Relu6 => "relu6",
    }
}

fn run(
    gpu: &Gpu,
    shape: &[usize],
    f: impl FnOnce(&mut Recorder, &Tensor) -> Result<()>,
) -> Result<Tensor> {
    let out = Tensor::uninit(gpu, shape, DType::F32, "elementwise output")?;
    let mut rec = Recorder::new(gpu);
    f(&mut rec, &out)?;
    rec.submit()?;
    Ok(out)
}

/// `max(x, 0)`, submitted at once.
pub fn relu(gpu: &Gpu, x: &Tensor) -> Result<Tensor> {
    run(gpu, x.shape(), |rec, y| {
        forward_into(rec, Activation::Relu, x, y)
    })
}

/// `act(x)`, submitted at once.
pub fn forward(gpu: &Gpu, act: Activation, x: &Tensor) -> Result<Tensor> {
    run(gpu, x.shape(), |rec, y| forward_into(rec, act, x, y))
}

/// `dy · act'(x)`, submitted at once.
pub fn backward(gpu: &Gpu, act: Activation, x: &Tensor, dy: &Tensor) -> Result<Tensor> {
    run(gpu, x.shape(), |rec, dx| backward_into(rec, act, x, dy, dx))
}

/// `a + b`, submitted at once.
pub fn add(gpu: &Gpu, a: &Tensor, b: &Tensor) -> Result<Tensor> {
    run(gpu, a.shape(), |rec, out| add_into(rec, a, b, out))
}

/// `act(a + b)`, submitted at once.
pub fn add_act(gpu: &Gpu, act: Activation, a: &Tensor, b: &Tensor) -> Result<Tensor> {
    run(gpu, a.shape(), |rec, out| {
        add_act_into(rec, Some(act), a, b, out)
    })
}
