// First level of the CE backward reductions, reading dY and X once: for each (sample n,
// group g, slice s of H·W) the d×d block D = Σ_j dY_j x_jᵀ over the slice's positions
// (summed over samples it is G·xᵀ / λ of the decorrelation backward; its diagonal summed
// over slices is Σ_hw dY·X of the reweighting backward) and the row sums Σ_j dY_j
// (needed by the centred variant). Chunks of both tensors are staged in workgroup memory;
// thread t works on entry e = t mod d² over every (256 / d²)-th column.
//
// dy, x:    [N, C, H·W] row-major
// partials: [N, G, S, d + d²]: per unit the d row sums of dY, then D (d×d row-major)

// Uniform parameters shared by every CE kernel (`Params` in src/kernels/ce.rs).
struct Params {
    n: u32,           // batch N
    c: u32,           // channels C
    hw: u32,          // positions per plane, H·W
    d: u32,           // group size d (≤ 16)
    groups: u32,      // G = C / d
    hidden: u32,      // C / reduction
    iterations: u32,  // Newton–Schulz steps T
    slices: u32,      // slices per (sample, group) in the statistics passes
    slice_len: u32,   // positions per slice (the last may be shorter)
    training: u32,    // 1: batch statistics, 0: running statistics
    centred: u32,     // 1: IterNorm-style P_T/sqrt(tr Σ)·(x − μ)
    eps: f32,         // ε added to the covariance diagonal
    momentum: f32,    // running-statistics momentum
    w_stride: u32,    // ce_apply: group g's matrix starts at g·w_stride + w_offset
    w_offset: u32,
    mu_stride: u32,   // ce_apply: group g's mean starts at g·mu_stride + mu_offset
    mu_offset: u32,
    ln_eps: f32,      // layer-norm epsilon of the reweighting MLP
    block_samples: u32, // samples per block of the combine passes
    blocks: u32,      // blocks per group, ceil(N / block_samples)
}

@group(0) @binding(0) var<storage, read> dy: array<f32>;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> partials: array<f32>;
@group(0) @binding(3) var<uniform> p: Params;

const WG: u32 = 256u;
const TILE: u32 = 1024u;

var<workgroup> dy_tile: array<f32, 1024>;    // d rows × (TILE / d) columns
var<workgroup> x_tile: array<f32, 1024>;
var<workgroup> red: array<f32, 256>;

@compute @workgroup_size(256)
fn ce_stats_backward(@builtin(workgroup_id) wid: vec3<u32>,
                     @builtin(local_invocation_index) lid: u32,
                     @builtin(num_workgroups) nwg: vec3<u32>) {
    let unit = wid.y * nwg.x + wid.x;
    if (unit >= p.n * p.groups * p.slices) {
        return;
    }
    let d = p.d;
    let dd = d * d;
    let s = unit % p.slices;
    let g = (unit / p.slices) % p.groups;
    let n = unit / (p.slices * p.groups);
    let base = (n * p.c + g * d) * p.hw;
    let hw0 = s * p.slice_len;
    let hw1 = min(hw0 + p.slice_len, p.hw);

    let cols_max = TILE / d;
    let row_threads = WG / d;
    let e = lid % dd;
    let q = lid / dd;
    let sets = WG / dd;
    let i = e / d;
    let k = e % d;

    var acc = 0.0;
    var row_sum = 0.0;
    for (var c0 = hw0; c0 < hw1; c0 += cols_max) {
        let cols = min(cols_max, hw1 - c0);
        for (var t = lid; t < d * cols_max; t += WG) {
            let c = t % cols_max;
            var gv = 0.0;
            var xv = 0.0;
            if (c < cols) {
                let at = base + (t / cols_max) * p.hw + c0 + c;
                gv = dy[at];
                xv = x[at];
            }
            dy_tile[t] = gv;
            x_tile[t] = xv;
        }
        workgroupBarrier();

        if (q < sets) {
            var part = 0.0;
            for (var c = q; c < cols; c += sets) {
                part += dy_tile[i * cols_max + c] * x_tile[k * cols_max + c];
            }
            acc += part;
        }
        let r = lid / row_threads;
        var sum = 0.0;
        if (r < d) {
            for (var c = lid % row_threads; c < cols; c += row_threads) {
                sum += dy_tile[r * cols_max + c];
            }
        }
        red[lid] = sum;
        workgroupBarrier();
        if (lid < d) {
            var total = 0.0;
            for (var u = 0u; u < row_threads; u += 1u) {
                total += red[lid * row_threads + u];
            }
            row_sum += total;
        }
        workgroupBarrier();
    }

    red[lid] = acc;
    workgroupBarrier();
    let out = unit * (d + dd);
    if (lid < dd) {
        var total = 0.0;
        for (var u = 0u; u < sets; u += 1u) {
            total += red[u * dd + lid];
        }
        partials[out + d + lid] = total;
    }
    if (lid < d) {
        partials[out + lid] = row_sum;
    }
}
