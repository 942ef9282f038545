//! MNIST and Fashion-MNIST in IDX format (`train-images-idx3-ubyte`, …), gzipped or not.
//!
//! An IDX file starts with a magic number: two zero bytes, a type code (0x08 for unsigned
//! bytes, the only type these sets use) and the number of dimensions; then each dimension as
//! a big-endian `u32`; then the values, row-major. Images (3 dimensions: count, rows,
//! columns) are centred on a zero 32×32 canvas with one channel, so 28×28 digits get a
//! 2-pixel border on each side.

use std::borrow::Cow;
use std::io::Read;
use std::path::{Path, PathBuf};

use flate2::read::GzDecoder;
use log::info;

use super::dataset::{Dataset, Split, IMAGE_SIZE, PIXELS_PER_CHANNEL};
use super::normalize::Normalization;
use super::{data_error, read_file};
use crate::error::Result;

/// The two bytes that start every gzip stream.
const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];

/// IDX type code for unsigned bytes.
const IDX_UBYTE: u8 = 0x08;

/// Largest decompressed size accepted from a gzipped file, so that a corrupt or hostile
/// file cannot exhaust memory. MNIST's largest file is 47 MB.
// Limitation: IDX sets larger than 1 GiB (EMNIST is not) would need a streaming reader.
const MAX_DECOMPRESSED: u64 = 1 << 30;

/// Classes in both MNIST and Fashion-MNIST.
const IDX_CLASSES: usize = 10;

/// Which IDX data set.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IdxSet {
    /// Handwritten digits 0–9.
    Mnist,
    /// Zalando's 28×28 grey images of clothes, a drop-in replacement for MNIST.
    FashionMnist,
}

impl IdxSet {
    /// The set's usual name.
    pub fn name(self) -> &'static str {
        match self {
            IdxSet::Mnist => "MNIST",
            IdxSet::FashionMnist => "Fashion-MNIST",
        }
    }

    /// Class names in label order.
    pub fn class_names(self) -> &'static [&'static str; IDX_CLASSES] {
        match self {
            IdxSet::Mnist => &["0", "1", "2", "3", "4", "5", "6", "7", "8", "9"],
            IdxSet::FashionMnist => &[
                "T-shirt/top",
                "Trouser",
                "Pullover",
                "Dress",
                "Coat",
                "Sandal",
                "Shirt",
                "Sneaker",
                "Bag",
                "Ankle boot",
            ],
        }
    }

    /// The published training-set statistics.
    pub fn normalization(self) -> Normalization {
        match self {
            IdxSet::Mnist => Normalization::MNIST,
            IdxSet::FashionMnist => Normalization::FASHION_MNIST,
        }
    }
}

/// Images decoded from an IDX file, at their own size.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IdxImages {
    /// Number of images.
    pub count: usize,
    /// Rows per image.
    pub rows: usize,
    /// Columns per image.
    pub cols: usize,
    /// `[count, rows, cols]` row-major.
    pub pixels: Vec<u8>,
}

/// Reads MNIST from `dir`, which holds `train-images-idx3-ubyte`, `train-labels-idx1-ubyte`,
/// `t10k-images-idx3-ubyte` and `t10k-labels-idx1-ubyte`, each possibly gzipped (`.gz`).
pub fn load_mnist(dir: impl AsRef<Path>) -> Result<Split> {
    load_idx_set(IdxSet::Mnist, dir.as_ref())
}

/// Reads Fashion-MNIST from `dir`, with the same file names as MNIST. Debian's
/// `dataset-fashion-mnist` package installs it in [`DEBIAN_FASHION_MNIST_DIR`].
pub fn load_fashion_mnist(dir: impl AsRef<Path>) -> Result<Split> {
    load_idx_set(IdxSet::FashionMnist, dir.as_ref())
}

