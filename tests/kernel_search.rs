//! The kernel search: a device that searches measures the kernel families of each dense
//! convolution pass once, runs the fastest, keeps the choices in a file per adapter that the
//! next device loads instead of measuring, and ignores a file it cannot trust.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use cenet::gpu::{AdapterChoice, KernelSearch};
use cenet::kernels::conv::{self, Conv2d};
use cenet::Gpu;
use common::reference::conv as reference;
use common::*;

/// A fresh, empty folder for one test's choices files.
fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("cenet-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn open(dir: &Path, budget: Duration) -> Gpu {
    let _ = env_logger::builder().is_test(true).try_init();
    let choice = AdapterChoice {
        search: KernelSearch {
            enabled: Some(true),
            cache_dir: Some(dir.to_path_buf()),
            budget: Some(budget),
        },
        ..AdapterChoice::from_env()
    };
    pollster::block_on(Gpu::new_async(choice)).expect("a GPU adapter")
}

/// The only file in `dir`.
fn choices_file(dir: &Path) -> PathBuf {
    let files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(files.len(), 1, "{files:?}");
    files[0].clone()
}

/// Runs the forward pass and both gradients of a 3×3 convolution with 24 output channels,
/// for which several kernel families fit each pass, and checks them against the float64
/// reference.
fn run_convolution(gpu: &Gpu) {
    let conv = Conv2d::new(1, 1);
    let (xs, ws) = ([2, 12, 7, 9], [24, 12, 3, 3]);
    let ys = reference::conv2d_output_shape(xs, ws, &conv);
    let mut rng = Rng::new(7);
    let x = through_f32(&rng.normal(xs.iter().product()));
    let w = through_f32(&rng.normal(ws.iter().product()));
    let dy = through_f32(&rng.normal(ys.iter().product()));
    let (xt, wt, dyt) = (
        upload_to(gpu, &xs, &x),
        upload_to(gpu, &ws, &w),
        upload_to(gpu, &ys, &dy),
    );
    let y = conv::forward(gpu, &conv, &xt, &wt, None).unwrap();
    let want = reference::conv2d_forward(&x, xs, &w, ws, None, &conv);
    assert_close("forward", &download_from(gpu, &y), &want, TOL_REDUCTION);
    let grads = conv::backward(gpu, &conv, &xt, &wt, &dyt, false).unwrap();
    let want = reference::conv2d_backward_data(&dy, &w, ws, xs, &conv);
    let got = download_from(gpu, &grads.input);
    assert_close("input gradient", &got, &want, TOL_REDUCTION);
    let want = reference::conv2d_backward_weight(&x, xs, &dy, ws, &conv);
    let got = download_from(gpu, &grads.weight);
    assert_close("weight gradient", &got, &want, TOL_REDUCTION);
}

#[test]
fn a_searching_device_measures_each_pass_once_and_the_next_device_reuses_its_file() {
    let dir = temp_dir("search-reuse");
    let first = open(&dir, Duration::from_secs(120));
    assert!(first.searches_kernels());
    assert!(first.kernel_choices().is_empty());
    run_convolution(&first);
    assert_eq!(
        first.kernel_choices_measured(),
        3,
        "{:?}",
        first.kernel_choices()
    );
    // Recording the same passes again measures nothing more.
    run_convolution(&first);
    assert_eq!(first.kernel_choices_measured(), 3);
    let choices = first.kernel_choices();
    for pass in ["forward", "backward_data", "backward_weight"] {
        let hits = choices
            .iter()
            .filter(|(key, value)| {
                key.contains(&format!("conv2d {pass} x 2x12x7x9 w 24x12x3x3"))
                    && conv::GemmKernel::parse(value).is_some()
            })
            .count();
        assert_eq!(hits, 1, "{pass}: {choices:?}");
    }
    let file = choices_file(&dir);
    let text = std::fs::read_to_string(&file).unwrap();
    assert_eq!(text.lines().count(), 4, "{text}");
    assert!(text.starts_with("cenet-kernel-choices-1 "), "{text}");
    drop(first);

    let second = open(&dir, Duration::from_secs(120));
    assert_eq!(
        second.kernel_choices(),
        choices,
        "loaded from {}",
        file.display()
    );
    run_convolution(&second);
    assert_eq!(second.kernel_choices_measured(), 0);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_corrupt_or_foreign_choices_file_is_ignored_and_rewritten() {
    let dir = temp_dir("search-corrupt");
    let gpu = open(&dir, Duration::from_secs(120));
    run_convolution(&gpu);
    let file = choices_file(&dir);
    let good = std::fs::read_to_string(&file).unwrap();
    drop(gpu);

    // A header from other kernels or another driver voids the whole file.
    std::fs::write(&file, good.replacen("shaders ", "shaders 0", 1)).unwrap();
    let gpu = open(&dir, Duration::from_secs(120));
    assert!(
        gpu.kernel_choices().is_empty(),
        "{:?}",
        gpu.kernel_choices()
    );
    run_convolution(&gpu);
    assert_eq!(gpu.kernel_choices_measured(), 3);
    assert_eq!(std::fs::read_to_string(&file).unwrap().lines().count(), 4);
    drop(gpu);

    // Under the right header, a line that is not `key = value` is skipped, and a choice
    // naming no kernel is measured again.
    let mut lines: Vec<String> = good.lines().map(String::from).collect();
    let forward = lines.iter().position(|l| l.contains(" forward ")).unwrap();
    lines[forward] = format!(
        "{} = no-such-kernel",
        lines[forward].split(" = ").next().unwrap()
    );
    lines.push("garbage without an equals sign".into());
    std::fs::write(&file, lines.join("\n")).unwrap();
    let gpu = open(&dir, Duration::from_secs(120));
    run_convolution(&gpu);
    assert_eq!(
        gpu.kernel_choices_measured(),
        1,
        "{:?}",
        gpu.kernel_choices()
    );
    let text = std::fs::read_to_string(&file).unwrap();
    assert!(
        !text.contains("garbage") && !text.contains("no-such-kernel"),
        "{text}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_spent_budget_keeps_the_default_kernels_and_writes_nothing() {
    let dir = temp_dir("search-budget");
    let gpu = open(&dir, Duration::ZERO);
    run_convolution(&gpu);
    assert_eq!(gpu.kernel_choices_measured(), 0);
    assert!(gpu.kernel_choices().is_empty());
    assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 0);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn software_adapters_do_not_search_unless_asked() {
    let _ = env_logger::builder().is_test(true).try_init();
    let choice = AdapterChoice {
        search: KernelSearch::default(),
        ..AdapterChoice::from_env()
    };
    let gpu = pollster::block_on(Gpu::new_async(choice)).expect("a GPU adapter");
    if gpu.adapter().is_software() {
        assert!(!gpu.searches_kernels(), "{}", gpu.adapter());
    }
}
