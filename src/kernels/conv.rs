//! 2-D convolution over NCHW f32 tensors with PyTorch's weight layout [Cout, Cin/groups, KH, KW]:
//! the forward pass and the gradients with respect to the input, the weight and the bias, for
//! dense (groups = 1) and depthwise (groups = channels) convolutions.
//!
//! Dense convolutions run as implicit GEMMs (`shaders/conv2d_gemm.wgsl`) that gather input
//! patches while loading workgroup tiles, so no im2col buffer is ever written; which kernel
//! runs a product depends on its shape and on the device's [`Tuning`]. The
//! weight gradient reduces over the whole batch, so it is split into slices whose partial sums
//! `shaders/conv2d_reduce.wgsl` adds. Depthwise convolutions use direct kernels
//! (`shaders/conv2d_depthwise.wgsl`) and the bias gradient a per-channel workgroup reduction
//! (`shaders/conv2d_backward_bias.wgsl`).

use crate::error::{Error, Result};
use crate::gpu::{Binding, Gpu, KernelSpec, Tuning};
use crate::kernels::{expect_nchw, expect_shape, grid, grid_for, Recorder};
use crate::tensor::{DType, Tensor};

/// Hyperparameters of a 2-D convolution; the kernel size and channel counts come from the
/// tensors. Output size per axis: `(input + 2·padding − kernel) / stride + 1`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Conv2d {
    /// Step between output positions, [vertical, horizontal].
    pub stride: [usize; 2],
    /// Zeros added on both sides of the input, [top and bottom, left and right].
    pub padding: [usize; 2],
    /// Channel groups: 1 (dense) or the number of channels (depthwise).
    // Limitation: other group counts have no kernel and are rejected.
    pub groups: usize,
}

impl Default for Conv2d {
    fn default() -> Self {
        Conv2d::new(1, 0)
    }
}

impl Conv2d {
    /// A dense convolution with the same stride and padding on both axes.
    pub fn new(stride: usize, padding: usize) -> Self {
        Conv2d {
            stride: [stride; 2],
            padding: [padding; 2],
            groups: 1,
        }
    }

    /// A depthwise convolution of `channels` channels (groups = channels, weight
    /// [channels, 1, KH, KW]).
    pub fn depthwise(channels: usize, stride: usize, padding: usize) -> Self {
        Conv2d::new(stride, padding).with_groups(channels)
    }

    /// The same convolution with `groups` channel groups.
    pub fn with_groups(self, groups: usize) -> Self {
        Conv2d { groups, ..self }
    }

    /// The output shape [N, Cout, OH, OW] for an input of shape `input` [N, Cin, H, W] and a
    /// weight of shape `weight` [Cout, Cin/groups, KH, KW], or why they do not fit together.
    pub fn output_shape(&self, input: &[usize], weight: &[usize]) -> Result<[usize; 4]> {
        Ok(self.geometry("conv2d", input, weight)?.output())
    }

    fn geometry(&self, op: &'static str, input: &[usize], weight: &[usize]) -> Result<Geometry> {
        let [batch, in_channels, in_h, in_w] = four_d(op, "input", input)?;
        let [out_channels, group_channels, kernel_h, kernel_w] = four_d(op, "weight", weight)?;
        if self.stride.contains(&0) {
            return Err(Error::invalid(
                op,
                format!("stride must be at least 1, got {:?}", self.stride),
            ));
        }
        let depthwise = match self.groups {
            1 => false,
            g if g == in_channels && out_channels == in_channels => true,
            g => {
                return Err(Error::invalid(
                    op,
                    format!(
                        "groups = {g} is not supported (input {input:?}, weight {weight:?}): \
                         only groups = 1 or depthwise (groups = input channels = output \
                         channels) are"
                    ),
                ))
            }
        };
        if group_channels * self.groups != in_channels {
            return Err(Error::invalid(
                op,
                format!(
                    "input has {in_channels} channels, weight expects {} (input {input:?}, \
                     weight {weight:?}, groups {})",
                    group_channels * self.groups,
                    self.groups
                ),
            ));
        }
        if weight.contains(&0) || in_channels == 0 {
            return Err(Error::invalid(
                op,
                format!("empty weight {weight:?} or input channels (input {input:?})"),
            ));
        }
        let padded = [in_h + 2 * self.padding[0], in_w + 2 * self.padding[1]];
        if kernel_h > padded[0] || kernel_w > padded[1] {
            return Err(Error::invalid(
                op,
                format!(
                    "kernel {kernel_h}×{kernel_w} is larger than the padded input {}×{} \
                     (input {input:?}, weight {weight:?}, padding {:?})",
                    padded[0], padded[1], self.padding
                ),
            ));
        }
        Ok(Geometry {
            batch,
            in_channels,
            in_h,
            in_w,
            out_channels,
            kernel_h,
            kernel_w,
            out_h: (padded[0] - kernel_h) / self.stride[0] + 1,
            out_w: (padded[1] - kernel_w) / self.stride[1] + 1,
            stride: self.stride,
            padding: self.padding,
            depthwise,
        })
    }
}

fn four_d(op: &'static str, what: &str, shape: &[usize]) -> Result<[usize; 4]> {
    match *shape {
        [n, c, h, w] => Ok([n, c, h, w]),
        _ => Err(Error::invalid(
            op,
            format!("{what} must be 4-D, got {shape:?}"),
        )),
    }
}

/// Every size of one convolution, checked to be consistent.
#[derive(Clone, Copy, Debug)]
struct Geometry {
    batch: usize,
    in_channels: usize,
    in_h: usize,
    in_w: usize,
    out_channels: usize,
    kernel_h: usize,
    kernel_w: usize,
    out_h: usize,
    out_w: usize,
    stride: [usize; 2],
    padding: [usize; 2],
    depthwise: bool,
}

impl Geometry {
    fn output(&self) -> [usize; 4] {
        [self.batch, self.out_channels, self.out_h, self.out_w]
    }

    fn taps(&self) -> usize {
        self.kernel_h * self.kernel_w
    }

    fn gemm_params(&self) -> GemmParams {
        GemmParams {
            batch: self.batch as u32,
            in_channels: self.in_channels as u32,
            in_h: self.in_h as u32,
            in_w: self.in_w as u32,
            out_channels: self.out_channels as u32,
            out_h: self.out_h as u32,
            out_w: self.out_w as u32,
            kernel_h: self.kernel_h as u32,
            kernel_w: self.kernel_w as u32,
            stride_h: self.stride[0] as u32,
            stride_w: self.stride[1] as u32,
            pad_h: self.padding[0] as u32,
            pad_w: self.padding[1] as u32,
            ..bytemuck::Zeroable::zeroed()
        }
    }

    fn depthwise_params(&self) -> DepthwiseParams {
        DepthwiseParams {
            batch: self.batch as u32,
            channels: self.in_channels as u32,
            in_h: self.in_h as u32,
            in_w: self.in_w as u32,
            out_h: self.out_h as u32,
            out_w: self.out_w as u32,
            kernel_h: self.kernel_h as u32,
            kernel_w: self.kernel_w as u32,
            stride_h: self.stride[0] as u32,
            stride_w: self.stride[1] as u32,
            pad_h: self.padding[0] as u32,
            pad_w: self.padding[1] as u32,
            ..bytemuck::Zeroable::zeroed()
        }
    }
}

