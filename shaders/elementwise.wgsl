// Elementwise ops over flat f32 buffers: ReLU and ReLU6 with their backward passes, and the
// sum of two tensors (residual connections). One thread per element of type Elem, f32 here
// and vec4<f32> in the variant elementwise4 (build.rs), which the host uses when the length
// is a multiple of 4: one load or store instruction then moves 4 elements (software
// rasterisers fetch storage lane by lane, so this cuts their per-element cost about 4×; GPUs
// get 16-byte transactions). The grid is folded into 2-D when it exceeds one dimension's
// workgroup limit.
//
// a, b, out: [n] flat, any layout (all three share it)

alias Elem = f32;

struct Params {
    n: u32, // elements of type Elem
}

@group(0) @binding(0) var<storage, read> a: array<Elem>;
@group(0) @binding(1) var<storage, read> b: array<Elem>;
@group(0) @binding(2) var<storage, read_write> out: array<Elem>;
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
        out[i] = max(a[i], Elem(0.0));
    }
}

// out = clamp(a, 0, 6)
@compute @workgroup_size(256)
fn relu6_forward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32,
                 @builtin(num_workgroups) groups: vec3<u32>) {
    let i = index(wid, lid, groups);
    if (i < params.n) {
        out[i] = clamp(a[i], Elem(0.0), Elem(6.0));
    }
}

// a = forward input x or output y (both are positive at the same places), b = dy;
// out = dy where x > 0 (PyTorch's convention: 0 at x = 0)
@compute @workgroup_size(256)
fn relu_backward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32,
                 @builtin(num_workgroups) groups: vec3<u32>) {
    let i = index(wid, lid, groups);
    if (i < params.n) {
        out[i] = select(Elem(0.0), b[i], a[i] > Elem(0.0));
    }
}

// a = forward input x or output y (y = x where 0 < x < 6, and 0 or 6 elsewhere), b = dy;
// out = dy where 0 < x < 6
@compute @workgroup_size(256)
fn relu6_backward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32,
                  @builtin(num_workgroups) groups: vec3<u32>) {
    let i = index(wid, lid, groups);
    if (i < params.n) {
        let x = a[i];
        out[i] = select(Elem(0.0), b[i], (x > Elem(0.0)) & (x < Elem(6.0)));
    }
}

// Applied to the sum by add_forward: 0 none, 1 ReLU, 2 ReLU6 (a residual sum and the
// activation after it in one pass).
override ACTIVATION: u32 = 0u;

// out = act(a + b)
@compute @workgroup_size(256)
fn add_forward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32,
               @builtin(num_workgroups) groups: vec3<u32>) {
    let i = index(wid, lid, groups);
    if (i < params.n) {
        let sum = a[i] + b[i];
        if (ACTIVATION == 1u) {
            out[i] = max(sum, Elem(0.0));
        } else if (ACTIVATION == 2u) {
            out[i] = clamp(sum, Elem(0.0), Elem(6.0));
        } else {
            out[i] = sum;
        }
    }
}

