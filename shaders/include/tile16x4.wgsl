// A unit of a per-thread register tile, 16 rows × 4 columns of C, shared by the kernels
// that give each thread a large block of the output (conv2d_gemm.wgsl, matmul.wgsl). Its
// sums are named fields rather than an array because a software rasteriser indexes private
// arrays lane by lane: field qij holds rows 4i..4i + 3 of column j. B4 holds the unit's
// 4 values of B at the current k.
struct B4 {
    b0: f32,
    b1: f32,
    b2: f32,
    b3: f32,
}

struct Tile16x4 {
    q00: vec4<f32>, q01: vec4<f32>, q02: vec4<f32>, q03: vec4<f32>,
    q10: vec4<f32>, q11: vec4<f32>, q12: vec4<f32>, q13: vec4<f32>,
    q20: vec4<f32>, q21: vec4<f32>, q22: vec4<f32>, q23: vec4<f32>,
    q30: vec4<f32>, q31: vec4<f32>, q32: vec4<f32>, q33: vec4<f32>,
}

// acc + A[16 rows, k] · B[k, 4 columns], the rows given as 4 quads.
fn fma16x4(acc: Tile16x4, a0: vec4<f32>, a1: vec4<f32>, a2: vec4<f32>, a3: vec4<f32>,
           b: B4) -> Tile16x4 {
    return Tile16x4(
        acc.q00 + a0 * b.b0, acc.q01 + a0 * b.b1, acc.q02 + a0 * b.b2, acc.q03 + a0 * b.b3,
        acc.q10 + a1 * b.b0, acc.q11 + a1 * b.b1, acc.q12 + a1 * b.b2, acc.q13 + a1 * b.b3,
        acc.q20 + a2 * b.b0, acc.q21 + a2 * b.b1, acc.q22 + a2 * b.b2, acc.q23 + a2 * b.b3,
        acc.q30 + a3 * b.b0, acc.q31 + a3 * b.b1, acc.q32 + a3 * b.b2, acc.q33 + a3 * b.b3,
    );
}


// Row r (0..15) of a column of 16 rows given as 4 row quads.
fn row_of16(r: u32, q0: vec4<f32>, q1: vec4<f32>, q2: vec4<f32>, q3: vec4<f32>) -> f32 {
    if (r >= 12u) {
        return q3[r % 4u];
    } else if (r >= 8u) {
        return q2[r % 4u];
    } else if (r >= 4u) {
        return q1[r % 4u];
    }
    return q0[r % 4u];
}
