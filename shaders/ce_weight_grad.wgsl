// Gradients of the reweighting MLP's weights, summing the per-sample pieces written by
// ce_reweight_backward over the batch. Each workgroup owns 16 consecutive outputs of the
// list [dW1 | dW2 | dγ | dβ]; 16 lanes per output split the samples, then add up:
//     dW1[f, c] = Σ_n dh[n, f] v[n, c];   dW2[c, f] = Σ_n dz[n, c] a[n, f];
//     dγ[f] = Σ_n dhl[n, f] ĥ[n, f];      dβ[f] = Σ_n dhl[n, f].
//
// ar_grad:      [N, 3C + 4C/r + 1]: E, dv, dz (C each), a, dh, dhl, dhl·ĥ (C/r each), q
// sample_stats: [N, 3C + C/r + 1], v in the first C entries of each row
// dw1: [C/r, C];  dw2: [C, C/r];  dgamma, dbeta: [C/r]

// #include ce_params.wgsl

@group(0) @binding(0) var<storage, read> ar_grad: array<f32>;
@group(0) @binding(1) var<storage, read> sample_stats: array<f32>;
@group(0) @binding(2) var<storage, read_write> dw1: array<f32>;
@group(0) @binding(3) var<storage, read_write> dw2: array<f32>;
@group(0) @binding(4) var<storage, read_write> dgamma: array<f32>;
@group(0) @binding(5) var<storage, read_write> dbeta: array<f32>;
@group(0) @binding(6) var<uniform> p: Params;

const OUTPUTS: u32 = 16u;   // outputs per workgroup
const LANES: u32 = 16u;     // threads sharing one output's sum over the batch

var<workgroup> red: array<f32, 256>;

@compute @workgroup_size(256)
fn ce_weight_grad(@builtin(workgroup_id) wid: vec3<u32>,
                  @builtin(local_invocation_index) lid: u32,
                  @builtin(num_workgroups) nwg: vec3<u32>) {
    let o = (wid.y * nwg.x + wid.x) * OUTPUTS + lid % OUTPUTS;
    let lane = lid / OUTPUTS;
    let c_n = p.c;
    let hidden = p.hidden;
    let ag_stride = 3u * c_n + 4u * hidden + 1u;
    let ss_stride = 3u * c_n + hidden + 1u;
    let weights = hidden * c_n;
    let total = 2u * weights + 2u * hidden;

    // Where output o reads its two factors per sample (the second is 1 for dγ and dβ).
    var first = 0u;
    var second = 0u;
    var in_sample_stats = false;
    var single = false;
    if (o < weights) {
        first = 3u * c_n + hidden + o / c_n;       // dh[f]
        second = o % c_n;                          // v[c] in sample_stats
        in_sample_stats = true;
    } else if (o < 2u * weights) {
        first = 2u * c_n + (o - weights) / hidden; // dz[c]
        second = 3u * c_n + (o - weights) % hidden; // a[f]
    } else if (o < total) {
        let f = (o - 2u * weights) % hidden;
        let is_beta = o - 2u * weights >= hidden;
        first = select(3u * c_n + 3u * hidden, 3u * c_n + 2u * hidden, is_beta) + f;
        single = true;
    }
    var acc = 0.0;
    if (o < total) {
        for (var n = lane; n < p.n; n += LANES) {
            let a = ar_grad[n * ag_stride + first];
            var b = 1.0;
            if (in_sample_stats) {
                b = sample_stats[n * ss_stride + second];
            } else if (!single) {
                b = ar_grad[n * ag_stride + second];
            }
            acc += a * b;
        }
    }
    red[lid] = acc;
    workgroupBarrier();
    if (lane == 0u && o < total) {
        var sum = 0.0;
        for (var l = 0u; l < LANES; l += 1u) {
            sum += red[l * OUTPUTS + lid];
        }
        if (o < weights) {
            dw1[o] = sum;
        } else if (o < 2u * weights) {
            dw2[o - weights] = sum;
        } else if (o - 2u * weights < hidden) {
            dgamma[o - 2u * weights] = sum;
        } else {
            dbeta[o - 2u * weights - hidden] = sum;
        }
    }
}
