// One step of stochastic gradient descent on one parameter tensor, PyTorch's rule with
// dampening 0, fused so each of w, g and the momentum buffer is read once:
//     d = g + weight_decay·w
//     with momentum μ > 0: buf = d on the first step, μ·buf + d later;
//                          d = d + μ·buf (Nesterov) or d = buf
//     w = w − lr·d
// One thread per element. With μ = 0 the buffer binding is a placeholder and never touched.
// The hyperparameters come from a small storage buffer rather than the uniform, so a
// recorded training step can be replayed while a schedule changes the learning rate.
//
// param, grad, momentum_buf: [n] flat, any layout (all three share it)
// hyper: [4] = lr, momentum, weight_decay, nesterov (1.0 or 0.0)

struct Params {
    n: u32,
    first_step: u32,  // 1: the buffer is initialised to d
}

@group(0) @binding(0) var<storage, read_write> param: array<f32>;
@group(0) @binding(1) var<storage, read> grad: array<f32>;
@group(0) @binding(2) var<storage, read_write> momentum_buf: array<f32>;
@group(0) @binding(3) var<storage, read> hyper: array<f32, 4>;
@group(0) @binding(4) var<uniform> params: Params;

const WORKGROUP: u32 = 256u;

@compute @workgroup_size(256)
fn sgd_step(@builtin(workgroup_id) wid: vec3<u32>,
            @builtin(local_invocation_index) lid: u32,
            @builtin(num_workgroups) groups: vec3<u32>) {
    let i = (wid.y * groups.x + wid.x) * WORKGROUP + lid;
    if (i >= params.n) {
        return;
    }
    let lr = hyper[0];
    let momentum = hyper[1];
    let w = param[i];
    var d = grad[i] + hyper[2] * w;
    if (momentum != 0.0) {
        var buf = d;
        if (params.first_step == 0u) {
            buf = momentum * momentum_buf[i] + d;
        }
        momentum_buf[i] = buf;
        if (hyper[3] != 0.0) {
            d = d + momentum * buf;
        } else {
            d = buf;
        }
    }
    param[i] = w - lr * d;
}
