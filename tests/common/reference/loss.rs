//! Softmax cross-entropy with mean reduction and label smoothing (PyTorch's
//! `CrossEntropyLoss(label_smoothing=ε)`: target = (1 − ε)·onehot + ε/K), in float64, and the
//! top-1 accuracy count.

/// log softmax of one row, computed around its maximum.
fn log_softmax(row: &[f64]) -> Vec<f64> {
    let max = row.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    let log_sum = row.iter().map(|v| (v - max).exp()).sum::<f64>().ln();
    row.iter().map(|v| v - max - log_sum).collect()
}

/// The smoothed target distribution of a row whose label is `label` among `k` classes.
fn target(label: usize, k: usize, smoothing: f64) -> Vec<f64> {
    (0..k)
        .map(|j| smoothing / k as f64 + if j == label { 1.0 - smoothing } else { 0.0 })
        .collect()
}

/// `L = (1/N) Σ_n −Σ_j target[n, j] · log softmax(logits[n])_j` for `logits: [N, K]`.
pub fn cross_entropy_forward(
    logits: &[f64],
    [n, k]: [usize; 2],
    labels: &[u32],
    smoothing: f64,
) -> f64 {
    assert_eq!(logits.len(), n * k, "cross_entropy reference: logits");
    assert_eq!(labels.len(), n, "cross_entropy reference: labels");
    let total: f64 = logits
        .chunks(k)
        .zip(labels)
        .map(|(row, &label)| {
            let t = target(label as usize, k, smoothing);
            -log_softmax(row)
                .iter()
                .zip(&t)
                .map(|(l, t)| l * t)
                .sum::<f64>()
        })
        .sum();
    total / n as f64
}

/// Rows whose first largest logit is at the label.
pub fn top1_correct(logits: &[f64], [_, k]: [usize; 2], labels: &[u32]) -> usize {
    logits
        .chunks(k)
        .zip(labels)
        .filter(|(row, &label)| {
            let mut best = 0;
            for (j, &v) in row.iter().enumerate() {
                if v > row[best] {
                    best = j;
                }
            }
            best == label as usize
        })
        .count()
}

/// `dL/dlogits[n, j] = (softmax(logits[n])_j − target[n, j]) / N`.
pub fn cross_entropy_backward(
    logits: &[f64],
    [n, k]: [usize; 2],
    labels: &[u32],
    smoothing: f64,
) -> Vec<f64> {
    logits
        .chunks(k)
        .zip(labels)
        .flat_map(|(row, &label)| {
            let t = target(label as usize, k, smoothing);
            log_softmax(row)
                .into_iter()
                .zip(t)
                .map(|(l, t)| (l.exp() - t) / n as f64)
                .collect::<Vec<_>>()
        })
        .collect()
}
