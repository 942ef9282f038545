// Global average pooling over each [H, W] plane, and its backward pass.
//
// Forward: LANES threads (a power of two, chosen by the host from the plane size) share one
// plane; each sums every LANES-th element, so neighbouring threads read neighbouring
// addresses, and the partial sums are added by a tree in workgroup memory. One workgroup of
// 256 threads covers 256 / LANES planes. Backward: one thread per input element spreads
// dy / (H·W) over its plane.
//
// forward:  src = x: [planes, plane_size] (NCHW with planes = N·C), dst = y: [planes]
// backward: src = dy: [planes], dst = dx: [planes, plane_size]

struct Params {
    planes: u32,
    plane_size: u32,
}

@group(0) @binding(0) var<storage, read> src: array<f32>;
@group(0) @binding(1) var<storage, read_write> dst: array<f32>;
@group(0) @binding(2) var<uniform> params: Params;

override LANES: u32 = 16u;

const WORKGROUP: u32 = 256u;

var<workgroup> partial: array<f32, 256>;

@compute @workgroup_size(256)
fn global_avg_pool_forward(@builtin(workgroup_id) wid: vec3<u32>,
                           @builtin(local_invocation_index) lid: u32,
                           @builtin(num_workgroups) groups: vec3<u32>) {
    let plane = (wid.y * groups.x + wid.x) * (WORKGROUP / LANES) + lid / LANES;
    let lane = lid % LANES;
    var sum = 0.0;
    if (plane < params.planes) {
        let base = plane * params.plane_size;
        for (var i = lane; i < params.plane_size; i += LANES) {
            sum += src[base + i];
        }
    }
    partial[lid] = sum;
    workgroupBarrier();

    for (var stride = LANES / 2u; stride > 0u; stride /= 2u) {
        if (lane < stride) {
            partial[lid] += partial[lid + stride];
        }
        workgroupBarrier();
    }
    if (lane == 0u && plane < params.planes) {
        dst[plane] = partial[lid] / f32(params.plane_size);
    }
}

@compute @workgroup_size(256)
fn global_avg_pool_backward(@builtin(workgroup_id) wid: vec3<u32>,
                            @builtin(local_invocation_index) lid: u32,
                            @builtin(num_workgroups) groups: vec3<u32>) {
    let i = (wid.y * groups.x + wid.x) * WORKGROUP + lid;
    if (i < params.planes * params.plane_size) {
        dst[i] = src[i / params.plane_size] / f32(params.plane_size);
    }
}
