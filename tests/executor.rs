//! The graph executor end to end: a whole ResNet-8 with CE against a float64 reference of
//! the same network, one training step's running statistics, and a short training run.

mod common;

use std::collections::HashMap;

use cenet::graph::exec::{Executor, Mode};
use cenet::kernels::sgd::SgdConfig;
use cenet::nn::resnet::ResNetConfig;
use common::reference::network::{self, Tensors};
use common::*;

/// Gradients of a whole network: many chained reductions in f32.
const TOL_NETWORK: f64 = 1e-3;

fn snapshot(exec: &Executor) -> Tensors {
    exec.param_names()
        .iter()
        .chain(exec.state_names())
        .map(|n| (n.clone(), download(exec.tensor(n).unwrap())))
        .collect()
}

fn random_batch(
    rng: &mut Rng,
    batch: usize,
    channels: usize,
    classes: u32,
) -> (Vec<f64>, Vec<u32>) {
    let images = through_f32(&rng.normal(batch * channels * 32 * 32));
    let labels = rng.below(batch, classes);
    (images, labels)
}

#[test]
fn resnet8_ce_forward_and_every_gradient_match_the_float64_network() {
    check_gradients_against_float64(true);
}

/// Without CE every block ends in a batch norm, a residual sum and a ReLU fused into one
/// pass (see `graph::autodiff::fuse_activations`).
#[test]
fn resnet8_forward_and_every_gradient_match_the_float64_network() {
    check_gradients_against_float64(false);
}

fn check_gradients_against_float64(ce: bool) {
    let config = ResNetConfig::new(8, ce).unwrap();
    let batch = 3;
    let mut exec = Executor::new(gpu(), move |b| config.build(b), 7).unwrap();
    let model = config.build(batch).unwrap();
    let mut rng = Rng::new(11);
    let (images, labels) = random_batch(&mut rng, batch, 3, 10);

    let before = snapshot(&exec);
    let reference = network::run(
        &model.graph,
        model.loss,
        model.logits,
        &before,
        &images,
        &labels,
        true,
    );
    let grads = exec.gradients(&to_f32(&images), &labels).unwrap();

    let mut names: Vec<&String> = grads.keys().collect();
    names.sort();
    for name in names {
        let got: Vec<f64> = grads[name].iter().map(|&g| g as f64).collect();
        assert_close(
            &format!("d loss / d {name}"),
            &got,
            &reference.grads[name],
            TOL_NETWORK,
        );
    }
    // The pass updated the running statistics exactly as one training forward does.
    let after = snapshot(&exec);
    for name in exec.state_names() {
        // Running means of normalised data are zero up to rounding: compare on unit scale.
        let label = format!("{name} after one step");
        assert_close_near_zero(
            &label,
            &after[name],
            &reference.states[name],
            TOL_NORMALIZED,
            1.0,
        );
    }
    // Parameters are untouched by a gradient computation.
    for name in exec.param_names() {
        assert_eq!(after[name], before[name], "{name} changed");
    }
}

#[test]
fn float64_network_gradient_matches_finite_differences() {
    // The reference network's own backward, checked on a few weights of every kind.
    let config = ResNetConfig::new(8, true).unwrap();
    let model = config.build(2).unwrap();
    let exec = Executor::new(gpu(), move |b| config.build(b), 3).unwrap();
    let params = snapshot(&exec);
    let mut rng = Rng::new(5);
    let (images, labels) = random_batch(&mut rng, 2, 3, 10);
    let pass = network::run(
        &model.graph,
        model.loss,
        model.logits,
        &params,
        &images,
        &labels,
        true,
    );
    for name in [
        "conv1.weight",
        "bn1.weight",
        "ce.x_weight",
        "ce.AR.fc.0.weight",
        "layer1.0.ce.AR.fc.3.weight",
        "layer3.0.downsample.0.weight",
        "fc.bias",
    ] {
        let x = &params[name];
        let loss = |v: &[f64]| {
            let mut p = params.clone();
            p.insert(name.to_string(), v.to_vec());
            network::run(
                &model.graph,
                model.loss,
                model.logits,
                &p,
                &images,
                &labels,
                true,
            )
            .loss
        };
        check_gradient(name, x, &pass.grads[name], 4, loss);
    }
}

