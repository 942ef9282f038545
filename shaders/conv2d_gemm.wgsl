// Dense 2-D convolution (groups = 1) as a tiled implicit GEMM, C[M, N] = A[M, K] · B[K, N],
// where neither A nor B is ever written out: while staging a K step in workgroup memory,
// each thread gathers its elements of A and B straight from the NCHW tensors, with zeros
// where a patch reaches into the padding or a tile runs past a matrix edge.
//
// A workgroup of 64 threads, TY along M by TX = 64 / TY along N, computes a tile of C of
// 8·TY rows × 8·TX columns. Each thread owns an 8 × 8 register micro-tile made of four
// 4 × 4 blocks: row quads ty and TY + ty, column quads tx and TX + tx, so that neighbouring
// threads read neighbouring vec4s of the staged tiles. Per K step (16, or 8 when TY = 2) the
// A and B tiles are staged k-major as vec4s along M and N (at most 12.25 KiB), and per k a
// thread reads 2 vec4s of each and does 64 multiply-adds. 8 × 8 rather than 4 × 4 per thread
// halves the loads per multiply-add: loads are what costs on a software rasteriser (lavapipe
// gathers them lane by lane), and on GPUs they compete with the FMA pipes.
//
// TY is 8 (64 × 64 tiles) unless M is small: 4 gives 32 × 128 tiles and 2 gives 16 × 256,
// so that layers of 16 or 32 channels compute no padding rows.
//
// The entry points share the loop and differ in how A, B and C map onto tensors:
//   forward           M = Cout, N = batch·OH·OW, K = Cin·KH·KW
//                     a_src = w [Cout, Cin, KH, KW], b_src = x [batch, Cin, H, W] (patches),
//                     bias [Cout] (when has_bias), out = y [batch, Cout, OH, OW]
//   backward_data     one dispatch per stride phase (ph, pw): the input pixels
//                     (ih, iw) = (ph + stride·i, pw + stride·j) are reached only by the taps
//                     kh = tap_h + stride·u (kw likewise) with tap_h = (ph + pad) % stride,
//                     at oh = i + shift_h − u with shift_h = (ph + pad) / stride.
//                     M = Cin, N = batch·sub_h·sub_w (pixels of the phase),
//                     K = Cout·sub_kernel_h·sub_kernel_w (taps of the phase)
//                     a_src = w (read transposed), b_src = dy [batch, Cout, OH, OW],
//                     out = dx [batch, Cin, H, W] (the phase's pixels)
//   backward_weight   M = Cout, N = Cin·KH·KW, K = batch·OH·OW, split into slices of
//                     k_per_split (a multiple of 16), one per workgroup z
//                     a_src = dy, b_src = x (patches), out = partial sums [splits, Cout, N];
//                     conv2d_reduce.wgsl adds the slices.
// All buffers are row-major. bias is bound but unread unless has_bias is set.
//
// Layers with few rows (output channels, or input channels for backward_data) have their
// own kernels, which keep each thread's whole column of C in named registers (a software
// rasteriser indexes private arrays lane by lane) and gather their own B values, each of
// which then serves every row with no round trip through workgroup memory:
//   forward_narrow, backward_data_narrow  M ≤ 16, K ≤ 256: all of A staged once; all rows
//                                         for 8 columns per thread
//   forward_wide, backward_data_wide      M ≤ 32: A staged 128 columns of K at a time; all
//                                         rows for 4 columns per thread
//   backward_weight_small                 the weight gradient in either register tile
//                                         (override WIDE), for N ≤ 512 (narrow) or 256
//                                         (wide), several K slices per workgroup
// The tiled kernel would spend a staged load and a workgroup-memory read on each B value
// for the same 16 or 32 multiply-adds.
//
// Under CPU tuning (a software rasteriser; see cenet::gpu::Tuning) every product the narrow
// kernels do not take runs in the row-block kernels (forward_rows, backward_data_rows,
// backward_weight_rows; below): 16 or 32 rows × 8 columns per thread, all threads of a
// workgroup on the same rows, so that their reads of the staged A are one broadcast load.
// On lavapipe they run the 32- and 64-channel layers of a ResNet about 1.4× as fast as the
// tiled and wide kernels, whose per-thread blocks are sized for a GPU's registers instead.
// Weight gradients of 3×3 kernels whose rows allow it run backward_weight_taps instead: a
// thread per input channel, so that each vec4 of x it loads serves 3 taps (below).
//
// Under SEGMENTS (stride 1 along the width, rows of whole vec4s; see row_quad) the row-block
// and narrow kernels load a thread's 8 columns of B, which are then 8 neighbouring pixels of
// one source row, as 3 aligned vec4s of b_vec (b_src's buffer bound a second time) rather
// than 8 gathered scalars, and with kernels 3 wide (TRIPLES) the 3 taps of a kernel row from
// one load of 4 vec4s; the weight-gradient kernels likewise load each column's B for 4
// consecutive k (4 neighbouring pixels of a row of dY) as 1 or 2 vec4s (segment4).

struct Params {
    batch: u32,
    in_channels: u32,
    in_h: u32,
    in_w: u32,
    out_channels: u32,
    out_h: u32,
    out_w: u32,
    kernel_h: u32,
    kernel_w: u32,
    stride_h: u32,
    stride_w: u32,
    pad_h: u32,
    pad_w: u32,
    has_bias: u32,
    m: u32,
    n: u32,
    k: u32,
    k_per_split: u32,
    tiles_n: u32,
    tiles: u32,
    phase_h: u32,
    phase_w: u32,
    sub_h: u32,
    sub_w: u32,
    sub_kernel_h: u32,
    sub_kernel_w: u32,
    tap_h: u32,
    tap_w: u32,
    shift_h: u32,
    shift_w: u32,
}

@group(0) @binding(0) var<storage, read> a_src: array<f32>;
@group(0) @binding(1) var<storage, read> b_src: array<f32>;
@group(0) @binding(2) var<storage, read> bias: array<f32>;
@group(0) @binding(3) var<storage, read_write> out: array<f32>;
// b_src seen as vec4s (read only under SEGMENTS; otherwise any buffer of a vec4 or more).
@group(0) @binding(4) var<storage, read> b_vec: array<vec4<f32>>;
@group(0) @binding(5) var<uniform> params: Params;

// Threads along M: 2, 4 or 8.
override TY: u32 = 8u;

const THREADS: u32 = 64u;
const FORWARD: u32 = 0u;
const BACKWARD_DATA: u32 = 1u;
const BACKWARD_WEIGHT: u32 = 2u;

// Rows 4g..4g + 3 of the A tile at step row k are a_tile[k * (2·TY + 1) + g] (padded by one
// vec4 so that stores of consecutive k hit distinct banks); columns 4j..4j + 3 of the B tile
// at k are b_tile[k * 2·TX + j].
var<workgroup> a_tile: array<vec4<f32>, 272>; // [k_step, 2·TY + 1] vec4, at most [16, 17]
var<workgroup> b_tile: array<vec4<f32>, 512>; // [k_step, 2·TX] vec4, at most 512

// Threads along N.
fn tx_count() -> u32 {
    return THREADS / TY;
}

// Depth of one K step: the B tile holds at most 512 vec4s.
fn k_step() -> u32 {
    return min(16u, 4u * TY);
}

