//! ReLU, ReLU6 and add against float64 references.

mod common;

use cenet::kernels::activation::{self, Activation};
use common::*;

fn relu_ref(x: f64, act: Activation) -> f64 {
    match act {
        Activation::Relu => x.max(0.0),
        Activation::Relu6 => x.clamp(0.0, 6.0),
    }
}

fn relu_grad_ref(x: f64, act: Activation) -> f64 {
    match act {
        Activation::Relu => (x > 0.0) as u8 as f64,
        Activation::Relu6 => (x > 0.0 && x < 6.0) as u8 as f64,
    }
}

#[test]
fn activations_match_reference_forward_and_backward() {
    let mut rng = Rng::new(1);
    for act in [Activation::Relu, Activation::Relu6] {
        for shape in [vec![3, 3, 7, 5], vec![1, 16, 8, 8], vec![70_001]] {
            let n: usize = shape.iter().product();
            let x = through_f32(&rng.uniform(n, -8.0, 8.0));
            let dy = through_f32(&rng.normal(n));
            let (xt, dyt) = (upload(&shape, &x), upload(&shape, &dy));

            let y = download(&activation::forward(gpu(), act, &xt).unwrap());
            let want: Vec<f64> = x.iter().map(|&v| relu_ref(v, act)).collect();
            assert_close(
                &format!("{act:?} forward {shape:?}"),
                &y,
                &want,
                TOL_ELEMENTWISE,
            );

            let want: Vec<f64> = x
                .iter()
                .zip(&dy)
                .map(|(&v, &g)| g * relu_grad_ref(v, act))
                .collect();
            // The backward pass takes the forward input or its output alike (the graph
            // executor passes the output, which may be all that a fused pass stored).
            let yt = upload(&shape, &y);
            for (from, t) in [("input", &xt), ("output", &yt)] {
                let dx = download(&activation::backward(gpu(), act, t, &dyt).unwrap());
                assert_close(
                    &format!("{act:?} backward from the {from} {shape:?}"),
                    &dx,
                    &want,
                    TOL_ELEMENTWISE,
                );
            }
        }
    }
}

#[test]
fn activation_reference_gradient_matches_finite_differences() {
    let mut rng = Rng::new(2);
    for act in [Activation::Relu, Activation::Relu6] {
        // Keep points away from the kinks at 0 and 6, where the derivative is undefined.
        let x: Vec<f64> = rng
            .uniform(64, -8.0, 8.0)
            .into_iter()
            .filter(|v| v.abs() > 0.01 && (v - 6.0).abs() > 0.01)
            .collect();
        let dy = rng.normal(x.len());
        let analytic: Vec<f64> = x
            .iter()
            .zip(&dy)
            .map(|(&v, &g)| g * relu_grad_ref(v, act))
            .collect();
        check_gradient(&format!("{act:?}"), &x, &analytic, 64, |x| {
            dot(
                &x.iter().map(|&v| relu_ref(v, act)).collect::<Vec<_>>(),
                &dy,
            )
        });
    }
}

#[test]
fn add_matches_reference() {
    let mut rng = Rng::new(3);
    let shape = [3, 3, 7, 5];
    let n = 3 * 3 * 7 * 5;
    let (a, b) = (through_f32(&rng.normal(n)), through_f32(&rng.normal(n)));
    let out = download(&activation::add(gpu(), &upload(&shape, &a), &upload(&shape, &b)).unwrap());
    let want: Vec<f64> = a
        .iter()
        .zip(&b)
        .map(|(x, y)| (*x as f32 + *y as f32) as f64)
        .collect();
    assert_close("add", &out, &want, TOL_ELEMENTWISE);
}

#[test]
fn add_then_relu_or_relu6_in_one_pass_matches_reference() {
    let mut rng = Rng::new(4);
    for shape in [vec![3, 3, 7, 5], vec![70_001]] {
        let n: usize = shape.iter().product();
        let a = through_f32(&rng.uniform(n, -6.0, 6.0));
        let b = through_f32(&rng.uniform(n, -6.0, 6.0));
        let (at, bt) = (upload(&shape, &a), upload(&shape, &b));
        for act in [Activation::Relu, Activation::Relu6] {
            let out = download(&activation::add_act(gpu(), act, &at, &bt).unwrap());
            let want: Vec<f64> = a
                .iter()
                .zip(&b)
                .map(|(x, y)| relu_ref((*x as f32 + *y as f32) as f64, act))
                .collect();
            assert_close(
                &format!("add then {act:?} {shape:?}"),
                &out,
                &want,
                TOL_ELEMENTWISE,
            );
        }
    }
}

#[test]
fn add_rejects_mismatched_shapes_naming_both() {
    let a = upload(&[2, 3], &[0.0; 6]);
    let b = upload(&[3, 2], &[0.0; 6]);
    let err = activation::add(gpu(), &a, &b).unwrap_err().to_string();
    assert!(
        err.contains("add") && err.contains("[3, 2]") && err.contains("[2, 3]"),
        "{err}"
    );
}
