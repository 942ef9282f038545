//! The Channel Equilibrium (CE) block: batch decorrelation by Newton–Schulz iterations mixed
//! with adaptive per-sample channel reweighting, forward (training and evaluation) and
//! backward, as the released CE code computes it.
//!
//! For X of shape N×C×H×W split into G = C/d groups of d channels, training mode computes per
//! group the mean μ and covariance Σ over m = N·H·W positions (+εI), S = Σ/tr Σ, T steps of
//! P ← 1.5P − 0.5P³S from P₀ = I, and y_bd = P_T·x on the *uncentred* x. The reweighting
//! branch takes the unbiased spatial variance v[n,c], runs it through Linear(C→C/r) →
//! LayerNorm → ReLU → Linear(C/r→C) → sigmoid to get s[n,c], and y_ar = X·s/κ with
//! κ = sqrt(mean v). The output is Y = λ·y_bd + (1−λ)·y_ar with λ = sigmoid(θ), applied in
//! one pass as the per-(sample, group) linear map M = λP_T + ((1−λ)/κ)·diag(s).
//!
//! Kernel plan (`shaders/ce_*.wgsl`), forward:
//! 1. `ce_stats` (forward): per (sample, group, slice of H·W) the mean and the centred d×d
//!    co-moment, with 4×4 register blocks per thread, or under CPU tuning `ce_stats_units`,
//!    a thread per (sample, group, slice) summing the whole d×d matrix so that it loads
//!    each value once;
//! 2. `ce_combine_forward`: per (group, block of ≤ 16 partials) the per-(n, c) spatial mean
//!    and variance, and a block mean and co-moment (Chan again);
//! 3. `ce_newton_forward` (training): one workgroup per group combines the blocks into μ and
//!    Σ, runs the Newton–Schulz steps and updates running_wm and running_mean;
//! 4. `ce_reweight_forward`: one workgroup per sample runs the MLP for s;
//! 5. `ce_scale`: κ (or running_scale), λ, and the running_scale update;
//! 6. `ce_apply`: one read of X, one write of Y.
//!
//! Backward: `ce_stats` (backward: one read of X and dY: per (sample, group, slice) the d×d
//! block Σ dY·xᵀ, whose diagonal is Σ_hw dY·X), `ce_combine_backward` (blocks of those,
//! and the per-(n, c) diagonals), `ce_newton_backward` (the d×d work), `ce_reweight_backward`
//! (the MLP per sample), `ce_weight_grad` (sums over the batch), `ce_backward_scalars`
//! (dθ, dκ) and `ce_input_grad` (one fused pass for dX).
//!
//! The passes over every element (`ce_stats`, `ce_apply`, `ce_input_grad`) are
//! specialised on d, so their loops over a group's channels unroll into registers, and each
//! thread works on 4×4 blocks or 4 positions at a time, so every value it loads serves
//! several multiply-adds.

use crate::error::{Error, Result};
use crate::gpu::{Binding, Gpu, KernelSpec, Tuning};
use crate::kernels::{expect_nchw, expect_shape, grid, Recorder};
use crate::tensor::{DType, Tensor};

const OP: &str = "ce";
/// Largest group size: the d×d work uses one thread per matrix entry.
pub const MAX_GROUP_SIZE: usize = 16;
/// Outputs per workgroup of `ce_weight_grad` (`OUTPUTS` there).
const WEIGHT_GRAD_OUTPUTS: usize = 16;
/// Layer-norm epsilon inside the reweighting MLP (PyTorch's default).
pub const LAYER_NORM_EPS: f32 = 1e-5;
/// Aim for at least this many workgroups in the statistics passes by splitting H·W into
/// slices, but never slices shorter than `MIN_SLICE` positions.
const TARGET_WORKGROUPS: usize = 256;
const MIN_SLICE: usize = 256;
/// With a thread per unit (`ce_stats_units`): aim for this many units, in slices of 64 to
/// 256 positions.
const TARGET_UNITS: usize = 512;
const UNIT_SLICE: [usize; 2] = [64, 256];
/// Most partials one thread combines serially in the combine passes: a block holds
/// max(1, 16 / S) samples, so the last level combines ⌈N / block⌉ blocks.
const COMBINE_UNITS: usize = 16;

/// Hyper-parameters of a CE block.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct CeOptions {
    /// Channels per decorrelation group before fitting (halved until it divides C); ≤ 16.
    pub group_size: usize,
    /// Newton–Schulz steps T (≥ 1).
    pub iterations: usize,
    /// ε added to the covariance diagonal before the trace normalisation.
    pub eps: f32,
    /// Momentum of the running statistics: r ← (1 − momentum)·r + momentum·batch value.
    pub momentum: f32,
    /// Channel reduction of the reweighting MLP: hidden width C / reduction.
    pub reduction: usize,
    /// IterNorm-style variant: y_bd = P_T/sqrt(tr Σ)·(x − μ) in training and
    /// running_wm·(x − running_mean) in evaluation. Off in the released CE code.
    pub centred: bool,
}