// n / d. Integer division has no vector instruction on CPUs, so software rasterisers run
// it lane by lane; below 2^22 it is done exactly in f32 instead: with n = q·d + r,
// (n + ½)/d = q + (r + ½)/d lies at least ½/d from an integer, and the quotient's rounding
// error, under (q + 1)·2⁻²⁴, is smaller than that while n + d < 2^23.
fn udiv(n: u32, d: u32) -> u32 {
    if (n < 4194304u && d < 4194304u) {
        return u32((f32(n) + 0.5) / f32(d));
    }
    return n / d;
}

// i as (i / (h·w), i / w % h, i % w)
fn unflatten(i: u32, h: u32, w: u32) -> vec3<i32> {
    let plane = h * w;
    let q = udiv(i, plane);
    let r = i - q * plane;
    let y = udiv(r, w);
    return vec3<i32>(i32(q), i32(y), i32(r - y * w));
}

// Column k of A as (index of its row 0, step between rows).
fn a_column(mode: u32, k: u32) -> vec2<u32> {
    let p = params;
    if (mode == FORWARD) {
        // w[row, k]
        return vec2<u32>(k, p.k);
    }
    if (mode == BACKWARD_DATA) {
        // w[co, row, tap_h + stride·u, tap_w + stride·v] with k = (co, u, v)
        let c = unflatten(k, p.sub_kernel_h, p.sub_kernel_w);
        let kh = p.tap_h + p.stride_h * u32(c.y);
        let kw = p.tap_w + p.stride_w * u32(c.z);
        let taps = p.kernel_h * p.kernel_w;
        return vec2<u32>(u32(c.x) * p.in_channels * taps + kh * p.kernel_w + kw, taps);
    }
    // dy[n, row, oh, ow] with k = (n, oh, ow)
    let plane = p.out_h * p.out_w;
    let n = udiv(k, plane);
    return vec2<u32>(n * p.out_channels * plane + k - n * plane, plane);
}

// B[k, col] is b_src[c.x + r.x + (c.y + r.y)·width + c.z + r.z] with c = b_col(col) and
// r = b_row(k), or 0 where (c.y + r.y, c.z + r.z) falls outside the height × width image.

fn b_col(mode: u32, col: u32) -> vec3<i32> {
    let p = params;
    if (mode == FORWARD) {
        // col = (n, oh, ow): the patch's top-left corner in x
        let c = unflatten(col, p.out_h, p.out_w);
        return vec3<i32>(
            c.x * i32(p.in_channels * p.in_h * p.in_w),
            c.y * i32(p.stride_h) - i32(p.pad_h),
            c.z * i32(p.stride_w) - i32(p.pad_w),
        );
    }
    if (mode == BACKWARD_DATA) {
        // col = (n, i, j): the pixel (phase_h + stride·i, phase_w + stride·j), reaching dy
        // at (i + shift_h − u, j + shift_w − v)
        let c = unflatten(col, p.sub_h, p.sub_w);
        return vec3<i32>(
            c.x * i32(p.out_channels * p.out_h * p.out_w),
            c.y + i32(p.shift_h),
            c.z + i32(p.shift_w),
        );
    }
    // col = (ci, kh, kw): the tap's offset from a patch's top-left corner
    let c = unflatten(col, p.kernel_h, p.kernel_w);
    return vec3<i32>(c.x * i32(p.in_h * p.in_w), c.y - i32(p.pad_h), c.z - i32(p.pad_w));
}

fn b_row(mode: u32, k: u32) -> vec3<i32> {
    let p = params;
    if (mode == FORWARD) {
        // k = (ci, kh, kw)
        let c = unflatten(k, p.kernel_h, p.kernel_w);
        return vec3<i32>(c.x * i32(p.in_h * p.in_w), c.y, c.z);
    }
    if (mode == BACKWARD_DATA) {
        // k = (co, u, v)
        let c = unflatten(k, p.sub_kernel_h, p.sub_kernel_w);
        return vec3<i32>(c.x * i32(p.out_h * p.out_w), -c.y, -c.z);
    }
    // k = (n, oh, ow)
    let c = unflatten(k, p.out_h, p.out_w);
    return vec3<i32>(
        c.x * i32(p.in_channels * p.in_h * p.in_w),
        c.y * i32(p.stride_h),
        c.z * i32(p.stride_w),
    );
}

fn b_value(mode: u32, col: vec3<i32>, row: vec3<i32>) -> f32 {
    let y = col.y + row.y;
    let x = col.z + row.z;
    var height = i32(params.in_h);
    var width = i32(params.in_w);
    if (mode == BACKWARD_DATA) {
        height = i32(params.out_h);
        width = i32(params.out_w);
    }
    if (y < 0 || x < 0 || y >= height || x >= width) {
        return 0.0;
    }
    return b_src[u32(col.x + row.x + y * width + x)];
}

// B[k, col] for column col decoded as `at`, or 0 past the matrix.
fn b_load(mode: u32, col: u32, at: vec3<i32>, k: u32, k_end: u32, row: vec3<i32>) -> f32 {
    if (k >= k_end || col >= params.n) {
        return 0.0;
    }
    return b_value(mode, at, row);
}

// Where row 0 of column col of C lives in out; rows follow every c_step(mode) elements.
fn c_column(mode: u32, col: u32, split: u32) -> u32 {
    let p = params;
    if (mode == BACKWARD_WEIGHT) {
        return split * p.m * p.n + col;
    }
    if (mode == BACKWARD_DATA) {
        // col = (n, i, j) of the phase
        let c = unflatten(col, p.sub_h, p.sub_w);
        let ih = p.phase_h + p.stride_h * u32(c.y);
        let iw = p.phase_w + p.stride_w * u32(c.z);
        return u32(c.x) * p.m * p.in_h * p.in_w + ih * p.in_w + iw;
    }
    let plane = c_step(mode);
    return (col / plane) * p.m * plane + col % plane;
}

fn c_step(mode: u32) -> u32 {
    if (mode == FORWARD) {
        return params.out_h * params.out_w;
    }
    if (mode == BACKWARD_DATA) {
        return params.in_h * params.in_w;
    }
    return params.n;
}

// c_column of the 4 columns from col (clamped to the last, whose stores are skipped).
fn c_quad(mode: u32, col: u32, last: u32, split: u32) -> vec4<u32> {
    return vec4<u32>(
        c_column(mode, min(col, last), split),
        c_column(mode, min(col + 1u, last), split),
        c_column(mode, min(col + 2u, last), split),
        c_column(mode, min(col + 3u, last), split),
    );
}

// Writes row `row` of a 4 × 4 block: columns col..col + 3 at out[at + row·step].
fn store_row(mode: u32, row: u32, v: vec4<f32>, col: u32, at: vec4<u32>, step: u32) {
    if (row >= params.m) {
        return;
    }
    var b = 0.0;
    if (mode == FORWARD && params.has_bias != 0u) {
        b = bias[row];
    }
    let r = row * step;
    if (col < params.n) {
        out[at.x + r] = v.x + b;
    }
    if (col + 1u < params.n) {
        out[at.y + r] = v.y + b;
    }
    if (col + 2u < params.n) {
        out[at.z + r] = v.z + b;
    }
    if (col + 3u < params.n) {
        out[at.w + r] = v.w + b;
    }
}

