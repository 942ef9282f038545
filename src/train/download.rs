//! Fetching CIFAR-10 and CIFAR-100: the official binary archive, checked against its
//! published MD5 and unpacked into the data folder.
//!
//! The archive is fetched with the system's `curl` (on Linux, macOS and Windows 10+), which
//! keeps an HTTP and TLS stack out of the build. An archive already in the data folder
//! (copied there by hand on a machine without network) is checked and unpacked without any
//! network access. Unpacking goes to a temporary folder first, so an interrupted unpack
//! never leaves a half-filled `cifar-10-batches-bin`.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use md5::{Digest, Md5};

use super::console::Console;
use crate::data::cifar::CifarKind;
use crate::error::{Error, Result};

/// One downloadable archive.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Archive {
    /// The set it holds.
    pub kind: CifarKind,
    /// Where it is published.
    pub url: String,
    /// Its file name.
    pub file_name: String,
    /// Its MD5, lowercase hex.
    pub md5: String,
    /// Its size in bytes (for the progress bar).
    pub bytes: u64,
}

impl Archive {
    /// The official archive of `kind` (Krizhevsky's page at the University of Toronto).
    pub fn official(kind: CifarKind) -> Self {
        let (file_name, md5, bytes) = match kind {
            CifarKind::Cifar10 => (
                "cifar-10-binary.tar.gz",
                "c32a1d4ab5d03f1284b67883e8d87530",
                170_052_171,
            ),
            CifarKind::Cifar100 => (
                "cifar-100-binary.tar.gz",
                "03b5dce01913d631647c71ecec9e9cb8",
                168_513_733,
            ),
        };
        Archive {
            kind,
            url: format!("https://www.cs.toronto.edu/~kriz/{file_name}"),
            file_name: file_name.to_string(),
            md5: md5.to_string(),
            bytes,
        }
    }
}

fn data_error(file: &Path, message: impl Into<String>) -> Error {
    Error::Data {
        file: file.to_path_buf(),
        message: message.into(),
    }
}

/// Makes sure `data_dir` holds the unpacked set of `archive`: nothing to do if it does;
/// otherwise an archive file already in `data_dir` is checked and unpacked; otherwise, with
/// `network`, the archive is downloaded first. Returns the folder holding the files.
pub fn prepare(
    archive: &Archive,
    data_dir: &Path,
    network: bool,
    console: Console,
) -> Result<PathBuf> {
    let kind = archive.kind;
    let target = data_dir.join(kind.folder_name());
    if has_all_files(kind, &target) {
        console.say(&format!(
            "{} is already in {}",
            kind.name(),
            target.display()
        ));
        return Ok(target);
    }
    std::fs::create_dir_all(data_dir)
        .map_err(|e| data_error(data_dir, format!("cannot create the data folder: {e}")))?;
    let archive_path = data_dir.join(&archive.file_name);
    if !archive_path.is_file() {
        if !network {
            return Err(data_error(
                data_dir,
                offline_message(archive, data_dir, None),
            ));
        }
        fetch(archive, &archive_path, console)?;
    }
    console.say(&format!("checking {}", archive_path.display()));
    verify_md5(&archive_path, &archive.md5)?;
    unpack(&archive_path, data_dir, kind.folder_name())?;
    if !has_all_files(kind, &target) {
        return Err(data_error(
            &archive_path,
            format!(
                "the archive unpacked, but {} lacks some of {}",
                target.display(),
                expected_files(kind).join(", ")
            ),
        ));
    }
    console.say(&format!(
        "{} unpacked into {}",
        kind.name(),
        target.display()
    ));
    Ok(target)
}

fn expected_files(kind: CifarKind) -> Vec<&'static str> {
    kind.train_files()
        .iter()
        .copied()
        .chain([kind.test_file()])
        .collect()
}

fn has_all_files(kind: CifarKind, folder: &Path) -> bool {
    expected_files(kind)
        .iter()
        .all(|f| folder.join(f).is_file())
}

/// What to do by hand when the archive cannot be fetched.
fn offline_message(archive: &Archive, data_dir: &Path, reason: Option<&str>) -> String {
    let why = reason.map_or("no network access was allowed".to_string(), |r| {
        format!("the download failed ({r})")
    });
    format!(
        "{} is not here and {why}. Fetch {} on a machine with network access and put it in \
         {} (it is checked against MD5 {}), then run again; or unpack it there yourself so \
         that {} holds {}",
        archive.kind.name(),
        archive.url,
        data_dir.display(),
        archive.md5,
        data_dir.join(archive.kind.folder_name()).display(),
        expected_files(archive.kind).join(", ")
    )
}

