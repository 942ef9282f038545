//! Checkpoints: exact round trips, the safetensors byte layout, atomic writes, strict key
//! checks, error messages, and a seeded fuzz of the loader. Pure CPU: no GPU needed.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use cenet::checkpoint::{
    load_checkpoint, save_checkpoint, ElementType, StateDict, TensorSpec, TrainingState,
    WEIGHTS_STEP_KEY,
};
use cenet::Error;
use rand::{Rng as _, SeedableRng};
use rand_chacha::ChaCha8Rng;

// --- Helpers ---------------------------------------------------------------------------------

/// A fresh directory under the system's temporary directory, removed when dropped.
struct TestDir(PathBuf);

impl TestDir {
    fn new(test: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("cenet-ckpt-{}-{test}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).expect("create test directory");
        TestDir(dir)
    }

    fn join(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }

    /// The names in the directory, sorted.
    fn listing(&self) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(&self.0)
            .expect("list test directory")
            .map(|entry| {
                entry
                    .expect("entry")
                    .file_name()
                    .to_string_lossy()
                    .into_owned()
            })
            .collect();
        names.sort();
        names
    }
}

impl Drop for TestDir {
    fn drop(&mut self) {
        make_writable(&self.0);
        let _ = fs::remove_dir_all(&self.0);
    }
}

fn make_writable(dir: &Path) {
    if let Ok(metadata) = fs::metadata(dir) {
        let mut permissions = metadata.permissions();
        #[allow(clippy::permissions_set_readonly_false)]
        permissions.set_readonly(false);
        let _ = fs::set_permissions(dir, permissions);
    }
}

/// The message of a checkpoint error, after checking that it names `file`.
fn checkpoint_message(error: Error, file: &Path) -> String {
    match error {
        Error::Checkpoint {
            file: named,
            message,
        } => {
            assert_eq!(named, file, "the error names another file: {message}");
            message
        }
        other => panic!(
            "expected a checkpoint error naming {}, got: {other}",
            file.display()
        ),
    }
}

/// A small ResNet-like state dict: conv, batch norm with its int64 counter, linear head.
fn resnet_like(seed: u64) -> StateDict {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut normal =
        |n: usize| -> Vec<f32> { (0..n).map(|_| rng.random_range(-1.0..1.0)).collect() };
    let mut dict = StateDict::new();
    dict.set_metadata("format", "pt");
    dict.insert_f32("conv1.weight", &[4, 3, 3, 3], normal(108))
        .unwrap();
    dict.insert_f32("bn1.weight", &[4], normal(4)).unwrap();
    dict.insert_f32("bn1.bias", &[4], normal(4)).unwrap();
    dict.insert_f32("bn1.running_mean", &[4], normal(4))
        .unwrap();
    dict.insert_f32("bn1.running_var", &[4], vec![1.0; 4])
        .unwrap();
    dict.insert_i64_scalar("bn1.num_batches_tracked", 1234)
        .unwrap();
    dict.insert_f32("fc.weight", &[10, 4], normal(40)).unwrap();
    dict.insert_f32("fc.bias", &[10], normal(10)).unwrap();
    dict
}

fn resnet_like_specs() -> Vec<TensorSpec> {
    vec![
        TensorSpec::f32("conv1.weight", &[4, 3, 3, 3]),
        TensorSpec::f32("bn1.weight", &[4]),
        TensorSpec::f32("bn1.bias", &[4]),
        TensorSpec::f32("bn1.running_mean", &[4]),
        TensorSpec::f32("bn1.running_var", &[4]),
        TensorSpec::i64_scalar("bn1.num_batches_tracked"),
        TensorSpec::f32("fc.weight", &[10, 4]),
        TensorSpec::f32("fc.bias", &[10]),
    ]
}

/// A safetensors file assembled by hand from a header string and data bytes.
fn hand_written_file(header: &str, data: &[u8]) -> Vec<u8> {
    let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
    bytes.extend_from_slice(header.as_bytes());
    bytes.extend_from_slice(data);
    bytes
}

