//! Line charts as standalone SVG: the training curves and the channel-drop curve. No
//! dependency; the output opens in any browser.

use std::fmt::Write as _;

use super::metrics::EpochRecord;

/// Width and height of one chart, in SVG units.
const CHART_SIZE: (f64, f64) = (480.0, 320.0);
/// Margins inside a chart: left, right, top, bottom (room for tick labels and titles).
const MARGIN: (f64, f64, f64, f64) = (62.0, 16.0, 34.0, 44.0);
/// Line colours, in series order (colour-blind-safe, Okabe & Ito).
const COLOURS: [&str; 6] = [
    "#0072b2", "#d55e00", "#009e73", "#cc79a7", "#e69f00", "#56b4e9",
];

/// One line of a chart.
#[derive(Clone, Debug, PartialEq)]
pub struct Series {
    /// The legend entry.
    pub name: String,
    /// Points `(x, y)` in drawing order; non-finite ones are skipped.
    pub points: Vec<(f64, f64)>,
}

/// A chart of one or more lines over shared axes.
#[derive(Clone, Debug, PartialEq)]
pub struct Chart {
    /// Shown above the plot.
    pub title: String,
    /// The horizontal axis's label.
    pub x_label: String,
    /// The vertical axis's label.
    pub y_label: String,
    /// The lines.
    pub series: Vec<Series>,
    /// A fixed vertical range (e.g. 0..1 for accuracies); otherwise fitted to the data.
    pub y_range: Option<(f64, f64)>,
}

/// An SVG document with `charts` side by side.
pub fn svg(charts: &[Chart]) -> String {
    let (w, h) = CHART_SIZE;
    let total_width = w * charts.len().max(1) as f64;
    let mut out = String::new();
    let _ = writeln!(
        out,
        concat!(
            r#"<svg xmlns="http://www.w3.org/2000/svg" width="{total_width}" height="{h}" "#,
            r#"viewBox="0 0 {total_width} {h}" font-family="sans-serif" font-size="12">"#
        ),
        total_width = total_width,
        h = h,
    );
    let _ = writeln!(
        out,
        r#"<rect width="{total_width}" height="{h}" fill="white"/>"#
    );
    for (i, chart) in charts.iter().enumerate() {
        chart.render(&mut out, i as f64 * w);
    }
    out.push_str("</svg>\n");
    out
}

/// The training curves of a run: losses and accuracies against the epoch.
pub fn training_curves(records: &[EpochRecord]) -> Vec<Chart> {
    let line = |name: &str, value: fn(&EpochRecord) -> f64| Series {
        name: name.to_string(),
        points: records.iter().map(|r| (r.epoch as f64, value(r))).collect(),
    };
    vec![
        Chart {
            title: "Loss".into(),
            x_label: "epoch".into(),
            y_label: "cross-entropy".into(),
            series: vec![
                line("train", |r| r.train_loss),
                line("test", |r| r.test_loss),
            ],
            y_range: None,
        },
        Chart {
            title: "Accuracy".into(),
            x_label: "epoch".into(),
            y_label: "top-1 accuracy".into(),
            series: vec![line("train", |r| r.train_acc), line("test", |r| r.test_acc)],
            y_range: Some((0.0, 1.0)),
        },
    ]
}

