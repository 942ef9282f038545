// The first level of the CE reductions (see ce_stats.wgsl for what they compute and the
// layout of `partials`), with a thread per (sample n, group g, slice s) unit, for CPU tuning
// and H·W a multiple of 4. ce_stats gives a unit a workgroup whose threads each sum one 4×4
// block of the d×d matrix, so every value is loaded once per block it belongs to (5 times
// at d = 16, counting the forward pass's symmetry); here a thread sums the whole matrix of
// its unit, 4 positions at a time: it loads each of its channels' vec4s once and forms every
// 4×4 block from them as a product of 4×4 matrices, transpose(Xa)·Xb, whose 64 multiply-adds
// per 8 vec4s loaded keep a software rasteriser busy with arithmetic rather than gathers.
// There is no workgroup memory and no barrier; ce_combine_forward and ce_newton_backward add
// the units up as before. The host gives this kernel fewer, longer slices (one thread's
// serial work each) than ce_stats.
//
// Quad a of a group at vec4 j is a 4×4 matrix whose column r holds channel 4a + r at the 4
// positions (zero for channels past d). With Xa, Xb two quads, entry (r, c) of
// transpose(Xa)·Xb is Σ over the positions of x[4a + r]·x[4b + c]: the matrix's entry
// (4a + r, 4b + c), found in column c, row r.
//
// x, dy:    [N, C, H·W / 4] vec4s (the forward pass binds x twice, reads no dy)
// partials: [N, G, S, d + d²]

// #include ce_params.wgsl

@group(0) @binding(0) var<storage, read> x: array<vec4<f32>>;
@group(0) @binding(1) var<storage, read> dy: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read_write> partials: array<f32>;
@group(0) @binding(3) var<uniform> p: Params;

// The group size d (p.d), and its quads of channels NB = ⌈d/4⌉.
override D: u32 = 16u;
override NB: u32 = (D + 3u) / 4u;
const WG: u32 = 64u;

// Where a unit's positions lie: its group's first channel at position 0 (in vec4s), its
// slice's vec4s e0..e1 and their number of positions.
struct Unit {
    index: u32,
    base: u32,
    e0: u32,
    e1: u32,
    count: f32,
}

fn unit_at(index: u32) -> Unit {
    let s = index % p.slices;
    let g = (index / p.slices) % p.groups;
    let n = index / (p.slices * p.groups);
    let hw0 = s * p.slice_len;
    let hw1 = min(hw0 + p.slice_len, p.hw);
    return Unit(index, (n * p.c + g * D) * p.hw_elems, hw0 / 4u, hw1 / 4u, f32(hw1 - hw0));
}

// Channel c of the unit at vec4 j (of dy with from_dy, else of x), zero past d.
fn channel(from_dy: bool, u: Unit, c: u32, j: u32) -> vec4<f32> {
    if (c >= D) {
        return vec4<f32>(0.0);
    }
    let at = u.base + c * p.hw_elems + j;
    if (from_dy) {
        return dy[at];
    }
    return x[at];
}

// Quad a of the unit at vec4 j.
fn quad(from_dy: bool, u: Unit, a: u32, j: u32) -> mat4x4<f32> {
    let c = 4u * a;
    return mat4x4<f32>(
        channel(from_dy, u, c, j),
        channel(from_dy, u, c + 1u, j),
        channel(from_dy, u, c + 2u, j),
        channel(from_dy, u, c + 3u, j),
    );
}

// The 4 sums over the positions of a quad's channels.
fn column_sums(q: mat4x4<f32>) -> vec4<f32> {
    return transpose(q) * vec4<f32>(1.0);
}

// Writes the 4×4 block m of a unit's matrix (its entry (4a + r, 4b + c) in column c, row r)
// to partials from out, minus sa[r]·sb[c]/count where count > 0, and with `mirror` also at
// the transposed place.
fn write_block(out: u32, a: u32, b: u32, m: mat4x4<f32>, sa: vec4<f32>, sb: vec4<f32>,
               count: f32, mirror: bool) {
    let k = 4u * b;
    write_column(out, a, k, m[0] - centring(sa, sb.x, count), mirror);
    write_column(out, a, k + 1u, m[1] - centring(sa, sb.y, count), mirror);
    write_column(out, a, k + 2u, m[2] - centring(sa, sb.z, count), mirror);
    write_column(out, a, k + 3u, m[3] - centring(sa, sb.w, count), mirror);
}

fn centring(sa: vec4<f32>, sb: f32, count: f32) -> vec4<f32> {
    if (count > 0.0) {
        return sa * (sb / count);
    }
    return vec4<f32>(0.0);
}

