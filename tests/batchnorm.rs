//! BatchNorm2d on the GPU against the float64 reference: training and evaluation forward
//! passes, running statistics, backward passes, and a large batch that needs the two-level
//! reduction to be numerically robust.

mod common;

use cenet::kernels::activation::Activation;
use cenet::kernels::batchnorm::{self, BatchNorm2d, BatchNormGrads, Epilogue, SavedStats};
use cenet::kernels::Recorder;
use cenet::{Gpu, Tensor};
use common::reference::batchnorm::{batch_stats, BatchNorm2dRef};
use common::*;

/// Statistics of a channel whose mean is 1000 times its spread: the f32 mean itself is only
/// good to about half an ulp of 1000 (3e-5), an absolute error that reaches the normalised
/// output divided by the spread. Twice that bound, relative to outputs of size ~1.
const TOL_LARGE_OFFSET: f64 = 2.0 * 6.1e-5;

/// Small shapes, odd and even: batch 1 and 3, 7×5 images, 3 and 16 channels, 1×1 maps.
const SHAPES: [[usize; 4]; 5] = [
    [1, 3, 7, 5],
    [3, 3, 7, 5],
    [2, 16, 4, 4],
    [3, 2, 1, 1],
    [4, 5, 2, 3],
];

/// A reference layer with random weight, bias and running statistics.
fn random_layer(rng: &mut Rng, channels: usize) -> BatchNorm2dRef {
    let mut l = BatchNorm2dRef::new(channels);
    l.weight = through_f32(&rng.uniform(channels, 0.5, 2.0));
    l.bias = through_f32(&rng.normal(channels));
    l.running_mean = through_f32(&rng.normal(channels));
    l.running_var = through_f32(&rng.uniform(channels, 0.5, 2.0));
    l
}

/// The same layer on the GPU.
fn upload_layer(l: &BatchNorm2dRef) -> BatchNorm2d {
    upload_layer_to(gpu(), l)
}

fn upload_layer_to(gpu: &Gpu, l: &BatchNorm2dRef) -> BatchNorm2d {
    let c = l.weight.len();
    BatchNorm2d {
        weight: upload_to(gpu, &[c], &l.weight),
        bias: upload_to(gpu, &[c], &l.bias),
        running_mean: upload_to(gpu, &[c], &l.running_mean),
        running_var: upload_to(gpu, &[c], &l.running_var),
        num_batches_tracked: l.num_batches_tracked,
        eps: l.eps as f32,
        momentum: l.momentum as f32,
    }
}

/// Random input with a different mean and spread per channel.
fn random_input(rng: &mut Rng, xs: [usize; 4]) -> Vec<f64> {
    let offsets = rng.uniform(xs[1], -3.0, 3.0);
    let scales = rng.uniform(xs[1], 0.5, 3.0);
    let mut x = rng.normal(xs.iter().product());
    for (i, v) in x.iter_mut().enumerate() {
        let c = (i / (xs[2] * xs[3])) % xs[1];
        *v = offsets[c] + scales[c] * *v;
    }
    through_f32(&x)
}

fn inv_std(var: &[f64], eps: f64) -> Vec<f64> {
    var.iter().map(|v| 1.0 / (v + eps).sqrt()).collect()
}

/// Runs a training forward pass on both and compares everything it produces.
#[track_caller]
fn check_train_step(
    gpu: &Gpu,
    name: &str,
    gpu_layer: &mut BatchNorm2d,
    reference: &mut BatchNorm2dRef,
    x: &[f64],
    xs: [usize; 4],
    tol_y: f64,
) {
    let (y, saved) = batchnorm::forward_train(gpu, gpu_layer, &upload_to(gpu, &xs, x)).unwrap();
    let want = reference.train_step(x, xs);
    assert_close(
        &format!("{name}: y"),
        &download_from(gpu, &y),
        &want.y,
        tol_y,
    );
    assert_close(
        &format!("{name}: saved mean"),
        &download_from(gpu, &saved.mean),
        &want.mean,
        TOL_REDUCTION,
    );
    assert_close(
        &format!("{name}: saved inv_std"),
        &download_from(gpu, &saved.inv_std),
        &inv_std(&want.var, reference.eps),
        TOL_REDUCTION,
    );
    assert_close(
        &format!("{name}: running_mean"),
        &download_from(gpu, &gpu_layer.running_mean),
        &want.running_mean,
        TOL_REDUCTION,
    );
    assert_close(
        &format!("{name}: running_var"),
        &download_from(gpu, &gpu_layer.running_var),
        &want.running_var,
        TOL_REDUCTION,
    );
    assert_eq!(
        gpu_layer.num_batches_tracked, reference.num_batches_tracked,
        "{name}: num_batches_tracked"
    );
}

