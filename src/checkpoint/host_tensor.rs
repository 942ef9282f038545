//! Tensors in host memory, in the element types a checkpoint can hold.

use std::borrow::Cow;
use std::fmt;

use crate::{Error, Result};

/// The element type of a stored tensor, named as safetensors and PyTorch name it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ElementType {
    /// 32-bit float (`torch.float32`): weights, biases, running statistics.
    F32,
    /// 64-bit float (`torch.float64`).
    F64,
    /// 32-bit signed integer (`torch.int32`).
    I32,
    /// 64-bit signed integer (`torch.int64`): counters such as `num_batches_tracked`.
    I64,
    /// Unsigned byte (`torch.uint8`).
    U8,
    /// 64-bit unsigned integer (`torch.uint64`): random-generator state.
    U64,
}

impl ElementType {
    /// Every element type cenet reads and writes.
    pub const ALL: [ElementType; 6] = [
        ElementType::F32,
        ElementType::F64,
        ElementType::I32,
        ElementType::I64,
        ElementType::U8,
        ElementType::U64,
    ];

    /// The dtype string of the safetensors header ("F32", "I64", ...).
    pub fn name(self) -> &'static str {
        match self {
            ElementType::F32 => "F32",
            ElementType::F64 => "F64",
            ElementType::I32 => "I32",
            ElementType::I64 => "I64",
            ElementType::U8 => "U8",
            ElementType::U64 => "U64",
        }
    }

    /// Bytes per element.
    pub fn size_bytes(self) -> usize {
        match self {
            ElementType::U8 => 1,
            ElementType::F32 | ElementType::I32 => 4,
            ElementType::F64 | ElementType::I64 | ElementType::U64 => 8,
        }
    }

    pub(crate) fn to_safetensors(self) -> safetensors::Dtype {
        match self {
            ElementType::F32 => safetensors::Dtype::F32,
            ElementType::F64 => safetensors::Dtype::F64,
            ElementType::I32 => safetensors::Dtype::I32,
            ElementType::I64 => safetensors::Dtype::I64,
            ElementType::U8 => safetensors::Dtype::U8,
            ElementType::U64 => safetensors::Dtype::U64,
        }
    }

    pub(crate) fn from_safetensors(dtype: safetensors::Dtype) -> Option<Self> {
        ElementType::ALL
            .into_iter()
            .find(|ty| ty.to_safetensors() == dtype)
    }
}

impl fmt::Display for ElementType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The values of a host tensor, row-major, one variant per [`ElementType`].
#[derive(Clone, Debug)]
pub enum TensorData {
    /// 32-bit floats.
    F32(Vec<f32>),
    /// 64-bit floats.
    F64(Vec<f64>),
    /// 32-bit signed integers.
    I32(Vec<i32>),
    /// 64-bit signed integers.
    I64(Vec<i64>),
    /// Bytes.
    U8(Vec<u8>),
    /// 64-bit unsigned integers.
    U64(Vec<u64>),
}

/// Applies one expression to the vector inside any [`TensorData`] variant.
macro_rules! each_variant {
    ($data:expr, $values:ident => $body:expr) => {
        match $data {
            TensorData::F32($values) => $body,
            TensorData::F64($values) => $body,
            TensorData::I32($values) => $body,
            TensorData::I64($values) => $body,
            TensorData::U8($values) => $body,
            TensorData::U64($values) => $body,
        }
    };
}

impl TensorData {
    /// The element type of these values.
    pub fn element_type(&self) -> ElementType {
        match self {
            TensorData::F32(_) => ElementType::F32,
            TensorData::F64(_) => ElementType::F64,
            TensorData::I32(_) => ElementType::I32,
            TensorData::I64(_) => ElementType::I64,
            TensorData::U8(_) => ElementType::U8,
            TensorData::U64(_) => ElementType::U64,
        }
    }

    /// Number of values.
    pub fn len(&self) -> usize {
        each_variant!(self, values => values.len())
    }

