//! The run folder: where a training run keeps its checkpoints, its metrics and its plots.
//!
//! ```text
//! RUN/
//!   config.txt               the run's settings, `key = value` per line
//!   last.safetensors         weights after the latest epoch (PyTorch state dict)
//!   last.train.safetensors   optimizer momentum, step, data order: what resuming needs
//!   best.safetensors         weights of the epoch with the best test accuracy
//!   metrics.csv              one row per epoch
//!   curves.svg               loss and accuracy curves
//! ```

use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::error::{Error, Result};

/// A run folder.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunDir {
    root: PathBuf,
}

fn folder_error(path: &Path, message: impl Into<String>) -> Error {
    Error::Checkpoint {
        file: path.to_path_buf(),
        message: message.into(),
    }
}

impl RunDir {
    /// Creates the folder of a new run (and its parents) and checks that files can be
    /// written in it. A folder that already holds a checkpoint is refused, so that no saved
    /// run is overwritten: resume it, or choose another folder.
    pub fn create(path: impl AsRef<Path>) -> Result<Self> {
        let root = path.as_ref().to_path_buf();
        let run = RunDir { root };
        if run.last().exists() {
            return Err(folder_error(
                &run.root,
                "this run folder already holds a checkpoint (last.safetensors); continue it \
                 with --resume, or choose another --out",
            ));
        }
        std::fs::create_dir_all(&run.root)
            .map_err(|e| folder_error(&run.root, format!("cannot create the run folder: {e}")))?;
        run.check_writable()?;
        Ok(run)
    }

    /// Opens the folder of an existing run to resume it: it must hold `last.safetensors`
    /// and be writable.
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let run = RunDir {
            root: path.as_ref().to_path_buf(),
        };
        if !run.root.is_dir() {
            return Err(folder_error(&run.root, "run folder not found"));
        }
        if !run.last().is_file() {
            return Err(folder_error(
                &run.root,
                "no checkpoint to resume from: last.safetensors is missing",
            ));
        }
        run.check_writable()?;
        Ok(run)
    }

    /// Writes and removes a small file, so that a folder we cannot write fails now rather
    /// than after the first epoch.
    fn check_writable(&self) -> Result<()> {
        let probe = self.root.join(".cenet-write-check");
        write_atomically(&probe, b"cenet").map_err(|e| {
            folder_error(&self.root, format!("the run folder is not writable: {e}"))
        })?;
        let _ = std::fs::remove_file(&probe);
        Ok(())
    }

    /// The folder.
    pub fn path(&self) -> &Path {
        &self.root
    }

    /// `last.safetensors`: the weights of the latest checkpoint.
    pub fn last(&self) -> PathBuf {
        self.root.join("last.safetensors")
    }

    /// `best.safetensors`: the weights with the best test accuracy so far.
    pub fn best(&self) -> PathBuf {
        self.root.join("best.safetensors")
    }

    /// `metrics.csv`.
    pub fn metrics_csv(&self) -> PathBuf {
        self.root.join("metrics.csv")
    }

    /// `curves.svg`.
    pub fn curves_svg(&self) -> PathBuf {
        self.root.join("curves.svg")
    }

    /// `config.txt`.
    pub fn config_txt(&self) -> PathBuf {
        self.root.join("config.txt")
    }
}

/// A fresh run folder name under `runs/`: `runs/MODEL-DATASET-YYYYMMDD-HHMMSS` (UTC).
pub fn default_run_path(model: &str, dataset: &str) -> PathBuf {
    let seconds = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    Path::new("runs").join(format!("{model}-{dataset}-{}", utc_stamp(seconds)))
}

/// `YYYYMMDD-HHMMSS` for a Unix time, in UTC.
pub fn utc_stamp(unix_seconds: u64) -> String {
    let days = (unix_seconds / 86_400) as i64;
    let rest = unix_seconds % 86_400;
    let (year, month, day) = civil_from_days(days);
    format!(
        "{year:04}{month:02}{day:02}-{:02}{:02}{:02}",
        rest / 3600,
        rest / 60 % 60,
        rest % 60
    )
}

/// The proleptic Gregorian date of a day count since 1970-01-01 (Howard Hinnant's
/// `civil_from_days` algorithm, in eras of 400 years).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z.rem_euclid(146_097);
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let mp = (5 * day_of_year + 2) / 153;
    let day = (day_of_year - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// Writes `bytes` to `path` through a temporary file in the same folder renamed over it, so
/// that a reader (or a crash) sees the old file or the whole new one. For the run's text
/// files; checkpoints have their own atomic writer in [`crate::checkpoint`].
pub fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let name = path.file_name().ok_or_else(|| {
        std::io::Error::new(std::io::ErrorKind::InvalidInput, "the path names no file")
    })?;
    let mut temp_name = std::ffi::OsString::from(".");
    temp_name.push(name);
    temp_name.push(format!(".{}.tmp", std::process::id()));
    let temp = path.with_file_name(temp_name);
    let written = std::fs::File::create(&temp).and_then(|mut file| {
        file.write_all(bytes)?;
        file.sync_all()
    });
    let renamed = written.and_then(|()| std::fs::rename(&temp, path));
    if renamed.is_err() {
        let _ = std::fs::remove_file(&temp);
    }
    renamed
}