fn f32_bytes(values: &[f32]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

// --- Round trips -----------------------------------------------------------------------------

#[test]
fn round_trip_through_a_file_is_bit_identical() {
    let dir = TestDir::new("round-trip");
    let path = dir.join("model.safetensors");
    let special = vec![
        f32::from_bits(0x7fc0_1234), // a NaN with a payload
        f32::from_bits(0xffa0_0001), // a negative signalling NaN
        -0.0,
        0.0,
        f32::MIN_POSITIVE / 8.0, // subnormal
        f32::INFINITY,
        f32::NEG_INFINITY,
        f32::MAX,
        1.0 / 3.0,
    ];
    let mut dict = resnet_like(1);
    dict.insert_f32("special", &[3, 3], special.clone())
        .unwrap();
    dict.insert_values("extremes", &[3], vec![i64::MIN, -1, i64::MAX])
        .unwrap();
    dict.insert_values("doubles", &[2], vec![std::f64::consts::PI, -0.0f64])
        .unwrap();
    dict.insert_values("ints", &[2, 2], vec![i32::MIN, -7, 0, i32::MAX])
        .unwrap();
    dict.insert_values("mask", &[5], vec![0u8, 1, 127, 128, 255])
        .unwrap();
    dict.insert_values("words", &[2], vec![u64::MAX, 0x0123_4567_89ab_cdef])
        .unwrap();
    dict.insert_f32("empty", &[0, 3], vec![]).unwrap();
    dict.set_metadata("model", "resnet-like");

    dict.save(&path).unwrap();
    let loaded = StateDict::load(&path).unwrap();

    assert_eq!(loaded, dict);
    assert_eq!(loaded.metadata(), dict.metadata());
    assert_eq!(loaded.origin(), Some(path.as_path()));
    let (shape, values) = loaded.get_f32("special").unwrap();
    assert_eq!(shape, &[3, 3]);
    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    assert_eq!(bits(values), bits(&special));
    assert_eq!(
        loaded.get_i64_scalar("bn1.num_batches_tracked").unwrap(),
        1234
    );
    assert_eq!(
        loaded.get("bn1.num_batches_tracked").unwrap().shape(),
        &[] as &[usize]
    );
    assert_eq!(loaded.get("empty").unwrap().shape(), &[0, 3]);
}

#[test]
fn to_bytes_and_from_bytes_round_trip_without_a_file_system() {
    let dict = resnet_like(2);
    let bytes = dict.to_bytes().unwrap();
    let loaded =
        StateDict::from_bytes(&bytes, "https://example.invalid/model.safetensors").unwrap();
    assert_eq!(loaded, dict);
    assert_eq!(
        loaded.to_bytes().unwrap(),
        bytes,
        "re-encoding is byte-identical"
    );
}

#[test]
fn inserting_under_an_existing_name_replaces_in_place() {
    let mut dict = resnet_like(3);
    let order: Vec<String> = dict.names().map(str::to_string).collect();
    dict.insert_f32("bn1.bias", &[4], vec![9.0; 4]).unwrap();
    assert_eq!(dict.names().collect::<Vec<_>>(), order);
    assert_eq!(dict.get_f32("bn1.bias").unwrap().1, &[9.0; 4]);
    assert!(dict.remove("bn1.bias").is_some());
    assert!(!dict.contains("bn1.bias"));
    assert_eq!(dict.get_f32("fc.bias").unwrap().0, &[10]);
}

// --- The file layout -------------------------------------------------------------------------

#[test]
fn file_layout_matches_the_safetensors_specification() {
    let mut dict = StateDict::new();
    dict.set_metadata("format", "pt");
    dict.insert_f32("fc.weight", &[2, 3], vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0])
        .unwrap();
    dict.insert_f32("fc.bias", &[2], vec![-0.5, 0.25]).unwrap();
    dict.insert_i64_scalar("bn.num_batches_tracked", 7).unwrap();
    let bytes = dict.to_bytes().unwrap();

    // 8-byte little-endian header length, then JSON padded with spaces to a multiple of 8,
    // then the data: 8-byte elements first, then by name, offsets relative to the data start.
    let json = concat!(
        r#"{"__metadata__":{"format":"pt"},"#,
        r#""bn.num_batches_tracked":{"dtype":"I64","shape":[],"data_offsets":[0,8]},"#,
        r#""fc.bias":{"dtype":"F32","shape":[2],"data_offsets":[8,16]},"#,
        r#""fc.weight":{"dtype":"F32","shape":[2,3],"data_offsets":[16,40]}}"#
    );
    let padded = format!("{json:<width$}", width = json.len().next_multiple_of(8));
    let mut data = 7i64.to_le_bytes().to_vec();
    data.extend(f32_bytes(&[-0.5, 0.25]));
    data.extend(f32_bytes(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]));
    let expected = hand_written_file(&padded, &data);

    assert_eq!(
        String::from_utf8_lossy(&bytes[8..8 + padded.len()]),
        padded,
        "header"
    );
    assert_eq!(bytes, expected);
    assert_eq!(u64::from_le_bytes(bytes[..8].try_into().unwrap()) % 8, 0);
}

