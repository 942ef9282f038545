//! The network as a graph: nodes are tensors produced by ops over other nodes, parameters
//! and state buffers carry PyTorch state-dict names, and shapes are inferred (and checked)
//! as the graph is built.
//!
//! `autodiff` turns a graph with a loss into the instruction list of a whole training step
//! (forward, backward with gradient accumulation, optimizer updates), `plan` assigns every
//! temporary tensor of that list to a reusable buffer, and `exec` records it on the GPU.

pub mod autodiff;
pub mod exec;
pub mod plan;
pub mod state;

use std::collections::HashMap;

use crate::error::{Error, Result};

/// A tensor value in the graph.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeId(pub usize);

/// A learnable parameter (receives a gradient and an optimizer update).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ParamId(pub usize);

/// A persistent, non-learnable buffer updated by an op (running statistics).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct StateId(pub usize);

/// How a parameter or state buffer starts.
#[derive(Clone, Debug, PartialEq)]
pub enum Init {
    /// Every element this value.
    Constant(f32),
    /// Normal(0, std²): PyTorch's kaiming_normal_ uses std = sqrt(2 / fan).
    Normal {
        /// Standard deviation.
        std: f32,
    },
    /// Uniform(−bound, bound): PyTorch's default for nn.Linear uses 1/sqrt(fan_in).
    Uniform {
        /// Half-width.
        bound: f32,
    },
    /// Identity matrices stacked: shape [G, d, d].
    Identity,
}

/// A parameter's description.
#[derive(Clone, Debug)]
pub struct ParamInfo {
    /// State-dict key, e.g. `layer1.0.conv1.weight`.
    pub name: String,
    /// Shape as PyTorch stores it.
    pub shape: Vec<usize>,
    /// Initial values.
    pub init: Init,
    /// The graph node that reads it.
    pub node: NodeId,
}

/// A state buffer's description.
#[derive(Clone, Debug)]
pub struct StateInfo {
    /// State-dict key, e.g. `bn1.running_var`.
    pub name: String,
    /// Shape as PyTorch stores it.
    pub shape: Vec<usize>,
    /// Initial values.
    pub init: Init,
}

pub use crate::kernels::conv::Conv2d;

pub use crate::kernels::pool::MaxPool2d;

/// A batch-norm layer's parameters and state.
#[derive(Clone, Debug)]
pub struct BatchNormLayer {
    /// γ, `PREFIX.weight`.
    pub weight: ParamId,
    /// β, `PREFIX.bias`.
    pub bias: ParamId,
    /// `PREFIX.running_mean`.
    pub running_mean: StateId,
    /// `PREFIX.running_var`.
    pub running_var: StateId,
    /// The state-dict prefix, e.g. `layer1.0.bn1`; `num_batches_tracked` lives under it.
    pub prefix: String,
    /// Momentum of the running statistics (PyTorch: 0.1).
    pub momentum: f32,
    /// Added to the variance (PyTorch: 1e-5).
    pub eps: f32,
}

pub use crate::kernels::ce::CeOptions;

/// The group size CE uses for `channels`: the requested one halved until it divides them.
pub fn ce_group_size(options: &CeOptions, channels: usize) -> usize {
    let mut d = options.group_size.max(1);
    while d > 1 && !channels.is_multiple_of(d) {
        d /= 2;
    }
    d
}

/// A CE block's parameters and state (PyTorch names under its prefix).
#[derive(Clone, Debug)]
pub struct CeLayer {
    /// θ of the gate λ = sigmoid(θ), `x_weight` [1].
    pub theta: ParamId,
    /// `AR.fc.0.weight` [C/r, C].
    pub w1: ParamId,
    /// `AR.fc.1.weight` [C/r]: LayerNorm γ.
    pub ln_weight: ParamId,
    /// `AR.fc.1.bias` [C/r]: LayerNorm β.
    pub ln_bias: ParamId,
    /// `AR.fc.3.weight` [C, C/r].
    pub w2: ParamId,
    /// `running_mean` [G, d, 1].
    pub running_mean: StateId,
    /// `running_wm` [G, d, d].
    pub running_wm: StateId,
    /// `AR.running_scale` [1].
    pub running_scale: StateId,
    /// Options.
    pub options: CeOptions,
    /// The state-dict prefix.
    pub prefix: String,
}

