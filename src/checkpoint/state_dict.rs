//! The state dict: named host tensors in order, plus string metadata, and its strict check
//! against what a model expects.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use super::host_tensor::{Element, ElementType, HostTensor};
use super::{atomic, format};
use crate::{Error, Result};

/// The name a tensor may not have: safetensors keeps the file's metadata under it.
pub const RESERVED_NAME: &str = "__metadata__";

/// Named host tensors in insertion order, keyed like PyTorch's `state_dict()`
/// (`layer1.0.bn1.running_mean`), with the string metadata a safetensors file carries.
///
/// Equality compares the tensors as a map (bit-identical values) and the metadata; it
/// ignores order and where the dict was loaded from.
#[derive(Clone, Debug, Default)]
pub struct StateDict {
    entries: Vec<(String, HostTensor)>,
    index: HashMap<String, usize>,
    metadata: BTreeMap<String, String>,
    origin: Option<PathBuf>,
}

/// The name, element type and shape a model expects of one tensor.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TensorSpec {
    /// The state-dict key.
    pub name: String,
    /// The element type.
    pub element_type: ElementType,
    /// The shape; `[]` for a scalar.
    pub shape: Vec<usize>,
}

impl TensorSpec {
    /// A tensor named `name` of `element_type` and `shape`.
    pub fn new(name: impl Into<String>, element_type: ElementType, shape: &[usize]) -> Self {
        TensorSpec {
            name: name.into(),
            element_type,
            shape: shape.to_vec(),
        }
    }

    /// An f32 tensor (a weight, a bias, a running statistic).
    pub fn f32(name: impl Into<String>, shape: &[usize]) -> Self {
        Self::new(name, ElementType::F32, shape)
    }

    /// An i64 scalar (a counter such as `num_batches_tracked`).
    pub fn i64_scalar(name: impl Into<String>) -> Self {
        Self::new(name, ElementType::I64, &[])
    }
}

impl StateDict {
    /// An empty state dict with no metadata.
    pub fn new() -> Self {
        Self::default()
    }

    /// Inserts `tensor` under `name`. A tensor already under that name is replaced in place,
    /// keeping its position. The name `__metadata__` is refused.
    pub fn insert(&mut self, name: impl Into<String>, tensor: HostTensor) -> Result<()> {
        let name = name.into();
        if name == RESERVED_NAME {
            return Err(self.error(format!(
                "a tensor may not be named `{RESERVED_NAME}`: safetensors keeps metadata there"
            )));
        }
        match self.index.get(&name) {
            Some(&position) => self.entries[position].1 = tensor,
            None => {
                self.index.insert(name.clone(), self.entries.len());
                self.entries.push((name, tensor));
            }
        }
        Ok(())
    }

    /// Inserts values of any element type; their number must match `shape`.
    pub fn insert_values<T: Element>(
        &mut self,
        name: impl Into<String>,
        shape: &[usize],
        values: Vec<T>,
    ) -> Result<()> {
        let name = name.into();
        let tensor = HostTensor::new(&name, shape, T::wrap(values))?;
        self.insert(name, tensor)
    }

    /// Inserts an f32 tensor (a weight, a bias, a running statistic).
    pub fn insert_f32(
        &mut self,
        name: impl Into<String>,
        shape: &[usize],
        values: Vec<f32>,
    ) -> Result<()> {
        self.insert_values(name, shape, values)
    }

    /// Inserts an i64 scalar, shape `[]` (a counter such as `num_batches_tracked`).
    pub fn insert_i64_scalar(&mut self, name: impl Into<String>, value: i64) -> Result<()> {
        self.insert_values(name, &[], vec![value])
    }

    /// The tensor under `name`, if any.
    pub fn get(&self, name: &str) -> Option<&HostTensor> {
        self.index
            .get(name)
            .map(|&position| &self.entries[position].1)
    }

