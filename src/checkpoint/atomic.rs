//! Atomic file replacement: a reader, or a machine that crashes, sees the old file or the
//! whole new one, never a part.

use std::ffi::OsStr;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use super::state_dict::checkpoint_error;
use crate::Result;

/// Writes `bytes` to `path` through a temporary file in the same directory: write, flush to
/// disk, rename over `path` (atomic on POSIX and on NTFS), then flush the directory entry
/// where the platform allows. On error `path` is untouched and the temporary file removed.
///
/// Limitation: a process killed between creating and renaming the temporary file leaves it
/// behind, named `.NAME.PID-N.tmp` beside the checkpoint.
pub(crate) fn write_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    let fail = |message: String| checkpoint_error(path, message);
    let Some(file_name) = path.file_name() else {
        return Err(fail("the path does not name a file".to_string()));
    };
    let dir = match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    };

    let (temp_path, mut file) = create_temp_file(dir, file_name).map_err(|e| {
        fail(format!(
            "cannot create a temporary file in {}: {e}",
            dir.display()
        ))
    })?;
    let written = file.write_all(bytes).and_then(|()| file.sync_all());
    drop(file);
    if let Err(e) = written {
        remove_quietly(&temp_path);
        return Err(fail(format!("writing {} failed: {e}", temp_path.display())));
    }

    if let Err(e) = fs::rename(&temp_path, path) {
        remove_quietly(&temp_path);
        return Err(fail(format!(
            "cannot move the written {} into place: {e}",
            temp_path.display()
        )));
    }
    sync_directory(dir);
    Ok(())
}

/// Creates `.NAME.PID-N.tmp` in `dir`, a name no other writer of this or another process uses.
fn create_temp_file(dir: &Path, file_name: &OsStr) -> io::Result<(PathBuf, File)> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    loop {
        let mut name = std::ffi::OsString::from(".");
        name.push(file_name);
        name.push(format!(
            ".{}-{}.tmp",
            process_id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        let temp_path = dir.join(name);
        match OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&temp_path)
        {
            Ok(file) => return Ok((temp_path, file)),
            // A stale file left by a killed process that had the same id: take the next name.
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
    }
}

/// The process id, where the platform has one (`std::process::id` panics on the web).
fn process_id() -> u32 {
    if cfg!(all(target_family = "wasm", target_os = "unknown")) {
        0
    } else {
        std::process::id()
    }
}

fn remove_quietly(path: &Path) {
    if let Err(e) = fs::remove_file(path) {
        log::warn!("could not remove temporary file {}: {e}", path.display());
    }
}

/// Flushes the directory entry of the rename, so it survives a power loss. Only POSIX
/// systems can open a directory to sync it; elsewhere the rename's own durability is all.
fn sync_directory(dir: &Path) {
    #[cfg(unix)]
    if let Err(e) = File::open(dir).and_then(|d| d.sync_all()) {
        log::debug!("could not flush directory {}: {e}", dir.display());
    }
    #[cfg(not(unix))]
    let _ = dir;
}
