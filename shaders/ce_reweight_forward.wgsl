// The reweighting branch of CE, one workgroup per sample n:
// 1. per channel c, the spatial mean x̄[n,c] and unbiased variance v[n,c] (co-moment /
//    (H·W − 1)), combining the slice partials of ce_stats_forward with Chan's formula;
// 2. h = W1 v (no bias), layer norm over the C/r features (biased variance, eps ln_eps)
//    giving ĥ, a = ReLU(γ ĥ + β), s = sigmoid(W2 a).
// Intermediate values live in this sample's row of sample_stats; storageBarrier makes one
// thread's writes visible to the others before they are read.
//
// partials:     [N, G, S, d + d²] slice means, then co-moments
// w1:           [C/r, C]
// gamma, beta:  [C/r]
// w2:           [C, C/r]
// sample_stats: [N, 3C + C/r + 1]: v (C), x̄ (C), s (C), ĥ (C/r), 1/σ of the layer norm

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

@group(0) @binding(0) var<storage, read> partials: array<f32>;
@group(0) @binding(1) var<storage, read> w1: array<f32>;
@group(0) @binding(2) var<storage, read> gamma: array<f32>;
@group(0) @binding(3) var<storage, read> beta: array<f32>;
@group(0) @binding(4) var<storage, read> w2: array<f32>;
@group(0) @binding(5) var<storage, read_write> sample_stats: array<f32>;
@group(0) @binding(6) var<uniform> p: Params;

const WG: u32 = 256u;

var<workgroup> red: array<f32, 256>;

fn workgroup_sum(lid: u32, value: f32) -> f32 {
    red[lid] = value;
    workgroupBarrier();
    for (var half = WG / 2u; half > 0u; half /= 2u) {
        if (lid < half) {
            red[lid] += red[lid + half];
        }
        workgroupBarrier();
    }
    let total = red[0];
    workgroupBarrier();
    return total;
}

@compute @workgroup_size(256)
fn ce_reweight_forward(@builtin(workgroup_id) wid: vec3<u32>,
                       @builtin(local_invocation_index) lid: u32,
                       @builtin(num_workgroups) nwg: vec3<u32>) {
    let n = wid.y * nwg.x + wid.x;
    if (n >= p.n) {
        return;
    }
    let c_n = p.c;
    let hidden = p.hidden;
    let d = p.d;
    let row = n * (3u * c_n + hidden + 1u);
    let off_hhat = row + 3u * c_n;

    for (var c = lid; c < c_n; c += WG) {
        let g = c / d;
        let i = c % d;
        var cnt = 0.0;
        var mean = 0.0;
        var m2 = 0.0;
        for (var s = 0u; s < p.slices; s += 1u) {
            let off = ((n * p.groups + g) * p.slices + s) * (d + d * d);
            let nb = f32(min(p.slice_len, p.hw - s * p.slice_len));
            let total = cnt + nb;
            let delta = partials[off + i] - mean;
            m2 += partials[off + d + i * d + i] + delta * delta * (cnt * nb / total);
            mean += delta * (nb / total);
            cnt = total;
        }
        sample_stats[row + c] = m2 / f32(p.hw - 1u);
        sample_stats[row + c_n + c] = mean;
    }
    storageBarrier();

    var h_sum = 0.0;
    for (var f = lid; f < hidden; f += WG) {
        var h = 0.0;
        for (var c = 0u; c < c_n; c += 1u) {
            h += w1[f * c_n + c] * sample_stats[row + c];
        }
        sample_stats[off_hhat + f] = h;
        h_sum += h;
    }
    let mean = workgroup_sum(lid, h_sum) / f32(hidden);
    var sq_sum = 0.0;
    for (var f = lid; f < hidden; f += WG) {
        let delta = sample_stats[off_hhat + f] - mean;
        sq_sum += delta * delta;
    }
    let inv_std = inverseSqrt(workgroup_sum(lid, sq_sum) / f32(hidden) + p.ln_eps);
    for (var f = lid; f < hidden; f += WG) {
        sample_stats[off_hhat + f] = (sample_stats[off_hhat + f] - mean) * inv_std;
    }
    if (lid == 0u) {
        sample_stats[off_hhat + hidden] = inv_std;
    }
    storageBarrier();

    for (var c = lid; c < c_n; c += WG) {
        var z = 0.0;
        for (var f = 0u; f < hidden; f += 1u) {
            let a = max(gamma[f] * sample_stats[off_hhat + f] + beta[f], 0.0);
            z += w2[c * hidden + f] * a;
        }
        sample_stats[row + 2u * c_n + c] = 1.0 / (1.0 + exp(-z));
    }
}
