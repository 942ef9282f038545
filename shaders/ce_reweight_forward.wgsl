// The reweighting MLP of CE, one workgroup per sample n: from v[n, ·], the unbiased
// spatial variance written by ce_combine_forward, h = W1 v (no bias), a layer norm over the
// C/r features (biased variance, eps ln_eps) giving ĥ, a = ReLU(γ ĥ + β), and
// s = sigmoid(W2 a). Intermediate values live in this sample's row of sample_stats;
// storageBarrier makes one thread's writes visible to the others before they are read.
//
// w1:           [C/r, C]
// gamma, beta:  [C/r]
// w2:           [C, C/r]
// sample_stats: [N, 3C + C/r + 1]: v (C), x̄ (C), s (C), ĥ (C/r), 1/σ of the layer norm

// #include ce_params.wgsl

@group(0) @binding(0) var<storage, read> w1: array<f32>;
@group(0) @binding(1) var<storage, read> gamma: array<f32>;
@group(0) @binding(2) var<storage, read> beta: array<f32>;
@group(0) @binding(3) var<storage, read> w2: array<f32>;
@group(0) @binding(4) var<storage, read_write> sample_stats: array<f32>;
@group(0) @binding(5) var<uniform> p: Params;

// Threads: a power of two from 8 to 256, set by the host to fit the widest layer.
override WG: u32 = 256u;

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

@compute @workgroup_size(WG)
fn ce_reweight_forward(@builtin(workgroup_id) wid: vec3<u32>,
                       @builtin(local_invocation_index) lid: u32,
                       @builtin(num_workgroups) nwg: vec3<u32>) {
    let n = wid.y * nwg.x + wid.x;
    if (n >= p.n) {
        return;
    }
    let c_n = p.c;
    let hidden = p.hidden;
    let row = n * (3u * c_n + hidden + 1u);
    let off_hhat = row + 3u * c_n;

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
