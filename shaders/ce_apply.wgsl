// The CE output in one pass over X: for each sample n and group g the linear map
// M = λ·Wm + ((1 − λ)/κ)·diag(s[n, g·d .. g·d + d]) applied to the d channels at every
// position, y = λ·Wm·(x − μ₀) + ((1 − λ)/κ)·s ⊙ x, with μ₀ = 0 (released form)
// or the group mean (centred variant). Wm is P_T (training) or running_wm (evaluation).
//
// One workgroup per group and run of 128 Elems of positions, two Elems per thread (e and
// e + 64): it reads their d channel values once and writes d outputs for each. Elem is f32
// here and vec4<f32>, 4 consecutive positions of one plane, in the variant ce_apply4
// (build.rs) that the host uses when H·W is a multiple of 4: there every matrix entry a
// thread reads serves 8 positions, and every load and store moves 4 values. The matrix is
// staged by rows of vec4s, so a thread reads it with d·⌈d/4⌉ loads; on a software
// rasteriser, which loads workgroup memory lane by lane, those loads cost as much as the
// multiply-adds they feed, hence two Elems per thread.
//
// x, y:         [N, C, H·W] row-major, as Elems
// matrices:     group g's d×d matrix (row-major) at g·w_stride + w_offset
// means:        group g's d-vector at g·mu_stride + mu_offset (read only when centred)
// sample_stats: [N, 3C + C/r + 1], s at offset 2C of each row
// scalars:      [4]: κ, λ, ..

alias Elem = f32;

// #include ce_params.wgsl

@group(0) @binding(0) var<storage, read> x: array<Elem>;
@group(0) @binding(1) var<storage, read> matrices: array<f32>;
@group(0) @binding(2) var<storage, read> means: array<f32>;
@group(0) @binding(3) var<storage, read> sample_stats: array<f32>;
@group(0) @binding(4) var<storage, read> scalars: array<f32>;
@group(0) @binding(5) var<storage, read_write> y: array<Elem>;
@group(0) @binding(6) var<uniform> p: Params;

// The group size d (p.d), fixed per pipeline so that the loops over channels unroll and
// the per-thread channel arrays live in registers; DQ = ⌈d/4⌉ vec4s per matrix row.
override D: u32 = 16u;
override DQ: u32 = (D + 3u) / 4u;
const WG: u32 = 64u;

var<workgroup> wmat: array<vec4<f32>, 64>; // λ·Wm, row i at i·DQ, zero past column d
var<workgroup> mu: array<f32, 16>;

@compute @workgroup_size(64)
fn ce_apply(@builtin(workgroup_id) wid: vec3<u32>,
            @builtin(local_invocation_index) lid: u32,
            @builtin(num_workgroups) nwg: vec3<u32>) {
    let elems = p.hw_elems;
    let chunks = (p.n * elems + 2u * WG - 1u) / (2u * WG);
    let linear = wid.y * nwg.x + wid.x;
    let g = linear / chunks;
    if (g >= p.groups) {
        return;
    }
    let lam = scalars[1];
    let w0 = g * p.w_stride + p.w_offset;
    for (var t = lid; t < D * DQ; t += WG) {
        wmat[t] = lam * matrix_quad(w0, t / DQ, 4u * (t % DQ));
    }
    if (lid < D) {
        var centre = 0.0;
        if (p.centred == 1u) {
            centre = means[g * p.mu_stride + p.mu_offset + lid];
        }
        mu[lid] = centre;
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
    var centred: array<Elem, 16>;
    var centred2: array<Elem, 16>;
    for (var k = 0u; k < D; k += 1u) {
        centred[k] = x[base + k * elems] - mu[k];
        centred2[k] = x[base2 + k * elems] - mu[k];
    }
    let reweight = (1.0 - lam) / scalars[0];
    let s_row = n * (3u * p.c + p.hidden + 1u) + 2u * p.c + g * D;
    let s_row2 = n2 * (3u * p.c + p.hidden + 1u) + 2u * p.c + g * D;
    for (var i = 0u; i < D; i += 1u) {
        // s ⊙ x with x = (x − μ₀) + μ₀
        var acc = (reweight * sample_stats[s_row + i]) * (centred[i] + mu[i]);
        var acc2 = (reweight * sample_stats[s_row2 + i]) * (centred2[i] + mu[i]);
        for (var j = 0u; j < DQ; j += 1u) {
            let w = wmat[i * DQ + j];
            let k0 = 4u * j;
            acc += w.x * centred[k0] + w.y * centred[k0 + 1u] + w.z * centred[k0 + 2u]
                + w.w * centred[k0 + 3u];
            acc2 += w.x * centred2[k0] + w.y * centred2[k0 + 1u] + w.z * centred2[k0 + 2u]
                + w.w * centred2[k0 + 3u];
        }
        y[base + i * elems] = acc;
        if (second) {
            y[base2 + i * elems] = acc2;
        }
    }
}

// Columns k0..k0 + 3 of row i of the d×d matrix at `at`, zero past column d.
fn matrix_quad(at: u32, i: u32, k0: u32) -> vec4<f32> {
    var v = vec4<f32>();
    let row = at + i * D;
    if (k0 < D) {
        v.x = matrices[row + k0];
    }
    if (k0 + 1u < D) {
        v.y = matrices[row + k0 + 1u];
    }
    if (k0 + 2u < D) {
        v.z = matrices[row + k0 + 2u];
    }
    if (k0 + 3u < D) {
        v.w = matrices[row + k0 + 3u];
    }
    return v;
}
