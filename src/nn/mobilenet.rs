//! MobileNetV2 (Sandler et al., 2018) for 32×32 images, with or without CE blocks, in
//! torchvision's layout so that state dicts load into `torchvision.models.mobilenet_v2`
//! (for CE-free models):
//!
//! - `features.0`: a 3×3 stem convolution (`features.0.0`), batch norm (`features.0.1`) and
//!   ReLU6;
//! - `features.1` … `features.17`: inverted residual blocks `features.N.conv.*`. With an
//!   expansion factor t ≠ 1: a 1×1 expansion (`conv.0.0`, BN `conv.0.1`, ReLU6), a 3×3
//!   depthwise convolution (`conv.1.0`, `conv.1.1`, ReLU6), a linear 1×1 projection
//!   (`conv.2`) and its BN (`conv.3`). With t = 1 the expansion is absent and the indices
//!   shift down by one (`conv.0.0`, `conv.0.1`, `conv.1`, `conv.2`). A block whose stride is 1
//!   and whose input and output widths agree adds its input to its output;
//! - `features.18`: a 1×1 convolution to 1280 channels (`features.18.0`), BN
//!   (`features.18.1`) and ReLU6;
//! - global average pooling and `classifier.1`, a linear layer (torchvision's `classifier.0`
//!   is a dropout layer with no state).
//!
//! CIFAR strides: torchvision's ImageNet network has a stride-2 stem and stage strides
//! (1, 2, 2, 2, 1, 2, 1), which leaves 1×1 feature maps from a 32×32 image. The common CIFAR
//! variant keeps the stem at stride 1 and the second stage at stride 1, (1, 1, 2, 2, 1, 2, 1):
//! 32×32 through the first two stages, 4×4 at the end. Strides do not change the parameters.
//!
//! CE blocks (state-dict names of the released CE code under each prefix):
//! - [`CePlacement::BlockOutput`] (the CE paper's choice): one per inverted residual block,
//!   after its last BN and before the residual addition, named `features.N.ce`;
//! - [`CePlacement::BeforeRelu6`]: one after every BN that a ReLU6 follows, named after the
//!   `Conv2dNormActivation` it sits in: `features.0.ce` (stem), `features.N.conv.K.ce`
//!   (expansion and depthwise stages of block N), `features.18.ce` (last 1×1).
//!
//! Limitation: torchvision's dropout (p = 0.2) before the classifier is omitted, as the graph
//! has no dropout op: evaluation is identical to torchvision's, but training sees the
//! classifier's input undropped.

use super::{conv, Model};
use crate::error::{Error, Result};
use crate::graph::{CeOptions, Conv2d, Graph, Init, NodeId};

/// Expansion factor t, output channels c (before the width multiplier) and repeats n of each
/// stage, as in the paper's Table 2 and torchvision.
const STAGES: [(usize, usize, usize); 7] = [
    (1, 16, 1),
    (6, 24, 2),
    (6, 32, 3),
    (6, 64, 4),
    (6, 96, 3),
    (6, 160, 3),
    (6, 320, 1),
];
/// Stem channels before the width multiplier.
const STEM_CHANNELS: usize = 32;
/// Channels of the last 1×1 convolution (never narrowed below this).
const LAST_CHANNELS: usize = 1280;
/// Channel counts are rounded to multiples of this.
const ROUND_TO: usize = 8;

/// Where CE blocks go in a MobileNetV2.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CePlacement {
    /// After the last BN of each inverted residual block, before the residual addition
    /// (`features.N.ce`): 17 blocks.
    BlockOutput,
    /// After every BN followed by a ReLU6 (stem, expansions, depthwise convolutions and the
    /// last 1×1): 35 blocks at the standard layout.
    BeforeRelu6,
}

