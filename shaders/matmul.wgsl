// General matrix product C = op(A) · op(B) (+ bias), op = identity or transpose, f32.
//
// A workgroup of 8×8 threads computes one 64×64 tile of C. Each thread owns an 8×8
// register micro-tile made of four 4×4 blocks: rows 4·ty.. and 32 + 4·ty.., columns 4·tx..
// and 32 + 4·tx.., so that neighbouring threads read neighbouring vec4s of the staged tiles.
// K is walked in slices of TILE_K = 16: the workgroup stages a 64×16 slice of op(A) and a
// 16×64 slice of op(B) in workgroup memory, both k-major as vec4 along M and N; per k a
// thread then reads 2 vec4 of A and 2 of B and does 64 multiply-adds with them.
//
// Why 8×8 per thread rather than 4×4: every load from workgroup or storage memory is costly
// on software rasterisers (lavapipe gathers it lane by lane), and on GPUs it competes with
// the FMA pipes; an 8×8 micro-tile halves the loads per multiply-add (lavapipe, 512³: about
// 1.8 GFLOP/s against 0.9 for 4×4 per thread). 64 accumulators fit the registers of GPUs.
//
// Staging loads take 4 consecutive elements along whichever dimension is contiguous in
// storage, as one vec4 through a second, vec4-typed view of the same buffer when that
// dimension is a multiple of 4 (VEC_A, VEC_B). Elements past the edges of A and B load as
// zero (from a clamped, always valid address), and only in-range elements of C are written.
//
// Under CPU tuning (a software rasteriser, see cenet::gpu::Tuning) matmul_rows runs instead:
// the row-block form of the convolution kernels (conv2d_gemm.wgsl), below.
//
// a, a4: [M, K] row-major, or [K, M] when TRANS_A (a4: the same buffer seen as vec4)
// b, b4: [K, N] row-major, or [N, K] when TRANS_B (b4: likewise)
// bias: [N], added to every row of C when HAS_BIAS (otherwise any buffer, unread)
// c: [M, N] row-major

struct Params {
    m: u32,
    n: u32,
    k: u32,
}

@group(0) @binding(0) var<storage, read> a: array<f32>;
@group(0) @binding(1) var<storage, read> a4: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> b: array<f32>;
@group(0) @binding(3) var<storage, read> b4: array<vec4<f32>>;
@group(0) @binding(4) var<storage, read> bias: array<f32>;
@group(0) @binding(5) var<storage, read_write> c: array<f32>;
@group(0) @binding(6) var<uniform> params: Params;

override TRANS_A: bool = false;
override TRANS_B: bool = false;
// The contiguous dimension of A (of B) is a multiple of 4: stage through a4 (b4).
override VEC_A: bool = false;
override VEC_B: bool = false;
override HAS_BIAS: bool = false;

const TILE: u32 = 64u;
const TILE_K: u32 = 16u;
const QUADS: u32 = 16u; // TILE / 4: vec4s in one staged k-row
const THREADS: u32 = 64u;

// a_tile[k * QUADS + i] = op(A)[row0 + 4i .. +4, k0 + k]
// b_tile[k * QUADS + j] = op(B)[k0 + k, col0 + 4j .. +4]            (4 KiB each)
var<workgroup> a_tile: array<vec4<f32>, 256>;
var<workgroup> b_tile: array<vec4<f32>, 256>;

// Four consecutive elements of a row-major [rows, cols] matrix, starting at (r, c0);
// those outside the matrix are zero. `vec` selects the vec4 view (cols % 4 == 0).
fn load_a_quad(r: u32, c0: u32, rows: u32, cols: u32) -> vec4<f32> {
    let inside = r < rows;
    if (VEC_A) {
        let i = min(r, rows - 1u) * (cols / 4u) + min(c0, cols - 1u) / 4u;
        return select(vec4<f32>(0.0), a4[i], inside && c0 < cols);
    }
    let base = min(r, rows - 1u) * cols;
    var v: vec4<f32>;
    for (var j = 0u; j < 4u; j++) {
        v[j] = select(0.0, a[base + min(c0 + j, cols - 1u)], inside && c0 + j < cols);
    }
    return v;
}

