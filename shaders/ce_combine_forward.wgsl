// Second level of the CE forward statistics, one workgroup per (group g, block of
// consecutive samples), one thread per entry (i, k) of the d×d co-moment:
// 1. per sample n of the block, Chan's combination of its slice partials gives the
//    per-channel spatial mean x̄[n, c] and unbiased variance v[n, c] (the co-moment's
//    diagonal / (H·W − 1)), written for the reweighting branch;
// 2. Chan's combination of the block's samples gives one (mean, co-moment) pair per block
//    (training only), which ce_newton_forward combines over the blocks.
// Blocks keep every serial loop short (≤ 16 partials) while many workgroups run at once.
//
// partials:     [N, G, S, d + d²]: slice means, then slice co-moments (ce_stats.wgsl, forward)
// sample_stats: [N, 3C + C/r + 1]: v (C), x̄ (C), ... (only these two are written here)
// block_stats:  [G, blocks, d + d²]: block means, then block co-moments

// #include ce_params.wgsl

@group(0) @binding(0) var<storage, read> partials: array<f32>;
@group(0) @binding(1) var<storage, read_write> sample_stats: array<f32>;
@group(0) @binding(2) var<storage, read_write> block_stats: array<f32>;
@group(0) @binding(3) var<uniform> p: Params;

@compute @workgroup_size(256)
fn ce_combine_forward(@builtin(workgroup_id) wid: vec3<u32>,
                      @builtin(local_invocation_index) lid: u32,
                      @builtin(num_workgroups) nwg: vec3<u32>) {
    let linear = wid.y * nwg.x + wid.x;
    let g = linear / p.blocks;
    let b = linear % p.blocks;
    let d = p.d;
    let dd = d * d;
    if (g >= p.groups || lid >= dd) {
        return;
    }
    let i = lid / d;
    let k = lid % d;
    let diagonal = i == k;
    if (p.training == 0u && !diagonal) {
        return;
    }
    let unit_stride = d + dd;
    let ss_stride = 3u * p.c + p.hidden + 1u;
    let n0 = b * p.block_samples;
    let n1 = min(n0 + p.block_samples, p.n);

    var cnt = 0.0;
    var mi = 0.0;
    var mk = 0.0;
    var m2 = 0.0;
    for (var n = n0; n < n1; n += 1u) {
        var s_cnt = 0.0;
        var s_mi = 0.0;
        var s_mk = 0.0;
        var s_m2 = 0.0;
        for (var s = 0u; s < p.slices; s += 1u) {
            let off = ((n * p.groups + g) * p.slices + s) * unit_stride;
            let nb = f32(min(p.slice_len, p.hw - s * p.slice_len));
            let total = s_cnt + nb;
            let di = partials[off + i] - s_mi;
            let dk = partials[off + k] - s_mk;
            s_m2 += partials[off + d + lid] + di * dk * (s_cnt * nb / total);
            s_mi += di * (nb / total);
            s_mk += dk * (nb / total);
            s_cnt = total;
        }
        if (diagonal) {
            let c = g * d + i;
            sample_stats[n * ss_stride + c] = s_m2 / f32(p.hw - 1u);
            sample_stats[n * ss_stride + p.c + c] = s_mi;
        }
        let total = cnt + s_cnt;
        let di = s_mi - mi;
        let dk = s_mk - mk;
        m2 += s_m2 + di * dk * (cnt * s_cnt / total);
        mi += di * (s_cnt / total);
        mk += dk * (s_cnt / total);
        cnt = total;
    }
    if (p.training == 1u) {
        let out = (g * p.blocks + b) * unit_stride;
        block_stats[out + d + lid] = m2;
        if (diagonal) {
            block_stats[out + i] = mi;
        }
    }
}
