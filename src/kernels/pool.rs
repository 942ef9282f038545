//! Pooling: global average pooling `[N, C, H, W] → [N, C]` (`shaders/pool_avg.wgsl`) and
//! 2-D max pooling with saved argmax (`shaders/pool_max_forward.wgsl`,
//! `shaders/pool_max_backward.wgsl`), forward and backward.

use crate::error::{Error, Result};
use crate::gpu::{Binding, Gpu, KernelSpec};
use crate::kernels::{expect_nchw, expect_shape, grid, grid_for, Recorder};
use crate::tensor::{DType, Tensor};

const WORKGROUP: usize = 256;

const AVG_BINDINGS: &[Binding] = &[Binding::Read, Binding::ReadWrite, Binding::Uniform];
const MAX_FORWARD_BINDINGS: &[Binding] = &[
    Binding::Read,
    Binding::ReadWrite,
    Binding::ReadWrite,
    Binding::Uniform,
];
const MAX_BACKWARD_BINDINGS: &[Binding] = &[
    Binding::Read,
    Binding::Read,
    Binding::ReadWrite,
    Binding::Uniform,
];

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct AvgParams {
    planes: u32,
    plane_size: u32,
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct MaxParams {
    planes: u32,
    h: u32,
    w: u32,
    oh: u32,
    ow: u32,
    kernel_h: u32,
    kernel_w: u32,
    stride_h: u32,
    stride_w: u32,
    pad_h: u32,
    pad_w: u32,
}

/// Threads that share one reduction of `len` elements: about 8 elements each, a power of
/// two from 1 to the workgroup size.
pub(crate) fn lanes_for(len: usize) -> u32 {
    len.div_ceil(8).next_power_of_two().clamp(1, WORKGROUP) as u32
}

/// Records `y[n, c] = mean over h, w of x[n, c, h, w]` for `x: [N, C, H, W]`, `y: [N, C]`.
pub fn global_avg_pool_forward_into(rec: &mut Recorder, x: &Tensor, y: &Tensor) -> Result<()> {
    let [n, c, h, w] = expect_nchw("global_avg_pool", "input", x)?;
    expect_shape("global_avg_pool", "output", y, &[n, c])?;
    let (planes, plane_size) = (n * c, h * w);
    if planes == 0 {
        return Ok(());
    }
    if plane_size == 0 {
        return Err(Error::invalid(
            "global_avg_pool",
            format!("input {:?} has empty planes", x.shape()),
        ));
    }
    let lanes = lanes_for(plane_size);
    let spec = KernelSpec::new("pool_avg", "global_avg_pool_forward", AVG_BINDINGS)
        .with("LANES", lanes as f64);
    let params = AvgParams {
        planes: planes as u32,
        plane_size: plane_size as u32,
    };
    let groups = grid_for(rec.gpu(), planes, WORKGROUP / lanes as usize);
    rec.dispatch(&spec, &[x.buffer(), y.buffer()], Some(&params), groups)
}

/// Records `dx[n, c, h, w] = dy[n, c] / (H·W)` for `dy: [N, C]`, `dx: [N, C, H, W]`.
pub fn global_avg_pool_backward_into(rec: &mut Recorder, dy: &Tensor, dx: &Tensor) -> Result<()> {
    let [n, c, h, w] = expect_nchw("global_avg_pool_backward", "input gradient", dx)?;
    expect_shape("global_avg_pool_backward", "upstream gradient", dy, &[n, c])?;
    let spec = KernelSpec::new("pool_avg", "global_avg_pool_backward", AVG_BINDINGS);
    let params = AvgParams {
        planes: (n * c) as u32,
        plane_size: (h * w) as u32,
    };
    let groups = grid_for(rec.gpu(), dx.len(), WORKGROUP);
    rec.dispatch(&spec, &[dy.buffer(), dx.buffer()], Some(&params), groups)
}

/// Global average pooling, submitted at once: `[N, C, H, W] → [N, C]`.
pub fn global_avg_pool(gpu: &Gpu, x: &Tensor) -> Result<Tensor> {
    let [n, c, _, _] = expect_nchw("global_avg_pool", "input", x)?;
    let y = Tensor::uninit(gpu, &[n, c], DType::F32, "global_avg_pool output")?;
    let mut rec = Recorder::new(gpu);
    global_avg_pool_forward_into(&mut rec, x, &y)?;
    rec.submit()?;
    Ok(y)
}

/// The gradient of global average pooling for an input of `input_shape`, submitted at once.
pub fn global_avg_pool_backward(gpu: &Gpu, dy: &Tensor, input_shape: &[usize]) -> Result<Tensor> {
    let dx = Tensor::uninit(
        gpu,
        input_shape,
        DType::F32,
        "global_avg_pool input gradient",
    )?;
    let mut rec = Recorder::new(gpu);
    global_avg_pool_backward_into(&mut rec, dy, &dx)?;
    rec.submit()?;
    Ok(dx)
}

/// Window of a 2-D max pooling, as PyTorch's `MaxPool2d` (no dilation, floor mode):
/// `out = (in + 2·padding − kernel) / stride + 1` along each axis, padding counting as −∞.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MaxPool2d {
    /// Window height and width.
    pub kernel: [usize; 2],
    /// Step between windows, vertical and horizontal.
    pub stride: [usize; 2],
    /// Implicit −∞ border, top/bottom and left/right; at most half the kernel.
    pub padding: [usize; 2],
}