fn gemm(mode: u32, wid: vec3<u32>, lid: u32, groups: vec3<u32>) {
    let tile = wid.y * groups.x + wid.x;
    if (tile >= params.tiles) {
        return;
    }
    let tx_n = tx_count();
    let quads_m = 2u * TY;
    let quads_n = 2u * tx_n;
    let bk = k_step();
    let row0 = (tile / params.tiles_n) * 4u * quads_m;
    let col0 = (tile % params.tiles_n) * 4u * quads_n;
    let k_begin = wid.z * params.k_per_split;
    let k_end = min(k_begin + params.k_per_split, params.k);

    // Staging: this thread loads row quads lid / bk + i·(64 / bk) of A at step row a_k = lid % bk,
    // and column quad b_quad of B at step rows lid / quads_n + i·(64 / quads_n). Its four
    // columns of B are decoded once, here.
    let a_k = lid % bk;
    let b_quad = lid % quads_n;
    let b_col0 = col0 + 4u * b_quad;
    let last = params.n - 1u;
    let c0 = b_col(mode, min(b_col0, last));
    let c1 = b_col(mode, min(b_col0 + 1u, last));
    let c2 = b_col(mode, min(b_col0 + 2u, last));
    let c3 = b_col(mode, min(b_col0 + 3u, last));

    // Computing: row quads ty and TY + ty, column quads tx and TX + tx of the tile, in
    // acc[8·row block + 4·column block + row in the quad].
    let ty = lid / tx_n;
    let tx = lid % tx_n;
    var acc: array<vec4<f32>, 16>;

    for (var k0 = k_begin; k0 < k_end; k0 += bk) {
        let ka = k0 + a_k;
        for (var g = lid / bk; g < quads_m; g += THREADS / bk) {
            let row = row0 + 4u * g;
            var v = vec4<f32>();
            if (ka < k_end) {
                v = a_quad(mode, ka, row);
            }
            a_tile[a_k * (quads_m + 1u) + g] = v;
        }
        for (var kb = lid / quads_n; kb < bk; kb += THREADS / quads_n) {
            let k = k0 + kb;
            let row = b_row(mode, k);
            b_tile[kb * quads_n + b_quad] = vec4<f32>(
                b_load(mode, b_col0, c0, k, k_end, row),
                b_load(mode, b_col0 + 1u, c1, k, k_end, row),
                b_load(mode, b_col0 + 2u, c2, k, k_end, row),
                b_load(mode, b_col0 + 3u, c3, k, k_end, row),
            );
        }
        workgroupBarrier();

        for (var kk = 0u; kk < bk; kk++) {
            let a0 = a_tile[kk * (quads_m + 1u) + ty];
            let a1 = a_tile[kk * (quads_m + 1u) + TY + ty];
            let b0 = b_tile[kk * quads_n + tx];
            let b1 = b_tile[kk * quads_n + tx_n + tx];
            acc[0] += a0.x * b0;
            acc[1] += a0.y * b0;
            acc[2] += a0.z * b0;
            acc[3] += a0.w * b0;
            acc[4] += a0.x * b1;
            acc[5] += a0.y * b1;
            acc[6] += a0.z * b1;
            acc[7] += a0.w * b1;
            acc[8] += a1.x * b0;
            acc[9] += a1.y * b0;
            acc[10] += a1.z * b0;
            acc[11] += a1.w * b0;
            acc[12] += a1.x * b1;
            acc[13] += a1.y * b1;
            acc[14] += a1.z * b1;
            acc[15] += a1.w * b1;
        }
        workgroupBarrier();
    }

    let step = c_step(mode);
    let col_a = col0 + 4u * tx;
    let col_b = col0 + 4u * (tx_n + tx);
    let at_a = c_quad(mode, col_a, last, wid.z);
    let at_b = c_quad(mode, col_b, last, wid.z);
    let row_a = row0 + 4u * ty;
    let row_b = row0 + 4u * (TY + ty);
    store_row(mode, row_a, acc[0], col_a, at_a, step);
    store_row(mode, row_a + 1u, acc[1], col_a, at_a, step);
    store_row(mode, row_a + 2u, acc[2], col_a, at_a, step);
    store_row(mode, row_a + 3u, acc[3], col_a, at_a, step);
    store_row(mode, row_a, acc[4], col_b, at_b, step);
    store_row(mode, row_a + 1u, acc[5], col_b, at_b, step);
    store_row(mode, row_a + 2u, acc[6], col_b, at_b, step);
    store_row(mode, row_a + 3u, acc[7], col_b, at_b, step);
    store_row(mode, row_b, acc[8], col_a, at_a, step);
    store_row(mode, row_b + 1u, acc[9], col_a, at_a, step);
    store_row(mode, row_b + 2u, acc[10], col_a, at_a, step);
    store_row(mode, row_b + 3u, acc[11], col_a, at_a, step);
    store_row(mode, row_b, acc[12], col_b, at_b, step);
    store_row(mode, row_b + 1u, acc[13], col_b, at_b, step);
    store_row(mode, row_b + 2u, acc[14], col_b, at_b, step);
    store_row(mode, row_b + 3u, acc[15], col_b, at_b, step);
}

// A of the narrow kernels: a_all[k * 4 + q] = rows 4q..4q + 3 of column k (16 KiB).
var<workgroup> a_all: array<vec4<f32>, 1024>;

// Columns per thread of the narrow kernels.
const NARROW_COLS: u32 = 8u;

fn gemm_narrow(mode: u32, wid: vec3<u32>, lid: u32, groups: vec3<u32>) {
    let tile = wid.y * groups.x + wid.x;
    if (tile >= params.tiles) {
        return;
    }
    let k_end = params.k;

    // Stage A: 4 row quads per column k, zero past row m.
    for (var t = lid; t < k_end * 4u; t += THREADS) {
        a_all[t] = a_quad(mode, t / 4u, 4u * (t % 4u));
    }
    workgroupBarrier();

    let col0 = (tile * THREADS + lid) * NARROW_COLS;
    let left = cols4(mode, col0);
    let right = cols4(mode, col0 + 4u);
    var acc: Narrow;
    if (TRIPLES) {
        for (var k = 0u; k < k_end; k += 3u) {
            let b = segment8x3(mode, left.c0, b_row(mode, k));
            acc = narrow_fma(acc, k * 4u, b.k0);
            acc = narrow_fma(acc, k * 4u + 4u, b.k1);
            acc = narrow_fma(acc, k * 4u + 8u, b.k2);
        }
    } else {
        for (var k = 0u; k < k_end; k += 1u) {
            acc = narrow_fma(acc, k * 4u, b_eight(mode, left, right, b_row(mode, k)));
        }
    }
    store16x4(mode, col0, 0u, 0u, acc.left);
    store16x4(mode, col0 + 4u, 0u, 0u, acc.right);
}

// Rows row..row + 3 of column k of A, zero past row m.
fn a_quad(mode: u32, k: u32, row: u32) -> vec4<f32> {
    let at = a_column(mode, k);
    let m = params.m;
    var v = vec4<f32>();
    if (row < m) {
        v.x = a_src[at.x + row * at.y];
    }
    if (row + 1u < m) {
        v.y = a_src[at.x + (row + 1u) * at.y];
    }
    if (row + 2u < m) {
        v.z = a_src[at.x + (row + 2u) * at.y];
    }
    if (row + 3u < m) {
        v.w = a_src[at.x + (row + 3u) * at.y];
    }
    return v;
}

// The per-thread state of the narrow and wide kernels is made of units of 16 rows × 4
// columns (Tile16x4, see include/tile16x4.wgsl): a narrow thread holds two units side by
// side (8 columns), a wide one two stacked (32 rows). Column j of a unit has its decoded B
// column cj and its gathered B value bj at the current k.
struct Cols4 {
    c0: vec3<i32>,
    c1: vec3<i32>,
    c2: vec3<i32>,
    c3: vec3<i32>,
}