/// Uniform of `conv2d_gemm.wgsl` (see there for the fields of one product and phase).
#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct GemmParams {
    batch: u32,
    in_channels: u32,
    in_h: u32,
    in_w: u32,
    out_channels: u32,
    out_h: u32,
    out_w: u32,
    kernel_h: u32,
    kernel_w: u32,
    stride_h: u32,
    stride_w: u32,
    pad_h: u32,
    pad_w: u32,
    has_bias: u32,
    m: u32,
    n: u32,
    k: u32,
    k_per_split: u32,
    tiles_n: u32,
    tiles: u32,
    phase_h: u32,
    phase_w: u32,
    sub_h: u32,
    sub_w: u32,
    sub_kernel_h: u32,
    sub_kernel_w: u32,
    tap_h: u32,
    tap_w: u32,
    shift_h: u32,
    shift_w: u32,
}

/// Uniform of `conv2d_depthwise.wgsl`.
#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct DepthwiseParams {
    batch: u32,
    channels: u32,
    in_h: u32,
    in_w: u32,
    out_h: u32,
    out_w: u32,
    kernel_h: u32,
    kernel_w: u32,
    stride_h: u32,
    stride_w: u32,
    pad_h: u32,
    pad_w: u32,
    has_bias: u32,
    positions: u32,
    chunk: u32,
}

/// Uniform of `conv2d_backward_bias.wgsl`.
#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct BiasParams {
    channels: u32,
    plane: u32,
    positions: u32,
    chunk: u32,
}

/// Uniform of `conv2d_reduce.wgsl`.
#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct ReduceParams {
    len: u32,
    splits: u32,
}

const CONV_BINDINGS: &[Binding] = &[
    Binding::Read,
    Binding::Read,
    Binding::Read,
    Binding::ReadWrite,
    Binding::Uniform,
];
/// `conv2d_gemm.wgsl`: A, B, bias, out, B seen as vec4s, params.
const GEMM_BINDINGS: &[Binding] = &[
    Binding::Read,
    Binding::Read,
    Binding::Read,
    Binding::ReadWrite,
    Binding::Read,
    Binding::Uniform,
];
const REDUCE_BINDINGS: &[Binding] = &[Binding::Read, Binding::ReadWrite, Binding::Uniform];
const WORKGROUP: usize = 256;

/// Deepest K step of the GEMM (see `conv2d_gemm.wgsl`), which split-K slices are multiples of.
const TILE_K: usize = 16;
/// Workgroups a weight-gradient GEMM aims for by splitting K, enough to fill a large GPU.
const TARGET_WORKGROUPS: usize = 512;
/// Fewest K terms per split, so each workgroup's setup is amortised over several K steps.
const MIN_SPLIT_K: usize = 128;
/// Most K terms one thread sums serially in a weight-gradient GEMM, for accuracy.
const MAX_SPLIT_K: usize = 4096;
/// Largest scratch tensor of partial sums a split reduction may use.
const MAX_PARTIAL_BYTES: usize = 64 << 20;
/// Positions one workgroup sums per slice in the depthwise-weight and bias reductions
/// (16 per thread).
const REDUCTION_CHUNK: usize = 16 * WORKGROUP;

/// Largest M and K of the narrow GEMM kernels (`forward_narrow`, `backward_data_narrow`),
/// which stage all of A, M × K, in 16 KiB of workgroup memory; and the columns one of their
/// workgroups computes (64 threads × 8).
const NARROW_M: usize = 16;
const NARROW_K: usize = 256;
const NARROW_TILE_N: usize = 512;
/// Largest M of the wide GEMM kernels (`forward_wide`, `backward_data_wide`), which stage A
/// 128 columns of K at a time; and the columns one of their workgroups computes (64 × 4).
const WIDE_M: usize = 32;
const WIDE_TILE_N: usize = 256;
/// Largest N of the narrow and wide weight-gradient kernels: at most one block of 8 (or 4)
/// columns per thread.
const NARROW_WEIGHT_N: usize = 512;
const WIDE_WEIGHT_N: usize = 256;

/// Columns per thread of the row-block kernels (`*_rows`, fixed in the shader), which run
/// every product that the narrow kernels do not under CPU tuning: 16 or 32 rows (as M
/// needs) × 8 columns.
const ROWS_COLS: usize = 8;
/// Under CPU tuning, the narrow and wide weight-gradient kernels keep the products of M ≤ 16,
/// and of M ≤ 32 with fewer columns than this (too few to fill a workgroup of the row-block
/// kernel); the row-block kernel takes the rest.
const ROWS_MIN_WEIGHT_N: usize = 64;
/// Workgroups a weight-gradient GEMM aims for under CPU tuning: a few per core, so that the
/// partial sums stay few (at 512, their reduction took 2 % of a ResNet-20 step on lavapipe).
const CPU_WORKGROUPS: usize = 64;

/// Which product of a dense convolution's implicit GEMM (see `conv2d_gemm.wgsl`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pass {
    /// The output: M = Cout, N = batch·OH·OW, K = Cin·KH·KW.
    Forward,
    /// The input gradient, one product per stride phase: M = Cin.
    BackwardData,
    /// The weight gradient: M = Cout, N = Cin·KH·KW, K = batch·OH·OW.
    BackwardWeight,
}

impl Pass {
    /// The pass as the benchmark and the kernel choices name it.
    pub fn name(self) -> &'static str {
        match self {
            Pass::Forward => "forward",
            Pass::BackwardData => "backward_data",
            Pass::BackwardWeight => "backward_weight",
        }
    }
}

/// The kernel families that run a dense convolution's GEMM (see `conv2d_gemm.wgsl`). All
/// compute the same sums in the same order of K within a thread; they differ in how the work
/// is shaped, which decides their speed on an adapter. By default each product gets the
/// family its shape and the device's [`Tuning`] call for; a device that searches kernels (see
/// [`KernelSearch`](crate::gpu::KernelSearch)) measures the families instead.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GemmKernel {
    /// 16 rows × 8 columns per thread with all of A staged at once: products of at most 16
    /// rows and (forward and input gradient) 256 K or (weight gradient) 512 columns.
    Narrow,
    /// 32 rows × 4 columns per thread: products of at most 32 rows and (weight gradient) 256
    /// columns.
    Wide,
    /// Shared-memory tiles of up to 64 × 64 with 8 × 8 per thread: any product.
    Tiled,
    /// Blocks of 16 or 32 rows × 8 columns per thread, the rows shared by a workgroup: any
    /// product.
    Rows,
    /// The weight gradient of a 3×3 kernel, a thread per input channel with its 9 taps ×
    /// 16 or 32 rows: stride 1 or 2 and padding 1 along the width, rows of x and dY a
    /// multiple of 4 elements.
    Taps,
}

impl GemmKernel {
    /// Every family.
    pub const ALL: [GemmKernel; 5] = [
        GemmKernel::Narrow,
        GemmKernel::Wide,
        GemmKernel::Tiled,
        GemmKernel::Rows,
        GemmKernel::Taps,
    ];