impl MaxPool2d {
    /// A square window of `kernel` with `stride` and `padding` on both axes.
    pub fn square(kernel: usize, stride: usize, padding: usize) -> Self {
        MaxPool2d {
            kernel: [kernel; 2],
            stride: [stride; 2],
            padding: [padding; 2],
        }
    }

    /// The output shape for an input of `[N, C, H, W]`, or why this window cannot pool it.
    pub fn output_shape(&self, [n, c, h, w]: [usize; 4]) -> Result<[usize; 4]> {
        let op = "max_pool2d";
        let mut out = [0; 2];
        for (axis, &size) in [h, w].iter().enumerate() {
            let (k, s, p) = (self.kernel[axis], self.stride[axis], self.padding[axis]);
            if k == 0 || s == 0 {
                return Err(Error::invalid(
                    op,
                    format!(
                        "kernel {:?} and stride {:?} must be positive",
                        self.kernel, self.stride
                    ),
                ));
            }
            if p > k / 2 {
                return Err(Error::invalid(
                    op,
                    format!(
                        "padding {:?} must be at most half the kernel {:?}",
                        self.padding, self.kernel
                    ),
                ));
            }
            if size + 2 * p < k {
                return Err(Error::invalid(
                    op,
                    format!(
                        "input [{n}, {c}, {h}, {w}] padded by {:?} is smaller than the kernel {:?}",
                        self.padding, self.kernel
                    ),
                ));
            }
            out[axis] = (size + 2 * p - k) / s + 1;
        }
        Ok([n, c, out[0], out[1]])
    }

    fn params(&self, [n, c, h, w]: [usize; 4], [oh, ow]: [usize; 2]) -> MaxParams {
        MaxParams {
            planes: (n * c) as u32,
            h: h as u32,
            w: w as u32,
            oh: oh as u32,
            ow: ow as u32,
            kernel_h: self.kernel[0] as u32,
            kernel_w: self.kernel[1] as u32,
            stride_h: self.stride[0] as u32,
            stride_w: self.stride[1] as u32,
            pad_h: self.padding[0] as u32,
            pad_w: self.padding[1] as u32,
        }
    }
}

fn expect_u32(op: &'static str, what: &str, t: &Tensor) -> Result<()> {
    if t.dtype() != DType::U32 {
        return Err(Error::invalid(
            op,
            format!("{what} must be u32, got {:?} {:?}", t.dtype(), t.shape()),
        ));
    }
    Ok(())
}