// #include tile16x4.wgsl

// B columns col0..col0 + 3, decoded (clamped to the last column).
fn cols4(mode: u32, col0: u32) -> Cols4 {
    let last = params.n - 1u;
    return Cols4(
        b_col(mode, min(col0, last)),
        b_col(mode, min(col0 + 1u, last)),
        b_col(mode, min(col0 + 2u, last)),
        b_col(mode, min(col0 + 3u, last)),
    );
}

// B[k, ·] of the 4 columns, for k decoded as row.
fn gather4(mode: u32, c: Cols4, row: vec3<i32>) -> B4 {
    return B4(
        b_value(mode, c.c0, row),
        b_value(mode, c.c1, row),
        b_value(mode, c.c2, row),
        b_value(mode, c.c3, row),
    );
}

// Writes rows row0..row0 + 15 (those below m) of columns col0..col0 + 3 of split `split`.
fn store16x4(mode: u32, col0: u32, split: u32, row0: u32, acc: Tile16x4) {
    store_column(mode, col0, split, row0, acc.q00, acc.q10, acc.q20, acc.q30);
    store_column(mode, col0 + 1u, split, row0, acc.q01, acc.q11, acc.q21, acc.q31);
    store_column(mode, col0 + 2u, split, row0, acc.q02, acc.q12, acc.q22, acc.q32);
    store_column(mode, col0 + 3u, split, row0, acc.q03, acc.q13, acc.q23, acc.q33);
}

// Writes rows row0..row0 + 15 (those below m) of column col of C, given as 4 row quads.
fn store_column(mode: u32, col: u32, split: u32, row0: u32, q0: vec4<f32>, q1: vec4<f32>,
                q2: vec4<f32>, q3: vec4<f32>) {
    if (col >= params.n) {
        return;
    }
    let at = c_column(mode, col, split);
    let step = c_step(mode);
    for (var r = 0u; r < 16u && row0 + r < params.m; r += 1u) {
        var v = row_of16(r, q0, q1, q2, q3);
        let row = row0 + r;
        if (mode == FORWARD && params.has_bias != 0u) {
            v += bias[row];
        }
        out[at + row * step] = v;
    }
}

// A thread of the narrow kernels: 16 rows × 8 columns from col0, as two units.
struct Narrow {
    left: Tile16x4,
    right: Tile16x4,
}

// acc + A[16 rows, k] · B[k, 8 columns], A's 4 row quads at a_all[at..].
fn narrow_fma(acc: Narrow, at: u32, b: B8) -> Narrow {
    return fma16x8(acc, a_all[at], a_all[at + 1u], a_all[at + 2u], a_all[at + 3u], b);
}

// acc + A[16 rows, k] · B[k, 8 columns], the rows given as 4 quads.
fn fma16x8(acc: Narrow, a0: vec4<f32>, a1: vec4<f32>, a2: vec4<f32>, a3: vec4<f32>,
           b: B8) -> Narrow {
    return Narrow(
        fma16x4(acc.left, a0, a1, a2, a3, b.left),
        fma16x4(acc.right, a0, a1, a2, a3, b.right),
    );
}

// A thread of the wide kernels: 32 rows × 4 columns, as two units.
struct Wide {
    top: Tile16x4,
    bottom: Tile16x4,
}

// acc + A[32 rows, k] · B[k, 4 columns], A's 8 row quads at a_all[at..at + 8].
fn wide_fma(acc: Wide, at: u32, b: B4) -> Wide {
    let top = fma16x4(acc.top, a_all[at], a_all[at + 1u], a_all[at + 2u], a_all[at + 3u], b);
    let bottom =
        fma16x4(acc.bottom, a_all[at + 4u], a_all[at + 5u], a_all[at + 6u], a_all[at + 7u], b);
    return Wide(top, bottom);
}

// The wide forward and input-gradient kernels, for M ≤ 32: A staged 128 columns of K at a
// time.
fn gemm_wide(mode: u32, wid: vec3<u32>, lid: u32, groups: vec3<u32>) {
    let tile = wid.y * groups.x + wid.x;
    if (tile >= params.tiles) {
        return;
    }
    let col0 = (tile * THREADS + lid) * 4u;
    let cols = cols4(mode, col0);
    var acc: Wide;
    for (var k0 = 0u; k0 < params.k; k0 += 128u) {
        for (var t = lid; t < 1024u; t += THREADS) {
            var v = vec4<f32>();
            if (k0 + t / 8u < params.k) {
                v = a_quad(mode, k0 + t / 8u, 4u * (t % 8u));
            }
            a_all[t] = v;
        }
        workgroupBarrier();
        let kk_end = min(128u, params.k - k0);
        for (var kk = 0u; kk < kk_end; kk += 1u) {
            acc = wide_fma(acc, kk * 8u, gather4(mode, cols, b_row(mode, k0 + kk)));
        }
        workgroupBarrier();
    }
    store16x4(mode, col0, 0u, 0u, acc.top);
    store16x4(mode, col0, 0u, 16u, acc.bottom);
}

@compute @workgroup_size(64)
fn forward_wide(@builtin(workgroup_id) wid: vec3<u32>,
                @builtin(local_invocation_index) lid: u32,
                @builtin(num_workgroups) groups: vec3<u32>) {
    gemm_wide(FORWARD, wid, lid, groups);
}

@compute @workgroup_size(64)
fn backward_data_wide(@builtin(workgroup_id) wid: vec3<u32>,
                      @builtin(local_invocation_index) lid: u32,
                      @builtin(num_workgroups) groups: vec3<u32>) {
    gemm_wide(BACKWARD_DATA, wid, lid, groups);
}

// Any product in blocks of ROWS (16 or 32) rows × 8 columns per thread: every thread of a
// workgroup covers the same rows and k, so its reads of the staged A are the same address
// across the workgroup, and each B value it gathers serves ROWS multiply-adds. Workgroups
// are (column tile, row block) pairs, folded over x and y, times the slices of K along z
// (out is then [splits, M, N]); a workgroup has GROUP_THREADS threads, so that a CPU
// adapter can run as few as a product's columns need, in whole groups of SIMD lanes. A is
// staged 1024 / (ROWS / 4) columns of K at a time: a_all[kk·(ROWS / 4) + q] = rows
// row0 + 4q.. of A at column k0 + kk.
override ROWS: u32 = 32u;
override GROUP_THREADS: u32 = 64u;

// A forward or input-gradient product (row-block or narrow kernel) with stride 1 along the
// width whose 8 columns of a thread are always 8 neighbouring pixels of one row (the host
// checks that rows of C hold a multiple of 8 columns and rows of B's source a multiple of 4
// elements): then B[k, those 8] is one run of 8 neighbouring elements of a source row,
// loaded as 3 aligned vec4s of b_vec instead of 8 gathered scalars. A vec4 lies wholly
// inside or outside its row, so zeroing the vec4s past the row's ends gives the padding
// exactly.
override SEGMENTS: bool = false;

struct B8 {
    left: B4,
    right: B4,
}

// The vec4 q of the source row starting at vec4 `base`, zero outside the row's `quads`.
fn row_quad(base: i32, q: i32, quads: i32, row_inside: bool) -> vec4<f32> {
    let inside = row_inside && q >= 0 && q < quads;
    return select(vec4<f32>(0.0), b_vec[u32(select(0, base + q, inside))], inside);
}

