//! MobileNetV2 for 32×32 images: torchvision's parameters and state-dict keys, CIFAR strides,
//! the two CE placements, torchvision's initialisation, and one training pass of a narrow
//! network with CE against the float64 network reference.

mod common;

use std::collections::HashMap;

use cenet::graph::exec::Executor;
use cenet::graph::{Graph, Init, NodeId, Op};
use cenet::nn::mobilenet::{make_divisible, CePlacement, MobileNetV2Config};
use common::reference::network::{self, Tensors};
use common::*;

/// Gradients through a whole network: several dozen chained f32 reductions (convolutions,
/// batch norms, CE blocks) between the loss and the stem. On lavapipe the error is near 3e-5
/// with CE after each block and grows to 5e-4 at the stem with CE before every ReLU6 (35
/// blocks, each with Newton–Schulz iterations), the same bound tests/executor.rs uses.
const TOL_NETWORK: f64 = 1e-3;
/// The gradient of a CE gate's logit θ (`x_weight`) is one sum over N·C·H·W terms of both
/// signs, so it cancels and the upstream gradient's relative error grows in it: 2e-3 on
/// lavapipe in the network with CE before every ReLU6.
const TOL_GATE: f64 = 5e-3;

fn shape_of<'g>(g: &'g Graph, name: &str) -> &'g [usize] {
    if let Some(p) = g.params.iter().find(|p| p.name == name) {
        return &p.shape;
    }
    match g.states.iter().find(|s| s.name == name) {
        Some(s) => &s.shape,
        None => panic!("no tensor named {name:?}"),
    }
}

fn init_of<'g>(g: &'g Graph, name: &str) -> &'g Init {
    &g.params
        .iter()
        .find(|p| p.name == name)
        .unwrap_or_else(|| panic!("no parameter named {name:?}"))
        .init
}

/// MobileNetV2's parameters counted from the paper's Table 2 and torchvision's code, layer by
/// layer, at width 1 with `classes` outputs: every convolution is bias-free and followed by
/// a BN with 2 parameters per channel.
fn parameters_by_hand(classes: usize) -> usize {
    let bn = |c: usize| 2 * c;
    let mut total = 3 * 32 * 9 + bn(32);
    let mut cin = 32;
    for (t, c, n) in [
        (1, 16, 1),
        (6, 24, 2),
        (6, 32, 3),
        (6, 64, 4),
        (6, 96, 3),
        (6, 160, 3),
        (6, 320, 1),
    ] {
        for _ in 0..n {
            let hidden = cin * t;
            if t != 1 {
                total += cin * hidden + bn(hidden); // 1×1 expansion
            }
            total += hidden * 9 + bn(hidden); // 3×3 depthwise
            total += hidden * c + bn(c); // 1×1 linear projection
            cin = c;
        }
    }
    total += 320 * 1280 + bn(1280); // last 1×1
    total + 1280 * classes + classes // classifier
}

#[test]
fn mobilenetv2_has_torchvisions_parameter_count_for_ten_classes() {
    let model = MobileNetV2Config::new(1.0, false)
        .unwrap()
        .build(2)
        .unwrap();
    // sum(p.numel() for p in torchvision.models.mobilenet_v2(num_classes=10).parameters()).
    assert_eq!(model.graph.parameter_count(), 2_236_682);
    assert_eq!(parameters_by_hand(10), 2_236_682);
    // 52 convolutions and 52 BNs: 158 parameter tensors, 104 running statistics and 52
    // num_batches_tracked make torchvision's 314 state-dict entries.
    let g = &model.graph;
    assert_eq!(g.params.len(), 158);
    assert_eq!(g.states.len(), 104);
    assert_eq!(g.batch_norms.len(), 52);
}

#[test]
fn state_dict_keys_and_shapes_follow_torchvision() {
    let model = MobileNetV2Config::new(1.0, false)
        .unwrap()
        .build(3)
        .unwrap();
    let g = &model.graph;
    for (name, shape) in [
        ("features.0.0.weight", &[32, 3, 3, 3][..]),
        ("features.0.1.running_mean", &[32]),
        // Block 1 has no expansion: depthwise, projection, BN.
        ("features.1.conv.0.0.weight", &[32, 1, 3, 3]),
        ("features.1.conv.0.1.weight", &[32]),
        ("features.1.conv.1.weight", &[16, 32, 1, 1]),
        ("features.1.conv.2.running_var", &[16]),
        // Later blocks: expansion, depthwise, projection, BN.
        ("features.2.conv.0.0.weight", &[96, 16, 1, 1]),
        ("features.2.conv.1.0.weight", &[96, 1, 3, 3]),
        ("features.2.conv.2.weight", &[24, 96, 1, 1]),
        ("features.2.conv.3.bias", &[24]),
        ("features.17.conv.2.weight", &[320, 960, 1, 1]),
        ("features.18.0.weight", &[1280, 320, 1, 1]),
        ("features.18.1.weight", &[1280]),
        ("classifier.1.weight", &[10, 1280]),
        ("classifier.1.bias", &[10]),
    ] {
        assert_eq!(shape_of(g, name), shape, "{name}");
    }
    assert_eq!(g.shape(model.logits), &[3, 10]);
    assert_eq!(model.name, "mobilenetv2");
}

