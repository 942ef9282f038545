//! The data module: file readers on files written here, the synthetic set, augmentation,
//! the batcher, and random bytes fed to every reader.

use std::collections::HashSet;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use cenet::data::cifar::{encode_cifar, parse_cifar};
use cenet::data::idx::{parse_idx_images, parse_idx_labels};
use cenet::data::{
    load_cifar10, load_cifar100, load_fashion_mnist, load_mnist, synthetic, write_cifar100_bin,
    write_cifar_bin, Augment, Batch, Batcher, BatcherConfig, CifarKind, CropFlip, Dataset,
    Normalization, SplitMix64, PIXELS_PER_CHANNEL,
};
use flate2::write::GzEncoder;

/// How far a measured statistic of the synthetic set may stray from its documented
/// constant: a few thousand images estimate a channel's mean and std to about ±0.005.
const TOL_STATISTICS: f32 = 0.01;

// --- Helpers --------------------------------------------------------------------------------

/// A fresh folder under the system's temporary folder, removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> Self {
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let unique = COUNTER.fetch_add(1, Ordering::Relaxed);
        let path =
            std::env::temp_dir().join(format!("cenet-data-{}-{unique}-{name}", std::process::id()));
        std::fs::create_dir_all(&path).expect("create temporary folder");
        TempDir(path)
    }

    fn join(&self, file: &str) -> PathBuf {
        self.0.join(file)
    }

    fn write(&self, file: &str, bytes: &[u8]) -> PathBuf {
        let path = self.join(file);
        std::fs::write(&path, bytes).expect("write test file");
        path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The error's message, failing the test when there is none.
fn error_of<T: std::fmt::Debug>(result: cenet::Result<T>) -> String {
    match result {
        Ok(value) => panic!("expected an error, got {value:?}"),
        Err(e) => e.to_string(),
    }
}

fn assert_mentions(message: &str, parts: &[&str]) {
    for part in parts {
        assert!(
            message.contains(part),
            "{message:?} should mention {part:?}"
        );
    }
}

/// An IDX file of unsigned bytes: magic, dimensions, values.
fn idx_bytes(dims: &[u32], values: &[u8]) -> Vec<u8> {
    let mut bytes = vec![0, 0, 0x08, dims.len() as u8];
    for d in dims {
        bytes.extend_from_slice(&d.to_be_bytes());
    }
    bytes.extend_from_slice(values);
    bytes
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut encoder = GzEncoder::new(Vec::new(), flate2::Compression::fast());
    encoder.write_all(bytes).expect("gzip in memory");
    encoder.finish().expect("gzip in memory")
}

/// `count` 28×28 digit images whose pixels encode image, row and column.
fn digit_pixels(count: usize) -> Vec<u8> {
    (0..count * 28 * 28)
        .map(|i| {
            let (image, r, c) = (i / 784, i / 28 % 28, i % 28);
            (1 + (image * 7 + r * 28 + c) % 250) as u8
        })
        .collect()
}

/// Writes an MNIST-style folder: 3 training and 2 test images; training files gzipped.
fn write_digit_folder(dir: &TempDir) {
    dir.write(
        "train-images-idx3-ubyte.gz",
        &gzip(&idx_bytes(&[3, 28, 28], &digit_pixels(3))),
    );
    dir.write(
        "train-labels-idx1-ubyte.gz",
        &gzip(&idx_bytes(&[3], &[7, 0, 9])),
    );
    dir.write(
        "t10k-images-idx3-ubyte",
        &idx_bytes(&[2, 28, 28], &digit_pixels(2)),
    );
    dir.write("t10k-labels-idx1-ubyte", &idx_bytes(&[2], &[1, 2]));
}

/// CIFAR-10 records whose pixels are all `pixel` and labels are `labels`.
fn cifar10_records(labels: &[u8], pixel: u8) -> Vec<u8> {
    labels
        .iter()
        .flat_map(|&label| std::iter::once(label).chain(std::iter::repeat_n(pixel, 3072)))
        .collect()
}

/// Pixels of a 3-channel 32×32 image that encode channel, row and column.
fn labelled_pixels() -> Vec<u8> {
    (0..3 * PIXELS_PER_CHANNEL)
        .map(|i| {
            let (c, y, x) = (i / 1024, i / 32 % 32, i % 32);
            (1 + (c * 37 + y * 7 + x * 3) % 254) as u8
        })
        .collect()
}

// --- CIFAR ----------------------------------------------------------------------------------

#[test]
fn cifar10_round_trips_through_write_cifar_bin_with_any_records_per_file() {
    let dir = TempDir::new("cifar10-round-trip");
    let source = synthetic::generate(17, 1).unwrap();
    let sizes = [3, 1, 2, 4, 5];
    let mut start = 0;
    for (i, size) in sizes.iter().enumerate() {
        let part = source.slice(start..start + size).unwrap();
        write_cifar_bin(dir.join(&format!("data_batch_{}.bin", i + 1)), &part).unwrap();
        start += size;
    }
    let test_part = source.slice(start..17).unwrap();
    write_cifar_bin(dir.join("test_batch.bin"), &test_part).unwrap();

    let split = load_cifar10(&dir.0).unwrap();
    assert_eq!(split.train.len(), 15);
    assert_eq!(split.test.len(), 2);
    assert_eq!(split.train.images(), &source.images()[..15 * 3072]);
    assert_eq!(split.train.labels(), &source.labels()[..15]);
    assert_eq!(split.test.images(), &source.images()[15 * 3072..]);
    assert_eq!(split.test.labels(), &source.labels()[15..]);
    assert_eq!(split.train.name(), "CIFAR-10 train");
    assert_eq!(split.test.name(), "CIFAR-10 test");
    assert_eq!(split.train.classes(), 10);
    assert_eq!(split.train.class_names().unwrap()[3], "cat");
    assert_eq!(split.train.normalization(), Normalization::CIFAR10);
    assert_eq!(split.test.normalization(), Normalization::CIFAR10);
}

#[test]
fn cifar10_is_found_in_its_standard_subfolder() {
    let dir = TempDir::new("cifar10-subfolder");
    let sub = dir.join("cifar-10-batches-bin");
    std::fs::create_dir(&sub).unwrap();
    for file in CifarKind::Cifar10.train_files() {
        std::fs::write(sub.join(file), cifar10_records(&[1, 2], 9)).unwrap();
    }
    std::fs::write(sub.join("test_batch.bin"), cifar10_records(&[3], 9)).unwrap();
    let split = load_cifar10(&dir.0).unwrap();
    assert_eq!(split.train.len(), 10);
    assert_eq!(split.test.labels(), &[3]);
}

#[test]
fn cifar_records_are_red_green_blue_planes() {
    let mut record = vec![4u8];
    for plane_value in [10u8, 20, 30] {
        record.extend(std::iter::repeat_n(plane_value, 1024));
    }
    let set = parse_cifar(CifarKind::Cifar10, &record, Path::new("one.bin")).unwrap();
    assert_eq!(set.image_shape(), [3, 32, 32]);
    assert!(set.image(0)[..1024].iter().all(|&p| p == 10));
    assert!(set.image(0)[1024..2048].iter().all(|&p| p == 20));
    assert!(set.image(0)[2048..].iter().all(|&p| p == 30));
    assert_eq!(set.label(0), 4);
    assert_eq!(set.name(), "one.bin");
}

#[test]
fn cifar10_missing_files_are_listed_with_the_folder() {
    let dir = TempDir::new("cifar10-missing");
    dir.write("data_batch_1.bin", &cifar10_records(&[0], 0));
    dir.write("data_batch_4.bin", &cifar10_records(&[0], 0));
    let message = error_of(load_cifar10(&dir.0));
    assert_mentions(
        &message,
        &[
            &dir.0.display().to_string(),
            "missing data_batch_2.bin, data_batch_3.bin, data_batch_5.bin, test_batch.bin",
            "cifar-10-batches-bin",
        ],
    );
    assert!(!message.contains("missing data_batch_1.bin"), "{message}");
}

#[test]
fn cifar_folder_that_does_not_exist_is_named() {
    let dir = TempDir::new("cifar-no-folder");
    let absent = dir.join("absent");
    let message = error_of(load_cifar100(&absent));
    assert_mentions(&message, &["absent", "CIFAR-100", "not found"]);
}

#[test]
fn cifar10_truncated_file_reports_left_over_bytes_and_truncated_record() {
    let dir = TempDir::new("cifar10-truncated");
    for file in CifarKind::Cifar10.train_files() {
        dir.write(file, &cifar10_records(&[1], 0));
    }
    let mut bytes = cifar10_records(&[1, 2, 3], 0);
    bytes.truncate(3 * 3073 - 100);
    dir.write("test_batch.bin", &bytes);
    let message = error_of(load_cifar10(&dir.0));
    assert_mentions(
        &message,
        &[
            "test_batch.bin",
            "9119 bytes",
            "3073-byte record",
            "2973 bytes left over",
            "record 2",
            "truncated",
        ],
    );
}

#[test]
fn cifar10_label_out_of_range_reports_record_and_value() {
    let bytes = cifar10_records(&[9, 10, 3], 0);
    let message = error_of(parse_cifar(
        CifarKind::Cifar10,
        &bytes,
        Path::new("data_batch_2.bin"),
    ));
    assert_mentions(
        &message,
        &["data_batch_2.bin", "record 1 has label 10", "0..10"],
    );
}

#[test]
fn cifar_empty_file_is_an_error() {
    let message = error_of(parse_cifar(
        CifarKind::Cifar100,
        &[],
        Path::new("train.bin"),
    ));
    assert_mentions(&message, &["train.bin", "empty"]);
}

#[test]
fn cifar100_keeps_the_fine_label_and_checks_the_coarse_one() {
    let record = |coarse: u8, fine: u8| {
        let mut r = vec![coarse, fine];
        r.extend(std::iter::repeat_n(5u8, 3072));
        r
    };
    let file = Path::new("train.bin");
    let bytes = [record(19, 99), record(0, 0), record(3, 42)].concat();
    let set = parse_cifar(CifarKind::Cifar100, &bytes, file).unwrap();
    assert_eq!(set.labels(), &[99, 0, 42]);
    assert_eq!(set.classes(), 100);
    assert_eq!(set.class_names().unwrap()[99], "worm");
    assert_eq!(set.normalization(), Normalization::CIFAR100);

    let fine = error_of(parse_cifar(
        CifarKind::Cifar100,
        &[record(1, 2), record(1, 100)].concat(),
        file,
    ));
    assert_mentions(&fine, &["train.bin", "record 1 has label 100", "0..100"]);
    let coarse = error_of(parse_cifar(CifarKind::Cifar100, &record(20, 2), file));
    assert_mentions(&coarse, &["train.bin", "record 0 has coarse label 20"]);

    let truncated = error_of(parse_cifar(CifarKind::Cifar100, &bytes[..3074 + 5], file));
    assert_mentions(
        &truncated,
        &["3074-byte record", "5 bytes left over", "record 1"],
    );
}

#[test]
fn cifar100_round_trips_through_write_cifar100_bin() {
    let dir = TempDir::new("cifar100-round-trip");
    let labels: Vec<u32> = vec![0, 57, 99];
    let images: Vec<u8> = (0..3 * 3072).map(|i| (i % 253) as u8).collect();
    let set = Dataset::new("hundred", 3, images.clone(), labels.clone(), 100).unwrap();
    write_cifar100_bin(dir.join("train.bin"), &set).unwrap();
    write_cifar100_bin(dir.join("test.bin"), &set.slice(1..2).unwrap()).unwrap();
    let split = load_cifar100(&dir.0).unwrap();
    assert_eq!(split.train.labels(), &labels[..]);
    assert_eq!(split.train.images(), &images[..]);
    assert_eq!(split.test.labels(), &[57]);
    assert_eq!(split.train.name(), "CIFAR-100 train");
}

#[test]
fn cifar100_class_names_are_one_hundred_distinct() {
    let names = CifarKind::Cifar100.class_names();
    assert_eq!(names.len(), 100);
    assert_eq!(names.iter().collect::<HashSet<_>>().len(), 100);
    let mut sorted = names.to_vec();
    sorted.sort();
    assert_eq!(
        sorted, names,
        "CIFAR-100's fine labels are in alphabetical order"
    );
}

#[test]
fn write_cifar_bin_refuses_sets_the_format_cannot_hold() {
    let dir = TempDir::new("cifar-write-refuses");
    let grey = Dataset::new("grey", 1, vec![0; 1024], vec![0], 10).unwrap();
    let message = error_of(write_cifar_bin(dir.join("x.bin"), &grey));
    assert_mentions(&message, &["grey", "1 channel"]);
    let wide = Dataset::new("wide", 3, vec![0; 3072], vec![11], 12).unwrap();
    let message = error_of(encode_cifar(CifarKind::Cifar10, &wide));
    assert_mentions(&message, &["wide", "12 classes", "at most 10"]);
}

// --- IDX (MNIST, Fashion-MNIST) -------------------------------------------------------------

#[test]
fn mnist_reads_gzipped_and_plain_files_and_centres_digits_on_32_by_32() {
    let dir = TempDir::new("mnist");
    write_digit_folder(&dir);
    let split = load_mnist(&dir.0).unwrap();
    assert_eq!(split.train.len(), 3);
    assert_eq!(split.test.len(), 2);
    assert_eq!(split.train.labels(), &[7, 0, 9]);
    assert_eq!(split.test.labels(), &[1, 2]);
    assert_eq!(split.train.image_shape(), [1, 32, 32]);
    assert_eq!(split.train.normalization(), Normalization::MNIST);
    assert_eq!(split.train.name(), "MNIST train");

    let digits = digit_pixels(3);
    for image in 0..3 {
        let padded = split.train.image(image);
        for y in 0..32 {
            for x in 0..32 {
                let inside = (2..30).contains(&y) && (2..30).contains(&x);
                let want = if inside {
                    digits[image * 784 + (y - 2) * 28 + (x - 2)]
                } else {
                    0
                };
                assert_eq!(padded[y * 32 + x], want, "image {image}, pixel ({y}, {x})");
            }
        }
    }
}

#[test]
fn fashion_mnist_has_its_class_names_and_statistics_and_accepts_dotted_names() {
    let dir = TempDir::new("fashion");
    dir.write(
        "train-images.idx3-ubyte",
        &idx_bytes(&[1, 28, 28], &digit_pixels(1)),
    );
    dir.write("train-labels.idx1-ubyte", &idx_bytes(&[1], &[9]));
    dir.write(
        "t10k-images-idx3-ubyte.gz",
        &gzip(&idx_bytes(&[1, 28, 28], &digit_pixels(1))),
    );
    dir.write("t10k-labels-idx1-ubyte", &idx_bytes(&[1], &[0]));
    let split = load_fashion_mnist(&dir.0).unwrap();
    assert_eq!(split.train.class_names().unwrap()[9], "Ankle boot");
    assert_eq!(split.test.normalization(), Normalization::FASHION_MNIST);
    assert_eq!(split.train.name(), "Fashion-MNIST train");
}

#[test]
fn idx_images_smaller_than_28_are_centred_too() {
    let dir = TempDir::new("idx-small");
    dir.write(
        "train-images-idx3-ubyte",
        &idx_bytes(&[1, 3, 4], &[255; 12]),
    );
    dir.write("train-labels-idx1-ubyte", &idx_bytes(&[1], &[5]));
    dir.write("t10k-images-idx3-ubyte", &idx_bytes(&[1, 3, 4], &[255; 12]));
    dir.write("t10k-labels-idx1-ubyte", &idx_bytes(&[1], &[5]));
    let split = load_mnist(&dir.0).unwrap();
    let image = split.train.image(0);
    let lit: Vec<usize> = (0..1024).filter(|&i| image[i] == 255).collect();
    let want: Vec<usize> = (14..17)
        .flat_map(|y| (14..18).map(move |x| y * 32 + x))
        .collect();
    assert_eq!(lit, want);
}

#[test]
fn mnist_missing_files_are_listed_with_the_folder() {
    let dir = TempDir::new("mnist-missing");
    dir.write(
        "train-images-idx3-ubyte.gz",
        &gzip(&idx_bytes(&[1, 28, 28], &[0; 784])),
    );
    let message = error_of(load_mnist(&dir.0));
    assert_mentions(
        &message,
        &[
            &dir.0.display().to_string(),
            "missing train-labels-idx1-ubyte, t10k-images-idx3-ubyte, t10k-labels-idx1-ubyte",
            ".gz",
        ],
    );
}

#[test]
fn idx_bad_magic_is_reported_with_both_magics() {
    let labels = idx_bytes(&[2], &[1, 2]);
    let message = error_of(parse_idx_images(
        &labels,
        Path::new("train-images-idx3-ubyte"),
    ));
    assert_mentions(
        &message,
        &[
            "train-images-idx3-ubyte",
            "bad IDX magic 0x00000801",
            "expected 0x00000803",
        ],
    );
    let mut floats = idx_bytes(&[2], &[1, 2]);
    floats[2] = 0x0d;
    let message = error_of(parse_idx_labels(&floats, Path::new("labels.idx")));
    assert_mentions(
        &message,
        &["labels.idx", "0x00000d01", "expected 0x00000801"],
    );
}

#[test]
fn idx_truncated_and_overlong_files_are_reported() {
    let file = Path::new("t10k-images-idx3-ubyte");
    let full = idx_bytes(&[3, 28, 28], &digit_pixels(3));
    let truncated = error_of(parse_idx_images(&full[..full.len() - 10], file));
    assert_mentions(
        &truncated,
        &[
            "t10k-images-idx3-ubyte",
            "need 2352 bytes",
            "has 2342",
            "image 2",
            "truncated",
        ],
    );
    let overlong = error_of(parse_idx_images(&[full.clone(), vec![0; 5]].concat(), file));
    assert_mentions(&overlong, &["5 bytes follow the last image"]);
    let header_only = error_of(parse_idx_labels(&[0, 0, 8, 1, 0], Path::new("l")));
    assert_mentions(&header_only, &["5 bytes", "8-byte header"]);
    let huge = error_of(parse_idx_images(
        &idx_bytes(&[u32::MAX, 28, 28], &[0; 9]),
        file,
    ));
    assert_mentions(&huge, &["dimensions", "more bytes than the file's 25"]);
}

#[test]
fn idx_images_larger_than_32_are_refused() {
    let bytes = idx_bytes(&[1, 33, 2], &[0; 66]);
    let message = error_of(parse_idx_images(&bytes, Path::new("big")));
    assert_mentions(&message, &["big", "33×2", "32×32"]);
}

#[test]
fn idx_label_count_and_range_are_checked_against_the_images() {
    let dir = TempDir::new("idx-labels");
    write_digit_folder(&dir);
    dir.write("t10k-labels-idx1-ubyte", &idx_bytes(&[3], &[1, 2, 3]));
    let count = error_of(load_mnist(&dir.0));
    assert_mentions(
        &count,
        &[
            "t10k-labels-idx1-ubyte",
            "holds 3 labels",
            "t10k-images-idx3-ubyte",
            "2 images",
        ],
    );
    dir.write("t10k-labels-idx1-ubyte", &idx_bytes(&[2], &[1, 10]));
    let range = error_of(load_mnist(&dir.0));
    assert_mentions(
        &range,
        &["t10k-labels-idx1-ubyte", "label 1 is 10", "0..10"],
    );
}

#[test]
fn idx_corrupt_gzip_names_the_file() {
    let mut bytes = gzip(&idx_bytes(&[2], &[1, 2]));
    let middle = bytes.len() / 2;
    bytes.truncate(middle);
    let message = error_of(parse_idx_labels(
        &bytes,
        Path::new("train-labels-idx1-ubyte.gz"),
    ));
    assert_mentions(&message, &["train-labels-idx1-ubyte.gz", "gzip"]);
}

#[test]
fn idx_unreadable_file_error_names_the_file() {
    let dir = TempDir::new("idx-unreadable");
    write_digit_folder(&dir);
    // A folder where a file should be: found by no name, so reported as missing.
    std::fs::remove_file(dir.join("t10k-labels-idx1-ubyte")).unwrap();
    std::fs::create_dir(dir.join("t10k-labels-idx1-ubyte")).unwrap();
    let message = error_of(load_mnist(&dir.0));
    assert_mentions(&message, &["missing t10k-labels-idx1-ubyte"]);
    let read = error_of(cenet::data::idx::read_idx_labels(&dir.join("nothing-here")));
    assert_mentions(&read, &["nothing-here", "cannot read"]);
}

/// Reads the real Fashion-MNIST that Debian's `dataset-fashion-mnist` installs; run with
/// `cargo test --test data -- --ignored` on a machine that has it.
#[test]
#[ignore = "needs Debian's dataset-fashion-mnist package"]
fn fashion_mnist_from_the_debian_package() {
    let split = load_fashion_mnist("/usr/share/datasets/fashion-mnist").unwrap();
    assert_eq!(split.train.len(), 60_000);
    assert_eq!(split.test.len(), 10_000);
    assert_eq!(split.train.class_counts(), vec![6000; 10]);
    let measured = split.train.measure_normalization().unwrap();
    // The published statistics are over 28×28; the 32×32 canvas adds 240 zero pixels.
    let scale = 784.0 / 1024.0;
    assert!((measured.mean()[0] - Normalization::FASHION_MNIST.mean()[0] * scale).abs() < 0.002);

    // The runner finds it there when `--dataset fashion-mnist` comes without `--data` and
    // ./data holds no IDX files (the tests run in the crate's root, which has no ./data).
    let source = cenet::train::DataSource {
        name: Some(cenet::train::DatasetName::FashionMnist),
        ..Default::default()
    };
    let (_, dir, why) = source.resolve().unwrap();
    assert_eq!(dir.unwrap(), Path::new("/usr/share/datasets/fashion-mnist"));
    assert!(why.contains("dataset-fashion-mnist"), "{why}");
}

// --- Synthetic set --------------------------------------------------------------------------

#[test]
fn synthetic_set_is_determined_by_its_seed_and_extends_with_count() {
    let a = synthetic::generate(40, 3).unwrap();
    let b = synthetic::generate(40, 3).unwrap();
    let other = synthetic::generate(40, 4).unwrap();
    let longer = synthetic::generate(55, 3).unwrap();
    assert_eq!(a.images(), b.images());
    assert_eq!(a.labels(), b.labels());
    assert_ne!(a.images(), other.images());
    assert_eq!(a.images(), &longer.images()[..40 * 3072]);
    assert_eq!(a.image_shape(), [3, 32, 32]);
    assert_eq!(a.class_names().unwrap()[6], "coarse stripes at 36°");
}

#[test]
fn synthetic_classes_are_balanced() {
    let set = synthetic::generate(1005, 0).unwrap();
    let counts = set.class_counts();
    assert_eq!(counts[..5], [101; 5]);
    assert_eq!(counts[5..], [100; 5]);
}

#[test]
fn synthetic_test_images_differ_from_training_images() {
    let split = synthetic::split(50, 50, 11).unwrap();
    let train: HashSet<&[u8]> = (0..50).map(|i| split.train.image(i)).collect();
    assert!((0..50).all(|i| !train.contains(split.test.image(i))));
    assert_eq!(split.train.name(), "synthetic train");
    assert_eq!(split.test.name(), "synthetic test");
}

#[test]
fn synthetic_normalization_constant_matches_measured_statistics() {
    let measured = synthetic::generate(3000, 12345)
        .unwrap()
        .measure_normalization()
        .unwrap();
    let documented = Normalization::SYNTHETIC;
    for c in 0..3 {
        assert!(
            (measured.mean()[c] - documented.mean()[c]).abs() < TOL_STATISTICS,
            "channel {c}: measured mean {}, documented {}",
            measured.mean()[c],
            documented.mean()[c]
        );
        assert!(
            (measured.std()[c] - documented.std()[c]).abs() < TOL_STATISTICS,
            "channel {c}: measured std {}, documented {}",
            measured.std()[c],
            documented.std()[c]
        );
    }
}

/// Accuracy on `test` of the nearest class centroid of `features` measured on `train`.
fn nearest_centroid_accuracy(
    train: &Dataset,
    test: &Dataset,
    features: impl Fn(&[u8]) -> Vec<f64>,
) -> f64 {
    let classes = train.classes();
    let width = features(train.image(0)).len();
    let mut centroids = vec![vec![0.0; width]; classes];
    for i in 0..train.len() {
        let centroid = &mut centroids[train.label(i) as usize];
        for (c, f) in centroid.iter_mut().zip(features(train.image(i))) {
            *c += f;
        }
    }
    let counts = train.class_counts();
    for (centroid, &n) in centroids.iter_mut().zip(&counts) {
        centroid.iter_mut().for_each(|c| *c /= n as f64);
    }
    let correct = (0..test.len())
        .filter(|&i| {
            let f = features(test.image(i));
            let distance = |centroid: &Vec<f64>| -> f64 {
                centroid.iter().zip(&f).map(|(a, b)| (a - b).powi(2)).sum()
            };
            let nearest = (0..classes)
                .min_by(|&a, &b| distance(&centroids[a]).total_cmp(&distance(&centroids[b])))
                .unwrap();
            nearest == test.label(i) as usize
        })
        .count();
    correct as f64 / test.len() as f64
}

fn mean_colour(image: &[u8]) -> Vec<f64> {
    image
        .chunks_exact(1024)
        .map(|plane| plane.iter().map(|&p| f64::from(p)).sum::<f64>() / 1024.0)
        .collect()
}

/// Normalised autocorrelation at small shifts, summed over channels: it sees the stripes'
/// orientation and period but not their colour or phase.
fn autocorrelation(image: &[u8]) -> Vec<f64> {
    let shifts: Vec<(isize, isize)> = (0..=3)
        .flat_map(|dy| (-3..=3).map(move |dx| (dx, dy)))
        .filter(|&(dx, dy)| dy > 0 || dx > 0)
        .collect();
    let mut sums = vec![0.0; shifts.len()];
    let mut energy = 0.0;
    for plane in image.chunks_exact(1024) {
        let mean = plane.iter().map(|&p| f64::from(p)).sum::<f64>() / 1024.0;
        let x: Vec<f64> = plane.iter().map(|&p| f64::from(p) - mean).collect();
        energy += x.iter().map(|v| v * v).sum::<f64>();
        for (sum, &(dx, dy)) in sums.iter_mut().zip(&shifts) {
            for y in 0..32 - dy {
                for x0 in 3..29 {
                    let x1 = (x0 as isize + dx) as usize;
                    *sum += x[y as usize * 32 + x0] * x[(y as usize + dy as usize) * 32 + x1];
                }
            }
        }
    }
    sums.iter().map(|s| s / energy.max(1e-9)).collect()
}

#[test]
fn synthetic_class_is_not_revealed_by_mean_colour() {
    let split = synthetic::split(1000, 500, 5).unwrap();
    let accuracy = nearest_centroid_accuracy(&split.train, &split.test, mean_colour);
    assert!(
        accuracy < 0.2,
        "mean colour predicts the class {accuracy:.2} of the time"
    );
}

#[test]
fn synthetic_class_is_revealed_by_spatial_structure() {
    let split = synthetic::split(300, 200, 6).unwrap();
    let accuracy = nearest_centroid_accuracy(&split.train, &split.test, autocorrelation);
    assert!(
        accuracy > 0.9,
        "autocorrelation predicts the class only {accuracy:.2} of the time"
    );
}

// --- Augmentation ---------------------------------------------------------------------------

#[test]
fn crop_shifts_the_image_and_fills_with_zeros() {
    let image = labelled_pixels();
    let mut out = vec![0u8; image.len()];
    let shift = CropFlip {
        shift_x: 3,
        shift_y: -2,
        flip: false,
    };
    shift.apply(&image, 3, &mut out);
    for c in 0..3 {
        for y in 0..32 {
            for x in 0..32 {
                let (sy, sx) = (y as isize - 2, x as isize + 3);
                let want = if (0..32).contains(&sy) && (0..32).contains(&sx) {
                    image[c * 1024 + sy as usize * 32 + sx as usize]
                } else {
                    0
                };
                assert_eq!(out[c * 1024 + y * 32 + x], want, "({c}, {y}, {x})");
            }
        }
    }
    // Spot checks written out by hand: the top two rows are padding, so is the right edge.
    assert_eq!(out[0], 0);
    assert_eq!(out[2 * 32 + 29], 0);
    assert_eq!(out[2 * 32], image[3]);
    assert_eq!(out[1024 + 31 * 32 + 28], image[1024 + 29 * 32 + 31]);
}

#[test]
fn flip_mirrors_each_row_after_cropping() {
    let image = labelled_pixels();
    let mut out = vec![0u8; image.len()];
    CropFlip {
        shift_x: 0,
        shift_y: 0,
        flip: true,
    }
    .apply(&image, 3, &mut out);
    for c in 0..3 {
        for y in 0..32 {
            for x in 0..32 {
                assert_eq!(
                    out[c * 1024 + y * 32 + x],
                    image[c * 1024 + y * 32 + 31 - x]
                );
            }
        }
    }
    CropFlip {
        shift_x: -4,
        shift_y: 1,
        flip: true,
    }
    .apply(&image, 3, &mut out);
    // Output column x reads input column (31 - x) - 4: columns 28..32 are padding.
    assert_eq!(out[5 * 32 + 10], image[6 * 32 + 17]);
    assert!((28..32).all(|x| out[5 * 32 + x] == 0));
    assert!(
        (0..32).all(|x| out[31 * 32 + x] == 0),
        "the bottom row is padding"
    );
}

#[test]
fn augment_none_is_the_identity_and_cifar_draws_every_shift_and_both_flips() {
    let mut rng = SplitMix64::new(1);
    assert!(Augment::NONE.is_identity());
    assert_eq!(Augment::NONE.sample(&mut rng), CropFlip::default());
    assert_eq!(
        rng,
        SplitMix64::new(1),
        "nothing switched on, nothing drawn"
    );

    let mut seen = HashSet::new();
    for _ in 0..3000 {
        let draw = Augment::CIFAR.sample(&mut rng);
        assert!(
            draw.shift_x.abs() <= 4 && draw.shift_y.abs() <= 4,
            "{draw:?}"
        );
        seen.insert(draw);
    }
    assert_eq!(seen.len(), 9 * 9 * 2);
}

// --- Batcher --------------------------------------------------------------------------------

/// A small set whose labels are its indices modulo 10, to check which images a batch holds.
fn numbered_set(count: usize) -> Dataset {
    synthetic::generate(count, 21).unwrap()
}

fn epoch_batches(batcher: &mut Batcher) -> Vec<Batch> {
    let epoch = batcher.epoch();
    let mut batches = Vec::new();
    while let Some(batch) = batcher.next_batch() {
        batches.push(batch);
    }
    assert_eq!(batcher.epoch(), epoch + 1);
    batches
}

#[test]
fn batcher_serves_every_image_exactly_once_per_epoch_in_a_new_order() {
    let set = numbered_set(103);
    let config = BatcherConfig {
        drop_last: false,
        ..BatcherConfig::train(10, 9)
    };
    let mut batcher = Batcher::new(set.clone(), config).unwrap();
    assert_eq!(batcher.batches_per_epoch(), 11);
    let mut orders = Vec::new();
    for _ in 0..3 {
        let batches = epoch_batches(&mut batcher);
        assert_eq!(batches.len(), 11);
        assert_eq!(batches[10].len(), 3);
        assert_eq!(batches[10].shape, [3, 3, 32, 32]);
        let order: Vec<u32> = batches.iter().flat_map(|b| b.indices.clone()).collect();
        let mut sorted = order.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, (0..103).collect::<Vec<u32>>());
        for batch in &batches {
            let labels: Vec<u32> = batch
                .indices
                .iter()
                .map(|&i| set.label(i as usize))
                .collect();
            assert_eq!(batch.labels, labels);
            assert_eq!(batch.images.len(), batch.len() * 3072);
        }
        orders.push(order);
    }
    assert_ne!(orders[0], orders[1]);
    assert_ne!(orders[1], orders[2]);
}

