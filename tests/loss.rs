//! Softmax cross-entropy (mean, label smoothing) and its top-1 count against float64
//! references.

mod common;

use cenet::kernels::loss;
use cenet::kernels::Recorder;
use cenet::{DType, Tensor};
use common::reference::loss as reference;
use common::*;

/// Shapes [N, K]: a single class, odd and even sizes, many rows per workgroup (K = 3), up to
/// 128 threads per row (K = 1000), more than one workgroup of rows.
const SHAPES: [[usize; 2]; 7] = [
    [1, 1],
    [3, 10],
    [7, 5],
    [64, 10],
    [300, 3],
    [3, 1000],
    [257, 37],
];
const SMOOTHING: [f32; 3] = [0.0, 0.1, 1.0];

struct Case {
    shape: [usize; 2],
    logits: Vec<f64>,
    labels: Vec<u32>,
}

fn case(rng: &mut Rng, shape: [usize; 2], scale: f64) -> Case {
    let [n, k] = shape;
    let logits = through_f32(
        &rng.normal(n * k)
            .iter()
            .map(|v| v * scale)
            .collect::<Vec<_>>(),
    );
    let labels = rng.below(n, k as u32);
    Case {
        shape,
        logits,
        labels,
    }
}

fn labels_tensor(labels: &[u32]) -> Tensor {
    Tensor::from_u32(gpu(), &[labels.len()], labels).unwrap()
}

fn check_forward_and_backward(c: &Case, smoothing: f32, name: &str) {
    let logits = upload(&c.shape, &c.logits);
    let labels = labels_tensor(&c.labels);
    let out = loss::forward(gpu(), &logits, &labels, smoothing).unwrap();
    let eps = smoothing as f64;

    let want = reference::cross_entropy_forward(&c.logits, c.shape, &c.labels, eps);
    assert_close(
        &format!("{name} loss"),
        &download(&out.loss),
        &[want],
        TOL_NORMALIZED,
    );
    let correct = reference::top1_correct(&c.logits, c.shape, &c.labels);
    assert_eq!(download(&out.correct), [correct as f64], "{name}: correct");

    let dlogits = loss::backward(gpu(), &logits, &labels, smoothing).unwrap();
    let want = reference::cross_entropy_backward(&c.logits, c.shape, &c.labels, eps);
    assert_close(
        &format!("{name} gradient"),
        &download(&dlogits),
        &want,
        TOL_NORMALIZED,
    );
}

#[test]
fn cross_entropy_matches_reference_with_and_without_smoothing() {
    let mut rng = Rng::new(30);
    for shape in SHAPES {
        let c = case(&mut rng, shape, 3.0);
        for eps in SMOOTHING {
            check_forward_and_backward(&c, eps, &format!("{shape:?} eps={eps}"));
        }
    }
}

#[test]
fn cross_entropy_is_stable_for_huge_logits() {
    // exp(±300) overflows f32; the max subtraction must keep everything finite.
    let mut rng = Rng::new(31);
    for shape in [[3, 10], [5, 300]] {
        let c = case(&mut rng, shape, 300.0);
        check_forward_and_backward(&c, 0.1, &format!("huge {shape:?}"));
    }
}

#[test]
fn cross_entropy_counts_ties_at_the_first_maximum() {
    // Rows with repeated maxima: the prediction is the first, as argmax in PyTorch.
    let logits = [1.0, 3.0, 3.0, 0.0, 2.0, 2.0, 2.0, 2.0, 5.0, 5.0, -1.0, 5.0];
    let shape = [3, 4];
    for labels in [[1, 0, 0], [2, 1, 3], [1, 3, 0]] {
        let out = loss::forward(
            gpu(),
            &upload(&shape, &logits),
            &labels_tensor(&labels),
            0.0,
        )
        .unwrap();
        let want = reference::top1_correct(&logits, shape, &labels);
        assert_eq!(download(&out.correct), [want as f64], "labels {labels:?}");
    }
}

#[test]
fn cross_entropy_reference_gradient_matches_finite_differences() {
    let mut rng = Rng::new(32);
    for eps in [0.0, 0.1] {
        for shape in [[3, 10], [1, 7]] {
            let c = case(&mut rng, shape, 2.0);
            let analytic = reference::cross_entropy_backward(&c.logits, shape, &c.labels, eps);
            check_gradient(
                &format!("cross_entropy {shape:?} eps={eps}"),
                &c.logits,
                &analytic,
                30,
                |x| reference::cross_entropy_forward(x, shape, &c.labels, eps),
            );
        }
    }
}

