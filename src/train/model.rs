//! Model names on the command line (`resnet20-ce`, `resnet56`, …) and the networks they
//! build.

use std::fmt;
use std::str::FromStr;

use crate::error::{Error, Result};
use crate::nn::resnet::ResNetConfig;

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
}

const AVAILABLE: &str = "resnetN or resnetN-ce with N = 6n + 2 (resnet8, resnet20, resnet32, \
                         resnet44, resnet56, resnet110, each with or without -ce)";

impl FromStr for ModelName {
    type Err = Error;

    fn from_str(name: &str) -> Result<Self> {
        let lower = name.to_ascii_lowercase();
        let (base, ce) = match lower.strip_suffix("-ce") {
            Some(base) => (base, true),
            None => (lower.as_str(), false),
        };
        if base.starts_with("mobilenet") {
            return Err(Error::invalid(
                "model",
                format!(
                    "{name}: MobileNet models are not built in cenet yet; available: {AVAILABLE}"
                ),
            ));
        }
        let depth = base
            .strip_prefix("resnet")
            .and_then(|d| d.parse::<usize>().ok())
            .ok_or_else(|| {
                Error::invalid(
                    "model",
                    format!("unknown model {name:?}; available: {AVAILABLE}"),
                )
            })?;
        // Checks the depth.
        ResNetConfig::new(depth, ce)?;
        Ok(ModelName::ResNet { depth, ce })
    }
}

impl fmt::Display for ModelName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ModelName::ResNet { depth, ce: true } => write!(f, "resnet{depth}-ce"),
            ModelName::ResNet { depth, ce: false } => write!(f, "resnet{depth}"),
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
    ) -> Result<ResNetConfig> {
        match *self {
            ModelName::ResNet { depth, ce } => {
                let mut config = ResNetConfig::new(depth, ce)?;
                config.in_channels = in_channels;
                config.classes = classes;
                config.label_smoothing = label_smoothing;
                Ok(config)
            }
        }
    }
}