fn load_b_quad(r: u32, c0: u32, rows: u32, cols: u32) -> vec4<f32> {
    let inside = r < rows;
    if (VEC_B) {
        let i = min(r, rows - 1u) * (cols / 4u) + min(c0, cols - 1u) / 4u;
        return select(vec4<f32>(0.0), b4[i], inside && c0 < cols);
    }
    let base = min(r, rows - 1u) * cols;
    var v: vec4<f32>;
    for (var j = 0u; j < 4u; j++) {
        v[j] = select(0.0, b[base + min(c0 + j, cols - 1u)], inside && c0 + j < cols);
    }
    return v;
}

// Stages op(A)[row0.., k0..] and op(B)[k0.., col0..]: 256 quads each, 4 per thread.
fn stage(t: u32, row0: u32, col0: u32, k0: u32) {
    let m = params.m;
    let n = params.n;
    let k = params.k;
    for (var q = 0u; q < 4u; q++) {
        let e = q * THREADS + t; // quad index within the slice
        if (TRANS_A) {
            // A is [K, M]: quad = 4 rows of op(A) at one k
            let kk = e / QUADS;
            let i = e % QUADS;
            a_tile[kk * QUADS + i] = load_a_quad(k0 + kk, row0 + 4u * i, k, m);
        } else {
            // A is [M, K]: quad = 4 k of one row of op(A), scattered over 4 k-rows
            let r = e / 4u;
            let kk = 4u * (e % 4u);
            let v = load_a_quad(row0 + r, k0 + kk, m, k);
            let i = r / 4u;
            let lane = r % 4u;
            a_tile[kk * QUADS + i][lane] = v.x;
            a_tile[(kk + 1u) * QUADS + i][lane] = v.y;
            a_tile[(kk + 2u) * QUADS + i][lane] = v.z;
            a_tile[(kk + 3u) * QUADS + i][lane] = v.w;
        }
        if (TRANS_B) {
            // B is [N, K]: quad = 4 k of one column of op(B)
            let cc = e / 4u;
            let kk = 4u * (e % 4u);
            let v = load_b_quad(col0 + cc, k0 + kk, n, k);
            let j = cc / 4u;
            let lane = cc % 4u;
            b_tile[kk * QUADS + j][lane] = v.x;
            b_tile[(kk + 1u) * QUADS + j][lane] = v.y;
            b_tile[(kk + 2u) * QUADS + j][lane] = v.z;
            b_tile[(kk + 3u) * QUADS + j][lane] = v.w;
        } else {
            // B is [K, N]: quad = 4 columns of op(B) at one k
            let kk = e / QUADS;
            let j = e % QUADS;
            b_tile[kk * QUADS + j] = load_b_quad(k0 + kk, col0 + 4u * j, k, n);
        }
    }
}