#[test]
fn cross_entropy_fused_pass_matches_separate_passes() {
    let mut rng = Rng::new(33);
    let c = case(&mut rng, [7, 5], 2.0);
    let logits = upload(&c.shape, &c.logits);
    let labels = labels_tensor(&c.labels);
    let loss_t = Tensor::uninit(gpu(), &[1], DType::F32, "loss").unwrap();
    let correct = Tensor::uninit(gpu(), &[1], DType::F32, "correct").unwrap();
    let dlogits = Tensor::uninit(gpu(), &c.shape, DType::F32, "dlogits").unwrap();
    let mut rec = Recorder::new(gpu());
    loss::forward_backward_into(&mut rec, &logits, &labels, 0.1, &loss_t, &correct, &dlogits)
        .unwrap();
    rec.submit().unwrap();

    let want = reference::cross_entropy_forward(&c.logits, c.shape, &c.labels, 0.1);
    assert_close("fused loss", &download(&loss_t), &[want], TOL_NORMALIZED);
    let hits = reference::top1_correct(&c.logits, c.shape, &c.labels);
    assert_eq!(download(&correct), [hits as f64]);
    let want = reference::cross_entropy_backward(&c.logits, c.shape, &c.labels, 0.1);
    assert_close("fused gradient", &download(&dlogits), &want, TOL_NORMALIZED);
}

#[test]
fn cross_entropy_rejects_out_of_range_labels_naming_the_op() {
    let logits = upload(&[3, 4], &[0.0; 12]);
    let labels = labels_tensor(&[0, 4, 1]);
    for err in [
        loss::forward(gpu(), &logits, &labels, 0.0).unwrap_err(),
        loss::backward(gpu(), &logits, &labels, 0.0).unwrap_err(),
    ] {
        let e = err.to_string();
        assert!(
            e.contains("cross_entropy") && e.contains("label 4") && e.contains("4 classes"),
            "{e}"
        );
    }
}

#[test]
fn cross_entropy_ignores_out_of_range_labels_on_the_gpu() {
    // The recording forms cannot see labels: a bad row adds nothing and gets no gradient.
    let mut rng = Rng::new(34);
    let c = case(&mut rng, [3, 4], 2.0);
    let labels = [c.labels[0], 7, c.labels[2]];
    let logits = upload(&c.shape, &c.logits);
    let loss_t = Tensor::uninit(gpu(), &[1], DType::F32, "loss").unwrap();
    let correct = Tensor::uninit(gpu(), &[1], DType::F32, "correct").unwrap();
    let dlogits = Tensor::uninit(gpu(), &c.shape, DType::F32, "dlogits").unwrap();
    let mut rec = Recorder::new(gpu());
    loss::forward_backward_into(
        &mut rec,
        &logits,
        &labels_tensor(&labels),
        0.0,
        &loss_t,
        &correct,
        &dlogits,
    )
    .unwrap();
    rec.submit().unwrap();

    let (good_logits, good_labels): (Vec<f64>, Vec<u32>) = (
        [&c.logits[0..4], &c.logits[8..12]].concat(),
        vec![labels[0], labels[2]],
    );
    // Sum over the two good rows, divided by all three.
    let want =
        reference::cross_entropy_forward(&good_logits, [2, 4], &good_labels, 0.0) * 2.0 / 3.0;
    assert_close(
        "loss without the bad row",
        &download(&loss_t),
        &[want],
        TOL_NORMALIZED,
    );
    let hits = reference::top1_correct(&good_logits, [2, 4], &good_labels);
    assert_eq!(download(&correct), [hits as f64]);
    let grad = download(&dlogits);
    assert!(grad[4..8].iter().all(|&g| g == 0.0), "{grad:?}");
    assert!(grad.iter().all(|g| g.is_finite()), "{grad:?}");
}

#[test]
fn cross_entropy_rejects_wrong_shapes_and_types_naming_both() {
    let logits = upload(&[3, 4], &[0.0; 12]);
    let e = loss::forward(gpu(), &logits, &labels_tensor(&[0, 1]), 0.0)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("cross_entropy") && e.contains("[2]") && e.contains("[3]"),
        "{e}"
    );

    let float_labels = upload(&[3], &[0.0; 3]);
    let e = loss::forward(gpu(), &logits, &float_labels, 0.0)
        .unwrap_err()
        .to_string();
    assert!(e.contains("cross_entropy") && e.contains("u32"), "{e}");

    let images = upload(&[3, 4, 1, 1], &[0.0; 12]);
    let e = loss::forward(gpu(), &images, &labels_tensor(&[0, 1, 2]), 0.0)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("cross_entropy") && e.contains("[3, 4, 1, 1]"),
        "{e}"
    );

    let e = loss::forward(gpu(), &logits, &labels_tensor(&[0, 1, 2]), 1.5)
        .unwrap_err()
        .to_string();
    assert!(e.contains("cross_entropy") && e.contains("1.5"), "{e}");

    let dlogits = Tensor::uninit(gpu(), &[4, 3], DType::F32, "dlogits").unwrap();
    let e = loss::backward_into(
        &mut Recorder::new(gpu()),
        &logits,
        &labels_tensor(&[0, 1, 2]),
        0.0,
        &dlogits,
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("cross_entropy") && e.contains("[4, 3]") && e.contains("[3, 4]"),
        "{e}"
    );
}