impl Default for CeOptions {
    fn default() -> Self {
        CeOptions {
            group_size: 16,
            iterations: 3,
            eps: 1e-5,
            momentum: 0.1,
            reduction: 4,
            centred: false,
        }
    }
}

/// The sizes one CE pass works with, derived from the input shape and the block.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CeGeometry {
    /// Batch N.
    pub n: usize,
    /// Channels C.
    pub c: usize,
    /// Height.
    pub h: usize,
    /// Width.
    pub w: usize,
    /// Group size d.
    pub d: usize,
    /// Number of groups G = C / d.
    pub groups: usize,
    /// Hidden width of the reweighting MLP, C / reduction.
    pub hidden: usize,
    /// Newton–Schulz steps T.
    pub iterations: usize,
    /// Slices each sample's H·W positions are split into for the statistics passes.
    pub slices: usize,
    /// Positions per slice (the last may be shorter).
    pub slice_len: usize,
    /// Samples per block of the combine passes.
    pub block_samples: usize,
    /// Blocks per group, ⌈N / block_samples⌉.
    pub blocks: usize,
    /// Whether the statistics passes give each (sample, group, slice) unit one thread
    /// (`ce_stats_units`, under CPU tuning when H·W is a multiple of 4) rather than a
    /// workgroup (`ce_stats`).
    pub unit_threads: bool,
}

impl CeGeometry {
    fn hw(&self) -> usize {
        self.h * self.w
    }

    /// This geometry with H·W cut into slices of `slice_len` positions (the last may be
    /// shorter), and the combine passes' blocks sized for that many slices.
    fn sliced(self, slice_len: usize) -> Self {
        let slices = self.hw().div_ceil(slice_len);
        let block_samples = (COMBINE_UNITS / slices).max(1);
        CeGeometry {
            slices,
            slice_len,
            block_samples,
            blocks: self.n.div_ceil(block_samples),
            ..self
        }
    }

    fn units(&self) -> usize {
        self.n * self.groups * self.slices
    }

    /// Workgroups of the statistics passes: one per unit, or one per 64 with unit threads.
    fn stats_workgroups(&self) -> usize {
        match self.unit_threads {
            true => self.units().div_ceil(64),
            false => self.units(),
        }
    }

    /// Floats per (sample, group, slice) statistics unit: d means or sums, then d×d.
    fn unit_stride(&self) -> usize {
        self.d + self.d * self.d
    }

    /// Floats per group in the saved group statistics: μ, Σ, P_1..P_T, the applied matrix.
    fn group_stride(&self) -> usize {
        self.d + (self.iterations + 2) * self.d * self.d
    }

    /// Floats per sample in the saved sample statistics: v, x̄, s, ĥ, 1/σ_h.
    fn sample_stride(&self) -> usize {
        3 * self.c + self.hidden + 1
    }

    /// Floats per group of backward matrices: K, B, μ, c, θ-part.
    fn bd_grad_stride(&self) -> usize {
        2 * self.d * self.d + 2 * self.d + 1
    }

    /// Floats per sample of reweighting gradients: E, dv, dz, a, dh, dhl, dhl·ĥ, q.
    fn ar_grad_stride(&self) -> usize {
        3 * self.c + 4 * self.hidden + 1
    }
}

/// The parameters and running statistics of one CE block, named after the released PyTorch
/// module's state-dict keys (see [`CeState::state_dict`]).
pub struct CeState {
    /// Hyper-parameters.
    pub options: CeOptions,
    /// Channels C.
    pub channels: usize,
    /// The fitted group size d (divides C).
    pub group_size: usize,
    /// `x_weight` [1]: θ, the gate's logit (λ = sigmoid θ), starts at 0.
    pub theta: Tensor,
    /// `running_mean` [G, d, 1], starts at 0.
    pub running_mean: Tensor,
    /// `running_wm` [G, d, d], starts at I.
    pub running_wm: Tensor,
    /// `AR.running_scale` [1], starts at 0.
    pub running_scale: Tensor,
    /// `AR.fc.0.weight` [C/r, C]: W1.
    pub w1: Tensor,
    /// `AR.fc.1.weight` [C/r]: γ of the layer norm, starts at 1.
    pub gamma_ln: Tensor,
    /// `AR.fc.1.bias` [C/r]: β of the layer norm, starts at 0.
    pub beta_ln: Tensor,
    /// `AR.fc.3.weight` [C, C/r]: W2.
    pub w2: Tensor,
    /// Training forward passes recorded (or loaded with a checkpoint). Evaluation refuses a
    /// block at 0, whose running_scale is still 0.
    pub trained_steps: u64,
}

/// splitmix64: a small deterministic generator for parameter initialisation.
struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in [−bound, bound).
    fn symmetric(&mut self, bound: f32) -> f32 {
        let unit = (self.next() >> 40) as f32 / (1u64 << 24) as f32;
        (2.0 * unit - 1.0) * bound
    }
}

