// The d×d part of the CE backward, one workgroup per group g, one thread per entry (i, k):
// 1. sum the per-block sums of ce_combine_backward into D = Σ_j dY_j x_jᵀ and the row
//    sums of dY;
// 2. Ā_T = λ·D_in with D_in = D (released form) or D − (Σ dY) μᵀ (centred, where it is
//    also scaled by sqrt(r) and feeds dr); backward through the T Newton–Schulz steps
//        dS += −0.5 (P_k³)ᵀ Ā_{k+1};
//        Ā_k = 1.5 Ā_{k+1}
//              − 0.5 (Ā_{k+1}(P_k² S)ᵀ + P_kᵀ Ā_{k+1} (P_k S)ᵀ
//                     + (P_k²)ᵀ Ā_{k+1} Sᵀ)
//    then r = 1/tr Σ, dr = ⟨dS, Σ⟩, dΣ = r dS − r² dr I;
// 3. the per-group pieces of the fused dX pass: K = λ Wmᵀ, B = (dΣ + dΣᵀ)/m, μ, the
//    centred variant's offset c = −K (Σ dY)/m, and ⟨D_in, Wm⟩ for dθ.
//
// block_stats: [G, blocks, d + d²]: dY row sums, then D per block
// group_stats: [G, d + (T + 2) d²]: μ, Σ, P_1 .. P_T, Wm
// scalars:     [4]: κ, λ, ..
// bd_grad:     [G, 2d² + 2d + 1]: K, B, μ, c, ⟨D_in, Wm⟩

// #include ce_params.wgsl

@group(0) @binding(0) var<storage, read> block_stats: array<f32>;
@group(0) @binding(1) var<storage, read> group_stats: array<f32>;
@group(0) @binding(2) var<storage, read> scalars: array<f32>;
@group(0) @binding(3) var<storage, read_write> bd_grad: array<f32>;
@group(0) @binding(4) var<uniform> p: Params;

const WG: u32 = 256u;

var<workgroup> mat_s: array<f32, 256>;
var<workgroup> mat_a: array<f32, 256>;
var<workgroup> mat_p: array<f32, 256>;
var<workgroup> mat_p2: array<f32, 256>;
var<workgroup> mat_p3: array<f32, 256>;
var<workgroup> t1: array<f32, 256>;
var<workgroup> t2: array<f32, 256>;
var<workgroup> t3: array<f32, 256>;
var<workgroup> t4: array<f32, 256>;
var<workgroup> dy_sum: array<f32, 16>;
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
fn ce_newton_backward(@builtin(workgroup_id) wid: vec3<u32>,
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

    // 1. Last level of the reductions: the blocks.
    var dsum = 0.0;
    if (in_matrix) {
        for (var b = 0u; b < p.blocks; b += 1u) {
            dsum += block_stats[(g * p.blocks + b) * unit_stride + d + e];
        }
    }
    if (lid < d) {
        var total = 0.0;
        for (var b = 0u; b < p.blocks; b += 1u) {
            total += block_stats[(g * p.blocks + b) * unit_stride + lid];
        }
        dy_sum[lid] = total;
    }
    workgroupBarrier();

    // 2. Backward through Wm, the Newton–Schulz steps and the trace normalisation.
    let gs = g * (d + (p.iterations + 2u) * dd);
    let off_wm = gs + d + (p.iterations + 1u) * dd;
    let lam = scalars[1];
    var trace = 0.0;
    for (var j = 0u; j < d; j += 1u) {
        trace += group_stats[gs + d + j * d + j];
    }
    let r = 1.0 / trace;
    let centred = p.centred == 1u;
    var d_in = dsum;
    if (centred) {
        d_in -= dy_sum[i] * group_stats[gs + k];
    }
    let wm = group_stats[off_wm + e];
    let theta_part = workgroup_sum(lid, select(0.0, d_in * wm, in_matrix));
    let dwm = lam * d_in;
    var a = dwm;
    var dr_extra = 0.0;
    if (centred) {
        let pt = group_stats[gs + d + p.iterations * dd + e];
        dr_extra = workgroup_sum(lid, select(0.0, dwm * pt, in_matrix)) * 0.5 / sqrt(r);
        a = dwm * sqrt(r);
    }
    let sigma = group_stats[gs + d + e];
    if (in_matrix) {
        mat_s[e] = sigma * r;
        mat_a[e] = a;
    }
    var ds = 0.0;
    for (var step = 0u; step < p.iterations; step += 1u) {
        let kk = p.iterations - 1u - step;
        if (in_matrix) {
            var pk = select(0.0, 1.0, i == k);
            if (kk > 0u) {
                pk = group_stats[gs + d + kk * dd + e];
            }
            mat_p[e] = pk;
        }
        workgroupBarrier();
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
        if (in_matrix) {
            var acc = 0.0;
            for (var j = 0u; j < d; j += 1u) {
                acc += mat_p3[j * d + i] * mat_a[j * d + k];
            }
            ds -= 0.5 * acc;
        }
        if (kk > 0u) {
            if (in_matrix) {
                var p2s = 0.0;
                var ps = 0.0;
                var pta = 0.0;
                var p2ta = 0.0;
                for (var j = 0u; j < d; j += 1u) {
                    p2s += mat_p2[i * d + j] * mat_s[j * d + k];
                    ps += mat_p[i * d + j] * mat_s[j * d + k];
                    pta += mat_p[j * d + i] * mat_a[j * d + k];
                    p2ta += mat_p2[j * d + i] * mat_a[j * d + k];
                }
                t1[e] = p2s;
                t2[e] = ps;
                t3[e] = pta;
                t4[e] = p2ta;
            }
            workgroupBarrier();
            var next = 0.0;
            if (in_matrix) {
                var acc = 0.0;
                for (var j = 0u; j < d; j += 1u) {
                    acc += mat_a[i * d + j] * t1[k * d + j];
                    acc += t3[i * d + j] * t2[k * d + j];
                    acc += t4[i * d + j] * mat_s[k * d + j];
                }
                next = 1.5 * mat_a[e] - 0.5 * acc;
            }
            workgroupBarrier();
            if (in_matrix) {
                mat_a[e] = next;
            }
        }
        workgroupBarrier();
    }
    let dr = workgroup_sum(lid, select(0.0, ds * sigma, in_matrix)) + dr_extra;
    var dsigma = r * ds;
    if (i == k) {
        dsigma -= dr * r * r;
    }
    if (in_matrix) {
        t1[e] = dsigma;
    }
    workgroupBarrier();

    // 3. The pieces of dX = K dY + B (x − μ) + c (+ the reweighting terms).
    let m = f32(p.n * p.hw);
    let bo = g * (2u * dd + 2u * d + 1u);
    let kmat = lam * group_stats[off_wm + k * d + i];
    if (in_matrix) {
        bd_grad[bo + e] = kmat;
        bd_grad[bo + dd + e] = (t1[e] + t1[k * d + i]) / m;
        t2[e] = kmat;
    }
    workgroupBarrier();
    if (lid < d) {
        var offset = 0.0;
        if (centred) {
            for (var j = 0u; j < d; j += 1u) {
                offset -= t2[lid * d + j] * dy_sum[j] / m;
            }
        }
        bd_grad[bo + 2u * dd + lid] = group_stats[gs + lid];
        bd_grad[bo + 2u * dd + d + lid] = offset;
    }
    if (lid == 0u) {
        bd_grad[bo + 2u * dd + 2u * d] = theta_part;
    }
}
