//! Global average pooling and 2-D max pooling against float64 references.

mod common;

use cenet::kernels::pool::{self, MaxPool2d};
use cenet::kernels::Recorder;
use cenet::{DType, Tensor};
use common::reference::pool as reference;
use common::*;

/// Max pooling selects and sums inputs without rounding beyond f32 addition of a few terms.
const TOL_SELECT: f64 = TOL_ELEMENTWISE;

fn len(shape: [usize; 4]) -> usize {
    shape.iter().product()
}

#[test]
fn global_avg_pool_matches_reference_forward_and_backward() {
    let mut rng = Rng::new(20);
    // Planes from 1 to 1320 elements: from 256 planes per workgroup to 256 threads per plane.
    for xs in [
        [1, 3, 7, 5],
        [3, 3, 7, 5],
        [3, 16, 8, 8],
        [2, 5, 1, 1],
        [3, 300, 2, 2],
        [2, 3, 33, 40],
    ] {
        let x = through_f32(&rng.normal(len(xs)));
        let y = download(&pool::global_avg_pool(gpu(), &upload(&xs, &x)).unwrap());
        let want = reference::global_avg_pool_forward(&x, xs);
        assert_close(&format!("gap forward {xs:?}"), &y, &want, TOL_REDUCTION);

        let dy = through_f32(&rng.normal(xs[0] * xs[1]));
        let dyt = upload(&[xs[0], xs[1]], &dy);
        let dx = download(&pool::global_avg_pool_backward(gpu(), &dyt, &xs).unwrap());
        let want = reference::global_avg_pool_backward(&dy, xs);
        assert_close(&format!("gap backward {xs:?}"), &dx, &want, TOL_ELEMENTWISE);
    }
}

#[test]
fn global_avg_pool_reference_gradient_matches_finite_differences() {
    let mut rng = Rng::new(21);
    let xs = [3, 3, 7, 5];
    let x = rng.normal(len(xs));
    let dy = rng.normal(9);
    let analytic = reference::global_avg_pool_backward(&dy, xs);
    check_gradient("gap", &x, &analytic, 100, |x| {
        dot(&reference::global_avg_pool_forward(x, xs), &dy)
    });
}

/// (input shape, window) pairs: odd planes, overlapping and disjoint windows, padding,
/// rectangular windows, a 1×1 window.
fn max_pool_cases() -> Vec<([usize; 4], MaxPool2d)> {
    vec![
        ([1, 3, 7, 5], MaxPool2d::square(2, 2, 0)),
        ([3, 3, 7, 5], MaxPool2d::square(3, 2, 1)),
        ([3, 2, 8, 8], MaxPool2d::square(3, 1, 1)),
        ([2, 3, 7, 5], MaxPool2d::square(2, 1, 0)),
        (
            [3, 2, 7, 5],
            MaxPool2d {
                kernel: [3, 2],
                stride: [2, 1],
                padding: [1, 1],
            },
        ),
        ([1, 2, 4, 3], MaxPool2d::square(1, 1, 0)),
        ([3, 3, 9, 9], MaxPool2d::square(5, 3, 2)),
    ]
}

fn check_max_pool(name: &str, x: &[f64], xs: [usize; 4], p: MaxPool2d, dy_seed: u64) {
    let (want_y, want_at) = reference::max_pool2d_forward(x, xs, p.kernel, p.stride, p.padding);
    let out = pool::max_pool2d(gpu(), &upload(&xs, x), &p).unwrap();
    let ys = out.y.shape().to_vec();
    assert_close(
        &format!("{name} forward"),
        &download(&out.y),
        &want_y,
        TOL_SELECT,
    );
    let at: Vec<usize> = out
        .argmax
        .to_vec_u32(gpu())
        .unwrap()
        .into_iter()
        .map(|i| i as usize)
        .collect();
    assert_eq!(at, want_at, "{name}: argmax");

    let dy = through_f32(&Rng::new(dy_seed).normal(want_y.len()));
    let dx = pool::max_pool2d_backward(gpu(), &upload(&ys, &dy), &out.argmax, &p, &xs).unwrap();
    let want = reference::max_pool2d_backward(&dy, &want_at, xs, [ys[2], ys[3]]);
    assert_close(
        &format!("{name} backward"),
        &download(&dx),
        &want,
        TOL_SELECT,
    );
}

#[test]
fn max_pool2d_matches_reference_forward_argmax_and_backward() {
    let mut rng = Rng::new(22);
    for (i, (xs, p)) in max_pool_cases().into_iter().enumerate() {
        let x = through_f32(&rng.normal(len(xs)));
        check_max_pool(
            &format!("max_pool2d {xs:?} {p:?}"),
            &x,
            xs,
            p,
            100 + i as u64,
        );
    }
}

#[test]
fn max_pool2d_breaks_ties_at_the_first_maximum_in_scan_order() {
    // Few distinct values: most windows hold several maxima, and overlapping windows share
    // them, so the backward pass must add several dy into one element.
    let mut rng = Rng::new(23);
    for (i, (xs, p)) in max_pool_cases().into_iter().enumerate() {
        let x: Vec<f64> = rng.below(len(xs), 3).into_iter().map(f64::from).collect();
        check_max_pool(&format!("ties {xs:?} {p:?}"), &x, xs, p, 200 + i as u64);
    }
    // A constant plane: the first element of every window wins.
    let xs = [1, 1, 5, 5];
    check_max_pool("constant", &[1.0; 25], xs, MaxPool2d::square(3, 2, 1), 300);
}

