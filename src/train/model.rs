//! Model names on the command line (`resnet20-ce`, `resnet56`, `mobilenetv2-ce`, …) and the
//! networks they build.

use std::fmt;
use std::str::FromStr;

use crate::error::{Error, Result};
use crate::nn::mobilenet::{CePlacement, MobileNetV2Config};
use crate::nn::resnet::ResNetConfig;
use crate::nn::Model;

/// A model the runner can train.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ModelName {
    /// A CIFAR ResNet of depth 6n + 2, with CE blocks when `ce`.
    ResNet {
        /// 8, 20, 32, 44, 56, 110, …
        depth: usize,
        /// With Channel Equilibrium blocks.
        ce: bool,
    },
    /// MobileNetV2 with CIFAR strides.
    MobileNetV2 {
        /// Width multiplier in thousandths (1000 is the standard network), kept as an integer
        /// so that names compare exactly.
        width_permille: u32,
        /// Where the CE blocks go, or `None` for the plain network.
        ce: Option<CePlacement>,
    },
}

const AVAILABLE: &str = "resnetN or resnetN-ce with N = 6n + 2 (resnet8, resnet20, resnet32, \
                         resnet44, resnet56, resnet110, each with or without -ce); \
                         mobilenetv2, mobilenetv2-ce, mobilenetv2-ce-relu6, with an optional \
                         width multiplier after mobilenetv2 (mobilenetv2-w0.5-ce)";

impl FromStr for ModelName {
    type Err = Error;

    fn from_str(name: &str) -> Result<Self> {
        let unknown = || {
            Error::invalid(
                "model",
                format!("unknown model {name:?}; available: {AVAILABLE}"),
            )
        };
        let lower = name.to_ascii_lowercase();
        if let Some(rest) = lower.strip_prefix("mobilenetv2") {
            return parse_mobilenet(rest).ok_or_else(unknown);
        }
        let (base, ce) = match lower.strip_suffix("-ce") {
            Some(base) => (base, true),
            None => (lower.as_str(), false),
        };
        let depth = base
            .strip_prefix("resnet")
            .and_then(|d| d.parse::<usize>().ok())
            .ok_or_else(unknown)?;
        // Checks the depth.
        ResNetConfig::new(depth, ce)?;
        Ok(ModelName::ResNet { depth, ce })
    }
}

/// What follows `mobilenetv2`: `[-wWIDTH][-ce[-relu6]]`.
fn parse_mobilenet(rest: &str) -> Option<ModelName> {
    let (width, rest) = match rest.strip_prefix("-w") {
        Some(after) => {
            let end = after.find("-").unwrap_or(after.len());
            let width: f64 = after[..end].parse().ok()?;
            (width, &after[end..])
        }
        None => (1.0, rest),
    };
    let ce = match rest {
        "" => None,
        "-ce" => Some(CePlacement::BlockOutput),
        "-ce-relu6" => Some(CePlacement::BeforeRelu6),
        _ => return None,
    };
    let width_permille = (width * 1000.0).round();
    if !(width.is_finite() && (1.0..=8000.0).contains(&width_permille)) {
        return None;
    }
    Some(ModelName::MobileNetV2 {
        width_permille: width_permille as u32,
        ce,
    })
}

impl fmt::Display for ModelName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            ModelName::ResNet { depth, ce: true } => write!(f, "resnet{depth}-ce"),
            ModelName::ResNet { depth, ce: false } => write!(f, "resnet{depth}"),
            ModelName::MobileNetV2 { width_permille, ce } => {
                write!(f, "mobilenetv2")?;
                if width_permille != 1000 {
                    write!(f, "-w{}", width_permille as f64 / 1000.0)?;
                }
                match ce {
                    None => Ok(()),
                    Some(CePlacement::BlockOutput) => write!(f, "-ce"),
                    Some(CePlacement::BeforeRelu6) => write!(f, "-ce-relu6"),
                }
            }
        }
    }
}

/// A network ready to be built for any batch size.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Network {
    /// A CIFAR ResNet.
    ResNet(ResNetConfig),
    /// A MobileNetV2.
    MobileNetV2(MobileNetV2Config),
}

impl Network {
    /// Builds the graph for batches of `batch` images.
    pub fn build(&self, batch: usize) -> Result<Model> {
        match self {
            Network::ResNet(config) => config.build(batch),
            Network::MobileNetV2(config) => config.build(batch),
        }
    }

    /// (input channels, classes, label smoothing ε).
    pub fn io(&self) -> (usize, usize, f32) {
        match self {
            Network::ResNet(c) => (c.in_channels, c.classes, c.label_smoothing),
            Network::MobileNetV2(c) => (c.in_channels, c.classes, c.label_smoothing),
        }
    }
}

impl ModelName {
    /// The network for images of `in_channels` channels and `classes` classes, trained with
    /// label smoothing `label_smoothing`.
    pub fn config(
        &self,
        in_channels: usize,
        classes: usize,
        label_smoothing: f32,
    ) -> Result<Network> {
        match *self {
            ModelName::ResNet { depth, ce } => {
                let mut config = ResNetConfig::new(depth, ce)?;
                config.in_channels = in_channels;
                config.classes = classes;
                config.label_smoothing = label_smoothing;
                Ok(Network::ResNet(config))
            }
            ModelName::MobileNetV2 { width_permille, ce } => {
                let mut config = MobileNetV2Config::new(width_permille as f32 / 1000.0, false)?;
                if let Some(placement) = ce {
                    config = config.with_ce_placement(placement);
                }
                config.in_channels = in_channels;
                config.classes = classes;
                config.label_smoothing = label_smoothing;
                Ok(Network::MobileNetV2(config))
            }
        }
    }
}