impl Chart {
    fn render(&self, out: &mut String, left: f64) {
        let (w, h) = CHART_SIZE;
        let (ml, mr, mt, mb) = MARGIN;
        let (px0, px1) = (left + ml, left + w - mr);
        let (py0, py1) = (mt, h - mb);

        let finite: Vec<(f64, f64)> = self
            .series
            .iter()
            .flat_map(|s| s.points.iter().copied())
            .filter(|(x, y)| x.is_finite() && y.is_finite())
            .collect();
        let (x_lo, x_hi) = padded_range(finite.iter().map(|p| p.0));
        let (y_lo, y_hi) = self
            .y_range
            .unwrap_or_else(|| padded_range(finite.iter().map(|p| p.1)));
        let sx = |x: f64| px0 + (x - x_lo) / (x_hi - x_lo) * (px1 - px0);
        let sy = |y: f64| py1 - (y - y_lo) / (y_hi - y_lo) * (py1 - py0);

        let _ = writeln!(
            out,
            concat!(
                r#"<text x="{}" y="20" text-anchor="middle" font-size="14" "#,
                r#"font-weight="bold">{}</text>"#
            ),
            (px0 + px1) / 2.0,
            escape(&self.title)
        );
        // Grid lines and tick labels.
        for y in ticks(y_lo, y_hi) {
            let _ = writeln!(
                out,
                concat!(
                    r##"<line x1="{px0}" x2="{px1}" y1="{0:.1}" y2="{0:.1}" stroke="#e4e4e4"/>"##,
                    r#"<text x="{1}" y="{2:.1}" text-anchor="end">{3}</text>"#
                ),
                sy(y),
                px0 - 6.0,
                sy(y) + 4.0,
                tick_label(y),
                px0 = px0,
                px1 = px1,
            );
        }
        for x in ticks(x_lo, x_hi) {
            let _ = writeln!(
                out,
                concat!(
                    r##"<line x1="{0:.1}" x2="{0:.1}" y1="{py0}" y2="{py1}" stroke="#e4e4e4"/>"##,
                    r#"<text x="{0:.1}" y="{1}" text-anchor="middle">{2}</text>"#
                ),
                sx(x),
                py1 + 16.0,
                tick_label(x),
                py0 = py0,
                py1 = py1,
            );
        }
        let _ = writeln!(
            out,
            r#"<rect x="{px0}" y="{py0}" width="{}" height="{}" fill="none" stroke="black"/>"#,
            px1 - px0,
            py1 - py0
        );
        let _ = writeln!(
            out,
            r#"<text x="{}" y="{}" text-anchor="middle">{}</text>"#,
            (px0 + px1) / 2.0,
            h - 8.0,
            escape(&self.x_label)
        );
        let _ = writeln!(
            out,
            r#"<text transform="translate({},{}) rotate(-90)" text-anchor="middle">{}</text>"#,
            left + 14.0,
            (py0 + py1) / 2.0,
            escape(&self.y_label)
        );

        for (i, series) in self.series.iter().enumerate() {
            let colour = COLOURS[i % COLOURS.len()];
            let points: Vec<String> = series
                .points
                .iter()
                .filter(|(x, y)| x.is_finite() && y.is_finite())
                .map(|&(x, y)| format!("{:.1},{:.1}", sx(x), sy(y).clamp(py0, py1)))
                .collect();
            if points.len() == 1 {
                let (x, y) = points[0].split_once(',').unwrap_or(("0", "0"));
                let _ = writeln!(out, r#"<circle cx="{x}" cy="{y}" r="3" fill="{colour}"/>"#);
            } else if !points.is_empty() {
                let _ = writeln!(
                    out,
                    r#"<polyline fill="none" stroke="{colour}" stroke-width="2" points="{}"/>"#,
                    points.join(" ")
                );
            }
            let ly = py0 + 16.0 + 16.0 * i as f64;
            let _ = writeln!(
                out,
                concat!(
                    r#"<line x1="{0}" x2="{1}" y1="{2}" y2="{2}" stroke="{colour}" "#,
                    r#"stroke-width="2"/><text x="{3}" y="{4}">{5}</text>"#
                ),
                px1 - 110.0,
                px1 - 90.0,
                ly - 4.0,
                px1 - 85.0,
                ly,
                escape(&series.name),
                colour = colour,
            );
        }
    }
}

/// The range of `values` with 5 % headroom; a unit range around a single value.
fn padded_range(values: impl Iterator<Item = f64>) -> (f64, f64) {
    let (lo, hi) = values.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
        (lo.min(v), hi.max(v))
    });
    if !lo.is_finite() || !hi.is_finite() {
        return (0.0, 1.0);
    }
    if hi - lo < 1e-12 {
        return (lo - 0.5, hi + 0.5);
    }
    let pad = 0.05 * (hi - lo);
    (lo - pad, hi + pad)
}

/// Round tick positions (1, 2 or 5 times a power of ten apart) inside `lo..=hi`.
fn ticks(lo: f64, hi: f64) -> Vec<f64> {
    let rough = (hi - lo) / 5.0;
    if !(rough.is_finite() && rough > 0.0) {
        return vec![];
    }
    let power = 10f64.powf(rough.log10().floor());
    let step = [1.0, 2.0, 5.0, 10.0]
        .into_iter()
        .map(|m| m * power)
        .find(|s| *s >= rough)
        .unwrap_or(10.0 * power);
    let first = (lo / step).ceil() as i64;
    let last = (hi / step).floor() as i64;
    (first..=last).map(|k| k as f64 * step).collect()
}

fn tick_label(v: f64) -> String {
    if v == 0.0 {
        return "0".into();
    }
    let magnitude = v.abs();
    if (1e-3..1e5).contains(&magnitude) {
        let text = format!("{v:.3}");
        text.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        format!("{v:.1e}")
    }
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}
