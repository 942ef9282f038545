//! CIFAR ResNet-(6n+2) (He et al., 2016, section 4.2), with or without CE blocks:
//! a 3×3 stem to 16 channels, three stages of n BasicBlocks at widths 16, 32, 64 (the first
//! block of stages 2 and 3 halves the resolution and projects its shortcut with a 1×1
//! convolution and batch norm), global average pooling and a linear classifier.

use super::{conv, linear, Model};
use crate::error::{Error, Result};
use crate::graph::{CeOptions, Conv2d, Graph, NodeId};

/// Which CIFAR ResNet.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ResNetConfig {
    /// Blocks per stage: depth = 6n + 2 (1 → ResNet-8, 3 → ResNet-20, … 18 → ResNet-110).
    pub blocks_per_stage: usize,
    /// Put a CE block after the stem's BN and after each block's second BN.
    pub ce: Option<CeOptions>,
    /// Input channels (3 for CIFAR, 1 for digit sets).
    pub in_channels: usize,
    /// Number of classes.
    pub classes: usize,
    /// Label smoothing ε of the cross-entropy loss (0 for none).
    pub label_smoothing: f32,
}

impl ResNetConfig {
    /// ResNet of `depth` (8, 20, 32, 44, 56, 110, …) with or without CE, for CIFAR-10.
    pub fn new(depth: usize, ce: bool) -> Result<Self> {
        if depth < 8 || !(depth - 2).is_multiple_of(6) {
            return Err(Error::invalid(
                "resnet",
                format!("depth {depth} is not 6n + 2 for n ≥ 1 (8, 20, 32, 44, 56, 110)"),
            ));
        }
        Ok(ResNetConfig {
            blocks_per_stage: (depth - 2) / 6,
            ce: ce.then(CeOptions::default),
            in_channels: 3,
            classes: 10,
            label_smoothing: 0.0,
        })
    }

    /// The model's name, e.g. `resnet20-ce`.
    pub fn name(&self) -> String {
        let depth = 6 * self.blocks_per_stage + 2;
        if self.ce.is_some() {
            format!("resnet{depth}-ce")
        } else {
            format!("resnet{depth}")
        }
    }

    /// Builds the network for batches of `batch` 32×32 images.
    pub fn build(&self, batch: usize) -> Result<Model> {
        let mut g = Graph::new();
        let input = g.input(&[batch, self.in_channels, 32, 32]);
        let labels = g.labels(batch);
        let same = Conv2d::new(1, 1);

        let mut x = conv(&mut g, input, "conv1", 16, 3, same)?;
        x = g.batch_norm(x, "bn1")?;
        if let Some(options) = self.ce {
            x = g.channel_equilibrium(x, "ce", options)?;
        }
        x = g.relu(x);

        for (stage, width) in [16usize, 32, 64].into_iter().enumerate() {
            for block in 0..self.blocks_per_stage {
                let stride = if stage > 0 && block == 0 { 2 } else { 1 };
                x = self.basic_block(
                    &mut g,
                    x,
                    &format!("layer{}.{block}", stage + 1),
                    width,
                    stride,
                )?;
            }
        }

        let pooled = g.global_avg_pool(x)?;
        let logits = linear(&mut g, pooled, "fc", self.classes)?;
        let loss = g.cross_entropy(logits, labels, self.label_smoothing)?;
        Ok(Model {
            name: self.name(),
            graph: g,
            input,
            labels,
            logits,
            loss,
        })
    }

    fn basic_block(
        &self,
        g: &mut Graph,
        x: NodeId,
        prefix: &str,
        width: usize,
        stride: usize,
    ) -> Result<NodeId> {
        let cin = g.shape(x)[1];
        let mut y = conv(
            g,
            x,
            &format!("{prefix}.conv1"),
            width,
            3,
            Conv2d::new(stride, 1),
        )?;
        y = g.batch_norm(y, &format!("{prefix}.bn1"))?;
        y = g.relu(y);
        y = conv(
            g,
            y,
            &format!("{prefix}.conv2"),
            width,
            3,
            Conv2d::new(1, 1),
        )?;
        y = g.batch_norm(y, &format!("{prefix}.bn2"))?;
        if let Some(options) = self.ce {
            y = g.channel_equilibrium(y, &format!("{prefix}.ce"), options)?;
        }
        let shortcut = if stride != 1 || cin != width {
            let s = conv(
                g,
                x,
                &format!("{prefix}.downsample.0"),
                width,
                1,
                Conv2d::new(stride, 0),
            )?;
            g.batch_norm(s, &format!("{prefix}.downsample.1"))?
        } else {
            x
        };
        let sum = g.add(y, shortcut)?;
        Ok(g.relu(sum))
    }
}
