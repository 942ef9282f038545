// Batch normalisation backward, the input gradient in training mode, one thread per element:
//     dx = k.x · (dy − k.y − (x − k.w) · k.z)
// with k = coefficients[c] = (weight·inv_std, Σdy/m, inv_std·Σdy·x̂/m, mean) prepared by the
// reduction passes. This is dy pushed through y = weight·x̂ + bias and through the batch
// mean and variance that x̂ depends on. Elements are of type Elem: f32 here, vec4<f32>
// (4 positions of one channel) in the variant batchnorm_backward_data4 (build.rs), which the
// host uses when H·W is a multiple of 4; n and plane count Elems.
//
// x, dy, dx:     [N, C, H, W] row-major
// coefficients:  [C, 4] row-major

alias Elem = f32;

struct Params {
    n: u32,       // N·C·H·W
    channels: u32,
    plane: u32,   // H·W
}

@group(0) @binding(0) var<storage, read> x: array<Elem>;
@group(0) @binding(1) var<storage, read> dy: array<Elem>;
@group(0) @binding(2) var<storage, read> coefficients: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read_write> dx: array<Elem>;
@group(0) @binding(4) var<uniform> params: Params;

const WORKGROUP: u32 = 256u;

@compute @workgroup_size(256)
fn input_gradient(@builtin(workgroup_id) wid: vec3<u32>,
                  @builtin(local_invocation_index) lid: u32,
                  @builtin(num_workgroups) groups: vec3<u32>) {
    let i = (wid.y * groups.x + wid.x) * WORKGROUP + lid;
    if (i < params.n) {
        let k = coefficients[(i / params.plane) % params.channels];
        dx[i] = k.x * (dy[i] - k.y - (x[i] - k.w) * k.z);
    }
}
