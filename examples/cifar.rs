//! Train, evaluate and inspect CIFAR networks (ResNet with and without Channel Equilibrium).
//!
//! ```text
//! cargo run --release --example cifar -- train --model resnet20-ce --epochs 30
//! cargo run --release --example cifar -- train --resume runs/resnet20-ce-cifar10-…
//! cargo run --release --example cifar -- eval --checkpoint runs/…/best.safetensors
//! cargo run --release --example cifar -- inspect --checkpoint runs/…/best.safetensors
//! cargo run --release --example cifar -- download
//! ```
//!
//! `--help` after any subcommand lists its options. Everything it does lives in
//! `cenet::train`; this file parses the command line and handles Ctrl-C.

use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use cenet::train::{cli, Stop};

fn main() -> ExitCode {
    // wgpu's GL backend logs an error when it probes for EGL on machines without one; the
    // Vulkan or Metal adapter chosen afterwards works, so that probe is kept quiet.
    let filter = "warn,wgpu_hal::gles=off";
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or(filter)).init();
    let invocation = match cli::parse(std::env::args_os()) {
        Ok(invocation) => invocation,
        Err(e) => e.exit(),
    };

    // The first Ctrl-C lets the current step finish, saves a checkpoint and exits; a second
    // one exits at once.
    let interrupt = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&interrupt);
    let handler = ctrlc::set_handler(move || {
        if flag.swap(true, Ordering::SeqCst) {
            eprintln!("\ninterrupted again: exiting without saving");
            std::process::exit(130);
        }
        eprintln!(
            "\ninterrupt: finishing the current step, then saving (Ctrl-C again to quit now)"
        );
    });
    if let Err(e) = handler {
        eprintln!("warning: Ctrl-C will not save a checkpoint: {e}");
    }

    match cli::execute(invocation, None, Some(interrupt)) {
        // Interrupted runs saved a checkpoint; 130 tells a script that they were stopped.
        Ok(cli::Outcome::Trained(run)) if run.stop == Stop::Interrupted => ExitCode::from(130),
        Ok(_) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
