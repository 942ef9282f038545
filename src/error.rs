//! The crate's one error type.

use std::path::PathBuf;

use thiserror::Error;

/// Everything that can go wrong in cenet, grouped by concern.
#[derive(Debug, Error)]
pub enum Error {
    // --- The device -------------------------------------------------------------------------
    /// No adapter was found, or none matched the requested backend or name.
    #[error("no GPU adapter found{detail}. {hint}")]
    NoAdapter {
        /// What was asked for, if anything (backend, name filter).
        detail: String,
        /// What to install or change.
        hint: &'static str,
    },

    /// The adapter refused to create a device.
    #[error("could not open device on adapter {adapter}: {reason}")]
    DeviceRequest {
        /// The adapter's name.
        adapter: String,
        /// wgpu's reason.
        reason: String,
    },

    /// wgpu reported a validation or out-of-memory error while recording work.
    #[error("GPU error during {during}: {message}")]
    Gpu {
        /// What cenet was doing.
        during: String,
        /// wgpu's message.
        message: String,
    },

    /// A buffer could not be mapped for reading.
    #[error("reading back {what} failed: {reason}")]
    Readback {
        /// The tensor or buffer being read.
        what: String,
        /// Why.
        reason: String,
    },

    /// A tensor is larger than the device lets one storage binding be.
    #[error(
        "{what} needs {bytes} bytes, over this device's storage-binding limit of {limit} bytes"
    )]
    TooLarge {
        /// The tensor's name or role.
        what: String,
        /// Its size in bytes.
        bytes: u64,
        /// The device limit `max_storage_buffer_binding_size`.
        limit: u64,
    },

    // --- Checkpoints ------------------------------------------------------------------------
    /// A checkpoint could not be written or read, or does not match what was expected of it.
    #[error("checkpoint {}: {message}", file.display())]
    Checkpoint {
        /// The checkpoint file (or the name given to bytes that did not come from a file).
        file: PathBuf,
        /// What is wrong, with every offending tensor named.
        message: String,
    },

    // --- Shapes and arguments ---------------------------------------------------------------
    /// Two shapes that must agree do not.
    #[error("{op}: {what}: got {got:?}, expected {expected:?}")]
    Shape {
        /// The operation.
        op: &'static str,
        /// Which operand or dimension.
        what: String,
        /// The shape given.
        got: Vec<usize>,
        /// The shape required.
        expected: Vec<usize>,
    },

    /// An argument is out of range or inconsistent with the others.
    #[error("{op}: {message}")]
    InvalidArgument {
        /// The operation.
        op: &'static str,
        /// What is wrong, with the values involved.
        message: String,
    },

    /// Host data does not match the tensor it is written to or read from.
    #[error("{what}: {got} values given, shape {shape:?} holds {expected}")]
    DataLength {
        /// The tensor.
        what: String,
        /// Number of values supplied.
        got: usize,
        /// Number the shape holds.
        expected: usize,
        /// The tensor's shape.
        shape: Vec<usize>,
    },

    // --- Data sets --------------------------------------------------------------------------
    /// A data-set file (or folder) is missing, unreadable or malformed.
    #[error("{}: {message}", file.display())]
    Data {
        /// The file or folder concerned.
        file: std::path::PathBuf,
        /// What is wrong with it, with the offending values.
        message: String,
    },
}

/// Short for `std::result::Result<T, cenet::Error>`.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// A shape mismatch in `op`.
    pub fn shape(
        op: &'static str,
        what: impl Into<String>,
        got: &[usize],
        expected: &[usize],
    ) -> Self {
        Error::Shape {
            op,
            what: what.into(),
            got: got.to_vec(),
            expected: expected.to_vec(),
        }
    }

    /// An invalid argument to `op`.
    pub fn invalid(op: &'static str, message: impl Into<String>) -> Self {
        Error::InvalidArgument {
            op,
            message: message.into(),
        }
    }
}
