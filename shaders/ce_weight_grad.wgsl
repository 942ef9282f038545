// Gradients of the reweighting MLP's weights, summing the per-sample pieces written by
// ce_reweight_backward over the batch; one thread per output element:
//     dW1[f, c] = Σ_n dh[n, f] v[n, c];   dW2[c, f] = Σ_n dz[n, c] a[n, f];
//     dγ[f] = Σ_n dhl[n, f] ĥ[n, f];      dβ[f] = Σ_n dhl[n, f].
//
// ar_grad:      [N, 3C + 4C/r + 1]: E, dv, dz (C each), a, dh, dhl, dhl·ĥ (C/r each), q
// sample_stats: [N, 3C + C/r + 1], v in the first C entries of each row
// dw1: [C/r, C];  dw2: [C, C/r];  dgamma, dbeta: [C/r]

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
}

@group(0) @binding(0) var<storage, read> ar_grad: array<f32>;
@group(0) @binding(1) var<storage, read> sample_stats: array<f32>;
@group(0) @binding(2) var<storage, read_write> dw1: array<f32>;
@group(0) @binding(3) var<storage, read_write> dw2: array<f32>;
@group(0) @binding(4) var<storage, read_write> dgamma: array<f32>;
@group(0) @binding(5) var<storage, read_write> dbeta: array<f32>;
@group(0) @binding(6) var<uniform> p: Params;

const WG: u32 = 256u;

@compute @workgroup_size(256)
fn ce_weight_grad(@builtin(workgroup_id) wid: vec3<u32>,
                  @builtin(local_invocation_index) lid: u32,
                  @builtin(num_workgroups) nwg: vec3<u32>) {
    let o = (wid.y * nwg.x + wid.x) * WG + lid;
    let c_n = p.c;
    let hidden = p.hidden;
    let ag_stride = 3u * c_n + 4u * hidden + 1u;
    let ss_stride = 3u * c_n + hidden + 1u;
    let weights = hidden * c_n;
    if (o < weights) {
        let f = o / c_n;
        let c = o % c_n;
        var acc = 0.0;
        for (var n = 0u; n < p.n; n += 1u) {
            acc += ar_grad[n * ag_stride + 3u * c_n + hidden + f] * sample_stats[n * ss_stride + c];
        }
        dw1[o] = acc;
    } else if (o < 2u * weights) {
        let c = (o - weights) / hidden;
        let f = (o - weights) % hidden;
        var acc = 0.0;
        for (var n = 0u; n < p.n; n += 1u) {
            let row = n * ag_stride;
            acc += ar_grad[row + 2u * c_n + c] * ar_grad[row + 3u * c_n + f];
        }
        dw2[o - weights] = acc;
    } else if (o < 2u * weights + 2u * hidden) {
        let f = (o - 2u * weights) % hidden;
        let is_beta = o - 2u * weights >= hidden;
        let slot = select(3u * c_n + 3u * hidden, 3u * c_n + 2u * hidden, is_beta) + f;
        var acc = 0.0;
        for (var n = 0u; n < p.n; n += 1u) {
            acc += ar_grad[n * ag_stride + slot];
        }
        if (is_beta) {
            dbeta[f] = acc;
        } else {
            dgamma[f] = acc;
        }
    }
}
