// First level of the CE reductions over every element, per (sample n, group g, slice s of
// the H·W positions), each reading its slice of the tensors once:
//   forward   the mean of each of the group's d channels and their centred d×d co-moment
//             Σ_j (x_j − x̄)(x_j − x̄)ᵀ over the slice; its diagonal doubles as the
//             per-(n, c) spatial variance of the reweighting branch. In evaluation only the
//             diagonal blocks are accumulated.
//   backward  the d×d block D = Σ_j dY_j x_jᵀ (summed over samples it is G·xᵀ / λ of the
//             decorrelation backward; its diagonal summed over slices is Σ_hw dY·X of the
//             reweighting backward) and the row sums Σ_j dY_j (for the centred variant).
//
// The d×d matrix is cut into 4×4 blocks; LANES threads share a block, each summing every
// LANES-th position of the slice in registers: per position it loads the block's 4 + 4
// channel values straight from the tensors and does 16 multiply-adds. Nothing is staged in
// workgroup memory and no barrier is passed until the lanes' sums are added at the end.
// The forward pass sums values shifted by the slice's first position x_0, then centres:
// Σ(x − x̄)(x − x̄)ᵀ = Σ(x − x_0)(x − x_0)ᵀ − L·(x̄ − x_0)(x̄ − x_0)ᵀ. The subtraction
// cancels (1 + (x̄ − x_0)²/σ²)-fold, a small factor since x_0 is one of the data, however
// far the channel's mean lies from zero (raw moments, E[xxᵀ] − x̄x̄ᵀ, would cancel
// (1 + x̄²/σ²)-fold).
//
// x, dy:    [N, C, H·W] row-major (the forward pass binds x twice and reads no dy)
// partials: [N, G, S, d + d²]: per unit d means (forward) or row sums of dY (backward),
//           then the d×d matrix, row-major

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
@group(0) @binding(1) var<storage, read> dy: array<f32>;
@group(0) @binding(2) var<storage, read_write> partials: array<f32>;
@group(0) @binding(3) var<uniform> p: Params;

// The group size d (p.d), fixed per pipeline so that loops over channels unroll.
override D: u32 = 16u;
const WG: u32 = 256u;
// 4×4 blocks per side of the d×d matrix, blocks, and threads per block.
override NB: u32 = (D + 3u) / 4u;
override BLOCKS: u32 = NB * NB;
override LANES: u32 = WG / BLOCKS;

var<workgroup> red: array<f32, 2048>;   // up to 8 sums of each of the 256 threads
var<workgroup> row_sum: array<f32, 16>; // forward: Σ (x_i − x_0,i) over the slice

// Where a (sample, group, slice) unit's positions lie.
struct Unit {
    index: u32,
    base: u32, // the group's first channel at position 0
    hw0: u32,  // the slice's positions hw0..hw1
    hw1: u32,
}

fn unit_of(wid: vec3<u32>, nwg: vec3<u32>) -> Unit {
    let unit = wid.y * nwg.x + wid.x;
    let s = unit % p.slices;
    let g = (unit / p.slices) % p.groups;
    let n = unit / (p.slices * p.groups);
    let hw0 = s * p.slice_len;
    return Unit(unit, (n * p.c + g * D) * p.hw, hw0, min(hw0 + p.slice_len, p.hw));
}

// Channels row0..row0 + 3 of the group at position j of dy (from_dy) or x, zero past the
// group's d channels. Written out: a software rasteriser would index the vector lane by
// lane in a loop.
fn quad(from_dy: bool, base: u32, row0: u32, j: u32) -> vec4<f32> {
    let at = base + row0 * p.hw + j;
    return vec4<f32>(
        channel(from_dy, row0 < D, at),
        channel(from_dy, row0 + 1u < D, at + p.hw),
        channel(from_dy, row0 + 2u < D, at + 2u * p.hw),
        channel(from_dy, row0 + 3u < D, at + 3u * p.hw),
    );
}

fn channel(from_dy: bool, inside: bool, at: u32) -> f32 {
    if (!inside) {
        return 0.0;
    }
    if (from_dy) {
        return dy[at];
    }
    return x[at];
}

// The total over the LANES threads of block b of sum c (of `width` per thread) in red.
fn red_total(b: u32, c: u32, width: u32) -> f32 {
    var total = 0.0;
    for (var q = 0u; q < LANES; q += 1u) {
        total += red[(b * LANES + q) * width + c];
    }
    return total;
}

