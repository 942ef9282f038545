// Batch normalisation, the elementwise pass: y = (x − mean[c]) · s[c] · weight[c] + bias[c],
// one thread per element, with s = 1/sqrt(var + eps). In training `spread` holds the saved
// batch inv_std directly; in evaluation it holds the running variance and s is computed here.
// Subtracting the mean before scaling keeps y accurate when the mean is large. Elements are
// of type Elem: f32 here, vec4<f32> (4 positions of one channel) in the variant
// batchnorm_normalize4 (build.rs), which the host uses when H·W is a multiple of 4; n and
// plane count Elems.
//
// An epilogue may follow in the same pass (overrides): RESIDUAL adds `residual` (a
// ResNet's shortcut), then ACTIVATION applies ReLU (1) or ReLU6 (2), so that the normalised
// value is never written out and read back. `residual` is bound but unread without RESIDUAL.
//
// x, y, residual:              [N, C, H, W] row-major
// mean, spread, weight, bias:  [C]

alias Elem = f32;

struct Params {
    n: u32,       // N·C·H·W
    channels: u32,
    plane: u32,   // H·W
    eps: f32,     // used by normalize_running only
}

@group(0) @binding(0) var<storage, read> x: array<Elem>;
@group(0) @binding(1) var<storage, read> mean: array<f32>;
@group(0) @binding(2) var<storage, read> spread: array<f32>;
@group(0) @binding(3) var<storage, read> weight: array<f32>;
@group(0) @binding(4) var<storage, read> bias: array<f32>;
@group(0) @binding(5) var<storage, read> residual: array<Elem>;
@group(0) @binding(6) var<storage, read_write> y: array<Elem>;
@group(0) @binding(7) var<uniform> params: Params;

override RESIDUAL: bool = false;
// 0: none, 1: ReLU, 2: ReLU6.
override ACTIVATION: u32 = 0u;

const WORKGROUP: u32 = 256u;

// The epilogue of element i with normalised value v.
fn finish(i: u32, v: Elem) -> Elem {
    var out = v;
    if (RESIDUAL) {
        out += residual[i];
    }
    if (ACTIVATION == 1u) {
        out = max(out, Elem(0.0));
    } else if (ACTIVATION == 2u) {
        out = clamp(out, Elem(0.0), Elem(6.0));
    }
    return out;
}

fn index(wid: vec3<u32>, lid: u32, groups: vec3<u32>) -> u32 {
    return (wid.y * groups.x + wid.x) * WORKGROUP + lid;
}

// Training: spread = inv_std of the batch.
@compute @workgroup_size(256)
fn normalize_batch(@builtin(workgroup_id) wid: vec3<u32>,
                   @builtin(local_invocation_index) lid: u32,
                   @builtin(num_workgroups) groups: vec3<u32>) {
    let i = index(wid, lid, groups);
    if (i < params.n) {
        let c = (i / params.plane) % params.channels;
        y[i] = finish(i, (x[i] - mean[c]) * spread[c] * weight[c] + bias[c]);
    }
}

// Evaluation: mean = running mean, spread = running variance.
@compute @workgroup_size(256)
fn normalize_running(@builtin(workgroup_id) wid: vec3<u32>,
                     @builtin(local_invocation_index) lid: u32,
                     @builtin(num_workgroups) groups: vec3<u32>) {
    let i = index(wid, lid, groups);
    if (i < params.n) {
        let c = (i / params.plane) % params.channels;
        let inv_std = 1.0 / sqrt(spread[c] + params.eps);
        y[i] = finish(i, (x[i] - mean[c]) * inv_std * weight[c] + bias[c]);
    }
}
