// Adds the slices of a split reduction: out[i] = Σ_s partial[s, i]. The convolution's weight
// and bias gradients sum over the whole batch; they are computed as a few partial sums over
// slices of it, written side by side, and this pass adds them (no float atomics needed).
//
// partial: [splits, len] row-major
// out: [len]

struct Params {
    len: u32,
    splits: u32,
}

@group(0) @binding(0) var<storage, read> partial: array<f32>;
@group(0) @binding(1) var<storage, read_write> out: array<f32>;
@group(0) @binding(2) var<uniform> params: Params;

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32,
        @builtin(num_workgroups) groups: vec3<u32>) {
    let i = (wid.y * groups.x + wid.x) * 256u + lid;
    if (i >= params.len) {
        return;
    }
    var acc = 0.0;
    for (var s = 0u; s < params.splits; s++) {
        acc += partial[s * params.len + i];
    }
    out[i] = acc;
}
