// First level of the CE statistics: for each (sample n, group g, slice s of the H·W
// positions) the mean of each of the group's d channels and their centred d×d co-moment
// Σ_j (x_j − x̄)(x_j − x̄)ᵀ over the slice. The slice is read once, in chunks staged in
// workgroup memory; each chunk is centred on its own mean and merged into the running
// result with Chan's parallel combination, so no E[xxᵀ] − x̄x̄ᵀ cancellation occurs. The
// co-moment's diagonal doubles as the per-(n, c) spatial variance of the reweighting
// branch. In evaluation only the diagonal is accumulated.
//
// Thread t works on matrix entry e = t mod d² (row i = e / d, column k = e mod d) over
// every (256 / d²)-th column of a chunk; the partial sums are added at the end.
//
// x:        [N, C, H·W] row-major
// partials: [N, G, S, d + d²]: per unit the d slice means, then the d×d co-moment

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

@group(0) @binding(0) var<storage, read> x: array<f32>;
@group(0) @binding(1) var<storage, read_write> partials: array<f32>;
@group(0) @binding(2) var<uniform> p: Params;

const WG: u32 = 256u;
const TILE: u32 = 1024u;

var<workgroup> tile: array<f32, 1024>;       // chunk: d rows × (TILE / d) columns
var<workgroup> red: array<f32, 256>;
var<workgroup> chunk_mean: array<f32, 16>;
var<workgroup> run_mean: array<f32, 16>;

@compute @workgroup_size(256)
fn ce_stats_forward(@builtin(workgroup_id) wid: vec3<u32>,
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

    let cols_max = TILE / d;        // columns per chunk
    let row_threads = WG / d;       // threads summing one row of a chunk
    let e = lid % dd;
    let q = lid / dd;
    let sets = WG / dd;             // thread sets splitting a chunk's columns
    let i = e / d;
    let k = e % d;
    let works = q < sets && (p.training == 1u || i == k);

    var acc = 0.0;
    var count = 0.0;
    if (lid < d) {
        run_mean[lid] = 0.0;
    }
    for (var c0 = hw0; c0 < hw1; c0 += cols_max) {
        let cols = min(cols_max, hw1 - c0);
        for (var t = lid; t < d * cols_max; t += WG) {
            let c = t % cols_max;
            var v = 0.0;
            if (c < cols) {
                v = x[base + (t / cols_max) * p.hw + c0 + c];
            }
            tile[t] = v;
        }
        workgroupBarrier();

        // Chunk means: row_threads threads per row, then one thread per row adds them.
        let r = lid / row_threads;
        var sum = 0.0;
        if (r < d) {
            for (var c = lid % row_threads; c < cols; c += row_threads) {
                sum += tile[r * cols_max + c];
            }
        }
        red[lid] = sum;
        workgroupBarrier();
        if (lid < d) {
            var total = 0.0;
            for (var u = 0u; u < row_threads; u += 1u) {
                total += red[lid * row_threads + u];
            }
            chunk_mean[lid] = total / f32(cols);
        }
        workgroupBarrier();

        for (var t = lid; t < d * cols_max; t += WG) {
            if (t % cols_max < cols) {
                tile[t] -= chunk_mean[t / cols_max];
            }
        }
        workgroupBarrier();

        let nb = f32(cols);
        if (works) {
            var part = 0.0;
            for (var c = q; c < cols; c += sets) {
                part += tile[i * cols_max + c] * tile[k * cols_max + c];
            }
            acc += part;
            if (q == 0u) {
                // Chan: the co-moment gains δ_i δ_k · n_a n_b / (n_a + n_b).
                let di = chunk_mean[i] - run_mean[i];
                let dk = chunk_mean[k] - run_mean[k];
                acc += di * dk * (count * nb / (count + nb));
            }
        }
        workgroupBarrier();
        if (lid < d) {
            run_mean[lid] += (chunk_mean[lid] - run_mean[lid]) * (nb / (count + nb));
        }
        count += nb;
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
        partials[out + lid] = run_mean[lid];
    }
}
