// Batch normalisation backward, reduction pass 2 of 2: one workgroup per channel adds the
// chunk partials into dbias = Σdy and dweight = Σdy·x̂, and prepares the per-channel
// coefficients of the input gradient
//     dx = weight·inv_std · (dy − Σdy/m − x̂ · Σdy·x̂/m),
//     x̂ = (x − mean)·inv_std,
// as (weight·inv_std, Σdy/m, inv_std·Σdy·x̂/m, mean), so the dx pass needs one load per
// channel.
//
// partials:                [C, chunks, 2] row-major, (Σdy, Σdy·x̂) of one chunk
// weight, mean, inv_std:   [C]
// dweight, dbias:          [C]
// coefficients:            [C, 4] row-major

struct Params {
    channels: u32,
    chunks: u32,
    count: u32,   // m = N·H·W values per channel
}

@group(0) @binding(0) var<storage, read> partials: array<f32>;
@group(0) @binding(1) var<storage, read> weight: array<f32>;
@group(0) @binding(2) var<storage, read> mean: array<f32>;
@group(0) @binding(3) var<storage, read> inv_std: array<f32>;
@group(0) @binding(4) var<storage, read_write> dweight: array<f32>;
@group(0) @binding(5) var<storage, read_write> dbias: array<f32>;
@group(0) @binding(6) var<storage, read_write> coefficients: array<vec4<f32>>;
@group(0) @binding(7) var<uniform> params: Params;

const WORKGROUP: u32 = 64u;

var<workgroup> sums: array<vec2<f32>, WORKGROUP>;

@compute @workgroup_size(64)
fn finalize_gradients(@builtin(workgroup_id) wid: vec3<u32>,
                      @builtin(local_invocation_index) lid: u32,
                      @builtin(num_workgroups) groups: vec3<u32>) {
    let c = wid.y * groups.x + wid.x;
    if (c >= params.channels) {
        return;
    }
    var acc = vec2<f32>(0.0);
    for (var p = lid; p < params.chunks; p += WORKGROUP) {
        let at = (c * params.chunks + p) * 2u;
        acc += vec2<f32>(partials[at], partials[at + 1u]);
    }
    sums[lid] = acc;
    workgroupBarrier();

    for (var stride = WORKGROUP / 2u; stride > 0u; stride /= 2u) {
        if (lid < stride) {
            sums[lid] += sums[lid + stride];
        }
        workgroupBarrier();
    }
    if (lid == 0u) {
        let total = sums[0];
        let m = f32(params.count);
        let s = inv_std[c];
        dbias[c] = total.x;
        dweight[c] = total.y;
        coefficients[c] = vec4<f32>(weight[c] * s, total.x / m, s * total.y / m, mean[c]);
    }
}
