//! Matrix product and fully connected layer against float64 references.

mod common;

use cenet::kernels::linear::{self, MatmulSpec};
use cenet::kernels::Recorder;
use cenet::{DType, Tensor};
use common::reference::linear as reference;
use common::*;

/// Products with up to ~130 terms per output, accumulated in f32 in a different order from
/// the reference.
const TOL_MATMUL: f64 = TOL_REDUCTION;

const TRANSPOSES: [(bool, bool); 4] = [(false, false), (true, false), (false, true), (true, true)];

fn stored(rows: usize, cols: usize, trans: bool) -> [usize; 2] {
    if trans {
        [cols, rows]
    } else {
        [rows, cols]
    }
}

/// Checks `op(A) · op(B)` against the reference under each kernel tuning (the tiled kernel
/// and the row-block one).
fn check_matmul(rng: &mut Rng, [m, n, k]: [usize; 3], trans_a: bool, trans_b: bool) {
    let a = through_f32(&rng.normal(m * k));
    let b = through_f32(&rng.normal(k * n));
    let want = reference::matmul(&a, &b, [m, n, k], trans_a, trans_b);
    for (tuning, gpu) in gpus_of_each_tuning() {
        let (at, bt) = (
            upload_to(gpu, &stored(m, k, trans_a), &a),
            upload_to(gpu, &stored(k, n, trans_b), &b),
        );
        let c = linear::matmul(gpu, &at, &bt, trans_a, trans_b).unwrap();
        assert_close(
            &format!("matmul {m}x{n}x{k} trans_a={trans_a} trans_b={trans_b} {tuning:?}"),
            &download_from(gpu, &c),
            &want,
            TOL_MATMUL,
        );
    }
}

#[test]
fn matmul_matches_reference_for_every_transpose_and_odd_sizes() {
    let mut rng = Rng::new(10);
    for (trans_a, trans_b) in TRANSPOSES {
        // [3, 7, 8]: one operand can be staged as vec4, the other not.
        for size in [
            [1, 1, 1],
            [17, 33, 9],
            [65, 70, 129],
            [64, 64, 16],
            [3, 7, 8],
        ] {
            check_matmul(&mut rng, size, trans_a, trans_b);
        }
    }
}

#[test]
fn matmul_matches_reference_for_thin_and_empty_sums() {
    let mut rng = Rng::new(11);
    // One row, one column, K shorter and longer than a staged slice.
    for size in [[1, 130, 3], [130, 1, 40], [3, 5, 0]] {
        check_matmul(&mut rng, size, false, false);
    }
}

#[test]
fn matmul_into_accepts_views_of_the_right_size() {
    let mut rng = Rng::new(12);
    let (m, n, k) = (3, 4, 6);
    let a = through_f32(&rng.normal(m * k));
    let b = through_f32(&rng.normal(k * n));
    // A as [3, 6, 1, 1] (a pooled feature map), C as [12].
    let (at, bt) = (upload(&[m, k, 1, 1], &a), upload(&[k, n], &b));
    let c = Tensor::uninit(gpu(), &[m * n], DType::F32, "c").unwrap();
    let mut rec = Recorder::new(gpu());
    let spec = MatmulSpec {
        m,
        n,
        k,
        trans_a: false,
        trans_b: false,
    };
    linear::matmul_into(&mut rec, &at, &bt, &c, spec).unwrap();
    rec.submit().unwrap();
    let want = reference::matmul(&a, &b, [m, n, k], false, false);
    assert_close("matmul view", &download(&c), &want, TOL_MATMUL);
}

#[test]
fn matmul_rejects_mismatched_inner_dimensions_naming_both_shapes() {
    let a = upload(&[2, 3], &[0.0; 6]);
    let b = upload(&[4, 5], &[0.0; 20]);
    let err = linear::matmul(gpu(), &a, &b, false, false)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("matmul") && err.contains("[2, 3]") && err.contains("[4, 5]"),
        "{err}"
    );

    let c = Tensor::uninit(gpu(), &[2, 4], DType::F32, "c").unwrap();
    let spec = MatmulSpec {
        m: 2,
        n: 5,
        k: 3,
        trans_a: false,
        trans_b: true,
    };
    let err = linear::matmul_into(&mut Recorder::new(gpu()), &a, &b, &c, spec)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("matmul") && err.contains("[4, 5]") && err.contains("[5, 3]"),
        "{err}"
    );
}

