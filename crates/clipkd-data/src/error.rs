//! The error type of `clipkd-data`.

use std::path::PathBuf;

/// Everything that can go wrong while reading or preparing data. Each variant says what failed
/// and where (file, line, key).
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    /// A file could not be read.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A BPE vocabulary (merges) file for the tokenizer is malformed.
    #[error("invalid BPE merges file {path}, line {line}: {what}")]
    BpeMerges {
        /// The file.
        path: PathBuf,
        /// The 1-based line number.
        line: usize,
        /// What is wrong.
        what: String,
    },
    /// An image file is not in a supported format, or its header describes something this
    /// crate cannot decode.
    #[error("image {path}: {what}")]
    ImageFormat {
        /// The file (or the name the bytes came with).
        path: PathBuf,
        /// What is wrong.
        what: String,
    },
    /// An image file could not be decoded (corrupt or truncated data).
    #[error("cannot decode image {path}: {source}")]
    ImageDecode {
        /// The file (or the name the bytes came with).
        path: PathBuf,
        /// The decoder's error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// An image transform setting is out of range.
    #[error("image transform: invalid {field}: {reason}")]
    InvalidTransform {
        /// The setting (`size`, `mean`, `std`, `crop_scale`, ...).
        field: &'static str,
        /// Why it is invalid.
        reason: String,
    },
}
