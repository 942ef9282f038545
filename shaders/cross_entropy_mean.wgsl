// Mean loss and number of correct rows from the per-row results of cross_entropy.wgsl. One
// workgroup: each thread sums every 256th row, then a tree adds the 256 partial sums in a
// fixed order (deterministic). The loss is divided by N, ignored rows included.
//
// row_stats: [N, 2] (loss, correct) per row
// loss: [1]; correct: [1] (a count, as f32)

struct Params {
    rows: u32,
}

@group(0) @binding(0) var<storage, read> row_stats: array<f32>;
@group(0) @binding(1) var<storage, read_write> loss: array<f32>;
@group(0) @binding(2) var<storage, read_write> correct: array<f32>;
@group(0) @binding(3) var<uniform> params: Params;

const WORKGROUP: u32 = 256u;

var<workgroup> loss_sum: array<f32, 256>;
var<workgroup> correct_sum: array<f32, 256>;

@compute @workgroup_size(256)
fn cross_entropy_mean(@builtin(local_invocation_index) lid: u32) {
    var l = 0.0;
    var c = 0.0;
    for (var row = lid; row < params.rows; row += WORKGROUP) {
        l += row_stats[2u * row];
        c += row_stats[2u * row + 1u];
    }
    loss_sum[lid] = l;
    correct_sum[lid] = c;
    workgroupBarrier();
    for (var stride = WORKGROUP / 2u; stride > 0u; stride /= 2u) {
        if (lid < stride) {
            loss_sum[lid] += loss_sum[lid + stride];
            correct_sum[lid] += correct_sum[lid + stride];
        }
        workgroupBarrier();
    }
    if (lid == 0u) {
        loss[0] = loss_sum[0] / f32(params.rows);
        correct[0] = correct_sum[0];
    }
}
