//! The Channel Equilibrium block against its float64 reference: forward in training and
//! evaluation mode, the running statistics, every gradient, a large batch, degenerate
//! inputs and bad input.

mod common;

use cenet::gpu::{Gpu, Tuning};
use cenet::kernels::ce::{
    ce_backward, ce_forward_eval, ce_forward_train, CeOptions, CeSaved, CeState,
};
use cenet::{Error, Tensor};
use common::reference::ce::{
    ce_backward as ref_backward, ce_forward_eval as ref_eval, ce_forward_train as ref_train,
    CeCache, CeConfig, CeParams, CeRunning,
};
use common::*;

/// Forward outputs and running statistics: a chain of f32 reductions (covariance, trace,
/// three Newton–Schulz steps of cubic matrix products, variance, layer norm), so the
/// normalised tolerance.
const TOL_CE_FORWARD: f64 = TOL_NORMALIZED;
/// Gradients: backward through T = 3 Newton–Schulz steps multiplies the f32 rounding of
/// the forward statistics and of G·xᵀ by matrix polynomials of degree up to 9, and dθ is a
/// difference of two dot products over the whole tensor.
const TOL_CE_GRADIENT: f64 = 1e-3;

/// One test configuration.
#[derive(Clone, Copy, Debug)]
struct Case {
    n: usize,
    c: usize,
    h: usize,
    w: usize,
    centred: bool,
    group_size: usize,
    iterations: usize,
    eps: f32,
    momentum: f32,
    reduction: usize,
}

impl Case {
    fn new(n: usize, c: usize, h: usize, w: usize) -> Self {
        Case {
            n,
            c,
            h,
            w,
            centred: false,
            group_size: 16,
            iterations: 3,
            eps: 1e-5,
            momentum: 0.1,
            reduction: 4,
        }
    }

    fn shape(&self) -> [usize; 4] {
        [self.n, self.c, self.h, self.w]
    }

    fn len(&self) -> usize {
        self.n * self.c * self.h * self.w
    }

    fn options(&self) -> CeOptions {
        CeOptions {
            centred: self.centred,
            group_size: self.group_size,
            iterations: self.iterations,
            eps: self.eps,
            momentum: self.momentum,
            reduction: self.reduction,
        }
    }
}

/// Like a BatchNorm output with affine: per-channel scale and shift, then mixed across
/// channels so the decorrelation has correlations to remove.
fn bn_like_input(rng: &mut Rng, [n, c, h, w]: [usize; 4], shift: f64) -> Vec<f64> {
    let hw = h * w;
    let scale = rng.uniform(c, 0.3, 2.0);
    let offset = rng.uniform(c, -shift, shift);
    let z = rng.normal(n * c * hw);
    let mix: Vec<f64> = rng
        .normal(c * c)
        .iter()
        .enumerate()
        .map(|(e, v)| 0.3 * v + if e / c == e % c { 1.0 } else { 0.0 })
        .collect();
    let mut x = vec![0.0; n * c * hw];
    for b in 0..n {
        for o in 0..c {
            for i in 0..c {
                let m = mix[o * c + i];
                for p in 0..hw {
                    let src = (b * c + i) * hw + p;
                    x[(b * c + o) * hw + p] += m * (z[src] * scale[i] + offset[i]);
                }
            }
        }
    }
    through_f32(&x)
}

fn random_params(rng: &mut Rng, c: usize, hidden: usize) -> CeParams {
    let scaled = |rng: &mut Rng, len: usize, s: f64, base: f64| -> Vec<f64> {
        through_f32(
            &rng.normal(len)
                .into_iter()
                .map(|v| base + s * v)
                .collect::<Vec<_>>(),
        )
    };
    CeParams {
        theta: 0.3,
        w1: scaled(rng, hidden * c, 0.3, 0.0),
        gamma: scaled(rng, hidden, 0.1, 1.0),
        beta: scaled(rng, hidden, 0.1, 0.0),
        w2: scaled(rng, c * hidden, 0.3, 0.0),
    }
}

fn write(gpu: &Gpu, t: &Tensor, v: &[f64]) {
    t.write(gpu, &to_f32(v)).expect("write parameters");
}

