//! CIFAR-10 and CIFAR-100 in their binary distribution (`cifar-10-batches-bin`,
//! `cifar-100-binary`).
//!
//! A file is a sequence of records: the label byte(s), then 3,072 pixel bytes as three
//! 32×32 planes, red, green, blue, each row-major. That is already the `[C, 32, 32]` layout
//! of a [`Dataset`] image, so records are copied as they are.

use std::path::{Path, PathBuf};

use log::info;

use super::dataset::{Dataset, Split, PIXELS_PER_CHANNEL};
use super::normalize::Normalization;
use super::{data_error, read_file};
use crate::error::Result;

/// Pixel bytes in one record: 3 × 32 × 32.
const RECORD_PIXELS: usize = 3 * PIXELS_PER_CHANNEL;

/// Coarse (super-)classes of CIFAR-100, validated but not kept.
const CIFAR100_COARSE_CLASSES: u8 = 20;

/// CIFAR-10's classes, in label order.
const CIFAR10_CLASS_NAMES: [&str; 10] = [
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
];

/// CIFAR-100's fine classes, in label order (alphabetical).
#[rustfmt::skip]
const CIFAR100_CLASS_NAMES: [&str; 100] = [
    "apple", "aquarium_fish", "baby", "bear", "beaver", "bed", "bee", "beetle", "bicycle",
    "bottle", "bowl", "boy", "bridge", "bus", "butterfly", "camel", "can", "castle",
    "caterpillar", "cattle", "chair", "chimpanzee", "clock", "cloud", "cockroach", "couch",
    "crab", "crocodile", "cup", "dinosaur", "dolphin", "elephant", "flatfish", "forest", "fox",
    "girl", "hamster", "house", "kangaroo", "keyboard", "lamp", "lawn_mower", "leopard", "lion",
    "lizard", "lobster", "man", "maple_tree", "motorcycle", "mountain", "mouse", "mushroom",
    "oak_tree", "orange", "orchid", "otter", "palm_tree", "pear", "pickup_truck", "pine_tree",
    "plain", "plate", "poppy", "porcupine", "possum", "rabbit", "raccoon", "ray", "road",
    "rocket", "rose", "sea", "seal", "shark", "shrew", "skunk", "skyscraper", "snail", "snake",
    "spider", "squirrel", "streetcar", "sunflower", "sweet_pepper", "table", "tank",
    "telephone", "television", "tiger", "tractor", "train", "trout", "tulip", "turtle",
    "wardrobe", "whale", "willow_tree", "wolf", "woman", "worm",
];

/// Which of the two CIFAR file formats.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CifarKind {
    /// 10 classes; records of 1 label byte + 3,072 pixels.
    Cifar10,
    /// 100 fine classes; records of a coarse label byte, a fine label byte + 3,072 pixels.
    /// Only the fine label is kept.
    Cifar100,
}

impl CifarKind {
    /// The set's usual name.
    pub fn name(self) -> &'static str {
        match self {
            CifarKind::Cifar10 => "CIFAR-10",
            CifarKind::Cifar100 => "CIFAR-100",
        }
    }

    /// Label bytes at the start of a record.
    pub fn label_bytes(self) -> usize {
        match self {
            CifarKind::Cifar10 => 1,
            CifarKind::Cifar100 => 2,
        }
    }

    /// Bytes per record: labels and pixels.
    pub fn record_len(self) -> usize {
        self.label_bytes() + RECORD_PIXELS
    }

    /// Number of (fine) classes.
    pub fn classes(self) -> usize {
        self.class_names().len()
    }

    /// Class names in label order.
    pub fn class_names(self) -> &'static [&'static str] {
        match self {
            CifarKind::Cifar10 => &CIFAR10_CLASS_NAMES,
            CifarKind::Cifar100 => &CIFAR100_CLASS_NAMES,
        }
    }

    /// The published training-set statistics.
    pub fn normalization(self) -> Normalization {
        match self {
            CifarKind::Cifar10 => Normalization::CIFAR10,
            CifarKind::Cifar100 => Normalization::CIFAR100,
        }
    }

    /// The folder the archive unpacks to.
    pub fn folder_name(self) -> &'static str {
        match self {
            CifarKind::Cifar10 => "cifar-10-batches-bin",
            CifarKind::Cifar100 => "cifar-100-binary",
        }
    }

    /// The training files, read in this order.
    pub fn train_files(self) -> &'static [&'static str] {
        match self {
            CifarKind::Cifar10 => &[
                "data_batch_1.bin",
                "data_batch_2.bin",
                "data_batch_3.bin",
                "data_batch_4.bin",
                "data_batch_5.bin",
            ],
            CifarKind::Cifar100 => &["train.bin"],
        }
    }

    /// The test file.
    pub fn test_file(self) -> &'static str {
        match self {
            CifarKind::Cifar10 => "test_batch.bin",
            CifarKind::Cifar100 => "test.bin",
        }
    }

    /// An empty set of this kind's classes, names and normalisation.
    fn empty(self, name: String) -> Result<Dataset> {
        Dataset::new(name, 3, Vec::new(), Vec::new(), self.classes())?
            .with_class_names(self.class_names().iter().copied())?
            .with_normalization(self.normalization())
    }
}