// Entries (4a .. 4a + 3, k) of the matrix (those inside d×d), and with `mirror` (k, ·).
fn write_column(out: u32, a: u32, k: u32, v: vec4<f32>, mirror: bool) {
    if (k >= D) {
        return;
    }
    let i = 4u * a;
    write_entry(out, i, k, v.x, mirror);
    write_entry(out, i + 1u, k, v.y, mirror);
    write_entry(out, i + 2u, k, v.z, mirror);
    write_entry(out, i + 3u, k, v.w, mirror);
}

fn write_entry(out: u32, i: u32, k: u32, v: f32, mirror: bool) {
    if (i < D) {
        partials[out + D + i * D + k] = v;
        if (mirror) {
            partials[out + D + k * D + i] = v;
        }
    }
}

// Writes the 4 values of v for channels 4a .. 4a + 3 (those below d) from partials[out].
fn write_quad(out: u32, a: u32, v: vec4<f32>) {
    let c = 4u * a;
    if (c < D) {
        partials[out + c] = v.x;
    }
    if (c + 1u < D) {
        partials[out + c + 1u] = v.y;
    }
    if (c + 2u < D) {
        partials[out + c + 2u] = v.z;
    }
    if (c + 3u < D) {
        partials[out + c + 3u] = v.w;
    }
}

// The blocks on and above the diagonal of the forward co-moment, (a, b) as bab.
struct Upper {
    b00: mat4x4<f32>, b01: mat4x4<f32>, b02: mat4x4<f32>, b03: mat4x4<f32>,
    b11: mat4x4<f32>, b12: mat4x4<f32>, b13: mat4x4<f32>,
    b22: mat4x4<f32>, b23: mat4x4<f32>,
    b33: mat4x4<f32>,
}

// acc plus the products of the quads' blocks on and above the diagonal (only the diagonal
// ones unless `full`), for the quads the group has.
fn add_upper(acc: Upper, q0: mat4x4<f32>, q1: mat4x4<f32>, q2: mat4x4<f32>, q3: mat4x4<f32>,
             full: bool) -> Upper {
    var out = acc;
    out.b00 += transpose(q0) * q0;
    if (NB > 1u) {
        out.b11 += transpose(q1) * q1;
    }
    if (NB > 2u) {
        out.b22 += transpose(q2) * q2;
    }
    if (NB > 3u) {
        out.b33 += transpose(q3) * q3;
    }
    if (!full) {
        return out;
    }
    if (NB > 1u) {
        out.b01 += transpose(q0) * q1;
    }
    if (NB > 2u) {
        out.b02 += transpose(q0) * q2;
        out.b12 += transpose(q1) * q2;
    }
    if (NB > 3u) {
        out.b03 += transpose(q0) * q3;
        out.b13 += transpose(q1) * q3;
        out.b23 += transpose(q2) * q3;
    }
    return out;
}

// A quad minus its channels' shifts.
fn minus(q: mat4x4<f32>, shift: vec4<f32>) -> mat4x4<f32> {
    return mat4x4<f32>(q[0] - shift.x, q[1] - shift.y, q[2] - shift.z, q[3] - shift.w);
}

// Channels 4a .. 4a + 3 at the unit's first position.
fn first_position(u: Unit, a: u32) -> vec4<f32> {
    return transpose(quad(false, u, a, u.e0))[0];
}

// The forward statistics: per unit the d means and the centred d×d co-moment, summed over
// values shifted by the slice's first position x_0 and centred at the end (as in
// ce_stats.wgsl):
// Σ(x − x̄)(x − x̄)ᵀ = Σ(x − x_0)(x − x_0)ᵀ − L·(x̄ − x_0)(x̄ − x_0)ᵀ.
// In evaluation only the diagonal blocks are summed and written.
@compute @workgroup_size(64)
fn forward(@builtin(workgroup_id) wid: vec3<u32>,
           @builtin(local_invocation_index) lid: u32,
           @builtin(num_workgroups) nwg: vec3<u32>) {
    let u = unit_at((wid.y * nwg.x + wid.x) * WG + lid);
    if (u.index >= p.n * p.groups * p.slices) {
        return;
    }
    let full = p.training == 1u;
    let f0 = first_position(u, 0u);
    let f1 = first_position(u, 1u);
    let f2 = first_position(u, 2u);
    let f3 = first_position(u, 3u);
    var acc: Upper;
    var s0 = vec4<f32>();
    var s1 = vec4<f32>();
    var s2 = vec4<f32>();
    var s3 = vec4<f32>();
    for (var j = u.e0; j < u.e1; j += 1u) {
        // Quads past the group's end read as zero without loads.
        let q0 = minus(quad(false, u, 0u, j), f0);
        let q1 = minus(quad(false, u, 1u, j), f1);
        let q2 = minus(quad(false, u, 2u, j), f2);
        let q3 = minus(quad(false, u, 3u, j), f3);
        s0 += column_sums(q0);
        s1 += column_sums(q1);
        s2 += column_sums(q2);
        s3 += column_sums(q3);
        acc = add_upper(acc, q0, q1, q2, q3, full);
    }

    let out = u.index * (D + D * D);
    let c = u.count;
    write_quad(out, 0u, f0 + s0 / c);
    write_quad(out, 1u, f1 + s1 / c);
    write_quad(out, 2u, f2 + s2 / c);
    write_quad(out, 3u, f3 + s3 / c);
    write_block(out, 0u, 0u, acc.b00, s0, s0, c, false);
    write_block(out, 1u, 1u, acc.b11, s1, s1, c, false);
    write_block(out, 2u, 2u, acc.b22, s2, s2, c, false);
    write_block(out, 3u, 3u, acc.b33, s3, s3, c, false);
    if (full) {
        write_block(out, 0u, 1u, acc.b01, s0, s1, c, true);
        write_block(out, 0u, 2u, acc.b02, s0, s2, c, true);
        write_block(out, 0u, 3u, acc.b03, s0, s3, c, true);
        write_block(out, 1u, 2u, acc.b12, s1, s2, c, true);
        write_block(out, 1u, 3u, acc.b13, s1, s3, c, true);
        write_block(out, 2u, 3u, acc.b23, s2, s3, c, true);
    }
}