    /// The family's name: `narrow`, `wide`, `tiled`, `rows` or `taps`.
    pub fn name(self) -> &'static str {
        match self {
            GemmKernel::Narrow => "narrow",
            GemmKernel::Wide => "wide",
            GemmKernel::Tiled => "tiled",
            GemmKernel::Rows => "rows",
            GemmKernel::Taps => "taps",
        }
    }

    /// The family `name` names.
    pub fn parse(name: &str) -> Option<Self> {
        GemmKernel::ALL.into_iter().find(|k| k.name() == name)
    }

    /// Whether the family can run the `m` × `n` product over `k` of `pass` of `g`.
    fn fits(self, pass: Pass, [m, n, k]: [usize; 3], g: &Geometry) -> bool {
        let weight = pass == Pass::BackwardWeight;
        match self {
            GemmKernel::Taps => weight && taps_fit(g),
            GemmKernel::Narrow if weight => m <= NARROW_M && n <= NARROW_WEIGHT_N,
            GemmKernel::Narrow => m <= NARROW_M && k <= NARROW_K,
            GemmKernel::Wide if weight => m <= WIDE_M && n <= WIDE_WEIGHT_N,
            GemmKernel::Wide => m <= WIDE_M,
            GemmKernel::Tiled | GemmKernel::Rows => true,
        }
    }

    /// The family a product gets unless measured: under CPU tuning the by-channel weight
    /// gradient where it fits; the narrow kernels where they fit; under CPU tuning the row
    /// blocks for the rest, except weight gradients of at most 32 rows and fewer than
    /// ROWS_MIN_WEIGHT_N columns (the wide kernel); under GPU tuning the wide kernel where it
    /// fits and the tiled one for the rest.
    fn default_for(tuning: Tuning, pass: Pass, product: [usize; 3], g: &Geometry) -> Self {
        let [_, n, _] = product;
        if tuning == Tuning::Cpu && GemmKernel::Taps.fits(pass, product, g) {
            return GemmKernel::Taps;
        }
        if GemmKernel::Narrow.fits(pass, product, g) {
            return GemmKernel::Narrow;
        }
        let wide = GemmKernel::Wide.fits(pass, product, g);
        match tuning {
            Tuning::Cpu if wide && pass == Pass::BackwardWeight && n < ROWS_MIN_WEIGHT_N => {
                GemmKernel::Wide
            }
            Tuning::Cpu => GemmKernel::Rows,
            Tuning::Gpu if wide => GemmKernel::Wide,
            Tuning::Gpu => GemmKernel::Tiled,
        }
    }

    /// `requested` where it fits the product, else the default.
    fn pick(
        requested: Option<Self>,
        gpu: &Gpu,
        pass: Pass,
        product: [usize; 3],
        g: &Geometry,
    ) -> Self {
        match requested {
            Some(k) if k.fits(pass, product, g) => k,
            _ => GemmKernel::default_for(gpu.tuning(), pass, product, g),
        }
    }
}

/// Shape of a GEMM workgroup tile for an `m` × `n` product, as (threads along M, rows,
/// columns): each of the 64 threads computes 8 × 8 outputs, and of the 64 × 64, 32 × 128 and
/// 16 × 256 tiles the one that pads the product least is taken, so that layers of 16 or 32
/// channels compute no padding rows.
fn gemm_tile(m: usize, n: usize) -> (usize, usize, usize) {
    let padded = |(_, rows, cols): (usize, usize, usize)| {
        m.next_multiple_of(rows) * n.next_multiple_of(cols)
    };
    let mut best = (8, 64, 64);
    for candidate in [(4, 32, 128), (2, 16, 256)] {
        if padded(candidate) < padded(best) {
            best = candidate;
        }
    }
    best
}

/// Records one implicit GEMM of `pass`: `[m, n] = [m, k] · [k, n]` over `splits` slices of K,
/// each `k_per_split` long, into `out` ([splits, m, n] for the weight gradient).
fn record_gemm(
    rec: &mut Recorder,
    pass: Pass,
    kernel: GemmKernel,
    mut params: GemmParams,
    [m, n, k]: [usize; 3],
    [splits, k_per_split]: [usize; 2],
    buffers: [&wgpu::Buffer; 4],
) -> Result<()> {
    params.m = m as u32;
    params.n = n as u32;
    params.k = k as u32;
    params.k_per_split = k_per_split as u32;
    if matches!(kernel, GemmKernel::Rows | GemmKernel::Taps) {
        return record_rows(rec, pass, kernel, params, splits, buffers);
    }
    let narrow = kernel == GemmKernel::Narrow;
    let wide = kernel == GemmKernel::Wide;
    debug_assert!(pass != Pass::BackwardWeight || !(narrow || wide));
    let spec = match pass {
        Pass::Forward | Pass::BackwardData if narrow || wide => {
            let (tile_n, entries) = if narrow {
                (NARROW_TILE_N, ["forward_narrow", "backward_data_narrow"])
            } else {
                (WIDE_TILE_N, ["forward_wide", "backward_data_wide"])
            };
            params.tiles_n = n.div_ceil(tile_n) as u32;
            params.tiles = params.tiles_n;
            let entry = match pass {
                Pass::Forward => entries[0],
                _ => entries[1],
            };
            let segments = narrow && row_segments(rec.gpu(), pass, &params);
            KernelSpec::new("conv2d_gemm", entry, GEMM_BINDINGS)
                .with("SEGMENTS", segments as u8 as f64)
                .with("TRIPLES", (segments && triples(pass, &params)) as u8 as f64)
        }
        _ => {
            let (threads_m, tile_m, tile_n) = gemm_tile(m, n);
            let tiles_n = n.div_ceil(tile_n);
            params.tiles_n = tiles_n as u32;
            params.tiles = (m.div_ceil(tile_m) * tiles_n) as u32;
            let entry = match pass {
                Pass::Forward => "forward",
                Pass::BackwardData => "backward_data",
                Pass::BackwardWeight => "backward_weight",
            };
            KernelSpec::new("conv2d_gemm", entry, GEMM_BINDINGS).with("TY", threads_m as f64)
        }
    };
    let mut groups = grid(rec.gpu(), params.tiles);
    groups[2] = splits as u32;
    let buffers = gemm_buffers(rec, buffers)?;
    rec.dispatch(&spec, &buffers.each(), Some(&params), groups)
}

/// The buffers of a `conv2d_gemm.wgsl` dispatch: A, B, bias and out, then B again for its
/// vec4 view (`b_vec`), or a placeholder when B is too short to be seen as one vec4.
struct GemmBuffers([wgpu::Buffer; 5]);

impl GemmBuffers {
    fn each(&self) -> [&wgpu::Buffer; 5] {
        self.0.each_ref()
    }
}

fn gemm_buffers(rec: &mut Recorder, [a, b, bias, out]: [&wgpu::Buffer; 4]) -> Result<GemmBuffers> {
    let b_vec = if b.size() >= 16 {
        b.clone()
    } else {
        rec.scratch(&[4], "conv2d_gemm placeholder")?
            .buffer()
            .clone()
    };
    Ok(GemmBuffers([
        a.clone(),
        b.clone(),
        bias.clone(),
        out.clone(),
        b_vec,
    ]))
}

