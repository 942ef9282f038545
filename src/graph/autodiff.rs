//! Reverse-mode differentiation: turns a graph and its loss into the instruction list of a
//! whole training step over virtual tensors. Forward instructions come in creation order,
//! then each op's backward in reverse order; a tensor that feeds several ops gets its
//! gradient summed as the contributions arrive, and each parameter is updated as soon as
//! its gradient is complete, so gradients die early and the planner can reuse their memory.

use std::collections::HashMap;

use super::{Graph, NodeId, Op, ParamId};
use crate::tensor::DType;

/// A tensor of the step program.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct VId(pub usize);

/// Where a virtual tensor's memory comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Storage {
    /// Written by the host each step (images, labels).
    Host,
    /// A parameter's own persistent buffer.
    Param(ParamId),
    /// A temporary: the planner gives it a slot of a shared buffer.
    Planned,
}

/// A tensor of the step program.
#[derive(Clone, Debug)]
pub struct VTensor {
    /// Its shape.
    pub shape: Vec<usize>,
    /// Its element type.
    pub dtype: DType,
    /// Where its memory comes from.
    pub storage: Storage,
    /// What it is, for messages and debugging.
    pub name: String,
}

impl VTensor {
    /// Size in bytes.
    pub fn bytes(&self) -> u64 {
        self.shape.iter().product::<usize>() as u64 * 4
    }
}

/// One instruction of a step.
#[derive(Clone, Debug, PartialEq)]
pub enum Instr {
    /// Computes `node` into `out` from its inputs' values.
    Forward {
        /// The node.
        node: NodeId,
        /// Its value.
        out: VId,
    },
    /// Computes the value of `act` (a ReLU or ReLU6) into `out` in one pass together with the
    /// nodes before it whose values nothing else reads, which are then never stored: the
    /// batch norm `norm`, the sum `add`, or both (`act(norm + shortcut)`, where `norm` is
    /// one operand of `add`). See [`fuse_activations`].
    FusedForward {
        /// The activation node.
        act: NodeId,
        /// The sum it reads, if absorbed.
        add: Option<NodeId>,
        /// The batch norm it (or the absorbed sum) reads, if absorbed.
        norm: Option<NodeId>,
        /// The activation's value.
        out: VId,
    },
    /// Propagates `dy` back through `node`: one optional gradient target per input, in
    /// [`Graph::inputs`] order (`None` where no gradient is needed). The loss has no `dy`.
    Backward {
        /// The node.
        node: NodeId,
        /// Gradient of the loss with respect to the node's value.
        dy: Option<VId>,
        /// Where each input's gradient contribution goes.
        grads: Vec<Option<VId>>,
    },
    /// out = a + b (gradient accumulation).
    Accumulate {
        /// First addend.
        a: VId,
        /// Second addend.
        b: VId,
        /// Sum.
        out: VId,
    },
    /// Applies the optimizer to `param` with its complete gradient.
    Update {
        /// The parameter.
        param: ParamId,
        /// Its gradient.
        grad: VId,
    },
}

/// A whole step as instructions over virtual tensors.
#[derive(Clone, Debug)]
pub struct StepProgram {
    /// Every virtual tensor.
    pub tensors: Vec<VTensor>,
    /// The instructions, in execution order.
    pub instrs: Vec<Instr>,
    /// The virtual tensor holding each node's value.
    pub values: HashMap<NodeId, VId>,
    /// Tensors read back after the step (the loss): kept alive to the end.
    pub outputs: Vec<VId>,
}

impl StepProgram {
    fn tensor(&mut self, shape: &[usize], dtype: DType, storage: Storage, name: String) -> VId {
        self.tensors.push(VTensor {
            shape: shape.to_vec(),
            dtype,
            storage,
            name,
        });
        VId(self.tensors.len() - 1)
    }

