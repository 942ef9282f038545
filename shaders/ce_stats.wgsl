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
// Σ(x − x̄)(x − x̄)ᵀ = Σ(x − x_0)(x − x_0)ᵀ − L·(x̄ − x_0)(x̄ − x_0)ᵀ.
// The subtraction cancels (1 + (x̄ − x_0)²/σ²)-fold, a small factor since x_0 is one
// of the data, however far the channel's mean lies from zero (raw moments,
// E[xxᵀ] − x̄x̄ᵀ, would cancel (1 + x̄²/σ²)-fold).
//
// Positions are taken an Elem at a time: Elem is f32 here and vec4<f32>, 4 consecutive
// positions, in the variant ce_stats4 (build.rs) that the host uses when H·W is a multiple
// of 4 (slices then hold whole vec4s); each vec4 load then moves 4 values and every sum
// runs over 4 positions at once until `total` adds its lanes.
//
// x, dy:    [N, C, H·W] row-major, as Elems (the forward pass binds x twice, reads no dy)
// partials: [N, G, S, d + d²]: per unit d means (forward) or row sums of dY (backward),
//           then the d×d matrix, row-major

alias Elem = f32;

// The sum of an Elem's lanes, and its first lane.
fn total(v: Elem) -> f32 {
    return v;
}

fn first(v: Elem) -> f32 {
    return v;
}

// #include ce_params.wgsl

@group(0) @binding(0) var<storage, read> x: array<Elem>;
@group(0) @binding(1) var<storage, read> dy: array<Elem>;
@group(0) @binding(2) var<storage, read_write> partials: array<f32>;
@group(0) @binding(3) var<uniform> p: Params;

// The group size d (p.d), fixed per pipeline so that loops over channels unroll.
override D: u32 = 16u;
const WG: u32 = 64u;
// 4×4 blocks per side of the d×d matrix, blocks, and threads per block; the forward pass
// sums only the blocks on and above the diagonal (TRI of them, TRI_LANES threads each), as
// the co-moment is symmetric.
override NB: u32 = (D + 3u) / 4u;
override BLOCKS: u32 = NB * NB;
override LANES: u32 = WG / BLOCKS;
override TRI: u32 = NB * (NB + 1u) / 2u;
override TRI_LANES: u32 = WG / TRI;

var<workgroup> red: array<f32, 512>;    // up to 8 sums of each of the 64 threads
var<workgroup> row_sum: array<f32, 16>; // forward: Σ (x_i − x_0,i) over the slice

// Where a (sample, group, slice) unit's positions lie.
struct Unit {
    index: u32,
    base: u32,  // the group's first channel at position 0, in Elems
    e0: u32,    // the slice's Elems e0..e1
    e1: u32,
    count: f32, // the slice's positions
}

fn unit_of(wid: vec3<u32>, nwg: vec3<u32>) -> Unit {
    let unit = wid.y * nwg.x + wid.x;
    let s = unit % p.slices;
    let g = (unit / p.slices) % p.groups;
    let n = unit / (p.slices * p.groups);
    let hw0 = s * p.slice_len;
    let hw1 = min(hw0 + p.slice_len, p.hw);
    let per_elem = p.hw / p.hw_elems;
    return Unit(unit, (n * p.c + g * D) * p.hw_elems, hw0 / per_elem, hw1 / per_elem,
                f32(hw1 - hw0));
}

// Four channels of the group at one Elem of positions.
struct Quad {
    r0: Elem,
    r1: Elem,
    r2: Elem,
    r3: Elem,
}

// Channels row0..row0 + 3 of the group at Elem j of dy (from_dy) or x, zero past the
// group's d channels. Written out: a software rasteriser would index lane by lane in a loop.
fn quad(from_dy: bool, base: u32, row0: u32, j: u32) -> Quad {
    let at = base + row0 * p.hw_elems + j;
    return Quad(
        channel(from_dy, row0 < D, at),
        channel(from_dy, row0 + 1u < D, at + p.hw_elems),
        channel(from_dy, row0 + 2u < D, at + 2u * p.hw_elems),
        channel(from_dy, row0 + 3u < D, at + 3u * p.hw_elems),
    );
}

