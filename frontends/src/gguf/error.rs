//! The GGUF reader's error type.
//!
//! File-level variants start with the file's path; tensor-level ones also
//! name the tensor, and metadata ones the key, so a message alone says where
//! to look (`gguf-dump` or `GGUFReader` show the same names).

use super::GgmlType;
use std::path::PathBuf;

/// Why a GGUF file could not be read or a tensor could not be dequantized.
#[derive(Debug, thiserror::Error)]
pub enum GgufError {
    /// The file could not be opened or mapped.
    #[error("{}: cannot read GGUF file: {source}", .path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The first four bytes are not `GGUF`.
    #[error("{}: not a GGUF file (expected magic \"GGUF\", found {found:02x?})", .path.display())]
    BadMagic {
        /// The file.
        path: PathBuf,
        /// The bytes found (fewer than four when the file is that short).
        found: Vec<u8>,
    },
    /// The format version is not 2 or 3, or the file is big-endian.
    #[error("{}: unsupported GGUF version {version}{hint} (Kiln reads little-endian versions 2 and 3)", .path.display())]
    UnsupportedVersion {
        /// The file.
        path: PathBuf,
        /// The version field as read little-endian.
        version: u32,
        /// Extra explanation, starting with a separator, or empty.
        hint: &'static str,
    },
    /// The file ends before a header field, metadata value or tensor info.
    #[error("{}: file is truncated: {what} needs {needed} bytes at offset {offset}, but the file is {file_len} bytes long", .path.display())]
    Truncated {
        /// The file.
        path: PathBuf,
        /// What was being read (names the key or tensor).
        what: String,
        /// Where it starts.
        offset: u64,
        /// How many bytes it needs.
        needed: u64,
        /// The file's length.
        file_len: u64,
    },
    /// The header is structurally invalid (bad value type, bad UTF-8, duplicate name, ...).
    #[error("{}: {what}: {problem}", .path.display())]
    Malformed {
        /// The file.
        path: PathBuf,
        /// What was being read (names the key or tensor).
        what: String,
        /// What is wrong and what was expected.
        problem: String,
    },
    /// `general.alignment` is not a power-of-two u32.
    #[error("{}: metadata key 'general.alignment': {problem} (expected a u32 power of two)", .path.display())]
    BadAlignment {
        /// The file.
        path: PathBuf,
        /// What was found.
        problem: String,
    },
    /// A tensor's type id is not one ggml defines.
    #[error("{}: tensor '{tensor}': unknown ggml type id {id}", .path.display())]
    UnknownType {
        /// The file.
        path: PathBuf,
        /// The tensor.
        tensor: String,
        /// The id in the file.
        id: u32,
    },
    /// A tensor's row length is not a whole number of blocks.
    #[error("{}: tensor '{tensor}': row length {row_len} is not a multiple of the {ty} block size {block_size}", .path.display())]
    BlockMismatch {
        /// The file.
        path: PathBuf,
        /// The tensor.
        tensor: String,
        /// Its type.
        ty: GgmlType,
        /// Elements in its innermost dimension.
        row_len: u64,
        /// Elements per block of the type.
        block_size: u64,
    },
    /// A tensor's offset is not a multiple of the file's alignment.
    #[error("{}: tensor '{tensor}': data offset {offset} is not a multiple of the alignment {alignment}", .path.display())]
    Misaligned {
        /// The file.
        path: PathBuf,
        /// The tensor.
        tensor: String,
        /// Offset from the start of the data section.
        offset: u64,
        /// The file's alignment.
        alignment: u64,
    },
    /// A tensor's data extends past the end of the file.
    #[error("{}: tensor '{tensor}': data [{start}, {end}) lies outside the file ({file_len} bytes; truncated download?)", .path.display())]
    OutOfBounds {
        /// The file.
        path: PathBuf,
        /// The tensor.
        tensor: String,
        /// Absolute start offset.
        start: u64,
        /// Absolute end offset (saturated on overflow).
        end: u64,
        /// The file's length.
        file_len: u64,
    },
    /// No tensor of that name.
    #[error("{}: no tensor named '{tensor}'", .path.display())]
    NoSuchTensor {
        /// The file.
        path: PathBuf,
        /// The name asked for.
        tensor: String,
    },
    /// The tensor's type has no dequantizer here.
    #[error("{}: tensor '{tensor}' has type {ty}, which Kiln cannot dequantize (supported: {})", .path.display(), supported_list())]
    UnsupportedType {
        /// The file.
        path: PathBuf,
        /// The tensor.
        tensor: String,
        /// Its type.
        ty: GgmlType,
    },
    /// A metadata key the caller needs is absent.
    #[error("{}: metadata key '{key}' is missing", .path.display())]
    MissingKey {
        /// The file.
        path: PathBuf,
        /// The key.
        key: String,
    },
    /// A metadata value has the wrong type for the caller.
    #[error("{}: metadata key '{key}' holds {found}, expected {expected}", .path.display())]
    WrongKeyType {
        /// The file.
        path: PathBuf,
        /// The key.
        key: String,
        /// What the caller expected.
        expected: &'static str,
        /// The type found.
        found: &'static str,
    },
    /// [`super::dequantize_into`] was given a type it cannot convert.
    #[error("cannot dequantize type {ty} (supported: {})", supported_list())]
    DequantUnsupported {
        /// The type.
        ty: GgmlType,
    },
    /// [`super::dequantize_into`] was given buffers that do not match.
    #[error("cannot dequantize {ty}: {problem}")]
    DequantSize {
        /// The type.
        ty: GgmlType,
        /// The mismatch, in words.
        problem: String,
    },
}

/// The dequantizable types, comma separated.
pub(crate) fn supported_list() -> String {
    super::dequant::SUPPORTED
        .iter()
        .map(|t| t.name())
        .collect::<Vec<_>>()
        .join(", ")
}