/// Validates the options for `channels` and returns (d, hidden).
fn fit(channels: usize, options: &CeOptions) -> Result<(usize, usize)> {
    if options.reduction == 0 {
        return Err(Error::invalid(OP, "reduction must be at least 1"));
    }
    if channels < options.reduction {
        return Err(Error::invalid(
            OP,
            format!(
                "{channels} channels is fewer than the reduction {}, so the reweighting MLP \
                 would have no hidden features",
                options.reduction
            ),
        ));
    }
    if !channels.is_multiple_of(options.reduction) {
        return Err(Error::invalid(
            OP,
            format!(
                "{channels} channels is not divisible by the reduction {}",
                options.reduction
            ),
        ));
    }
    if options.group_size == 0 || options.group_size > MAX_GROUP_SIZE {
        return Err(Error::invalid(
            OP,
            format!(
                "group size {} is outside 1..={MAX_GROUP_SIZE}",
                options.group_size
            ),
        ));
    }
    if options.iterations == 0 {
        return Err(Error::invalid(OP, "iterations T must be at least 1"));
    }
    if options.eps.is_nan() || options.eps <= 0.0 {
        return Err(Error::invalid(
            OP,
            format!("eps must be positive, got {}", options.eps),
        ));
    }
    if !(0.0..=1.0).contains(&options.momentum) {
        return Err(Error::invalid(
            OP,
            format!("momentum must lie in [0, 1], got {}", options.momentum),
        ));
    }
    let mut d = options.group_size;
    while !channels.is_multiple_of(d) {
        d /= 2;
    }
    Ok((d, channels / options.reduction))
}

impl CeState {
    /// A fresh block for `channels` channels: θ = 0, γ_ln = 1, β_ln = 0, running_wm = I,
    /// running_mean = running_scale = 0, and W1, W2 drawn from U(−1/√fan_in, 1/√fan_in)
    /// (PyTorch's `nn.Linear` default) by a generator seeded with `seed`.
    pub fn new(gpu: &Gpu, channels: usize, options: CeOptions, seed: u64) -> Result<Self> {
        let (d, hidden) = fit(channels, &options)?;
        let groups = channels / d;
        let mut rng = SplitMix(seed);
        let bound1 = 1.0 / (channels as f32).sqrt();
        let w1: Vec<f32> = (0..hidden * channels)
            .map(|_| rng.symmetric(bound1))
            .collect();
        let bound2 = 1.0 / (hidden as f32).sqrt();
        let w2: Vec<f32> = (0..channels * hidden)
            .map(|_| rng.symmetric(bound2))
            .collect();
        let mut eye = vec![0.0f32; groups * d * d];
        for g in 0..groups {
            for i in 0..d {
                eye[(g * d + i) * d + i] = 1.0;
            }
        }
        Ok(CeState {
            options,
            channels,
            group_size: d,
            theta: Tensor::zeros(gpu, &[1])?,
            running_mean: Tensor::zeros(gpu, &[groups, d, 1])?,
            running_wm: Tensor::from_slice(gpu, &[groups, d, d], &eye)?,
            running_scale: Tensor::zeros(gpu, &[1])?,
            w1: Tensor::from_slice(gpu, &[hidden, channels], &w1)?,
            gamma_ln: Tensor::from_slice(gpu, &[hidden], &vec![1.0; hidden])?,
            beta_ln: Tensor::zeros(gpu, &[hidden])?,
            w2: Tensor::from_slice(gpu, &[channels, hidden], &w2)?,
            trained_steps: 0,
        })
    }

    /// Number of groups G.
    pub fn groups(&self) -> usize {
        self.channels / self.group_size
    }

    /// Hidden width of the reweighting MLP, C / reduction.
    pub fn hidden(&self) -> usize {
        self.channels / self.options.reduction
    }

    /// Every tensor under its key in the released PyTorch module's state dict.
    pub fn state_dict(&self) -> Vec<(&'static str, &Tensor)> {
        vec![
            ("x_weight", &self.theta),
            ("running_mean", &self.running_mean),
            ("running_wm", &self.running_wm),
            ("AR.running_scale", &self.running_scale),
            ("AR.fc.0.weight", &self.w1),
            ("AR.fc.1.weight", &self.gamma_ln),
            ("AR.fc.1.bias", &self.beta_ln),
            ("AR.fc.3.weight", &self.w2),
        ]
    }

    /// The geometry of a pass over an input of `shape` on a device of `tuning`, checking it
    /// against the block.
    pub fn geometry_for(&self, shape: &[usize], tuning: Tuning) -> Result<CeGeometry> {
        let mut geo = self.geometry(shape)?;
        let hw = geo.hw();
        if tuning == Tuning::Cpu && hw.is_multiple_of(4) {
            let wanted = TARGET_UNITS.div_ceil(geo.n * geo.groups);
            let [shortest, longest] = UNIT_SLICE;
            let slices = wanted.clamp(hw.div_ceil(longest), hw.div_ceil(shortest).max(1));
            geo = geo.sliced(hw.div_ceil(slices).next_multiple_of(4));
            geo.unit_threads = true;
        }
        Ok(geo)
    }