    /// Whether there are no values.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The values as little-endian bytes, the byte order of safetensors files (borrowed on
    /// little-endian machines, converted on others).
    pub fn to_le_bytes(&self) -> Cow<'_, [u8]> {
        #[cfg(target_endian = "little")]
        {
            each_variant!(self, values => Cow::Borrowed(bytemuck::cast_slice(values)))
        }
        #[cfg(not(target_endian = "little"))]
        {
            each_variant!(self, values => Cow::Owned(
                values.iter().flat_map(|v| v.to_le_bytes()).collect()
            ))
        }
    }

    /// Decodes little-endian bytes. The caller has checked that `bytes.len()` is a multiple
    /// of the element size.
    pub(crate) fn from_le_bytes(element_type: ElementType, bytes: &[u8]) -> TensorData {
        macro_rules! decode {
            ($t:ty) => {
                bytes
                    .chunks_exact(std::mem::size_of::<$t>())
                    .map(|chunk| {
                        let mut word = [0u8; std::mem::size_of::<$t>()];
                        word.copy_from_slice(chunk);
                        <$t>::from_le_bytes(word)
                    })
                    .collect()
            };
        }
        match element_type {
            ElementType::F32 => TensorData::F32(decode!(f32)),
            ElementType::F64 => TensorData::F64(decode!(f64)),
            ElementType::I32 => TensorData::I32(decode!(i32)),
            ElementType::I64 => TensorData::I64(decode!(i64)),
            ElementType::U8 => TensorData::U8(bytes.to_vec()),
            ElementType::U64 => TensorData::U64(decode!(u64)),
        }
    }

    /// Bitwise equality: NaNs with the same payload are equal, 0.0 and -0.0 are not.
    fn bits_equal(&self, other: &TensorData) -> bool {
        self.element_type() == other.element_type() && self.to_le_bytes() == other.to_le_bytes()
    }
}

mod sealed {
    pub trait Sealed {}
}

/// A Rust type that is the element of one [`ElementType`]: `f32`, `f64`, `i32`, `i64`, `u8`,
/// `u64`. Lets [`StateDict`](super::StateDict) insert and read values generically.
pub trait Element: sealed::Sealed + Copy + 'static {
    /// The element type of this Rust type.
    const TYPE: ElementType;

    /// Wraps values in the matching [`TensorData`] variant.
    fn wrap(values: Vec<Self>) -> TensorData;

    /// The values, if `data` holds this type.
    fn view(data: &TensorData) -> Option<&[Self]>;
}

macro_rules! element {
    ($t:ty, $variant:ident) => {
        impl sealed::Sealed for $t {}

        impl Element for $t {
            const TYPE: ElementType = ElementType::$variant;

            fn wrap(values: Vec<Self>) -> TensorData {
                TensorData::$variant(values)
            }

            fn view(data: &TensorData) -> Option<&[Self]> {
                match data {
                    TensorData::$variant(values) => Some(values),
                    _ => None,
                }
            }
        }
    };
}

element!(f32, F32);
element!(f64, F64);
element!(i32, I32);
element!(i64, I64);
element!(u8, U8);
element!(u64, U64);

/// A tensor in host memory: a shape and row-major values. The shape `[]` is a scalar.
#[derive(Clone, Debug)]
pub struct HostTensor {
    shape: Vec<usize>,
    data: TensorData,
}

impl HostTensor {
    /// A tensor of `shape` holding `data`; `name` only labels the error when the number of
    /// values is not the product of the shape (1 for the scalar shape `[]`).
    pub fn new(name: &str, shape: &[usize], data: TensorData) -> Result<Self> {
        let expected = shape.iter().try_fold(1usize, |n, &d| n.checked_mul(d));
        if expected != Some(data.len()) {
            return Err(Error::DataLength {
                what: name.to_string(),
                got: data.len(),
                expected: expected.unwrap_or(usize::MAX),
                shape: shape.to_vec(),
            });
        }
        Ok(HostTensor {
            shape: shape.to_vec(),
            data,
        })
    }

    /// The shape; `[]` for a scalar.
    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    /// The values.
    pub fn data(&self) -> &TensorData {
        &self.data
    }

    /// The element type.
    pub fn element_type(&self) -> ElementType {
        self.data.element_type()
    }

    /// The values as `T`, if the tensor holds `T`.
    pub fn values<T: Element>(&self) -> Option<&[T]> {
        T::view(&self.data)
    }

    /// Consumes the tensor, returning its shape and values.
    pub fn into_parts(self) -> (Vec<usize>, TensorData) {
        (self.shape, self.data)
    }
}

impl PartialEq for HostTensor {
    /// Same shape, same element type, bit-identical values.
    fn eq(&self, other: &Self) -> bool {
        self.shape == other.shape && self.data.bits_equal(&other.data)
    }
}
