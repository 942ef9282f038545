//! A float64 interpreter of a whole `cenet` graph, built from the per-op references: forward
//! in training or evaluation mode, and a backward pass of its own (a plain tape over the
//! nodes in reverse creation order, independent of the library's autodiff).

use std::collections::HashMap;

use cenet::graph::{Graph, NodeId, Op};

use super::batchnorm::BatchNorm2dRef;
use super::ce::{
    ce_backward, ce_forward_eval, ce_forward_train, CeCache, CeConfig, CeParams, CeRunning,
};
use super::{conv, linear, loss, pool};

/// Parameters and state buffers by state-dict name.
pub type Tensors = HashMap<String, Vec<f64>>;

/// What one pass of the reference computes.
pub struct NetworkPass {
    /// The mean loss.
    pub loss: f64,
    /// Correct top-1 predictions.
    pub correct: usize,
    /// Every node's value.
    pub values: HashMap<NodeId, Vec<f64>>,
    /// Gradients by parameter name (training only).
    pub grads: Tensors,
    /// State buffers after the pass (running statistics updated in training).
    pub states: Tensors,
}

fn dims4(s: &[usize]) -> [usize; 4] {
    [s[0], s[1], s[2], s[3]]
}

fn bn_ref(graph: &Graph, layer: usize, t: &Tensors) -> BatchNorm2dRef {
    let l = &graph.batch_norms[layer];
    let mut bn = BatchNorm2dRef::new(t[&graph.params[l.weight.0].name].len());
    bn.weight = t[&graph.params[l.weight.0].name].clone();
    bn.bias = t[&graph.params[l.bias.0].name].clone();
    bn.running_mean = t[&graph.states[l.running_mean.0].name].clone();
    bn.running_var = t[&graph.states[l.running_var.0].name].clone();
    bn.momentum = l.momentum as f64;
    bn.eps = l.eps as f64;
    bn
}

fn ce_parts(graph: &Graph, layer: usize, t: &Tensors) -> (CeParams, CeConfig, CeRunning) {
    let l = &graph.ce_layers[layer];
    let p = |id: cenet::graph::ParamId| t[&graph.params[id.0].name].clone();
    let s = |id: cenet::graph::StateId| t[&graph.states[id.0].name].clone();
    let d = graph.states[l.running_wm.0].shape[1];
    let params = CeParams {
        theta: p(l.theta)[0],
        w1: p(l.w1),
        gamma: p(l.ln_weight),
        beta: p(l.ln_bias),
        w2: p(l.w2),
    };
    let mut cfg = CeConfig::with_group(d);
    cfg.iterations = l.options.iterations;
    cfg.eps = l.options.eps as f64;
    cfg.reduction = l.options.reduction;
    cfg.centred = l.options.centred;
    let groups = graph.states[l.running_wm.0].shape[0];
    let mut running = CeRunning::new(groups, d);
    running.wm = s(l.running_wm);
    running.mean = s(l.running_mean);
    running.scale = s(l.running_scale)[0];
    (params, cfg, running)
}

/// Runs the graph on `images` and `labels` with the given tensors.
pub fn run(
    graph: &Graph,
    loss_node: NodeId,
    logits_node: NodeId,
    t: &Tensors,
    images: &[f64],
    labels: &[u32],
    training: bool,
) -> NetworkPass {
    let no_branches = HashMap::new();
    let inputs = Inputs { images, labels };
    run_on_branches(
        graph,
        [loss_node, logits_node],
        t,
        inputs,
        training,
        &no_branches,
    )
}

/// A batch for [`run_on_branches`].
pub struct Inputs<'a> {
    pub images: &'a [f64],
    pub labels: &'a [u32],
}

/// Which piece of ReLU6 (or ReLU) the value `at_kink_input` selects: below 0, between the
/// kinks, or above 6.
fn relu6_piece(at_kink_input: f64) -> u8 {
    if at_kink_input <= 0.0 {
        0
    } else if at_kink_input < 6.0 {
        1
    } else {
        2
    }
}