#[test]
fn cifar_strides_end_at_4x4_and_imagenet_strides_at_1x1() {
    let last_map = |config: MobileNetV2Config| {
        let model = config.build(1).unwrap();
        let g = &model.graph;
        let pool = g
            .nodes
            .iter()
            .find(|n| n.name == "avgpool")
            .expect("a global average pool");
        let cenet::graph::Op::GlobalAvgPool(x) = pool.op else {
            unreachable!()
        };
        g.shape(x).to_vec()
    };
    let cifar = MobileNetV2Config::new(1.0, false).unwrap();
    assert_eq!(last_map(cifar), [1, 1280, 4, 4]);
    assert_eq!(last_map(cifar.with_imagenet_strides()), [1, 1280, 1, 1]);
}

#[test]
fn width_multiplier_rounds_channels_like_torchvision() {
    // torchvision's _make_divisible(v, 8).
    assert_eq!(make_divisible(32.0 * 0.25, 8), 8);
    assert_eq!(make_divisible(16.0 * 0.25, 8), 8);
    assert_eq!(make_divisible(24.0 * 0.35, 8), 8);
    assert_eq!(make_divisible(160.0 * 0.75, 8), 120);
    assert_eq!(make_divisible(1280.0 * 1.4, 8), 1792);
    let model = MobileNetV2Config::new(0.25, false)
        .unwrap()
        .build(1)
        .unwrap();
    assert_eq!(model.name, "mobilenetv2-w0.25");
    // sum(p.numel()) of torchvision's mobilenet_v2(num_classes=10, width_mult=0.25).
    assert_eq!(model.graph.parameter_count(), 250_922);
    assert_eq!(shape_of(&model.graph, "features.0.0.weight"), [8, 3, 3, 3]);
    assert_eq!(
        shape_of(&model.graph, "features.18.0.weight"),
        [1280, 80, 1, 1]
    );

    for width in [0.0, -1.0, f32::NAN] {
        let err = MobileNetV2Config::new(width, false)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("mobilenetv2") && err.contains("width"),
            "{err}"
        );
    }
}

#[test]
fn ce_placement_changes_the_number_of_ce_blocks() {
    let ce_names = |config: MobileNetV2Config| -> Vec<String> {
        let model = config.build(2).unwrap();
        model
            .graph
            .ce_layers
            .iter()
            .map(|l| l.prefix.clone())
            .collect()
    };

    let blocks = MobileNetV2Config::new(1.0, true).unwrap();
    assert_eq!(blocks.name(), "mobilenetv2-ce");
    let names = ce_names(blocks);
    // One per inverted residual block, features.1 … features.17.
    assert_eq!(names.len(), 17);
    assert_eq!(names[0], "features.1.ce");
    assert_eq!(names[16], "features.17.ce");

    let everywhere = blocks.with_ce_placement(CePlacement::BeforeRelu6);
    assert_eq!(everywhere.name(), "mobilenetv2-ce-relu6");
    let names = ce_names(everywhere);
    // Stem, 16 expansions, 17 depthwise convolutions, the last 1×1: 35.
    assert_eq!(names.len(), 35);
    for name in [
        "features.0.ce",
        "features.1.conv.0.ce",
        "features.2.conv.0.ce",
        "features.2.conv.1.ce",
        "features.18.ce",
    ] {
        assert!(names.iter().any(|n| n == name), "{name} missing: {names:?}");
    }
    assert!(!names.iter().any(|n| n == "features.2.ce"));

    // CE blocks carry the released module's keys under their prefix.
    let model = blocks.build(2).unwrap();
    assert_eq!(
        shape_of(&model.graph, "features.3.ce.AR.fc.0.weight"),
        [6, 24]
    );
    assert_eq!(
        shape_of(&model.graph, "features.3.ce.running_wm"),
        [3, 8, 8]
    );
    assert!(MobileNetV2Config::new(1.0, false)
        .unwrap()
        .build(2)
        .unwrap()
        .graph
        .ce_layers
        .is_empty());
}

#[test]
fn initialisation_follows_torchvision() {
    let model = MobileNetV2Config::new(1.0, false)
        .unwrap()
        .build(1)
        .unwrap();
    let g = &model.graph;
    let kaiming_fan_out = |fan_out: usize| Init::Normal {
        std: (2.0 / fan_out as f32).sqrt(),
    };
    // kaiming_normal_(mode="fan_out"): fan_out = Cout·KH·KW, for depthwise weights too.
    assert_eq!(init_of(g, "features.0.0.weight"), &kaiming_fan_out(32 * 9));
    assert_eq!(
        init_of(g, "features.2.conv.1.0.weight"),
        &kaiming_fan_out(96 * 9)
    );
    assert_eq!(init_of(g, "features.2.conv.2.weight"), &kaiming_fan_out(24));
    assert_eq!(init_of(g, "features.2.conv.3.weight"), &Init::Constant(1.0));
    assert_eq!(init_of(g, "features.2.conv.3.bias"), &Init::Constant(0.0));
    assert_eq!(
        init_of(g, "classifier.1.weight"),
        &Init::Normal { std: 0.01 }
    );
    assert_eq!(init_of(g, "classifier.1.bias"), &Init::Constant(0.0));
}

