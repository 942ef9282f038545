// 2-D max pooling, backward, without atomics: one thread per input element visits the
// output windows that cover it and adds dy of each window whose saved argmax is this
// element. Windows are visited in a fixed order, so results are deterministic.
//
// dy, argmax: [N, C, OH, OW] row-major (argmax: u32, flat h·W + w within the input plane)
// dx: [N, C, H, W] row-major

struct Params {
    planes: u32,
    h: u32,
    w: u32,
    oh: u32,
    ow: u32,
    kernel_h: u32,
    kernel_w: u32,
    stride_h: u32,
    stride_w: u32,
    pad_h: u32,
    pad_w: u32,
}

@group(0) @binding(0) var<storage, read> dy: array<f32>;
@group(0) @binding(1) var<storage, read> argmax: array<u32>;
@group(0) @binding(2) var<storage, read_write> dx: array<f32>;
@group(0) @binding(3) var<uniform> params: Params;

const WORKGROUP: u32 = 256u;

// Output positions o whose window [o·stride − pad, o·stride − pad + kernel) holds p:
// returns [first, last + 1), clipped to [0, outputs).
fn covering(p: u32, kernel: u32, stride: u32, pad: u32, outputs: u32) -> vec2<u32> {
    let shifted = p + pad;
    var first = 0u;
    if (shifted + 1u > kernel) {
        first = (shifted + 1u - kernel + stride - 1u) / stride;
    }
    let end = min(shifted / stride + 1u, outputs);
    return vec2<u32>(first, max(end, first));
}

@compute @workgroup_size(256)
fn max_pool2d_backward(@builtin(workgroup_id) wid: vec3<u32>,
                       @builtin(local_invocation_index) lid: u32,
                       @builtin(num_workgroups) groups: vec3<u32>) {
    let i = (wid.y * groups.x + wid.x) * WORKGROUP + lid;
    let in_plane = params.h * params.w;
    if (i >= params.planes * in_plane) {
        return;
    }
    let plane = i / in_plane;
    let at = i % in_plane;
    let rows = covering(at / params.w, params.kernel_h, params.stride_h, params.pad_h, params.oh);
    let cols = covering(at % params.w, params.kernel_w, params.stride_w, params.pad_w, params.ow);

    let base = plane * params.oh * params.ow;
    var sum = 0.0;
    for (var oy = rows.x; oy < rows.y; oy++) {
        for (var ox = cols.x; ox < cols.y; ox++) {
            let o = base + oy * params.ow + ox;
            if (argmax[o] == at) {
                sum += dy[o];
            }
        }
    }
    dx[i] = sum;
}