/// What a node computes.
#[derive(Clone, Debug)]
pub enum Op {
    /// The batch of images, written by the host each step.
    Input,
    /// Class labels (u32), written by the host each step.
    Labels,
    /// A learnable parameter.
    Param(ParamId),
    /// Convolution, PyTorch's `F.conv2d`.
    Conv2d {
        /// [N, Cin, H, W]
        x: NodeId,
        /// [Cout, Cin/groups, KH, KW]
        weight: NodeId,
        /// [Cout]
        bias: Option<NodeId>,
        /// Geometry.
        geometry: Conv2d,
    },
    /// Batch normalisation with batch statistics in training and running ones in evaluation.
    BatchNorm {
        /// [N, C, H, W]
        x: NodeId,
        /// Index into [`Graph::batch_norms`].
        layer: usize,
    },
    /// Channel Equilibrium block.
    ChannelEquilibrium {
        /// [N, C, H, W]
        x: NodeId,
        /// Index into [`Graph::ce_layers`].
        layer: usize,
    },
    /// max(x, 0)
    Relu(NodeId),
    /// min(max(x, 0), 6)
    Relu6(NodeId),
    /// a + b, equal shapes.
    Add(NodeId, NodeId),
    /// [N, C, H, W] → [N, C]
    GlobalAvgPool(NodeId),
    /// Max pooling.
    MaxPool2d {
        /// [N, C, H, W]
        x: NodeId,
        /// Geometry.
        geometry: MaxPool2d,
    },
    /// y = x·Wᵀ + b
    Linear {
        /// [N, in]
        x: NodeId,
        /// [out, in]
        weight: NodeId,
        /// [out]
        bias: Option<NodeId>,
    },
    /// Mean softmax cross-entropy of logits against labels: a scalar loss.
    CrossEntropy {
        /// [N, K]
        logits: NodeId,
        /// [N] u32
        labels: NodeId,
        /// Label smoothing ε.
        smoothing: f32,
    },
}

/// One node: its op, output shape and a name for messages.
#[derive(Clone, Debug)]
pub struct Node {
    /// What it computes.
    pub op: Op,
    /// Its output shape.
    pub shape: Vec<usize>,
    /// A readable name (the layer's prefix where there is one).
    pub name: String,
}

/// A network under construction, then the description every later stage reads.
#[derive(Clone, Debug, Default)]
pub struct Graph {
    /// Nodes in creation order, which is a topological order.
    pub nodes: Vec<Node>,
    /// Learnable parameters.
    pub params: Vec<ParamInfo>,
    /// Running statistics and other persistent buffers.
    pub states: Vec<StateInfo>,
    /// Batch-norm layers referenced by `Op::BatchNorm`.
    pub batch_norms: Vec<BatchNormLayer>,
    /// CE blocks referenced by `Op::ChannelEquilibrium`.
    pub ce_layers: Vec<CeLayer>,
    names: HashMap<String, ()>,
}

impl Graph {
    /// An empty graph.
    pub fn new() -> Self {
        Self::default()
    }

    /// The node's output shape.
    pub fn shape(&self, node: NodeId) -> &[usize] {
        &self.nodes[node.0].shape
    }

    /// The node's description.
    pub fn node(&self, node: NodeId) -> &Node {
        &self.nodes[node.0]
    }

    fn push(&mut self, op: Op, shape: Vec<usize>, name: impl Into<String>) -> NodeId {
        self.nodes.push(Node {
            op,
            shape,
            name: name.into(),
        });
        NodeId(self.nodes.len() - 1)
    }

    fn claim_name(&mut self, name: &str) -> Result<()> {
        if self.names.insert(name.to_string(), ()).is_some() {
            return Err(Error::invalid(
                "graph",
                format!("the state-dict key {name:?} is used twice"),
            ));
        }
        Ok(())
    }

    /// The batch of images, [N, C, H, W].
    pub fn input(&mut self, shape: &[usize]) -> NodeId {
        self.push(Op::Input, shape.to_vec(), "input")
    }

    /// The batch's labels, [N].
    pub fn labels(&mut self, batch: usize) -> NodeId {
        self.push(Op::Labels, vec![batch], "labels")
    }

    /// Declares a learnable parameter named `name` (its state-dict key).
    pub fn param(&mut self, name: &str, shape: &[usize], init: Init) -> Result<NodeId> {
        self.claim_name(name)?;
        let id = ParamId(self.params.len());
        let node = self.push(Op::Param(id), shape.to_vec(), name);
        self.params.push(ParamInfo {
            name: name.to_string(),
            shape: shape.to_vec(),
            init,
            node,
        });
        Ok(node)
    }