#[test]
fn files_from_other_writers_are_read_whatever_their_key_order_and_padding() {
    // Keys out of offset order, metadata last, no padding, extra JSON whitespace.
    let header = concat!(
        r#"{ "w": {"data_offsets": [2, 10], "shape": [2], "dtype": "F32"},"#,
        r#" "m": {"dtype": "U8", "shape": [2], "data_offsets": [0, 2]},"#,
        r#" "__metadata__": {"source": "hand"} }"#
    );
    let mut data = vec![3u8, 4];
    data.extend(f32_bytes(&[1.5, -2.5]));
    let loaded =
        StateDict::from_bytes(&hand_written_file(header, &data), "hand.safetensors").unwrap();

    assert_eq!(loaded.names().collect::<Vec<_>>(), ["m", "w"], "file order");
    assert_eq!(loaded.values::<u8>("m").unwrap().1, &[3, 4]);
    assert_eq!(loaded.get_f32("w").unwrap().1, &[1.5, -2.5]);
    assert_eq!(
        loaded.metadata().get("source").map(String::as_str),
        Some("hand")
    );
}

#[test]
fn no_metadata_means_no_metadata_entry_in_the_header() {
    let mut dict = StateDict::new();
    dict.insert_f32("x", &[1], vec![1.0]).unwrap();
    let bytes = dict.to_bytes().unwrap();
    let header = String::from_utf8_lossy(&bytes[8..]);
    assert!(!header.contains("__metadata__"), "{header}");
}

// --- Atomic writes ---------------------------------------------------------------------------

#[test]
fn save_replaces_the_old_file_and_leaves_no_temporary_files() {
    let dir = TestDir::new("replace");
    let path = dir.join("model.safetensors");
    resnet_like(4).save(&path).unwrap();
    let newer = resnet_like(5);
    newer.save(&path).unwrap();

    assert_eq!(StateDict::load(&path).unwrap(), newer);
    assert_eq!(dir.listing(), ["model.safetensors"]);
}

#[test]
fn readers_never_see_a_half_written_checkpoint() {
    let dir = TestDir::new("concurrent");
    let path = dir.join("model.safetensors");
    // Two checkpoints of different sizes, large enough that writing one takes many syscalls.
    let mut small = StateDict::new();
    small.insert_f32("w", &[1000], vec![1.0; 1000]).unwrap();
    let mut large = StateDict::new();
    large
        .insert_f32("w", &[3, 100_000], vec![2.0; 300_000])
        .unwrap();
    small.save(&path).unwrap();

    let done = Arc::new(AtomicBool::new(false));
    let reads = Arc::new(AtomicUsize::new(0));
    let reader = {
        let (path, done, reads) = (path.clone(), done.clone(), reads.clone());
        let (small, large) = (small.clone(), large.clone());
        std::thread::spawn(move || {
            while !done.load(Ordering::Relaxed) {
                let seen = StateDict::load(&path).expect("a complete checkpoint");
                assert!(
                    seen == small || seen == large,
                    "a mixture of two checkpoints"
                );
                reads.fetch_add(1, Ordering::Relaxed);
            }
        })
    };
    for round in 0..30 {
        if round % 2 == 0 { &large } else { &small }
            .save(&path)
            .unwrap();
    }
    done.store(true, Ordering::Relaxed);
    reader
        .join()
        .expect("the reader saw only whole checkpoints");

    assert!(reads.load(Ordering::Relaxed) > 0);
    assert_eq!(dir.listing(), ["model.safetensors"]);
}