fn channel(from_dy: bool, inside: bool, at: u32) -> Elem {
    if (!inside) {
        return Elem(0.0);
    }
    if (from_dy) {
        return dy[at];
    }
    return x[at];
}

// The 4×4 block of products a·bᵀ, summed into acc (row-major).
fn add_outer(acc: ptr<function, array<Elem, 16>>, a: Quad, b: Quad) {
    (*acc)[0] += a.r0 * b.r0;
    (*acc)[1] += a.r0 * b.r1;
    (*acc)[2] += a.r0 * b.r2;
    (*acc)[3] += a.r0 * b.r3;
    (*acc)[4] += a.r1 * b.r0;
    (*acc)[5] += a.r1 * b.r1;
    (*acc)[6] += a.r1 * b.r2;
    (*acc)[7] += a.r1 * b.r3;
    (*acc)[8] += a.r2 * b.r0;
    (*acc)[9] += a.r2 * b.r1;
    (*acc)[10] += a.r2 * b.r2;
    (*acc)[11] += a.r2 * b.r3;
    (*acc)[12] += a.r3 * b.r0;
    (*acc)[13] += a.r3 * b.r1;
    (*acc)[14] += a.r3 * b.r2;
    (*acc)[15] += a.r3 * b.r3;
}

fn add_quads(a: Quad, b: Quad) -> Quad {
    return Quad(a.r0 + b.r0, a.r1 + b.r1, a.r2 + b.r2, a.r3 + b.r3);
}

// Each row of q minus the matching lane of shift.
fn shifted(q: Quad, shift: vec4<f32>) -> Quad {
    return Quad(q.r0 - shift.x, q.r1 - shift.y, q.r2 - shift.z, q.r3 - shift.w);
}

// The total over the `lanes` threads of block b of sum c (of `width` per thread) in red.
fn red_total(b: u32, c: u32, width: u32, lanes: u32) -> f32 {
    var total = 0.0;
    for (var q = 0u; q < lanes; q += 1u) {
        total += red[(b * lanes + q) * width + c];
    }
    return total;
}

// Block t of the blocks on and above the diagonal, row by row, as (block row, block column).
fn tri_block(t: u32) -> vec2<u32> {
    var r = t;
    var a = 0u;
    while (a + 1u < NB && r >= NB - a) {
        r -= NB - a;
        a += 1u;
    }
    return vec2<u32>(a, a + r);
}

// The index of diagonal block (a, a) among the blocks on and above the diagonal.
fn tri_diagonal(a: u32) -> u32 {
    return a * NB - a * (a - min(a, 1u)) / 2u;
}

// Sums the threads' 4×4 blocks acc (row-major, lanes added by `total`) over the lanes of
// each block and writes matrix entry (i, k) to partials[out + D + i·D + k], minus
// row_sum[i]·row_sum[k]/count when centre is set: two rows of every block at a time,
// through red. With `upper`, the blocks are those on and above the diagonal (TRI_LANES
// threads each) and each also fills its mirror image below. Every thread of the workgroup
// must call it.
fn write_blocks(acc: array<Elem, 16>, lid: u32, out: u32, centre: bool, count: f32,
                upper: bool) {
    let blocks = select(BLOCKS, TRI, upper);
    let lanes = select(LANES, TRI_LANES, upper);
    for (var half = 0u; half < 2u; half += 1u) {
        let r = 8u * half;
        red[lid * 8u] = total(acc[r]);
        red[lid * 8u + 1u] = total(acc[r + 1u]);
        red[lid * 8u + 2u] = total(acc[r + 2u]);
        red[lid * 8u + 3u] = total(acc[r + 3u]);
        red[lid * 8u + 4u] = total(acc[r + 4u]);
        red[lid * 8u + 5u] = total(acc[r + 5u]);
        red[lid * 8u + 6u] = total(acc[r + 6u]);
        red[lid * 8u + 7u] = total(acc[r + 7u]);
        workgroupBarrier();
        for (var t = lid; t < blocks * 8u; t += WG) {
            let bt = t / 8u;
            let c = t % 8u;
            var ab = vec2<u32>(bt / NB, bt % NB);
            if (upper) {
                ab = tri_block(bt);
            }
            let i = 4u * ab.x + 2u * half + c / 4u;
            let k = 4u * ab.y + c % 4u;
            if (i < D && k < D) {
                var sum = red_total(bt, c, 8u, lanes);
                if (centre) {
                    sum -= row_sum[i] * row_sum[k] / count;
                }
                partials[out + D + i * D + k] = sum;
                if (upper && ab.x != ab.y) {
                    partials[out + D + k * D + i] = sum;
                }
            }
        }
        workgroupBarrier();
    }
}

