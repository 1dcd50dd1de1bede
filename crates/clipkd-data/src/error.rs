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
}