// B[k, ·] of a thread's 8 columns, decoded as left and right, for k decoded as row.
fn b_eight(mode: u32, left: Cols4, right: Cols4, row: vec3<i32>) -> B8 {
    if (SEGMENTS) {
        return segment8(mode, left.c0, row);
    }
    return B8(gather4(mode, left, row), gather4(mode, right, row));
}

// Where a run of B under SEGMENTS starts: element 4·q + s of the source row whose first vec4
// is b_vec[base], a row of `quads` vec4s; `inside` is false where the row is padding.
struct Run {
    base: i32,
    q: i32,
    s: i32,
    quads: i32,
    inside: bool,
}

// The run of B for column c and row r (decoded by b_col and b_row).
fn run_start(mode: u32, c: vec3<i32>, r: vec3<i32>) -> Run {
    var height = i32(params.in_h);
    var width = i32(params.in_w);
    if (mode == BACKWARD_DATA) {
        height = i32(params.out_h);
        width = i32(params.out_w);
    }
    let y = c.y + r.y;
    let inside = y >= 0 && y < height;
    let base = (c.x + r.x + select(0, y, inside) * width) / 4;
    let e = c.z + r.z;
    // q rounded down (>> is arithmetic), so that a run may start in the left padding.
    return Run(base, e >> 2u, e & 3, width / 4, inside);
}

// The vec4 q + i of a run's row.
fn run_quad(run: Run, i: i32) -> vec4<f32> {
    return row_quad(run.base, run.q + i, run.quads, run.inside);
}

// B[k, col .. col + 8] under SEGMENTS in the forward and input-gradient products, for col
// decoded as c and k as r: 8 neighbouring pixels of one row of C see 8 neighbouring
// elements of a source row.
fn segment8(mode: u32, c: vec3<i32>, r: vec3<i32>) -> B8 {
    let run = run_start(mode, c, r);
    let v0 = run_quad(run, 0);
    let v1 = run_quad(run, 1);
    var v2 = vec4<f32>();
    if (run.s != 0) {
        v2 = run_quad(run, 2);
    }
    return shuffle8(v0, v1, v2, run.s);
}

// Elements s .. s + 7 of the 12 in v0, v1, v2, for s from 0 to 3.
fn shuffle8(v0: vec4<f32>, v1: vec4<f32>, v2: vec4<f32>, s: i32) -> B8 {
    if (s == 0) {
        return B8(B4(v0.x, v0.y, v0.z, v0.w), B4(v1.x, v1.y, v1.z, v1.w));
    }
    if (s == 1) {
        return B8(B4(v0.y, v0.z, v0.w, v1.x), B4(v1.y, v1.z, v1.w, v2.x));
    }
    if (s == 2) {
        return B8(B4(v0.z, v0.w, v1.x, v1.y), B4(v1.z, v1.w, v2.x, v2.y));
    }
    return B8(B4(v0.w, v1.x, v1.y, v1.z), B4(v1.w, v2.x, v2.y, v2.z));
}

// Under TRIPLES (SEGMENTS with a kernel 3 wide: 3 for the forward product, 3 taps a phase
// for the input gradient) the forward and input-gradient kernels take K 3 at a time, the
// taps kw (or v) = 0, 1, 2 of one kernel row: their runs start at neighbouring elements of
// the same source row, so the 4 vec4s around them hold all three, loaded once instead of
// once per k. The host makes chunks of K multiples of 3.
override TRIPLES: bool = false;

// B[k + i, col .. col + 8] for i = 0, 1, 2 (as k0, k1, k2), k the first of 3 taps of a
// kernel row: col decoded as c, k as r.
struct B8x3 {
    k0: B8,
    k1: B8,
    k2: B8,
}

fn segment8x3(mode: u32, c: vec3<i32>, r: vec3<i32>) -> B8x3 {
    let run = run_start(mode, c, r);
    if (mode == FORWARD && params.stride_w == 2u) {
        return strided8x3(run);
    }
    // The runs start at e, e + step and e + 2·step: kw counts up along K in the forward
    // product, and the input gradient's v reads dY leftwards.
    let step = select(1, -1, mode == BACKWARD_DATA);
    let e = 4 * run.q + run.s;
    let low = min(e, e + 2 * step);
    let q = low >> 2u;
    let v0 = row_quad(run.base, q, run.quads, run.inside);
    let v1 = row_quad(run.base, q + 1, run.quads, run.inside);
    let v2 = row_quad(run.base, q + 2, run.quads, run.inside);
    let v3 = row_quad(run.base, q + 3, run.quads, run.inside);
    return B8x3(
        window8(v0, v1, v2, v3, e - 4 * q),
        window8(v0, v1, v2, v3, e + step - 4 * q),
        window8(v0, v1, v2, v3, e + 2 * step - 4 * q),
    );
}

// The forward product's 3 taps of a kernel row with stride 2 and padding 1 along the width
// (the host checks): 8 pixels from ow (a multiple of 8) read every other element from
// 2·ow − 1 + kw, within vec4s 2·ow/4 − 1 .. 2·ow/4 + 3 of the row (the run starts at the
// last element of the first).
fn strided8x3(run: Run) -> B8x3 {
    let v0 = run_quad(run, 0);
    let v1 = run_quad(run, 1);
    let v2 = run_quad(run, 2);
    let v3 = run_quad(run, 3);
    let v4 = run_quad(run, 4);
    return B8x3(
        B8(B4(v0.w, v1.y, v1.w, v2.y), B4(v2.w, v3.y, v3.w, v4.y)),
        B8(B4(v1.x, v1.z, v2.x, v2.z), B4(v3.x, v3.z, v4.x, v4.z)),
        B8(B4(v1.y, v1.w, v2.y, v2.w), B4(v3.y, v3.w, v4.y, v4.w)),
    );
}

// Elements s .. s + 7 of the 16 in v0 .. v3, for s from 0 to 6.
fn window8(v0: vec4<f32>, v1: vec4<f32>, v2: vec4<f32>, v3: vec4<f32>, s: i32) -> B8 {
    if (s >= 4) {
        return shuffle8(v1, v2, v3, s - 4);
    }
    return shuffle8(v0, v1, v2, s);
}

// B[k .. k + 4, col] under SEGMENTS in the weight gradient, for col decoded as c and k (a
// multiple of 4) as r: 4 neighbouring pixels of one row of dY see 4 neighbouring elements
// of the tap's source row in x.
fn segment4(c: vec3<i32>, r: vec3<i32>) -> vec4<f32> {
    let run = run_start(BACKWARD_WEIGHT, c, r);
    let v0 = run_quad(run, 0);
    if (run.s == 0) {
        return v0;
    }
    let v1 = run_quad(run, 1);
    if (run.s == 1) {
        return vec4<f32>(v0.yzw, v1.x);
    }
    if (run.s == 2) {
        return vec4<f32>(v0.zw, v1.xy);
    }
    return vec4<f32>(v0.w, v1.xyz);
}

// B[k .. k + 4, ·] of 4 columns under SEGMENTS in the weight gradient: column j's 4 values
// are cj.
struct Runs4 {
    c0: vec4<f32>,
    c1: vec4<f32>,
    c2: vec4<f32>,
    c3: vec4<f32>,
}

fn runs4(c: Cols4, r: vec3<i32>) -> Runs4 {
    return Runs4(segment4(c.c0, r), segment4(c.c1, r), segment4(c.c2, r), segment4(c.c3, r));
}

// B[k + t, ·] of the 4 columns of `runs`, for t = 0 (x) to 3 (w). Named rather than indexed
// by t, which a software rasteriser would extract lane by lane.
fn runs_x(runs: Runs4) -> B4 {
    return B4(runs.c0.x, runs.c1.x, runs.c2.x, runs.c3.x);
}