// One block row of the backward matrix: (a, 0..3) as r0..r3.
struct BlockRow {
    r0: mat4x4<f32>,
    r1: mat4x4<f32>,
    r2: mat4x4<f32>,
    r3: mat4x4<f32>,
}

fn add_row(acc: BlockRow, g: mat4x4<f32>, x0: mat4x4<f32>, x1: mat4x4<f32>,
           x2: mat4x4<f32>, x3: mat4x4<f32>) -> BlockRow {
    let gt = transpose(g);
    var out = acc;
    out.r0 += gt * x0;
    if (NB > 1u) {
        out.r1 += gt * x1;
    }
    if (NB > 2u) {
        out.r2 += gt * x2;
    }
    if (NB > 3u) {
        out.r3 += gt * x3;
    }
    return out;
}

fn write_row(out: u32, a: u32, row: BlockRow, sums: vec4<f32>) {
    let none = vec4<f32>(0.0);
    write_quad(out, a, sums);
    write_block(out, a, 0u, row.r0, none, none, 0.0, false);
    write_block(out, a, 1u, row.r1, none, none, 0.0, false);
    write_block(out, a, 2u, row.r2, none, none, 0.0, false);
    write_block(out, a, 3u, row.r3, none, none, 0.0, false);
}

// The backward statistics: per unit the d×d block Σ dY xᵀ and the row sums Σ dY.
@compute @workgroup_size(64)
fn backward(@builtin(workgroup_id) wid: vec3<u32>,
            @builtin(local_invocation_index) lid: u32,
            @builtin(num_workgroups) nwg: vec3<u32>) {
    let u = unit_at((wid.y * nwg.x + wid.x) * WG + lid);
    if (u.index >= p.n * p.groups * p.slices) {
        return;
    }
    var a0: BlockRow;
    var a1: BlockRow;
    var a2: BlockRow;
    var a3: BlockRow;
    var s0 = vec4<f32>();
    var s1 = vec4<f32>();
    var s2 = vec4<f32>();
    var s3 = vec4<f32>();
    for (var j = u.e0; j < u.e1; j += 1u) {
        let x0 = quad(false, u, 0u, j);
        let x1 = quad(false, u, 1u, j);
        let x2 = quad(false, u, 2u, j);
        let x3 = quad(false, u, 3u, j);
        let g0 = quad(true, u, 0u, j);
        s0 += column_sums(g0);
        a0 = add_row(a0, g0, x0, x1, x2, x3);
        if (NB > 1u) {
            let g1 = quad(true, u, 1u, j);
            s1 += column_sums(g1);
            a1 = add_row(a1, g1, x0, x1, x2, x3);
        }
        if (NB > 2u) {
            let g2 = quad(true, u, 2u, j);
            s2 += column_sums(g2);
            a2 = add_row(a2, g2, x0, x1, x2, x3);
        }
        if (NB > 3u) {
            let g3 = quad(true, u, 3u, j);
            s3 += column_sums(g3);
            a3 = add_row(a3, g3, x0, x1, x2, x3);
        }
    }
    let out = u.index * (D + D * D);
    write_row(out, 0u, a0, s0);
    write_row(out, 1u, a1, s1);
    write_row(out, 2u, a2, s2);
    write_row(out, 3u, a3, s3);
}