    /// Declares a persistent state buffer named `name`.
    pub fn state(&mut self, name: &str, shape: &[usize], init: Init) -> Result<StateId> {
        self.claim_name(name)?;
        self.states.push(StateInfo {
            name: name.to_string(),
            shape: shape.to_vec(),
            init,
        });
        Ok(StateId(self.states.len() - 1))
    }

    fn param_id(&self, node: NodeId) -> ParamId {
        match self.nodes[node.0].op {
            Op::Param(p) => p,
            _ => unreachable!("layer parameters are Param nodes"),
        }
    }

    fn nchw(&self, op: &'static str, node: NodeId) -> Result<[usize; 4]> {
        match *self.shape(node) {
            [n, c, h, w] => Ok([n, c, h, w]),
            ref other => Err(Error::invalid(
                op,
                format!(
                    "node {:?} must be 4-D [N, C, H, W], got {other:?}",
                    self.node(node).name
                ),
            )),
        }
    }

    /// A convolution; `weight` is [Cout, Cin/groups, KH, KW], `bias` [Cout].
    pub fn conv2d(
        &mut self,
        x: NodeId,
        weight: NodeId,
        bias: Option<NodeId>,
        geometry: Conv2d,
    ) -> Result<NodeId> {
        let [n, cin, h, w] = self.nchw("conv2d", x)?;
        let name = self
            .node(weight)
            .name
            .trim_end_matches(".weight")
            .to_string();
        let &[cout, cin_g, kh, kw] = self.shape(weight) else {
            return Err(Error::invalid(
                "conv2d",
                format!("{name}: weight must be 4-D, got {:?}", self.shape(weight)),
            ));
        };
        let groups = geometry.groups.max(1);
        if cin % groups != 0 || cout % groups != 0 || cin / groups != cin_g {
            return Err(Error::shape(
                "conv2d",
                format!("{name}: input channels {cin} with groups {groups} against weight"),
                self.shape(weight),
                &[cout, cin / groups, kh, kw],
            ));
        }
        if let Some(b) = bias {
            if self.shape(b) != [cout] {
                return Err(Error::shape(
                    "conv2d",
                    format!("{name}: bias"),
                    self.shape(b),
                    &[cout],
                ));
            }
        }
        let out = geometry
            .output_shape(&[n, cin, h, w], self.shape(weight))
            .map_err(|e| Error::invalid("conv2d", format!("{name}: {e}")))?;
        Ok(self.push(
            Op::Conv2d {
                x,
                weight,
                bias,
                geometry,
            },
            out.to_vec(),
            name,
        ))
    }

    /// Batch normalisation over the channels of `x`, with PyTorch's parameters and state
    /// under `prefix` (`weight`, `bias`, `running_mean`, `running_var`,
    /// `num_batches_tracked`).
    pub fn batch_norm(&mut self, x: NodeId, prefix: &str) -> Result<NodeId> {
        let [_, c, _, _] = self.nchw("batchnorm2d", x)?;
        let weight = self.param(&format!("{prefix}.weight"), &[c], Init::Constant(1.0))?;
        let bias = self.param(&format!("{prefix}.bias"), &[c], Init::Constant(0.0))?;
        let running_mean =
            self.state(&format!("{prefix}.running_mean"), &[c], Init::Constant(0.0))?;
        let running_var =
            self.state(&format!("{prefix}.running_var"), &[c], Init::Constant(1.0))?;
        self.claim_name(&format!("{prefix}.num_batches_tracked"))?;
        let layer = BatchNormLayer {
            weight: self.param_id(weight),
            bias: self.param_id(bias),
            running_mean,
            running_var,
            prefix: prefix.to_string(),
            momentum: 0.1,
            eps: 1e-5,
        };
        self.batch_norms.push(layer);
        let shape = self.shape(x).to_vec();
        Ok(self.push(
            Op::BatchNorm {
                x,
                layer: self.batch_norms.len() - 1,
            },
            shape,
            prefix,
        ))
    }