/// Reads CIFAR-10 from `dir`: the folder holding `data_batch_1.bin` … `data_batch_5.bin` and
/// `test_batch.bin`, or the folder above it holding `cifar-10-batches-bin`.
pub fn load_cifar10(dir: impl AsRef<Path>) -> Result<Split> {
    load_cifar(CifarKind::Cifar10, dir.as_ref())
}

/// Reads CIFAR-100 from `dir`: the folder holding `train.bin` and `test.bin`, or the folder
/// above it holding `cifar-100-binary`. Labels are the 100 fine classes.
pub fn load_cifar100(dir: impl AsRef<Path>) -> Result<Split> {
    load_cifar(CifarKind::Cifar100, dir.as_ref())
}

/// Reads the training and test files of `kind` from `dir` (or its standard subfolder).
pub fn load_cifar(kind: CifarKind, dir: &Path) -> Result<Split> {
    let dir = find_folder(kind, dir)?;
    let mut train = kind.empty(format!("{} train", kind.name()))?;
    for file in kind.train_files() {
        train = train.concat(&read_cifar_file(kind, &dir.join(file))?)?;
    }
    let test = read_cifar_file(kind, &dir.join(kind.test_file()))?
        .renamed(format!("{} test", kind.name()));
    info!(
        "{}: {} training and {} test images from {}",
        kind.name(),
        train.len(),
        test.len(),
        dir.display()
    );
    Ok(Split { train, test })
}

/// The folder holding all of `kind`'s files: `dir` itself or its standard subfolder.
fn find_folder(kind: CifarKind, dir: &Path) -> Result<PathBuf> {
    let expected: Vec<&str> = kind
        .train_files()
        .iter()
        .copied()
        .chain([kind.test_file()])
        .collect();
    let missing_in = |folder: &Path| -> Vec<&str> {
        expected
            .iter()
            .copied()
            .filter(|f| !folder.join(f).is_file())
            .collect()
    };
    if !dir.is_dir() {
        return Err(data_error(
            dir,
            format!("{}: folder not found", kind.name()),
        ));
    }
    let missing = missing_in(dir);
    if missing.is_empty() {
        return Ok(dir.to_path_buf());
    }
    let sub = dir.join(kind.folder_name());
    if sub.is_dir() {
        let missing_sub = missing_in(&sub);
        if missing_sub.is_empty() {
            return Ok(sub);
        }
        // The subfolder is where the files were meant to be: report what it lacks.
        return Err(missing_error(kind, &sub, &missing_sub, &expected));
    }
    Err(missing_error(kind, dir, &missing, &expected))
}

fn missing_error(kind: CifarKind, dir: &Path, missing: &[&str], expected: &[&str]) -> crate::Error {
    data_error(
        dir,
        format!(
            "{}: missing {} (expected {} in this folder or in a {} subfolder)",
            kind.name(),
            missing.join(", "),
            expected.join(", "),
            kind.folder_name()
        ),
    )
}

/// Reads one CIFAR file of `kind`; the set is named after the file.
pub fn read_cifar_file(kind: CifarKind, path: &Path) -> Result<Dataset> {
    parse_cifar(kind, &read_file(path)?, path)
}

