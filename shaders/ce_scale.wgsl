// The two scalars of a CE pass, one workgroup: the gate λ = sigmoid(θ) and the κ that
// divides the reweighted branch. Training: κ = sqrt(mean of v over all n, c) and
// running_scale ← (1 − momentum) running_scale + momentum κ. Evaluation: κ = running_scale.
//
// sample_stats:  [N, 3C + C/r + 1], v in the first C entries of each row
// theta:         [1]
// running_scale: [1]
// scalars:       [4]: κ, λ, (backward's dκ term), unused

// #include ce_params.wgsl

@group(0) @binding(0) var<storage, read> sample_stats: array<f32>;
@group(0) @binding(1) var<storage, read> theta: array<f32>;
@group(0) @binding(2) var<storage, read_write> running_scale: array<f32>;
@group(0) @binding(3) var<storage, read_write> scalars: array<f32>;
@group(0) @binding(4) var<uniform> p: Params;

const WG: u32 = 256u;

var<workgroup> red: array<f32, 256>;

@compute @workgroup_size(256)
fn ce_scale(@builtin(local_invocation_index) lid: u32) {
    let stride = 3u * p.c + p.hidden + 1u;
    var sum = 0.0;
    for (var e = lid; e < p.n * p.c; e += WG) {
        sum += sample_stats[(e / p.c) * stride + e % p.c];
    }
    red[lid] = sum;
    workgroupBarrier();
    for (var half = WG / 2u; half > 0u; half /= 2u) {
        if (lid < half) {
            red[lid] += red[lid + half];
        }
        workgroupBarrier();
    }
    if (lid == 0u) {
        var kappa = sqrt(red[0] / f32(p.n * p.c));
        if (p.training == 1u) {
            running_scale[0] = (1.0 - p.momentum) * running_scale[0] + p.momentum * kappa;
        } else {
            kappa = running_scale[0];
        }
        scalars[0] = kappa;
        scalars[1] = 1.0 / (1.0 + exp(-theta[0]));
    }
}
