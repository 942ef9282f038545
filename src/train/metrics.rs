//! Per-epoch metrics of a run and their CSV file (`metrics.csv`), rewritten whole after
//! every epoch so that it always matches the latest checkpoint.

use std::fmt::Write as _;
use std::path::Path;

use super::run_dir::write_atomically;
use crate::error::{Error, Result};

/// The CSV header, in column order.
pub const CSV_HEADER: &str =
    "epoch,step,lr,train_loss,train_acc,test_loss,test_acc,seconds,images_per_second";

/// What one epoch measured. Accuracies are fractions in [0, 1].
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct EpochRecord {
    /// The epoch, counting from 1.
    pub epoch: u64,
    /// Optimizer steps taken by its end.
    pub step: u64,
    /// Learning rate of its last step.
    pub lr: f64,
    /// Mean training loss over its batches.
    pub train_loss: f64,
    /// Training accuracy over its batches (on augmented images, as the network saw them).
    pub train_acc: f64,
    /// Mean loss over the test set, in evaluation mode.
    pub test_loss: f64,
    /// Test accuracy.
    pub test_acc: f64,
    /// Wall time of the epoch's training and evaluation, in seconds.
    pub seconds: f64,
    /// Training images per second.
    pub images_per_second: f64,
}

impl EpochRecord {
    fn to_csv_row(self) -> String {
        format!(
            "{},{},{:.6e},{:.6},{:.6},{:.6},{:.6},{:.3},{:.1}",
            self.epoch,
            self.step,
            self.lr,
            self.train_loss,
            self.train_acc,
            self.test_loss,
            self.test_acc,
            self.seconds,
            self.images_per_second
        )
    }

    fn from_csv_row(line: &str, file: &Path, number: usize) -> Result<Self> {
        let fields: Vec<&str> = line.split(',').map(str::trim).collect();
        let bad = |message: String| Error::Data {
            file: file.to_path_buf(),
            message: format!("line {number}: {message}"),
        };
        if fields.len() != 9 {
            return Err(bad(format!("{} fields, expected 9", fields.len())));
        }
        let int = |i: usize| {
            fields[i]
                .parse::<u64>()
                .map_err(|_| bad(format!("{:?} is not a whole number", fields[i])))
        };
        let real = |i: usize| {
            fields[i]
                .parse::<f64>()
                .map_err(|_| bad(format!("{:?} is not a number", fields[i])))
        };
        Ok(EpochRecord {
            epoch: int(0)?,
            step: int(1)?,
            lr: real(2)?,
            train_loss: real(3)?,
            train_acc: real(4)?,
            test_loss: real(5)?,
            test_acc: real(6)?,
            seconds: real(7)?,
            images_per_second: real(8)?,
        })
    }
}

/// The rows of `metrics.csv` as CSV text, header first.
pub fn to_csv(records: &[EpochRecord]) -> String {
    let mut text = String::from(CSV_HEADER);
    text.push('\n');
    for r in records {
        let _ = writeln!(text, "{}", r.to_csv_row());
    }
    text
}

/// Writes `records` to `path` (atomically).
pub fn write_csv(path: &Path, records: &[EpochRecord]) -> Result<()> {
    write_atomically(path, to_csv(records).as_bytes()).map_err(|e| Error::Data {
        file: path.to_path_buf(),
        message: format!("cannot write the metrics: {e}"),
    })
}

/// Reads a `metrics.csv` written by [`write_csv`].
pub fn read_csv(path: &Path) -> Result<Vec<EpochRecord>> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::Data {
        file: path.to_path_buf(),
        message: format!("cannot read the metrics: {e}"),
    })?;
    let mut lines = text.lines();
    if lines.next().map(str::trim) != Some(CSV_HEADER) {
        return Err(Error::Data {
            file: path.to_path_buf(),
            message: format!("the first line is not the header {CSV_HEADER:?}"),
        });
    }
    lines
        .enumerate()
        .filter(|(_, line)| !line.trim().is_empty())
        .map(|(i, line)| EpochRecord::from_csv_row(line, path, i + 2))
        .collect()
}
