//! Safetensors encoding and decoding through the format's reference implementation (the
//! `safetensors` crate), with errors that say what is wrong with which file.
//!
//! Layout, from the format's specification: 8 bytes little-endian `N`, then `N` bytes of
//! JSON header (padded with spaces to a multiple of 8), then the tensors' little-endian bytes
//! back to back. The header maps each name to `{"dtype", "shape", "data_offsets": [begin,
//! end]}` (offsets relative to the end of the header) and may hold `"__metadata__"`, a map of
//! strings to strings. The crate orders tensors by decreasing element alignment, then by name,
//! so every tensor's bytes are aligned to its element size.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use safetensors::{SafeTensorError, SafeTensors, View};

use super::host_tensor::{ElementType, HostTensor, TensorData};
use super::state_dict::{checkpoint_error, StateDict};
use crate::Result;

/// Bytes of the little-endian header length that starts every file.
const LENGTH_BYTES: usize = 8;

/// Larger numbers in a header are refused before the crate sees them: no real file has an
/// offset or a dimension this large, and the crate adds offsets to the header length
/// unchecked (it panics with overflow checks on, and wraps without).
const LARGEST_HEADER_NUMBER: u64 = i64::MAX as u64;

/// A host tensor as the crate's serializer sees it.
struct Stored<'a>(&'a HostTensor);

impl View for Stored<'_> {
    fn dtype(&self) -> safetensors::Dtype {
        self.0.element_type().to_safetensors()
    }

    fn shape(&self) -> &[usize] {
        self.0.shape()
    }

    fn data(&self) -> Cow<'_, [u8]> {
        self.0.data().to_le_bytes()
    }

    fn data_len(&self) -> usize {
        self.0.data().len() * self.0.element_type().size_bytes()
    }
}

/// The safetensors bytes of `dict`, its metadata joined by `extra`.
pub(crate) fn encode(
    dict: &StateDict,
    extra: &BTreeMap<String, String>,
    file: &Path,
) -> Result<Vec<u8>> {
    let mut metadata = dict.metadata().clone();
    metadata.extend(
        extra
            .iter()
            .map(|(key, value)| (key.clone(), value.clone())),
    );
    let tensors = dict
        .iter()
        .map(|(name, tensor)| (Cow::Borrowed(name), tensor));
    encode_tensors(tensors.collect(), &metadata, file)
}

/// The safetensors bytes of named tensors and metadata (no `__metadata__` entry if empty).
pub(crate) fn encode_tensors(
    tensors: Vec<(Cow<'_, str>, &HostTensor)>,
    metadata: &BTreeMap<String, String>,
    file: &Path,
) -> Result<Vec<u8>> {
    let count = tensors.len();
    let metadata: HashMap<String, String> = metadata
        .iter()
        .map(|(key, value)| (key.clone(), value.clone()))
        .collect();
    let metadata = (!metadata.is_empty()).then_some(metadata);
    let views = tensors
        .into_iter()
        .map(|(name, tensor)| (name, Stored(tensor)));

    safetensors::serialize(views, metadata).map_err(|e| {
        let message = match e {
            SafeTensorError::HeaderTooLarge => format!(
                "cannot encode {count} tensors: the header would exceed safetensors' 100 MB limit"
            ),
            other => format!("cannot encode as safetensors: {other}"),
        };
        checkpoint_error(file, message)
    })
}

/// Parses safetensors `bytes`; `file` labels every error. Never panics, whatever the bytes.
pub(crate) fn decode(bytes: &[u8], file: &Path) -> Result<StateDict> {
    check_header_numbers(bytes).map_err(|message| checkpoint_error(file, message))?;
    let (header_len, header) = SafeTensors::read_metadata(bytes)
        .map_err(|e| checkpoint_error(file, describe(&e, bytes)))?;
    let data_start = LENGTH_BYTES + header_len;

    let mut dict = StateDict::new();
    dict.set_origin(file);
    let mut unsupported = Vec::new();
    for name in header.offset_keys() {
        let Some(info) = header.info(&name) else {
            continue;
        };
        let Some(element_type) = ElementType::from_safetensors(info.dtype) else {
            unsupported.push(format!("`{name}` is {}", info.dtype));
            continue;
        };
        let (begin, end) = info.data_offsets;
        let data = data_start
            .checked_add(begin)
            .zip(data_start.checked_add(end))
            .and_then(|(begin, end)| bytes.get(begin..end))
            .ok_or_else(|| {
                checkpoint_error(file, format!("tensor `{name}` lies outside the file"))
            })?;
        let tensor = HostTensor::new(
            &name,
            &info.shape,
            TensorData::from_le_bytes(element_type, data),
        )
        .map_err(|e| checkpoint_error(file, format!("corrupt header: {e}")))?;
        dict.insert(name, tensor)?;
    }
    if !unsupported.is_empty() {
        let supported: Vec<&str> = ElementType::ALL.iter().map(|ty| ty.name()).collect();
        return Err(checkpoint_error(
            file,
            format!(
                "unsupported dtype: {} (cenet reads {})",
                unsupported.join(", "),
                supported.join(", ")
            ),
        ));
    }

    let metadata = header.metadata().as_ref().map(|metadata| {
        metadata
            .iter()
            .map(|(key, value)| (key.clone(), value.clone()))
            .collect()
    });
    dict.replace_metadata(metadata.unwrap_or_default());
    Ok(dict)
}

/// Refuses a header holding a number above [`LARGEST_HEADER_NUMBER`]. Scans the JSON text
/// for digit runs outside strings; anything else the crate checks.
fn check_header_numbers(bytes: &[u8]) -> std::result::Result<(), String> {
    let Some(header) = declared_header_len(bytes)
        .and_then(|len| bytes.get(LENGTH_BYTES..LENGTH_BYTES.checked_add(len)?))
    else {
        return Ok(());
    };

    let mut in_string = false;
    let mut escaped = false;
    let mut number: Option<u64> = None;
    for &byte in header {
        if in_string {
            match (escaped, byte) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_string = false,
                _ => {}
            }
            continue;
        }
        if byte.is_ascii_digit() {
            let value = number
                .unwrap_or(0)
                .checked_mul(10)
                .and_then(|n| n.checked_add(u64::from(byte - b'0')))
                .filter(|&n| n <= LARGEST_HEADER_NUMBER);
            if value.is_none() {
                return Err(format!(
                    "corrupt header: it holds a number larger than {LARGEST_HEADER_NUMBER}, \
                     beyond any real offset or dimension"
                ));
            }
            number = value;
        } else {
            number = None;
            in_string = byte == b'"';
        }
    }
    Ok(())
}

