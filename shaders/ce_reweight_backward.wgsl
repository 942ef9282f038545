// Backward through the CE reweighting MLP, one workgroup per sample n. With
// E[n, c] = Σ_hw dY·X (from ce_newton_backward), ds = (1 − λ) E / κ:
//     dz = ds ⊙ s ⊙ (1 − s);  da = W2ᵀ dz;  dhl = da ⊙ [γ ĥ + β > 0];
//     dĥ = dhl ⊙ γ;  dh = (dĥ − mean dĥ − ĥ · mean(dĥ ⊙ ĥ)) / σ_h;
//     dv = W1ᵀ dh  (κ's term is added later).
// The per-sample pieces of the weight gradients (dz, a, dh, dhl, dhl·ĥ) and q = Σ_c E·s
// (for dκ and dθ) are written for ce_weight_grad and ce_backward_scalars.
//
// sample_stats: [N, 3C + C/r + 1]: v, x̄, s, ĥ, 1/σ_h
// w1: [C/r, C];  w2: [C, C/r];  gamma, beta: [C/r]
// scalars:      [4]: κ, λ, ..
// ar_grad:      [N, 3C + 4C/r + 1]: E, dv, dz (C each), a, dh, dhl, dhl·ĥ (C/r each), q

// #include ce_params.wgsl

@group(0) @binding(0) var<storage, read> sample_stats: array<f32>;
@group(0) @binding(1) var<storage, read> w1: array<f32>;
@group(0) @binding(2) var<storage, read> w2: array<f32>;
@group(0) @binding(3) var<storage, read> gamma: array<f32>;
@group(0) @binding(4) var<storage, read> beta: array<f32>;
@group(0) @binding(5) var<storage, read> scalars: array<f32>;
@group(0) @binding(6) var<storage, read_write> ar_grad: array<f32>;
@group(0) @binding(7) var<uniform> p: Params;

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
fn ce_reweight_backward(@builtin(workgroup_id) wid: vec3<u32>,
                        @builtin(local_invocation_index) lid: u32,
                        @builtin(num_workgroups) nwg: vec3<u32>) {
    let n = wid.y * nwg.x + wid.x;
    if (n >= p.n) {
        return;
    }
    let c_n = p.c;
    let hidden = p.hidden;
    let ss = n * (3u * c_n + hidden + 1u);
    let ss_hhat = ss + 3u * c_n;
    let ag = n * (3u * c_n + 4u * hidden + 1u);
    let ag_dv = ag + c_n;
    let ag_dz = ag + 2u * c_n;
    let ag_a = ag + 3u * c_n;
    let ag_dh = ag_a + hidden;
    let ag_dhl = ag_dh + hidden;
    let ag_dhlh = ag_dhl + hidden;
    let kappa = scalars[0];
    let lam = scalars[1];

    var q = 0.0;
    for (var c = lid; c < c_n; c += WG) {
        let e = ar_grad[ag + c];
        let s = sample_stats[ss + 2u * c_n + c];
        let ds = (1.0 - lam) * e / kappa;
        ar_grad[ag_dz + c] = ds * s * (1.0 - s);
        q += e * s;
    }
    q = workgroup_sum(lid, q);
    if (lid == 0u) {
        ar_grad[ag + 3u * c_n + 4u * hidden] = q;
    }
    storageBarrier();

    var sum_dhhat = 0.0;
    var sum_dhhat_hhat = 0.0;
    for (var f = lid; f < hidden; f += WG) {
        let hhat = sample_stats[ss_hhat + f];
        let hl = gamma[f] * hhat + beta[f];
        var da = 0.0;
        for (var c = 0u; c < c_n; c += 1u) {
            da += ar_grad[ag_dz + c] * w2[c * hidden + f];
        }
        let dhl = select(0.0, da, hl > 0.0);
        let dhhat = dhl * gamma[f];
        ar_grad[ag_a + f] = max(hl, 0.0);
        ar_grad[ag_dhl + f] = dhl;
        ar_grad[ag_dhlh + f] = dhl * hhat;
        ar_grad[ag_dh + f] = dhhat;
        sum_dhhat += dhhat;
        sum_dhhat_hhat += dhhat * hhat;
    }
    let mean1 = workgroup_sum(lid, sum_dhhat) / f32(hidden);
    let mean2 = workgroup_sum(lid, sum_dhhat_hhat) / f32(hidden);
    let inv_std = sample_stats[ss_hhat + hidden];
    for (var f = lid; f < hidden; f += WG) {
        let hhat = sample_stats[ss_hhat + f];
        ar_grad[ag_dh + f] = (ar_grad[ag_dh + f] - mean1 - hhat * mean2) * inv_std;
    }
    storageBarrier();

    for (var c = lid; c < c_n; c += WG) {
        var dv = 0.0;
        for (var f = 0u; f < hidden; f += 1u) {
            dv += ar_grad[ag_dh + f] * w1[f * c_n + c];
        }
        ar_grad[ag_dv + c] = dv;
    }
}
