//! Kernel choices measured on this adapter: which of several kernels that compute the same
//! product ran fastest, kept for the life of the device and, natively, in a file per adapter
//! so that the next run starts without measuring again.
//!
//! The store knows nothing of the kernels: callers (the convolution ops) name a product with a
//! key and a kernel with a value. A file is only trusted while its header matches this build's
//! kernels and this adapter's driver; otherwise it is ignored and rewritten.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use super::AdapterSummary;

/// Shaders whose kernels the choices pick between: a change to any of them voids the file.
const CHOSEN_SHADERS: &[&str] = &["conv2d_gemm", "conv2d_reduce"];
/// First word of a choices file's header, naming its format.
const FORMAT: &str = "cenet-kernel-choices-1";

/// Whether and where kernel choices are measured.
#[derive(Clone, Debug, Default)]
pub struct KernelSearch {
    /// Measure the candidates of a product the first time it is recorded; `None` does so on
    /// hardware GPUs reached natively and not on software adapters, whose defaults were
    /// chosen by measurement on lavapipe and for which a search costs more than it gains.
    pub enabled: Option<bool>,
    /// Folder of the choices files; `None` uses `CENET_CACHE_DIR`, else
    /// `$XDG_CACHE_HOME/cenet`, else `~/.cache/cenet`. Without any, choices last one run.
    pub cache_dir: Option<PathBuf>,
    /// Most wall-clock time one device spends measuring; past it, products not yet measured
    /// keep their default kernels for this run and are measured by a later one.
    pub budget: Option<Duration>,
}

/// Default measuring budget per device.
const DEFAULT_BUDGET: Duration = Duration::from_secs(30);

pub(crate) struct KernelChoices {
    enabled: bool,
    file: Option<PathBuf>,
    header: String,
    entries: Mutex<BTreeMap<String, String>>,
    budget_left: Mutex<Duration>,
    measured: AtomicUsize,
}

impl KernelChoices {
    /// The store for `adapter`, loaded from its file when one matches.
    pub(crate) fn open(search: &KernelSearch, adapter: &AdapterSummary) -> Self {
        let native = cfg!(not(target_arch = "wasm32"));
        let hardware = !adapter.is_software() && adapter.backend != wgpu::Backend::BrowserWebGpu;
        let enabled = native && search.enabled.unwrap_or(hardware);
        let header = header(adapter);
        let file = if enabled {
            cache_dir(search).map(|dir| dir.join(format!("kernels-{:016x}.txt", fnv1a(&header))))
        } else {
            None
        };
        let entries = file.as_ref().map(|f| load(f, &header)).unwrap_or_default();
        KernelChoices {
            enabled,
            file,
            header,
            entries: Mutex::new(entries),
            budget_left: Mutex::new(search.budget.unwrap_or(DEFAULT_BUDGET)),
            measured: AtomicUsize::new(0),
        }
    }

    pub(crate) fn enabled(&self) -> bool {
        self.enabled
    }

    pub(crate) fn file(&self) -> Option<&std::path::Path> {
        self.file.as_deref()
    }

    pub(crate) fn get(&self, key: &str) -> Option<String> {
        lock(&self.entries).get(key).cloned()
    }

    pub(crate) fn all(&self) -> Vec<(String, String)> {
        lock(&self.entries)
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }

    /// Stores a measured choice and rewrites the file; a file that cannot be written is
    /// logged, and the choice still holds for this run.
    pub(crate) fn set(&self, key: &str, value: &str) {
        self.measured.fetch_add(1, Ordering::Relaxed);
        let text = {
            let mut entries = lock(&self.entries);
            entries.insert(key.to_string(), value.to_string());
            let mut text = format!("{}\n", self.header);
            for (k, v) in entries.iter() {
                text.push_str(&format!("{k} = {v}\n"));
            }
            text
        };
        if let Some(file) = &self.file {
            save(file, &text);
        }
    }

    pub(crate) fn measured(&self) -> usize {
        self.measured.load(Ordering::Relaxed)
    }

    pub(crate) fn time_left(&self) -> Duration {
        *lock(&self.budget_left)
    }

    pub(crate) fn spend(&self, spent: Duration) {
        let mut left = lock(&self.budget_left);
        *left = left.saturating_sub(spent);
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The first line of a choices file: what the choices were measured with.
fn header(adapter: &AdapterSummary) -> String {
    let mut shaders = String::new();
    for name in CHOSEN_SHADERS {
        shaders.push_str(crate::shaders::source(name).unwrap_or_default());
    }
    format!(
        "{FORMAT} cenet {} shaders {:016x} adapter {} | {:?} | {}",
        env!("CARGO_PKG_VERSION"),
        fnv1a(&shaders),
        adapter.name,
        adapter.backend,
        adapter.driver
    )
}

/// 64-bit FNV-1a: a hash that stays the same across builds and platforms, for file names and
/// fingerprints.
fn fnv1a(text: &str) -> u64 {
    text.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ b as u64).wrapping_mul(0x0100_0000_01b3)
    })
}

fn cache_dir(search: &KernelSearch) -> Option<PathBuf> {
    let env = |name: &str| {
        std::env::var_os(name)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    search
        .cache_dir
        .clone()
        .or_else(|| env("CENET_CACHE_DIR"))
        .or_else(|| env("XDG_CACHE_HOME").map(|d| d.join("cenet")))
        .or_else(|| env("HOME").map(|d| d.join(".cache").join("cenet")))
}

/// The choices in `file` if its header is `header`. A missing file is normal; an unreadable
/// or mismatched one is logged and ignored (it is rewritten at the next choice), and so is
/// any line that is not `key = value`.
fn load(file: &std::path::Path, header: &str) -> BTreeMap<String, String> {
    let mut entries = BTreeMap::new();
    let text = match std::fs::read_to_string(file) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return entries,
        Err(e) => {
            log::warn!(
                "cenet: ignoring kernel choices file {}: cannot read it: {e}",
                file.display()
            );
            return entries;
        }
    };
    let mut lines = text.lines();
    if lines.next() != Some(header) {
        log::info!(
            "cenet: kernel choices file {} was measured with other kernels or another driver; \
             measuring again",
            file.display()
        );
        return entries;
    }
    for (i, line) in lines.enumerate() {
        match line.split_once(" = ") {
            Some((key, value)) if !key.is_empty() && !value.is_empty() => {
                entries.insert(key.to_string(), value.to_string());
            }
            _ => log::warn!(
                "cenet: kernel choices file {} line {}: expected `key = value`, ignored",
                file.display(),
                i + 2
            ),
        }
    }
    entries
}

fn save(file: &std::path::Path, text: &str) {
    let written = file
        .parent()
        .map_or(Ok(()), std::fs::create_dir_all)
        .map_err(|e| e.to_string())
        .and_then(|()| {
            crate::checkpoint::write_atomically(file, text.as_bytes()).map_err(|e| e.to_string())
        });
    if let Err(e) = written {
        log::warn!(
            "cenet: cannot save kernel choices to {}: {e}; they hold for this run only",
            file.display()
        );
    }
}