/// Downloads `archive.url` to `dest` through a temporary file, showing a progress bar.
fn fetch(archive: &Archive, dest: &Path, console: Console) -> Result<()> {
    let partial = dest.with_extension("part");
    let _ = std::fs::remove_file(&partial);
    console.say(&format!("downloading {}", archive.url));
    let child = Command::new("curl")
        .args(["--location", "--fail", "--silent", "--show-error"])
        .args(["--connect-timeout", "20", "--output"])
        .arg(&partial)
        .arg(&archive.url)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn();
    let mut child = match child {
        Ok(child) => child,
        Err(e) => {
            let reason = format!("curl could not be started: {e}");
            return Err(data_error(
                dest,
                offline_message(archive, dest.parent().unwrap_or(dest), Some(&reason)),
            ));
        }
    };
    let bar = console.byte_bar(Some(archive.bytes), archive.file_name.clone());
    let status = loop {
        if let Some(status) = child
            .try_wait()
            .map_err(|e| data_error(dest, e.to_string()))?
        {
            break status;
        }
        if let Ok(meta) = std::fs::metadata(&partial) {
            bar.set_position(meta.len());
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    bar.finish_and_clear();
    if !status.success() {
        let mut stderr = String::new();
        if let Some(mut pipe) = child.stderr.take() {
            let _ = pipe.read_to_string(&mut stderr);
        }
        let _ = std::fs::remove_file(&partial);
        let reason = format!("curl: {}", stderr.trim());
        let folder = dest.parent().unwrap_or(dest);
        return Err(data_error(
            dest,
            offline_message(archive, folder, Some(&reason)),
        ));
    }
    std::fs::rename(&partial, dest)
        .map_err(|e| data_error(dest, format!("cannot move the download into place: {e}")))
}

/// The MD5 of a file, lowercase hex.
pub fn md5_hex(path: &Path) -> Result<String> {
    let mut file =
        std::fs::File::open(path).map_err(|e| data_error(path, format!("cannot read: {e}")))?;
    let mut hasher = Md5::new();
    let mut buffer = vec![0u8; 1 << 20];
    loop {
        let n = file
            .read(&mut buffer)
            .map_err(|e| data_error(path, format!("cannot read: {e}")))?;
        if n == 0 {
            break;
        }
        hasher.update(&buffer[..n]);
    }
    Ok(hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect())
}

/// Checks a file's MD5 against `expected` (hex, any case).
pub fn verify_md5(path: &Path, expected: &str) -> Result<()> {
    let got = md5_hex(path)?;
    if !got.eq_ignore_ascii_case(expected) {
        return Err(data_error(
            path,
            format!(
                "MD5 {got} does not match the published {expected}: the file is damaged or \
                 not the official archive; delete it and fetch it again"
            ),
        ));
    }
    Ok(())
}

/// Unpacks the gzipped tar `archive` into `data_dir`, where it must create the folder
/// `folder`: into a temporary folder first, then moved into place.
pub fn unpack(archive: &Path, data_dir: &Path, folder: &str) -> Result<()> {
    let staging = data_dir.join(format!(".unpack-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&staging);
    std::fs::create_dir_all(&staging).map_err(|e| {
        data_error(
            data_dir,
            format!("cannot create {}: {e}", staging.display()),
        )
    })?;
    let result = (|| {
        let file = std::fs::File::open(archive)
            .map_err(|e| data_error(archive, format!("cannot read: {e}")))?;
        let mut tar = tar::Archive::new(flate2::read::GzDecoder::new(file));
        // `unpack` refuses entries that would land outside `staging` (`..`, absolute paths).
        tar.unpack(&staging)
            .map_err(|e| data_error(archive, format!("cannot unpack: {e}")))?;
        let unpacked = staging.join(folder);
        if !unpacked.is_dir() {
            return Err(data_error(
                archive,
                format!("the archive holds no {folder} folder"),
            ));
        }
        let target = data_dir.join(folder);
        if target.exists() {
            std::fs::remove_dir_all(&target).map_err(|e| {
                data_error(
                    &target,
                    format!("cannot replace the incomplete folder: {e}"),
                )
            })?;
        }
        std::fs::rename(&unpacked, &target)
            .map_err(|e| data_error(&target, format!("cannot move the unpacked files: {e}")))
    })();
    let _ = std::fs::remove_dir_all(&staging);
    result
}
