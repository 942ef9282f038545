// Batch normalisation, statistics pass 2 of 2: one workgroup per channel merges the chunk
// partials with Chan's parallel formula (each thread folds a strided subset, then a tree),
// saves the batch mean and 1/sqrt(biased variance + eps) for the normalisation and the
// backward pass, and moves the running statistics towards the batch statistics:
// running ← (1 − momentum)·running + momentum·batch, with the unbiased variance M2/(n − 1).
//
// partials:           [C, chunks, 3] row-major, (count, mean, M2) of one chunk
// mean, inv_std:      [C]
// running_mean/_var:  [C], updated in place

struct Params {
    channels: u32,
    chunks: u32,
    eps: f32,
    momentum: f32,
}

@group(0) @binding(0) var<storage, read> partials: array<f32>;
@group(0) @binding(1) var<storage, read_write> mean: array<f32>;
@group(0) @binding(2) var<storage, read_write> inv_std: array<f32>;
@group(0) @binding(3) var<storage, read_write> running_mean: array<f32>;
@group(0) @binding(4) var<storage, read_write> running_var: array<f32>;
@group(0) @binding(5) var<uniform> params: Params;

const WORKGROUP: u32 = 64u;

var<workgroup> summaries: array<vec3<f32>, WORKGROUP>;

// The (count, mean, M2) of the union of two disjoint sets of values.
fn merge(a: vec3<f32>, b: vec3<f32>) -> vec3<f32> {
    let n = a.x + b.x;
    if (n == 0.0) {
        return vec3<f32>(0.0);
    }
    let delta = b.y - a.y;
    let share_b = b.x / n;
    return vec3<f32>(n, a.y + delta * share_b, a.z + b.z + delta * delta * a.x * share_b);
}

@compute @workgroup_size(64)
fn finalize_stats(@builtin(workgroup_id) wid: vec3<u32>,
                  @builtin(local_invocation_index) lid: u32,
                  @builtin(num_workgroups) groups: vec3<u32>) {
    let c = wid.y * groups.x + wid.x;
    if (c >= params.channels) {
        return;
    }
    var s = vec3<f32>(0.0);
    for (var p = lid; p < params.chunks; p += WORKGROUP) {
        let at = (c * params.chunks + p) * 3u;
        s = merge(s, vec3<f32>(partials[at], partials[at + 1u], partials[at + 2u]));
    }
    summaries[lid] = s;
    workgroupBarrier();

    for (var stride = WORKGROUP / 2u; stride > 0u; stride /= 2u) {
        if (lid < stride) {
            summaries[lid] = merge(summaries[lid], summaries[lid + stride]);
        }
        workgroupBarrier();
    }
    if (lid == 0u) {
        let total = summaries[0];
        let biased = total.z / total.x;
        let unbiased = total.z / (total.x - 1.0);
        mean[c] = total.y;
        inv_std[c] = 1.0 / sqrt(biased + params.eps);
        let keep = 1.0 - params.momentum;
        running_mean[c] = keep * running_mean[c] + params.momentum * total.y;
        running_var[c] = keep * running_var[c] + params.momentum * unbiased;
    }
}