/// Which MobileNetV2.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct MobileNetV2Config {
    /// Width multiplier α: every stage's channels are scaled by it and rounded to a multiple
    /// of 8 as torchvision's `_make_divisible` does (the last 1×1 keeps 1280 for α ≤ 1).
    pub width: f32,
    /// CE options, or `None` for the plain network.
    pub ce: Option<CeOptions>,
    /// Where the CE blocks go (ignored without CE).
    pub ce_placement: CePlacement,
    /// Stride of the stem convolution: 1 for CIFAR, 2 for ImageNet.
    pub stem_stride: usize,
    /// Stride of the first block of each of the seven stages.
    pub stage_strides: [usize; 7],
    /// Input channels (3 for CIFAR).
    pub in_channels: usize,
    /// Number of classes.
    pub classes: usize,
    /// Label smoothing ε of the cross-entropy loss (0 for none).
    pub label_smoothing: f32,
}

impl MobileNetV2Config {
    /// The CIFAR-10 network at width multiplier `width`, with CE after each block's last BN
    /// when `ce` is set.
    pub fn new(width: f32, ce: bool) -> Result<Self> {
        if !(width.is_finite() && width > 0.0) {
            return Err(Error::invalid(
                "mobilenetv2",
                format!("width multiplier must be positive and finite, got {width}"),
            ));
        }
        Ok(MobileNetV2Config {
            width,
            ce: ce.then(CeOptions::default),
            ce_placement: CePlacement::BlockOutput,
            stem_stride: 1,
            stage_strides: [1, 1, 2, 2, 1, 2, 1],
            in_channels: 3,
            classes: 10,
            label_smoothing: 0.0,
        })
    }

    /// The same network with CE blocks placed as `placement` says (CE is turned on with
    /// default options if it was off).
    pub fn with_ce_placement(self, placement: CePlacement) -> Self {
        MobileNetV2Config {
            ce: Some(self.ce.unwrap_or_default()),
            ce_placement: placement,
            ..self
        }
    }

    /// The same network with torchvision's ImageNet strides (stem 2, stages
    /// (1, 2, 2, 2, 1, 2, 1)).
    pub fn with_imagenet_strides(self) -> Self {
        MobileNetV2Config {
            stem_stride: 2,
            stage_strides: [1, 2, 2, 2, 1, 2, 1],
            ..self
        }
    }

    /// The model's name: `mobilenetv2`, `mobilenetv2-ce`, with `-w0.5` after `mobilenetv2`
    /// for other widths and `-relu6` after `-ce` for [`CePlacement::BeforeRelu6`].
    pub fn name(&self) -> String {
        let mut name = "mobilenetv2".to_string();
        if self.width != 1.0 {
            name += &format!("-w{}", self.width);
        }
        if self.ce.is_some() {
            name += "-ce";
            if self.ce_placement == CePlacement::BeforeRelu6 {
                name += "-relu6";
            }
        }
        name
    }

    /// Channels of a stage of nominal width `channels` at this width multiplier.
    pub fn channels(&self, channels: usize) -> usize {
        make_divisible(channels as f64 * self.width as f64, ROUND_TO)
    }