/// Linear layer sizes [N, in, out]: a single sample, odd sizes, a tile-crossing batch.
const LINEAR_SIZES: [[usize; 3]; 4] = [[1, 7, 5], [3, 17, 10], [3, 64, 64], [70, 33, 3]];

#[test]
fn linear_forward_matches_reference_with_and_without_bias() {
    let mut rng = Rng::new(13);
    for size @ [n, fin, fout] in LINEAR_SIZES {
        let x = through_f32(&rng.normal(n * fin));
        let w = through_f32(&rng.normal(fout * fin));
        let b = through_f32(&rng.normal(fout));
        for (tuning, gpu) in gpus_of_each_tuning() {
            let (xt, wt, bt) = (
                upload_to(gpu, &[n, fin], &x),
                upload_to(gpu, &[fout, fin], &w),
                upload_to(gpu, &[fout], &b),
            );
            for bias in [false, true] {
                let y = linear::forward(gpu, &xt, &wt, bias.then_some(&bt)).unwrap();
                assert_eq!(y.shape(), [n, fout]);
                let want = reference::linear_forward(&x, &w, bias.then_some(&b[..]), size);
                assert_close(
                    &format!("linear forward {size:?} bias={bias} {tuning:?}"),
                    &download_from(gpu, &y),
                    &want,
                    TOL_MATMUL,
                );
            }
        }
    }
}

#[test]
fn linear_with_no_input_features_outputs_the_bias() {
    let x = Tensor::uninit(gpu(), &[3, 0], DType::F32, "x").unwrap();
    let w = Tensor::uninit(gpu(), &[2, 0], DType::F32, "w").unwrap();
    let b = upload(&[2], &[0.5, -1.5]);
    let y = download(&linear::forward(gpu(), &x, &w, Some(&b)).unwrap());
    assert_eq!(y, [0.5, -1.5, 0.5, -1.5, 0.5, -1.5]);
}

#[test]
fn linear_backward_matches_reference() {
    let mut rng = Rng::new(14);
    for size @ [n, fin, fout] in LINEAR_SIZES {
        let x = through_f32(&rng.normal(n * fin));
        let w = through_f32(&rng.normal(fout * fin));
        let dy = through_f32(&rng.normal(n * fout));
        let grads = linear::backward(
            gpu(),
            &upload(&[n, fin], &x),
            &upload(&[fout, fin], &w),
            &upload(&[n, fout], &dy),
            true,
        )
        .unwrap();
        let want = reference::linear_backward(&x, &w, &dy, size);
        assert_close(
            &format!("linear dx {size:?}"),
            &download(&grads.dx),
            &want.dx,
            TOL_MATMUL,
        );
        assert_close(
            &format!("linear dw {size:?}"),
            &download(&grads.dw),
            &want.dw,
            TOL_MATMUL,
        );
        let db = grads.db.expect("bias gradient asked for");
        assert_close(
            &format!("linear db {size:?}"),
            &download(&db),
            &want.db,
            TOL_MATMUL,
        );
    }
}

#[test]
fn linear_reference_gradients_match_finite_differences() {
    let mut rng = Rng::new(15);
    let size @ [n, fin, fout] = [3, 7, 5];
    let x = rng.normal(n * fin);
    let w = rng.normal(fout * fin);
    let b = rng.normal(fout);
    let dy = rng.normal(n * fout);
    let want = reference::linear_backward(&x, &w, &dy, size);
    let loss =
        |x: &[f64], w: &[f64], b: &[f64]| dot(&reference::linear_forward(x, w, Some(b), size), &dy);
    check_gradient("linear dx", &x, &want.dx, 50, |x| loss(x, &w, &b));
    check_gradient("linear dw", &w, &want.dw, 50, |w| loss(&x, w, &b));
    check_gradient("linear db", &b, &want.db, 50, |b| loss(&x, &w, b));
}