    /// The shape and values of the `T` tensor under `name`; an error naming the tensor (and
    /// the file it came from) if it is missing or holds another element type.
    pub fn values<T: Element>(&self, name: &str) -> Result<(&[usize], &[T])> {
        let tensor = self
            .get(name)
            .ok_or_else(|| self.error(format!("no tensor named `{name}`")))?;
        let values = tensor.values::<T>().ok_or_else(|| {
            self.error(format!(
                "tensor `{name}` holds {}, expected {}",
                tensor.element_type(),
                T::TYPE
            ))
        })?;
        Ok((tensor.shape(), values))
    }

    /// The shape and values of the f32 tensor under `name`.
    pub fn get_f32(&self, name: &str) -> Result<(&[usize], &[f32])> {
        self.values(name)
    }

    /// The value of the scalar (shape `[]`) `T` tensor under `name`.
    pub fn scalar<T: Element>(&self, name: &str) -> Result<T> {
        match self.values::<T>(name)? {
            ([], [value]) => Ok(*value),
            (shape, _) => Err(self.error(format!(
                "tensor `{name}` has shape {shape:?}, expected a scalar (shape [])"
            ))),
        }
    }

    /// The value of the i64 scalar under `name`.
    pub fn get_i64_scalar(&self, name: &str) -> Result<i64> {
        self.scalar(name)
    }

    /// Removes and returns the tensor under `name`.
    pub fn remove(&mut self, name: &str) -> Option<HostTensor> {
        let position = self.index.remove(name)?;
        let (_, tensor) = self.entries.remove(position);
        for (_, later) in self.index.iter_mut() {
            if *later > position {
                *later -= 1;
            }
        }
        Some(tensor)
    }

    /// Whether a tensor is stored under `name`.
    pub fn contains(&self, name: &str) -> bool {
        self.index.contains_key(name)
    }

