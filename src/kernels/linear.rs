//! Matrix multiplication (`shaders/matmul.wgsl`) and the fully connected layer built on it,
//! `y = x·Wᵀ + b` in PyTorch's layout, with its backward pass (`shaders/column_sum.wgsl`
//! for the bias gradient).

use crate::error::{Error, Result};
use crate::gpu::{Binding, Gpu, KernelSpec, Tuning};
use crate::kernels::conv::{rows_block, rows_threads};
use crate::kernels::{expect_shape, grid_for, Recorder};
use crate::tensor::{DType, Tensor};

/// Rows and columns of C computed by one workgroup of the tiled matmul (GPU tuning); under
/// CPU tuning the row-block form (`matmul_rows`) computes 16 or 32 rows × 8 columns a thread.
const MATMUL_TILE: usize = 64;
/// Columns of the column-sum kernel's workgroup.
const COLUMN_SUM_COLS: usize = 32;

/// A, A as vec4, B, B as vec4, bias, C, params.
const MATMUL_BINDINGS: &[Binding] = &[
    Binding::Read,
    Binding::Read,
    Binding::Read,
    Binding::Read,
    Binding::Read,
    Binding::ReadWrite,
    Binding::Uniform,
];
const COLUMN_SUM_BINDINGS: &[Binding] = &[Binding::Read, Binding::ReadWrite, Binding::Uniform];

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct MatmulParams {
    m: u32,
    n: u32,
    k: u32,
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct ColumnSumParams {
    rows: u32,
    cols: u32,
}

/// The shape of one product `C[m, n] = op(A) · op(B)`, where op(A) is `[m, k]` and op(B) is
/// `[k, n]`. A is stored row-major as `[m, k]`, or as `[k, m]` when `trans_a`; B as `[k, n]`,
/// or as `[n, k]` when `trans_b`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MatmulSpec {
    /// Rows of C.
    pub m: usize,
    /// Columns of C.
    pub n: usize,
    /// The summed dimension.
    pub k: usize,
    /// Use the transpose of the stored A.
    pub trans_a: bool,
    /// Use the transpose of the stored B.
    pub trans_b: bool,
}

impl MatmulSpec {
    /// Stored shape of A.
    pub fn a_shape(&self) -> [usize; 2] {
        if self.trans_a {
            [self.k, self.m]
        } else {
            [self.m, self.k]
        }
    }

    /// Stored shape of B.
    pub fn b_shape(&self) -> [usize; 2] {
        if self.trans_b {
            [self.n, self.k]
        } else {
            [self.k, self.n]
        }
    }

    /// Multiply-adds times two: the work of one product.
    pub fn flops(&self) -> f64 {
        2.0 * self.m as f64 * self.n as f64 * self.k as f64
    }
}

fn expect_f32(op: &'static str, what: &str, t: &Tensor) -> Result<()> {
    if t.dtype() != DType::F32 {
        return Err(Error::invalid(
            op,
            format!("{what} must be f32, got {:?} {:?}", t.dtype(), t.shape()),
        ));
    }
    Ok(())
}

/// Checks that `t` holds exactly the elements of `expected` (any shape of that size, so
/// `[N, C, 1, 1]` passes for `[N, C]`).
fn expect_elements(op: &'static str, what: &str, t: &Tensor, expected: &[usize]) -> Result<()> {
    expect_f32(op, what, t)?;
    if t.len() != expected.iter().product::<usize>() {
        return Err(Error::shape(op, what, t.shape(), expected));
    }
    Ok(())
}

