//! Graph building, shape inference, differentiation and memory planning (no GPU needed).

use cenet::graph::autodiff::{training_program, Instr, Storage};
use cenet::graph::plan::{lifetimes, plan};
use cenet::graph::{Conv2d, Graph, Init, NodeId, Op};
use cenet::nn::resnet::ResNetConfig;

#[test]
fn conv_with_wrong_input_channels_names_op_node_and_shapes() {
    let mut g = Graph::new();
    let x = g.input(&[2, 3, 8, 8]);
    let w = g
        .param("conv1.weight", &[16, 4, 3, 3], Init::Constant(0.0))
        .unwrap();
    let err = g
        .conv2d(x, w, None, Conv2d::new(1, 1))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("conv2d")
            && err.contains("conv1")
            && err.contains("[16, 4, 3, 3]")
            && err.contains("[16, 3, 3, 3]"),
        "{err}"
    );
}

#[test]
fn add_of_different_shapes_names_both() {
    let mut g = Graph::new();
    let a = g.input(&[2, 3, 8, 8]);
    let w = g
        .param("c.weight", &[4, 3, 1, 1], Init::Constant(0.0))
        .unwrap();
    let b = g.conv2d(a, w, None, Conv2d::default()).unwrap();
    let err = g.add(a, b).unwrap_err().to_string();
    assert!(
        err.contains("add") && err.contains("[2, 4, 8, 8]") && err.contains("[2, 3, 8, 8]"),
        "{err}"
    );
}

#[test]
fn a_state_dict_key_cannot_be_declared_twice() {
    let mut g = Graph::new();
    g.param("fc.weight", &[2, 2], Init::Constant(0.0)).unwrap();
    assert!(g
        .param("fc.weight", &[2, 2], Init::Constant(0.0))
        .unwrap_err()
        .to_string()
        .contains("fc.weight"));
}

#[test]
fn resnet20_has_the_reference_parameter_count_and_shapes() {
    let model = ResNetConfig::new(20, false).unwrap().build(8).unwrap();
    // 3·16·9 stem + BN, three stages of 3 blocks, 1×1 projection shortcuts, 64→10 classifier:
    // the 0.27 M parameters of He et al.'s ResNet-20 with projection shortcuts.
    assert_eq!(model.graph.parameter_count(), 272_474);
    assert_eq!(model.graph.shape(model.logits), &[8, 10]);
}

#[test]
fn resnet20_ce_uses_the_pytorch_state_dict_keys() {
    let model = ResNetConfig::new(20, true).unwrap().build(4).unwrap();
    let g = &model.graph;
    let shape_of = |name: &str| -> Vec<usize> {
        g.params
            .iter()
            .map(|p| (&p.name, &p.shape))
            .chain(g.states.iter().map(|s| (&s.name, &s.shape)))
            .find(|(n, _)| *n == name)
            .unwrap_or_else(|| panic!("no tensor named {name}"))
            .1
            .clone()
    };
    assert_eq!(shape_of("conv1.weight"), [16, 3, 3, 3]);
    assert_eq!(shape_of("bn1.running_var"), [16]);
    assert_eq!(shape_of("ce.x_weight"), [1]);
    assert_eq!(shape_of("ce.running_mean"), [1, 16, 1]);
    assert_eq!(shape_of("ce.running_wm"), [1, 16, 16]);
    assert_eq!(shape_of("ce.AR.running_scale"), [1]);
    assert_eq!(shape_of("ce.AR.fc.0.weight"), [4, 16]);
    assert_eq!(shape_of("ce.AR.fc.1.weight"), [4]);
    assert_eq!(shape_of("ce.AR.fc.1.bias"), [4]);
    assert_eq!(shape_of("ce.AR.fc.3.weight"), [16, 4]);
    assert_eq!(shape_of("layer2.0.downsample.0.weight"), [32, 16, 1, 1]);
    assert_eq!(shape_of("layer2.0.downsample.1.running_mean"), [32]);
    assert_eq!(shape_of("layer3.2.ce.running_wm"), [4, 16, 16]);
    assert_eq!(shape_of("fc.weight"), [10, 64]);
    assert_eq!(shape_of("fc.bias"), [10]);
    assert_eq!(g.batch_norms.len(), 1 + 9 * 2 + 2);
    assert_eq!(g.ce_layers.len(), 1 + 9);
}

#[test]
fn every_parameter_is_updated_once_after_its_gradient_is_complete() {
    let model = ResNetConfig::new(8, true).unwrap().build(2).unwrap();
    let program = training_program(&model.graph, model.loss, &[]);
    let mut updates = vec![0; model.graph.params.len()];
    for instr in &program.instrs {
        if let Instr::Update { param, .. } = instr {
            updates[param.0] += 1;
        }
    }
    assert!(updates.iter().all(|&u| u == 1), "{updates:?}");
    // Residual blocks with identity shortcuts sum two gradient contributions.
    let sums = program
        .instrs
        .iter()
        .filter(|i| matches!(i, Instr::Accumulate { .. }))
        .count();
    assert!(
        sums >= 1,
        "no gradient accumulation for the residual connections"
    );
    // Nothing reads a tensor before an instruction writes it.
    let life = lifetimes(&model.graph, &program);
    for (i, instr) in program.instrs.iter().enumerate() {
        for v in program.reads(&model.graph, instr) {
            if program.tensors[v.0].storage == Storage::Planned {
                let (first, _) = life[v.0].expect("planned tensors have lifetimes");
                assert!(
                    first < i,
                    "instruction {i} reads {} before it is written",
                    program.tensors[v.0].name
                );
            }
        }
    }
}