#[test]
fn batcher_drop_last_skips_the_short_batch() {
    let mut batcher = Batcher::new(numbered_set(103), BatcherConfig::train(10, 2)).unwrap();
    assert_eq!(batcher.batches_per_epoch(), 10);
    let batches = epoch_batches(&mut batcher);
    assert_eq!(batches.len(), 10);
    let distinct: HashSet<u32> = batches.iter().flat_map(|b| b.indices.clone()).collect();
    assert_eq!(distinct.len(), 100);
}

#[test]
fn batcher_without_shuffle_serves_file_order_with_normalised_pixels() {
    let set = numbered_set(25);
    let mut batcher = Batcher::new(set.clone(), BatcherConfig::eval(8)).unwrap();
    let batches = epoch_batches(&mut batcher);
    let order: Vec<u32> = batches.iter().flat_map(|b| b.indices.clone()).collect();
    assert_eq!(order, (0..25).collect::<Vec<u32>>());
    let norm = Normalization::SYNTHETIC;
    let first = &batches[0];
    for i in [0usize, 1023, 1024, 3071, 3072 + 500] {
        let pixel = set.images()[i];
        let channel = i % 3072 / 1024;
        let want = (f32::from(pixel) / 255.0 - norm.mean()[channel]) / norm.std()[channel];
        assert!((first.images[i] - want).abs() < 1e-6, "value {i}");
    }
    assert_eq!(
        epoch_batches(&mut batcher),
        batches,
        "every epoch is the same"
    );
}

