// The CE output in one pass over X: for each sample n and group g the linear map
// M = λ·Wm + ((1 − λ)/κ)·diag(s[n, g·d .. g·d + d]) applied to the d channels at every
// position, y = λ·Wm·(x − μ₀) + ((1 − λ)/κ)·s ⊙ x, with μ₀ = 0 (released form) or the
// group mean (centred variant). Wm is P_T (training) or running_wm (evaluation).
//
// One workgroup per group and run of 64 quads, a quad being 4 consecutive positions of one
// sample's plane (the last quad of a plane may be short). A thread reads its quad's d
// channel values once, as d vec4s, and writes d vec4s of output: each matrix entry it
// reads serves 4 multiply-adds.
//
// x, y:         [N, C, H·W] row-major
// matrices:     group g's d×d matrix (row-major) at g·w_stride + w_offset
// means:        group g's d-vector at g·mu_stride + mu_offset (read only when centred)
// sample_stats: [N, 3C + C/r + 1], s at offset 2C of each row
// scalars:      [4]: κ, λ, ..

// Uniform parameters shared by every CE kernel (`Params` in src/kernels/ce.rs).
struct Params {
    n: u32,           // batch N
    c: u32,           // channels C
    hw: u32,          // positions per plane, H·W
    d: u32,           // group size d (≤ 16)
    groups: u32,      // G = C / d
    hidden: u32,      // C / reduction
    iterations: u32,  // Newton–Schulz steps T
    slices: u32,      // slices per (sample, group) in the statistics passes
    slice_len: u32,   // positions per slice (the last may be shorter)
    training: u32,    // 1: batch statistics, 0: running statistics
    centred: u32,     // 1: IterNorm-style P_T/sqrt(tr Σ)·(x − μ)
    eps: f32,         // ε added to the covariance diagonal
    momentum: f32,    // running-statistics momentum
    w_stride: u32,    // ce_apply: group g's matrix starts at g·w_stride + w_offset
    w_offset: u32,
    mu_stride: u32,   // ce_apply: group g's mean starts at g·mu_stride + mu_offset
    mu_offset: u32,
    ln_eps: f32,      // layer-norm epsilon of the reweighting MLP
    block_samples: u32, // samples per block of the combine passes
    blocks: u32,      // blocks per group, ceil(N / block_samples)
}

@group(0) @binding(0) var<storage, read> x: array<f32>;
@group(0) @binding(1) var<storage, read> matrices: array<f32>;
@group(0) @binding(2) var<storage, read> means: array<f32>;
@group(0) @binding(3) var<storage, read> sample_stats: array<f32>;
@group(0) @binding(4) var<storage, read> scalars: array<f32>;
@group(0) @binding(5) var<storage, read_write> y: array<f32>;
@group(0) @binding(6) var<uniform> p: Params;

// The group size d (p.d), fixed per pipeline so that the loops over channels unroll and
// the per-thread channel arrays live in registers.
override D: u32 = 16u;
const WG: u32 = 64u;

var<workgroup> wmat: array<f32, 256>;
var<workgroup> mu: array<f32, 16>;

// Positions pos..pos + 3 of plane `at` (the first position's index), zero past the plane.
// Written out: a software rasteriser would index the vector lane by lane in a loop.
fn load_quad(at: u32, left: u32) -> vec4<f32> {
    if (left >= 4u) {
        return vec4<f32>(x[at], x[at + 1u], x[at + 2u], x[at + 3u]);
    }
    var v = vec4<f32>(x[at], 0.0, 0.0, 0.0);
    if (left > 1u) {
        v.y = x[at + 1u];
    }
    if (left > 2u) {
        v.z = x[at + 2u];
    }
    return v;
}

@compute @workgroup_size(64)
fn ce_apply(@builtin(workgroup_id) wid: vec3<u32>,
            @builtin(local_invocation_index) lid: u32,
            @builtin(num_workgroups) nwg: vec3<u32>) {
    let plane_quads = (p.hw + 3u) / 4u;
    let chunks = (p.n * plane_quads + WG - 1u) / WG;
    let linear = wid.y * nwg.x + wid.x;
    let g = linear / chunks;
    if (g >= p.groups) {
        return;
    }
    let lam = scalars[1];
    for (var t = lid; t < D * D; t += WG) {
        wmat[t] = lam * matrices[g * p.w_stride + p.w_offset + t];
    }
    if (lid < D) {
        var centre = 0.0;
        if (p.centred == 1u) {
            centre = means[g * p.mu_stride + p.mu_offset + lid];
        }
        mu[lid] = centre;
    }
    workgroupBarrier();

    let quad = (linear % chunks) * WG + lid;
    if (quad >= p.n * plane_quads) {
        return;
    }
    let n = quad / plane_quads;
    let pos = 4u * (quad % plane_quads);
    let left = p.hw - pos;
    let base = (n * p.c + g * D) * p.hw + pos;
    var xs: array<vec4<f32>, 16>;
    var centred: array<vec4<f32>, 16>;
    for (var k = 0u; k < D; k += 1u) {
        xs[k] = load_quad(base + k * p.hw, left);
        centred[k] = xs[k] - mu[k];
    }
    let reweight = (1.0 - lam) / scalars[0];
    let s_row = n * (3u * p.c + p.hidden + 1u) + 2u * p.c + g * D;
    for (var i = 0u; i < D; i += 1u) {
        var acc = (reweight * sample_stats[s_row + i]) * xs[i];
        for (var k = 0u; k < D; k += 1u) {
            acc += wmat[i * D + k] * centred[k];
        }
        let at = base + i * p.hw;
        y[at] = acc.x;
        if (left > 1u) {
            y[at + 1u] = acc.y;
        }
        if (left > 2u) {
            y[at + 2u] = acc.z;
        }
        if (left > 3u) {
            y[at + 3u] = acc.w;
        }
    }
}
