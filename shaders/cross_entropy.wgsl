// Softmax cross-entropy per row, with label smoothing ε (target = (1 − ε)·onehot + ε/K), and
// optionally its gradient. LANES threads (a power of two chosen by the host from K) share a
// row; a workgroup of 256 threads covers 256 / LANES rows. Per row:
//   1. the maximum logit and its first index (tree reduction, ties to the lower index);
//   2. Σ exp(x − max) and Σ x (tree reduction);
//   3. loss = log Σ exp(x − max) + (1 − ε)·(max − x_label) + ε·(max − mean x),
//      which is −Σ_j target_j · log softmax_j rearranged so that no term overflows;
//      correct = 1 when the first maximum is at the label;
//   4. with WRITE_GRAD: dlogits = (softmax − target) · grad_scale (1/N for the mean loss).
// A label ≥ K is ignored on the GPU: its row has loss 0, correct 0 and gradient 0.
//
// logits: [N, K] row-major; labels: [N] u32
// row_stats: [N, 2] (loss, correct) per row
// dlogits: [N, K] row-major, written only when WRITE_GRAD (otherwise any buffer)

struct Params {
    rows: u32,
    classes: u32,
    smoothing: f32,
    grad_scale: f32,
}

@group(0) @binding(0) var<storage, read> logits: array<f32>;
@group(0) @binding(1) var<storage, read> labels: array<u32>;
@group(0) @binding(2) var<storage, read_write> row_stats: array<f32>;
@group(0) @binding(3) var<storage, read_write> dlogits: array<f32>;
@group(0) @binding(4) var<uniform> params: Params;

override LANES: u32 = 16u;
override WRITE_GRAD: bool = false;

const WORKGROUP: u32 = 256u;

var<workgroup> red_value: array<f32, 256>;
var<workgroup> red_index: array<u32, 256>;
var<workgroup> red_other: array<f32, 256>;

@compute @workgroup_size(256)
fn cross_entropy_rows(@builtin(workgroup_id) wid: vec3<u32>,
                      @builtin(local_invocation_index) lid: u32,
                      @builtin(num_workgroups) groups: vec3<u32>) {
    let row = (wid.y * groups.x + wid.x) * (WORKGROUP / LANES) + lid / LANES;
    let lane = lid % LANES;
    let k = params.classes;
    let in_range = row < params.rows;
    let base = row * k;

    // 1. Maximum and its first index. Lanes scan ascending indices, so a lane keeps its own
    // first maximum; lanes that own no element hold index k, which never wins a tie.
    var best = 0.0;
    var best_at = k;
    if (in_range) {
        for (var j = lane; j < k; j += LANES) {
            let v = logits[base + j];
            if (best_at == k || v > best) {
                best = v;
                best_at = j;
            }
        }
    }
    red_value[lid] = best;
    red_index[lid] = best_at;
    workgroupBarrier();
    for (var stride = LANES / 2u; stride > 0u; stride /= 2u) {
        if (lane < stride) {
            let v = red_value[lid + stride];
            let at = red_index[lid + stride];
            let mine = red_index[lid];
            let better = v > red_value[lid] || (v == red_value[lid] && at < mine);
            if (at != k && (mine == k || better)) {
                red_value[lid] = v;
                red_index[lid] = at;
            }
        }
        workgroupBarrier();
    }
    let row_max = red_value[lid - lane];
    let row_argmax = red_index[lid - lane];
    workgroupBarrier();

    // 2. Σ exp(x − max) and Σ x.
    var sum_exp = 0.0;
    var sum_x = 0.0;
    if (in_range) {
        for (var j = lane; j < k; j += LANES) {
            let v = logits[base + j];
            sum_exp += exp(v - row_max);
            sum_x += v;
        }
    }
    red_value[lid] = sum_exp;
    red_other[lid] = sum_x;
    workgroupBarrier();
    for (var stride = LANES / 2u; stride > 0u; stride /= 2u) {
        if (lane < stride) {
            red_value[lid] += red_value[lid + stride];
            red_other[lid] += red_other[lid + stride];
        }
        workgroupBarrier();
    }
    let total_exp = red_value[lid - lane];
    let mean_x = red_other[lid - lane] / f32(k);
    if (!in_range) {
        return;
    }

    // 3. Loss and top-1 hit of this row.
    let label = labels[row];
    let valid = label < k;
    let eps = params.smoothing;
    if (lane == 0u) {
        var loss = 0.0;
        var correct = 0.0;
        if (valid) {
            let x_label = logits[base + label];
            loss = log(total_exp) + (1.0 - eps) * (row_max - x_label) + eps * (row_max - mean_x);
            correct = select(0.0, 1.0, row_argmax == label);
        }
        row_stats[2u * row] = loss;
        row_stats[2u * row + 1u] = correct;
    }

    // 4. Gradient.
    if (WRITE_GRAD) {
        let uniform_part = eps / f32(k);
        for (var j = lane; j < k; j += LANES) {
            var g = 0.0;
            if (valid) {
                let p = exp(logits[base + j] - row_max) / total_exp;
                g = (p - uniform_part - select(0.0, 1.0 - eps, j == label)) * params.grad_scale;
            }
            dlogits[base + j] = g;
        }
    }
}
