// Second level of the CE backward reductions, one workgroup per (group g, block of
// consecutive samples), one thread per entry (i, k): sums the slice blocks of
// ce_stats.wgsl (backward) per sample, writes the per-sample diagonal E[n, c] = Σ_hw dY·X for
// the reweighting backward, and sums the block's samples into one D block and one set of
// dY row sums, which ce_newton_backward adds up over the blocks.
//
// partials:    [N, G, S, d + d²]: dY row sums, then D = Σ dY xᵀ per slice
// ar_grad:     [N, 3C + 4C/r + 1]: E (C), ... (only E is written here)
// block_stats: [G, blocks, d + d²]: dY row sums, then D per block

// #include ce_params.wgsl

@group(0) @binding(0) var<storage, read> partials: array<f32>;
@group(0) @binding(1) var<storage, read_write> ar_grad: array<f32>;
@group(0) @binding(2) var<storage, read_write> block_stats: array<f32>;
@group(0) @binding(3) var<uniform> p: Params;

@compute @workgroup_size(256)
fn ce_combine_backward(@builtin(workgroup_id) wid: vec3<u32>,
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
    let unit_stride = d + dd;
    let ag_stride = 3u * p.c + 4u * p.hidden + 1u;
    let n0 = b * p.block_samples;
    let n1 = min(n0 + p.block_samples, p.n);

    var block = 0.0;
    var row_sum = 0.0;
    for (var n = n0; n < n1; n += 1u) {
        var sample = 0.0;
        for (var s = 0u; s < p.slices; s += 1u) {
            let off = ((n * p.groups + g) * p.slices + s) * unit_stride;
            sample += partials[off + d + lid];
            if (lid < d) {
                row_sum += partials[off + lid];
            }
        }
        if (lid == i * d + i) {
            ar_grad[n * ag_stride + g * d + i] = sample;
        }
        block += sample;
    }
    let out = (g * p.blocks + b) * unit_stride;
    block_stats[out + d + lid] = block;
    if (lid < d) {
        block_stats[out + lid] = row_sum;
    }
}