    /// A Channel Equilibrium block over `x`, parameters and state under `prefix`.
    pub fn channel_equilibrium(
        &mut self,
        x: NodeId,
        prefix: &str,
        options: CeOptions,
    ) -> Result<NodeId> {
        let [_, c, h, w] = self.nchw("ce", x)?;
        let r = options.reduction.max(1);
        if c < r || c % r != 0 {
            return Err(Error::invalid(
                "ce",
                format!(
                    "{prefix}: {c} channels cannot feed the reweighting MLP \
                     (C must be a multiple of {r}, at least {r})"
                ),
            ));
        }
        if h * w < 2 {
            return Err(Error::invalid(
                "ce",
                format!(
                    "{prefix}: a {h}×{w} plane has no unbiased spatial variance \
                     (H·W must be at least 2)"
                ),
            ));
        }
        let d = ce_group_size(&options, c);
        let g = c / d;
        let hidden = c / r;
        let theta = self.param(&format!("{prefix}.x_weight"), &[1], Init::Constant(0.0))?;
        let w1 = self.param(
            &format!("{prefix}.AR.fc.0.weight"),
            &[hidden, c],
            linear_init(c),
        )?;
        let ln_weight = self.param(
            &format!("{prefix}.AR.fc.1.weight"),
            &[hidden],
            Init::Constant(1.0),
        )?;
        let ln_bias = self.param(
            &format!("{prefix}.AR.fc.1.bias"),
            &[hidden],
            Init::Constant(0.0),
        )?;
        let w2 = self.param(
            &format!("{prefix}.AR.fc.3.weight"),
            &[c, hidden],
            linear_init(hidden),
        )?;
        let running_mean = self.state(
            &format!("{prefix}.running_mean"),
            &[g, d, 1],
            Init::Constant(0.0),
        )?;
        let running_wm = self.state(&format!("{prefix}.running_wm"), &[g, d, d], Init::Identity)?;
        let running_scale = self.state(
            &format!("{prefix}.AR.running_scale"),
            &[1],
            Init::Constant(0.0),
        )?;
        let layer = CeLayer {
            theta: self.param_id(theta),
            w1: self.param_id(w1),
            ln_weight: self.param_id(ln_weight),
            ln_bias: self.param_id(ln_bias),
            w2: self.param_id(w2),
            running_mean,
            running_wm,
            running_scale,
            options: CeOptions {
                group_size: d,
                ..options
            },
            prefix: prefix.to_string(),
        };
        self.ce_layers.push(layer);
        let shape = self.shape(x).to_vec();
        Ok(self.push(
            Op::ChannelEquilibrium {
                x,
                layer: self.ce_layers.len() - 1,
            },
            shape,
            prefix,
        ))
    }

    /// max(x, 0)
    pub fn relu(&mut self, x: NodeId) -> NodeId {
        let shape = self.shape(x).to_vec();
        let name = format!("{}.relu", self.node(x).name);
        self.push(Op::Relu(x), shape, name)
    }

    /// min(max(x, 0), 6)
    pub fn relu6(&mut self, x: NodeId) -> NodeId {
        let shape = self.shape(x).to_vec();
        let name = format!("{}.relu6", self.node(x).name);
        self.push(Op::Relu6(x), shape, name)
    }

    /// a + b (a residual connection); the shapes must be equal.
    pub fn add(&mut self, a: NodeId, b: NodeId) -> Result<NodeId> {
        if self.shape(a) != self.shape(b) {
            return Err(Error::shape(
                "add",
                format!("{} + {}", self.node(a).name, self.node(b).name),
                self.shape(b),
                self.shape(a),
            ));
        }
        let shape = self.shape(a).to_vec();
        let name = format!("{}.add", self.node(a).name);
        Ok(self.push(Op::Add(a, b), shape, name))
    }

    /// Mean over each channel's plane: [N, C, H, W] → [N, C].
    pub fn global_avg_pool(&mut self, x: NodeId) -> Result<NodeId> {
        let [n, c, _, _] = self.nchw("global_avg_pool", x)?;
        Ok(self.push(Op::GlobalAvgPool(x), vec![n, c], "avgpool"))
    }

    /// Max pooling.
    pub fn max_pool2d(&mut self, x: NodeId, geometry: MaxPool2d) -> Result<NodeId> {
        let dims = self.nchw("max_pool2d", x)?;
        let out = geometry.output_shape(dims)?;
        Ok(self.push(Op::MaxPool2d { x, geometry }, out.to_vec(), "maxpool"))
    }

