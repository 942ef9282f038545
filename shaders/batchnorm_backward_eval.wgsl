// Batch normalisation backward in evaluation mode, where the running statistics are constants:
// dx = dy · weight[c] / sqrt(running_var[c] + eps), one thread per element.
//
// dy, dx:               [N, C, H, W] row-major
// weight, running_var:  [C]

struct Params {
    n: u32,       // N·C·H·W
    channels: u32,
    plane: u32,   // H·W
    eps: f32,
}

@group(0) @binding(0) var<storage, read> dy: array<f32>;
@group(0) @binding(1) var<storage, read> weight: array<f32>;
@group(0) @binding(2) var<storage, read> running_var: array<f32>;
@group(0) @binding(3) var<storage, read_write> dx: array<f32>;
@group(0) @binding(4) var<uniform> params: Params;

const WORKGROUP: u32 = 256u;

@compute @workgroup_size(256)
fn input_gradient_eval(@builtin(workgroup_id) wid: vec3<u32>,
                       @builtin(local_invocation_index) lid: u32,
                       @builtin(num_workgroups) groups: vec3<u32>) {
    let i = (wid.y * groups.x + wid.x) * WORKGROUP + lid;
    if (i < params.n) {
        let c = (i / params.plane) % params.channels;
        dx[i] = dy[i] * weight[c] / sqrt(running_var[c] + params.eps);
    }
}
