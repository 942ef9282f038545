//! The inhibited-channel diagnostic of the CE paper: how many channels after a
//! BN(→CE)→ReLU carry almost nothing, and how much accuracy is lost when the weakest
//! channels are removed.
//!
//! **Sites.** Every ReLU fed by a batch norm, directly, through a CE block, or through the
//! residual addition that follows them (`bn → ReLU`, `bn → CE → ReLU`,
//! `bn2 → (CE →) + → ReLU`), named after its batch norm (`layer1.0.bn2`).
//!
//! **Magnitude.** For each site, the mean absolute activation of each channel over the test
//! set in evaluation mode. A ReLU's output is non-negative, so this is the channel's mean,
//! which a global-average-pooling probe appended to the graph computes on the GPU.
//! The report gives, per site and over all sites, the share of channels whose magnitude is
//! below τ ∈ {1e-3, 1e-2, 1e-1}, absolutely and relative to the site's largest channel.
//!
//! The second view, accuracy as the weakest channels are removed, is in
//! [`super::channel_drop`].

use std::fmt::Write as _;

use indicatif::ProgressBar;

use super::plot::{Chart, Series};
use crate::data::{Batch, Batcher, BatcherConfig, Dataset};
use crate::error::Result;
use crate::graph::exec::Executor;
use crate::graph::{Graph, NodeId, Op};

/// The absolute and relative thresholds τ of the report.
pub const THRESHOLDS: [f64; 3] = [1e-3, 1e-2, 1e-1];

/// A layer whose weights read a site's channels directly.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Consumer {
    /// A convolution; its weight `[Cout, C/groups, KH, KW]` reads channel `c` through
    /// `[:, c]` (with groups, through slot `c mod C/groups` of its group's outputs; a
    /// depthwise weight `[C, 1, KH, KW]` through `[c]`).
    Conv {
        /// The weight's state-dict name.
        weight: String,
        /// The convolution's groups (1 for a dense one).
        groups: usize,
    },
    /// A linear layer after global average pooling; its weight `[out, C]` reads channel
    /// `c` through column `c`.
    Linear {
        /// The weight's state-dict name.
        weight: String,
    },
}

impl Consumer {
    /// The weight's state-dict name.
    pub fn weight(&self) -> &str {
        match self {
            Consumer::Conv { weight, .. } | Consumer::Linear { weight } => weight,
        }
    }
}

/// A BN(→CE)→ReLU site.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Site {
    /// The batch norm's prefix, e.g. `layer2.0.bn1`.
    pub name: String,
    /// The path from the batch norm to the ReLU, e.g. `BN→CE→+→ReLU`.
    pub path: String,
    /// The ReLU node.
    pub relu: NodeId,
    /// Channels.
    pub channels: usize,
    /// The layers whose weights read its channels directly.
    pub consumers: Vec<Consumer>,
}

/// The sites of a graph, in graph order.
pub fn find_sites(graph: &Graph) -> Vec<Site> {
    let mut sites = Vec::new();
    for (i, node) in graph.nodes.iter().enumerate() {
        let (x, activation) = match node.op {
            Op::Relu(x) => (x, "ReLU"),
            Op::Relu6(x) => (x, "ReLU6"),
            _ => continue,
        };
        let mut path = vec![activation];
        let mut at = x;
        if let Op::Add(a, b) = graph.node(at).op {
            // The residual branch is the operand that comes from a normalisation.
            let branch = [a, b].into_iter().find(|&n| {
                matches!(
                    graph.node(n).op,
                    Op::BatchNorm { .. } | Op::ChannelEquilibrium { .. }
                )
            });
            let Some(branch) = branch else { continue };
            path.push("+");
            at = branch;
        }
        if let Op::ChannelEquilibrium { x, .. } = graph.node(at).op {
            path.push("CE");
            at = x;
        }
        let Op::BatchNorm { layer, .. } = graph.node(at).op else {
            continue;
        };
        path.push("BN");
        path.reverse();
        let relu = NodeId(i);
        sites.push(Site {
            name: graph.batch_norms[layer].prefix.clone(),
            path: path.join("→"),
            relu,
            channels: node.shape.get(1).copied().unwrap_or(0),
            consumers: consumers(graph, relu),
        });
    }
    sites
}