#[test]
fn batcher_with_augmentation_serves_cropped_and_flipped_images() {
    let set = numbered_set(12);
    let plain = Batcher::new(set.clone(), BatcherConfig::eval(12))
        .unwrap()
        .next_batch()
        .unwrap();
    let config = BatcherConfig::eval(12).with_augment(Augment::CIFAR);
    let augmented = Batcher::new(set, config).unwrap().next_batch().unwrap();
    assert_eq!(plain.labels, augmented.labels);
    assert_ne!(plain.images, augmented.images);
    // Padding pixels are black, normalised: (0 - mean) / std.
    let black = -0.5 / Normalization::SYNTHETIC.std()[0];
    let has_padding = augmented.images.iter().any(|&v| (v - black).abs() < 1e-6);
    assert!(has_padding);
}

#[test]
fn batcher_resumes_exactly_from_a_saved_state() {
    let set = std::sync::Arc::new(numbered_set(57));
    let config = BatcherConfig::train(8, 77);
    let mut batcher = Batcher::new(set.clone(), config).unwrap();
    epoch_batches(&mut batcher);
    for _ in 0..3 {
        batcher.next_batch().unwrap();
    }
    let state = batcher.state();
    assert_eq!(
        (state.epoch, state.position, state.dataset_len),
        (1, 24, 57)
    );

    let mut reused = Batch::default();
    let mut expected = Vec::new();
    for _ in 0..12 {
        if batcher.next_batch_into(&mut reused) {
            expected.push(reused.clone());
        }
    }
    let mut resumed = Batcher::resume(set.clone(), config, state).unwrap();
    let mut got = Vec::new();
    for _ in 0..12 {
        if let Some(batch) = resumed.next_batch() {
            got.push(batch);
        }
    }
    assert_eq!(got, expected);
    assert_eq!(resumed.state(), batcher.state());

    let other_seed = Batcher::new(set, BatcherConfig::train(8, 78))
        .unwrap()
        .next_batch()
        .unwrap();
    let first = Batcher::new(numbered_set(57), config)
        .unwrap()
        .next_batch()
        .unwrap();
    assert_ne!(other_seed.indices, first.indices);
}

