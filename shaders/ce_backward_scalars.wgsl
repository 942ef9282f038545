// The scalar gradients of CE, one workgroup. With q_n = Σ_c E[n, c] s[n, c]
// (E = Σ_hw dY·X) and the groups' ⟨D_in, Wm⟩ = ⟨dY, y_bd⟩:
//     dθ = λ(1 − λ)(⟨dY, y_bd⟩ − Σ_n q_n / κ),
//     dκ = −Σ ds·s / κ = −(1 − λ) Σ_n q_n / κ²,
// and κ = sqrt(mean v) passes dκ / (2κ·N·C) to every v[n, c]; that term is stored in
// scalars[2] for ce_input_grad.
//
// ar_grad: [N, 3C + 4C/r + 1], q_n last in each row
// bd_grad: [G, 2d² + 2d + 1], ⟨D_in, Wm⟩ last in each row
// scalars: [4]: κ, λ, dκ/(2κNC) (written here), unused
// dtheta:  [1]

// #include ce_params.wgsl

@group(0) @binding(0) var<storage, read> ar_grad: array<f32>;
@group(0) @binding(1) var<storage, read> bd_grad: array<f32>;
@group(0) @binding(2) var<storage, read_write> scalars: array<f32>;
@group(0) @binding(3) var<storage, read_write> dtheta: array<f32>;
@group(0) @binding(4) var<uniform> p: Params;

const WG: u32 = 256u;

var<workgroup> red: array<f32, 256>;

fn workgroup_sum(lid: u32, value: f32) -> f32 {
    red[lid] = value;
    workgroupBarrier();
    for (var half = WG / 2u; half > 0u; half /= 2u) {
        if (lid < half) {
            red[lid] += red[lid + half];
        }
        workgroupBarrier();
    }
    let total = red[0];
    workgroupBarrier();
    return total;
}

@compute @workgroup_size(256)
fn ce_backward_scalars(@builtin(local_invocation_index) lid: u32) {
    let ag_stride = 3u * p.c + 4u * p.hidden + 1u;
    let bd_stride = 2u * p.d * p.d + 2u * p.d + 1u;
    var q = 0.0;
    for (var n = lid; n < p.n; n += WG) {
        q += ar_grad[n * ag_stride + ag_stride - 1u];
    }
    var t = 0.0;
    for (var g = lid; g < p.groups; g += WG) {
        t += bd_grad[g * bd_stride + bd_stride - 1u];
    }
    q = workgroup_sum(lid, q);
    t = workgroup_sum(lid, t);
    if (lid == 0u) {
        let kappa = scalars[0];
        let lam = scalars[1];
        dtheta[0] = lam * (1.0 - lam) * (t - q / kappa);
        let dkappa = -(1.0 - lam) * q / (kappa * kappa);
        scalars[2] = dkappa / (2.0 * kappa * f32(p.n * p.c));
    }
}
