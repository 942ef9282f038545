// Elementwise ops over flat f32 buffers: ReLU and ReLU6 with their backward passes, and the
// sum of two tensors (residual connections). One thread per element; the grid is folded into
// 2-D when it exceeds one dimension's workgroup limit.
//
// a, b, out: [n] flat, any layout (all three share it)

struct Params {
    n: u32,
}

@group(0) @binding(0) var<storage, read> a: array<f32>;
@group(0) @binding(1) var<storage, read> b: array<f32>;
@group(0) @binding(2) var<storage, read_write> out: array<f32>;
@group(0) @binding(3) var<uniform> params: Params;

const WORKGROUP: u32 = 256u;

fn index(wid: vec3<u32>, lid: u32, groups: vec3<u32>) -> u32 {
    return (wid.y * groups.x + wid.x) * WORKGROUP + lid;
}

// out = max(a, 0)
@compute @workgroup_size(256)
fn relu_forward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32,
                @builtin(num_workgroups) groups: vec3<u32>) {
    let i = index(wid, lid, groups);
    if (i < params.n) {
        out[i] = max(a[i], 0.0);
    }
}

// out = clamp(a, 0, 6)
@compute @workgroup_size(256)
fn relu6_forward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32,
                 @builtin(num_workgroups) groups: vec3<u32>) {
    let i = index(wid, lid, groups);
    if (i < params.n) {
        out[i] = clamp(a[i], 0.0, 6.0);
    }
}

// a = forward input x, b = dy; out = dy where x > 0 (PyTorch's convention: 0 at x = 0)
@compute @workgroup_size(256)
fn relu_backward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32,
                 @builtin(num_workgroups) groups: vec3<u32>) {
    let i = index(wid, lid, groups);
    if (i < params.n) {
        out[i] = select(0.0, b[i], a[i] > 0.0);
    }
}

// a = forward input x, b = dy; out = dy where 0 < x < 6
@compute @workgroup_size(256)
fn relu6_backward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32,
                  @builtin(num_workgroups) groups: vec3<u32>) {
    let i = index(wid, lid, groups);
    if (i < params.n) {
        out[i] = select(0.0, b[i], a[i] > 0.0 && a[i] < 6.0);
    }
}

// out = a + b
@compute @workgroup_size(256)
fn add_forward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32,
               @builtin(num_workgroups) groups: vec3<u32>) {
    let i = index(wid, lid, groups);
    if (i < params.n) {
        out[i] = a[i] + b[i];
    }
}