/// Records max pooling of `x: [N, C, H, W]` into `y` and the position of each maximum into
/// `argmax` (u32, flat `h·W + w` within the input plane), both `[N, C, OH, OW]`. Ties go to
/// the first maximum in row-major scan order, as in PyTorch. NaN inputs are not propagated
/// the way PyTorch does (a NaN wins only as the first element of its window).
pub fn max_pool2d_forward_into(
    rec: &mut Recorder,
    x: &Tensor,
    pool: &MaxPool2d,
    y: &Tensor,
    argmax: &Tensor,
) -> Result<()> {
    let xs = expect_nchw("max_pool2d", "input", x)?;
    let ys = pool.output_shape(xs)?;
    expect_shape("max_pool2d", "output", y, &ys)?;
    expect_shape("max_pool2d", "argmax", argmax, &ys)?;
    expect_u32("max_pool2d", "argmax", argmax)?;
    if y.is_empty() {
        return Ok(());
    }
    let spec = KernelSpec::new(
        "pool_max_forward",
        "max_pool2d_forward",
        MAX_FORWARD_BINDINGS,
    );
    let params = pool.params(xs, [ys[2], ys[3]]);
    let groups = grid(rec.gpu(), y.len().div_ceil(WORKGROUP) as u32);
    rec.dispatch(
        &spec,
        &[x.buffer(), y.buffer(), argmax.buffer()],
        Some(&params),
        groups,
    )
}

/// Records the max-pooling gradient `dx: [N, C, H, W]` from `dy` and the forward pass's
/// `argmax` (both `[N, C, OH, OW]`): each input element sums dy over the windows whose
/// maximum it was.
pub fn max_pool2d_backward_into(
    rec: &mut Recorder,
    dy: &Tensor,
    argmax: &Tensor,
    pool: &MaxPool2d,
    dx: &Tensor,
) -> Result<()> {
    let op = "max_pool2d_backward";
    let xs = expect_nchw(op, "input gradient", dx)?;
    let ys = pool.output_shape(xs)?;
    expect_shape(op, "upstream gradient", dy, &ys)?;
    expect_shape(op, "argmax", argmax, &ys)?;
    expect_u32(op, "argmax", argmax)?;
    let spec = KernelSpec::new(
        "pool_max_backward",
        "max_pool2d_backward",
        MAX_BACKWARD_BINDINGS,
    );
    let params = pool.params(xs, [ys[2], ys[3]]);
    let groups = grid_for(rec.gpu(), dx.len(), WORKGROUP);
    rec.dispatch(
        &spec,
        &[dy.buffer(), argmax.buffer(), dx.buffer()],
        Some(&params),
        groups,
    )
}

/// The outputs of [`max_pool2d`].
#[derive(Debug)]
pub struct MaxPoolOutput {
    /// Pooled values, `[N, C, OH, OW]`.
    pub y: Tensor,
    /// Flat position `h·W + w` of each maximum within its input plane (u32).
    pub argmax: Tensor,
}

/// Max pooling, submitted at once.
pub fn max_pool2d(gpu: &Gpu, x: &Tensor, pool: &MaxPool2d) -> Result<MaxPoolOutput> {
    let ys = pool.output_shape(expect_nchw("max_pool2d", "input", x)?)?;
    let y = Tensor::uninit(gpu, &ys, DType::F32, "max_pool2d output")?;
    let argmax = Tensor::uninit(gpu, &ys, DType::U32, "max_pool2d argmax")?;
    let mut rec = Recorder::new(gpu);
    max_pool2d_forward_into(&mut rec, x, pool, &y, &argmax)?;
    rec.submit()?;
    Ok(MaxPoolOutput { y, argmax })
}

/// The max-pooling gradient for an input of `input_shape`, submitted at once.
pub fn max_pool2d_backward(
    gpu: &Gpu,
    dy: &Tensor,
    argmax: &Tensor,
    pool: &MaxPool2d,
    input_shape: &[usize],
) -> Result<Tensor> {
    let dx = Tensor::uninit(gpu, input_shape, DType::F32, "max_pool2d input gradient")?;
    let mut rec = Recorder::new(gpu);
    max_pool2d_backward_into(&mut rec, dy, argmax, pool, &dx)?;
    rec.submit()?;
    Ok(dx)
}