fn runs_y(runs: Runs4) -> B4 {
    return B4(runs.c0.y, runs.c1.y, runs.c2.y, runs.c3.y);
}

fn runs_z(runs: Runs4) -> B4 {
    return B4(runs.c0.z, runs.c1.z, runs.c2.z, runs.c3.z);
}

fn runs_w(runs: Runs4) -> B4 {
    return B4(runs.c0.w, runs.c1.w, runs.c2.w, runs.c3.w);
}

// A thread of the row-block kernels: ROWS × COLS of C as units of 16 × 4, left and right
// column quads of the top 16 rows, then those of the bottom 16 (ROWS = 32) or those of
// columns 8..15 (COLS = 16).
struct Block {
    top_left: Tile16x4,
    top_right: Tile16x4,
    bottom_left: Tile16x4,
    bottom_right: Tile16x4,
}

// Stages rows row0 .. row0 + ROWS of A at columns k0 .. k0 + len as a_all[kk·ROWS/4 + q]
// = rows row0 + 4q .. row0 + 4q + 3 at column k0 + kk, for the row-block kernels.
fn stage_rows(mode: u32, k0: u32, len: u32, row0: u32, lid: u32) {
    let quads = ROWS / 4u;
    for (var t = lid; t < len * quads; t += GROUP_THREADS) {
        a_all[t] = a_quad(mode, k0 + t / quads, row0 + 4u * (t % quads));
    }
}

// acc + A[ROWS rows, k] · B[k, 8 columns], A's row quads at a_all[at..].
fn block_fma(acc: Block, at: u32, b: B8) -> Block {
    var out = acc;
    let a0 = a_all[at];
    let a1 = a_all[at + 1u];
    let a2 = a_all[at + 2u];
    let a3 = a_all[at + 3u];
    out.top_left = fma16x4(acc.top_left, a0, a1, a2, a3, b.left);
    out.top_right = fma16x4(acc.top_right, a0, a1, a2, a3, b.right);
    if (ROWS == 32u) {
        let a4 = a_all[at + 4u];
        let a5 = a_all[at + 5u];
        let a6 = a_all[at + 6u];
        let a7 = a_all[at + 7u];
        out.bottom_left = fma16x4(acc.bottom_left, a4, a5, a6, a7, b.left);
        out.bottom_right = fma16x4(acc.bottom_right, a4, a5, a6, a7, b.right);
    }
    return out;
}

// Columns per thread of the row-block kernels: 8, or 16 with ROWS = 16, when Block's
// bottom units hold columns 8..15 of the same 16 rows (halving the A loads per sum).
override COLS: u32 = 8u;

// acc + A[16 rows, k] · B[k, 16 columns] (COLS = 16): b the first 8 columns, b2 the rest.
fn block_fma16(acc: Block, at: u32, b: B8, b2: B8) -> Block {
    let a0 = a_all[at];
    let a1 = a_all[at + 1u];
    let a2 = a_all[at + 2u];
    let a3 = a_all[at + 3u];
    let left = fma16x8(Narrow(acc.top_left, acc.top_right), a0, a1, a2, a3, b);
    let right = fma16x8(Narrow(acc.bottom_left, acc.bottom_right), a0, a1, a2, a3, b2);
    return Block(left.left, left.right, right.left, right.right);
}

fn gemm_rows(mode: u32, wid: vec3<u32>, lid: u32, groups: vec3<u32>) {
    let tile = wid.y * groups.x + wid.x;
    if (tile >= params.tiles) {
        return;
    }
    let quads = ROWS / 4u;
    let chunk = select(1024u / quads, 1024u / quads / 3u * 3u, TRIPLES);
    let row0 = (tile / params.tiles_n) * ROWS;
    let col0 = ((tile % params.tiles_n) * GROUP_THREADS + lid) * COLS;
    let left = cols4(mode, col0);
    let right = cols4(mode, col0 + 4u);
    let far_left = cols4(mode, col0 + 8u);
    let far_right = cols4(mode, col0 + 12u);
    let k_begin = wid.z * params.k_per_split;
    let k_end = min(k_begin + params.k_per_split, params.k);
    var acc: Block;
    for (var k0 = k_begin; k0 < k_end; k0 += chunk) {
        let len = min(chunk, k_end - k0);
        stage_rows(mode, k0, len, row0, lid);
        workgroupBarrier();
        if (SEGMENTS && mode == BACKWARD_WEIGHT) {
            // len is a multiple of 4 (the host makes slices so), as is every k0 + kk.
            for (var kk = 0u; kk < len; kk += 4u) {
                let row = b_row(mode, k0 + kk);
                let l = runs4(left, row);
                let r = runs4(right, row);
                let at = kk * quads;
                acc = block_fma(acc, at, B8(runs_x(l), runs_x(r)));
                acc = block_fma(acc, at + quads, B8(runs_y(l), runs_y(r)));
                acc = block_fma(acc, at + 2u * quads, B8(runs_z(l), runs_z(r)));
                acc = block_fma(acc, at + 3u * quads, B8(runs_w(l), runs_w(r)));
            }
        } else if (TRIPLES && COLS == 16u) {
            for (var kk = 0u; kk < len; kk += 3u) {
                let row = b_row(mode, k0 + kk);
                let b = segment8x3(mode, left.c0, row);
                let b2 = segment8x3(mode, far_left.c0, row);
                let at = kk * quads;
                acc = block_fma16(acc, at, b.k0, b2.k0);
                acc = block_fma16(acc, at + quads, b.k1, b2.k1);
                acc = block_fma16(acc, at + 2u * quads, b.k2, b2.k2);
            }
        } else if (COLS == 16u) {
            for (var kk = 0u; kk < len; kk += 1u) {
                let row = b_row(mode, k0 + kk);
                let b = b_eight(mode, left, right, row);
                let b2 = b_eight(mode, far_left, far_right, row);
                acc = block_fma16(acc, kk * quads, b, b2);
            }
        } else if (TRIPLES) {
            // len is a multiple of 3, as is every k0 + kk.
            for (var kk = 0u; kk < len; kk += 3u) {
                let b = segment8x3(mode, left.c0, b_row(mode, k0 + kk));
                let at = kk * quads;
                acc = block_fma(acc, at, b.k0);
                acc = block_fma(acc, at + quads, b.k1);
                acc = block_fma(acc, at + 2u * quads, b.k2);
            }
        } else {
            for (var kk = 0u; kk < len; kk += 1u) {
                let b = b_eight(mode, left, right, b_row(mode, k0 + kk));
                acc = block_fma(acc, kk * quads, b);
            }
        }
        workgroupBarrier();
    }
    store16x4(mode, col0, wid.z, row0, acc.top_left);
    store16x4(mode, col0 + 4u, wid.z, row0, acc.top_right);
    if (COLS == 16u) {
        store16x4(mode, col0 + 8u, wid.z, row0, acc.bottom_left);
        store16x4(mode, col0 + 12u, wid.z, row0, acc.bottom_right);
    } else if (ROWS == 32u) {
        store16x4(mode, col0, wid.z, row0 + 16u, acc.bottom_left);
        store16x4(mode, col0 + 4u, wid.z, row0 + 16u, acc.bottom_right);
    }
}