#[test]
fn planned_tensors_alive_at_once_never_share_a_slot() {
    let model = ResNetConfig::new(8, true).unwrap().build(3).unwrap();
    let program = training_program(&model.graph, model.loss, &[model.logits]);
    let life = lifetimes(&model.graph, &program);
    let p = plan(&model.graph, &program);
    let planned: Vec<usize> = (0..program.tensors.len())
        .filter(|&v| life[v].is_some())
        .collect();
    for &a in &planned {
        for &b in &planned {
            let ((a0, a1), (b0, b1)) = (life[a].unwrap(), life[b].unwrap());
            if a < b && a0 <= b1 && b0 <= a1 {
                assert_ne!(
                    p.slot[a], p.slot[b],
                    "{} and {} overlap",
                    program.tensors[a].name, program.tensors[b].name
                );
            }
        }
        assert!(p.slot_bytes[p.slot[a].unwrap()] >= program.tensors[a].bytes());
    }
}

#[test]
fn resnet20_planned_peak_memory_at_batch_128_stays_near_the_live_bound() {
    for ce in [false, true] {
        let model = ResNetConfig::new(20, ce).unwrap().build(128).unwrap();
        let program = training_program(&model.graph, model.loss, &[model.logits]);
        let p = plan(&model.graph, &program);
        let mib = |b: u64| b as f64 / (1 << 20) as f64;
        println!(
            "{}: planned peak {:.1} MiB, live bound {:.1} MiB, ratio {:.3}",
            model.name,
            mib(p.planned_peak_bytes),
            mib(p.live_bound_bytes),
            p.planned_peak_bytes as f64 / p.live_bound_bytes as f64
        );
        assert!(p.planned_peak_bytes as f64 <= 1.2 * p.live_bound_bytes as f64);
        // Every activation of ResNet-20 at batch 128 together is ~150 MiB; the plan must reuse.
        let total: u64 = program
            .tensors
            .iter()
            .filter(|t| t.storage == Storage::Planned)
            .map(|t| t.bytes())
            .sum();
        assert!(
            p.planned_peak_bytes < total / 2,
            "planned {} of {} bytes",
            p.planned_peak_bytes,
            total
        );
    }
}

/// (activation, sum, norm) of every fused forward instruction, and the nodes still computed
/// on their own.
fn fusions(
    program: &cenet::graph::autodiff::StepProgram,
) -> (Vec<[Option<NodeId>; 3]>, Vec<NodeId>) {
    let mut fused = Vec::new();
    let mut alone = Vec::new();
    for instr in &program.instrs {
        match *instr {
            Instr::FusedForward { act, add, norm, .. } => fused.push([Some(act), add, norm]),
            Instr::Forward { node, .. } => alone.push(node),
            _ => {}
        }
    }
    (fused, alone)
}

#[test]
fn activations_absorb_the_batch_norms_and_sums_that_only_they_read() {
    for ce in [false, true] {
        let model = ResNetConfig::new(8, ce).unwrap().build(2).unwrap();
        let graph = &model.graph;
        let program = training_program(graph, model.loss, &[model.logits]);
        let (fused, alone) = fusions(&program);
        let kind = |n: NodeId| match graph.node(n).op {
            Op::Relu(_) => "relu",
            Op::Add(..) => "add",
            Op::BatchNorm { .. } => "bn",
            Op::ChannelEquilibrium { .. } => "ce",
            _ => "other",
        };
        let shapes: Vec<String> = fused
            .iter()
            .map(|f| {
                f.iter()
                    .flatten()
                    .map(|&n| kind(n))
                    .collect::<Vec<_>>()
                    .join("+")
            })
            .collect();
        // The stem and each block's first ReLU absorb their batch norm; a block's last ReLU
        // absorbs its sum and, where one operand is a batch norm read by nothing else, that
        // too (without CE the residual branch's; with CE the projected shortcut's). Under CE
        // the stem's ReLU reads the CE block and stays alone.
        let want: &[&str] = if ce {
            &[
                "relu+bn",
                "relu+add",
                "relu+bn",
                "relu+add+bn",
                "relu+bn",
                "relu+add+bn",
            ]
        } else {
            &[
                "relu+bn",
                "relu+bn",
                "relu+add+bn",
                "relu+bn",
                "relu+add+bn",
                "relu+bn",
                "relu+add+bn",
            ]
        };
        assert_eq!(shapes, want, "ce {ce}");
        let relus_alone = alone.iter().filter(|&&n| kind(n) == "relu").count();
        assert_eq!(relus_alone, ce as usize, "ce {ce}");

        // Absorbed values are never computed, read or given memory.
        let p = plan(graph, &program);
        for f in &fused {
            for &n in f[1..].iter().flatten() {
                assert!(
                    !alone.contains(&n),
                    "{} also computed alone",
                    graph.node(n).name
                );
                let v = program.values[&n];
                assert_eq!(p.slot[v.0], None, "{} has memory", graph.node(n).name);
                for instr in &program.instrs {
                    assert!(!program.reads(graph, instr).contains(&v));
                }
            }
        }
    }
}

#[test]
fn a_node_asked_for_as_an_output_is_not_fused_away() {
    let model = ResNetConfig::new(8, false).unwrap().build(2).unwrap();
    let graph = &model.graph;
    let first_norm = (0..graph.nodes.len())
        .map(NodeId)
        .find(|&n| matches!(graph.node(n).op, Op::BatchNorm { .. }))
        .unwrap();
    let (fused, alone) = fusions(&training_program(graph, model.loss, &[]));
    assert!(fused.iter().any(|f| f[2] == Some(first_norm)));
    assert!(!alone.contains(&first_norm));
    let (fused, alone) = fusions(&training_program(graph, model.loss, &[first_norm]));
    assert!(fused.iter().all(|f| f[2] != Some(first_norm)));
    assert!(alone.contains(&first_norm));
}
