// dX of CE in one pass over X and dY. For sample n, group g and position hw, with the
// group's K = λ Wmᵀ, B = (dΣ + dΣᵀ)/m, μ and offset c from ce_newton_backward:
//     dx_i = Σ_k K_ik dy_k + Σ_k B_ik (x_k − μ_k) + c_i
//          + ((1 − λ)/κ) s[n, c] dy_i + dv[n, c] · 2 (x_i − x̄[n, c]) / (H·W − 1),
// where c = g·d + i and dv includes κ's term (scalars[2]). As in ce_apply, one workgroup
// per group and run of 128 Elems, two Elems per thread, with Elem = f32 here and vec4<f32>
// (4 positions) in the variant ce_input_grad4 that the host uses when H·W is a multiple
// of 4; K and B are staged by rows of vec4s.
//
// x, dy, dx:    [N, C, H·W] row-major, as Elems
// bd_grad:      [G, 2d² + 2d + 1]: K, B, μ, c, ..
// sample_stats: [N, 3C + C/r + 1]: v, x̄, s, ..
// ar_grad:      [N, 3C + 4C/r + 1]: E, dv, ..
// scalars:      [4]: κ, λ, dκ/(2κNC), unused

alias Elem = f32;

// #include ce_params.wgsl

@group(0) @binding(0) var<storage, read> x: array<Elem>;
@group(0) @binding(1) var<storage, read> dy: array<Elem>;
@group(0) @binding(2) var<storage, read> bd_grad: array<f32>;
@group(0) @binding(3) var<storage, read> sample_stats: array<f32>;
@group(0) @binding(4) var<storage, read> ar_grad: array<f32>;
@group(0) @binding(5) var<storage, read> scalars: array<f32>;
@group(0) @binding(6) var<storage, read_write> dx: array<Elem>;
@group(0) @binding(7) var<uniform> p: Params;

// The group size d (p.d), fixed per pipeline so that the loops over channels unroll and
// the per-thread channel arrays live in registers; DQ = ⌈d/4⌉ vec4s per matrix row.
override D: u32 = 16u;
override DQ: u32 = (D + 3u) / 4u;
const WG: u32 = 64u;

var<workgroup> kmat: array<vec4<f32>, 64>; // row i at i·DQ, zero past column d
var<workgroup> bmat: array<vec4<f32>, 64>;
var<workgroup> mu: array<f32, 16>;
var<workgroup> offset: array<f32, 16>;

@compute @workgroup_size(64)
fn ce_input_grad(@builtin(workgroup_id) wid: vec3<u32>,
                 @builtin(local_invocation_index) lid: u32,
                 @builtin(num_workgroups) nwg: vec3<u32>) {
    let elems = p.hw_elems;
    let chunks = (p.n * elems + 2u * WG - 1u) / (2u * WG);
    let linear = wid.y * nwg.x + wid.x;
    let g = linear / chunks;
    if (g >= p.groups) {
        return;
    }
    let dd = D * D;
    let bo = g * (2u * dd + 2u * D + 1u);
    for (var t = lid; t < D * DQ; t += WG) {
        kmat[t] = matrix_quad(bo, t / DQ, 4u * (t % DQ));
        bmat[t] = matrix_quad(bo + dd, t / DQ, 4u * (t % DQ));
    }
    if (lid < D) {
        mu[lid] = bd_grad[bo + 2u * dd + lid];
        offset[lid] = bd_grad[bo + 2u * dd + D + lid];
    }
    workgroupBarrier();

    // This thread's two Elems: e and e + WG (the second may lie past the end).
    let e = (linear % chunks) * 2u * WG + lid;
    let total_elems = p.n * elems;
    if (e >= total_elems) {
        return;
    }
    let second = e + WG < total_elems;
    let e2 = min(e + WG, total_elems - 1u);
    let n = e / elems;
    let n2 = e2 / elems;
    let base = (n * p.c + g * D) * elems + e % elems;
    let base2 = (n2 * p.c + g * D) * elems + e2 % elems;
    var gs: array<Elem, 16>;
    var centred: array<Elem, 16>;
    var gs2: array<Elem, 16>;
    var centred2: array<Elem, 16>;
    for (var k = 0u; k < D; k += 1u) {
        gs[k] = dy[base + k * elems];
        centred[k] = x[base + k * elems] - mu[k];
        gs2[k] = dy[base2 + k * elems];
        centred2[k] = x[base2 + k * elems] - mu[k];
    }
    let kappa = scalars[0];
    let lam = scalars[1];
    let dv_kappa = scalars[2];
    let reweight = (1.0 - lam) / kappa;
    let var_scale = 2.0 / f32(p.hw - 1u);
    let ss = n * (3u * p.c + p.hidden + 1u) + g * D;
    let ag = n * (3u * p.c + 4u * p.hidden + 1u) + p.c + g * D;
    let ss2 = n2 * (3u * p.c + p.hidden + 1u) + g * D;
    let ag2 = n2 * (3u * p.c + 4u * p.hidden + 1u) + p.c + g * D;
    for (var i = 0u; i < D; i += 1u) {
        var acc = Elem(offset[i]);
        var acc2 = acc;
        for (var j = 0u; j < DQ; j += 1u) {
            let kq = kmat[i * DQ + j];
            let bq = bmat[i * DQ + j];
            let k0 = 4u * j;
            acc += kq.x * gs[k0] + kq.y * gs[k0 + 1u] + kq.z * gs[k0 + 2u] + kq.w * gs[k0 + 3u];
            acc += bq.x * centred[k0] + bq.y * centred[k0 + 1u] + bq.z * centred[k0 + 2u]
                + bq.w * centred[k0 + 3u];
            acc2 += kq.x * gs2[k0] + kq.y * gs2[k0 + 1u] + kq.z * gs2[k0 + 2u]
                + kq.w * gs2[k0 + 3u];
            acc2 += bq.x * centred2[k0] + bq.y * centred2[k0 + 1u] + bq.z * centred2[k0 + 2u]
                + bq.w * centred2[k0 + 3u];
        }
        // x − x̄ = (x − μ) + (μ − x̄)
        let s = sample_stats[ss + 2u * p.c + i];
        let xbar = sample_stats[ss + p.c + i];
        let dv = ar_grad[ag + i] + dv_kappa;
        acc += (reweight * s) * gs[i] + (dv * var_scale) * (centred[i] + (mu[i] - xbar));
        dx[base + i * elems] = acc;
        if (second) {
            let s2 = sample_stats[ss2 + 2u * p.c + i];
            let xbar2 = sample_stats[ss2 + p.c + i];
            let dv2 = ar_grad[ag2 + i] + dv_kappa;
            acc2 += (reweight * s2) * gs2[i]
                + (dv2 * var_scale) * (centred2[i] + (mu[i] - xbar2));
            dx[base2 + i * elems] = acc2;
        }
    }
}

// Columns k0..k0 + 3 of row i of the d×d matrix at `at` in bd_grad, zero past column d.
fn matrix_quad(at: u32, i: u32, k0: u32) -> vec4<f32> {
    var v = vec4<f32>();
    let row = at + i * D;
    if (k0 < D) {
        v.x = bd_grad[row + k0];
    }
    if (k0 + 1u < D) {
        v.y = bd_grad[row + k0 + 1u];
    }
    if (k0 + 2u < D) {
        v.z = bd_grad[row + k0 + 2u];
    }
    if (k0 + 3u < D) {
        v.w = bd_grad[row + k0 + 3u];
    }
    return v;
}