    /// The geometry of a pass over an input of `shape` on a device of GPU tuning (a
    /// workgroup per statistics unit), checking it against the block.
    pub fn geometry(&self, shape: &[usize]) -> Result<CeGeometry> {
        let [n, c, h, w] = match shape {
            &[n, c, h, w] => [n, c, h, w],
            other => {
                return Err(Error::invalid(
                    OP,
                    format!("input must be 4-D [N, C, H, W], got {other:?}"),
                ))
            }
        };
        if c != self.channels {
            return Err(Error::invalid(
                OP,
                format!(
                    "input has {c} channels, the block expects {}",
                    self.channels
                ),
            ));
        }
        if n == 0 {
            return Err(Error::invalid(OP, "input batch is empty"));
        }
        let hw = h * w;
        if hw < 2 {
            return Err(Error::invalid(
                OP,
                format!(
                    "input is {h}×{w}: the unbiased spatial variance needs \
                     H·W ≥ 2 positions"
                ),
            ));
        }
        let (d, groups) = (self.group_size, self.groups());
        let wanted = TARGET_WORKGROUPS.div_ceil(n * groups);
        let slices = wanted.min(hw / MIN_SLICE).max(1);
        let mut slice_len = hw.div_ceil(slices);
        if hw.is_multiple_of(4) {
            // Whole vec4s per slice for the statistics' vec4 variant.
            slice_len = slice_len.next_multiple_of(4);
        }
        let geo = CeGeometry {
            n,
            c,
            h,
            w,
            d,
            groups,
            hidden: self.hidden(),
            iterations: self.options.iterations,
            slices: 1,
            slice_len: hw,
            block_samples: 1,
            blocks: n,
            unit_threads: false,
        };
        Ok(geo.sliced(slice_len))
    }

    fn check_tensors(&self) -> Result<()> {
        let (g, d, c, hid) = (self.groups(), self.group_size, self.channels, self.hidden());
        expect_shape(OP, "x_weight", &self.theta, &[1])?;
        expect_shape(OP, "running_mean", &self.running_mean, &[g, d, 1])?;
        expect_shape(OP, "running_wm", &self.running_wm, &[g, d, d])?;
        expect_shape(OP, "AR.running_scale", &self.running_scale, &[1])?;
        expect_shape(OP, "AR.fc.0.weight", &self.w1, &[hid, c])?;
        expect_shape(OP, "AR.fc.1.weight", &self.gamma_ln, &[hid])?;
        expect_shape(OP, "AR.fc.1.bias", &self.beta_ln, &[hid])?;
        expect_shape(OP, "AR.fc.3.weight", &self.w2, &[c, hid])
    }
}

/// Which forward pass last filled a [`CeSaved`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CeMode {
    /// Batch statistics; backward may follow.
    Training,
    /// Running statistics; no backward.
    Evaluation,
}

/// Intermediates a training forward pass keeps for backward (μ, Σ, P_1..P_T, v, x̄, s, ĥ, κ,
/// λ: all small), and the scratch both passes use. Allocate once per input shape.
pub struct CeSaved {
    geometry: CeGeometry,
    mode: Option<CeMode>,
    /// [N·G·S, d + d²] per-(sample, group, slice) partial statistics (forward: means and
    /// co-moments; backward: dY sums and dY·xᵀ).
    partials: Tensor,
    /// [G·blocks, d + d²]: the same, combined over blocks of samples.
    block_stats: Tensor,
    /// [G, d + (T+2)d²]: μ, Σ (+εI), P_1..P_T, the applied matrix (P_T or P_T/sqrt(tr Σ)).
    group_stats: Tensor,
    /// [N, 3C + C/r + 1]: v, x̄, s, ĥ, 1/σ of the layer norm.
    sample_stats: Tensor,
    /// [4]: κ used (batch κ, or running_scale in evaluation), λ, dκ/(2κNC) (backward), unused.
    scalars: Tensor,
    /// [G, 2d² + 2d + 1]: K = λWmᵀ, B = (dΣ + dΣᵀ)/m, μ, c, ⟨G·xᵀ, Wm⟩.
    bd_grad: Tensor,
    /// [N, 3C + 4C/r + 1]: Σ_hw dY·X, dv (without the κ term), dz, a, dh, dhl, dhl·ĥ,
    /// Σ_c E·s.
    ar_grad: Tensor,
}

