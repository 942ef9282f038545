// Column sums of a row-major matrix: out[j] = Σ_i x[i, j] (the bias gradient of a linear
// layer, db = Σ_n dy). A workgroup owns 32 adjacent columns; its 8 rows of threads walk
// the rows of x with stride 8, so neighbouring threads read neighbouring addresses, and the
// 8 partial sums of each column are then added in a fixed order (deterministic results).
//
// x: [rows, cols] row-major
// out: [cols]

struct Params {
    rows: u32,
    cols: u32,
}

@group(0) @binding(0) var<storage, read> x: array<f32>;
@group(0) @binding(1) var<storage, read_write> out: array<f32>;
@group(0) @binding(2) var<uniform> params: Params;

const COLS: u32 = 32u;
const ROW_LANES: u32 = 8u;

var<workgroup> partial: array<f32, 256>;

@compute @workgroup_size(32, 8)
fn column_sum(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>,
              @builtin(num_workgroups) groups: vec3<u32>) {
    let col = (wid.y * groups.x + wid.x) * COLS + lid.x;
    var sum = 0.0;
    if (col < params.cols) {
        for (var i = lid.y; i < params.rows; i += ROW_LANES) {
            sum += x[i * params.cols + col];
        }
    }
    partial[lid.y * COLS + lid.x] = sum;
    workgroupBarrier();

    if (lid.y == 0u && col < params.cols) {
        var total = 0.0;
        for (var r = 0u; r < ROW_LANES; r++) {
            total += partial[r * COLS + lid.x];
        }
        out[col] = total;
    }
}