@compute @workgroup_size(GROUP_THREADS)
fn forward_rows(@builtin(workgroup_id) wid: vec3<u32>,
                @builtin(local_invocation_index) lid: u32,
                @builtin(num_workgroups) groups: vec3<u32>) {
    gemm_rows(FORWARD, wid, lid, groups);
}

@compute @workgroup_size(GROUP_THREADS)
fn backward_data_rows(@builtin(workgroup_id) wid: vec3<u32>,
                      @builtin(local_invocation_index) lid: u32,
                      @builtin(num_workgroups) groups: vec3<u32>) {
    gemm_rows(BACKWARD_DATA, wid, lid, groups);
}

@compute @workgroup_size(GROUP_THREADS)
fn backward_weight_rows(@builtin(workgroup_id) wid: vec3<u32>,
                        @builtin(local_invocation_index) lid: u32,
                        @builtin(num_workgroups) groups: vec3<u32>) {
    gemm_rows(BACKWARD_WEIGHT, wid, lid, groups);
}

// The weight gradient for M ≤ 32 and a short N, in the register tiles of the narrow
// (WIDE = false: M ≤ 16, all rows for 8 columns per thread, N ≤ 512) or the wide kernels
// (WIDE = true: M ≤ 32, 4 columns per thread, N ≤ 256). A workgroup's threads cover the
// column blocks for 64 / blocks consecutive slices of K (thread t: block t mod blocks,
// slice t / blocks), staging each slice's A (dY) a chunk of K at a time:
// a_all[(s·chunk + kk)·QUADS + q] = rows 4q..4q + 3 of A at column k0 + kk of slice s.
override WIDE: bool = false;

fn weight_small(wid: vec3<u32>, lid: u32, groups: vec3<u32>) {
    let mode = BACKWARD_WEIGHT;
    let cols_per_thread = select(NARROW_COLS, 4u, WIDE);
    let quads = select(4u, 8u, WIDE);
    let group = wid.y * groups.x + wid.x;
    let col_threads = (params.n + cols_per_thread - 1u) / cols_per_thread;
    let sub = THREADS / col_threads;
    // Under SEGMENTS the weight gradient takes K 4 at a time (slices are multiples of 4),
    // so chunks must be too.
    let segments = SEGMENTS && 1024u / (sub * quads) >= 4u;
    let chunk = select(1024u / (sub * quads), (1024u / (sub * quads)) & ~3u, segments);
    let slices = (params.k + params.k_per_split - 1u) / params.k_per_split;
    let s = lid / col_threads;
    let split = group * sub + s;
    let works = s < sub && split < slices;
    let col0 = (lid % col_threads) * cols_per_thread;
    let cols = cols4(mode, col0);
    let right = cols4(mode, col0 + 4u);
    var narrow: Narrow;
    var wide: Wide;
    for (var k0 = 0u; k0 < params.k_per_split; k0 += chunk) {
        for (var t = lid; t < sub * chunk * quads; t += THREADS) {
            let kk = (t / quads) % chunk;
            let k = (group * sub + t / (chunk * quads)) * params.k_per_split + k0 + kk;
            var v = vec4<f32>();
            if (k0 + kk < params.k_per_split && k < params.k) {
                v = a_quad(mode, k, 4u * (t % quads));
            }
            a_all[t] = v;
        }
        workgroupBarrier();
        if (works) {
            let k_base = split * params.k_per_split + k0;
            let left = params.k - min(k_base, params.k);
            let kk_end = min(chunk, min(params.k_per_split - k0, left));
            if (segments) {
                for (var kk = 0u; kk < kk_end; kk += 4u) {
                    let row = b_row(mode, k_base + kk);
                    let at = (s * chunk + kk) * quads;
                    let l = runs4(cols, row);
                    if (WIDE) {
                        wide = wide_fma(wide, at, runs_x(l));
                        wide = wide_fma(wide, at + quads, runs_y(l));
                        wide = wide_fma(wide, at + 2u * quads, runs_z(l));
                        wide = wide_fma(wide, at + 3u * quads, runs_w(l));
                    } else {
                        let r = runs4(right, row);
                        narrow = narrow_fma(narrow, at, B8(runs_x(l), runs_x(r)));
                        narrow = narrow_fma(narrow, at + quads, B8(runs_y(l), runs_y(r)));
                        narrow = narrow_fma(narrow, at + 2u * quads, B8(runs_z(l), runs_z(r)));
                        narrow = narrow_fma(narrow, at + 3u * quads, B8(runs_w(l), runs_w(r)));
                    }
                }
            }
            for (var kk = 0u; kk < select(kk_end, 0u, segments); kk += 1u) {
                let row = b_row(mode, k_base + kk);
                let at = (s * chunk + kk) * quads;
                if (WIDE) {
                    wide = wide_fma(wide, at, gather4(mode, cols, row));
                } else {
                    narrow = narrow_fma(narrow, at, B8(gather4(mode, cols, row),
                                                       gather4(mode, right, row)));
                }
            }
        }
        workgroupBarrier();
    }
    if (works) {
        if (WIDE) {
            store16x4(mode, col0, split, 0u, wide.top);
            store16x4(mode, col0, split, 16u, wide.bottom);
        } else {
            store16x4(mode, col0, split, 0u, narrow.left);
            store16x4(mode, col0 + 4u, split, 0u, narrow.right);
        }
    }
}

@compute @workgroup_size(64)
fn backward_weight_small(@builtin(workgroup_id) wid: vec3<u32>,
                         @builtin(local_invocation_index) lid: u32,
                         @builtin(num_workgroups) groups: vec3<u32>) {
    weight_small(wid, lid, groups);
}

// The weight gradient of a 3×3 kernel by input channel (backward_weight_taps; the host
// checks: stride 1 or 2 along the width with padding 1 there, rows of dY a multiple of 4
// pixels and rows of x a multiple of 4 elements, slices of K multiples of 4). A thread owns
// one input channel ci: its 9 taps (columns ci·9 .. ci·9 + 8 of C) × ROWS output channels; a
// workgroup, ROWS rows × GROUP_THREADS channels over one slice of K (wid.z), stages A (dY)
// as the row-block kernels do. K is taken 4 pixels (ow .. ow + 3 of one row) at a time: the
// taps (kh, ·) of those pixels read elements s·ow − 1 .. s·ow + 4·s of one row of x (s the
// stride), all within the 3 aligned vec4s around s·ow, which every thread loads at the same
// place of its own channel. Bounds and shifts are then the same for the whole workgroup, and
// each vec4 loaded serves 3 taps, where the row-block kernels load B column by column.

// 16 rows of one column of C, as 4 row quads.
struct Col16 {
    q0: vec4<f32>,
    q1: vec4<f32>,
    q2: vec4<f32>,
    q3: vec4<f32>,
}

// 16 rows × the 9 taps: taps 0..3, taps 4..7 and tap 8.
struct Taps16 {
    low: Tile16x4,
    high: Tile16x4,
    last: Col16,
}

// A thread of backward_weight_taps: the top 16 rows, then (ROWS = 32) the bottom 16.
struct TapsBlock {
    top: Taps16,
    bottom: Taps16,
}

// B[k .. k + 4, tap] of the 9 taps, tap (kh, kw) as r{kh}{kw}: lane t for pixel ow + t.
struct Runs9 {
    r00: vec4<f32>, r01: vec4<f32>, r02: vec4<f32>,
    r10: vec4<f32>, r11: vec4<f32>, r12: vec4<f32>,
    r20: vec4<f32>, r21: vec4<f32>, r22: vec4<f32>,
}