impl CeSaved {
    /// Buffers for passes of `state` over inputs of `x_shape`.
    pub fn new(gpu: &Gpu, state: &CeState, x_shape: &[usize]) -> Result<Self> {
        let geo = state.geometry_for(x_shape, gpu.tuning())?;
        let alloc = |shape: &[usize], what: &str| Tensor::uninit(gpu, shape, DType::F32, what);
        Ok(CeSaved {
            geometry: geo,
            mode: None,
            partials: alloc(&[geo.units(), geo.unit_stride()], "ce partial statistics")?,
            block_stats: alloc(
                &[geo.groups * geo.blocks, geo.unit_stride()],
                "ce block statistics",
            )?,
            group_stats: alloc(&[geo.groups, geo.group_stride()], "ce group statistics")?,
            sample_stats: alloc(&[geo.n, geo.sample_stride()], "ce sample statistics")?,
            scalars: Tensor::zeros(gpu, &[4])?,
            bd_grad: alloc(&[geo.groups, geo.bd_grad_stride()], "ce group gradients")?,
            ar_grad: alloc(&[geo.n, geo.ar_grad_stride()], "ce sample gradients")?,
        })
    }

    /// The geometry these buffers were sized for.
    pub fn geometry(&self) -> CeGeometry {
        self.geometry
    }

    /// Which forward pass was last recorded into these buffers.
    pub fn mode(&self) -> Option<CeMode> {
        self.mode
    }
}

/// Diagnostics: reading saved intermediates back (blocking; native only).
#[cfg(not(target_arch = "wasm32"))]
impl CeSaved {
    fn read_rows(
        &self,
        gpu: &Gpu,
        t: &Tensor,
        stride: usize,
        from: usize,
        len: usize,
    ) -> Result<Vec<f32>> {
        let all = t.to_vec(gpu)?;
        Ok(all
            .chunks(stride)
            .flat_map(|row| row[from..from + len].iter().copied())
            .collect())
    }

    /// Per-group mean μ, [G, d].
    pub fn read_mean(&self, gpu: &Gpu) -> Result<Vec<f32>> {
        let g = self.geometry;
        self.read_rows(gpu, &self.group_stats, g.group_stride(), 0, g.d)
    }

    /// Per-group covariance Σ including εI, [G, d, d].
    pub fn read_sigma(&self, gpu: &Gpu) -> Result<Vec<f32>> {
        let g = self.geometry;
        self.read_rows(gpu, &self.group_stats, g.group_stride(), g.d, g.d * g.d)
    }

    /// Per-(n, c) unbiased spatial variance v, [N, C].
    pub fn read_variance(&self, gpu: &Gpu) -> Result<Vec<f32>> {
        let g = self.geometry;
        self.read_rows(gpu, &self.sample_stats, g.sample_stride(), 0, g.c)
    }

    /// Per-(n, c) reweighting gate s, [N, C].
    pub fn read_reweight(&self, gpu: &Gpu) -> Result<Vec<f32>> {
        let g = self.geometry;
        self.read_rows(gpu, &self.sample_stats, g.sample_stride(), 2 * g.c, g.c)
    }

    /// The κ that divided the reweighted branch (batch κ, or running_scale in evaluation).
    pub fn read_kappa(&self, gpu: &Gpu) -> Result<f32> {
        Ok(self.scalars.to_vec(gpu)?[0])
    }
}

/// Gradients of a CE block's input and parameters.
pub struct CeGrads {
    /// dL/dX, [N, C, H, W].
    pub x: Tensor,
    /// dL/dθ, [1].
    pub theta: Tensor,
    /// dL/dW1, [C/r, C].
    pub w1: Tensor,
    /// dL/dγ_ln, [C/r].
    pub gamma_ln: Tensor,
    /// dL/dβ_ln, [C/r].
    pub beta_ln: Tensor,
    /// dL/dW2, [C, C/r].
    pub w2: Tensor,
}

impl CeGrads {
    /// Uninitialised gradient tensors for `state` and inputs of `x_shape`.
    pub fn new(gpu: &Gpu, state: &CeState, x_shape: &[usize]) -> Result<Self> {
        let (c, hid) = (state.channels, state.hidden());
        let alloc = |shape: &[usize]| Tensor::uninit(gpu, shape, DType::F32, "ce gradient");
        Ok(CeGrads {
            x: alloc(x_shape)?,
            theta: alloc(&[1])?,
            w1: alloc(&[hid, c])?,
            gamma_ln: alloc(&[hid])?,
            beta_ln: alloc(&[hid])?,
            w2: alloc(&[c, hid])?,
        })
    }
}

/// Uniform parameters shared by every CE kernel (`shaders/include/ce_params.wgsl`).
#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    n: u32,
    c: u32,
    hw: u32,
    d: u32,
    groups: u32,
    hidden: u32,
    iterations: u32,
    slices: u32,
    slice_len: u32,
    training: u32,
    centred: u32,
    eps: f32,
    momentum: f32,
    /// Where `ce_apply` finds group g's matrix: g·w_stride + w_offset; its mean likewise.
    w_stride: u32,
    w_offset: u32,
    mu_stride: u32,
    mu_offset: u32,
    ln_eps: f32,
    block_samples: u32,
    blocks: u32,
    /// Elems per plane in `ce_apply` and `ce_input_grad`: H·W, or H·W / 4 in their vec4
    /// variants.
    hw_elems: u32,
}

