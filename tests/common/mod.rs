//! Shared test helpers: one GPU per test binary, seeded random inputs, the comparison of GPU
//! results with float64 references, and finite-difference gradient checks.
#![allow(dead_code)]

pub mod reference;

use std::sync::OnceLock;

use cenet::gpu::{AdapterChoice, Tuning};
use cenet::{Gpu, Tensor};
use rand::{Rng as _, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Elementwise ops: exact up to an ulp or two.
pub const TOL_ELEMENTWISE: f64 = 1e-6;
/// Sums and dot products in f32 over up to a few thousand terms.
pub const TOL_REDUCTION: f64 = 1e-5;
/// Outputs of chained reductions (normalisation, softmax) and gradients through them.
pub const TOL_NORMALIZED: f64 = 1e-4;
/// A float64 reference gradient against central finite differences of the same reference.
pub const TOL_FINITE_DIFF: f64 = 1e-6;

/// The device shared by every test of one binary.
pub fn gpu() -> &'static Gpu {
    static GPU: OnceLock<Gpu> = OnceLock::new();
    GPU.get_or_init(|| {
        let _ = env_logger::builder().is_test(true).try_init();
        Gpu::new().expect("a GPU adapter (install mesa-vulkan-drivers on Linux without a GPU)")
    })
}

/// One device per kernel tuning (see `cenet::gpu::Tuning`), for the kernels that have variants
/// for each: both run on whatever adapter the machine has.
pub fn gpus_of_each_tuning() -> [(Tuning, &'static Gpu); 2] {
    static CPU: OnceLock<Gpu> = OnceLock::new();
    static GPU: OnceLock<Gpu> = OnceLock::new();
    let open = |tuning| {
        let _ = env_logger::builder().is_test(true).try_init();
        let choice = AdapterChoice {
            tuning: Some(tuning),
            ..AdapterChoice::from_env()
        };
        pollster::block_on(Gpu::new_async(choice)).expect("a GPU adapter")
    };
    [
        (Tuning::Cpu, CPU.get_or_init(|| open(Tuning::Cpu))),
        (Tuning::Gpu, GPU.get_or_init(|| open(Tuning::Gpu))),
    ]
}

/// A seeded generator of test inputs.
pub struct Rng(ChaCha8Rng);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(ChaCha8Rng::seed_from_u64(seed))
    }

    /// Uniform values in [lo, hi).
    pub fn uniform(&mut self, n: usize, lo: f64, hi: f64) -> Vec<f64> {
        (0..n).map(|_| self.0.random_range(lo..hi)).collect()
    }

    /// Standard normal values (Box–Muller).
    pub fn normal(&mut self, n: usize) -> Vec<f64> {
        (0..n)
            .map(|_| {
                let u1: f64 = self.0.random_range(f64::EPSILON..1.0);
                let u2: f64 = self.0.random_range(0.0..1.0);
                (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
            })
            .collect()
    }

    /// Integers in [0, n).
    pub fn below(&mut self, count: usize, n: u32) -> Vec<u32> {
        (0..count).map(|_| self.0.random_range(0..n)).collect()
    }
}

pub fn to_f32(v: &[f64]) -> Vec<f32> {
    v.iter().map(|&x| x as f32).collect()
}

/// Rounds values through f32, so the reference sees exactly what the GPU sees.
pub fn through_f32(v: &[f64]) -> Vec<f64> {
    v.iter().map(|&x| x as f32 as f64).collect()
}

/// Uploads float64 values as an f32 tensor.
pub fn upload(shape: &[usize], v: &[f64]) -> Tensor {
    upload_to(gpu(), shape, v)
}

/// Uploads float64 values as an f32 tensor on `gpu`.
pub fn upload_to(gpu: &Gpu, shape: &[usize], v: &[f64]) -> Tensor {
    Tensor::from_slice(gpu, shape, &to_f32(v)).expect("upload")
}

/// Reads a tensor back as float64.
pub fn download(t: &Tensor) -> Vec<f64> {
    download_from(gpu(), t)
}

/// Reads a tensor on `gpu` back as float64.
pub fn download_from(gpu: &Gpu, t: &Tensor) -> Vec<f64> {
    t.to_vec(gpu)
        .expect("download")
        .into_iter()
        .map(f64::from)
        .collect()
}

