// One step of stochastic gradient descent on one parameter tensor, PyTorch's rule with
// dampening 0, fused so each of w, g and the momentum buffer is read once:
//     d = g + weight_decay·w
//     with momentum μ > 0: buf = d on the first step, μ·buf + d later;
//                          d = d + μ·buf (Nesterov) or d = buf
//     w = w − lr·d
// One thread per element. With μ = 0 the buffer binding is a placeholder and never touched.
//
// param, grad, momentum_buf: [n] flat, any layout (all three share it)

struct Params {
    n: u32,
    lr: f32,
    momentum: f32,
    weight_decay: f32,
    first_step: u32,  // 1: the buffer is initialised to d
    nesterov: u32,    // 1: Nesterov momentum
}

@group(0) @binding(0) var<storage, read_write> param: array<f32>;
@group(0) @binding(1) var<storage, read> grad: array<f32>;
@group(0) @binding(2) var<storage, read_write> momentum_buf: array<f32>;
@group(0) @binding(3) var<uniform> params: Params;

const WORKGROUP: u32 = 256u;

@compute @workgroup_size(256)
fn sgd_step(@builtin(workgroup_id) wid: vec3<u32>,
            @builtin(local_invocation_index) lid: u32,
            @builtin(num_workgroups) groups: vec3<u32>) {
    let i = (wid.y * groups.x + wid.x) * WORKGROUP + lid;
    if (i >= params.n) {
        return;
    }
    let w = param[i];
    var d = grad[i] + params.weight_decay * w;
    if (params.momentum != 0.0) {
        var buf = d;
        if (params.first_step == 0u) {
            buf = params.momentum * momentum_buf[i] + d;
        }
        momentum_buf[i] = buf;
        if (params.nesterov != 0u) {
            d = d + params.momentum * buf;
        } else {
            d = buf;
        }
    }
    param[i] = w - params.lr * d;
}