#[test]
fn batchnorm2d_train_forward_matches_reference_for_odd_and_even_shapes() {
    let mut rng = Rng::new(10);
    for xs in SHAPES {
        let mut reference = random_layer(&mut rng, xs[1]);
        let mut layer = upload_layer(&reference);
        let x = random_input(&mut rng, xs);
        check_train_step(
            gpu(),
            &format!("train {xs:?}"),
            &mut layer,
            &mut reference,
            &x,
            xs,
            TOL_NORMALIZED,
        );
    }
}

#[test]
fn batchnorm2d_running_statistics_follow_three_training_steps_then_drive_eval() {
    let mut rng = Rng::new(11);
    let xs = [3, 4, 5, 3];
    for momentum in [0.1, 0.25] {
        let mut reference = BatchNorm2dRef::new(xs[1]);
        reference.momentum = momentum;
        let mut layer = BatchNorm2d::new(gpu(), xs[1]).unwrap();
        layer.momentum = momentum as f32;
        for step in 1..=3 {
            let x = random_input(&mut rng, xs);
            check_train_step(
                gpu(),
                &format!("momentum {momentum}, step {step}"),
                &mut layer,
                &mut reference,
                &x,
                xs,
                TOL_NORMALIZED,
            );
        }
        assert_eq!(layer.num_batches_tracked, 3);

        let x = random_input(&mut rng, xs);
        let y = batchnorm::forward_eval(gpu(), &layer, &upload(&xs, &x)).unwrap();
        assert_close(
            &format!("momentum {momentum}: eval after training"),
            &download(&y),
            &reference.forward_eval(&x, xs),
            TOL_NORMALIZED,
        );
    }
}

#[test]
fn batchnorm2d_eval_forward_uses_running_statistics() {
    let mut rng = Rng::new(12);
    for xs in SHAPES {
        let mut reference = random_layer(&mut rng, xs[1]);
        reference.eps = 1e-3;
        let layer = upload_layer(&reference);
        let x = random_input(&mut rng, xs);
        let y = batchnorm::forward_eval(gpu(), &layer, &upload(&xs, &x)).unwrap();
        assert_close(
            &format!("eval {xs:?}"),
            &download(&y),
            &reference.forward_eval(&x, xs),
            TOL_NORMALIZED,
        );
        // Evaluation leaves the running statistics alone.
        assert_eq!(download(&layer.running_mean), reference.running_mean);
        assert_eq!(download(&layer.running_var), reference.running_var);
    }
}

#[test]
fn batchnorm2d_statistics_stay_accurate_for_131072_values_with_a_large_mean() {
    // m = N·H·W = 131,072 values per channel, summarised by 32 workgroups each under GPU
    // tuning and 4 under CPU tuning. Channel 0 is 1000 + N(0, 1): a naive f32
    // Σx² − (Σx)²/m loses the variance entirely there.
    let xs = [8, 3, 128, 128];
    let mut rng = Rng::new(13);
    let (offsets, scales) = ([1000.0, -50.0, 0.0], [1.0, 0.5, 3.0]);
    let plane = xs[2] * xs[3];
    let x: Vec<f64> = rng
        .normal(xs.iter().product())
        .into_iter()
        .enumerate()
        .map(|(i, v)| {
            let c = (i / plane) % xs[1];
            offsets[c] + scales[c] * v
        })
        .collect();
    let x = through_f32(&x);
    let initial = random_layer(&mut rng, xs[1]);
    let dy = through_f32(&rng.normal(x.len()));

    for (tuning, gpu) in gpus_of_each_tuning() {
        let name = format!("m = 131072, {tuning:?} tuning");
        let mut reference = initial.clone();
        let mut layer = upload_layer_to(gpu, &reference);
        check_train_step(
            gpu,
            &name,
            &mut layer,
            &mut reference,
            &x,
            xs,
            TOL_LARGE_OFFSET,
        );

        // The gradient sums Σdy and Σdy·x̂ go through the same two-level reduction.
        let (mean, var) = batch_stats(&x, xs);
        let saved = SavedStats {
            mean: upload_to(gpu, &[3], &mean),
            inv_std: upload_to(gpu, &[3], &inv_std(&var, reference.eps)),
        };
        let (xt, dyt) = (upload_to(gpu, &xs, &x), upload_to(gpu, &xs, &dy));
        let grads = batchnorm::backward(gpu, &layer, &xt, &dyt, &saved).unwrap();
        let want = reference.backward(&x, xs, &dy);
        for (what, got, want, tol) in [
            ("dbias", &grads.dbias, &want.dbias, TOL_REDUCTION),
            ("dweight", &grads.dweight, &want.dweight, TOL_LARGE_OFFSET),
            ("dx", &grads.dx, &want.dx, TOL_LARGE_OFFSET),
        ] {
            assert_close(
                &format!("{name}: {what}"),
                &download_from(gpu, got),
                want,
                tol,
            );
        }
    }
}