// The 3 taps (kh, 0..2) of the 4 pixels from ow: x[plane, oh·stride_h + kh − pad_h,
// s·(ow + t) + kw − 1] for lane t, zero in the padding; plane is the first element of the
// thread's channel of image n, and r the pixels' row of B (r.z = s·ow, a multiple of 4).
fn taps_row(plane: i32, r: vec3<i32>, kh: i32) -> mat3x4<f32> {
    let p = params;
    let width = i32(p.in_w);
    let y = r.y + kh - i32(p.pad_h);
    let inside = y >= 0 && y < i32(p.in_h);
    let base = (plane + select(0, y, inside) * width) / 4;
    let q = r.z / 4;
    let quads = width / 4;
    // Elements −4..−1, 0..3 and 4..7 from s·ow.
    let left = row_quad(base, q - 1, quads, inside);
    let mid = row_quad(base, q, quads, inside);
    let right = row_quad(base, q + 1, quads, inside);
    if (p.stride_w == 2u) {
        // Elements −1, 1, 3, 5; 0, 2, 4, 6; 1, 3, 5, 7.
        return mat3x4<f32>(
            vec4<f32>(left.w, mid.y, mid.w, right.y),
            vec4<f32>(mid.x, mid.z, right.x, right.z),
            vec4<f32>(mid.y, mid.w, right.y, right.w),
        );
    }
    // Elements −1..2, 0..3, 1..4.
    return mat3x4<f32>(vec4<f32>(left.w, mid.xyz), mid, vec4<f32>(mid.yzw, right.x));
}

fn runs9(plane: i32, r: vec3<i32>) -> Runs9 {
    let t0 = taps_row(plane, r, 0);
    let t1 = taps_row(plane, r, 1);
    let t2 = taps_row(plane, r, 2);
    return Runs9(t0[0], t0[1], t0[2], t1[0], t1[1], t1[2], t2[0], t2[1], t2[2]);
}

fn fma16(acc: Col16, a0: vec4<f32>, a1: vec4<f32>, a2: vec4<f32>, a3: vec4<f32>,
         b: f32) -> Col16 {
    return Col16(acc.q0 + a0 * b, acc.q1 + a1 * b, acc.q2 + a2 * b, acc.q3 + a3 * b);
}

fn taps16_fma(acc: Taps16, a0: vec4<f32>, a1: vec4<f32>, a2: vec4<f32>, a3: vec4<f32>,
              low: vec4<f32>, high: vec4<f32>, last: f32) -> Taps16 {
    return Taps16(
        fma16x4(acc.low, a0, a1, a2, a3, B4(low.x, low.y, low.z, low.w)),
        fma16x4(acc.high, a0, a1, a2, a3, B4(high.x, high.y, high.z, high.w)),
        fma16(acc.last, a0, a1, a2, a3, last),
    );
}

// acc + A[ROWS rows, k] · B[k, 9 taps], A's row quads at a_all[at..]; B's taps 0..3 as low,
// 4..7 as high, 8 as last.
fn taps_fma(acc: TapsBlock, at: u32, low: vec4<f32>, high: vec4<f32>, last: f32) -> TapsBlock {
    var out = acc;
    out.top = taps16_fma(acc.top, a_all[at], a_all[at + 1u], a_all[at + 2u], a_all[at + 3u],
                         low, high, last);
    if (ROWS == 32u) {
        out.bottom = taps16_fma(acc.bottom, a_all[at + 4u], a_all[at + 5u], a_all[at + 6u],
                                a_all[at + 7u], low, high, last);
    }
    return out;
}

// Writes the 16 rows from row0 of the thread's 9 columns from col0.
fn store_taps16(col0: u32, split: u32, row0: u32, acc: Taps16) {
    store16x4(BACKWARD_WEIGHT, col0, split, row0, acc.low);
    store16x4(BACKWARD_WEIGHT, col0 + 4u, split, row0, acc.high);
    let l = acc.last;
    store_column(BACKWARD_WEIGHT, col0 + 8u, split, row0, l.q0, l.q1, l.q2, l.q3);
}

@compute @workgroup_size(GROUP_THREADS)
fn backward_weight_taps(@builtin(workgroup_id) wid: vec3<u32>,
                        @builtin(local_invocation_index) lid: u32,
                        @builtin(num_workgroups) groups: vec3<u32>) {
    let mode = BACKWARD_WEIGHT;
    let tile = wid.y * groups.x + wid.x;
    if (tile >= params.tiles) {
        return;
    }
    let quads = ROWS / 4u;
    let chunk = 1024u / quads;
    let row0 = (tile / params.tiles_n) * ROWS;
    let ci = (tile % params.tiles_n) * GROUP_THREADS + lid;
    let channel = i32(min(ci, params.in_channels - 1u));
    let channel_start = channel * i32(params.in_h * params.in_w);
    let k_begin = wid.z * params.k_per_split;
    let k_end = min(k_begin + params.k_per_split, params.k);
    var acc: TapsBlock;
    for (var k0 = k_begin; k0 < k_end; k0 += chunk) {
        let len = min(chunk, k_end - k0);
        stage_rows(mode, k0, len, row0, lid);
        workgroupBarrier();
        for (var kk = 0u; kk < len; kk += 4u) {
            let r = b_row(mode, k0 + kk);
            let runs = runs9(channel_start + r.x, r);
            // Pixel t's taps 0..3 and 4..7 are column t of these.
            let low = transpose(mat4x4<f32>(runs.r00, runs.r01, runs.r02, runs.r10));
            let high = transpose(mat4x4<f32>(runs.r11, runs.r12, runs.r20, runs.r21));
            let last = runs.r22;
            let at = kk * quads;
            acc = taps_fma(acc, at, low[0], high[0], last.x);
            acc = taps_fma(acc, at + quads, low[1], high[1], last.y);
            acc = taps_fma(acc, at + 2u * quads, low[2], high[2], last.z);
            acc = taps_fma(acc, at + 3u * quads, low[3], high[3], last.w);
        }
        workgroupBarrier();
    }
    let col0 = ci * 9u;
    store_taps16(col0, wid.z, row0, acc.top);
    if (ROWS == 32u) {
        store_taps16(col0, wid.z, row0 + 16u, acc.bottom);
    }
}

@compute @workgroup_size(64)
fn forward_narrow(@builtin(workgroup_id) wid: vec3<u32>,
                  @builtin(local_invocation_index) lid: u32,
                  @builtin(num_workgroups) groups: vec3<u32>) {
    gemm_narrow(FORWARD, wid, lid, groups);
}

@compute @workgroup_size(64)
fn backward_data_narrow(@builtin(workgroup_id) wid: vec3<u32>,
                        @builtin(local_invocation_index) lid: u32,
                        @builtin(num_workgroups) groups: vec3<u32>) {
    gemm_narrow(BACKWARD_DATA, wid, lid, groups);
}

@compute @workgroup_size(64)
fn forward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32,
           @builtin(num_workgroups) groups: vec3<u32>) {
    gemm(FORWARD, wid, lid, groups);
}

@compute @workgroup_size(64)
fn backward_data(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32,
                 @builtin(num_workgroups) groups: vec3<u32>) {
    gemm(BACKWARD_DATA, wid, lid, groups);
}

@compute @workgroup_size(64)
fn backward_weight(@builtin(workgroup_id) wid: vec3<u32>,
                   @builtin(local_invocation_index) lid: u32,
                   @builtin(num_workgroups) groups: vec3<u32>) {
    gemm(BACKWARD_WEIGHT, wid, lid, groups);
}