/// Records the weight gradient of `g` with `backward_weight_small` in its narrow form
/// (M ≤ 16, N ≤ 512: 8 columns per thread) or its wide one (M ≤ 32, N ≤ 256: 4 columns).
/// A workgroup serves 64 / (its column blocks) slices of K.
fn record_weight_narrow(
    rec: &mut Recorder,
    g: &Geometry,
    narrow: bool,
    positions: usize,
    dw: &Tensor,
    [x, dy]: [&Tensor; 2],
) -> Result<()> {
    let (m, n) = (g.out_channels, g.in_channels * g.taps());
    let cols = if narrow { 8 } else { 4 };
    let per_group = 64 / n.div_ceil(cols);
    let target = match rec.gpu().tuning() {
        Tuning::Cpu => CPU_WORKGROUPS,
        Tuning::Gpu => TARGET_WORKGROUPS,
    };
    let wanted = (target * per_group).min(positions.div_ceil(MIN_SPLIT_K));
    let [splits, k_per_split] = split_reduction(
        rec.gpu(),
        positions,
        m * n,
        wanted,
        MAX_SPLIT_K,
        weight_step(&g.gemm_params()),
    );
    let partial = partial_sums(rec, splits, dw, "conv2d_backward_weight partial sums")?;
    let params = GemmParams {
        m: m as u32,
        n: n as u32,
        k: positions as u32,
        k_per_split: k_per_split as u32,
        ..g.gemm_params()
    };
    let spec = KernelSpec::new("conv2d_gemm", "backward_weight_small", GEMM_BINDINGS)
        .with("WIDE", (!narrow) as u32 as f64)
        .with(
            "SEGMENTS",
            row_segments(rec.gpu(), Pass::BackwardWeight, &params) as u8 as f64,
        );
    let groups = grid(rec.gpu(), splits.div_ceil(per_group) as u32);
    let buffers = gemm_buffers(
        rec,
        [dy.buffer(), x.buffer(), dy.buffer(), partial.buffer()],
    )?;
    rec.dispatch(&spec, &buffers.each(), Some(&params), groups)?;
    if splits > 1 {
        record_reduce(rec, &partial, splits, dw)?;
    }
    Ok(())
}

/// Records the implicit GEMM of `pass` whose product `params` describes (m, n, k and
/// k_per_split set) with the row-block kernels (`*_rows` in `conv2d_gemm.wgsl`) or, for
/// `GemmKernel::Taps`, the by-channel weight gradient (`backward_weight_taps`), over
/// `splits` slices of K.
fn record_rows(
    rec: &mut Recorder,
    pass: Pass,
    kernel: GemmKernel,
    mut params: GemmParams,
    splits: usize,
    buffers: [&wgpu::Buffer; 4],
) -> Result<()> {
    let m = params.m as usize;
    let taps = kernel == GemmKernel::Taps;
    // Forward and input-gradient blocks are 16 × 16: half the loads of staged A per sum of
    // 32 × 8, for more loads of B, which the runs make cheaper.
    let (rows, cols) = match pass {
        Pass::BackwardWeight => (rows_block(m), ROWS_COLS),
        _ => (16, 16),
    };
    let (threads, tiles_n) = match taps {
        true => group_threads(rec.gpu(), params.in_channels as usize),
        false => group_threads(rec.gpu(), (params.n as usize).div_ceil(cols)),
    };
    params.tiles_n = tiles_n as u32;
    params.tiles = (tiles_n * m.div_ceil(rows)) as u32;
    let entry = match pass {
        _ if taps => "backward_weight_taps",
        Pass::Forward => "forward_rows",
        Pass::BackwardData => "backward_data_rows",
        Pass::BackwardWeight => "backward_weight_rows",
    };
    let segments = row_segments(rec.gpu(), pass, &params);
    let spec = KernelSpec::new("conv2d_gemm", entry, GEMM_BINDINGS)
        .with("ROWS", rows as f64)
        .with("GROUP_THREADS", threads as f64)
        .with("COLS", cols as f64)
        .with("SEGMENTS", segments as u8 as f64)
        .with(
            "TRIPLES",
            (segments && !taps && triples(pass, &params)) as u8 as f64,
        );
    let mut groups = grid(rec.gpu(), params.tiles);
    groups[2] = splits as u32;
    let buffers = gemm_buffers(rec, buffers)?;
    rec.dispatch(&spec, &buffers.each(), Some(&params), groups)
}

/// Whether the row-block and narrow kernels may load each thread's 8 values of B as one run
/// of a source row (`SEGMENTS` in `conv2d_gemm.wgsl`): a forward product with stride 1 along
/// the width, or an input-gradient one (whose neighbouring pixels of a phase read
/// neighbouring pixels of dY whatever the stride), whose rows of C hold a multiple of 8
/// columns (so a thread's 8 never straddle two rows) and whose source rows a multiple of 4
/// elements (so they start on a vec4). Under CPU tuning only: runs save a software
/// rasteriser its lane-by-lane loads, while a GPU coalesces the gathers, and SwiftShader in
/// the browser took minutes longer to compile the run-loading variants.
fn row_segments(gpu: &Gpu, pass: Pass, p: &GemmParams) -> bool {
    if gpu.tuning() != Tuning::Cpu {
        return false;
    }
    match pass {
        Pass::Forward if strided_triples(p) => true,
        Pass::Forward => p.stride_w == 1 && p.out_w.is_multiple_of(8) && p.in_w.is_multiple_of(4),
        Pass::BackwardData => p.sub_w.is_multiple_of(8) && p.out_w.is_multiple_of(4),
        Pass::BackwardWeight => weight_runs(p) && p.k_per_split.is_multiple_of(4),
    }
}

/// Whether a forward or input-gradient product that loads runs (`row_segments`) may take K 3
/// at a time (`TRIPLES` in `conv2d_gemm.wgsl`): those whose kernel rows (for the input
/// gradient, a phase's) are 3 taps wide, whose 3 runs lie in 4 neighbouring vec4s.
fn triples(pass: Pass, p: &GemmParams) -> bool {
    match pass {
        Pass::Forward => p.kernel_w == 3 && (p.stride_w == 1 || strided_triples(p)),
        Pass::BackwardData => p.sub_kernel_w == 3,
        Pass::BackwardWeight => false,
    }
}

/// Whether a forward product with stride 2 along the width loads its B as runs, 3 taps at a
/// time (`strided8x3` in `conv2d_gemm.wgsl`): a kernel 3 wide with padding 1 there, rows of
/// the output a multiple of 8 pixels and rows of x a multiple of 4 elements. Its 8 pixels'
/// taps are then every other element of 5 neighbouring vec4s.
fn strided_triples(p: &GemmParams) -> bool {
    p.stride_w == 2
        && p.kernel_w == 3
        && p.pad_w == 1
        && p.out_w.is_multiple_of(8)
        && p.in_w.is_multiple_of(4)
}

/// Whether the weight gradient's B may be loaded 4 values of K at a time, as one run of a
/// source row (`segment4` in `conv2d_gemm.wgsl`): stride 1 along the width, rows of dY a
/// multiple of 4 pixels (so that 4 consecutive k share a row) and rows of x a multiple of 4
/// elements. The slices of K must then be multiples of 4 as well.
fn weight_runs(p: &GemmParams) -> bool {
    p.stride_w == 1 && p.out_w.is_multiple_of(4) && p.in_w.is_multiple_of(4)
}

