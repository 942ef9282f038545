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
    hw_elems: u32,    // ce_stats, ce_apply, ce_input_grad: Elems per plane, H·W or H·W / 4
}