/// Reads the training and test files of `set` from `dir`.
pub fn load_idx_set(set: IdxSet, dir: &Path) -> Result<Split> {
    let stems = [
        "train-images-idx3-ubyte",
        "train-labels-idx1-ubyte",
        "t10k-images-idx3-ubyte",
        "t10k-labels-idx1-ubyte",
    ];
    if !dir.is_dir() {
        return Err(data_error(dir, format!("{}: folder not found", set.name())));
    }
    let found: Vec<Option<PathBuf>> = stems.iter().map(|stem| find_file(dir, stem)).collect();
    let missing: Vec<&str> = stems
        .iter()
        .zip(&found)
        .filter(|(_, path)| path.is_none())
        .map(|(stem, _)| *stem)
        .collect();
    if !missing.is_empty() {
        return Err(data_error(
            dir,
            format!(
                "{}: missing {} (expected {}, each optionally ending in .gz)",
                set.name(),
                missing.join(", "),
                stems.join(", ")
            ),
        ));
    }
    let paths: Vec<PathBuf> = found.into_iter().flatten().collect();
    let train = read_idx_pair(set, &paths[0], &paths[1])?.renamed(format!("{} train", set.name()));
    let test = read_idx_pair(set, &paths[2], &paths[3])?.renamed(format!("{} test", set.name()));
    info!(
        "{}: {} training and {} test images from {}",
        set.name(),
        train.len(),
        test.len(),
        dir.display()
    );
    Ok(Split { train, test })
}

/// Whether `dir` holds an IDX training-image file (under any of the names [`find_file`]
/// accepts).
pub fn has_idx_files(dir: &Path) -> bool {
    find_file(dir, "train-images-idx3-ubyte").is_some()
}

/// Where Debian's `dataset-fashion-mnist` package installs Fashion-MNIST.
pub const DEBIAN_FASHION_MNIST_DIR: &str = "/usr/share/datasets/fashion-mnist";

/// The file for `stem` in `dir`: `stem`, `stem.gz`, or the same with a dot before `idx`
/// (`train-images.idx3-ubyte`), as some mirrors name them.
fn find_file(dir: &Path, stem: &str) -> Option<PathBuf> {
    let dotted = stem.replacen("-idx", ".idx", 1);
    [
        stem.to_string(),
        format!("{stem}.gz"),
        dotted.clone(),
        format!("{dotted}.gz"),
    ]
    .into_iter()
    .map(|name| dir.join(name))
    .find(|path| path.is_file())
}

/// Reads an image file and its label file into a data set of `set`'s classes, with images
/// padded to 32×32.
pub fn read_idx_pair(set: IdxSet, images_path: &Path, labels_path: &Path) -> Result<Dataset> {
    let images = read_idx_images(images_path)?;
    let labels = read_idx_labels(labels_path)?;
    if labels.len() != images.count {
        return Err(data_error(
            labels_path,
            format!(
                "holds {} labels but {} holds {} images",
                labels.len(),
                images_path.display(),
                images.count
            ),
        ));
    }
    if let Some((index, label)) = labels
        .iter()
        .enumerate()
        .find(|(_, &label)| usize::from(label) >= IDX_CLASSES)
    {
        return Err(data_error(
            labels_path,
            format!("label {index} is {label}, expected 0..{IDX_CLASSES}"),
        ));
    }
    let name = images_path
        .file_name()
        .map_or_else(|| set.name().to_string(), |n| n.to_string_lossy().into());
    Dataset::new(
        name,
        1,
        pad_to_32(&images),
        labels.into_iter().map(u32::from).collect(),
        IDX_CLASSES,
    )?
    .with_class_names(set.class_names().iter().copied())?
    .with_normalization(set.normalization())
}

/// Centres each image on a zero 32×32 canvas: `[count, 1, 32, 32]`.
fn pad_to_32(images: &IdxImages) -> Vec<u8> {
    let top = (IMAGE_SIZE - images.rows) / 2;
    let left = (IMAGE_SIZE - images.cols) / 2;
    let mut padded = vec![0u8; images.count * PIXELS_PER_CHANNEL];
    let source_len = images.rows * images.cols;
    for (image, canvas) in images
        .pixels
        .chunks_exact(source_len)
        .zip(padded.chunks_exact_mut(PIXELS_PER_CHANNEL))
    {
        for (r, row) in image.chunks_exact(images.cols).enumerate() {
            let start = (top + r) * IMAGE_SIZE + left;
            canvas[start..start + images.cols].copy_from_slice(row);
        }
    }
    padded
}

/// Reads an IDX image file (`idx3-ubyte`, gzipped or not).
pub fn read_idx_images(path: &Path) -> Result<IdxImages> {
    parse_idx_images(&read_file(path)?, path)
}

/// Reads an IDX label file (`idx1-ubyte`, gzipped or not).
pub fn read_idx_labels(path: &Path) -> Result<Vec<u8>> {
    parse_idx_labels(&read_file(path)?, path)
}