fn record_matmul(
    rec: &mut Recorder,
    op: &'static str,
    a: &Tensor,
    b: &Tensor,
    bias: Option<&Tensor>,
    c: &Tensor,
    spec: MatmulSpec,
) -> Result<()> {
    let MatmulSpec { m, n, k, .. } = spec;
    expect_elements(op, "A", a, &spec.a_shape())?;
    expect_elements(op, "B", b, &spec.b_shape())?;
    expect_elements(op, "C", c, &[m, n])?;
    if let Some(bias) = bias {
        expect_elements(op, "bias", bias, &[n])?;
    }
    if m == 0 || n == 0 {
        return Ok(());
    }
    if k == 0 && bias.is_none() {
        // An empty sum: the kernel would still write zeros, but a clear is cheaper.
        rec.clear(c);
        return Ok(());
    }

    // Staging reads 4 consecutive elements of the dimension contiguous in storage, as one
    // vec4 when that dimension is a multiple of 4.
    let vec4_view = |[rows, cols]: [usize; 2]| rows * cols > 0 && cols.is_multiple_of(4);
    let vec_a = vec4_view(spec.a_shape());
    let vec_b = vec4_view(spec.b_shape());
    let (entry, groups, rows_form) = match rec.gpu().tuning() {
        Tuning::Gpu => (
            "matmul",
            [
                n.div_ceil(MATMUL_TILE) as u32,
                m.div_ceil(MATMUL_TILE) as u32,
                1,
            ],
            None,
        ),
        Tuning::Cpu => {
            let rows = rows_block(m);
            let (threads, tiles_n) = rows_threads(rec.gpu(), n);
            let groups = [tiles_n as u32, m.div_ceil(rows) as u32, 1];
            ("matmul_rows", groups, Some((rows, threads)))
        }
    };
    let mut kernel = KernelSpec::new("matmul", entry, MATMUL_BINDINGS)
        .with("TRANS_A", spec.trans_a as u8 as f64)
        .with("TRANS_B", spec.trans_b as u8 as f64)
        .with("VEC_A", vec_a as u8 as f64)
        .with("VEC_B", vec_b as u8 as f64)
        .with("HAS_BIAS", bias.is_some() as u8 as f64);
    if let Some((rows, threads)) = rows_form {
        kernel = kernel
            .with("ROWS", rows as f64)
            .with("GROUP_THREADS", threads as f64);
    }
    let params = MatmulParams {
        m: m as u32,
        n: n as u32,
        k: k as u32,
    };

    // Unread bindings still need a buffer: a vec4 view one at least a vec4 long.
    let placeholder = if vec_a && vec_b {
        None
    } else {
        Some(rec.scratch(&[4], "matmul placeholder")?)
    };
    let a4 = match (&placeholder, vec_a) {
        (Some(p), false) => p,
        _ => a,
    };
    let b4 = match (&placeholder, vec_b) {
        (Some(p), false) => p,
        _ => b,
    };
    let bias = bias.unwrap_or(a);
    rec.dispatch(
        &kernel,
        &[
            a.buffer(),
            a4.buffer(),
            b.buffer(),
            b4.buffer(),
            bias.buffer(),
            c.buffer(),
        ],
        Some(&params),
        groups,
    )
}

/// Records `C = op(A) · op(B)` into `c`. Tensors are checked by element count against the
/// stored shapes [`MatmulSpec::a_shape`], [`MatmulSpec::b_shape`] and `[m, n]`, so any view
/// of the right size may be passed.
pub fn matmul_into(
    rec: &mut Recorder,
    a: &Tensor,
    b: &Tensor,
    c: &Tensor,
    spec: MatmulSpec,
) -> Result<()> {
    record_matmul(rec, "matmul", a, b, None, c, spec)
}

/// Records `C = op(A) · op(B) + bias`, the bias (`[n]`) added to every row in the kernel's
/// epilogue.
pub fn matmul_bias_into(
    rec: &mut Recorder,
    a: &Tensor,
    b: &Tensor,
    bias: &Tensor,
    c: &Tensor,
    spec: MatmulSpec,
) -> Result<()> {
    record_matmul(rec, "matmul", a, b, Some(bias), c, spec)
}