/// What the weight gradient's slices of K are made multiples of: 4 where its B may load as
/// runs, else 1.
fn weight_step(p: &GemmParams) -> usize {
    if weight_runs(p) {
        4
    } else {
        1
    }
}

/// Whether `backward_weight_taps` can run the weight gradient of `g`: a dense 3×3 kernel
/// with stride 1 or 2 and padding 1 along the width (the only padding that leaves rows of
/// both x and dY multiples of 4), and rows of x and dY a multiple of 4 elements.
fn taps_fit(g: &Geometry) -> bool {
    !g.depthwise
        && (g.kernel_h, g.kernel_w) == (3, 3)
        && matches!(g.stride[1], 1 | 2)
        && g.padding[1] == 1
        && g.in_w.is_multiple_of(4)
        && g.out_w.is_multiple_of(4)
}

/// Rows per block of the row-block kernels for a product of `m` rows: 16 or 32.
pub(crate) fn rows_block(m: usize) -> usize {
    if m <= 16 {
        16
    } else {
        32
    }
}

/// Threads per workgroup of the row-block kernels for `n` columns (ROWS_COLS per thread), and
/// the column tiles: at most 64 threads, as evenly spread over the tiles as whole groups of
/// SIMD lanes allow (8 under CPU tuning, where the CPU runs a workgroup's lanes as AVX
/// vectors, 32 otherwise).
pub(crate) fn rows_threads(gpu: &Gpu, n: usize) -> (usize, usize) {
    group_threads(gpu, n.div_ceil(ROWS_COLS))
}

/// Threads per workgroup and workgroups for `col_threads` threads along N, spread as
/// `rows_threads` describes.
fn group_threads(gpu: &Gpu, col_threads: usize) -> (usize, usize) {
    let lanes = match gpu.tuning() {
        Tuning::Cpu => 8,
        Tuning::Gpu => 32,
    };
    let tiles = col_threads.div_ceil(64);
    let threads = col_threads.div_ceil(tiles).next_multiple_of(lanes).min(64);
    (threads, col_threads.div_ceil(threads))
}

/// Records `out[i] = Σ_s partial[s, i]`, with `partial` of shape [splits, out.len()].
fn record_reduce(rec: &mut Recorder, partial: &Tensor, splits: usize, out: &Tensor) -> Result<()> {
    let spec = KernelSpec::new("conv2d_reduce", "main", REDUCE_BINDINGS);
    let params = ReduceParams {
        len: out.len() as u32,
        splits: splits as u32,
    };
    let groups = grid_for(rec.gpu(), out.len(), WORKGROUP);
    rec.dispatch(
        &spec,
        &[partial.buffer(), out.buffer()],
        Some(&params),
        groups,
    )
}

/// How to split a reduction of `k` terms per output over slices: the number of slices, and
/// the slice length, a multiple of `step`. `wanted` slices are asked for; the result keeps
/// each slice at most `max_len` long unless the `outputs`·slices partial sums would exceed
/// the scratch budget or a dispatch dimension.
fn split_reduction(
    gpu: &Gpu,
    k: usize,
    outputs: usize,
    wanted: usize,
    max_len: usize,
    step: usize,
) -> [usize; 2] {
    let budget = MAX_PARTIAL_BYTES.min(gpu.max_binding_bytes() as usize) / (4 * outputs.max(1));
    let max_dim = gpu.limits().max_compute_workgroups_per_dimension as usize;
    let splits = wanted
        .max(k.div_ceil(max_len))
        .min(budget)
        .min(max_dim)
        .clamp(1, k.div_ceil(step).max(1));
    let len = k.div_ceil(splits).next_multiple_of(step).max(step);
    [k.div_ceil(len).max(1), len]
}

/// A tensor for `splits` slices of partial sums of `out`, or `out` itself when there is one.
fn partial_sums(rec: &mut Recorder, splits: usize, out: &Tensor, what: &str) -> Result<Tensor> {
    if splits == 1 {
        return Ok(out.clone());
    }
    let mut shape = vec![splits];
    shape.extend_from_slice(out.shape());
    rec.scratch(&shape, what)
}

/// Records `y = conv(x, w) + bias` into `y` [N, Cout, OH, OW], for `x` [N, Cin, H, W],
/// `w` [Cout, Cin/groups, KH, KW] and `bias` [Cout].
pub fn forward_into(
    rec: &mut Recorder,
    conv: &Conv2d,
    x: &Tensor,
    w: &Tensor,
    bias: Option<&Tensor>,
    y: &Tensor,
) -> Result<()> {
    const OP: &str = "conv2d";
    let g = conv.geometry(OP, x.shape(), w.shape())?;
    if let Some(b) = bias {
        expect_shape(OP, "bias", b, &[g.out_channels])?;
    }
    expect_shape(OP, "output", y, &g.output())?;
    if y.is_empty() {
        return Ok(());
    }

    let has_bias = bias.is_some() as u32;
    // Without a bias, the weight fills its (unread) binding.
    let bias = bias.unwrap_or(w).buffer();
    if g.depthwise {
        let params = DepthwiseParams {
            has_bias,
            ..g.depthwise_params()
        };
        let spec = KernelSpec::new("conv2d_depthwise", "forward", CONV_BINDINGS);
        let groups = grid_for(rec.gpu(), y.len(), WORKGROUP);
        let buffers = [x.buffer(), w.buffer(), bias, y.buffer()];
        return rec.dispatch(&spec, &buffers, Some(&params), groups);
    }
    let kernel = searched_kernel(rec.gpu(), Pass::Forward, &g)?;
    record_forward(rec, &g, kernel, [x, w, y], bias, has_bias != 0)
}

/// Records the dense forward GEMM of `g` with `kernel` where it fits.
fn record_forward(
    rec: &mut Recorder,
    g: &Geometry,
    kernel: Option<GemmKernel>,
    [x, w, y]: [&Tensor; 3],
    bias: &wgpu::Buffer,
    has_bias: bool,
) -> Result<()> {
    let params = GemmParams {
        has_bias: has_bias as u32,
        ..g.gemm_params()
    };
    let product = products(Pass::Forward, g)[0].1;
    record_gemm(
        rec,
        Pass::Forward,
        GemmKernel::pick(kernel, rec.gpu(), Pass::Forward, product, g),
        params,
        product,
        [1, product[2]],
        [w.buffer(), x.buffer(), bias, y.buffer()],
    )
}

