//! Evaluating a checkpoint: accuracy, per-class accuracy, the confusion matrix and,
//! optionally, every test image's logits.

use std::fmt::Write as _;
use std::path::Path;

use indicatif::ProgressBar;

use super::model::ModelName;
use super::run_state::MODEL_KEY;
use crate::checkpoint::StateDict;
use crate::data::{Batch, Batcher, BatcherConfig, Dataset};
use crate::error::{Error, Result};
use crate::graph::exec::Executor;

/// What an evaluation over a test set measured.
#[derive(Clone, Debug, PartialEq)]
pub struct EvalReport {
    /// Class names (or numbers), in label order.
    pub class_names: Vec<String>,
    /// Mean cross-entropy of the logits against the labels (without label smoothing).
    pub loss: f64,
    /// `confusion[true][predicted]`: how many images of a class got each prediction.
    pub confusion: Vec<Vec<u64>>,
    /// `[N, classes]` logits in test-set order, when asked for.
    pub logits: Option<Vec<f32>>,
}

impl EvalReport {
    /// Images evaluated.
    pub fn total(&self) -> u64 {
        self.confusion.iter().flatten().sum()
    }

    /// Correct top-1 predictions.
    pub fn correct(&self) -> u64 {
        (0..self.confusion.len())
            .map(|c| self.confusion[c][c])
            .sum()
    }

    /// Top-1 accuracy in [0, 1].
    pub fn accuracy(&self) -> f64 {
        self.correct() as f64 / self.total().max(1) as f64
    }

    /// Each class's accuracy (recall); `None` for a class without test images.
    pub fn per_class_accuracy(&self) -> Vec<Option<f64>> {
        self.confusion
            .iter()
            .enumerate()
            .map(|(c, row)| {
                let n: u64 = row.iter().sum();
                (n > 0).then(|| row[c] as f64 / n as f64)
            })
            .collect()
    }

    /// The report as text: accuracy, a per-class table and, for up to 20 classes, the
    /// confusion matrix.
    pub fn to_text(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "test accuracy {:.2}% ({} of {}), loss {:.4}",
            100.0 * self.accuracy(),
            self.correct(),
            self.total(),
            self.loss
        );
        let width = self
            .class_names
            .iter()
            .map(|n| n.chars().count())
            .max()
            .unwrap_or(5)
            .max(5);
        let _ = writeln!(out, "\n{:<width$}  accuracy  images", "class");
        for (name, (acc, row)) in self
            .class_names
            .iter()
            .zip(self.per_class_accuracy().into_iter().zip(&self.confusion))
        {
            let acc = acc.map_or("     -".to_string(), |a| format!("{:6.2}%", 100.0 * a));
            let _ = writeln!(
                out,
                "{name:<width$}  {acc:>8}  {:>6}",
                row.iter().sum::<u64>()
            );
        }
        if self.confusion.len() <= 20 {
            let _ = writeln!(
                out,
                "\nconfusion matrix (rows: true class, columns: predicted)"
            );
            let cell = self
                .confusion
                .iter()
                .flatten()
                .map(|v| v.to_string().len())
                .max()
                .unwrap_or(1)
                .max(3);
            let _ = write!(out, "{:<width$}", "");
            for c in 0..self.confusion.len() {
                let _ = write!(out, " {c:>cell$}");
            }
            out.push('\n');
            for (c, row) in self.confusion.iter().enumerate() {
                let label = format!("{c} {}", self.class_names[c]);
                let label: String = label.chars().take(width).collect();
                let _ = write!(out, "{label:<width$}");
                for v in row {
                    let _ = write!(out, " {v:>cell$}");
                }
                out.push('\n');
            }
        }
        out
    }
}

/// Evaluates `exec` on every image of `test`, in order, in batches of `batch_size`,
/// reading back the logits (kept in the report with `keep_logits`).
pub fn evaluate(
    exec: &mut Executor,
    test: &Dataset,
    batch_size: usize,
    keep_logits: bool,
    bar: &ProgressBar,
) -> Result<EvalReport> {
    let classes = test.classes();
    let mut batcher = Batcher::new(test.clone(), BatcherConfig::eval(batch_size))?;
    let mut confusion = vec![vec![0u64; classes]; classes];
    let mut all_logits = keep_logits.then(|| Vec::with_capacity(test.len() * classes));
    let mut loss_sum = 0.0f64;
    let mut batch = Batch::default();
    while batcher.next_batch_into(&mut batch) {
        let logits = exec.logits(&batch.images, &batch.labels)?;
        if logits.len() != batch.len() * classes {
            return Err(Error::invalid(
                "eval",
                format!(
                    "the model gives {} scores per image, the data set has {classes} classes",
                    logits.len() / batch.len().max(1)
                ),
            ));
        }
        for (row, &label) in logits.chunks_exact(classes).zip(&batch.labels) {
            let predicted = argmax(row);
            confusion[label as usize][predicted] += 1;
            loss_sum += cross_entropy(row, label as usize);
        }
        if let Some(all) = &mut all_logits {
            all.extend_from_slice(&logits);
        }
        bar.inc(batch.len() as u64);
    }
    let class_names = test
        .class_names()
        .map(<[String]>::to_vec)
        .unwrap_or_else(|| (0..classes).map(|c| c.to_string()).collect());
    Ok(EvalReport {
        class_names,
        loss: loss_sum / test.len().max(1) as f64,
        confusion,
        logits: all_logits,
    })
}

/// Writes `logits` `[N, classes]` to a safetensors file under the name `logits`.
pub fn save_logits(path: &Path, logits: &[f32], classes: usize) -> Result<()> {
    let mut dict = StateDict::new();
    dict.insert_f32(
        "logits",
        &[logits.len() / classes.max(1), classes],
        logits.to_vec(),
    )?;
    dict.save(path)
}

/// The model a weights file names in its metadata (written by the runner), or `given`.
pub fn model_of(weights: &StateDict, given: Option<ModelName>, file: &Path) -> Result<ModelName> {
    if let Some(model) = given {
        return Ok(model);
    }
    match weights.metadata().get(MODEL_KEY) {
        Some(name) => name.parse(),
        None => Err(Error::Checkpoint {
            file: file.to_path_buf(),
            message: "the file does not say which model it holds (no cenet.model metadata): \
                      add --model"
                .into(),
        }),
    }
}

fn argmax(row: &[f32]) -> usize {
    let mut best = 0;
    for (i, &v) in row.iter().enumerate() {
        // NaN never wins, so a broken row predicts class 0 rather than panicking.
        if v > row[best] {
            best = i;
        }
    }
    best
}

/// `−log softmax(row)[label]`, in f64.
fn cross_entropy(row: &[f32], label: usize) -> f64 {
    let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
    let sum: f64 = row.iter().map(|&v| (v as f64 - max).exp()).sum();
    max + sum.ln() - row[label] as f64
}