    /// Number of tensors.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether there are no tensors.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The names in order.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.entries.iter().map(|(name, _)| name.as_str())
    }

    /// The names and tensors in order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &HostTensor)> {
        self.entries
            .iter()
            .map(|(name, tensor)| (name.as_str(), tensor))
    }

    /// The string metadata stored in the file's `__metadata__` (e.g. `format` = `pt`).
    pub fn metadata(&self) -> &BTreeMap<String, String> {
        &self.metadata
    }

    /// Sets one metadata entry. Hugging Face tools expect `format` = `pt` for PyTorch weights.
    pub fn set_metadata(&mut self, key: impl Into<String>, value: impl Into<String>) {
        self.metadata.insert(key.into(), value.into());
    }

    /// The file (or name given to the bytes) this dict was loaded from; errors name it.
    pub fn origin(&self) -> Option<&Path> {
        self.origin.as_deref()
    }

    /// The name, element type and shape of every tensor, in order: the template to check
    /// another dict against.
    pub fn specs(&self) -> Vec<TensorSpec> {
        self.iter()
            .map(|(name, tensor)| TensorSpec::new(name, tensor.element_type(), tensor.shape()))
            .collect()
    }

    /// Checks that this dict holds exactly the `expected` tensors, like PyTorch's
    /// `load_state_dict(strict=True)`: one error lists every missing key, every unexpected
    /// key and every tensor of the wrong element type or shape, and names the file.
    pub fn expect(&self, expected: &[TensorSpec]) -> Result<()> {
        let mut missing = Vec::new();
        let mut mismatched = Vec::new();
        for spec in expected {
            match self.get(&spec.name) {
                None => missing.push(spec.name.as_str()),
                Some(tensor)
                    if tensor.element_type() != spec.element_type
                        || tensor.shape() != spec.shape.as_slice() =>
                {
                    mismatched.push(format!(
                        "`{}`: {} {:?} here, expected {} {:?}",
                        spec.name,
                        tensor.element_type(),
                        tensor.shape(),
                        spec.element_type,
                        spec.shape
                    ))
                }
                Some(_) => {}
            }
        }
        let expected_names: HashSet<&str> = expected.iter().map(|s| s.name.as_str()).collect();
        let unexpected: Vec<&str> = self
            .names()
            .filter(|name| !expected_names.contains(name))
            .collect();
        if missing.is_empty() && unexpected.is_empty() && mismatched.is_empty() {
            return Ok(());
        }

        let mut message = format!(
            "does not match the expected tensors ({} missing, {} unexpected, {} mismatched)",
            missing.len(),
            unexpected.len(),
            mismatched.len()
        );
        let quoted = |names: &[&str]| -> String {
            let quoted: Vec<String> = names.iter().map(|name| format!("`{name}`")).collect();
            quoted.join(", ")
        };
        if !missing.is_empty() {
            let _ = write!(message, "\n  missing keys: {}", quoted(&missing));
        }
        if !unexpected.is_empty() {
            let _ = write!(message, "\n  unexpected keys: {}", quoted(&unexpected));
        }
        for line in &mismatched {
            let _ = write!(message, "\n  mismatched: {line}");
        }
        Err(self.error(message))
    }

    /// Checks that this dict holds exactly the tensors of `template` (see [`expect`]).
    ///
    /// [`expect`]: StateDict::expect
    pub fn expect_like(&self, template: &StateDict) -> Result<()> {
        self.expect(&template.specs())
    }

    /// The safetensors bytes of this dict: what [`save`](StateDict::save) writes. For
    /// targets without a file system (the browser), pair with [`from_bytes`].
    ///
    /// [`from_bytes`]: StateDict::from_bytes
    pub fn to_bytes(&self) -> Result<Vec<u8>> {
        format::encode(self, &BTreeMap::new(), Path::new("(in memory)"))
    }

    /// Parses safetensors bytes; `origin` (a file name, a URL) labels every error.
    pub fn from_bytes(bytes: &[u8], origin: impl AsRef<Path>) -> Result<Self> {
        format::decode(bytes, origin.as_ref())
    }

    /// Writes this dict to `path` as safetensors, atomically: the bytes go to a temporary
    /// file in the same directory, are flushed to disk, and the temporary file is renamed
    /// over `path`, so `path` holds either the old checkpoint or the whole new one. On error
    /// the old file is untouched and the temporary file removed.
    pub fn save(&self, path: impl AsRef<Path>) -> Result<()> {
        self.save_with(path.as_ref(), &BTreeMap::new())
    }

    /// [`save`](StateDict::save) with `extra` metadata added to the file's (not to `self`).
    pub(crate) fn save_with(&self, path: &Path, extra: &BTreeMap<String, String>) -> Result<()> {
        let bytes = format::encode(self, extra, path)?;
        atomic::write_atomically(path, &bytes)?;
        log::info!(
            "checkpoint written: {} ({} tensors, {} bytes)",
            path.display(),
            self.len(),
            bytes.len()
        );
        Ok(())
    }

    /// Reads a safetensors file written by [`save`](StateDict::save), by PyTorch's
    /// `safetensors.torch.save_file`, or by any other safetensors writer. Tensors come in file
    /// order. Errors name the file and what is wrong with it.
    pub fn load(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let bytes = std::fs::read(path)
            .map_err(|e| checkpoint_error(path, format!("cannot read the file: {e}")))?;
        let dict = format::decode(&bytes, path)?;
        log::debug!(
            "checkpoint read: {} ({} tensors)",
            path.display(),
            dict.len()
        );
        Ok(dict)
    }

    pub(crate) fn set_origin(&mut self, origin: &Path) {
        self.origin = Some(origin.to_path_buf());
    }

    pub(crate) fn replace_metadata(&mut self, metadata: BTreeMap<String, String>) {
        self.metadata = metadata;
    }

    /// An error about this dict: a checkpoint error naming its file if it came from one.
    pub(crate) fn error(&self, message: impl Into<String>) -> Error {
        match &self.origin {
            Some(file) => checkpoint_error(file, message),
            None => Error::invalid("state dict", message),
        }
    }
}

impl PartialEq for StateDict {
    fn eq(&self, other: &Self) -> bool {
        self.len() == other.len()
            && self.metadata == other.metadata
            && self
                .iter()
                .all(|(name, tensor)| other.get(name) == Some(tensor))
    }
}

/// Builds an [`Error::Checkpoint`].
pub(crate) fn checkpoint_error(file: &Path, message: impl Into<String>) -> Error {
    Error::Checkpoint {
        file: file.to_path_buf(),
        message: message.into(),
    }
}