/// A block on the GPU holding `params`.
fn gpu_block(gpu: &Gpu, case: &Case, params: &CeParams) -> CeState {
    let mut state = CeState::new(gpu, case.c, case.options(), 7).expect("CE block");
    write(gpu, &state.theta, &[params.theta]);
    write(gpu, &state.w1, &params.w1);
    write(gpu, &state.gamma_ln, &params.gamma);
    write(gpu, &state.beta_ln, &params.beta);
    write(gpu, &state.w2, &params.w2);
    state.trained_steps = 0;
    state
}

fn config(case: &Case, state: &CeState) -> CeConfig {
    CeConfig {
        centred: case.centred,
        iterations: case.iterations,
        eps: f64::from(case.eps),
        reduction: case.reduction,
        ..CeConfig::with_group(state.group_size)
    }
}

/// Runs training forward twice (two batches, to exercise the momentum), evaluation, and
/// backward of the second training pass, comparing everything with the reference, on a
/// device of each kernel tuning.
fn check_case(case: Case, seed: u64) {
    for (tuning, gpu) in gpus_of_each_tuning() {
        check_case_on(gpu, tuning, case, seed);
    }
}

fn check_case_on(gpu: &Gpu, tuning: Tuning, case: Case, seed: u64) {
    let name = format!("{case:?} {tuning:?}");
    let mut rng = Rng::new(seed);
    let hidden = case.c / case.reduction;
    let params = random_params(&mut rng, case.c, hidden);
    let mut state = gpu_block(gpu, &case, &params);
    let cfg = config(&case, &state);
    let mut running = CeRunning::new(case.c / cfg.d, cfg.d);

    let mut last: Option<(Vec<f64>, Tensor, CeSaved, CeCache)> = None;
    for step in 0..2 {
        let x = bn_like_input(&mut rng, case.shape(), 0.5);
        let xt = upload_to(gpu, &case.shape(), &x);
        let (y, saved) = ce_forward_train(gpu, &mut state, &xt).expect("training forward");
        let (want, cache) = ref_train(&x, case.shape(), &params, &cfg);
        running.update(&cache, f64::from(case.momentum));
        let as_f64 = |v: Vec<f32>| v.into_iter().map(f64::from).collect::<Vec<_>>();
        let v = as_f64(saved.read_variance(gpu).unwrap());
        assert_close(
            &format!("{name} v, step {step}"),
            &v,
            &cache.v,
            TOL_CE_FORWARD,
        );
        let s = as_f64(saved.read_reweight(gpu).unwrap());
        assert_close(
            &format!("{name} s, step {step}"),
            &s,
            &cache.s,
            TOL_CE_FORWARD,
        );
        assert_close(
            &format!("{name} training forward, step {step}"),
            &download_from(gpu, &y),
            &want,
            TOL_CE_FORWARD,
        );
        last = Some((x, xt, saved, cache));
    }
    assert_eq!(state.trained_steps, 2);
    assert_close(
        &format!("{name} running_wm"),
        &download_from(gpu, &state.running_wm),
        &running.wm,
        TOL_CE_FORWARD,
    );
    assert_close(
        &format!("{name} running_mean"),
        &download_from(gpu, &state.running_mean),
        &running.mean,
        TOL_CE_FORWARD,
    );
    assert_close(
        &format!("{name} running_scale"),
        &download_from(gpu, &state.running_scale),
        &[running.scale],
        TOL_CE_FORWARD,
    );

    let (x, xt, saved, cache) = last.expect("two steps ran");
    let dy = through_f32(&rng.normal(case.len()));
    let grads = ce_backward(
        gpu,
        &state,
        &xt,
        &upload_to(gpu, &case.shape(), &dy),
        &saved,
    )
    .expect("backward");
    let want = ref_backward(&dy, &cache, &params);
    let tol = TOL_CE_GRADIENT;
    assert_close(
        &format!("{name} dX"),
        &download_from(gpu, &grads.x),
        &want.x,
        tol,
    );
    assert_close(
        &format!("{name} dθ"),
        &download_from(gpu, &grads.theta),
        &[want.theta],
        tol,
    );
    assert_close(
        &format!("{name} dW1"),
        &download_from(gpu, &grads.w1),
        &want.w1,
        tol,
    );
    assert_close(
        &format!("{name} dγ_ln"),
        &download_from(gpu, &grads.gamma_ln),
        &want.gamma,
        tol,
    );
    assert_close(
        &format!("{name} dβ_ln"),
        &download_from(gpu, &grads.beta_ln),
        &want.beta,
        tol,
    );
    assert_close(
        &format!("{name} dW2"),
        &download_from(gpu, &grads.w2),
        &want.w2,
        tol,
    );

    let y = ce_forward_eval(gpu, &state, &xt).expect("evaluation forward");
    let want = ref_eval(&x, case.shape(), &params, &cfg, &running);
    assert_close(
        &format!("{name} evaluation forward"),
        &download_from(gpu, &y),
        &want,
        TOL_CE_FORWARD,
    );
}