/// The GEMM products of the dense pass `pass` of `g` as (their uniform with the phase fields
/// set, [m, n, k]): one, or for the input gradient one per stride phase.
///
/// With stride s, input row ih is reached only by the taps kh ≡ ih + pad (mod s): the input
/// gradient takes one product per phase (ih mod s, iw mod s) over just its pixels and taps,
/// instead of one over all of them that is zero at all but 1 in s² places.
fn products(pass: Pass, g: &Geometry) -> Vec<(GemmParams, [usize; 3])> {
    let taps = g.taps();
    match pass {
        Pass::Forward => vec![(
            g.gemm_params(),
            [
                g.out_channels,
                g.batch * g.out_h * g.out_w,
                g.in_channels * taps,
            ],
        )],
        Pass::BackwardWeight => vec![(
            g.gemm_params(),
            [
                g.out_channels,
                g.in_channels * taps,
                g.batch * g.out_h * g.out_w,
            ],
        )],
        Pass::BackwardData => {
            let [stride_h, stride_w] = g.stride;
            let mut phases = Vec::new();
            for phase_h in 0..stride_h.min(g.in_h) {
                for phase_w in 0..stride_w.min(g.in_w) {
                    let (tap_h, tap_w) = (
                        (phase_h + g.padding[0]) % stride_h,
                        (phase_w + g.padding[1]) % stride_w,
                    );
                    let params = GemmParams {
                        phase_h: phase_h as u32,
                        phase_w: phase_w as u32,
                        sub_h: (g.in_h - phase_h).div_ceil(stride_h) as u32,
                        sub_w: (g.in_w - phase_w).div_ceil(stride_w) as u32,
                        sub_kernel_h: g.kernel_h.saturating_sub(tap_h).div_ceil(stride_h) as u32,
                        sub_kernel_w: g.kernel_w.saturating_sub(tap_w).div_ceil(stride_w) as u32,
                        tap_h: tap_h as u32,
                        tap_w: tap_w as u32,
                        shift_h: ((phase_h + g.padding[0]) / stride_h) as u32,
                        shift_w: ((phase_w + g.padding[1]) / stride_w) as u32,
                        ..g.gemm_params()
                    };
                    let n = g.batch * (params.sub_h * params.sub_w) as usize;
                    let k = g.out_channels * (params.sub_kernel_h * params.sub_kernel_w) as usize;
                    phases.push((params, [g.in_channels, n, k]));
                }
            }
            phases
        }
    }
}

/// Records the gradient with respect to the input, `dx` [N, Cin, H, W], of a convolution with
/// weight `w` whose output received the gradient `dy` [N, Cout, OH, OW].
pub fn backward_data_into(
    rec: &mut Recorder,
    conv: &Conv2d,
    dy: &Tensor,
    w: &Tensor,
    dx: &Tensor,
) -> Result<()> {
    const OP: &str = "conv2d_backward_data";
    let dx_shape = expect_nchw(OP, "input gradient", dx)?;
    let g = conv.geometry(OP, &dx_shape, w.shape())?;
    expect_shape(OP, "output gradient", dy, &g.output())?;
    if dx.is_empty() {
        return Ok(());
    }

    if g.depthwise {
        let spec = KernelSpec::new("conv2d_depthwise", "backward_data", CONV_BINDINGS);
        let groups = grid_for(rec.gpu(), dx.len(), WORKGROUP);
        let buffers = [dy.buffer(), w.buffer(), w.buffer(), dx.buffer()];
        return rec.dispatch(&spec, &buffers, Some(&g.depthwise_params()), groups);
    }

    let kernel = searched_kernel(rec.gpu(), Pass::BackwardData, &g)?;
    record_dense(rec, Pass::BackwardData, &g, kernel, [dy, w, dx])
}

/// Records the dense pass `pass` of `g` with `kernel` where it fits each product: from
/// `[a, b, out]` = [x, w, y] (without a bias), [dy, w, dx] or [x, dy, dw].
fn record_dense(
    rec: &mut Recorder,
    pass: Pass,
    g: &Geometry,
    kernel: Option<GemmKernel>,
    [a, b, out]: [&Tensor; 3],
) -> Result<()> {
    match pass {
        Pass::Forward => record_forward(rec, g, kernel, [a, b, out], b.buffer(), false),
        Pass::BackwardWeight => record_backward_weight(rec, g, kernel, [a, b, out]),
        Pass::BackwardData => {
            let phases = products(pass, g);
            // Phases that no tap reaches (a 1×1 kernel with stride 2 reaches one in four)
            // are zero: one clear of the whole gradient writes them faster than GEMMs over
            // an empty K.
            let unreached = phases.iter().any(|(_, [_, _, k])| *k == 0);
            if unreached {
                rec.clear(out);
            }
            for (params, product) in phases {
                if unreached && product[2] == 0 {
                    continue;
                }
                record_gemm(
                    rec,
                    pass,
                    GemmKernel::pick(kernel, rec.gpu(), pass, product, g),
                    params,
                    product,
                    [1, product[2]],
                    [b.buffer(), a.buffer(), b.buffer(), out.buffer()],
                )?;
            }
            Ok(())
        }
    }
}

/// Records the gradient with respect to the weight, `dw` [Cout, Cin/groups, KH, KW], of a
/// convolution of the input `x` [N, Cin, H, W] whose output received the gradient `dy`.
pub fn backward_weight_into(
    rec: &mut Recorder,
    conv: &Conv2d,
    x: &Tensor,
    dy: &Tensor,
    dw: &Tensor,
) -> Result<()> {
    const OP: &str = "conv2d_backward_weight";
    let dw_shape = expect_nchw(OP, "weight gradient", dw)?;
    let g = conv.geometry(OP, x.shape(), &dw_shape)?;
    expect_shape(OP, "output gradient", dy, &g.output())?;
    let positions = g.batch * g.out_h * g.out_w;
    if positions == 0 {
        rec.clear(dw);
        return Ok(());
    }

    if g.depthwise {
        let wanted = positions.div_ceil(REDUCTION_CHUNK);
        let [splits, chunk] =
            split_reduction(rec.gpu(), positions, dw.len(), wanted, REDUCTION_CHUNK, 1);
        let params = DepthwiseParams {
            positions: positions as u32,
            chunk: chunk as u32,
            ..g.depthwise_params()
        };
        let partial = partial_sums(rec, splits, dw, "conv2d_backward_weight partial sums")?;
        let spec = KernelSpec::new("conv2d_depthwise", "backward_weight", CONV_BINDINGS);
        let buffers = [x.buffer(), dy.buffer(), dy.buffer(), partial.buffer()];
        let groups = [g.in_channels as u32, splits as u32, 1];
        rec.dispatch(&spec, &buffers, Some(&params), groups)?;
        if splits > 1 {
            record_reduce(rec, &partial, splits, dw)?;
        }
        return Ok(());
    }

    let kernel = searched_kernel(rec.gpu(), Pass::BackwardWeight, &g)?;
    record_dense(rec, Pass::BackwardWeight, &g, kernel, [x, dy, dw])
}