/// Decodes the bytes of an IDX image file, gunzipping them first if they start with gzip's
/// magic. Images must be at most 32×32; `file` names the file in errors.
pub fn parse_idx_images(bytes: &[u8], file: &Path) -> Result<IdxImages> {
    let bytes = gunzip_if_gzipped(bytes, file)?;
    let (dims, values) = parse_idx(&bytes, file, 3, "image")?;
    let [count, rows, cols] = [dims[0], dims[1], dims[2]];
    if rows == 0 || cols == 0 || rows > IMAGE_SIZE || cols > IMAGE_SIZE {
        return Err(data_error(
            file,
            format!("images are {rows}×{cols}, expected 1×1 up to {IMAGE_SIZE}×{IMAGE_SIZE}"),
        ));
    }
    Ok(IdxImages {
        count,
        rows,
        cols,
        pixels: values.to_vec(),
    })
}

/// Decodes the bytes of an IDX label file, gunzipping them first if they start with gzip's
/// magic; `file` names the file in errors.
pub fn parse_idx_labels(bytes: &[u8], file: &Path) -> Result<Vec<u8>> {
    let bytes = gunzip_if_gzipped(bytes, file)?;
    let (_, values) = parse_idx(&bytes, file, 1, "label")?;
    Ok(values.to_vec())
}

/// The decompressed bytes when `bytes` start with gzip's magic, else `bytes` themselves.
pub fn gunzip_if_gzipped<'a>(bytes: &'a [u8], file: &Path) -> Result<Cow<'a, [u8]>> {
    if !bytes.starts_with(&GZIP_MAGIC) {
        return Ok(Cow::Borrowed(bytes));
    }
    let mut out = Vec::new();
    GzDecoder::new(bytes)
        .take(MAX_DECOMPRESSED + 1)
        .read_to_end(&mut out)
        .map_err(|e| data_error(file, format!("gzip stream is corrupt: {e}")))?;
    if out.len() as u64 > MAX_DECOMPRESSED {
        return Err(data_error(
            file,
            format!("decompresses to more than {MAX_DECOMPRESSED} bytes"),
        ));
    }
    Ok(Cow::Owned(out))
}

/// Checks an IDX header for `ndims` dimensions of unsigned bytes and that the file holds
/// exactly the values the dimensions promise; returns the dimensions and the values.
fn parse_idx<'a>(
    bytes: &'a [u8],
    file: &Path,
    ndims: usize,
    what: &str,
) -> Result<(Vec<usize>, &'a [u8])> {
    let header_len = 4 + 4 * ndims;
    let too_short = || {
        data_error(
            file,
            format!(
                "{} bytes is shorter than the {header_len}-byte header of an IDX {what} file",
                bytes.len()
            ),
        )
    };
    // The magic first: a wrong kind of file is the likelier mistake than a truncated one.
    let magic = be_u32(bytes.get(0..4).ok_or_else(too_short)?);
    let expected_magic = u32::from(IDX_UBYTE) << 8 | ndims as u32;
    if magic != expected_magic {
        return Err(data_error(
            file,
            format!(
                "bad IDX magic 0x{magic:08x}, expected 0x{expected_magic:08x} \
                 (unsigned bytes, {ndims} dimension(s)) for a {what} file"
            ),
        ));
    }
    if bytes.len() < header_len {
        return Err(too_short());
    }
    let dims: Vec<usize> = bytes[4..header_len]
        .chunks_exact(4)
        .map(|d| be_u32(d) as usize)
        .collect();
    if dims[0] == 0 {
        return Err(data_error(file, format!("holds no {what}s")));
    }
    // u32 dimensions can overflow usize when multiplied: check, and report the sizes.
    let value_count = dims
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .filter(|&n| n <= bytes.len())
        .ok_or_else(|| {
            data_error(
                file,
                format!(
                    "dimensions {dims:?} need more bytes than the file's {}",
                    bytes.len()
                ),
            )
        })?;
    let values = &bytes[header_len..];
    if values.len() != value_count {
        let per_item = value_count / dims[0];
        let detail = if values.len() < value_count {
            format!(
                "{what} {} (counting from 0) is truncated",
                values.len() / per_item
            )
        } else {
            format!(
                "{} bytes follow the last {what}",
                values.len() - value_count
            )
        };
        return Err(data_error(
            file,
            format!(
                "dimensions {dims:?} need {value_count} bytes after the {header_len}-byte \
                 header, the file has {}: {detail}",
                values.len()
            ),
        ));
    }
    Ok((dims, values))
}

fn be_u32(bytes: &[u8]) -> u32 {
    u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]])
}
