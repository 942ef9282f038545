//! Learning-rate schedules: an optional linear warm-up, then cosine annealing, step decay or
//! a constant rate. The rate is a pure function of the optimizer step, so a resumed run
//! follows the same curve as an uninterrupted one.

use std::fmt;
use std::str::FromStr;

use crate::error::{Error, Result};

/// What follows the warm-up.
#[derive(Clone, Debug, PartialEq)]
pub enum Decay {
    /// Half a cosine from the base rate down to 0 at the last step (Loshchilov & Hutter).
    Cosine,
    /// The base rate times `gamma` for every milestone epoch reached.
    Step {
        /// Epochs (counting from 0) at which the rate is multiplied by `gamma`.
        milestones: Vec<u64>,
        /// The factor applied at each milestone.
        gamma: f64,
    },
    /// The base rate throughout.
    Constant,
}

/// The name of a [`Decay`] on the command line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DecayKind {
    /// [`Decay::Cosine`].
    Cosine,
    /// [`Decay::Step`].
    Step,
    /// [`Decay::Constant`].
    Constant,
}

impl FromStr for DecayKind {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        match s {
            "cosine" => Ok(DecayKind::Cosine),
            "step" => Ok(DecayKind::Step),
            "constant" => Ok(DecayKind::Constant),
            other => Err(Error::invalid(
                "schedule",
                format!("unknown schedule {other:?}: expected cosine, step or constant"),
            )),
        }
    }
}

impl fmt::Display for DecayKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            DecayKind::Cosine => "cosine",
            DecayKind::Step => "step",
            DecayKind::Constant => "constant",
        })
    }
}

/// The learning rate of every optimizer step of a run.
///
/// With base rate `η`, `W` warm-up steps and `T` steps in all, step `t` (from 0) trains at
/// - `η·(t + 1)/W` while `t < W` (linear warm-up that reaches `η` on its last step);
/// - cosine: `η·½(1 + cos(π·(t − W)/(T − W)))`;
/// - step: `η·γ^k`, `k` the number of milestones at or before the epoch `t / steps_per_epoch`;
/// - constant: `η`.
#[derive(Clone, Debug, PartialEq)]
pub struct LrSchedule {
    /// The base (peak) rate η.
    pub base_lr: f64,
    /// Warm-up steps W.
    pub warmup_steps: u64,
    /// Steps in the whole run T.
    pub total_steps: u64,
    /// Steps per epoch (for the step decay's milestones).
    pub steps_per_epoch: u64,
    /// What follows the warm-up.
    pub decay: Decay,
}

impl LrSchedule {
    /// A schedule of `epochs` epochs of `steps_per_epoch` steps with `warmup_epochs` of
    /// warm-up; checks that the numbers make sense together.
    pub fn new(
        base_lr: f64,
        epochs: u64,
        steps_per_epoch: u64,
        warmup_epochs: u64,
        decay: Decay,
    ) -> Result<Self> {
        let op = "schedule";
        if !(base_lr.is_finite() && base_lr > 0.0) {
            return Err(Error::invalid(
                op,
                format!("learning rate must be positive and finite, got {base_lr}"),
            ));
        }
        if epochs == 0 || steps_per_epoch == 0 {
            return Err(Error::invalid(
                op,
                format!("{epochs} epochs of {steps_per_epoch} steps leave nothing to train"),
            ));
        }
        if warmup_epochs >= epochs && warmup_epochs > 0 {
            return Err(Error::invalid(
                op,
                format!("{warmup_epochs} warm-up epochs leave none of the {epochs} to decay"),
            ));
        }
        if let Decay::Step { gamma, .. } = decay {
            if !(gamma.is_finite() && gamma > 0.0) {
                return Err(Error::invalid(
                    op,
                    format!("step decay factor must be positive, got {gamma}"),
                ));
            }
        }
        Ok(LrSchedule {
            base_lr,
            warmup_steps: warmup_epochs * steps_per_epoch,
            total_steps: epochs * steps_per_epoch,
            steps_per_epoch,
            decay,
        })
    }

    /// The learning rate of step `step` (from 0).
    pub fn lr(&self, step: u64) -> f64 {
        let eta = self.base_lr;
        if step < self.warmup_steps {
            return eta * (step + 1) as f64 / self.warmup_steps as f64;
        }
        match &self.decay {
            Decay::Constant => eta,
            Decay::Cosine => {
                let span = self.total_steps.saturating_sub(self.warmup_steps).max(1);
                let progress = ((step - self.warmup_steps) as f64 / span as f64).min(1.0);
                eta * 0.5 * (1.0 + (std::f64::consts::PI * progress).cos())
            }
            Decay::Step { milestones, gamma } => {
                let epoch = step / self.steps_per_epoch.max(1);
                let passed = milestones.iter().filter(|&&m| m <= epoch).count();
                eta * gamma.powi(passed as i32)
            }
        }
    }
}

/// The usual milestones of a step schedule: half and three quarters of the run.
pub fn default_milestones(epochs: u64) -> Vec<u64> {
    vec![epochs / 2, epochs * 3 / 4]
}