fn matrix_dims(op: &'static str, what: &str, t: &Tensor) -> Result<[usize; 2]> {
    match t.shape() {
        &[r, c] => Ok([r, c]),
        other => Err(Error::invalid(
            op,
            format!("{what} must be 2-D, got {other:?}"),
        )),
    }
}

/// `op(A) · op(B)` for 2-D tensors, submitted at once; the inner dimensions must agree.
pub fn matmul(gpu: &Gpu, a: &Tensor, b: &Tensor, trans_a: bool, trans_b: bool) -> Result<Tensor> {
    let [ar, ac] = matrix_dims("matmul", "A", a)?;
    let [br, bc] = matrix_dims("matmul", "B", b)?;
    let (m, k) = if trans_a { (ac, ar) } else { (ar, ac) };
    let (kb, n) = if trans_b { (bc, br) } else { (br, bc) };
    if k != kb {
        return Err(Error::invalid(
            "matmul",
            format!(
                "op(A) is [{m}, {k}] (A {:?}) but op(B) is [{kb}, {n}] (B {:?}); \
                 inner dimensions must agree",
                a.shape(),
                b.shape()
            ),
        ));
    }
    let spec = MatmulSpec {
        m,
        n,
        k,
        trans_a,
        trans_b,
    };
    let c = Tensor::uninit(gpu, &[m, n], DType::F32, "matmul output")?;
    let mut rec = Recorder::new(gpu);
    matmul_into(&mut rec, a, b, &c, spec)?;
    rec.submit()?;
    Ok(c)
}

/// Records `out[j] = Σ_i x[i, j]` for `x` of shape `[rows, cols]` (by element count) and
/// `out` of `cols` elements.
pub fn column_sum_into(
    rec: &mut Recorder,
    x: &Tensor,
    rows: usize,
    cols: usize,
    out: &Tensor,
) -> Result<()> {
    expect_elements("column_sum", "input", x, &[rows, cols])?;
    expect_elements("column_sum", "output", out, &[cols])?;
    if cols == 0 {
        return Ok(());
    }
    let kernel = KernelSpec::new("column_sum", "column_sum", COLUMN_SUM_BINDINGS);
    let params = ColumnSumParams {
        rows: rows as u32,
        cols: cols as u32,
    };
    let groups = grid_for(rec.gpu(), cols, COLUMN_SUM_COLS);
    rec.dispatch(&kernel, &[x.buffer(), out.buffer()], Some(&params), groups)
}

/// Sizes of a fully connected layer, read from its input and weight.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LinearShape {
    /// Batch size N.
    pub batch: usize,
    /// Input features.
    pub in_features: usize,
    /// Output features.
    pub out_features: usize,
}

impl LinearShape {
    /// Checks `x: [N, in]` against `w: [out, in]`.
    pub fn of(x: &Tensor, w: &Tensor) -> Result<Self> {
        let [batch, in_features] = matrix_dims("linear", "input", x)?;
        let [out_features, w_in] = matrix_dims("linear", "weight", w)?;
        expect_f32("linear", "input", x)?;
        expect_f32("linear", "weight", w)?;
        if w_in != in_features {
            return Err(Error::invalid(
                "linear",
                format!(
                    "input {:?} has {in_features} features, weight {:?} expects {w_in}",
                    x.shape(),
                    w.shape()
                ),
            ));
        }
        Ok(LinearShape {
            batch,
            in_features,
            out_features,
        })
    }
}

/// Records `y = x·Wᵀ (+ b)` for `x: [N, in]`, `w: [out, in]`, `bias: [out]`, `y: [N, out]`.
pub fn forward_into(
    rec: &mut Recorder,
    x: &Tensor,
    w: &Tensor,
    bias: Option<&Tensor>,
    y: &Tensor,
) -> Result<()> {
    let s = LinearShape::of(x, w)?;
    expect_shape("linear", "output", y, &[s.batch, s.out_features])?;
    if let Some(b) = bias {
        expect_shape("linear", "bias", b, &[s.out_features])?;
    }
    let spec = MatmulSpec {
        m: s.batch,
        n: s.out_features,
        k: s.in_features,
        trans_a: false,
        trans_b: true,
    };
    record_matmul(rec, "linear", x, w, bias, y, spec)
}