/// The convolutions reading `relu` and the linear layers reading its global average.
fn consumers(graph: &Graph, relu: NodeId) -> Vec<Consumer> {
    let weight_name = |n: NodeId| graph.node(n).name.clone();
    let mut found = Vec::new();
    for node in &graph.nodes {
        match node.op {
            Op::Conv2d {
                x,
                weight,
                geometry,
                ..
            } if x == relu => found.push(Consumer::Conv {
                weight: weight_name(weight),
                groups: geometry.groups.max(1),
            }),
            _ => {}
        }
    }
    for (j, node) in graph.nodes.iter().enumerate() {
        if !matches!(node.op, Op::GlobalAvgPool(x) if x == relu) {
            continue;
        }
        for reader in &graph.nodes {
            if let Op::Linear { x, weight, .. } = reader.op {
                if x == NodeId(j) {
                    found.push(Consumer::Linear {
                        weight: weight_name(weight),
                    });
                }
            }
        }
    }
    found
}

/// One site's per-channel magnitudes.
#[derive(Clone, Debug, PartialEq)]
pub struct SiteStats {
    /// The site.
    pub site: Site,
    /// Mean absolute activation of each channel over the test set.
    pub mean_abs: Vec<f64>,
}

impl SiteStats {
    /// The largest channel's magnitude.
    pub fn max(&self) -> f64 {
        self.mean_abs.iter().copied().fold(0.0, f64::max)
    }

    /// Channels whose magnitude is below `tau`.
    pub fn below_absolute(&self, tau: f64) -> usize {
        self.mean_abs.iter().filter(|&&m| m < tau).count()
    }

    /// Channels whose magnitude is below `tau` times the largest channel's.
    pub fn below_relative(&self, tau: f64) -> usize {
        let limit = tau * self.max();
        self.mean_abs.iter().filter(|&&m| m < limit).count()
    }

    /// Channel indices from the weakest to the strongest (ties in index order).
    pub fn weakest_first(&self) -> Vec<usize> {
        let mut order: Vec<usize> = (0..self.mean_abs.len()).collect();
        order.sort_by(|&a, &b| {
            self.mean_abs[a]
                .total_cmp(&self.mean_abs[b])
                .then(a.cmp(&b))
        });
        order
    }
}

/// The per-site and overall inhibited-channel shares.
#[derive(Clone, Debug, PartialEq)]
pub struct InhibitedReport {
    /// Every site's magnitudes.
    pub sites: Vec<SiteStats>,
}

impl InhibitedReport {
    /// Channels over all sites.
    pub fn total_channels(&self) -> usize {
        self.sites.iter().map(|s| s.mean_abs.len()).sum()
    }

    /// Share of all channels below `tau`, absolutely.
    pub fn overall_absolute(&self, tau: f64) -> f64 {
        let below: usize = self.sites.iter().map(|s| s.below_absolute(tau)).sum();
        below as f64 / self.total_channels().max(1) as f64
    }

    /// Share of all channels below `tau` times their site's largest channel.
    pub fn overall_relative(&self, tau: f64) -> f64 {
        let below: usize = self.sites.iter().map(|s| s.below_relative(tau)).sum();
        below as f64 / self.total_channels().max(1) as f64
    }

    /// The report as a text table.
    pub fn to_text(&self) -> String {
        let mut out = String::new();
        let width = self
            .sites
            .iter()
            .map(|s| s.site.name.len())
            .max()
            .unwrap_or(4)
            .max(7);
        let _ = writeln!(
            out,
            "inhibited channels: share of channels whose mean |activation| over the test set \
             is below τ (absolute, and relative to the site's largest channel)"
        );
        let _ = write!(
            out,
            "{:<width$}  {:<14} {:>4} {:>9}",
            "site", "path", "C", "max mean"
        );
        for tau in THRESHOLDS {
            let _ = write!(out, " {:>8}", format!("<{tau:.0e}"));
        }
        for tau in THRESHOLDS {
            let _ = write!(out, " {:>8}", format!("rel<{tau:.0e}"));
        }
        out.push('\n');
        let pct = |count: usize, total: usize| 100.0 * count as f64 / total.max(1) as f64;
        for s in &self.sites {
            let c = s.mean_abs.len();
            let _ = write!(
                out,
                "{:<width$}  {:<14} {:>4} {:>9.4}",
                s.site.name,
                s.site.path,
                c,
                s.max()
            );
            for tau in THRESHOLDS {
                let _ = write!(out, " {:>7.1}%", pct(s.below_absolute(tau), c));
            }
            for tau in THRESHOLDS {
                let _ = write!(out, " {:>7.1}%", pct(s.below_relative(tau), c));
            }
            out.push('\n');
        }
        let _ = write!(
            out,
            "{:<width$}  {:<14} {:>4} {:>9}",
            "overall",
            "",
            self.total_channels(),
            ""
        );
        for tau in THRESHOLDS {
            let _ = write!(out, " {:>7.1}%", 100.0 * self.overall_absolute(tau));
        }
        for tau in THRESHOLDS {
            let _ = write!(out, " {:>7.1}%", 100.0 * self.overall_relative(tau));
        }
        out.push('\n');
        out
    }