    /// The tensors an instruction reads.
    pub fn reads(&self, graph: &Graph, instr: &Instr) -> Vec<VId> {
        match instr {
            Instr::Forward { node, .. } => {
                graph.inputs(*node).iter().map(|n| self.values[n]).collect()
            }
            Instr::FusedForward { act, add, norm, .. } => {
                let absorbed = [Some(*act), *add, *norm];
                let mut reads = Vec::new();
                for n in absorbed.iter().flatten() {
                    for input in graph.inputs(*n) {
                        if !absorbed.contains(&Some(input)) {
                            reads.push(self.values[&input]);
                        }
                    }
                }
                reads
            }
            Instr::Backward { node, dy, .. } => {
                // Backward passes read their forward inputs (conv and linear need x and the
                // weight, normalisations their input) except where noted; activations read
                // their own output, which may be all that was stored of the fused nodes
                // before them.
                let mut reads: Vec<VId> = match graph.node(*node).op {
                    Op::GlobalAvgPool(_) | Op::MaxPool2d { .. } | Op::Add(..) => vec![],
                    Op::Relu(_) | Op::Relu6(_) => vec![self.values[node]],
                    _ => graph.inputs(*node).iter().map(|n| self.values[n]).collect(),
                };
                reads.extend(dy);
                reads
            }
            Instr::Accumulate { a, b, .. } => vec![*a, *b],
            Instr::Update { grad, .. } => vec![*grad],
        }
    }

    /// The tensors an instruction writes.
    pub fn writes(&self, instr: &Instr) -> Vec<VId> {
        match instr {
            Instr::Forward { out, .. } | Instr::FusedForward { out, .. } => vec![*out],
            Instr::Backward { grads, dy, .. } => {
                // Add's backward writes nothing: its gradients are `dy` itself.
                grads
                    .iter()
                    .flatten()
                    .copied()
                    .filter(|g| Some(*g) != *dy)
                    .collect()
            }
            Instr::Accumulate { out, .. } => vec![*out],
            Instr::Update { .. } => vec![],
        }
    }
}

fn value_storage(graph: &Graph, node: NodeId) -> Storage {
    match graph.node(node).op {
        Op::Input | Op::Labels => Storage::Host,
        Op::Param(p) => Storage::Param(p),
        _ => Storage::Planned,
    }
}

fn value_dtype(graph: &Graph, node: NodeId) -> DType {
    match graph.node(node).op {
        Op::Labels => DType::U32,
        _ => DType::F32,
    }
}

/// The forward pass alone (evaluation): values of every node up to `outputs`.
pub fn forward_program(graph: &Graph, outputs: &[NodeId]) -> StepProgram {
    let mut program = StepProgram {
        tensors: vec![],
        instrs: vec![],
        values: HashMap::new(),
        outputs: vec![],
    };
    let needed = ancestors(graph, outputs);
    for (i, node) in graph.nodes.iter().enumerate() {
        let id = NodeId(i);
        if !needed[i] {
            continue;
        }
        let v = program.tensor(
            &node.shape,
            value_dtype(graph, id),
            value_storage(graph, id),
            node.name.clone(),
        );
        program.values.insert(id, v);
        if value_storage(graph, id) == Storage::Planned {
            program.instrs.push(Instr::Forward { node: id, out: v });
        }
    }
    program.outputs = outputs.iter().map(|n| program.values[n]).collect();
    fuse_activations(graph, &mut program, outputs);
    program
}

/// Folds the batch norms and sums that feed only a ReLU or ReLU6 into one
/// [`Instr::FusedForward`] at the activation: `act(bn(x))`, `act(bn(x) + shortcut)` (a
/// ResNet block's end) or `act(a + b)`. The absorbed nodes' values are then neither written
/// nor read, and the planner gives them no memory. A node asked for as an output, or read
/// by any other node, is left alone. Backward passes are unchanged: a batch norm's reads its
/// input, a sum's reads nothing, and an activation's reads its own output.
fn fuse_activations(graph: &Graph, program: &mut StepProgram, outputs: &[NodeId]) {
    let mut readers = vec![0usize; graph.nodes.len()];
    for instr in &program.instrs {
        if let Instr::Forward { node, .. } = instr {
            for x in graph.inputs(*node) {
                readers[x.0] += 1;
            }
        }
    }
    let computed: std::collections::HashSet<NodeId> = program
        .instrs
        .iter()
        .filter_map(|i| match i {
            Instr::Forward { node, .. } => Some(*node),
            _ => None,
        })
        .collect();
    let private = |n: NodeId| readers[n.0] == 1 && !outputs.contains(&n) && computed.contains(&n);
    let is_norm = |n: NodeId| matches!(graph.node(n).op, Op::BatchNorm { .. }) && private(n);

    let mut absorbed = std::collections::HashSet::new();
    let mut fused = HashMap::new();
    for instr in &program.instrs {
        let Instr::Forward { node: act, out } = *instr else {
            continue;
        };
        let (Op::Relu(x) | Op::Relu6(x)) = graph.node(act).op else {
            continue;
        };
        let (add, norm) = match graph.node(x).op {
            Op::BatchNorm { .. } if private(x) => (None, Some(x)),
            Op::Add(a, b) if private(x) => {
                let norm = [a, b].into_iter().find(|&o| a != b && is_norm(o));
                (Some(x), norm)
            }
            _ => continue,
        };
        absorbed.extend(add.into_iter().chain(norm));
        fused.insert(
            act,
            Instr::FusedForward {
                act,
                add,
                norm,
                out,
            },
        );
    }
    program.instrs = std::mem::take(&mut program.instrs)
        .into_iter()
        .filter_map(|instr| match instr {
            Instr::Forward { node, .. } if absorbed.contains(&node) => None,
            Instr::Forward { node, .. } if fused.contains_key(&node) => fused.remove(&node),
            other => Some(other),
        })
        .collect();
}