@compute @workgroup_size(8, 8)
fn matmul(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>,
          @builtin(local_invocation_index) t: u32) {
    let row0 = wid.y * TILE;
    let col0 = wid.x * TILE;
    let tx = lid.x;
    let ty = lid.y;

    // acc_RC_i: row i of the 4×4 block in row half R and column half C
    var acc00_0 = vec4<f32>(0.0); var acc00_1 = vec4<f32>(0.0);
    var acc00_2 = vec4<f32>(0.0); var acc00_3 = vec4<f32>(0.0);
    var acc01_0 = vec4<f32>(0.0); var acc01_1 = vec4<f32>(0.0);
    var acc01_2 = vec4<f32>(0.0); var acc01_3 = vec4<f32>(0.0);
    var acc10_0 = vec4<f32>(0.0); var acc10_1 = vec4<f32>(0.0);
    var acc10_2 = vec4<f32>(0.0); var acc10_3 = vec4<f32>(0.0);
    var acc11_0 = vec4<f32>(0.0); var acc11_1 = vec4<f32>(0.0);
    var acc11_2 = vec4<f32>(0.0); var acc11_3 = vec4<f32>(0.0);

    for (var k0 = 0u; k0 < params.k; k0 += TILE_K) {
        stage(t, row0, col0, k0);
        workgroupBarrier();

        for (var kk = 0u; kk < TILE_K; kk++) {
            let a0 = a_tile[kk * QUADS + ty];
            let a1 = a_tile[kk * QUADS + ty + 8u];
            let b0 = b_tile[kk * QUADS + tx];
            let b1 = b_tile[kk * QUADS + tx + 8u];
            acc00_0 += a0.x * b0; acc01_0 += a0.x * b1;
            acc00_1 += a0.y * b0; acc01_1 += a0.y * b1;
            acc00_2 += a0.z * b0; acc01_2 += a0.z * b1;
            acc00_3 += a0.w * b0; acc01_3 += a0.w * b1;
            acc10_0 += a1.x * b0; acc11_0 += a1.x * b1;
            acc10_1 += a1.y * b0; acc11_1 += a1.y * b1;
            acc10_2 += a1.z * b0; acc11_2 += a1.z * b1;
            acc10_3 += a1.w * b0; acc11_3 += a1.w * b1;
        }
        workgroupBarrier();
    }

    let r0 = row0 + 4u * ty;
    let r1 = r0 + 32u;
    let c0 = col0 + 4u * tx;
    let c1 = c0 + 32u;
    let bias0 = bias_quad(c0);
    let bias1 = bias_quad(c1);
    store_quad(r0, c0, acc00_0 + bias0); store_quad(r0, c1, acc01_0 + bias1);
    store_quad(r0 + 1u, c0, acc00_1 + bias0); store_quad(r0 + 1u, c1, acc01_1 + bias1);
    store_quad(r0 + 2u, c0, acc00_2 + bias0); store_quad(r0 + 2u, c1, acc01_2 + bias1);
    store_quad(r0 + 3u, c0, acc00_3 + bias0); store_quad(r0 + 3u, c1, acc01_3 + bias1);
    store_quad(r1, c0, acc10_0 + bias0); store_quad(r1, c1, acc11_0 + bias1);
    store_quad(r1 + 1u, c0, acc10_1 + bias0); store_quad(r1 + 1u, c1, acc11_1 + bias1);
    store_quad(r1 + 2u, c0, acc10_2 + bias0); store_quad(r1 + 2u, c1, acc11_2 + bias1);
    store_quad(r1 + 3u, c0, acc10_3 + bias0); store_quad(r1 + 3u, c1, acc11_3 + bias1);
}

// bias[col .. col + 4], zero past the end or without a bias.
fn bias_quad(col: u32) -> vec4<f32> {
    var v = vec4<f32>(0.0);
    if (HAS_BIAS) {
        for (var j = 0u; j < 4u; j++) {
            if (col + j < params.n) {
                v[j] = bias[col + j];
            }
        }
    }
    return v;
}

// c[row, col .. col + 4], the part inside C.
fn store_quad(row: u32, col: u32, v: vec4<f32>) {
    if (row >= params.m || col >= params.n) {
        return;
    }
    let base = row * params.n + col;
    if (col + 3u < params.n) {
        c[base] = v.x;
        c[base + 1u] = v.y;
        c[base + 2u] = v.z;
        c[base + 3u] = v.w;
    } else {
        for (var j = 0u; j < 4u; j++) {
            if (col + j < params.n) {
                c[base + j] = v[j];
            }
        }
    }
}

// The row-block form: every thread of a workgroup covers the same ROWS (16 or 32) rows of C
// and 8 columns of its own, GROUP_THREADS threads side by side. A is staged 1024 / (ROWS / 4)
// columns of K at a time, a_rows[kk·(ROWS / 4) + q] = op(A)[row0 + 4q .. + 4, k0 + kk], and
// since every thread reads the same address of it, a CPU loads each quad once for all its
// lanes; each thread loads its 8 values of op(B) at k itself (two vec4s when B is [K, N]
// with N a multiple of 4) and uses each for ROWS multiply-adds. Its sums are held as units of
// 16 × 4 (include/tile16x4.wgsl). On lavapipe this form runs well ahead of the 8 × 8 tiles
// above, whose per-thread blocks are sized for a GPU's registers.

// #include tile16x4.wgsl

override ROWS: u32 = 32u;
override GROUP_THREADS: u32 = 64u;

var<workgroup> a_rows: array<vec4<f32>, 1024>;

// op(A)[row, k], zero outside A.
fn a_at(row: u32, k: u32) -> f32 {
    if (row >= params.m || k >= params.k) {
        return 0.0;
    }
    if (TRANS_A) {
        return a[k * params.m + row];
    }
    return a[row * params.k + k];
}

