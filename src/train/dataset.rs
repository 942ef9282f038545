//! Choosing and loading the data set of a run: CIFAR-10/100, MNIST, Fashion-MNIST from a
//! folder, or the built-in synthetic set.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use crate::data::{self, cifar::CifarKind, idx, synthetic, Augment, Split};
use crate::error::{Error, Result};

/// The folder looked in when no `--data` is given.
pub const DEFAULT_DATA_DIR: &str = "data";

/// Images of the synthetic set when no size is given: enough for a quick demonstration.
pub const SYNTHETIC_DEFAULT: (usize, usize) = (5_000, 1_000);

/// Epochs when none are given: a full CIFAR schedule, or a short demonstration on the
/// synthetic set (which a ResNet learns within a few epochs).
pub const DEFAULT_EPOCHS: (u64, u64) = (200, 10);
/// The seed the synthetic images are generated from (fixed, so that runs with different
/// training seeds see the same images).
pub const SYNTHETIC_SEED: u64 = 2020;

/// A data set the runner reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DatasetName {
    /// CIFAR-10's binary files.
    Cifar10,
    /// CIFAR-100's binary files (fine labels).
    Cifar100,
    /// MNIST's IDX files.
    Mnist,
    /// Fashion-MNIST's IDX files.
    FashionMnist,
    /// The built-in striped images ([`crate::data::synthetic`]).
    Synthetic,
}

impl FromStr for DatasetName {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "cifar10" | "cifar-10" => Ok(DatasetName::Cifar10),
            "cifar100" | "cifar-100" => Ok(DatasetName::Cifar100),
            "mnist" => Ok(DatasetName::Mnist),
            "fashion-mnist" | "fashion_mnist" | "fashionmnist" => Ok(DatasetName::FashionMnist),
            "synthetic" => Ok(DatasetName::Synthetic),
            _ => Err(Error::invalid(
                "dataset",
                format!(
                    "unknown data set {s:?}: expected cifar10, cifar100, mnist, fashion-mnist \
                     or synthetic"
                ),
            )),
        }
    }
}

impl fmt::Display for DatasetName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            DatasetName::Cifar10 => "cifar10",
            DatasetName::Cifar100 => "cifar100",
            DatasetName::Mnist => "mnist",
            DatasetName::FashionMnist => "fashion-mnist",
            DatasetName::Synthetic => "synthetic",
        })
    }
}

impl DatasetName {
    /// The augmentation that suits the set: crop and flip for natural images; none for
    /// digits and clothes (a mirrored digit is another symbol); crop only for the synthetic
    /// stripes, whose class is their orientation, which a mirror image changes (36° ↔ 144°).
    pub fn augment(self) -> Augment {
        match self {
            DatasetName::Mnist | DatasetName::FashionMnist => Augment::NONE,
            DatasetName::Synthetic => Augment {
                crop_padding: Augment::CIFAR.crop_padding,
                flip: false,
            },
            DatasetName::Cifar10 | DatasetName::Cifar100 => Augment::CIFAR,
        }
    }
}

/// Where the images come from.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct DataSource {
    /// The set, or `None` to choose from `dir` (see [`DataSource::resolve`]).
    pub name: Option<DatasetName>,
    /// The folder holding the files.
    pub dir: Option<PathBuf>,
    /// Use only the first this many training images (the synthetic set's size).
    pub train_images: Option<usize>,
    /// Use only the first this many test images (the synthetic set's size).
    pub test_images: Option<usize>,
}

/// A loaded data set and how it was chosen.
#[derive(Debug)]
pub struct LoadedData {
    /// The training and test images.
    pub split: Split,
    /// Which set.
    pub name: DatasetName,
    /// The folder it came from (none for the synthetic set).
    pub dir: Option<PathBuf>,
    /// One line for the user saying what is used and why.
    pub description: String,
}