/// Records the gradients of `y = x·Wᵀ + b` for the upstream gradient `dy: [N, out]`:
/// `dx = dy·W` (skipped when `dx` is `None`, as for a network's first layer),
/// `dw = dyᵀ·x` and `db = Σ_n dy` (skipped when `None`).
pub fn backward_into(
    rec: &mut Recorder,
    x: &Tensor,
    w: &Tensor,
    dy: &Tensor,
    dx: Option<&Tensor>,
    dw: &Tensor,
    db: Option<&Tensor>,
) -> Result<()> {
    let s = LinearShape::of(x, w)?;
    expect_shape(
        "linear",
        "upstream gradient",
        dy,
        &[s.batch, s.out_features],
    )?;
    expect_shape("linear", "weight gradient", dw, w.shape())?;
    if let Some(dx) = dx {
        expect_shape("linear", "input gradient", dx, x.shape())?;
    }
    if let Some(db) = db {
        expect_shape("linear", "bias gradient", db, &[s.out_features])?;
    }

    if let Some(dx) = dx {
        let spec = MatmulSpec {
            m: s.batch,
            n: s.in_features,
            k: s.out_features,
            trans_a: false,
            trans_b: false,
        };
        record_matmul(rec, "linear", dy, w, None, dx, spec)?;
    }
    let spec = MatmulSpec {
        m: s.out_features,
        n: s.in_features,
        k: s.batch,
        trans_a: true,
        trans_b: false,
    };
    record_matmul(rec, "linear", dy, x, None, dw, spec)?;
    if let Some(db) = db {
        column_sum_into(rec, dy, s.batch, s.out_features, db)?;
    }
    Ok(())
}

/// `x·Wᵀ (+ b)`, submitted at once.
pub fn forward(gpu: &Gpu, x: &Tensor, w: &Tensor, bias: Option<&Tensor>) -> Result<Tensor> {
    let s = LinearShape::of(x, w)?;
    let y = Tensor::uninit(gpu, &[s.batch, s.out_features], DType::F32, "linear output")?;
    let mut rec = Recorder::new(gpu);
    forward_into(&mut rec, x, w, bias, &y)?;
    rec.submit()?;
    Ok(y)
}

/// Gradients of a fully connected layer.
#[derive(Debug)]
pub struct LinearGrads {
    /// Gradient of the input, `[N, in]`.
    pub dx: Tensor,
    /// Gradient of the weight, `[out, in]`.
    pub dw: Tensor,
    /// Gradient of the bias, `[out]`, when asked for.
    pub db: Option<Tensor>,
}

/// All gradients of `y = x·Wᵀ + b` for upstream `dy`, submitted at once; `db` only when
/// `with_bias`.
pub fn backward(
    gpu: &Gpu,
    x: &Tensor,
    w: &Tensor,
    dy: &Tensor,
    with_bias: bool,
) -> Result<LinearGrads> {
    let s = LinearShape::of(x, w)?;
    let dx = Tensor::uninit(gpu, x.shape(), DType::F32, "linear input gradient")?;
    let dw = Tensor::uninit(gpu, w.shape(), DType::F32, "linear weight gradient")?;
    let db = if with_bias {
        Some(Tensor::uninit(
            gpu,
            &[s.out_features],
            DType::F32,
            "linear bias gradient",
        )?)
    } else {
        None
    };
    let mut rec = Recorder::new(gpu);
    backward_into(&mut rec, x, w, dy, Some(&dx), &dw, db.as_ref())?;
    rec.submit()?;
    Ok(LinearGrads { dx, dw, db })
}