/// Forward, backward and parameter updates for minimising `loss` (a scalar node).
pub fn training_program(graph: &Graph, loss: NodeId, extra_outputs: &[NodeId]) -> StepProgram {
    let mut outputs = vec![loss];
    outputs.extend_from_slice(extra_outputs);
    let mut program = forward_program(graph, &outputs);

    // Which nodes depend on a parameter, and so need a gradient.
    let n = graph.nodes.len();
    let mut requires_grad = vec![false; n];
    for i in 0..n {
        requires_grad[i] = match graph.nodes[i].op {
            Op::Param(_) => true,
            Op::Input | Op::Labels => false,
            _ => graph.inputs(NodeId(i)).iter().any(|x| requires_grad[x.0]),
        } && program.values.contains_key(&NodeId(i));
    }

    // Only ops between the parameters and the loss take part in the backward pass.
    let on_path = ancestors(graph, &[loss]);

    // Gradient of each node so far (summed over the consumers seen), and how many consumers
    // still have to contribute before it is complete.
    let mut pending = vec![0usize; n];
    for (i, &on) in on_path.iter().enumerate() {
        if on {
            for x in graph.inputs(NodeId(i)) {
                if requires_grad[x.0] {
                    pending[x.0] += 1;
                }
            }
        }
    }
    let mut grad: Vec<Option<VId>> = vec![None; n];

    for i in (0..=loss.0).rev() {
        let id = NodeId(i);
        // Parameters are updated as their gradients complete, below.
        if !on_path[i] || !requires_grad[i] || matches!(graph.node(id).op, Op::Param(_)) {
            continue;
        }
        let dy = if id == loss { None } else { grad[i] };
        debug_assert!(
            id == loss || pending[i] == 0,
            "consumers come later in creation order"
        );
        let inputs = graph.inputs(id);
        let is_add = matches!(graph.node(id).op, Op::Add(..));
        let mut contributions = Vec::with_capacity(inputs.len());
        for x in &inputs {
            if !requires_grad[x.0] {
                contributions.push(None);
                continue;
            }
            let c = if is_add {
                dy.expect("add is not the loss")
            } else {
                let shape = graph.shape(*x).to_vec();
                program.tensor(
                    &shape,
                    DType::F32,
                    Storage::Planned,
                    format!("grad {}", graph.node(*x).name),
                )
            };
            contributions.push(Some(c));
        }
        program.instrs.push(Instr::Backward {
            node: id,
            dy,
            grads: contributions.clone(),
        });

        for (x, c) in inputs.iter().zip(contributions) {
            let Some(c) = c else { continue };
            grad[x.0] = Some(match grad[x.0] {
                None => c,
                Some(previous) => {
                    let shape = graph.shape(*x).to_vec();
                    let sum = program.tensor(
                        &shape,
                        DType::F32,
                        Storage::Planned,
                        format!("grad {}", graph.node(*x).name),
                    );
                    program.instrs.push(Instr::Accumulate {
                        a: previous,
                        b: c,
                        out: sum,
                    });
                    sum
                }
            });
            pending[x.0] -= 1;
            // A parameter's gradient is final once its last consumer contributed.
            if pending[x.0] == 0 {
                if let Op::Param(p) = graph.node(*x).op {
                    program.instrs.push(Instr::Update {
                        param: p,
                        grad: grad[x.0].expect("just set"),
                    });
                }
            }
        }
    }
    program
}

/// Marks every node that `outputs` depend on.
fn ancestors(graph: &Graph, outputs: &[NodeId]) -> Vec<bool> {
    let mut needed = vec![false; graph.nodes.len()];
    let mut stack: Vec<NodeId> = outputs.to_vec();
    while let Some(n) = stack.pop() {
        if !needed[n.0] {
            needed[n.0] = true;
            stack.extend(graph.inputs(n));
        }
    }
    needed
}
