// dX of CE in one pass over X and dY. For sample n, group g and position hw, with the
// group's K = λ Wmᵀ, B = (dΣ + dΣᵀ)/m, μ and offset c from ce_newton_backward:
//     dx_i = Σ_k K_ik dy_k + Σ_k B_ik (x_k − μ_k) + c_i
//          + ((1 − λ)/κ) s[n, c] dy_i + dv[n, c] · 2 (x_i − x̄[n, c]) / (H·W − 1),
// where c = g·d + i and dv includes κ's term (scalars[2]). As in ce_apply, one workgroup
// per group and run of 64 quads of 4 consecutive positions of one plane, one thread per
// quad: each entry of K and B it reads serves 4 multiply-adds.
//
// x, dy, dx:    [N, C, H·W] row-major
// bd_grad:      [G, 2d² + 2d + 1]: K, B, μ, c, ..
// sample_stats: [N, 3C + C/r + 1]: v, x̄, s, ..
// ar_grad:      [N, 3C + 4C/r + 1]: E, dv, ..
// scalars:      [4]: κ, λ, dκ/(2κNC), unused

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
@group(0) @binding(1) var<storage, read> dy: array<f32>;
@group(0) @binding(2) var<storage, read> bd_grad: array<f32>;
@group(0) @binding(3) var<storage, read> sample_stats: array<f32>;
@group(0) @binding(4) var<storage, read> ar_grad: array<f32>;
@group(0) @binding(5) var<storage, read> scalars: array<f32>;
@group(0) @binding(6) var<storage, read_write> dx: array<f32>;
@group(0) @binding(7) var<uniform> p: Params;

// The group size d (p.d), fixed per pipeline so that the loops over channels unroll and
// the per-thread channel arrays live in registers.
override D: u32 = 16u;
const WG: u32 = 64u;

var<workgroup> kmat: array<f32, 256>;
var<workgroup> bmat: array<f32, 256>;
var<workgroup> mu: array<f32, 16>;
var<workgroup> offset: array<f32, 16>;

// Positions pos..pos + 3 of a plane of x (from_x) or dy at `at`, zero past the plane.
// Written out: a software rasteriser would index the vector lane by lane in a loop.
fn load_quad(from_x: bool, at: u32, left: u32) -> vec4<f32> {
    var v = vec4<f32>(element(from_x, at), 0.0, 0.0, 0.0);
    if (left > 1u) {
        v.y = element(from_x, at + 1u);
    }
    if (left > 2u) {
        v.z = element(from_x, at + 2u);
    }
    if (left > 3u) {
        v.w = element(from_x, at + 3u);
    }
    return v;
}

fn element(from_x: bool, at: u32) -> f32 {
    if (from_x) {
        return x[at];
    }
    return dy[at];
}

@compute @workgroup_size(64)
fn ce_input_grad(@builtin(workgroup_id) wid: vec3<u32>,
                 @builtin(local_invocation_index) lid: u32,
                 @builtin(num_workgroups) nwg: vec3<u32>) {
    let plane_quads = (p.hw + 3u) / 4u;
    let chunks = (p.n * plane_quads + WG - 1u) / WG;
    let linear = wid.y * nwg.x + wid.x;
    let g = linear / chunks;
    if (g >= p.groups) {
        return;
    }
    let dd = D * D;
    let bo = g * (2u * dd + 2u * D + 1u);
    for (var t = lid; t < dd; t += WG) {
        kmat[t] = bd_grad[bo + t];
        bmat[t] = bd_grad[bo + dd + t];
    }
    if (lid < D) {
        mu[lid] = bd_grad[bo + 2u * dd + lid];
        offset[lid] = bd_grad[bo + 2u * dd + D + lid];
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
    var gs: array<vec4<f32>, 16>;
    var centred: array<vec4<f32>, 16>;
    for (var k = 0u; k < D; k += 1u) {
        xs[k] = load_quad(true, base + k * p.hw, left);
        gs[k] = load_quad(false, base + k * p.hw, left);
        centred[k] = xs[k] - mu[k];
    }
    let kappa = scalars[0];
    let lam = scalars[1];
    let dv_kappa = scalars[2];
    let reweight = (1.0 - lam) / kappa;
    let var_scale = 2.0 / f32(p.hw - 1u);
    let ss = n * (3u * p.c + p.hidden + 1u) + g * D;
    let ag = n * (3u * p.c + 4u * p.hidden + 1u) + p.c + g * D;
    for (var i = 0u; i < D; i += 1u) {
        var acc = vec4<f32>(offset[i]);
        for (var k = 0u; k < D; k += 1u) {
            acc += kmat[i * D + k] * gs[k] + bmat[i * D + k] * centred[k];
        }
        let s = sample_stats[ss + 2u * p.c + i];
        let xbar = sample_stats[ss + p.c + i];
        let dv = ar_grad[ag + i] + dv_kappa;
        acc += (reweight * s) * gs[i] + (dv * var_scale) * (xs[i] - xbar);
        let at = base + i * p.hw;
        dx[at] = acc.x;
        if (left > 1u) {
            dx[at + 1u] = acc.y;
        }
        if (left > 2u) {
            dx[at + 2u] = acc.z;
        }
        if (left > 3u) {
            dx[at + 3u] = acc.w;
        }
    }
}