#[test]
fn ce_matches_reference_for_16_channels_batch_2_at_7x5() {
    check_case(Case::new(2, 16, 7, 5), 11);
}

#[test]
fn ce_matches_reference_for_24_channels_in_groups_of_8_batch_8_at_8x8() {
    check_case(Case::new(8, 24, 8, 8), 12);
}

#[test]
fn ce_matches_reference_for_32_channels_batch_8_at_2x2() {
    check_case(Case::new(8, 32, 2, 2), 13);
}

#[test]
fn ce_matches_reference_for_64_channels_batch_1_at_32x32() {
    check_case(Case::new(1, 64, 32, 32), 14);
}

#[test]
fn ce_matches_reference_with_uneven_slices_and_a_partial_block_batch_7_at_31x29() {
    // 899 positions split into slices of 300, 300, 299; blocks of 5 samples, then 2.
    let state = CeState::new(gpu(), 16, CeOptions::default(), 0).unwrap();
    let geo = state.geometry(&[7, 16, 31, 29]).unwrap();
    assert_eq!(
        (geo.slices, geo.slice_len, geo.block_samples, geo.blocks),
        (3, 300, 5, 2)
    );
    check_case(Case::new(7, 16, 31, 29), 16);
}

#[test]
fn ce_matches_reference_for_20_channels_in_groups_of_4_batch_3_at_7x5() {
    check_case(Case::new(3, 20, 7, 5), 17);
}

#[test]
fn ce_matches_reference_for_24_channels_in_groups_of_12_batch_3_at_5x7() {
    check_case(
        Case {
            group_size: 12,
            ..Case::new(3, 24, 5, 7)
        },
        18,
    );
}

#[test]
fn ce_matches_reference_for_groups_of_12_and_2_on_rows_of_whole_vec4s() {
    // H·W a multiple of 4, so that under CPU tuning a thread sums each statistics unit:
    // quads of channels past the group's end (12 = 3 quads, 2 = half of one) read as zero.
    check_case(
        Case {
            group_size: 12,
            ..Case::new(3, 24, 4, 6)
        },
        25,
    );
    check_case(
        Case {
            group_size: 2,
            ..Case::new(3, 16, 4, 4)
        },
        26,
    );
}

#[test]
fn ce_matches_reference_for_16_channels_batch_8_at_32x32() {
    check_case(Case::new(8, 16, 32, 32), 21);
}

#[test]
fn ce_matches_reference_for_64_channels_batch_2_at_8x8() {
    check_case(Case::new(2, 64, 8, 8), 22);
}

#[test]
fn ce_matches_reference_with_5_iterations_eps_1e_3_momentum_0_3_and_reduction_8() {
    check_case(
        Case {
            iterations: 5,
            eps: 1e-3,
            momentum: 0.3,
            reduction: 8,
            ..Case::new(3, 32, 7, 5)
        },
        23,
    );
}

#[test]
fn ce_matches_reference_with_one_iteration_and_reduction_2() {
    check_case(
        Case {
            iterations: 1,
            reduction: 2,
            ..Case::new(1, 24, 2, 2)
        },
        24,
    );
}

#[test]
fn ce_centred_variant_matches_reference_for_32_channels_batch_2_at_7x5() {
    check_case(
        Case {
            centred: true,
            ..Case::new(2, 32, 7, 5)
        },
        15,
    );
}