#[test]
fn linear_backward_into_skips_optional_gradients() {
    // A first layer needs no dx; a layer without bias no db.
    let mut rng = Rng::new(16);
    let size @ [n, fin, fout] = [3, 9, 4];
    let x = through_f32(&rng.normal(n * fin));
    let w = through_f32(&rng.normal(fout * fin));
    let dy = through_f32(&rng.normal(n * fout));
    let dw = Tensor::uninit(gpu(), &[fout, fin], DType::F32, "dw").unwrap();
    let mut rec = Recorder::new(gpu());
    linear::backward_into(
        &mut rec,
        &upload(&[n, fin], &x),
        &upload(&[fout, fin], &w),
        &upload(&[n, fout], &dy),
        None,
        &dw,
        None,
    )
    .unwrap();
    assert_eq!(rec.dispatch_count(), 1);
    rec.submit().unwrap();
    let want = reference::linear_backward(&x, &w, &dy, size);
    assert_close("linear dw only", &download(&dw), &want.dw, TOL_MATMUL);
}

#[test]
fn column_sum_matches_reference_for_tall_and_wide_matrices() {
    let mut rng = Rng::new(17);
    for [rows, cols] in [[1, 1], [300, 10], [3, 100], [1000, 33]] {
        let x = through_f32(&rng.normal(rows * cols));
        let out = Tensor::uninit(gpu(), &[cols], DType::F32, "sums").unwrap();
        let mut rec = Recorder::new(gpu());
        linear::column_sum_into(&mut rec, &upload(&[rows, cols], &x), rows, cols, &out).unwrap();
        rec.submit().unwrap();
        let want: Vec<f64> = (0..cols)
            .map(|j| (0..rows).map(|i| x[i * cols + j]).sum())
            .collect();
        assert_close(
            &format!("column sum {rows}x{cols}"),
            &download(&out),
            &want,
            TOL_REDUCTION,
        );
    }
}

#[test]
fn linear_rejects_mismatched_shapes_naming_both() {
    let x = upload(&[3, 7], &[0.0; 21]);
    let w = upload(&[5, 6], &[0.0; 30]);
    let e = linear::forward(gpu(), &x, &w, None)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("linear") && e.contains("[3, 7]") && e.contains("[5, 6]"),
        "{e}"
    );

    let w = upload(&[5, 7], &[0.0; 35]);
    let b = upload(&[4], &[0.0; 4]);
    let e = linear::forward(gpu(), &x, &w, Some(&b))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("linear") && e.contains("[4]") && e.contains("[5]"),
        "{e}"
    );

    let dy = upload(&[3, 4], &[0.0; 12]);
    let e = linear::backward(gpu(), &x, &w, &dy, true)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("linear") && e.contains("[3, 4]") && e.contains("[3, 5]"),
        "{e}"
    );

    let images = upload(&[3, 7, 1, 1], &[0.0; 21]);
    let e = linear::forward(gpu(), &images, &w, None)
        .unwrap_err()
        .to_string();
    assert!(e.contains("linear") && e.contains("[3, 7, 1, 1]"), "{e}");
}

#[test]
#[ignore = "benchmark: run by hand with --ignored --nocapture"]
fn matmul_throughput() {
    use std::time::Instant;
    for size in [512usize, 1024] {
        let (m, n, k) = (size, size, size);
        let a = Tensor::from_slice(gpu(), &[m, k], &vec![0.5; m * k]).unwrap();
        let b = Tensor::from_slice(gpu(), &[k, n], &vec![0.25; k * n]).unwrap();
        let c = Tensor::uninit(gpu(), &[m, n], DType::F32, "c").unwrap();
        for (trans_a, trans_b) in TRANSPOSES {
            let spec = MatmulSpec {
                m,
                n,
                k,
                trans_a,
                trans_b,
            };
            let run = |reps: usize| {
                let mut rec = Recorder::new(gpu());
                for _ in 0..reps {
                    linear::matmul_into(&mut rec, &a, &b, &c, spec).unwrap();
                }
                rec.submit().unwrap();
                gpu().wait_idle().unwrap();
            };
            run(1);
            let reps = (2e9 / spec.flops()).clamp(1.0, 20.0) as usize;
            let start = Instant::now();
            run(reps);
            let secs = start.elapsed().as_secs_f64();
            println!(
                "matmul {size}^3 trans_a={trans_a} trans_b={trans_b}: {:.2} GFLOP/s",
                spec.flops() * reps as f64 / secs / 1e9
            );
        }
    }
}
