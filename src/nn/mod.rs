//! Model families as graph builders, with PyTorch's state-dict names.

pub mod mobilenet;
pub mod resnet;

use crate::error::Result;
use crate::graph::{kaiming_conv_init, linear_init, Conv2d, Graph, NodeId};

/// A network built for one batch size: its graph and the nodes a trainer needs.
#[derive(Clone, Debug)]
pub struct Model {
    /// A short name such as `resnet20-ce`.
    pub name: String,
    /// The graph.
    pub graph: Graph,
    /// The images, [N, C, 32, 32].
    pub input: NodeId,
    /// The labels, [N].
    pub labels: NodeId,
    /// The class scores, [N, classes].
    pub logits: NodeId,
    /// The mean cross-entropy loss.
    pub loss: NodeId,
}

/// A bias-free convolution with a Kaiming-normal (fan_out, ReLU) weight named `{prefix}.weight`.
pub fn conv(
    g: &mut Graph,
    x: NodeId,
    prefix: &str,
    out: usize,
    kernel: usize,
    geometry: Conv2d,
) -> Result<NodeId> {
    let cin = g.shape(x).get(1).copied().unwrap_or(0);
    let shape = [out, cin / geometry.groups.max(1), kernel, kernel];
    let w = g.param(
        &format!("{prefix}.weight"),
        &shape,
        kaiming_conv_init(&shape),
    )?;
    g.conv2d(x, w, None, geometry)
}

/// A linear layer with PyTorch's default initialisation, `{prefix}.weight` and `{prefix}.bias`.
pub fn linear(g: &mut Graph, x: NodeId, prefix: &str, out: usize) -> Result<NodeId> {
    let features = g.shape(x).get(1).copied().unwrap_or(0);
    let w = g.param(
        &format!("{prefix}.weight"),
        &[out, features],
        linear_init(features),
    )?;
    let b = g.param(&format!("{prefix}.bias"), &[out], linear_init(features))?;
    g.linear(x, w, Some(b))
}