#[test]
fn batcher_rejects_bad_configurations_and_foreign_states() {
    let set = numbered_set(5);
    let zero = error_of(Batcher::new(set.clone(), BatcherConfig::eval(0)).map(|_| ()));
    assert_mentions(&zero, &["batcher", "batch size is 0"]);
    let too_big = error_of(Batcher::new(set.clone(), BatcherConfig::train(6, 0)).map(|_| ()));
    assert_mentions(&too_big, &["batch size 6", "5 images", "drop_last"]);

    let mut batcher = Batcher::new(set, BatcherConfig::eval(2)).unwrap();
    let mut state = batcher.state();
    state.dataset_len = 6;
    let foreign = error_of(batcher.restore(state));
    assert_mentions(&foreign, &["6-image set", "5 images"]);
}

// --- Dataset ----------------------------------------------------------------------------------

#[test]
fn dataset_checks_its_parts() {
    let short = error_of(Dataset::new("s", 3, vec![0; 3000], vec![0], 10));
    assert_mentions(&short, &["s:", "3000 image bytes for 1 labels", "3072"]);
    let label = error_of(Dataset::new("l", 1, vec![0; 2048], vec![0, 4], 4));
    assert_mentions(&label, &["label 4 of image 1", "4 classes"]);
    let channels = error_of(Dataset::new("c", 2, vec![], vec![], 4));
    assert_mentions(&channels, &["2 channels"]);
    let names = error_of(
        Dataset::new("n", 1, vec![], vec![], 3)
            .unwrap()
            .with_class_names(["a", "b"]),
    );
    assert_mentions(&names, &["2 class names", "3 classes"]);
    let slice = error_of(numbered_set(3).slice(2..4));
    assert_mentions(&slice, &["2..4", "3 images"]);
}