#[test]
fn training_step_is_one_submission_and_evaluation_uses_running_statistics() {
    let config = ResNetConfig::new(8, true).unwrap();
    let batch = 2;
    let mut exec = Executor::new(gpu(), move |b| config.build(b), 1).unwrap();
    let model = config.build(batch).unwrap();
    let mut rng = Rng::new(2);
    let (images, labels) = random_batch(&mut rng, batch, 3, 10);

    // Evaluating an untrained CE network is refused (running_scale = 0).
    let err = exec
        .eval_batch(&to_f32(&images), &labels)
        .err()
        .expect("refused")
        .to_string();
    assert!(err.contains("running_scale"), "{err}");

    let sgd = SgdConfig {
        lr: 0.1,
        momentum: 0.9,
        weight_decay: 5e-4,
        nesterov: false,
    };
    let before = snapshot(&exec);
    let metrics = exec
        .train_step(&to_f32(&images), &labels, &sgd, true)
        .unwrap()
        .unwrap()
        .wait(gpu())
        .unwrap();
    let reference = network::run(
        &model.graph,
        model.loss,
        model.logits,
        &before,
        &images,
        &labels,
        true,
    );
    assert!(
        (metrics.loss as f64 - reference.loss).abs() <= 1e-4 * reference.loss.abs().max(1.0),
        "{} vs {}",
        metrics.loss,
        reference.loss
    );
    assert_eq!(metrics.correct as usize, reference.correct);
    assert_eq!(exec.counter("bn1"), Some(1));

    // The step applied PyTorch's SGD: first step buf = g + wd·w, w −= lr·buf.
    let after = snapshot(&exec);
    for name in ["conv1.weight", "ce.AR.fc.0.weight", "fc.weight"] {
        let want: Vec<f64> = before[name]
            .iter()
            .zip(&reference.grads[name])
            .map(|(w, g)| w - sgd.lr as f64 * (g + sgd.weight_decay as f64 * w))
            .collect();
        let moved: Vec<f64> = after[name]
            .iter()
            .zip(&before[name])
            .map(|(a, b)| a - b)
            .collect();
        let want_moved: Vec<f64> = want.iter().zip(&before[name]).map(|(a, b)| a - b).collect();
        assert_close(&format!("{name} update"), &moved, &want_moved, TOL_NETWORK);
    }

    // Evaluation now runs with the running statistics and matches the reference's eval mode.
    let logits = exec.logits(&to_f32(&images), &labels).unwrap();
    let eval = network::run(
        &model.graph,
        model.loss,
        model.logits,
        &after,
        &images,
        &labels,
        false,
    );
    let got: Vec<f64> = logits.iter().map(|&v| v as f64).collect();
    assert_close(
        "eval logits",
        &got,
        &eval.values[&model.logits],
        TOL_NETWORK,
    );
    assert!(exec.dispatches_per_step(batch, Mode::Train).unwrap() > 50);
    let (planned, bound) = exec.memory(batch, Mode::Train).unwrap();
    assert!(planned as f64 <= 1.2 * bound as f64);
}

#[test]
fn wrong_batch_data_is_a_clear_error() {
    let config = ResNetConfig::new(8, false).unwrap();
    let mut exec = Executor::new(gpu(), move |b| config.build(b), 1).unwrap();
    let sgd = SgdConfig::new(0.1);
    let err = exec
        .train_step(&[0.0; 100], &[1, 2], &sgd, false)
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("100") && err.contains("[2, 3, 32, 32]"),
        "{err}"
    );
    let images = vec![0.0; 2 * 3 * 32 * 32];
    let err = exec
        .train_step(&images, &[1, 10], &sgd, false)
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("label 10") && err.contains("10 classes"),
        "{err}"
    );
    let _: HashMap<String, Vec<f32>> = HashMap::new();
}

#[test]
fn state_dict_round_trip_is_exact_and_strict() {
    use cenet::checkpoint::StateDict;
    let config = ResNetConfig::new(8, true).unwrap();
    let mut a = Executor::new(gpu(), move |b| config.build(b), 4).unwrap();
    let mut rng = Rng::new(9);
    let (images, labels) = random_batch(&mut rng, 2, 3, 10);
    let sgd = SgdConfig {
        lr: 0.05,
        momentum: 0.9,
        weight_decay: 5e-4,
        nesterov: false,
    };
    a.train_step(&to_f32(&images), &labels, &sgd, false)
        .unwrap();
    let saved = a.state_dict().unwrap();
    assert_eq!(
        saved
            .get_i64_scalar("layer1.0.bn2.num_batches_tracked")
            .unwrap(),
        1
    );
    let bytes = saved.to_bytes().unwrap();

    // A fresh executor with another seed, loaded from the bytes, computes the same logits.
    let mut b = Executor::new(gpu(), move |n| config.build(n), 99).unwrap();
    b.load_state_dict(&StateDict::from_bytes(&bytes, "memory").unwrap())
        .unwrap();
    assert_eq!(b.state_dict().unwrap(), saved);
    let la = a.logits(&to_f32(&images), &labels).unwrap();
    let lb = b.logits(&to_f32(&images), &labels).unwrap();
    assert_eq!(la, lb);

    // A state dict of another model is refused, listing what is wrong, and loads nothing.
    let plain = ResNetConfig::new(8, false).unwrap();
    let mut c = Executor::new(gpu(), move |n| plain.build(n), 1).unwrap();
    let before = c.state_dict().unwrap();
    let err = c.load_state_dict(&saved).unwrap_err().to_string();
    assert!(
        err.contains("unexpected") && err.contains("ce.x_weight"),
        "{err}"
    );
    assert_eq!(c.state_dict().unwrap(), before);
}

#[test]
fn steady_state_steps_allocate_nothing_and_compile_nothing() {
    // A device of its own, so other tests' work does not count.
    let gpu = cenet::Gpu::new().unwrap();
    let config = ResNetConfig::new(8, true).unwrap();
    let mut exec = Executor::new(&gpu, move |b| config.build(b), 1).unwrap();
    let mut rng = Rng::new(3);
    let (images, labels) = random_batch(&mut rng, 2, 3, 10);
    let images = to_f32(&images);
    let mut sgd = SgdConfig {
        lr: 0.1,
        momentum: 0.9,
        weight_decay: 5e-4,
        nesterov: false,
    };
    exec.train_step(&images, &labels, &sgd, true)
        .unwrap()
        .unwrap()
        .wait(&gpu)
        .unwrap();
    let (buffers, pipelines) = (gpu.buffers_created(), gpu.pipelines_compiled());
    for step in 0..3 {
        // A schedule changing the learning rate does not re-record the step.
        sgd.lr *= 0.5;
        let pending = exec
            .train_step(&images, &labels, &sgd, step % 2 == 0)
            .unwrap();
        if let Some(p) = pending {
            p.wait(&gpu).unwrap();
        }
    }
    gpu.wait_idle().unwrap();
    assert_eq!(
        gpu.buffers_created(),
        buffers,
        "buffers created after the first step"
    );
    assert_eq!(
        gpu.pipelines_compiled(),
        pipelines,
        "pipelines compiled after the first step"
    );
}