#[test]
fn ce_covariance_and_output_keep_their_accuracy_over_131072_positions() {
    // Batch 128 at 32×32 (ResNet-20's first stage), channel means far from zero.
    let case = Case::new(128, 16, 32, 32);
    let mut rng = Rng::new(21);
    let params = random_params(&mut rng, case.c, case.c / 4);
    let mut state = gpu_block(gpu(), &case, &params);
    // On this device's tuning: with a thread per statistics unit (CPU), 4 slices of 256
    // positions per sample, combined 4 samples a block; otherwise 2 slices a sample.
    let geo = state.geometry_for(&case.shape(), gpu().tuning()).unwrap();
    let layout = (geo.unit_threads, geo.slices, geo.slice_len, geo.blocks);
    let want_layout = match gpu().tuning() {
        Tuning::Cpu => (true, 4, 256, 32),
        Tuning::Gpu => (false, 2, 512, 16),
    };
    assert_eq!(layout, want_layout, "two levels of partials are combined");
    let cfg = config(&case, &state);
    let x = bn_like_input(&mut rng, case.shape(), 4.0);
    let xt = upload(&case.shape(), &x);
    let (y, saved) = ce_forward_train(gpu(), &mut state, &xt).expect("training forward");
    let (want, cache) = ref_train(&x, case.shape(), &params, &cfg);
    let sigma: Vec<f64> = saved
        .read_sigma(gpu())
        .unwrap()
        .into_iter()
        .map(f64::from)
        .collect();
    assert_close("Σ at m = 131072", &sigma, &cache.sigma, TOL_REDUCTION);
    let mean: Vec<f64> = saved
        .read_mean(gpu())
        .unwrap()
        .into_iter()
        .map(f64::from)
        .collect();
    assert_close("μ at m = 131072", &mean, &cache.mu, TOL_REDUCTION);
    let kappa = saved.read_kappa(gpu()).unwrap() as f64;
    assert_close("κ at m = 131072", &[kappa], &[cache.kappa], TOL_REDUCTION);
    assert_close("output at m = 131072", &download(&y), &want, TOL_CE_FORWARD);

    let dy = through_f32(&rng.normal(case.len()));
    let grads =
        ce_backward(gpu(), &state, &xt, &upload(&case.shape(), &dy), &saved).expect("backward");
    let want = ref_backward(&dy, &cache, &params);
    let tol = TOL_CE_GRADIENT;
    assert_close("dX at m = 131072", &download(&grads.x), &want.x, tol);
    assert_close(
        "dθ at m = 131072",
        &download(&grads.theta),
        &[want.theta],
        tol,
    );
    assert_close("dW1 at m = 131072", &download(&grads.w1), &want.w1, tol);
    let (gamma_ln, beta_ln) = (download(&grads.gamma_ln), download(&grads.beta_ln));
    assert_close("dγ_ln at m = 131072", &gamma_ln, &want.gamma, tol);
    assert_close("dβ_ln at m = 131072", &beta_ln, &want.beta, tol);
    assert_close("dW2 at m = 131072", &download(&grads.w2), &want.w2, tol);
}

/// Runs a training forward and backward on `x` and checks every output is finite and
/// matches the reference within `tol` (forward) and `10·tol` (gradients).
fn check_degenerate(name: &str, case: Case, x: Vec<f64>, seed: u64, tol: f64) {
    let mut rng = Rng::new(seed);
    let params = random_params(&mut rng, case.c, case.c / 4);
    let mut state = gpu_block(gpu(), &case, &params);
    let cfg = config(&case, &state);
    let xt = upload(&case.shape(), &x);
    let (y, saved) = ce_forward_train(gpu(), &mut state, &xt).expect("training forward");
    let dy = through_f32(&rng.normal(case.len()));
    let grads =
        ce_backward(gpu(), &state, &xt, &upload(&case.shape(), &dy), &saved).expect("backward");
    let outputs = [
        ("output", download(&y)),
        ("dX", download(&grads.x)),
        ("dθ", download(&grads.theta)),
        ("dW1", download(&grads.w1)),
        ("dγ_ln", download(&grads.gamma_ln)),
        ("dβ_ln", download(&grads.beta_ln)),
        ("dW2", download(&grads.w2)),
        ("running_wm", download(&state.running_wm)),
        ("running_scale", download(&state.running_scale)),
    ];
    for (what, v) in &outputs {
        assert!(
            v.iter().all(|q| q.is_finite()),
            "{name}: {what} is not finite"
        );
    }
    let (want, cache) = ref_train(&x, case.shape(), &params, &cfg);
    assert_close(&format!("{name} output"), &outputs[0].1, &want, tol);
    let want = ref_backward(&dy, &cache, &params);
    assert_close(&format!("{name} dX"), &outputs[1].1, &want.x, 10.0 * tol);
    assert_close(&format!("{name} dW1"), &outputs[3].1, &want.w1, 10.0 * tol);
}