// --- Random bytes to every reader -----------------------------------------------------------

/// Random bytes shaped to reach each reader's deeper checks: plain noise, noise behind a
/// plausible IDX header, whole CIFAR records with random labels, and gzip streams.
fn random_file(rng: &mut SplitMix64) -> Vec<u8> {
    let noise = |rng: &mut SplitMix64, len: usize| -> Vec<u8> {
        (0..len).map(|_| rng.next_u64() as u8).collect()
    };
    match rng.below(6) {
        0 => {
            let len = rng.below(64) as usize;
            noise(rng, len)
        }
        1 => {
            let ndims = rng.below(4) as u32;
            let dims: Vec<u32> = (0..ndims).map(|_| rng.below(40) as u32).collect();
            let len = rng.below(200) as usize;
            let values = noise(rng, len);
            idx_bytes(&dims, &values)
        }
        2 => {
            // Nearly the right length for its dimensions, one byte sometimes changed.
            let count = rng.below(3) as u32 + 1;
            let dims = if rng.coin() {
                vec![count]
            } else {
                vec![count, rng.below(6) as u32, rng.below(6) as u32]
            };
            let exact = dims.iter().product::<u32>() as usize;
            let len = (exact as isize + rng.below(5) as isize - 2).max(0) as usize;
            let values = noise(rng, len);
            let mut bytes = idx_bytes(&dims, &values);
            if rng.below(4) == 0 {
                let at = rng.below(bytes.len() as u64) as usize;
                bytes[at] = rng.next_u64() as u8;
            }
            bytes
        }
        3 => {
            let record_len = if rng.coin() { 3073 } else { 3074 };
            let records = rng.below(3) as usize;
            let extra = if rng.coin() { 0 } else { rng.below(3) as usize };
            let mut bytes = noise(rng, records * record_len + extra);
            for record in bytes.chunks_exact_mut(record_len) {
                record[0] = rng.below(22) as u8;
                record[1] = rng.below(110) as u8;
            }
            bytes
        }
        4 => {
            let inner = random_file_shallow(rng);
            let mut bytes = gzip(&inner);
            if rng.coin() {
                let at = rng.below(bytes.len() as u64) as usize;
                bytes[at] ^= 1 << rng.below(8);
            }
            if rng.coin() {
                let keep = rng.below(bytes.len() as u64 + 1) as usize;
                bytes.truncate(keep);
            }
            bytes
        }
        _ => {
            let len = rng.below(40) as usize;
            let mut bytes = vec![0x1f, 0x8b, 0x08, rng.next_u64() as u8];
            bytes.extend(noise(rng, len));
            bytes
        }
    }
}