fn params(geo: &CeGeometry, options: &CeOptions, mode: CeMode) -> Params {
    let training = mode == CeMode::Training;
    let (w_stride, w_offset, mu_stride) = if training {
        let gs = geo.group_stride();
        (gs, geo.d + (geo.iterations + 1) * geo.d * geo.d, gs)
    } else {
        (geo.d * geo.d, 0, geo.d)
    };
    Params {
        n: geo.n as u32,
        c: geo.c as u32,
        hw: geo.hw() as u32,
        d: geo.d as u32,
        groups: geo.groups as u32,
        hidden: geo.hidden as u32,
        iterations: geo.iterations as u32,
        slices: geo.slices as u32,
        slice_len: geo.slice_len as u32,
        training: training as u32,
        centred: options.centred as u32,
        eps: options.eps,
        momentum: options.momentum,
        w_stride: w_stride as u32,
        w_offset: w_offset as u32,
        mu_stride: mu_stride as u32,
        mu_offset: 0,
        ln_eps: LAYER_NORM_EPS,
        block_samples: geo.block_samples as u32,
        blocks: geo.blocks as u32,
        hw_elems: geo.hw() as u32,
    }
}

const R: Binding = Binding::Read;
const RW: Binding = Binding::ReadWrite;
const U: Binding = Binding::Uniform;

fn kernel(shader: &'static str, bindings: &'static [Binding]) -> KernelSpec {
    KernelSpec::new(shader, shader, bindings)
}

/// One of the reweighting MLP's per-sample kernels, with as many threads as the wider of
/// its layers rounds up to (8 to 256): a workgroup no wider than its work passes its
/// barriers quickly where a CPU runs the threads in turn.
fn mlp_kernel(shader: &'static str, bindings: &'static [Binding], geo: &CeGeometry) -> KernelSpec {
    let threads = geo.c.max(geo.hidden).next_power_of_two().clamp(8, 256);
    kernel(shader, bindings).with("WG", threads as f64)
}