#[test]
fn ce_is_finite_and_matches_reference_with_a_constant_channel() {
    let case = Case::new(2, 16, 7, 5);
    let mut x = bn_like_input(&mut Rng::new(31), case.shape(), 0.5);
    let hw = case.h * case.w;
    for n in 0..case.n {
        x[(n * case.c + 5) * hw..(n * case.c + 6) * hw].fill(2.5);
    }
    check_degenerate("constant channel", case, x, 32, TOL_CE_FORWARD);
}

#[test]
fn ce_is_finite_and_matches_reference_with_fewer_positions_than_group_channels() {
    // m = 1·2·2 = 4 < d = 16: Σ has rank 3 before εI.
    let case = Case::new(1, 16, 2, 2);
    let x = bn_like_input(&mut Rng::new(33), case.shape(), 0.5);
    check_degenerate("m < d", case, x, 34, TOL_CE_FORWARD);
}

#[test]
fn ce_is_finite_and_matches_reference_with_strongly_correlated_channels() {
    // Every channel is one signal plus 1e-3 noise: Σ is nearly rank one.
    let case = Case::new(2, 16, 8, 8);
    let mut rng = Rng::new(35);
    let hw = case.h * case.w;
    let z = rng.normal(case.n * hw);
    let noise = rng.normal(case.len());
    let x: Vec<f64> = (0..case.len())
        .map(|e| {
            let n = e / (case.c * hw);
            1.0 + z[n * hw + e % hw] + 1e-3 * noise[e]
        })
        .collect();
    check_degenerate(
        "correlated channels",
        case,
        through_f32(&x),
        36,
        TOL_CE_FORWARD,
    );
}

/// A small case the finite differences can afford: N=2, C=12 in groups of 4, 3×2 images.
/// (The MLP gets 3 hidden features: a layer norm over 2 has an almost flat output.)
fn reference_gradient_check(centred: bool) {
    let shape = [2, 12, 3, 2];
    let mut rng = Rng::new(41 + centred as u64);
    let x = bn_like_input(&mut rng, shape, 0.5);
    let params = random_params(&mut rng, 12, 3);
    let cfg = CeConfig {
        centred,
        ..CeConfig::with_group(4)
    };
    let dy = rng.normal(x.len());
    let (_, cache) = ref_train(&x, shape, &params, &cfg);
    let g = ref_backward(&dy, &cache, &params);
    let loss = |x: &[f64], p: &CeParams| dot(&ref_train(x, shape, p, &cfg).0, &dy);
    let tag = if centred { "centred" } else { "released" };

    check_gradient(&format!("{tag} dX"), &x, &g.x, x.len(), |v| {
        loss(v, &params)
    });
    check_gradient(&format!("{tag} dθ"), &[params.theta], &[g.theta], 1, |v| {
        loss(
            &x,
            &CeParams {
                theta: v[0],
                ..params.clone()
            },
        )
    });
    check_gradient(&format!("{tag} dW1"), &params.w1, &g.w1, 64, |v| {
        loss(
            &x,
            &CeParams {
                w1: v.to_vec(),
                ..params.clone()
            },
        )
    });
    check_gradient(&format!("{tag} dγ_ln"), &params.gamma, &g.gamma, 8, |v| {
        loss(
            &x,
            &CeParams {
                gamma: v.to_vec(),
                ..params.clone()
            },
        )
    });
    check_gradient(&format!("{tag} dβ_ln"), &params.beta, &g.beta, 8, |v| {
        loss(
            &x,
            &CeParams {
                beta: v.to_vec(),
                ..params.clone()
            },
        )
    });
    check_gradient(&format!("{tag} dW2"), &params.w2, &g.w2, 64, |v| {
        loss(
            &x,
            &CeParams {
                w2: v.to_vec(),
                ..params.clone()
            },
        )
    });
}