/// Like [`random_file`] without gzip, for the contents of a gzip stream.
fn random_file_shallow(rng: &mut SplitMix64) -> Vec<u8> {
    loop {
        let bytes = random_file(rng);
        if !bytes.starts_with(&[0x1f, 0x8b]) {
            return bytes;
        }
    }
}

#[test]
fn every_reader_returns_an_error_and_never_panics_on_random_bytes() {
    let mut rng = SplitMix64::new(2024);
    let file = Path::new("fuzz.bin");
    let mut accepted = [0usize; 4];
    for case in 0..3000 {
        let bytes = random_file(&mut rng);
        let outcome = std::panic::catch_unwind(|| {
            [
                parse_cifar(CifarKind::Cifar10, &bytes, file).map(|d| d.len()),
                parse_cifar(CifarKind::Cifar100, &bytes, file).map(|d| d.len()),
                parse_idx_images(&bytes, file).map(|i| i.count),
                parse_idx_labels(&bytes, file).map(|l| l.len()),
            ]
        });
        let results = outcome.unwrap_or_else(|_| panic!("case {case} panicked on {bytes:?}"));
        for (count, result) in accepted.iter_mut().zip(&results) {
            match result {
                Ok(n) => {
                    assert!(*n > 0, "case {case}: an accepted file holds something");
                    *count += 1;
                }
                Err(e) => assert!(e.to_string().contains("fuzz.bin"), "case {case}: {e}"),
            }
        }
    }
    // The generator reaches past the headers: some files of every kind are valid.
    assert!(
        accepted.iter().all(|&n| n > 0),
        "accepted per reader: {accepted:?}"
    );
}

#[test]
fn splitmix64_state_round_trips_and_below_stays_in_range() {
    let mut rng = SplitMix64::new(5);
    rng.next_u64();
    let saved = rng.state();
    let ahead: Vec<u64> = (0..5).map(|_| rng.next_u64()).collect();
    let mut restored = SplitMix64::from_state(saved);
    let again: Vec<u64> = (0..5).map(|_| restored.next_u64()).collect();
    assert_eq!(ahead, again);
    let mut counts = [0usize; 7];
    for _ in 0..7000 {
        counts[rng.below(7) as usize] += 1;
    }
    assert!(
        counts.iter().all(|&n| (800..1200).contains(&n)),
        "{counts:?}"
    );
    assert_ne!(SplitMix64::stream(1, 0), SplitMix64::stream(1, 1));
    assert_ne!(SplitMix64::stream(1, 0), SplitMix64::stream(2, 0));
}