/// Records the dense weight-gradient GEMM of `g` with `kernel` where it fits, and the
/// reduction of its split slices.
fn record_backward_weight(
    rec: &mut Recorder,
    g: &Geometry,
    kernel: Option<GemmKernel>,
    [x, dy, dw]: [&Tensor; 3],
) -> Result<()> {
    // K = N·OH·OW is long and M·N = Cout·Cin·KH·KW small: split K so that enough
    // workgroups run and no thread sums too many terms.
    let (params, product) = products(Pass::BackwardWeight, g)[0];
    let [m, n, positions] = product;
    let kernel = GemmKernel::pick(kernel, rec.gpu(), Pass::BackwardWeight, product, g);
    if matches!(kernel, GemmKernel::Narrow | GemmKernel::Wide) {
        let narrow = kernel == GemmKernel::Narrow;
        return record_weight_narrow(rec, g, narrow, positions, dw, [x, dy]);
    }
    // Workgroups per slice of K, and what slices are multiples of.
    let (blocks, step) = match kernel {
        GemmKernel::Rows => {
            let (_, tiles_n) = rows_threads(rec.gpu(), n);
            (tiles_n * m.div_ceil(rows_block(m)), weight_step(&params))
        }
        GemmKernel::Taps => {
            let (_, tiles_n) = group_threads(rec.gpu(), g.in_channels);
            (tiles_n * m.div_ceil(rows_block(m)), 4)
        }
        _ => {
            let (_, tile_m, tile_n) = gemm_tile(m, n);
            (m.div_ceil(tile_m) * n.div_ceil(tile_n), TILE_K)
        }
    };
    let target = match rec.gpu().tuning() {
        Tuning::Cpu => CPU_WORKGROUPS,
        Tuning::Gpu => TARGET_WORKGROUPS,
    };
    let wanted = target.div_ceil(blocks).min(positions.div_ceil(MIN_SPLIT_K));
    let [splits, k_per_split] =
        split_reduction(rec.gpu(), positions, m * n, wanted, MAX_SPLIT_K, step);
    let partial = partial_sums(rec, splits, dw, "conv2d_backward_weight partial sums")?;
    record_gemm(
        rec,
        Pass::BackwardWeight,
        kernel,
        params,
        product,
        [splits, k_per_split],
        [dy.buffer(), x.buffer(), dy.buffer(), partial.buffer()],
    )?;
    if splits > 1 {
        record_reduce(rec, &partial, splits, dw)?;
    }
    Ok(())
}

/// The kernel families of one dense convolution pass on a device.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PassKernels {
    /// The families that fit every GEMM product of the pass: what a kernel search measures.
    pub fitting: Vec<GemmKernel>,
    /// The family the device runs each product with unless it searches: one entry, or for
    /// the input gradient one per stride phase.
    pub defaults: Vec<GemmKernel>,
}

/// The kernel families for the dense pass `pass` of a convolution of an input of shape
/// `input` and a weight of shape `weight` on `gpu` (none for depthwise convolutions, which
/// have direct kernels).
pub fn kernels_for(
    gpu: &Gpu,
    pass: Pass,
    conv: &Conv2d,
    input: &[usize],
    weight: &[usize],
) -> Result<PassKernels> {
    let g = conv.geometry("conv2d", input, weight)?;
    let defaults = match g.depthwise {
        true => Vec::new(),
        false => products(pass, &g)
            .iter()
            .map(|(_, p)| GemmKernel::default_for(gpu.tuning(), pass, *p, &g))
            .collect(),
    };
    Ok(PassKernels {
        fitting: fitting_kernels(pass, &g),
        defaults,
    })
}

fn fitting_kernels(pass: Pass, g: &Geometry) -> Vec<GemmKernel> {
    if g.depthwise {
        return Vec::new();
    }
    let products = products(pass, g);
    GemmKernel::ALL
        .into_iter()
        .filter(|k| products.iter().all(|(_, p)| k.fits(pass, *p, g)))
        .collect()
}

/// The kernel a device that searches kernels runs the dense pass `pass` of `g` with: its
/// recorded choice, or the fastest family measured now on tensors of the same shapes.
/// `None` (each product's default family) when the device does not search, when fewer than
/// two families fit, or once its measuring budget is spent.
fn searched_kernel(gpu: &Gpu, pass: Pass, g: &Geometry) -> Result<Option<GemmKernel>> {
    let choices = gpu.choices();
    if !choices.enabled() || g.depthwise {
        return Ok(None);
    }
    let candidates = fitting_kernels(pass, g);
    if candidates.len() < 2 {
        return Ok(None);
    }
    let key = search_key(pass, g);
    if let Some(kernel) = choices.get(&key).and_then(|v| GemmKernel::parse(&v)) {
        if candidates.contains(&kernel) {
            return Ok(Some(kernel));
        }
    }
    measure_kernels(gpu, pass, g, &key, &candidates)
}

/// How a product is named in the kernel choices: the pass and every size that shapes it.
fn search_key(pass: Pass, g: &Geometry) -> String {
    format!(
        "conv2d {} x {}x{}x{}x{} w {}x{}x{}x{} stride {}x{} pad {}x{}",
        pass.name(),
        g.batch,
        g.in_channels,
        g.in_h,
        g.in_w,
        g.out_channels,
        g.in_channels,
        g.kernel_h,
        g.kernel_w,
        g.stride[0],
        g.stride[1],
        g.padding[0],
        g.padding[1]
    )
}

/// Times each candidate on zero-filled tensors of `g`'s shapes (one run that compiles, then
/// the best of up to three), stores the fastest under `key` and returns it. (Never reached in
/// a browser, which cannot wait for the queue: there the search is off.)
fn measure_kernels(
    gpu: &Gpu,
    pass: Pass,
    g: &Geometry,
    key: &str,
    candidates: &[GemmKernel],
) -> Result<Option<GemmKernel>> {
    use std::time::Instant;
    let choices = gpu.choices();
    if choices.time_left().is_zero() {
        return Ok(None);
    }
    let input = Tensor::zeros(gpu, &[g.batch, g.in_channels, g.in_h, g.in_w])?;
    let weight = Tensor::zeros(
        gpu,
        &[g.out_channels, g.in_channels, g.kernel_h, g.kernel_w],
    )?;
    let output = Tensor::zeros(gpu, &g.output())?;
    let run = |kernel: GemmKernel| -> Result<f64> {
        let mut rec = Recorder::new(gpu);
        let tensors = match pass {
            Pass::Forward => [&input, &weight, &output],
            Pass::BackwardData => [&output, &weight, &input],
            Pass::BackwardWeight => [&input, &output, &weight],
        };
        record_dense(&mut rec, pass, g, Some(kernel), tensors)?;
        let start = Instant::now();
        rec.submit()?;
        gpu.wait_idle()?;
        Ok(start.elapsed().as_secs_f64() * 1e3)
    };
    let started = Instant::now();
    let mut times = Vec::new();
    for &kernel in candidates {
        run(kernel)?;
        let mut best = run(kernel)?;
        // Short products are noisier: time them twice more.
        if best < 50.0 {
            best = best.min(run(kernel)?).min(run(kernel)?);
        }
        times.push((kernel, best));
        if started.elapsed() >= choices.time_left() {
            choices.spend(started.elapsed());
            log::info!(
                "cenet: kernel search budget spent; products not yet measured keep their \
                 default kernels until a later run measures them"
            );
            return Ok(None);
        }
    }
    choices.spend(started.elapsed());
    let (best, ms) = times
        .iter()
        .copied()
        .min_by(|a, b| a.1.total_cmp(&b.1))
        .expect("at least two candidates");
    let report: Vec<String> = times
        .iter()
        .map(|(k, ms)| format!("{} {ms:.2} ms", k.name()))
        .collect();
    log::info!(
        "cenet: {key}: {} ({ms:.2} ms; measured {})",
        best.name(),
        report.join(", ")
    );
    choices.set(key, best.name());
    Ok(Some(best))
}

