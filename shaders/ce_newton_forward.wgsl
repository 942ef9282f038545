// Second level of the CE statistics and the Newton–Schulz whitening, one workgroup per
// group g, one thread per entry (i, k) of the d×d matrices:
// 1. combine the per-block partials of ce_combine_forward with Chan's formula into the
//    group mean μ and Σ = co-moment / m + εI (m = N·H·W);
// 2. S = Σ / tr Σ, P₀ = I, P_{k+1} = 1.5 P_k − 0.5 P_k³ S for k < T, in workgroup memory;
// 3. the applied matrix Wm = P_T (or P_T / sqrt(tr Σ) in the centred variant), and the
//    running statistics: running_wm ← (1 − momentum) running_wm + momentum Wm, likewise
//    running_mean with μ.
//
// block_stats:  [G, blocks, d + d²]: block means, then block co-moments
// group_stats:  [G, d + (T + 2) d²]: μ, Σ, P_1 .. P_T, Wm (all d×d row-major)
// running_wm:   [G, d, d]
// running_mean: [G, d]

// #include ce_params.wgsl

@group(0) @binding(0) var<storage, read> block_stats: array<f32>;
@group(0) @binding(1) var<storage, read_write> group_stats: array<f32>;
@group(0) @binding(2) var<storage, read_write> running_wm: array<f32>;
@group(0) @binding(3) var<storage, read_write> running_mean: array<f32>;
@group(0) @binding(4) var<uniform> p: Params;

var<workgroup> mat_s: array<f32, 256>;
var<workgroup> mat_p: array<f32, 256>;
var<workgroup> mat_p2: array<f32, 256>;
var<workgroup> mat_p3: array<f32, 256>;

@compute @workgroup_size(256)
fn ce_newton_forward(@builtin(workgroup_id) wid: vec3<u32>,
                     @builtin(local_invocation_index) lid: u32) {
    let g = wid.x;
    if (g >= p.groups) {
        return;
    }
    let d = p.d;
    let dd = d * d;
    let in_matrix = lid < dd;
    let e = min(lid, dd - 1u);
    let i = e / d;
    let k = e % d;
    let unit_stride = d + dd;

    // Chan's combination over the blocks of this group. Each thread keeps its own copy of
    // the two running means it needs.
    var cnt = 0.0;
    var mi = 0.0;
    var mk = 0.0;
    var m2 = 0.0;
    if (in_matrix) {
        for (var b = 0u; b < p.blocks; b += 1u) {
            let off = (g * p.blocks + b) * unit_stride;
            let samples = min(p.block_samples, p.n - b * p.block_samples);
            let nb = f32(samples * p.hw);
            let total = cnt + nb;
            let di = block_stats[off + i] - mi;
            let dk = block_stats[off + k] - mk;
            m2 += block_stats[off + d + e] + di * dk * (cnt * nb / total);
            mi += di * (nb / total);
            mk += dk * (nb / total);
            cnt = total;
        }
    }
    var sigma = m2 / cnt;
    if (i == k) {
        sigma += p.eps;
    }
    if (in_matrix) {
        mat_p3[e] = sigma;
    }
    workgroupBarrier();
    var trace = 0.0;
    for (var j = 0u; j < d; j += 1u) {
        trace += mat_p3[j * d + j];
    }
    let r = 1.0 / trace;

    let gs = g * (d + (p.iterations + 2u) * dd);
    if (in_matrix) {
        group_stats[gs + d + e] = sigma;
        if (i == k) {
            group_stats[gs + i] = mi;
            let rm = g * d + i;
            running_mean[rm] = (1.0 - p.momentum) * running_mean[rm] + p.momentum * mi;
        }
        mat_s[e] = sigma * r;
        mat_p[e] = select(0.0, 1.0, i == k);
    }
    workgroupBarrier();

    for (var it = 0u; it < p.iterations; it += 1u) {
        if (in_matrix) {
            var acc = 0.0;
            for (var j = 0u; j < d; j += 1u) {
                acc += mat_p[i * d + j] * mat_p[j * d + k];
            }
            mat_p2[e] = acc;
        }
        workgroupBarrier();
        if (in_matrix) {
            var acc = 0.0;
            for (var j = 0u; j < d; j += 1u) {
                acc += mat_p2[i * d + j] * mat_p[j * d + k];
            }
            mat_p3[e] = acc;
        }
        workgroupBarrier();
        var next = 0.0;
        if (in_matrix) {
            var acc = 0.0;
            for (var j = 0u; j < d; j += 1u) {
                acc += mat_p3[i * d + j] * mat_s[j * d + k];
            }
            next = 1.5 * mat_p[e] - 0.5 * acc;
        }
        workgroupBarrier();
        if (in_matrix) {
            mat_p[e] = next;
            group_stats[gs + d + (1u + it) * dd + e] = next;
        }
        workgroupBarrier();
    }

    if (in_matrix) {
        var wm = mat_p[e];
        if (p.centred == 1u) {
            wm *= sqrt(r);
        }
        group_stats[gs + d + (1u + p.iterations) * dd + e] = wm;
        let rw = g * dd + e;
        running_wm[rw] = (1.0 - p.momentum) * running_wm[rw] + p.momentum * wm;
    }
}
