//! Matrix product and the fully connected layer `y = x·Wᵀ + b` (PyTorch's `nn.Linear`:
//! `x: [N, in]`, `w: [out, in]`, `b: [out]`), forward and backward, in float64.

/// `C[m, n] = Σ_k op(A)[m, k] · op(B)[k, n]`, with A stored row-major as `[m, k]` (or
/// `[k, m]` when `trans_a`) and B as `[k, n]` (or `[n, k]` when `trans_b`).
pub fn matmul(
    a: &[f64],
    b: &[f64],
    [m, n, k]: [usize; 3],
    trans_a: bool,
    trans_b: bool,
) -> Vec<f64> {
    assert_eq!(a.len(), m * k, "matmul reference: A");
    assert_eq!(b.len(), k * n, "matmul reference: B");
    let a_at = |i: usize, p: usize| if trans_a { a[p * m + i] } else { a[i * k + p] };
    let b_at = |p: usize, j: usize| if trans_b { b[j * k + p] } else { b[p * n + j] };
    let mut c = vec![0.0; m * n];
    for i in 0..m {
        for j in 0..n {
            c[i * n + j] = (0..k).map(|p| a_at(i, p) * b_at(p, j)).sum();
        }
    }
    c
}

/// `y[i, o] = Σ_f x[i, f] · w[o, f] + b[o]` for `x: [batch, in_features]`.
pub fn linear_forward(
    x: &[f64],
    w: &[f64],
    b: Option<&[f64]>,
    [batch, in_features, out_features]: [usize; 3],
) -> Vec<f64> {
    assert_eq!(x.len(), batch * in_features, "linear reference: x");
    assert_eq!(w.len(), out_features * in_features, "linear reference: w");
    let mut y = vec![0.0; batch * out_features];
    for i in 0..batch {
        for o in 0..out_features {
            let row = &x[i * in_features..(i + 1) * in_features];
            let weights = &w[o * in_features..(o + 1) * in_features];
            let bias = b.map_or(0.0, |b| b[o]);
            y[i * out_features + o] =
                bias + row.iter().zip(weights).map(|(x, w)| x * w).sum::<f64>();
        }
    }
    y
}

/// Gradients of [`linear_forward`] for upstream gradient `dy: [batch, out_features]`.
pub struct LinearGrads {
    /// `dL/dx[i, f] = Σ_o dy[i, o] · w[o, f]`
    pub dx: Vec<f64>,
    /// `dL/dw[o, f] = Σ_i dy[i, o] · x[i, f]`
    pub dw: Vec<f64>,
    /// `dL/db[o] = Σ_i dy[i, o]`
    pub db: Vec<f64>,
}

/// The backward pass of [`linear_forward`].
pub fn linear_backward(
    x: &[f64],
    w: &[f64],
    dy: &[f64],
    [batch, in_features, out_features]: [usize; 3],
) -> LinearGrads {
    assert_eq!(dy.len(), batch * out_features, "linear reference: dy");
    let mut dx = vec![0.0; batch * in_features];
    let mut dw = vec![0.0; out_features * in_features];
    let mut db = vec![0.0; out_features];
    for i in 0..batch {
        for o in 0..out_features {
            let g = dy[i * out_features + o];
            db[o] += g;
            for f in 0..in_features {
                dx[i * in_features + f] += g * w[o * in_features + f];
                dw[o * in_features + f] += g * x[i * in_features + f];
            }
        }
    }
    LinearGrads { dx, dw, db }
}