#[test]
fn save_under_a_path_whose_parent_is_a_file_fails_and_leaves_nothing() {
    let dir = TestDir::new("parent-is-file");
    fs::write(dir.join("not-a-dir"), b"plain file").unwrap();
    let path = dir.join("not-a-dir/model.safetensors");

    let message = checkpoint_message(resnet_like(7).save(&path).unwrap_err(), &path);
    assert!(message.contains("temporary file"), "{message}");
    assert_eq!(dir.listing(), ["not-a-dir"]);
    assert_eq!(fs::read(dir.join("not-a-dir")).unwrap(), b"plain file");
}

#[test]
fn failed_rename_keeps_the_destination_and_removes_the_temporary_file() {
    // The destination is a non-empty directory: the temporary file is written in full, then
    // the rename fails.
    let dir = TestDir::new("rename-fails");
    let path = dir.join("model.safetensors");
    fs::create_dir(&path).unwrap();
    fs::write(path.join("keep"), b"old").unwrap();

    let message = checkpoint_message(resnet_like(8).save(&path).unwrap_err(), &path);
    assert!(message.contains("cannot move"), "{message}");
    assert_eq!(dir.listing(), ["model.safetensors"]);
    assert_eq!(fs::read(path.join("keep")).unwrap(), b"old");
}

#[cfg(unix)]
#[test]
fn save_into_a_read_only_directory_keeps_the_old_file() {
    use std::os::unix::fs::PermissionsExt;
    let dir = TestDir::new("read-only");
    let path = dir.join("model.safetensors");
    let old = resnet_like(9);
    old.save(&path).unwrap();
    fs::set_permissions(&dir.0, fs::Permissions::from_mode(0o555)).unwrap();

    let newer = resnet_like(10);
    let result = newer.save(&path);
    fs::set_permissions(&dir.0, fs::Permissions::from_mode(0o755)).unwrap();

    match result {
        Err(error) => {
            let message = checkpoint_message(error, &path);
            assert!(message.contains("temporary file"), "{message}");
            assert_eq!(StateDict::load(&path).unwrap(), old);
        }
        // Root ignores directory permissions: then the save must have completed.
        Ok(()) => assert_eq!(StateDict::load(&path).unwrap(), newer),
    }
    assert_eq!(dir.listing(), ["model.safetensors"]);
}

// --- Strict checks ---------------------------------------------------------------------------

#[test]
fn expect_passes_for_exactly_the_expected_tensors() {
    let dict = resnet_like(11);
    dict.expect(&resnet_like_specs()).unwrap();
    dict.expect_like(&resnet_like(12)).unwrap();
}

#[test]
fn expect_lists_every_missing_unexpected_and_mismatched_key_at_once() {
    let dir = TestDir::new("expect");
    let path = dir.join("model.safetensors");
    let mut dict = resnet_like(13);
    dict.remove("bn1.running_mean");
    dict.remove("fc.bias");
    dict.insert_f32("head.weight", &[2], vec![0.0; 2]).unwrap();
    dict.insert_f32("head.bias", &[2], vec![0.0; 2]).unwrap();
    dict.insert_f32("fc.weight", &[100, 4], vec![0.0; 400])
        .unwrap();
    dict.insert_f32("bn1.num_batches_tracked", &[], vec![0.0])
        .unwrap();
    dict.save(&path).unwrap();

    let loaded = StateDict::load(&path).unwrap();
    let message = checkpoint_message(loaded.expect(&resnet_like_specs()).unwrap_err(), &path);

    assert!(
        message.contains("2 missing, 2 unexpected, 2 mismatched"),
        "{message}"
    );
    assert!(
        message.contains("missing keys: `bn1.running_mean`, `fc.bias`"),
        "{message}"
    );
    for unexpected in ["`head.weight`", "`head.bias`"] {
        assert!(message.contains(unexpected), "{message}");
    }
    assert!(
        message.contains("`fc.weight`: F32 [100, 4] here, expected F32 [10, 4]"),
        "{message}"
    );
    assert!(
        message.contains("`bn1.num_batches_tracked`: F32 [] here, expected I64 []"),
        "{message}"
    );
}