    /// y = x·Wᵀ + b with `weight` [out, in] and `bias` [out].
    pub fn linear(&mut self, x: NodeId, weight: NodeId, bias: Option<NodeId>) -> Result<NodeId> {
        let name = self
            .node(weight)
            .name
            .trim_end_matches(".weight")
            .to_string();
        let &[n, features] = self.shape(x) else {
            return Err(Error::invalid(
                "linear",
                format!("{name}: input must be 2-D [N, in], got {:?}", self.shape(x)),
            ));
        };
        let &[out, inputs] = self.shape(weight) else {
            return Err(Error::invalid(
                "linear",
                format!("{name}: weight must be 2-D, got {:?}", self.shape(weight)),
            ));
        };
        if inputs != features {
            return Err(Error::shape(
                "linear",
                format!("{name}: weight for {features} input features"),
                self.shape(weight),
                &[out, features],
            ));
        }
        if let Some(b) = bias {
            if self.shape(b) != [out] {
                return Err(Error::shape(
                    "linear",
                    format!("{name}: bias"),
                    self.shape(b),
                    &[out],
                ));
            }
        }
        Ok(self.push(Op::Linear { x, weight, bias }, vec![n, out], name))
    }

    /// Mean softmax cross-entropy with label smoothing `smoothing` (0 for none).
    pub fn cross_entropy(
        &mut self,
        logits: NodeId,
        labels: NodeId,
        smoothing: f32,
    ) -> Result<NodeId> {
        let &[n, _] = self.shape(logits) else {
            return Err(Error::invalid(
                "cross_entropy",
                format!("logits must be 2-D [N, K], got {:?}", self.shape(logits)),
            ));
        };
        if self.shape(labels) != [n] {
            return Err(Error::shape(
                "cross_entropy",
                "labels",
                self.shape(labels),
                &[n],
            ));
        }
        if !(0.0..1.0).contains(&smoothing) {
            return Err(Error::invalid(
                "cross_entropy",
                format!("label smoothing must be in [0, 1), got {smoothing}"),
            ));
        }
        Ok(self.push(
            Op::CrossEntropy {
                logits,
                labels,
                smoothing,
            },
            vec![1],
            "loss",
        ))
    }

    /// The nodes each node reads, in order.
    pub fn inputs(&self, node: NodeId) -> Vec<NodeId> {
        match &self.nodes[node.0].op {
            Op::Input | Op::Labels | Op::Param(_) => vec![],
            Op::Conv2d {
                x, weight, bias, ..
            }
            | Op::Linear { x, weight, bias } => {
                let mut v = vec![*x, *weight];
                v.extend(bias);
                v
            }
            Op::BatchNorm { x, layer } => {
                let l = &self.batch_norms[*layer];
                vec![*x, self.params[l.weight.0].node, self.params[l.bias.0].node]
            }
            Op::ChannelEquilibrium { x, layer } => {
                let l = &self.ce_layers[*layer];
                let mut v = vec![*x];
                v.extend(
                    [l.theta, l.w1, l.ln_weight, l.ln_bias, l.w2].map(|p| self.params[p.0].node),
                );
                v
            }
            Op::Relu(x) | Op::Relu6(x) | Op::GlobalAvgPool(x) | Op::MaxPool2d { x, .. } => vec![*x],
            Op::Add(a, b) => vec![*a, *b],
            Op::CrossEntropy { logits, labels, .. } => vec![*logits, *labels],
        }
    }

    /// Total number of learnable values.
    pub fn parameter_count(&self) -> usize {
        self.params
            .iter()
            .map(|p| p.shape.iter().product::<usize>())
            .sum()
    }
}

/// PyTorch's default nn.Linear initialisation: U(−1/√fan_in, 1/√fan_in).
pub fn linear_init(fan_in: usize) -> Init {
    Init::Uniform {
        bound: 1.0 / (fan_in.max(1) as f32).sqrt(),
    }
}

/// PyTorch's kaiming_normal_(mode="fan_out", nonlinearity="relu") for a conv weight
/// [Cout, Cin/g, KH, KW]: std = sqrt(2 / (Cout·KH·KW)).
pub fn kaiming_conv_init(shape: &[usize]) -> Init {
    let fan_out = shape[0] * shape[2..].iter().product::<usize>();
    Init::Normal {
        std: (2.0 / fan_out.max(1) as f32).sqrt(),
    }
}