#[test]
fn batchnorm2d_reference_backward_matches_finite_differences() {
    let mut rng = Rng::new(14);
    let xs = [2, 3, 3, 2];
    let layer = random_layer(&mut rng, xs[1]);
    let x = random_input(&mut rng, xs);
    let dy = rng.normal(x.len());
    let grads = layer.backward(&x, xs, &dy);

    check_gradient("batchnorm2d dx", &x, &grads.dx, 36, |x| {
        dot(&layer.forward_train(x, xs).y, &dy)
    });
    check_gradient(
        "batchnorm2d dweight",
        &layer.weight,
        &grads.dweight,
        3,
        |w| {
            let mut l = layer.clone();
            l.weight = w.to_vec();
            dot(&l.forward_train(&x, xs).y, &dy)
        },
    );
    check_gradient("batchnorm2d dbias", &layer.bias, &grads.dbias, 3, |b| {
        let mut l = layer.clone();
        l.bias = b.to_vec();
        dot(&l.forward_train(&x, xs).y, &dy)
    });
    check_gradient(
        "batchnorm2d eval dx",
        &x,
        &layer.backward_eval(xs, &dy),
        36,
        |x| dot(&layer.forward_eval(x, xs), &dy),
    );
}

#[test]
fn batchnorm2d_train_backward_matches_reference_for_odd_and_even_shapes() {
    let mut rng = Rng::new(15);
    for xs in SHAPES {
        let mut reference = random_layer(&mut rng, xs[1]);
        let mut layer = upload_layer(&reference);
        let x = random_input(&mut rng, xs);
        let dy = through_f32(&rng.normal(x.len()));
        let (xt, dyt) = (upload(&xs, &x), upload(&xs, &dy));

        // Forward and backward recorded together, as one training step submits them.
        let y = cenet::Tensor::zeros(gpu(), &xs).unwrap();
        let saved = SavedStats::new(gpu(), xs[1]).unwrap();
        let grads = BatchNormGrads::new(gpu(), &xs).unwrap();
        let mut rec = Recorder::new(gpu());
        batchnorm::forward_train_into(&mut rec, &mut layer, &xt, &y, &saved).unwrap();
        batchnorm::backward_into(&mut rec, &layer, &xt, &dyt, &saved, &grads).unwrap();
        rec.submit().unwrap();

        let want = reference.backward(&x, xs, &dy);
        reference.train_step(&x, xs);
        assert_close(
            &format!("{xs:?}: y"),
            &download(&y),
            &reference.forward_train(&x, xs).y,
            TOL_NORMALIZED,
        );
        assert_close(
            &format!("{xs:?}: dx"),
            &download(&grads.dx),
            &want.dx,
            TOL_NORMALIZED,
        );
        assert_close(
            &format!("{xs:?}: dweight"),
            &download(&grads.dweight),
            &want.dweight,
            TOL_NORMALIZED,
        );
        assert_close(
            &format!("{xs:?}: dbias"),
            &download(&grads.dbias),
            &want.dbias,
            TOL_REDUCTION,
        );
    }
}

#[test]
fn batchnorm2d_eval_backward_scales_by_running_std() {
    let mut rng = Rng::new(16);
    for xs in [[1, 3, 7, 5], [3, 16, 3, 3]] {
        let reference = random_layer(&mut rng, xs[1]);
        let layer = upload_layer(&reference);
        let dy = through_f32(&rng.normal(xs.iter().product()));
        let dx = batchnorm::backward_eval(gpu(), &layer, &upload(&xs, &dy)).unwrap();
        assert_close(
            &format!("eval backward {xs:?}"),
            &download(&dx),
            &reference.backward_eval(xs, &dy),
            TOL_ELEMENTWISE,
        );
    }
}

#[test]
fn batchnorm2d_training_rejects_one_value_per_channel() {
    let mut layer = BatchNorm2d::new(gpu(), 4).unwrap();
    let x = upload(&[1, 4, 1, 1], &[1.0, 2.0, 3.0, 4.0]);
    let err = batchnorm::forward_train(gpu(), &mut layer, &x)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("batchnorm2d")
            && err.contains("more than 1 value per channel")
            && err.contains("[1, 4, 1, 1]"),
        "{err}"
    );
    assert_eq!(layer.num_batches_tracked, 0);
    // Evaluation is fine with a single value.
    batchnorm::forward_eval(gpu(), &layer, &x).unwrap();
}