#[test]
fn expect_on_an_in_memory_dict_reports_without_a_file() {
    let error = StateDict::new()
        .expect(&[TensorSpec::f32("w", &[1])])
        .unwrap_err();
    let message = error.to_string();
    assert!(message.starts_with("state dict:"), "{message}");
    assert!(message.contains("missing keys: `w`"), "{message}");
}

// --- Errors with names -----------------------------------------------------------------------

#[test]
fn insert_with_the_wrong_number_of_values_names_the_tensor_and_shape() {
    let mut dict = StateDict::new();
    let message = dict
        .insert_f32("fc.weight", &[2, 3], vec![0.0; 5])
        .unwrap_err()
        .to_string();
    assert!(
        message.contains("fc.weight") && message.contains("[2, 3]"),
        "{message}"
    );
    assert!(dict.is_empty());
}

#[test]
fn the_metadata_key_is_refused_as_a_tensor_name() {
    let message = StateDict::new()
        .insert_f32("__metadata__", &[1], vec![0.0])
        .unwrap_err()
        .to_string();
    assert!(message.contains("__metadata__"), "{message}");
}

#[test]
fn getters_name_the_file_the_tensor_and_both_element_types() {
    let path = Path::new("runs/model.safetensors");
    let loaded = StateDict::from_bytes(&resnet_like(14).to_bytes().unwrap(), path).unwrap();

    let wrong_type =
        checkpoint_message(loaded.get_f32("bn1.num_batches_tracked").unwrap_err(), path);
    assert!(
        wrong_type.contains("`bn1.num_batches_tracked` holds I64, expected F32"),
        "{wrong_type}"
    );
    let missing = checkpoint_message(loaded.get_f32("layer9.weight").unwrap_err(), path);
    assert!(
        missing.contains("no tensor named `layer9.weight`"),
        "{missing}"
    );
    let not_scalar = checkpoint_message(loaded.scalar::<f32>("fc.bias").unwrap_err(), path);
    assert!(not_scalar.contains("expected a scalar"), "{not_scalar}");
}

#[test]
fn a_missing_file_is_named() {
    let path = Path::new("/nonexistent/cenet/model.safetensors");
    let message = checkpoint_message(StateDict::load(path).unwrap_err(), path);
    assert!(message.contains("cannot read"), "{message}");
}

#[test]
fn a_pytorch_zip_archive_is_recognised_as_not_safetensors() {
    let path = Path::new("model.pt");
    let mut zip = b"PK\x03\x04".to_vec();
    zip.extend([0u8; 60]);
    let message = checkpoint_message(StateDict::from_bytes(&zip, path).unwrap_err(), path);
    assert!(message.contains("not a safetensors file"), "{message}");
    assert!(message.contains("zip archive"), "{message}");
}

#[test]
fn a_file_shorter_than_the_length_prefix_is_not_safetensors() {
    let path = Path::new("tiny.safetensors");
    let message = checkpoint_message(StateDict::from_bytes(b"abc", path).unwrap_err(), path);
    assert!(
        message.contains("not a safetensors file: 3 bytes"),
        "{message}"
    );
}

#[test]
fn a_truncated_file_says_so() {
    let path = Path::new("cut.safetensors");
    let bytes = resnet_like(15).to_bytes().unwrap();
    let in_header =
        checkpoint_message(StateDict::from_bytes(&bytes[..40], path).unwrap_err(), path);
    assert!(in_header.contains("truncated"), "{in_header}");
    let in_data = checkpoint_message(
        StateDict::from_bytes(&bytes[..bytes.len() - 1], path).unwrap_err(),
        path,
    );
    assert!(in_data.contains("truncated"), "{in_data}");
}