/// Records the dense pass `pass` of a convolution with `kernel` for every GEMM product, into
/// `out`: for comparing kernels on one product. `inputs` are the pass's inputs in order
/// (forward: x, w; input gradient: dy, w; weight gradient: x, dy) and `out` its output
/// (y, dx or dw). An error if the kernel does not fit every product (see [`kernels_for`]).
pub fn record_with_kernel(
    rec: &mut Recorder,
    pass: Pass,
    kernel: GemmKernel,
    conv: &Conv2d,
    inputs: [&Tensor; 2],
    out: &Tensor,
) -> Result<()> {
    const OP: &str = "conv2d";
    let (input, weight) = match pass {
        Pass::Forward => (inputs[0].shape(), inputs[1].shape()),
        Pass::BackwardData => (out.shape(), inputs[1].shape()),
        Pass::BackwardWeight => (inputs[0].shape(), out.shape()),
    };
    let g = conv.geometry(OP, input, weight)?;
    let fitting = fitting_kernels(pass, &g);
    if !fitting.contains(&kernel) {
        let names: Vec<&str> = fitting.iter().map(|k| k.name()).collect();
        return Err(Error::invalid(
            OP,
            format!(
                "the {} kernel does not fit the {} products {:?} (input {input:?}, weight \
                 {weight:?}); these do: {}",
                kernel.name(),
                pass.name(),
                products(pass, &g).iter().map(|p| p.1).collect::<Vec<_>>(),
                names.join(", ")
            ),
        ));
    }
    let checked = match pass {
        Pass::Forward => expect_shape(OP, "output", out, &g.output()),
        Pass::BackwardData => expect_shape(OP, "output gradient", inputs[0], &g.output()),
        Pass::BackwardWeight => expect_shape(OP, "output gradient", inputs[1], &g.output()),
    };
    checked?;
    record_dense(rec, pass, &g, Some(kernel), [inputs[0], inputs[1], out])
}

/// [`record_with_kernel`] into a new tensor of shape `shape`, submitted at once.
pub fn run_with_kernel(
    gpu: &Gpu,
    pass: Pass,
    kernel: GemmKernel,
    conv: &Conv2d,
    inputs: [&Tensor; 2],
    shape: &[usize],
) -> Result<Tensor> {
    let out = output(gpu, shape, "conv2d output")?;
    let mut rec = Recorder::new(gpu);
    record_with_kernel(&mut rec, pass, kernel, conv, inputs, &out)?;
    rec.submit()?;
    Ok(out)
}

/// Records the gradient with respect to the bias, `db[c] = Σ dy[n, c, oh, ow]`, into `db`
/// [Cout] for an output gradient `dy` [N, Cout, OH, OW].
pub fn backward_bias_into(rec: &mut Recorder, dy: &Tensor, db: &Tensor) -> Result<()> {
    const OP: &str = "conv2d_backward_bias";
    let [batch, channels, out_h, out_w] = expect_nchw(OP, "output gradient", dy)?;
    expect_shape(OP, "bias gradient", db, &[channels])?;
    let plane = out_h * out_w;
    let positions = batch * plane;
    if channels == 0 {
        return Ok(());
    }
    if positions == 0 {
        rec.clear(db);
        return Ok(());
    }

    let wanted = positions.div_ceil(REDUCTION_CHUNK);
    let [splits, chunk] =
        split_reduction(rec.gpu(), positions, channels, wanted, REDUCTION_CHUNK, 1);
    let partial = partial_sums(rec, splits, db, "conv2d_backward_bias partial sums")?;
    let spec = KernelSpec::new("conv2d_backward_bias", "main", REDUCE_BINDINGS);
    let params = BiasParams {
        channels: channels as u32,
        plane: plane as u32,
        positions: positions as u32,
        chunk: chunk as u32,
    };
    let groups = [channels as u32, splits as u32, 1];
    rec.dispatch(
        &spec,
        &[dy.buffer(), partial.buffer()],
        Some(&params),
        groups,
    )?;
    if splits > 1 {
        record_reduce(rec, &partial, splits, db)?;
    }
    Ok(())
}

/// The gradients of a convolution's inputs.
#[derive(Debug)]
pub struct Conv2dGradients {
    /// With respect to the input, [N, Cin, H, W].
    pub input: Tensor,
    /// With respect to the weight, [Cout, Cin/groups, KH, KW].
    pub weight: Tensor,
    /// With respect to the bias, [Cout], when one was asked for.
    pub bias: Option<Tensor>,
}

fn output(gpu: &Gpu, shape: &[usize], what: &str) -> Result<Tensor> {
    Tensor::uninit(gpu, shape, DType::F32, what)
}

/// `conv(x, w) + bias`, submitted at once.
pub fn forward(
    gpu: &Gpu,
    conv: &Conv2d,
    x: &Tensor,
    w: &Tensor,
    bias: Option<&Tensor>,
) -> Result<Tensor> {
    let shape = conv.output_shape(x.shape(), w.shape())?;
    let y = output(gpu, &shape, "conv2d output")?;
    let mut rec = Recorder::new(gpu);
    forward_into(&mut rec, conv, x, w, bias, &y)?;
    rec.submit()?;
    Ok(y)
}

/// The input gradient for an input of shape `input_shape` (needed because strided
/// convolutions map several input sizes to one output size), submitted at once.
pub fn backward_data(
    gpu: &Gpu,
    conv: &Conv2d,
    dy: &Tensor,
    w: &Tensor,
    input_shape: &[usize],
) -> Result<Tensor> {
    let dx = output(gpu, input_shape, "conv2d input gradient")?;
    let mut rec = Recorder::new(gpu);
    backward_data_into(&mut rec, conv, dy, w, &dx)?;
    rec.submit()?;
    Ok(dx)
}

/// The weight gradient for a weight of shape `weight_shape`, submitted at once.
pub fn backward_weight(
    gpu: &Gpu,
    conv: &Conv2d,
    x: &Tensor,
    dy: &Tensor,
    weight_shape: &[usize],
) -> Result<Tensor> {
    let dw = output(gpu, weight_shape, "conv2d weight gradient")?;
    let mut rec = Recorder::new(gpu);
    backward_weight_into(&mut rec, conv, x, dy, &dw)?;
    rec.submit()?;
    Ok(dw)
}

/// The bias gradient, submitted at once.
pub fn backward_bias(gpu: &Gpu, dy: &Tensor) -> Result<Tensor> {
    let channels = expect_nchw("conv2d_backward_bias", "output gradient", dy)?[1];
    let db = output(gpu, &[channels], "conv2d bias gradient")?;
    let mut rec = Recorder::new(gpu);
    backward_bias_into(&mut rec, dy, &db)?;
    rec.submit()?;
    Ok(db)
}

/// All gradients of `conv(x, w) (+ bias)` given the output gradient `dy`, recorded together
/// and submitted once.
pub fn backward(
    gpu: &Gpu,
    conv: &Conv2d,
    x: &Tensor,
    w: &Tensor,
    dy: &Tensor,
    with_bias: bool,
) -> Result<Conv2dGradients> {
    let input = output(gpu, x.shape(), "conv2d input gradient")?;
    let weight = output(gpu, w.shape(), "conv2d weight gradient")?;
    let mut rec = Recorder::new(gpu);
    backward_data_into(&mut rec, conv, dy, w, &input)?;
    backward_weight_into(&mut rec, conv, x, dy, &weight)?;
    let bias = if with_bias {
        let db = output(gpu, &[w.shape()[0]], "conv2d bias gradient")?;
        backward_bias_into(&mut rec, dy, &db)?;
        Some(db)
    } else {
        None
    };
    rec.submit()?;
    Ok(Conv2dGradients {
        input,
        weight,
        bias,
    })
}