#[test]
fn ce_reference_backward_matches_finite_differences() {
    reference_gradient_check(false);
}

#[test]
fn ce_centred_reference_backward_matches_finite_differences() {
    reference_gradient_check(true);
}

#[test]
fn ce_block_initialises_like_pytorch_and_names_its_state_like_the_released_module() {
    let state = CeState::new(gpu(), 24, CeOptions::default(), 5).unwrap();
    assert_eq!(state.group_size, 8, "16 halves to 8 to divide 24 channels");
    let names: Vec<(&str, Vec<usize>)> = state
        .state_dict()
        .into_iter()
        .map(|(k, t)| (k, t.shape().to_vec()))
        .collect();
    assert_eq!(
        names,
        vec![
            ("x_weight", vec![1]),
            ("running_mean", vec![3, 8, 1]),
            ("running_wm", vec![3, 8, 8]),
            ("AR.running_scale", vec![1]),
            ("AR.fc.0.weight", vec![6, 24]),
            ("AR.fc.1.weight", vec![6]),
            ("AR.fc.1.bias", vec![6]),
            ("AR.fc.3.weight", vec![24, 6]),
        ]
    );
    let w1 = download(&state.w1);
    let w2 = download(&state.w2);
    let (b1, b2) = (1.0 / 24f64.sqrt(), 1.0 / 6f64.sqrt());
    assert!(w1.iter().all(|v| v.abs() <= b1) && w2.iter().all(|v| v.abs() <= b2));
    assert!(w1.iter().any(|v| v.abs() > 0.8 * b1), "W1 spans its range");
    let mean = w1.iter().sum::<f64>() / w1.len() as f64;
    assert!(mean.abs() < 0.2 * b1, "W1 is centred, mean {mean}");
    assert_eq!(download(&state.gamma_ln), vec![1.0; 6]);
    assert_eq!(download(&state.beta_ln), vec![0.0; 6]);
    assert_eq!(download(&state.theta), vec![0.0]);
    assert_eq!(download(&state.running_scale), vec![0.0]);
    let wm = download(&state.running_wm);
    assert!(wm
        .iter()
        .enumerate()
        .all(|(e, &v)| v == if (e / 8) % 8 == e % 8 { 1.0 } else { 0.0 }));

    let again = CeState::new(gpu(), 24, CeOptions::default(), 5).unwrap();
    assert_eq!(download(&again.w1), w1, "same seed, same weights");
    let other = CeState::new(gpu(), 24, CeOptions::default(), 6).unwrap();
    assert_ne!(download(&other.w1), w1, "another seed, other weights");
}

fn expect_invalid(result: Result<impl Sized, Error>, needles: &[&str]) {
    match result {
        Ok(_) => panic!("expected an error mentioning {needles:?}"),
        Err(e) => {
            let text = e.to_string();
            assert!(text.starts_with("ce:"), "error names the op: {text}");
            for needle in needles {
                assert!(text.contains(needle), "{text:?} lacks {needle:?}");
            }
        }
    }
}

#[test]
fn ce_rejects_channel_counts_the_reweighting_mlp_cannot_use() {
    let options = CeOptions::default();
    expect_invalid(CeState::new(gpu(), 3, options, 0), &["3 channels", "4"]);
    expect_invalid(
        CeState::new(gpu(), 6, options, 0),
        &["6 channels", "divisible", "4"],
    );
    let bad_group = CeOptions {
        group_size: 32,
        ..options
    };
    expect_invalid(CeState::new(gpu(), 64, bad_group, 0), &["group size 32"]);
}