/// How far `got` is from `want`: normwise relative error ‖got − want‖₂ / ‖want‖₂ and
/// the worst element.
#[derive(Debug)]
pub struct Comparison {
    pub normwise: f64,
    pub worst_index: usize,
    pub worst_got: f64,
    pub worst_want: f64,
}

pub fn compare(got: &[f64], want: &[f64]) -> Comparison {
    assert_eq!(got.len(), want.len(), "compared slices differ in length");
    let mut diff2 = 0.0;
    let mut ref2 = 0.0;
    let mut worst = (0usize, 0.0f64);
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        let d = if g.is_finite() {
            (g - w).abs()
        } else {
            f64::INFINITY
        };
        diff2 += d * d;
        ref2 += w * w;
        if d > worst.1 || (i == 0 && d.is_nan()) {
            worst = (i, d);
        }
    }
    let normwise = if ref2 > 0.0 {
        (diff2 / ref2).sqrt()
    } else {
        diff2.sqrt()
    };
    let (i, _) = worst;
    Comparison {
        normwise: if normwise.is_nan() {
            f64::INFINITY
        } else {
            normwise
        },
        worst_index: i,
        worst_got: got.get(i).copied().unwrap_or(0.0),
        worst_want: want.get(i).copied().unwrap_or(0.0),
    }
}

/// Asserts `got` is within `tol` of `want` in normwise relative error, reporting the worst
/// element either way (visible with `--nocapture`).
#[track_caller]
pub fn assert_close(name: &str, got: &[f64], want: &[f64], tol: f64) {
    let c = compare(got, want);
    let report = format!(
        "{name}: normwise relative error {:.3e} (tolerance {tol:.0e}), \
         worst element [{}] got {} want {}",
        c.normwise, c.worst_index, c.worst_got, c.worst_want
    );
    println!("{report}");
    assert!(c.normwise <= tol, "{report}");
}

/// Central finite differences of a scalar function at `x`, for the indices in `at`.
pub fn finite_diff(x: &[f64], at: &[usize], h: f64, f: impl Fn(&[f64]) -> f64) -> Vec<f64> {
    let mut x = x.to_vec();
    at.iter()
        .map(|&i| {
            let x0 = x[i];
            x[i] = x0 + h;
            let up = f(&x);
            x[i] = x0 - h;
            let down = f(&x);
            x[i] = x0;
            (up - down) / (2.0 * h)
        })
        .collect()
}

/// Checks an analytic float64 gradient against central differences of `loss` at up to
/// `samples` indices spread over `x` (all of them when `x` is small).
#[track_caller]
pub fn check_gradient(
    name: &str,
    x: &[f64],
    analytic: &[f64],
    samples: usize,
    loss: impl Fn(&[f64]) -> f64,
) {
    let step = (x.len() / samples.max(1)).max(1);
    let at: Vec<usize> = (0..x.len()).step_by(step).collect();
    let numeric = finite_diff(x, &at, 1e-6, loss);
    let picked: Vec<f64> = at.iter().map(|&i| analytic[i]).collect();
    assert_close(
        &format!("{name} (finite differences)"),
        &picked,
        &numeric,
        TOL_FINITE_DIFF,
    );
}

/// ⟨a, b⟩ in float64: turns an output and a fixed upstream gradient into a scalar loss.
pub fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// Like [`assert_close`], for values that can be exactly zero in exact arithmetic (a running
/// mean of batch-normalised data): the error is measured against ‖want‖₂ or against
/// `typical`·√len, whichever is larger, where `typical` is the magnitude the values have
/// in general.
#[track_caller]
pub fn assert_close_near_zero(name: &str, got: &[f64], want: &[f64], tol: f64, typical: f64) {
    let c = compare(got, want);
    let norm = want.iter().map(|w| w * w).sum::<f64>().sqrt();
    let floor = typical * (want.len() as f64).sqrt();
    let error = c.normwise * norm.max(f64::MIN_POSITIVE) / norm.max(floor);
    let report = format!(
        "{name}: error {error:.3e} relative to max(‖want‖, {typical}·√n) \
         (tolerance {tol:.0e}), worst element [{}] got {} want {}",
        c.worst_index, c.worst_got, c.worst_want
    );
    println!("{report}");
    assert!(error <= tol, "{report}");
}