impl DataSource {
    /// Decides which set to read, and from where, without reading it:
    /// - a named set is read from `dir` (default `./data`);
    /// - with a folder but no name, the CIFAR-10 files, else CIFAR-100's, are looked for;
    /// - with neither, CIFAR-10 if `./data/cifar-10-batches-bin` exists, else the synthetic
    ///   set. The returned reason says which rule applied.
    pub fn resolve(&self) -> Result<(DatasetName, Option<PathBuf>, String)> {
        match (self.name, &self.dir) {
            (Some(DatasetName::Synthetic), _) => {
                Ok((DatasetName::Synthetic, None, "--dataset synthetic".into()))
            }
            (Some(name), Some(dir)) => Ok((name, Some(dir.clone()), format!("--dataset {name}"))),
            (Some(DatasetName::FashionMnist), None)
                if !idx::has_idx_files(Path::new(DEFAULT_DATA_DIR))
                    && idx::has_idx_files(Path::new(idx::DEBIAN_FASHION_MNIST_DIR)) =>
            {
                Ok((
                    DatasetName::FashionMnist,
                    Some(PathBuf::from(idx::DEBIAN_FASHION_MNIST_DIR)),
                    format!(
                        "--dataset fashion-mnist, not in ./{DEFAULT_DATA_DIR}, found where \
                         Debian's dataset-fashion-mnist installs it"
                    ),
                ))
            }
            (Some(name), None) => Ok((
                name,
                Some(PathBuf::from(DEFAULT_DATA_DIR)),
                format!("--dataset {name}, files looked for in ./{DEFAULT_DATA_DIR}"),
            )),
            (None, Some(dir)) => {
                if has_cifar(CifarKind::Cifar10, dir) {
                    Ok((
                        DatasetName::Cifar10,
                        Some(dir.clone()),
                        "CIFAR-10 files found in --data".into(),
                    ))
                } else if has_cifar(CifarKind::Cifar100, dir) {
                    Ok((
                        DatasetName::Cifar100,
                        Some(dir.clone()),
                        "CIFAR-100 files found in --data".into(),
                    ))
                } else {
                    Err(Error::Data {
                        file: dir.clone(),
                        message: "no CIFAR-10 or CIFAR-100 files here (data_batch_1.bin … \
                                  test_batch.bin, or train.bin and test.bin, in this folder \
                                  or its cifar-10-batches-bin / cifar-100-binary subfolder); \
                                  for MNIST or Fashion-MNIST add --dataset mnist or \
                                  --dataset fashion-mnist"
                            .into(),
                    })
                }
            }
            (None, None) => {
                let default = Path::new(DEFAULT_DATA_DIR);
                if default.join(CifarKind::Cifar10.folder_name()).is_dir() {
                    Ok((
                        DatasetName::Cifar10,
                        Some(default.to_path_buf()),
                        format!("./{DEFAULT_DATA_DIR}/cifar-10-batches-bin exists"),
                    ))
                } else {
                    Ok((
                        DatasetName::Synthetic,
                        None,
                        format!(
                            "no --data given and ./{DEFAULT_DATA_DIR}/cifar-10-batches-bin not \
                             found (fetch CIFAR-10 with `cifar download`)"
                        ),
                    ))
                }
            }
        }
    }

    /// Reads the set [`DataSource::resolve`] chooses, cut to the requested sizes.
    pub fn load(&self) -> Result<LoadedData> {
        let (name, dir, reason) = self.resolve()?;
        let mut split = match (name, &dir) {
            (DatasetName::Synthetic, _) => {
                let train = self.train_images.unwrap_or(SYNTHETIC_DEFAULT.0);
                let test = self.test_images.unwrap_or(SYNTHETIC_DEFAULT.1);
                synthetic::split(train, test, SYNTHETIC_SEED)?
            }
            (DatasetName::Cifar10, Some(dir)) => data::load_cifar10(dir)?,
            (DatasetName::Cifar100, Some(dir)) => data::load_cifar100(dir)?,
            (DatasetName::Mnist, Some(dir)) => data::load_mnist(dir)?,
            (DatasetName::FashionMnist, Some(dir)) => data::load_fashion_mnist(dir)?,
            (_, None) => unreachable!("resolve gives every file-based set a folder"),
        };
        if let Some(n) = self.train_images {
            split.train = split.train.slice(0..n.min(split.train.len()))?;
        }
        if let Some(n) = self.test_images {
            split.test = split.test.slice(0..n.min(split.test.len()))?;
        }
        let source = match &dir {
            Some(dir) => format!("from {}", dir.display()),
            None => "generated".to_string(),
        };
        let description = format!(
            "data: {name} ({} training, {} test images, {source}) because {reason}",
            split.train.len(),
            split.test.len()
        );
        Ok(LoadedData {
            split,
            name,
            dir,
            description,
        })
    }
}

fn has_cifar(kind: CifarKind, dir: &Path) -> bool {
    let complete = |folder: &Path| {
        kind.train_files()
            .iter()
            .chain([&kind.test_file()])
            .all(|f| folder.join(f).is_file())
    };
    complete(dir) || complete(&dir.join(kind.folder_name()))
}