#[test]
fn ce_rejects_single_position_planes_bad_shapes_and_untrained_evaluation() {
    let mut state = CeState::new(gpu(), 16, CeOptions::default(), 0).unwrap();
    let x = Tensor::zeros(gpu(), &[2, 16, 3, 3]).unwrap();
    expect_invalid(
        ce_forward_eval(gpu(), &state, &x),
        &["never run a training"],
    );

    let one = Tensor::zeros(gpu(), &[4, 16, 1, 1]).unwrap();
    expect_invalid(
        ce_forward_train(gpu(), &mut state, &one),
        &["1×1", "H·W ≥ 2"],
    );
    let wrong_c = Tensor::zeros(gpu(), &[2, 8, 3, 3]).unwrap();
    expect_invalid(
        ce_forward_train(gpu(), &mut state, &wrong_c),
        &["8 channels", "16"],
    );
    let flat = Tensor::zeros(gpu(), &[2, 16]).unwrap();
    expect_invalid(
        ce_forward_train(gpu(), &mut state, &flat),
        &["4-D", "[2, 16]"],
    );
    assert_eq!(state.trained_steps, 0, "failed passes do not count");

    let xr = upload(&[2, 16, 3, 3], &Rng::new(3).normal(288));
    let (_, saved) = ce_forward_train(gpu(), &mut state, &xr).unwrap();
    let dy = Tensor::zeros(gpu(), &[2, 16, 3, 4]).unwrap();
    expect_invalid(
        ce_backward(gpu(), &state, &xr, &dy, &saved),
        &["[2, 16, 3, 4]", "[2, 16, 3, 3]"],
    );
    let other = Tensor::zeros(gpu(), &[2, 16, 4, 4]).unwrap();
    expect_invalid(
        ce_backward(gpu(), &state, &other, &other, &saved),
        &["saved"],
    );

    let mut eval_saved = CeSaved::new(gpu(), &state, &[2, 16, 3, 3]).unwrap();
    let y = Tensor::zeros(gpu(), &[2, 16, 3, 3]).unwrap();
    let mut rec = cenet::kernels::Recorder::new(gpu());
    cenet::kernels::ce::ce_forward_eval_into(&mut rec, &state, &xr, &y, &mut eval_saved).unwrap();
    rec.submit().unwrap();
    let dy = Tensor::zeros(gpu(), &[2, 16, 3, 3]).unwrap();
    expect_invalid(
        ce_backward(gpu(), &state, &xr, &dy, &eval_saved),
        &["training forward"],
    );
}

#[test]
fn ce_shaders_validate_and_translate_for_every_backend_and_group_size() {
    // The per-element kernels are specialised on the group size d (their `D` override):
    // each must validate and translate for every d a block can have, as wgpu resolves it
    // at pipeline creation.
    for (name, source) in cenet::shaders::SOURCES
        .iter()
        .filter(|(n, _)| n.starts_with("ce_"))
    {
        let module = naga::front::wgsl::parse_str(source)
            .unwrap_or_else(|e| panic!("{name}: {}", e.emit_to_string(source)));
        let info = naga::valid::Validator::new(
            naga::valid::ValidationFlags::all(),
            naga::valid::Capabilities::empty(),
        )
        .validate(&module)
        .unwrap_or_else(|e| panic!("{name}: {e:?}"));
        let specialised = module
            .overrides
            .iter()
            .any(|(_, o)| o.name.as_deref() == Some("D"));
        let sizes: Vec<usize> = if specialised {
            (1..=16).collect()
        } else {
            vec![0]
        };
        for d in sizes {
            let mut constants = naga::back::PipelineConstants::default();
            if specialised {
                constants.insert("D".to_string(), d as f64);
            }
            let (module, info) =
                naga::back::pipeline_constants::process_overrides(&module, &info, None, &constants)
                    .unwrap_or_else(|e| panic!("{name} with D = {d}: {e:?}"));
            naga::back::spv::write_vec(&module, &info, &Default::default(), None)
                .unwrap_or_else(|e| panic!("{name} (D = {d}) to SPIR-V: {e:?}"));
            naga::back::msl::write_string(&module, &info, &Default::default(), &Default::default())
                .unwrap_or_else(|e| panic!("{name} (D = {d}) to MSL: {e:?}"));
            let mut hlsl = String::new();
            naga::back::hlsl::Writer::new(&mut hlsl, &Default::default(), &Default::default())
                .write(&module, &info, None)
                .unwrap_or_else(|e| panic!("{name} (D = {d}) to HLSL: {e:?}"));
        }
    }
}