#[test]
fn max_pool2d_reference_gradient_matches_finite_differences() {
    let mut rng = Rng::new(24);
    for (xs, p) in max_pool_cases() {
        // Distinct values far apart compared with the step, so no window changes its maximum.
        let x: Vec<f64> = rng.normal(len(xs)).iter().map(|v| v * 10.0).collect();
        let (y, at) = reference::max_pool2d_forward(&x, xs, p.kernel, p.stride, p.padding);
        let [oh, ow] =
            reference::max_pool2d_output_size([xs[2], xs[3]], p.kernel, p.stride, p.padding);
        let dy = rng.normal(y.len());
        let analytic = reference::max_pool2d_backward(&dy, &at, xs, [oh, ow]);
        check_gradient(
            &format!("max_pool2d {xs:?} {p:?}"),
            &x,
            &analytic,
            60,
            |x| {
                dot(
                    &reference::max_pool2d_forward(x, xs, p.kernel, p.stride, p.padding).0,
                    &dy,
                )
            },
        );
    }
}

#[test]
fn pooling_records_into_caller_tensors() {
    let mut rng = Rng::new(25);
    let xs = [3, 3, 7, 5];
    let p = MaxPool2d::square(3, 2, 1);
    let x = through_f32(&rng.normal(len(xs)));
    let xt = upload(&xs, &x);
    let (want_y, want_at) = reference::max_pool2d_forward(&x, xs, p.kernel, p.stride, p.padding);
    let ys = p.output_shape(xs).unwrap();
    let y = Tensor::uninit(gpu(), &ys, DType::F32, "y").unwrap();
    let at = Tensor::uninit(gpu(), &ys, DType::U32, "argmax").unwrap();
    let gap = Tensor::uninit(gpu(), &[3, 3], DType::F32, "gap").unwrap();

    let mut rec = Recorder::new(gpu());
    pool::max_pool2d_forward_into(&mut rec, &xt, &p, &y, &at).unwrap();
    pool::global_avg_pool_forward_into(&mut rec, &xt, &gap).unwrap();
    rec.submit().unwrap();

    assert_close("max_pool2d_into", &download(&y), &want_y, TOL_SELECT);
    let at: Vec<usize> = at
        .to_vec_u32(gpu())
        .unwrap()
        .into_iter()
        .map(|i| i as usize)
        .collect();
    assert_eq!(at, want_at);
    let want = reference::global_avg_pool_forward(&x, xs);
    assert_close("gap_into", &download(&gap), &want, TOL_REDUCTION);
}

#[test]
fn max_pool2d_rejects_bad_windows_and_shapes_naming_the_op() {
    let x = upload(&[1, 2, 7, 5], &[0.0; 70]);
    let err = |p: MaxPool2d| pool::max_pool2d(gpu(), &x, &p).unwrap_err().to_string();

    let e = err(MaxPool2d::square(2, 2, 2));
    assert!(e.contains("max_pool2d") && e.contains("padding"), "{e}");
    let e = err(MaxPool2d::square(0, 1, 0));
    assert!(e.contains("max_pool2d") && e.contains("positive"), "{e}");
    let e = err(MaxPool2d::square(9, 1, 0));
    assert!(
        e.contains("max_pool2d") && e.contains("[1, 2, 7, 5]"),
        "{e}"
    );

    let flat = upload(&[2, 35], &[0.0; 70]);
    let e = pool::max_pool2d(gpu(), &flat, &MaxPool2d::square(2, 2, 0))
        .unwrap_err()
        .to_string();
    assert!(e.contains("max_pool2d") && e.contains("[2, 35]"), "{e}");

    let p = MaxPool2d::square(2, 2, 0);
    let y = Tensor::uninit(gpu(), &[1, 2, 3, 3], DType::F32, "y").unwrap();
    let at = Tensor::uninit(gpu(), &[1, 2, 3, 2], DType::U32, "argmax").unwrap();
    let e = pool::max_pool2d_forward_into(&mut Recorder::new(gpu()), &x, &p, &y, &at)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("max_pool2d") && e.contains("[1, 2, 3, 3]") && e.contains("[1, 2, 3, 2]"),
        "{e}"
    );

    // argmax must be u32, and backward checks dy against the window's output shape.
    let y = Tensor::uninit(gpu(), &[1, 2, 3, 2], DType::F32, "y").unwrap();
    let e = pool::max_pool2d_forward_into(&mut Recorder::new(gpu()), &x, &p, &y, &y)
        .unwrap_err()
        .to_string();
    assert!(e.contains("max_pool2d") && e.contains("u32"), "{e}");
    let dy = upload(&[1, 2, 3, 3], &[0.0; 18]);
    let e = pool::max_pool2d_backward(gpu(), &dy, &at, &p, &[1, 2, 7, 5])
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("max_pool2d_backward")
            && e.contains("[1, 2, 3, 3]")
            && e.contains("[1, 2, 3, 2]"),
        "{e}"
    );
}

#[test]
fn global_avg_pool_rejects_wrong_shapes_naming_both() {
    let x = upload(&[3, 4, 2, 2], &[0.0; 48]);
    let y = Tensor::uninit(gpu(), &[3, 5], DType::F32, "y").unwrap();
    let e = pool::global_avg_pool_forward_into(&mut Recorder::new(gpu()), &x, &y)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("global_avg_pool") && e.contains("[3, 5]") && e.contains("[3, 4]"),
        "{e}"
    );
    let dy = upload(&[4, 3], &[0.0; 12]);
    let e = pool::global_avg_pool_backward(gpu(), &dy, &[3, 4, 2, 2])
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("global_avg_pool_backward") && e.contains("[4, 3]") && e.contains("[3, 4]"),
        "{e}"
    );
}