/// One of the passes over every element that work in Elems (`ce_apply`, `ce_input_grad`):
/// the vec4 variant `shader4` with 4 positions per thread when H·W is a multiple of 4,
/// with its parameters and the workgroups to dispatch (runs of 128 Elems per group, two per
/// thread).
fn per_element_pass(
    gpu: &Gpu,
    [shader, shader4]: [&'static str; 2],
    bindings: &'static [Binding],
    geo: &CeGeometry,
    mut p: Params,
) -> (KernelSpec, Params, [u32; 3]) {
    const THREADS: usize = 64;
    let name = if geo.hw().is_multiple_of(4) {
        p.hw_elems = (geo.hw() / 4) as u32;
        shader4
    } else {
        shader
    };
    let spec = KernelSpec::new(name, shader, bindings).with("D", geo.d as f64);
    let chunks = (geo.n * p.hw_elems as usize).div_ceil(2 * THREADS);
    (spec, p, grid(gpu, (geo.groups * chunks) as u32))
}

/// An entry point of `ce_stats.wgsl`, specialised for the group size `d`, in its vec4
/// variant `ce_stats4` when H·W is a multiple of 4 (then `p.hw_elems` counts vec4s).
fn stats_kernel(entry: &'static str, geo: &CeGeometry, p: &mut Params) -> KernelSpec {
    let shader = if geo.unit_threads {
        p.hw_elems = (geo.hw() / 4) as u32;
        "ce_stats_units"
    } else if geo.hw().is_multiple_of(4) {
        p.hw_elems = (geo.hw() / 4) as u32;
        "ce_stats4"
    } else {
        "ce_stats"
    };
    KernelSpec::new(shader, entry, &[R, R, RW, U]).with("D", geo.d as f64)
}

fn check_saved(gpu: &Gpu, state: &CeState, x: &Tensor, saved: &CeSaved) -> Result<CeGeometry> {
    state.check_tensors()?;
    expect_nchw(OP, "input", x)?;
    let geo = state.geometry_for(x.shape(), gpu.tuning())?;
    if geo != saved.geometry {
        let s = saved.geometry;
        return Err(Error::shape(
            OP,
            "saved buffers (sized for another input)",
            x.shape(),
            &[s.n, s.c, s.h, s.w],
        ));
    }
    Ok(geo)
}

/// The passes both modes share: statistics of X, the reweighting MLP, κ and λ.
fn record_reweight(
    rec: &mut Recorder,
    state: &CeState,
    x: &Tensor,
    saved: &CeSaved,
    p: &Params,
) -> Result<()> {
    let geo = saved.geometry;
    let mut stats_params = *p;
    rec.dispatch(
        &stats_kernel("forward", &geo, &mut stats_params),
        &[x.buffer(), x.buffer(), saved.partials.buffer()],
        Some(&stats_params),
        grid(rec.gpu(), geo.stats_workgroups() as u32),
    )?;
    rec.dispatch(
        &kernel("ce_combine_forward", &[R, RW, RW, U]),
        &[
            saved.partials.buffer(),
            saved.sample_stats.buffer(),
            saved.block_stats.buffer(),
        ],
        Some(p),
        grid(rec.gpu(), (geo.groups * geo.blocks) as u32),
    )?;
    if p.training == 1 {
        rec.dispatch(
            &kernel("ce_newton_forward", &[R, RW, RW, RW, U]),
            &[
                saved.block_stats.buffer(),
                saved.group_stats.buffer(),
                state.running_wm.buffer(),
                state.running_mean.buffer(),
            ],
            Some(p),
            [geo.groups as u32, 1, 1],
        )?;
    }
    rec.dispatch(
        &mlp_kernel("ce_reweight_forward", &[R, R, R, R, RW, U], &geo),
        &[
            state.w1.buffer(),
            state.gamma_ln.buffer(),
            state.beta_ln.buffer(),
            state.w2.buffer(),
            saved.sample_stats.buffer(),
        ],
        Some(p),
        grid(rec.gpu(), geo.n as u32),
    )?;
    rec.dispatch(
        &kernel("ce_scale", &[R, R, RW, RW, U]),
        &[
            saved.sample_stats.buffer(),
            state.theta.buffer(),
            state.running_scale.buffer(),
            saved.scalars.buffer(),
        ],
        Some(p),
        [1, 1, 1],
    )
}

fn record_apply(
    rec: &mut Recorder,
    x: &Tensor,
    matrix: &Tensor,
    mean: &Tensor,
    saved: &CeSaved,
    y: &Tensor,
    p: &Params,
) -> Result<()> {
    let geo = saved.geometry;
    let (spec, p, groups) = per_element_pass(
        rec.gpu(),
        ["ce_apply", "ce_apply4"],
        &[R, R, R, R, R, RW, U],
        &geo,
        *p,
    );
    rec.dispatch(
        &spec,
        &[
            x.buffer(),
            matrix.buffer(),
            mean.buffer(),
            saved.sample_stats.buffer(),
            saved.scalars.buffer(),
            y.buffer(),
        ],
        Some(&p),
        groups,
    )
}

/// Records a training-mode forward pass `y = CE(x)` with batch statistics, the running
/// statistics' momentum update, and the intermediates backward needs into `saved`.
pub fn ce_forward_train_into(
    rec: &mut Recorder,
    state: &mut CeState,
    x: &Tensor,
    y: &Tensor,
    saved: &mut CeSaved,
) -> Result<()> {
    let geo = check_saved(rec.gpu(), state, x, saved)?;
    expect_shape(OP, "output", y, x.shape())?;
    let p = params(&geo, &state.options, CeMode::Training);
    record_reweight(rec, state, x, saved, &p)?;
    record_apply(rec, x, &saved.group_stats, &saved.group_stats, saved, y, &p)?;
    saved.mode = Some(CeMode::Training);
    state.trained_steps += 1;
    Ok(())
}

/// Records an evaluation-mode forward pass: running_wm (and running_mean when centred)
/// for the decorrelation, running_scale for κ. `saved` serves as scratch.
pub fn ce_forward_eval_into(
    rec: &mut Recorder,
    state: &CeState,
    x: &Tensor,
    y: &Tensor,
    saved: &mut CeSaved,
) -> Result<()> {
    let geo = check_saved(rec.gpu(), state, x, saved)?;
    expect_shape(OP, "output", y, x.shape())?;
    if state.trained_steps == 0 {
        return Err(Error::invalid(
            OP,
            "evaluation needs running statistics, but this block has never run a training \
             forward pass (running_scale = 0 would divide by zero); train it first, or set \
             trained_steps after loading a checkpoint",
        ));
    }
    let p = params(&geo, &state.options, CeMode::Evaluation);
    record_reweight(rec, state, x, saved, &p)?;
    record_apply(rec, x, &state.running_wm, &state.running_mean, saved, y, &p)?;
    saved.mode = Some(CeMode::Evaluation);
    Ok(())
}

/// Records the backward pass of the training forward pass that filled `saved`, for upstream
/// gradient `dy`, writing every gradient in `grads` (overwritten, not accumulated).
pub fn ce_backward_into(
    rec: &mut Recorder,
    state: &CeState,
    x: &Tensor,
    dy: &Tensor,
    saved: &CeSaved,
    grads: &CeGrads,
) -> Result<()> {
    let geo = check_saved(rec.gpu(), state, x, saved)?;
    if saved.mode != Some(CeMode::Training) {
        return Err(Error::invalid(
            OP,
            "backward needs the intermediates of a training forward pass, but the saved \
             buffers hold none",
        ));
    }
    expect_shape(OP, "upstream gradient", dy, x.shape())?;
    expect_shape(OP, "input gradient", &grads.x, x.shape())?;
    expect_shape(OP, "x_weight gradient", &grads.theta, &[1])?;
    expect_shape(
        OP,
        "AR.fc.0.weight gradient",
        &grads.w1,
        &[geo.hidden, geo.c],
    )?;
    expect_shape(
        OP,
        "AR.fc.1.weight gradient",
        &grads.gamma_ln,
        &[geo.hidden],
    )?;
    expect_shape(OP, "AR.fc.1.bias gradient", &grads.beta_ln, &[geo.hidden])?;
    expect_shape(
        OP,
        "AR.fc.3.weight gradient",
        &grads.w2,
        &[geo.c, geo.hidden],
    )?;

    let p = params(&geo, &state.options, CeMode::Training);
    let gpu = rec.gpu();
    let mut stats_params = p;
    rec.dispatch(
        &stats_kernel("backward", &geo, &mut stats_params),
        &[x.buffer(), dy.buffer(), saved.partials.buffer()],
        Some(&stats_params),
        grid(gpu, geo.stats_workgroups() as u32),
    )?;
    rec.dispatch(
        &kernel("ce_combine_backward", &[R, RW, RW, U]),
        &[
            saved.partials.buffer(),
            saved.ar_grad.buffer(),
            saved.block_stats.buffer(),
        ],
        Some(&p),
        grid(gpu, (geo.groups * geo.blocks) as u32),
    )?;
    rec.dispatch(
        &kernel("ce_newton_backward", &[R, R, R, RW, U]),
        &[
            saved.block_stats.buffer(),
            saved.group_stats.buffer(),
            saved.scalars.buffer(),
            saved.bd_grad.buffer(),
        ],
        Some(&p),
        [geo.groups as u32, 1, 1],
    )?;
    rec.dispatch(
        &mlp_kernel("ce_reweight_backward", &[R, R, R, R, R, R, RW, U], &geo),
        &[
            saved.sample_stats.buffer(),
            state.w1.buffer(),
            state.w2.buffer(),
            state.gamma_ln.buffer(),
            state.beta_ln.buffer(),
            saved.scalars.buffer(),
            saved.ar_grad.buffer(),
        ],
        Some(&p),
        grid(gpu, geo.n as u32),
    )?;
    let weight_outputs = 2 * geo.hidden * geo.c + 2 * geo.hidden;
    rec.dispatch(
        &kernel("ce_weight_grad", &[R, R, RW, RW, RW, RW, U]),
        &[
            saved.ar_grad.buffer(),
            saved.sample_stats.buffer(),
            grads.w1.buffer(),
            grads.w2.buffer(),
            grads.gamma_ln.buffer(),
            grads.beta_ln.buffer(),
        ],
        Some(&p),
        grid(gpu, weight_outputs.div_ceil(WEIGHT_GRAD_OUTPUTS) as u32),
    )?;
    rec.dispatch(
        &kernel("ce_backward_scalars", &[R, R, RW, RW, U]),
        &[
            saved.ar_grad.buffer(),
            saved.bd_grad.buffer(),
            saved.scalars.buffer(),
            grads.theta.buffer(),
        ],
        Some(&p),
        [1, 1, 1],
    )?;
    let (spec, p, groups) = per_element_pass(
        gpu,
        ["ce_input_grad", "ce_input_grad4"],
        &[R, R, R, R, R, R, RW, U],
        &geo,
        p,
    );
    rec.dispatch(
        &spec,
        &[
            x.buffer(),
            dy.buffer(),
            saved.bd_grad.buffer(),
            saved.sample_stats.buffer(),
            saved.ar_grad.buffer(),
            saved.scalars.buffer(),
            grads.x.buffer(),
        ],
        Some(&p),
        groups,
    )
}

/// Training-mode forward pass, submitted at once: the output and the saved intermediates.
pub fn ce_forward_train(gpu: &Gpu, state: &mut CeState, x: &Tensor) -> Result<(Tensor, CeSaved)> {
    let mut saved = CeSaved::new(gpu, state, x.shape())?;
    let y = Tensor::uninit(gpu, x.shape(), DType::F32, "ce output")?;
    let mut rec = Recorder::new(gpu);
    ce_forward_train_into(&mut rec, state, x, &y, &mut saved)?;
    rec.submit()?;
    Ok((y, saved))
}

/// Evaluation-mode forward pass, submitted at once.
pub fn ce_forward_eval(gpu: &Gpu, state: &CeState, x: &Tensor) -> Result<Tensor> {
    let mut saved = CeSaved::new(gpu, state, x.shape())?;
    let y = Tensor::uninit(gpu, x.shape(), DType::F32, "ce output")?;
    let mut rec = Recorder::new(gpu);
    ce_forward_eval_into(&mut rec, state, x, &y, &mut saved)?;
    rec.submit()?;
    Ok(y)
}

/// Backward pass, submitted at once: every gradient.
pub fn ce_backward(
    gpu: &Gpu,
    state: &CeState,
    x: &Tensor,
    dy: &Tensor,
    saved: &CeSaved,
) -> Result<CeGrads> {
    let grads = CeGrads::new(gpu, state, x.shape())?;
    let mut rec = Recorder::new(gpu);
    ce_backward_into(&mut rec, state, x, dy, saved, &grads)?;
    rec.submit()?;
    Ok(grads)
}