/// Decodes the bytes of one CIFAR file of `kind`; `file` names it in errors and in the set's
/// name. Rejects an empty file, a size that is not a whole number of records and labels out
/// of range.
pub fn parse_cifar(kind: CifarKind, bytes: &[u8], file: &Path) -> Result<Dataset> {
    let record_len = kind.record_len();
    if bytes.is_empty() {
        return Err(data_error(file, format!("{}: file is empty", kind.name())));
    }
    let left_over = bytes.len() % record_len;
    let records = bytes.len() / record_len;
    if left_over != 0 {
        return Err(data_error(
            file,
            format!(
                "{}: size {} bytes is not a multiple of the {record_len}-byte record: \
                 {left_over} bytes left over, record {records} (counting from 0) is truncated",
                kind.name(),
                bytes.len()
            ),
        ));
    }

    let mut images = Vec::with_capacity(records * RECORD_PIXELS);
    let mut labels = Vec::with_capacity(records);
    for (index, record) in bytes.chunks_exact(record_len).enumerate() {
        let label = match kind {
            CifarKind::Cifar10 => record[0],
            CifarKind::Cifar100 => {
                if record[0] >= CIFAR100_COARSE_CLASSES {
                    return Err(data_error(
                        file,
                        format!(
                            "{}: record {index} has coarse label {}, expected 0..{}",
                            kind.name(),
                            record[0],
                            CIFAR100_COARSE_CLASSES
                        ),
                    ));
                }
                record[1]
            }
        };
        if usize::from(label) >= kind.classes() {
            return Err(data_error(
                file,
                format!(
                    "{}: record {index} has label {label}, expected 0..{}",
                    kind.name(),
                    kind.classes()
                ),
            ));
        }
        labels.push(u32::from(label));
        images.extend_from_slice(&record[kind.label_bytes()..]);
    }

    let name = file
        .file_name()
        .map_or_else(|| kind.name().to_string(), |n| n.to_string_lossy().into());
    let dataset = Dataset::new(name, 3, images, labels, kind.classes())?
        .with_class_names(kind.class_names().iter().copied())?
        .with_normalization(kind.normalization())?;
    Ok(dataset)
}

/// Encodes `dataset` in the file format of `kind`. The set must have 3 channels and labels
/// that the format holds (below 10 or 100). CIFAR-100's coarse label is not kept by a
/// [`Dataset`], so it is written as 0.
pub fn encode_cifar(kind: CifarKind, dataset: &Dataset) -> Result<Vec<u8>> {
    let op = "write_cifar_bin";
    if dataset.channels() != 3 {
        return Err(crate::Error::invalid(
            op,
            format!(
                "{} has {} channel(s); CIFAR files hold 3",
                dataset.name(),
                dataset.channels()
            ),
        ));
    }
    if dataset.classes() > kind.classes() {
        return Err(crate::Error::invalid(
            op,
            format!(
                "{} has {} classes; {} files hold at most {}",
                dataset.name(),
                dataset.classes(),
                kind.name(),
                kind.classes()
            ),
        ));
    }
    let mut bytes = Vec::with_capacity(dataset.len() * kind.record_len());
    for index in 0..dataset.len() {
        // Labels are below classes() <= 100, so they fit a byte.
        let label = dataset.label(index) as u8;
        match kind {
            CifarKind::Cifar10 => bytes.push(label),
            CifarKind::Cifar100 => bytes.extend_from_slice(&[0, label]),
        }
        bytes.extend_from_slice(dataset.image(index));
    }
    Ok(bytes)
}

/// Writes `dataset` to `path` in CIFAR-10's binary format (1 label byte + 3,072 pixels per
/// record), so that [`load_cifar10`] reads it back. Labels must be below 10.
pub fn write_cifar_bin(path: impl AsRef<Path>, dataset: &Dataset) -> Result<()> {
    write_bytes(path.as_ref(), &encode_cifar(CifarKind::Cifar10, dataset)?)
}

/// Writes `dataset` to `path` in CIFAR-100's binary format (coarse label 0, fine label,
/// 3,072 pixels per record), so that [`load_cifar100`] reads it back.
pub fn write_cifar100_bin(path: impl AsRef<Path>, dataset: &Dataset) -> Result<()> {
    write_bytes(path.as_ref(), &encode_cifar(CifarKind::Cifar100, dataset)?)
}

fn write_bytes(path: &Path, bytes: &[u8]) -> Result<()> {
    std::fs::write(path, bytes).map_err(|e| data_error(path, format!("cannot write: {e}")))
}