#[test]
fn a_corrupt_header_is_reported_as_such() {
    let path = Path::new("bad.safetensors");
    let not_json = hand_written_file("{\"x\": [1, 2", &[]);
    let message = checkpoint_message(StateDict::from_bytes(&not_json, path).unwrap_err(), path);
    assert!(message.contains("corrupt header"), "{message}");

    let wrong_size = hand_written_file(
        r#"{"x":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}}"#,
        &[0; 8],
    );
    let message = checkpoint_message(StateDict::from_bytes(&wrong_size, path).unwrap_err(), path);
    assert!(
        message.contains("do not match its dtype and shape"),
        "{message}"
    );
}

#[test]
fn unsupported_dtypes_are_all_named() {
    let path = Path::new("half.safetensors");
    let header = concat!(
        r#"{"a":{"dtype":"F16","shape":[2],"data_offsets":[0,4]},"#,
        r#""b":{"dtype":"BF16","shape":[2],"data_offsets":[4,8]},"#,
        r#""c":{"dtype":"F32","shape":[1],"data_offsets":[8,12]}}"#
    );
    let file = hand_written_file(header, &[0; 12]);
    let message = checkpoint_message(StateDict::from_bytes(&file, path).unwrap_err(), path);
    assert!(
        message.contains("unsupported dtype: `a` is F16, `b` is BF16"),
        "{message}"
    );
    assert!(message.contains("F32"), "{message}");
}

// --- Fuzzing the loader ----------------------------------------------------------------------

/// Loads `bytes`, failing the test with the case's label if the loader panics.
fn load_without_panic(bytes: &[u8], case: &str) -> Result<StateDict, Error> {
    std::panic::catch_unwind(|| StateDict::from_bytes(bytes, "fuzz.safetensors")).unwrap_or_else(
        |_| {
            let shown = &bytes[..bytes.len().min(64)];
            panic!(
                "the loader panicked on {case} ({} bytes, starting {shown:?})",
                bytes.len()
            )
        },
    )
}

#[test]
fn random_bytes_are_refused_without_panicking() {
    let mut rng = ChaCha8Rng::seed_from_u64(0xc0ffee);
    for case in 0..2000 {
        let len = rng.random_range(0..200);
        let mut bytes: Vec<u8> = (0..len).map(|_| rng.random()).collect();
        // Half the cases get a plausible header length, so the JSON parser is reached.
        if case % 2 == 0 && len >= 8 {
            let header_len = rng.random_range(0..=(len as u64 - 8));
            bytes[..8].copy_from_slice(&header_len.to_le_bytes());
        }
        let _ = load_without_panic(&bytes, &format!("random case {case}"));
    }
}

#[test]
fn every_truncation_of_a_valid_file_is_an_error() {
    let bytes = resnet_like(16).to_bytes().unwrap();
    for len in 0..bytes.len() {
        let result = load_without_panic(&bytes[..len], &format!("truncation to {len} bytes"));
        assert!(
            result.is_err(),
            "a file cut to {len} of {} bytes loaded",
            bytes.len()
        );
    }
}

#[test]
fn random_mutations_of_a_valid_file_never_panic() {
    let mut small = StateDict::new();
    small.set_metadata("format", "pt");
    small.insert_f32("w", &[2, 3], vec![1.0; 6]).unwrap();
    small.insert_i64_scalar("n", 3).unwrap();
    small.insert_values("m", &[3], vec![1u8, 2, 3]).unwrap();
    let valid = small.to_bytes().unwrap();
    let header_end = 8 + u64::from_le_bytes(valid[..8].try_into().unwrap()) as usize;
    let json_bytes = b"{}[]\",:0123456789-eE.\\ aFIU";

    let mut rng = ChaCha8Rng::seed_from_u64(0xdecade);
    let mut loaded = 0;
    for case in 0..4000 {
        let mut bytes = valid.clone();
        for _ in 0..rng.random_range(1..=4) {
            let at = rng.random_range(0..bytes.len());
            match rng.random_range(0..6) {
                0 => bytes[at] = rng.random(),
                1 => {
                    bytes[rng.random_range(8..header_end)] =
                        json_bytes[rng.random_range(0..json_bytes.len())]
                }
                2 => bytes[rng.random_range(8..header_end)] = b'0' + rng.random_range(0..10),
                3 => bytes.insert(at, rng.random()),
                4 => {
                    bytes.remove(at);
                }
                _ => bytes[rng.random_range(0..8)] = rng.random(),
            }
            if bytes.is_empty() {
                break;
            }
        }
        if let Ok(dict) = load_without_panic(&bytes, &format!("mutation case {case}")) {
            // Whatever loads must encode again.
            dict.to_bytes().expect("a loaded dict re-encodes");
            loaded += 1;
        }
    }
    // Mutations of tensor data (and of some header digits) keep the file valid.
    assert!(
        loaded > 0,
        "no mutated file loaded: the mutations never reached the data"
    );
}