/// [`run`], except that each ReLU6 whose input node is a key of `branches` takes, element
/// by element, the piece (clipped low, linear, clipped high) that the given values of its
/// input select, in the forward pass and in its gradient. Given the values a float32
/// engine computed, the float64 pass then differentiates the same piecewise-smooth function
/// as the engine: an input within rounding of a kink cannot turn a rounding difference into
/// a different gradient.
pub fn run_on_branches(
    graph: &Graph,
    [loss_node, logits_node]: [NodeId; 2],
    t: &Tensors,
    Inputs { images, labels }: Inputs,
    training: bool,
    branches: &HashMap<NodeId, Vec<f32>>,
) -> NetworkPass {
    // The piece of each element of ReLU6 input `x` (valued `values`).
    let pieces = |x: &NodeId, values: &[f64]| -> Vec<u8> {
        match branches.get(x) {
            Some(engine) => engine.iter().map(|&a| relu6_piece(a as f64)).collect(),
            None => values.iter().map(|&a| relu6_piece(a)).collect(),
        }
    };
    let mut values: HashMap<NodeId, Vec<f64>> = HashMap::new();
    let mut states: Tensors = graph
        .states
        .iter()
        .map(|s| (s.name.clone(), t[&s.name].clone()))
        .collect();
    let mut bn_saved: HashMap<usize, BatchNorm2dRef> = HashMap::new();
    let mut ce_saved: HashMap<usize, CeCache> = HashMap::new();
    let mut pool_saved: HashMap<NodeId, Vec<usize>> = HashMap::new();
    let labels_f: Vec<f64> = labels.iter().map(|&l| l as f64).collect();

    for (i, node) in graph.nodes.iter().enumerate() {
        let id = NodeId(i);
        let v = |n: &NodeId| values[n].clone();
        let out = match &node.op {
            Op::Input => images.to_vec(),
            Op::Labels => labels_f.clone(),
            Op::Param(p) => t[&graph.params[p.0].name].clone(),
            Op::Conv2d {
                x,
                weight,
                bias,
                geometry,
            } => conv::conv2d_forward(
                &values[x],
                dims4(graph.shape(*x)),
                &values[weight],
                dims4(graph.shape(*weight)),
                bias.map(|b| values[&b].as_slice()),
                geometry,
            ),
            Op::BatchNorm { x, layer } => {
                let bn = bn_ref(graph, *layer, t);
                let xs = dims4(graph.shape(*x));
                let y = if training {
                    let o = bn.forward_train(&values[x], xs);
                    let l = &graph.batch_norms[*layer];
                    states.insert(graph.states[l.running_mean.0].name.clone(), o.running_mean);
                    states.insert(graph.states[l.running_var.0].name.clone(), o.running_var);
                    o.y
                } else {
                    bn.forward_eval(&values[x], xs)
                };
                bn_saved.insert(*layer, bn);
                y
            }
            Op::ChannelEquilibrium { x, layer } => {
                let (params, cfg, mut running) = ce_parts(graph, *layer, t);
                let xs = dims4(graph.shape(*x));
                if training {
                    let (y, cache) = ce_forward_train(&values[x], xs, &params, &cfg);
                    let l = &graph.ce_layers[*layer];
                    running.update(&cache, l.options.momentum as f64);
                    states.insert(
                        graph.states[l.running_wm.0].name.clone(),
                        running.wm.clone(),
                    );
                    states.insert(
                        graph.states[l.running_mean.0].name.clone(),
                        running.mean.clone(),
                    );
                    states.insert(
                        graph.states[l.running_scale.0].name.clone(),
                        vec![running.scale],
                    );
                    ce_saved.insert(*layer, cache);
                    y
                } else {
                    ce_forward_eval(&values[x], xs, &params, &cfg, &running)
                }
            }
            Op::Relu(x) => v(x).iter().map(|a| a.max(0.0)).collect(),
            Op::Relu6(x) => v(x)
                .iter()
                .zip(pieces(x, &values[x]))
                .map(|(&a, piece)| match piece {
                    0 => 0.0,
                    1 => a,
                    _ => 6.0,
                })
                .collect(),
            Op::Add(a, b) => values[a]
                .iter()
                .zip(&values[b])
                .map(|(p, q)| p + q)
                .collect(),
            Op::GlobalAvgPool(x) => {
                pool::global_avg_pool_forward(&values[x], dims4(graph.shape(*x)))
            }
            Op::MaxPool2d { x, geometry } => {
                let (y, argmax) = pool::max_pool2d_forward(
                    &values[x],
                    dims4(graph.shape(*x)),
                    geometry.kernel,
                    geometry.stride,
                    geometry.padding,
                );
                pool_saved.insert(id, argmax);
                y
            }
            Op::Linear { x, weight, bias } => {
                let s = graph.shape(*weight);
                linear::linear_forward(
                    &values[x],
                    &values[weight],
                    bias.map(|b| values[&b].as_slice()),
                    [graph.shape(*x)[0], s[1], s[0]],
                )
            }
            Op::CrossEntropy {
                logits, smoothing, ..
            } => {
                let s = graph.shape(*logits);
                vec![loss::cross_entropy_forward(
                    &values[logits],
                    [s[0], s[1]],
                    labels,
                    *smoothing as f64,
                )]
            }
        };
        values.insert(id, out);
    }

    let ls = graph.shape(logits_node);
    let correct = loss::top1_correct(&values[&logits_node], [ls[0], ls[1]], labels);
    let mut grads = Tensors::new();
    if training {
        let mut g: HashMap<NodeId, Vec<f64>> = HashMap::new();
        let add = |g: &mut HashMap<NodeId, Vec<f64>>, n: NodeId, d: Vec<f64>| match g.get_mut(&n) {
            Some(acc) => acc.iter_mut().zip(&d).for_each(|(a, b)| *a += b),
            None => {
                g.insert(n, d);
            }
        };
        for i in (0..=loss_node.0).rev() {
            let id = NodeId(i);
            let node = &graph.nodes[i];
            if id != loss_node && !g.contains_key(&id) {
                continue;
            }
            let dy = g.get(&id).cloned().unwrap_or_default();
            match &node.op {
                Op::Input | Op::Labels => {}
                Op::Param(p) => {
                    grads.insert(graph.params[p.0].name.clone(), dy);
                }
                Op::Conv2d {
                    x,
                    weight,
                    bias,
                    geometry,
                } => {
                    let (xs, ws) = (dims4(graph.shape(*x)), dims4(graph.shape(*weight)));
                    add(
                        &mut g,
                        *x,
                        conv::conv2d_backward_data(&dy, &values[weight], ws, xs, geometry),
                    );
                    add(
                        &mut g,
                        *weight,
                        conv::conv2d_backward_weight(&values[x], xs, &dy, ws, geometry),
                    );
                    if let Some(b) = bias {
                        add(
                            &mut g,
                            *b,
                            conv::conv2d_backward_bias(&dy, dims4(&node.shape)),
                        );
                    }
                }
                Op::BatchNorm { x, layer } => {
                    let r = bn_saved[layer].backward(&values[x], dims4(graph.shape(*x)), &dy);
                    let l = &graph.batch_norms[*layer];
                    add(&mut g, *x, r.dx);
                    add(&mut g, graph.params[l.weight.0].node, r.dweight);
                    add(&mut g, graph.params[l.bias.0].node, r.dbias);
                }
                Op::ChannelEquilibrium { x, layer } => {
                    let (params, _, _) = ce_parts(graph, *layer, t);
                    let r = ce_backward(&dy, &ce_saved[layer], &params);
                    let l = &graph.ce_layers[*layer];
                    add(&mut g, *x, r.x);
                    add(&mut g, graph.params[l.theta.0].node, vec![r.theta]);
                    add(&mut g, graph.params[l.w1.0].node, r.w1);
                    add(&mut g, graph.params[l.ln_weight.0].node, r.gamma);
                    add(&mut g, graph.params[l.ln_bias.0].node, r.beta);
                    add(&mut g, graph.params[l.w2.0].node, r.w2);
                }
                Op::Relu(x) => add(
                    &mut g,
                    *x,
                    values[x]
                        .iter()
                        .zip(&dy)
                        .map(|(a, d)| if *a > 0.0 { *d } else { 0.0 })
                        .collect(),
                ),
                Op::Relu6(x) => add(
                    &mut g,
                    *x,
                    pieces(x, &values[x])
                        .into_iter()
                        .zip(&dy)
                        .map(|(piece, d)| if piece == 1 { *d } else { 0.0 })
                        .collect(),
                ),
                Op::Add(a, b) => {
                    add(&mut g, *a, dy.clone());
                    add(&mut g, *b, dy);
                }
                Op::GlobalAvgPool(x) => add(
                    &mut g,
                    *x,
                    pool::global_avg_pool_backward(&dy, dims4(graph.shape(*x))),
                ),
                Op::MaxPool2d { x, .. } => {
                    let os = &node.shape;
                    add(
                        &mut g,
                        *x,
                        pool::max_pool2d_backward(
                            &dy,
                            &pool_saved[&id],
                            dims4(graph.shape(*x)),
                            [os[2], os[3]],
                        ),
                    );
                }
                Op::Linear { x, weight, bias } => {
                    let s = graph.shape(*weight);
                    let r = linear::linear_backward(
                        &values[x],
                        &values[weight],
                        &dy,
                        [graph.shape(*x)[0], s[1], s[0]],
                    );
                    add(&mut g, *x, r.dx);
                    add(&mut g, *weight, r.dw);
                    if let Some(b) = bias {
                        add(&mut g, *b, r.db);
                    }
                }
                Op::CrossEntropy {
                    logits, smoothing, ..
                } => {
                    let s = graph.shape(*logits);
                    add(
                        &mut g,
                        *logits,
                        loss::cross_entropy_backward(
                            &values[logits],
                            [s[0], s[1]],
                            labels,
                            *smoothing as f64,
                        ),
                    );
                }
            }
        }
    }
    NetworkPass {
        loss: values[&loss_node][0],
        correct,
        values,
        grads,
        states,
    }
}