    /// Builds the network for batches of `batch` 32×32 images.
    pub fn build(&self, batch: usize) -> Result<Model> {
        if self.stem_stride == 0 || self.stage_strides.contains(&0) {
            return Err(Error::invalid(
                "mobilenetv2",
                format!(
                    "strides must be at least 1, got stem {} and stages {:?}",
                    self.stem_stride, self.stage_strides
                ),
            ));
        }
        let mut g = Graph::new();
        let input = g.input(&[batch, self.in_channels, 32, 32]);
        let labels = g.labels(batch);

        let stem = self.channels(STEM_CHANNELS);
        let mut x = self.conv_bn_relu6(&mut g, input, "features.0", stem, 3, self.stem_stride)?;
        let mut index = 1;
        for (&(expansion, channels, repeats), &stride) in STAGES.iter().zip(&self.stage_strides) {
            let out = self.channels(channels);
            for repeat in 0..repeats {
                let stride = if repeat == 0 { stride } else { 1 };
                let prefix = format!("features.{index}");
                x = self.inverted_residual(&mut g, x, &prefix, out, stride, expansion)?;
                index += 1;
            }
        }
        let last = make_divisible(LAST_CHANNELS as f64 * self.width.max(1.0) as f64, ROUND_TO);
        x = self.conv_bn_relu6(&mut g, x, &format!("features.{index}"), last, 1, 1)?;

        let pooled = g.global_avg_pool(x)?;
        let logits = classifier(&mut g, pooled, "classifier.1", self.classes)?;
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

    /// torchvision's `Conv2dNormActivation` with ReLU6 under `prefix` (`.0` conv, `.1` BN),
    /// depthwise when `out` is `None`; CE after the BN (`{prefix}.ce`) when placed there.
    fn conv_bn_relu6(
        &self,
        g: &mut Graph,
        x: NodeId,
        prefix: &str,
        out: usize,
        kernel: usize,
        stride: usize,
    ) -> Result<NodeId> {
        let padding = (kernel - 1) / 2;
        let y = conv(
            g,
            x,
            &format!("{prefix}.0"),
            out,
            kernel,
            Conv2d::new(stride, padding),
        )?;
        self.bn_relu6(g, y, prefix)
    }

    fn depthwise_bn_relu6(
        &self,
        g: &mut Graph,
        x: NodeId,
        prefix: &str,
        stride: usize,
    ) -> Result<NodeId> {
        let channels = g.shape(x)[1];
        let geometry = Conv2d::depthwise(channels, stride, 1);
        let y = conv(g, x, &format!("{prefix}.0"), channels, 3, geometry)?;
        self.bn_relu6(g, y, prefix)
    }

    fn bn_relu6(&self, g: &mut Graph, x: NodeId, prefix: &str) -> Result<NodeId> {
        let mut y = g.batch_norm(x, &format!("{prefix}.1"))?;
        if let (Some(options), CePlacement::BeforeRelu6) = (self.ce, self.ce_placement) {
            y = g.channel_equilibrium(y, &format!("{prefix}.ce"), options)?;
        }
        Ok(g.relu6(y))
    }

    fn inverted_residual(
        &self,
        g: &mut Graph,
        x: NodeId,
        prefix: &str,
        out: usize,
        stride: usize,
        expansion: usize,
    ) -> Result<NodeId> {
        let cin = g.shape(x)[1];
        let hidden = cin * expansion;
        let mut y = x;
        let mut stage = 0;
        if expansion != 1 {
            let at = format!("{prefix}.conv.{stage}");
            y = self.conv_bn_relu6(g, y, &at, hidden, 1, 1)?;
            stage += 1;
        }
        y = self.depthwise_bn_relu6(g, y, &format!("{prefix}.conv.{stage}"), stride)?;
        stage += 1;
        let project = format!("{prefix}.conv.{stage}");
        y = conv(g, y, &project, out, 1, Conv2d::new(1, 0))?;
        y = g.batch_norm(y, &format!("{prefix}.conv.{}", stage + 1))?;
        if let (Some(options), CePlacement::BlockOutput) = (self.ce, self.ce_placement) {
            y = g.channel_equilibrium(y, &format!("{prefix}.ce"), options)?;
        }
        if stride == 1 && cin == out {
            y = g.add(y, x)?;
        }
        Ok(y)
    }
}

/// torchvision's `_make_divisible`: `value` rounded to the nearest multiple of `divisor`, at
/// least `divisor`, and never more than 10 % below `value`.
pub fn make_divisible(value: f64, divisor: usize) -> usize {
    let d = divisor as f64;
    let rounded = (((value + d / 2.0) / d).floor() * d).max(d);
    if rounded < 0.9 * value {
        (rounded + d) as usize
    } else {
        rounded as usize
    }
}

/// The classifier with torchvision's MobileNetV2 initialisation: weight N(0, 0.01²), bias 0.
fn classifier(g: &mut Graph, x: NodeId, prefix: &str, classes: usize) -> Result<NodeId> {
    let features = g.shape(x)[1];
    let w = g.param(
        &format!("{prefix}.weight"),
        &[classes, features],
        Init::Normal { std: 0.01 },
    )?;
    let b = g.param(&format!("{prefix}.bias"), &[classes], Init::Constant(0.0))?;
    g.linear(x, w, Some(b))
}