#[test]
fn offsets_near_the_top_of_u64_are_refused_before_they_overflow() {
    // Eight U64 tensors of 2^58 - 1 elements each: every shape and offset is consistent, but
    // the last offset plus the header length overflows a u64 (safetensors 0.8.0 panics there
    // with overflow checks on).
    let elements = (1u64 << 58) - 1;
    let size = elements * 8;
    let entries: Vec<String> = (0..8u64)
        .map(|i| {
            format!(
                r#""t{i}":{{"dtype":"U64","shape":[{elements}],"data_offsets":[{},{}]}}"#,
                i * size,
                (i + 1) * size
            )
        })
        .collect();
    let file = hand_written_file(&format!("{{{}}}", entries.join(",")), &[]);
    let error = load_without_panic(&file, "huge offsets").unwrap_err();
    let message = checkpoint_message(error, Path::new("fuzz.safetensors"));
    assert!(message.contains("corrupt header"), "{message}");
}

// --- Training state --------------------------------------------------------------------------

fn training_state(seed: u64) -> TrainingState {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut optimizer = StateDict::new();
    for spec in resnet_like_specs() {
        if spec.element_type == ElementType::F32 {
            let n = spec.shape.iter().product();
            let buffer = (0..n).map(|_| rng.random_range(-0.1..0.1)).collect();
            optimizer
                .insert_f32(spec.name, &spec.shape, buffer)
                .unwrap();
        }
    }
    TrainingState {
        epoch: 3,
        step: 1200 + seed,
        schedule_position: 1150,
        learning_rate: 0.1 * 0.5f64.powi(3),
        rng_state: vec![rng.random(), rng.random(), u64::MAX, 0],
        optimizer,
        metadata: BTreeMap::from([
            ("optimizer".to_string(), "sgd".to_string()),
            ("momentum".to_string(), "0.9".to_string()),
        ]),
    }
}

#[test]
fn training_state_round_trips_exactly() {
    let dir = TestDir::new("training");
    let path = dir.join("model.train.safetensors");
    let state = training_state(1);
    state.save(&path).unwrap();
    let loaded = TrainingState::load(&path).unwrap();
    assert_eq!(loaded, state);
    assert_eq!(
        loaded.learning_rate.to_bits(),
        state.learning_rate.to_bits()
    );
    assert_eq!(
        TrainingState::from_bytes(&state.to_bytes().unwrap(), "mem").unwrap(),
        state
    );
    assert_eq!(dir.listing(), ["model.train.safetensors"]);
}

#[test]
fn training_state_lives_beside_the_weights() {
    assert_eq!(
        TrainingState::path_beside("run/model.safetensors"),
        Path::new("run/model.train.safetensors")
    );
    assert_eq!(
        TrainingState::path_beside("run/model"),
        Path::new("run/model.train.safetensors")
    );
    assert_eq!(
        TrainingState::path_beside("m.bin"),
        Path::new("m.bin.train.safetensors")
    );
}