    /// The per-site shares as CSV (fractions in [0, 1]).
    pub fn to_csv(&self) -> String {
        let mut out = String::from("site,path,channels,max_mean_abs");
        for tau in THRESHOLDS {
            let _ = write!(out, ",below_{tau:.0e}");
        }
        for tau in THRESHOLDS {
            let _ = write!(out, ",below_rel_{tau:.0e}");
        }
        out.push('\n');
        let mut row =
            |name: &str, path: &str, c: usize, max: String, abs: Vec<f64>, rel: Vec<f64>| {
                let _ = write!(out, "{name},{path},{c},{max}");
                for v in abs.iter().chain(&rel) {
                    let _ = write!(out, ",{v:.6}");
                }
                out.push('\n');
            };
        for s in &self.sites {
            let c = s.mean_abs.len().max(1) as f64;
            row(
                &s.site.name,
                &s.site.path,
                s.mean_abs.len(),
                format!("{:.6e}", s.max()),
                THRESHOLDS
                    .iter()
                    .map(|&t| s.below_absolute(t) as f64 / c)
                    .collect(),
                THRESHOLDS
                    .iter()
                    .map(|&t| s.below_relative(t) as f64 / c)
                    .collect(),
            );
        }
        row(
            "overall",
            "",
            self.total_channels(),
            String::new(),
            THRESHOLDS
                .iter()
                .map(|&t| self.overall_absolute(t))
                .collect(),
            THRESHOLDS
                .iter()
                .map(|&t| self.overall_relative(t))
                .collect(),
        );
        out
    }

    /// Every channel's magnitude as CSV: `site,channel,mean_abs`.
    pub fn channels_csv(&self) -> String {
        let mut out = String::from("site,channel,mean_abs\n");
        for s in &self.sites {
            for (c, m) in s.mean_abs.iter().enumerate() {
                let _ = writeln!(out, "{},{c},{m:.6e}", s.site.name);
            }
        }
        out
    }

    /// A chart of each site's inhibited share (absolute and relative τ = 1e-2).
    pub fn chart(&self) -> Chart {
        let line = |name: &str, share: &dyn Fn(&SiteStats) -> usize| Series {
            name: name.to_string(),
            points: self
                .sites
                .iter()
                .enumerate()
                .map(|(i, s)| (i as f64, share(s) as f64 / s.mean_abs.len().max(1) as f64))
                .collect(),
        };
        Chart {
            title: "Inhibited channels per site".into(),
            x_label: "site (graph order)".into(),
            y_label: "share of channels".into(),
            series: vec![
                line("|a| < 1e-2", &|s| s.below_absolute(1e-2)),
                line("|a| < 1e-2·max", &|s| s.below_relative(1e-2)),
            ],
            y_range: Some((0.0, 1.0)),
        }
    }
}

/// Measures every site's per-channel magnitudes over `test`. `exec` must run the graph of
/// the probed build (see [`with_probes`]) whose probe nodes are `probes`, one per site.
pub fn measure(
    exec: &mut Executor,
    sites: &[Site],
    probes: &[NodeId],
    test: &Dataset,
    batch_size: usize,
    bar: &ProgressBar,
) -> Result<InhibitedReport> {
    let mut sums: Vec<Vec<f64>> = sites.iter().map(|s| vec![0.0; s.channels]).collect();
    let mut batcher = Batcher::new(test.clone(), BatcherConfig::eval(batch_size))?;
    let mut batch = Batch::default();
    let mut seen = 0usize;
    while batcher.next_batch_into(&mut batch) {
        let values = exec.eval_outputs(&batch.images, &batch.labels, probes)?;
        // values[0] holds the logits; then one [B, C] mean per probe.
        for (sum, pooled) in sums.iter_mut().zip(&values[1..]) {
            let c = sum.len();
            for row in pooled.chunks_exact(c) {
                for (s, &v) in sum.iter_mut().zip(row) {
                    *s += f64::from(v.abs());
                }
            }
        }
        seen += batch.len();
        bar.inc(batch.len() as u64);
    }
    Ok(InhibitedReport {
        sites: sites
            .iter()
            .zip(sums)
            .map(|(site, sum)| SiteStats {
                site: site.clone(),
                mean_abs: sum.iter().map(|s| s / seen.max(1) as f64).collect(),
            })
            .collect(),
    })
}

/// Appends a global-average-pooling probe after every site's ReLU to `graph`; returns the
/// probe nodes, one per site.
pub fn with_probes(graph: &mut Graph, sites: &[Site]) -> Result<Vec<NodeId>> {
    sites
        .iter()
        .map(|s| graph.global_avg_pool(s.relu))
        .collect()
}