// Sums the threads' 4×4 blocks acc over the lanes of each block and writes matrix entry
// (i, k) to partials[out + D + i·D + k] as the total minus correction(i, k): two rows of
// every block at a time, through red. Every thread of the workgroup must call it.
fn write_blocks(acc: array<vec4<f32>, 4>, lid: u32, out: u32, centre: bool, count: f32) {
    for (var half = 0u; half < 2u; half += 1u) {
        for (var c = 0u; c < 4u; c += 1u) {
            red[lid * 8u + c] = acc[2u * half][c];
            red[lid * 8u + 4u + c] = acc[2u * half + 1u][c];
        }
        workgroupBarrier();
        if (lid < BLOCKS * 8u) {
            let bt = lid / 8u;
            let c = lid % 8u;
            let i = 4u * (bt / NB) + 2u * half + c / 4u;
            let k = 4u * (bt % NB) + c % 4u;
            if (i < D && k < D) {
                var total = red_total(bt, c, 8u);
                if (centre) {
                    total -= row_sum[i] * row_sum[k] / count;
                }
                partials[out + D + i * D + k] = total;
            }
        }
        workgroupBarrier();
    }
}

@compute @workgroup_size(256)
fn forward(@builtin(workgroup_id) wid: vec3<u32>,
           @builtin(local_invocation_index) lid: u32,
           @builtin(num_workgroups) nwg: vec3<u32>) {
    let u = unit_of(wid, nwg);
    if (u.index >= p.n * p.groups * p.slices) {
        return;
    }
    let blk = lid / LANES;
    let q = lid % LANES;
    let a = blk / NB;
    let b = blk % NB;

    // Every sum is taken of values shifted by the slice's first position, x_0.
    let count = f32(u.hw1 - u.hw0);
    var acc: array<vec4<f32>, 4>;
    var sum_a = vec4<f32>();
    if (blk < BLOCKS && (p.training == 1u || a == b)) {
        let shift_a = quad(false, u.base, 4u * a, u.hw0);
        let shift_b = quad(false, u.base, 4u * b, u.hw0);
        for (var j = u.hw0 + q; j < u.hw1; j += LANES) {
            let xa = quad(false, u.base, 4u * a, j) - shift_a;
            let xb = quad(false, u.base, 4u * b, j) - shift_b;
            acc[0] += xa.x * xb;
            acc[1] += xa.y * xb;
            acc[2] += xa.z * xb;
            acc[3] += xa.w * xb;
            sum_a += xa;
        }
    }

    // Row sums of x − x_0, from the diagonal blocks.
    for (var c = 0u; c < 4u; c += 1u) {
        red[lid * 4u + c] = sum_a[c];
    }
    workgroupBarrier();
    if (lid < D) {
        row_sum[lid] = red_total((lid / 4u) * (NB + 1u), lid % 4u, 4u);
    }
    workgroupBarrier();
    let out = u.index * (D + D * D);
    if (lid < D) {
        partials[out + lid] = x[u.base + lid * p.hw + u.hw0] + row_sum[lid] / count;
    }
    write_blocks(acc, lid, out, true, count);
}

@compute @workgroup_size(256)
fn backward(@builtin(workgroup_id) wid: vec3<u32>,
            @builtin(local_invocation_index) lid: u32,
            @builtin(num_workgroups) nwg: vec3<u32>) {
    let u = unit_of(wid, nwg);
    if (u.index >= p.n * p.groups * p.slices) {
        return;
    }
    let blk = lid / LANES;
    let q = lid % LANES;
    let a = blk / NB;
    let b = blk % NB;

    var acc: array<vec4<f32>, 4>;
    var sum_a = vec4<f32>();
    if (blk < BLOCKS) {
        for (var j = u.hw0 + q; j < u.hw1; j += LANES) {
            let ga = quad(true, u.base, 4u * a, j);
            let xb = quad(false, u.base, 4u * b, j);
            acc[0] += ga.x * xb;
            acc[1] += ga.y * xb;
            acc[2] += ga.z * xb;
            acc[3] += ga.w * xb;
            sum_a += ga;
        }
    }

    // Row sums of dY, from the blocks of column 0.
    let out = u.index * (D + D * D);
    for (var c = 0u; c < 4u; c += 1u) {
        red[lid * 4u + c] = sum_a[c];
    }
    workgroupBarrier();
    if (lid < D) {
        partials[out + lid] = red_total((lid / 4u) * NB, lid % 4u, 4u);
    }
    workgroupBarrier();
    write_blocks(acc, lid, out, false, 1.0);
}