// op(B)[k, col], zero past column n.
fn b_at(k: u32, col: u32) -> f32 {
    if (col >= params.n) {
        return 0.0;
    }
    if (TRANS_B) {
        return b[col * params.k + k];
    }
    return b[k * params.n + col];
}

// op(B)[k, col .. col + 4], col a multiple of 4, zero past column n.
fn b_row4(k: u32, col: u32) -> B4 {
    if (VEC_B && !TRANS_B) {
        let i = (k * params.n + min(col, params.n - 1u)) / 4u;
        let v = select(vec4<f32>(0.0), b4[i], col < params.n);
        return B4(v.x, v.y, v.z, v.w);
    }
    return B4(b_at(k, col), b_at(k, col + 1u), b_at(k, col + 2u), b_at(k, col + 3u));
}

// Writes rows row0.. (those below m) of columns col..col + 3 of C from a unit of sums.
fn store_unit(row0: u32, col: u32, t: Tile16x4) {
    store_rows(row0, col, t.q00, t.q10, t.q20, t.q30);
    store_rows(row0, col + 1u, t.q01, t.q11, t.q21, t.q31);
    store_rows(row0, col + 2u, t.q02, t.q12, t.q22, t.q32);
    store_rows(row0, col + 3u, t.q03, t.q13, t.q23, t.q33);
}

// Writes rows row0..row0 + 15 (those below m) of column col of C, given as 4 row quads.
fn store_rows(row0: u32, col: u32, q0: vec4<f32>, q1: vec4<f32>, q2: vec4<f32>,
              q3: vec4<f32>) {
    if (col >= params.n) {
        return;
    }
    var add = 0.0;
    if (HAS_BIAS) {
        add = bias[col];
    }
    for (var r = 0u; r < 16u && row0 + r < params.m; r += 1u) {
        let v = row_of16(r, q0, q1, q2, q3);
        c[(row0 + r) * params.n + col] = v + add;
    }
}

@compute @workgroup_size(GROUP_THREADS)
fn matmul_rows(@builtin(workgroup_id) wid: vec3<u32>,
               @builtin(local_invocation_index) lid: u32) {
    let quads = ROWS / 4u;
    let chunk = 1024u / quads;
    let row0 = wid.y * ROWS;
    let col0 = (wid.x * GROUP_THREADS + lid) * 8u;
    var top_left: Tile16x4;
    var top_right: Tile16x4;
    var bottom_left: Tile16x4;
    var bottom_right: Tile16x4;
    for (var k0 = 0u; k0 < params.k; k0 += chunk) {
        let len = min(chunk, params.k - k0);
        for (var t = lid; t < len * quads; t += GROUP_THREADS) {
            let k = k0 + t / quads;
            let row = row0 + 4u * (t % quads);
            a_rows[t] = vec4<f32>(a_at(row, k), a_at(row + 1u, k), a_at(row + 2u, k),
                                  a_at(row + 3u, k));
        }
        workgroupBarrier();
        for (var kk = 0u; kk < len; kk += 1u) {
            let b_left = b_row4(k0 + kk, col0);
            let b_right = b_row4(k0 + kk, col0 + 4u);
            let at = kk * quads;
            let a0 = a_rows[at];
            let a1 = a_rows[at + 1u];
            let a2 = a_rows[at + 2u];
            let a3 = a_rows[at + 3u];
            top_left = fma16x4(top_left, a0, a1, a2, a3, b_left);
            top_right = fma16x4(top_right, a0, a1, a2, a3, b_right);
            if (ROWS == 32u) {
                let a4 = a_rows[at + 4u];
                let a5 = a_rows[at + 5u];
                let a6 = a_rows[at + 6u];
                let a7 = a_rows[at + 7u];
                bottom_left = fma16x4(bottom_left, a4, a5, a6, a7, b_left);
                bottom_right = fma16x4(bottom_right, a4, a5, a6, a7, b_right);
            }
        }
        workgroupBarrier();
    }
    store_unit(row0, col0, top_left);
    store_unit(row0, col0 + 4u, top_right);
    if (ROWS == 32u) {
        store_unit(row0 + 16u, col0, bottom_left);
        store_unit(row0 + 16u, col0 + 4u, bottom_right);
    }
}
