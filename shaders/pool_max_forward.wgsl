// 2-D max pooling (PyTorch's MaxPool2d without dilation or ceil mode), forward. One thread
// per output element scans its window row by row; padding never wins (it counts as -inf).
// The first maximum in scan order is kept, as PyTorch does, and its position is saved as a
// flat index h·W + w within the input plane for the backward pass.
//
// x: [N, C, H, W] row-major
// y, argmax: [N, C, OH, OW] row-major (argmax: u32)

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

@group(0) @binding(0) var<storage, read> x: array<f32>;
@group(0) @binding(1) var<storage, read_write> y: array<f32>;
@group(0) @binding(2) var<storage, read_write> argmax: array<u32>;
@group(0) @binding(3) var<uniform> params: Params;

const WORKGROUP: u32 = 256u;

@compute @workgroup_size(256)
fn max_pool2d_forward(@builtin(workgroup_id) wid: vec3<u32>,
                      @builtin(local_invocation_index) lid: u32,
                      @builtin(num_workgroups) groups: vec3<u32>) {
    let i = (wid.y * groups.x + wid.x) * WORKGROUP + lid;
    let out_plane = params.oh * params.ow;
    if (i >= params.planes * out_plane) {
        return;
    }
    let plane = i / out_plane;
    let oy = (i % out_plane) / params.ow;
    let ox = i % params.ow;

    // Window rows [h0, h1) and columns [w0, w1), clipped to the input; the host guarantees
    // padding ≤ kernel / 2, so every window keeps at least one element.
    let top = oy * params.stride_h;
    let left = ox * params.stride_w;
    let h0 = max(top, params.pad_h) - params.pad_h;
    let w0 = max(left, params.pad_w) - params.pad_w;
    let h1 = min(top + params.kernel_h, params.h + params.pad_h) - params.pad_h;
    let w1 = min(left + params.kernel_w, params.w + params.pad_w) - params.pad_w;

    let base = plane * params.h * params.w;
    var best_at = h0 * params.w + w0;
    var best = x[base + best_at];
    for (var r = h0; r < h1; r++) {
        for (var s = w0; s < w1; s++) {
            let at = r * params.w + s;
            let v = x[base + at];
            if (v > best) {
                best = v;
                best_at = at;
            }
        }
    }
    y[i] = best;
    argmax[i] = best_at;
}
