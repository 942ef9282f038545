// Batch normalisation backward, reduction pass 1 of 2: partial sums Σdy and Σdy·x̂ of each
// channel over chunks of its N·H·W values, with x̂ = (x − mean)·inv_std from the saved batch
// statistics. Workgroup g takes chunk g % chunks of channel g / chunks; each thread sums its
// strided share, then a tree adds the 256 pairs. Values are taken an Elem at a time: f32
// here, vec4<f32> (4 positions of one channel) in the variant batchnorm_backward_reduce4
// (build.rs) that the host uses when H·W is a multiple of 4, where plane, count and chunk
// count Elems and `total` adds a sum's lanes.
//
// x, dy:          [N, C, H, W] row-major
// mean, inv_std:  [C], saved by the forward pass
// partials:       [C, chunks, 2] row-major, (Σdy, Σdy·x̂) of one chunk

alias Elem = f32;

// The sum of an Elem's lanes.
fn total(v: Elem) -> f32 {
    return v;
}

struct Params {
    channels: u32,
    plane: u32,   // H·W
    count: u32,   // N·H·W values per channel
    chunk: u32,   // values per chunk
    chunks: u32,  // chunks per channel
}

@group(0) @binding(0) var<storage, read> x: array<Elem>;
@group(0) @binding(1) var<storage, read> dy: array<Elem>;
@group(0) @binding(2) var<storage, read> mean: array<f32>;
@group(0) @binding(3) var<storage, read> inv_std: array<f32>;
@group(0) @binding(4) var<storage, read_write> partials: array<f32>;
@group(0) @binding(5) var<uniform> params: Params;

const WORKGROUP: u32 = 256u;

var<workgroup> sums: array<vec2<f32>, WORKGROUP>;

@compute @workgroup_size(256)
fn gradient_partials(@builtin(workgroup_id) wid: vec3<u32>,
                     @builtin(local_invocation_index) lid: u32,
                     @builtin(num_workgroups) groups: vec3<u32>) {
    let g = wid.y * groups.x + wid.x;
    if (g >= params.channels * params.chunks) {
        return;
    }
    let c = g / params.chunks;
    let start = (g % params.chunks) * params.chunk;
    let end = min(start + params.chunk, params.count);
    let m = mean[c];
    let s = inv_std[c];

    var sum_dy = Elem(0.0);
    var sum_dy_xhat = Elem(0.0);
    for (var j = start + lid; j < end; j += WORKGROUP) {
        let n = j / params.plane;
        let i = (n * params.channels + c) * params.plane + (j - n * params.plane);
        let g_out = dy[i];
        sum_dy += g_out;
        sum_dy_xhat += g_out * (x[i] - m) * s;
    }
    sums[lid] = vec2<f32>(total(sum_dy), total(sum_dy_xhat));
    workgroupBarrier();

    for (var stride = WORKGROUP / 2u; stride > 0u; stride /= 2u) {
        if (lid < stride) {
            sums[lid] += sums[lid + stride];
        }
        workgroupBarrier();
    }
    if (lid == 0u) {
        partials[g * 2u] = sums[0].x;
        partials[g * 2u + 1u] = sums[0].y;
    }
}