#[test]
fn checkpoint_pair_round_trips_and_a_torn_save_is_detected() {
    let dir = TestDir::new("pair");
    let weights_path = dir.join("model.safetensors");
    let weights = resnet_like(17);
    save_checkpoint(&weights_path, &weights, &training_state(1)).unwrap();
    assert_eq!(
        dir.listing(),
        ["model.safetensors", "model.train.safetensors"]
    );

    let (loaded_weights, loaded_state) = load_checkpoint(&weights_path).unwrap();
    assert_eq!(loaded_state, training_state(1));
    assert_eq!(
        loaded_weights.metadata().get(WEIGHTS_STEP_KEY).unwrap(),
        "1201"
    );
    loaded_weights.expect_like(&weights).unwrap();

    // A crash after the training state was written but before the weights were.
    training_state(2)
        .save(TrainingState::path_beside(&weights_path))
        .unwrap();
    let message = checkpoint_message(load_checkpoint(&weights_path).unwrap_err(), &weights_path);
    assert!(
        message.contains("from step 1201") && message.contains("from step 1202"),
        "{message}"
    );
}

#[test]
fn a_weights_file_is_not_taken_for_a_training_state() {
    let dir = TestDir::new("not-training");
    let path = dir.join("model.safetensors");
    resnet_like(18).save(&path).unwrap();
    let message = checkpoint_message(TrainingState::load(&path).unwrap_err(), &path);
    assert!(
        message.contains("not a cenet training-state file"),
        "{message}"
    );
    assert!(message.contains("format = \"pt\""), "{message}");
}

#[test]
fn training_state_refuses_reserved_metadata_and_reports_missing_counters() {
    let mut state = training_state(3);
    state
        .metadata
        .insert("format".to_string(), "mine".to_string());
    let message = state.to_bytes().unwrap_err().to_string();
    assert!(message.contains("`format` is reserved"), "{message}");

    // A training-state file whose `step` tensor was dropped.
    let bytes = training_state(3).to_bytes().unwrap();
    let mut dict = StateDict::from_bytes(&bytes, "t").unwrap();
    dict.remove("step");
    let path = Path::new("t.train.safetensors");
    let error = TrainingState::from_bytes(&dict.to_bytes().unwrap(), path).unwrap_err();
    let message = checkpoint_message(error, path);
    assert!(message.contains("no tensor named `step`"), "{message}");
}

#[test]
fn random_mutations_of_a_training_state_file_never_panic() {
    // The training state's own fields live in the header's metadata (epoch, step, learning
    // rate, generator state), so the mutations aim there as well as at the raw bytes.
    let mut optimizer = StateDict::new();
    optimizer
        .insert_f32("conv1.weight", &[2, 3], vec![0.5; 6])
        .unwrap();
    let small = TrainingState {
        optimizer,
        ..training_state(2)
    };
    let valid = small.to_bytes().unwrap();
    let header_end = 8 + u64::from_le_bytes(valid[..8].try_into().unwrap()) as usize;
    let text_bytes = b"{}[]\",:0123456789-eE.\\ aFIUxn";

    let mut rng = ChaCha8Rng::seed_from_u64(0x7a1e);
    let (mut loaded, mut refused) = (0, 0);
    for case in 0..3000 {
        let mut bytes = valid.clone();
        for _ in 0..rng.random_range(1..=3) {
            match rng.random_range(0..4) {
                0 => {
                    let at = rng.random_range(0..bytes.len());
                    bytes[at] = rng.random();
                }
                1 => {
                    bytes[rng.random_range(8..header_end)] =
                        text_bytes[rng.random_range(0..text_bytes.len())]
                }
                2 => bytes[rng.random_range(8..header_end)] = b'0' + rng.random_range(0..10),
                _ => bytes.truncate(rng.random_range(0..bytes.len())),
            }
            if bytes.len() <= header_end {
                break;
            }
        }
        let result = std::panic::catch_unwind(|| {
            TrainingState::from_bytes(&bytes, "fuzz.train.safetensors")
        })
        .unwrap_or_else(|_| panic!("the training-state loader panicked on mutation case {case}"));
        match result {
            Ok(state) => {
                state
                    .to_bytes()
                    .expect("a loaded training state re-encodes");
                loaded += 1;
            }
            Err(e) => {
                assert!(e.to_string().contains("fuzz.train.safetensors"), "{e}");
                refused += 1;
            }
        }
    }
    assert!(
        loaded > 0 && refused > 0,
        "{loaded} loaded, {refused} refused"
    );
}