/// The header length the first 8 bytes declare, if there are 8 bytes.
fn declared_header_len(bytes: &[u8]) -> Option<usize> {
    let mut word = [0u8; LENGTH_BYTES];
    word.copy_from_slice(bytes.get(..LENGTH_BYTES)?);
    usize::try_from(u64::from_le_bytes(word)).ok()
}

/// What the crate's error means for the user, with the sizes involved.
fn describe(error: &SafeTensorError, bytes: &[u8]) -> String {
    let file_len = bytes.len();
    let declared = declared_header_len(bytes).unwrap_or(usize::MAX);
    match error {
        SafeTensorError::HeaderTooSmall => format!(
            "not a safetensors file{}: {file_len} bytes, too short for the 8-byte header length",
            recognised_format(bytes)
        ),
        SafeTensorError::HeaderTooLarge => format!(
            "not a safetensors file{}: its first 8 bytes declare a header of {} bytes, over \
             the 100 MB limit",
            recognised_format(bytes),
            u64::from_le_bytes(first_word(bytes)),
        ),
        SafeTensorError::InvalidHeaderLength => format!(
            "truncated or not a safetensors file{}: the header should be {declared} bytes but \
             only {} bytes follow the header length",
            recognised_format(bytes),
            file_len.saturating_sub(LENGTH_BYTES)
        ),
        SafeTensorError::InvalidHeader(e) => {
            format!("corrupt header: not UTF-8 text ({e})")
        }
        SafeTensorError::InvalidHeaderDeserialization(e) => {
            format!("corrupt header: not a safetensors JSON header ({e})")
        }
        SafeTensorError::MetadataIncompleteBuffer => format!(
            "truncated or corrupt: the header's tensors do not end where the file ends \
             ({file_len} bytes, of which {} after the header)",
            file_len.saturating_sub(LENGTH_BYTES.saturating_add(declared))
        ),
        SafeTensorError::InvalidOffset(name) => {
            format!("corrupt header: tensor `{name}` does not start where the previous tensor ends")
        }
        SafeTensorError::TensorInvalidInfo => {
            "corrupt header: a tensor's data offsets do not match its dtype and shape".to_string()
        }
        SafeTensorError::ValidationOverflow => {
            "corrupt header: a tensor's shape overflows the size of any file".to_string()
        }
        SafeTensorError::MisalignedSlice => {
            "corrupt header: a tensor of sub-byte elements does not fill whole bytes".to_string()
        }
        other => format!("corrupt safetensors file: {other}"),
    }
}

/// The first 8 bytes, zero-padded.
fn first_word(bytes: &[u8]) -> [u8; LENGTH_BYTES] {
    let mut word = [0u8; LENGTH_BYTES];
    let n = bytes.len().min(LENGTH_BYTES);
    word[..n].copy_from_slice(&bytes[..n]);
    word
}

/// Names file formats that people mistake for safetensors, from their first bytes.
fn recognised_format(bytes: &[u8]) -> &'static str {
    if bytes.starts_with(b"PK\x03\x04") {
        " (it is a zip archive, as PyTorch's torch.save writes; convert it in Python with \
         safetensors.torch.save_file)"
    } else if bytes.first() == Some(&0x80) && matches!(bytes.get(1), Some(2..=5)) {
        " (it is a Python pickle, as older torch.save writes)"
    } else if bytes.starts_with(b"\x89HDF") {
        " (it is an HDF5 file)"
    } else if bytes.starts_with(b"\x93NUMPY") {
        " (it is a NumPy .npy file)"
    } else {
        ""
    }
}
