//! The CE paper's second view of inhibited channels: test accuracy as a growing share of
//! each site's weakest channels is removed.
//!
//! For a share p of 0 … 90 %, the ⌊p·C⌋ weakest channels of every site (by mean
//! |activation|, see [`super::inhibited`]) are removed at once and the test accuracy
//! measured. A channel is removed by zeroing the weights that read it directly: the
//! input-channel slice `[:, c]` of every convolution fed by the site's ReLU (the filter
//! `[c]` of a depthwise one), and the column `c` of the classifier fed through the global
//! average pooling. Limitation: an identity shortcut still carries a removed channel of a
//! post-addition site to the next block's addition; only the layers reading the site
//! directly lose it. The weights are restored afterwards.

use std::collections::HashMap;
use std::fmt::Write as _;

use indicatif::ProgressBar;

use super::inhibited::{Consumer, InhibitedReport};
use super::plot::{Chart, Series};
use crate::data::{Batcher, BatcherConfig, Dataset};
use crate::error::{Error, Result};
use crate::graph::exec::Executor;

/// The shares of channels removed for the channel-drop curve: 0, 10, …, 90 %.
pub const DROP_FRACTIONS: [f64; 10] = [0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9];

/// One point of the channel-drop curve.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct DropPoint {
    /// Share of each site's channels removed.
    pub fraction: f64,
    /// Channels removed over all sites.
    pub channels_removed: usize,
    /// Test accuracy with them removed.
    pub accuracy: f64,
}

/// Test accuracy as the weakest channels of every site are removed (see the module
/// documentation for how), for each of `fractions`. The weights are restored afterwards,
/// also on error.
pub fn channel_drop_curve(
    exec: &mut Executor,
    report: &InhibitedReport,
    test: &Dataset,
    batch_size: usize,
    fractions: &[f64],
    bar: &ProgressBar,
) -> Result<Vec<DropPoint>> {
    let gpu = exec.gpu().clone();
    let mut originals: HashMap<String, (Vec<usize>, Vec<f32>)> = HashMap::new();
    for stats in &report.sites {
        for consumer in &stats.site.consumers {
            let name = consumer.weight();
            let tensor = exec.tensor(name).ok_or_else(|| {
                Error::invalid("inspect", format!("the model has no weight {name:?}"))
            })?;
            originals.insert(
                name.to_string(),
                (tensor.shape().to_vec(), tensor.to_vec(&gpu)?),
            );
        }
    }

    let mut curve = Vec::with_capacity(fractions.len());
    let mut outcome = Ok(());
    for &fraction in fractions {
        let mut weights: HashMap<&str, Vec<f32>> = originals
            .iter()
            .map(|(name, (_, values))| (name.as_str(), values.clone()))
            .collect();
        let mut removed = 0;
        for stats in &report.sites {
            let count = (fraction * stats.mean_abs.len() as f64).floor() as usize;
            let dropped = &stats.weakest_first()[..count];
            removed += count;
            for consumer in &stats.site.consumers {
                let name = consumer.weight();
                let shape = &originals[name].0;
                let values = weights.get_mut(name).expect("copied above");
                let groups = match consumer {
                    Consumer::Conv { groups, .. } => *groups,
                    Consumer::Linear { .. } => 1,
                };
                zero_input_channels(values, shape, groups, dropped);
            }
        }
        let applied = weights
            .iter()
            .try_for_each(|(name, values)| exec.set_tensor(name, values));
        let accuracy = applied.and_then(|()| accuracy(exec, test, batch_size));
        match accuracy {
            Ok(accuracy) => curve.push(DropPoint {
                fraction,
                channels_removed: removed,
                accuracy,
            }),
            Err(e) => {
                outcome = Err(e);
                break;
            }
        }
        bar.inc(1);
    }
    for (name, (_, values)) in &originals {
        exec.set_tensor(name, values)?;
    }
    outcome.map(|()| curve)
}

/// Zeroes input channels `channels` of a conv weight `[Cout, Cin/groups, KH, KW]` or a
/// linear weight `[out, in]` (groups 1): input channel `c` is read by the outputs of its
/// group `c / (Cin/groups)` through slot `c mod (Cin/groups)`.
pub fn zero_input_channels(values: &mut [f32], shape: &[usize], groups: usize, channels: &[usize]) {
    let (outputs, slots) = (shape[0], shape[1]);
    let inner: usize = shape[2..].iter().product();
    let outputs_per_group = outputs / groups.max(1);
    for &c in channels {
        let (group, slot) = (c / slots, c % slots);
        for o in group * outputs_per_group..(group + 1) * outputs_per_group {
            let start = (o * slots + slot) * inner;
            values[start..start + inner].fill(0.0);
        }
    }
}

fn accuracy(exec: &mut Executor, test: &Dataset, batch_size: usize) -> Result<f64> {
    let gpu = exec.gpu().clone();
    let mut batcher = Batcher::new(test.clone(), BatcherConfig::eval(batch_size))?;
    let (_, acc) = super::trainer::evaluate_loss(&gpu, exec, &mut batcher)?;
    Ok(acc)
}

/// The channel-drop curve as a chart.
pub fn drop_chart(curve: &[DropPoint]) -> Chart {
    Chart {
        title: "Channel drop".into(),
        x_label: "weakest channels removed per site (%)".into(),
        y_label: "test accuracy".into(),
        series: vec![Series {
            name: "accuracy".into(),
            points: curve
                .iter()
                .map(|p| (100.0 * p.fraction, p.accuracy))
                .collect(),
        }],
        y_range: Some((0.0, 1.0)),
    }
}

/// The channel-drop curve as a text table.
pub fn drop_table(curve: &[DropPoint]) -> String {
    let mut out = String::from("channel drop: weakest channels of every site removed\n");
    let _ = writeln!(out, "{:>8} {:>9} {:>9}", "removed", "channels", "accuracy");
    for p in curve {
        let _ = writeln!(
            out,
            "{:>7.0}% {:>9} {:>8.2}%",
            100.0 * p.fraction,
            p.channels_removed,
            100.0 * p.accuracy
        );
    }
    out
}

/// The channel-drop curve as CSV.
pub fn drop_csv(curve: &[DropPoint]) -> String {
    let mut out = String::from("fraction,channels_removed,accuracy\n");
    for p in curve {
        let _ = writeln!(
            out,
            "{},{},{:.6}",
            p.fraction, p.channels_removed, p.accuracy
        );
    }
    out
}