// Writes the 4 row sums of q (lanes added) to red for the thread lid.
fn stage_rows(lid: u32, q: Quad) {
    red[lid * 4u] = total(q.r0);
    red[lid * 4u + 1u] = total(q.r1);
    red[lid * 4u + 2u] = total(q.r2);
    red[lid * 4u + 3u] = total(q.r3);
}

@compute @workgroup_size(64)
fn forward(@builtin(workgroup_id) wid: vec3<u32>,
           @builtin(local_invocation_index) lid: u32,
           @builtin(num_workgroups) nwg: vec3<u32>) {
    let u = unit_of(wid, nwg);
    if (u.index >= p.n * p.groups * p.slices) {
        return;
    }
    let blk = lid / TRI_LANES;
    let q = lid % TRI_LANES;
    let ab = tri_block(min(blk, TRI - 1u));
    let a = ab.x;
    let b = ab.y;

    // Every sum is taken of values shifted by the slice's first position, x_0.
    var acc: array<Elem, 16>;
    let zero = Elem(0.0);
    var sum_a = Quad(zero, zero, zero, zero);
    if (blk < TRI && (p.training == 1u || a == b)) {
        let shift_a = first_values(u, 4u * a);
        let shift_b = first_values(u, 4u * b);
        for (var j = u.e0 + q; j < u.e1; j += TRI_LANES) {
            let xa = shifted(quad(false, u.base, 4u * a, j), shift_a);
            let xb = shifted(quad(false, u.base, 4u * b, j), shift_b);
            add_outer(&acc, xa, xb);
            sum_a = add_quads(sum_a, xa);
        }
    }

    // Row sums of x − x_0, from the diagonal blocks.
    stage_rows(lid, sum_a);
    workgroupBarrier();
    if (lid < D) {
        row_sum[lid] = red_total(tri_diagonal(lid / 4u), lid % 4u, 4u, TRI_LANES);
    }
    workgroupBarrier();
    let out = u.index * (D + D * D);
    if (lid < D) {
        let x0 = first(x[u.base + lid * p.hw_elems + u.e0]);
        partials[out + lid] = x0 + row_sum[lid] / u.count;
    }
    write_blocks(acc, lid, out, true, u.count, true);
}

// x_0 of channels row0..row0 + 3 (zero past d): the slice's first position.
fn first_values(u: Unit, row0: u32) -> vec4<f32> {
    let q = quad(false, u.base, row0, u.e0);
    return vec4<f32>(first(q.r0), first(q.r1), first(q.r2), first(q.r3));
}

@compute @workgroup_size(64)
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

    var acc: array<Elem, 16>;
    let zero = Elem(0.0);
    var sum_a = Quad(zero, zero, zero, zero);
    if (blk < BLOCKS) {
        for (var j = u.e0 + q; j < u.e1; j += LANES) {
            let ga = quad(true, u.base, 4u * a, j);
            add_outer(&acc, ga, quad(false, u.base, 4u * b, j));
            sum_a = add_quads(sum_a, ga);
        }
    }

    // Row sums of dY, from the blocks of column 0.
    let out = u.index * (D + D * D);
    stage_rows(lid, sum_a);
    workgroupBarrier();
    if (lid < D) {
        partials[out + lid] = red_total((lid / 4u) * NB, lid % 4u, 4u, LANES);
    }
    workgroupBarrier();
    write_blocks(acc, lid, out, false, 1.0, false);
}
