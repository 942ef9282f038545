//! SGD steps on the GPU against the float64 reference of `torch.optim.SGD`.

mod common;

use cenet::kernels::sgd::{self, SgdConfig};
use cenet::Tensor;
use common::reference::sgd::{sgd_step, SgdRef};
use common::*;

/// Runs `steps` steps with fresh gradients on both and compares parameter and buffer after
/// each one (the first step initialises the momentum buffer).
fn check_steps(name: &str, config: SgdConfig, shape: &[usize], steps: usize, seed: u64) {
    let mut rng = Rng::new(seed);
    let n: usize = shape.iter().product();
    let reference = SgdRef {
        lr: config.lr as f64,
        momentum: config.momentum as f64,
        weight_decay: config.weight_decay as f64,
        nesterov: config.nesterov,
    };
    let mut w = through_f32(&rng.normal(n));
    let mut buf = None;
    let param = upload(shape, &w);
    // Garbage in the buffer must not matter: the first step overwrites it.
    let momentum_buf = upload(shape, &rng.normal(n));
    for step in 0..steps {
        let g = through_f32(&rng.normal(n));
        sgd::sgd_step(
            gpu(),
            &config,
            step == 0,
            &param,
            &upload(shape, &g),
            Some(&momentum_buf),
        )
        .unwrap();
        sgd_step(&reference, &mut w, &g, &mut buf);
        assert_close(
            &format!("{name}, step {step}: param"),
            &download(&param),
            &w,
            TOL_ELEMENTWISE,
        );
        if let Some(b) = &buf {
            assert_close(
                &format!("{name}, step {step}: momentum buffer"),
                &download(&momentum_buf),
                b,
                TOL_ELEMENTWISE,
            );
        }
    }
}

#[test]
fn sgd_with_momentum_matches_reference_over_four_steps() {
    let config = SgdConfig {
        lr: 0.1,
        momentum: 0.9,
        weight_decay: 0.0,
        nesterov: false,
    };
    check_steps("momentum", config, &[16, 3, 3, 3], 4, 1);
}

#[test]
fn sgd_with_nesterov_momentum_and_weight_decay_matches_reference() {
    let config = SgdConfig {
        lr: 0.05,
        momentum: 0.9,
        weight_decay: 5e-4,
        nesterov: true,
    };
    check_steps("nesterov + wd", config, &[7, 5], 4, 2);
    check_steps("nesterov + wd, large", config, &[70_001], 2, 3);
}

#[test]
fn sgd_with_momentum_and_weight_decay_matches_reference() {
    let config = SgdConfig {
        lr: 0.1,
        momentum: 0.5,
        weight_decay: 1e-2,
        nesterov: false,
    };
    check_steps("momentum + wd", config, &[3], 3, 4);
}

#[test]
fn sgd_without_momentum_needs_no_buffer() {
    let mut rng = Rng::new(5);
    let config = SgdConfig {
        weight_decay: 1e-3,
        ..SgdConfig::new(0.2)
    };
    check_steps("plain + wd", config, &[10, 10], 3, 6);

    let reference = SgdRef {
        lr: 0.2,
        momentum: 0.0,
        weight_decay: 1e-3,
        nesterov: false,
    };
    let mut w = through_f32(&rng.normal(35));
    let g = through_f32(&rng.normal(35));
    let param = upload(&[7, 5], &w);
    sgd::sgd_step(gpu(), &config, true, &param, &upload(&[7, 5], &g), None).unwrap();
    let mut buf = None;
    sgd_step(&reference, &mut w, &g, &mut buf);
    assert!(buf.is_none());
    assert_close("plain, no buffer", &download(&param), &w, TOL_ELEMENTWISE);
}

#[test]
fn sgd_rejects_bad_shapes_and_hyperparameters() {
    let param = Tensor::zeros(gpu(), &[4, 3]).unwrap();
    let grad = Tensor::zeros(gpu(), &[3, 4]).unwrap();
    let err = sgd::sgd_step(gpu(), &SgdConfig::new(0.1), true, &param, &grad, None)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("sgd") && err.contains("[3, 4]") && err.contains("[4, 3]"),
        "{err}"
    );

    let grad = Tensor::zeros(gpu(), &[4, 3]).unwrap();
    let momentum = SgdConfig {
        momentum: 0.9,
        ..SgdConfig::new(0.1)
    };
    let err = sgd::sgd_step(gpu(), &momentum, true, &param, &grad, None)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("sgd") && err.contains("momentum buffer"),
        "{err}"
    );

    let buf = Tensor::zeros(gpu(), &[12]).unwrap();
    let err = sgd::sgd_step(gpu(), &momentum, true, &param, &grad, Some(&buf))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("sgd") && err.contains("[12]") && err.contains("[4, 3]"),
        "{err}"
    );

    let nesterov = SgdConfig {
        nesterov: true,
        ..SgdConfig::new(0.1)
    };
    let err = sgd::sgd_step(gpu(), &nesterov, true, &param, &grad, None)
        .unwrap_err()
        .to_string();
    assert!(err.contains("sgd") && err.contains("Nesterov"), "{err}");

    let err = sgd::sgd_step(gpu(), &SgdConfig::new(-1.0), true, &param, &grad, None)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("sgd") && err.contains("learning rate"),
        "{err}"
    );
}
