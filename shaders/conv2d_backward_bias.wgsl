// Gradient of a convolution's bias: db[c] = Σ over n, oh, ow of dy[n, c, oh, ow].
// Workgroup (c, split) sums a slice of `chunk` of the batch·OH·OW positions of channel c,
// each thread a strided part and then a tree in workgroup memory, so no thread adds more than
// chunk / 256 terms; conv2d_reduce.wgsl adds the slices when there are several.
//
// dy: [batch, C, OH, OW] row-major
// partial: [splits, C] row-major

struct Params {
    channels: u32,
    plane: u32,
    positions: u32,
    chunk: u32,
}

@group(0) @binding(0) var<storage, read> dy: array<f32>;
@group(0) @binding(1) var<storage, read_write> partial: array<f32>;
@group(0) @binding(2) var<uniform> params: Params;

const WORKGROUP: u32 = 256u;

var<workgroup> sums: array<f32, 256>;

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let c = wid.x;
    let split = wid.y;
    let begin = split * params.chunk;
    let end = min(begin + params.chunk, params.positions);

    var acc = 0.0;
    for (var q = begin + lid; q < end; q += WORKGROUP) {
        // q = (n, position within the plane)
        let n = q / params.plane;
        acc += dy[(n * params.channels + c) * params.plane + q % params.plane];
    }

    sums[lid] = acc;
    workgroupBarrier();
    for (var half = WORKGROUP / 2u; half > 0u; half /= 2u) {
        if (lid < half) {
            sums[lid] += sums[lid + half];
        }
        workgroupBarrier();
    }
    if (lid == 0u) {
        partial[split * params.channels + c] = sums[0];
    }
}
