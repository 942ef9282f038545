//! What the runner tells its user: one-line messages on standard output and progress bars
//! on standard error, both switchable off (tests, scripts).

use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// Where the runner's messages and progress bars go.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Console {
    /// Print one-line messages (the data set used, per-epoch summaries).
    pub messages: bool,
    /// Draw progress bars (only where standard error is a terminal).
    pub progress: bool,
}

impl Console {
    /// Messages and progress bars.
    pub const INTERACTIVE: Console = Console {
        messages: true,
        progress: true,
    };

    /// Nothing at all.
    pub const SILENT: Console = Console {
        messages: false,
        progress: false,
    };

    /// Prints a line for the user (and logs it at `info`).
    pub fn say(&self, line: &str) {
        log::info!("{line}");
        if self.messages {
            println!("{line}");
        }
    }

    /// A progress bar over `len` items showing `prefix`, or a hidden one.
    pub fn bar(&self, len: u64, prefix: String) -> ProgressBar {
        if !self.progress {
            return ProgressBar::hidden();
        }
        let bar = ProgressBar::with_draw_target(Some(len), ProgressDrawTarget::stderr());
        let style = ProgressStyle::with_template(
            "{prefix} [{bar:30}] {pos}/{len} {elapsed_precise}<{eta_precise} {msg}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ");
        bar.set_style(style);
        bar.set_prefix(prefix);
        bar.enable_steady_tick(Duration::from_millis(500));
        bar
    }

    /// A progress bar over `len` bytes (downloads).
    pub fn byte_bar(&self, len: Option<u64>, prefix: String) -> ProgressBar {
        if !self.progress {
            return ProgressBar::hidden();
        }
        let bar = ProgressBar::with_draw_target(len, ProgressDrawTarget::stderr());
        let style = ProgressStyle::with_template(
            "{prefix} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} {eta}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ");
        bar.set_style(style);
        bar.set_prefix(prefix);
        bar
    }
}