fn snapshot(exec: &Executor) -> Tensors {
    exec.param_names()
        .iter()
        .chain(exec.state_names())
        .map(|n| (n.clone(), download(exec.tensor(n).unwrap())))
        .collect()
}

#[test]
fn narrow_mobilenetv2_ce_gradients_match_the_float64_network() {
    let config = MobileNetV2Config::new(0.25, true).unwrap();
    let batch = 2;
    let mut exec = Executor::new(gpu(), move |b| config.build(b), 17).unwrap();
    let model = config.build(batch).unwrap();
    let mut rng = Rng::new(23);
    let images = through_f32(&rng.normal(batch * 3 * 32 * 32));
    let labels = rng.below(batch, 10);

    let params = snapshot(&exec);
    let reference = network::run(
        &model.graph,
        model.loss,
        model.logits,
        &params,
        &images,
        &labels,
        true,
    );
    let grads = exec.gradients(&to_f32(&images), &labels).unwrap();
    for name in [
        "features.0.0.weight",
        "features.0.1.weight",
        "features.1.conv.0.0.weight",
        "features.1.ce.AR.fc.0.weight",
        "features.3.conv.1.0.weight",
        "features.3.conv.2.weight",
        "features.10.conv.3.bias",
        "features.16.ce.x_weight",
        "features.18.0.weight",
        "classifier.1.weight",
        "classifier.1.bias",
    ] {
        let got: Vec<f64> = grads[name].iter().map(|&g| g as f64).collect();
        assert_close(
            &format!("d loss / d {name}"),
            &got,
            &reference.grads[name],
            TOL_NETWORK,
        );
    }
}

#[test]
fn narrow_mobilenetv2_with_ce_before_every_relu6_matches_the_float64_network() {
    let config = MobileNetV2Config::new(0.25, true)
        .unwrap()
        .with_ce_placement(CePlacement::BeforeRelu6);
    let batch = 2;
    let mut exec = Executor::new(gpu(), move |b| config.build(b), 5).unwrap();
    let model = config.build(batch).unwrap();
    let mut rng = Rng::new(29);
    let images = through_f32(&rng.normal(batch * 3 * 32 * 32));
    let labels = rng.below(batch, 10);

    let params = snapshot(&exec);
    // Batch 2 puts many ReLU6 inputs within float32 rounding of a kink, and through CE's
    // batch statistics one input on the other side of a kink moves every gradient upstream
    // by about 1e-3 (measured here: a 1e-7 relative change of the weights moves the
    // float64 gradients by up to 1e-3). So the reference takes, at every ReLU6, the pieces
    // the engine's own inputs select, and differentiates the same function in float64.
    let kink_inputs: Vec<NodeId> = model
        .graph
        .nodes
        .iter()
        .filter_map(|node| match node.op {
            Op::Relu6(x) => Some(x),
            _ => None,
        })
        .collect();
    let (grads, engine_values) = exec
        .gradients_and_values(&to_f32(&images), &labels, &kink_inputs)
        .unwrap();
    let branches: HashMap<NodeId, Vec<f32>> =
        kink_inputs.iter().copied().zip(engine_values).collect();
    let run = |p: &Tensors| {
        network::run_on_branches(
            &model.graph,
            [model.loss, model.logits],
            p,
            network::Inputs {
                images: &images,
                labels: &labels,
            },
            true,
            &branches,
        )
    };
    let reference = run(&params);
    let mut names: Vec<&String> = grads.keys().collect();
    names.sort();
    for name in names {
        let got: Vec<f64> = grads[name].iter().map(|&g| g as f64).collect();
        let want = &reference.grads[name];
        let label = format!("d loss / d {name}");
        if dot(want, want).sqrt() < 1e-9 {
            // A BN bias feeding only a 1×1 convolution and the next BN (features.1.conv.2 has
            // no residual and no CE after it here) has an exactly zero gradient: its f32
            // rounding noise is measured against the gradients' typical size, 0.1.
            assert_close_near_zero(&label, &got, want, TOL_NETWORK, 0.1);
        } else if name.ends_with(".x_weight") {
            assert_close(&label, &got, want, TOL_GATE);
        } else {
            assert_close(&label, &got, want, TOL_NETWORK);
        }
    }

    // The reference's own backward through 1×1 and depthwise convolutions, CE and ReLU6,
    // checked by finite differences of the same function (its ReLU6 pieces fixed).
    for (name, samples) in [
        ("features.16.conv.1.0.weight", 2),
        ("features.15.conv.0.0.weight", 1),
        ("features.0.0.weight", 1),
    ] {
        let loss = |v: &[f64]| {
            let mut p = params.clone();
            p.insert(name.to_string(), v.to_vec());
            run(&p).loss
        };
        check_gradient(name, &params[name], &reference.grads[name], samples, loss);
    }
}