#[test]
fn batchnorm2d_rejects_bad_shapes_naming_the_op_and_shapes() {
    let mut layer = BatchNorm2d::new(gpu(), 3).unwrap();
    let x = upload(&[2, 3, 2, 2], &[0.5; 24]);

    let flat = upload(&[2, 3, 4], &[0.5; 24]);
    let err = batchnorm::forward_eval(gpu(), &layer, &flat)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("batchnorm2d") && err.contains("[2, 3, 4]"),
        "{err}"
    );

    let wide = upload(&[2, 4, 2, 2], &[0.5; 32]);
    let err = batchnorm::forward_train(gpu(), &mut layer, &wide)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("batchnorm2d")
            && err.contains("[2, 4, 2, 2]")
            && err.contains("weight")
            && err.contains("[3]"),
        "{err}"
    );

    let saved_running_var = std::mem::replace(&mut layer.running_var, upload(&[5], &[1.0; 5]));
    let err = batchnorm::forward_eval(gpu(), &layer, &x)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("batchnorm2d") && err.contains("running_var") && err.contains("[5]"),
        "{err}"
    );
    layer.running_var = saved_running_var;

    let (_, saved) = batchnorm::forward_train(gpu(), &mut layer, &x).unwrap();
    let dy = upload(&[2, 3, 2, 1], &[0.5; 12]);
    let err = batchnorm::backward(gpu(), &layer, &x, &dy, &saved)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("batchnorm2d") && err.contains("[2, 3, 2, 1]") && err.contains("[2, 3, 2, 2]"),
        "{err}"
    );

    let y = upload(&[2, 3, 2, 1], &[0.5; 12]);
    let mut rec = Recorder::new(gpu());
    let err = batchnorm::forward_eval_into(&mut rec, &layer, &x, &y)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("batchnorm2d") && err.contains("output"),
        "{err}"
    );
}

#[test]
fn batchnorm2d_epilogues_add_a_residual_and_apply_relu_or_relu6_in_the_same_pass() {
    let mut rng = Rng::new(16);
    for xs in SHAPES {
        let n: usize = xs.iter().product();
        let reference = random_layer(&mut rng, xs[1]);
        let x = random_input(&mut rng, xs);
        // Values up to ±8 so that ReLU6 clips at both ends.
        let r = through_f32(&rng.uniform(n, -8.0, 8.0));
        let (xt, rt) = (upload(&xs, &x), upload(&xs, &r));
        let normalised_train = reference.forward_train(&x, xs).y;
        let normalised_eval = reference.forward_eval(&x, xs);
        for act in [None, Some(Activation::Relu), Some(Activation::Relu6)] {
            for residual in [None, Some(&rt)] {
                let finish = |v: f64, i: usize| {
                    let v = v + residual.map_or(0.0, |_| r[i]);
                    match act {
                        None => v,
                        Some(Activation::Relu) => v.max(0.0),
                        Some(Activation::Relu6) => v.clamp(0.0, 6.0),
                    }
                };
                let epilogue = Epilogue {
                    residual,
                    activation: act,
                };
                let name = format!("{xs:?} residual {} {act:?}", residual.is_some());

                for train in [true, false] {
                    let mut layer = upload_layer(&reference);
                    let saved = SavedStats::new(gpu(), xs[1]).unwrap();
                    let y = Tensor::uninit(gpu(), &xs, cenet::DType::F32, "y").unwrap();
                    let mut rec = Recorder::new(gpu());
                    let (normalised, recorded) = if train {
                        let fused = batchnorm::forward_train_fused_into;
                        let recorded = fused(&mut rec, &mut layer, &xt, &y, &saved, epilogue);
                        (&normalised_train, recorded)
                    } else {
                        let fused = batchnorm::forward_eval_fused_into;
                        (&normalised_eval, fused(&mut rec, &layer, &xt, &y, epilogue))
                    };
                    recorded.unwrap();
                    rec.submit().unwrap();
                    let want: Vec<f64> = normalised
                        .iter()
                        .enumerate()
                        .map(|(i, &v)| finish(v, i))
                        .collect();
                    let what = format!("{name} train {train}");
                    assert_close(&what, &download(&y), &want, TOL_NORMALIZED);
                }
            }
        }
    }
    // A residual of another shape is refused, naming both.
    let layer = upload_layer(&random_layer(&mut rng, 3));
    let (x, r) = (
        upload(&[1, 3, 7, 5], &[0.0; 105]),
        upload(&[1, 3, 5, 7], &[0.0; 105]),
    );
    let mut rec = Recorder::new(gpu());
    let epilogue = Epilogue {
        residual: Some(&r),
        activation: None,
    };
    let err = batchnorm::forward_eval_fused_into(&mut rec, &layer, &x, &x.clone(), epilogue)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("residual") && err.contains("[1, 3, 5, 7]"),
        "{err}"
    );
}
