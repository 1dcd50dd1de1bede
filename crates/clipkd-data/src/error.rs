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
    /// A file or folder could not be written (or created).
    #[error("cannot write {path}: {source}")]
    Write {
        /// The file or folder.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The tokenizer was asked for rows of `context_length` 0, which cannot hold
    /// `<end_of_text>`.
    #[error(
        "tokenizer: context_length must be at least 1 (each row ends with <end_of_text>), \
         got {context_length}"
    )]
    ContextLength {
        /// The context length asked for.
        context_length: usize,
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
    /// An image's header claims more pixels than [`MAX_IMAGE_PIXELS`] (PIL's decompression-bomb
    /// threshold): refused before anything is allocated or decoded, since a few hundred bytes
    /// can claim gigabytes of pixels.
    ///
    /// [`MAX_IMAGE_PIXELS`]: crate::image::MAX_IMAGE_PIXELS
    #[error(
        "image {path}: {width}x{height} pixels, more than the limit of {limit} (PIL's \
         decompression-bomb threshold); not decoded"
    )]
    ImageTooLarge {
        /// The file (or the name the bytes came with).
        path: PathBuf,
        /// The width the header claims.
        width: u64,
        /// The height the header claims.
        height: u64,
        /// The largest number of pixels accepted.
        limit: u64,
    },
    /// An image file is larger than [`MAX_IMAGE_FILE_BYTES`]: refused before it is read into
    /// memory.
    ///
    /// [`MAX_IMAGE_FILE_BYTES`]: crate::image::MAX_IMAGE_FILE_BYTES
    #[error("image {path}: the file has {bytes} bytes, more than the limit of {limit}; not read")]
    ImageFileTooLarge {
        /// The file.
        path: PathBuf,
        /// Its size.
        bytes: u64,
        /// The largest size accepted.
        limit: u64,
    },
    /// An image path names something other than a regular file (a directory, a FIFO, a
    /// socket, a device): refused before it is opened, since opening a FIFO blocks until a
    /// writer appears.
    #[error("image {path}: not a regular file but {kind}")]
    NotAFile {
        /// The path.
        path: PathBuf,
        /// What it is (`a directory`, `a FIFO`, ...).
        kind: &'static str,
    },
    /// An image transform setting is out of range.
    #[error("image transform: invalid {field}: {reason}")]
    InvalidTransform {
        /// The setting (`size`, `mean`, `std`, `crop_scale`, ...).
        field: &'static str,
        /// Why it is invalid.
        reason: String,
    },
    /// A CSV file is unusable: unreadable, empty (no header or no rows), or a line that cannot
    /// be parsed at all.
    #[error("CSV {path}: {what}")]
    Csv {
        /// The file.
        path: PathBuf,
        /// What is wrong (with the line number where there is one).
        what: String,
    },
    /// A column named in the configuration is not in a CSV file's header.
    #[error("CSV {path}: no column `{column}` in the header (it has: {found})")]
    CsvColumn {
        /// The file.
        path: PathBuf,
        /// The missing column.
        column: String,
        /// The header's columns, comma-separated.
        found: String,
    },
    /// A dataset specification (file and root lists, dataset kind) is inconsistent.
    #[error("dataset specification: {what}")]
    DatasetSpec {
        /// What is wrong.
        what: String,
    },
    /// A webdataset shard pattern is malformed or matches no shard.
    #[error("webdataset shards `{pattern}`: {what}")]
    Shards {
        /// The pattern as given.
        pattern: String,
        /// What is wrong.
        what: String,
    },
    /// An image folder (ImageNet layout) is unusable.
    #[error("image folder {path}: {what}")]
    ImageFolder {
        /// The folder.
        path: PathBuf,
        /// What is wrong.
        what: String,
    },
    /// A retrieval annotation file (JSON or CSV) is malformed.
    #[error("retrieval annotations {path}: {what}")]
    Annotations {
        /// The file.
        path: PathBuf,
        /// What is wrong, and where (entry index, line).
        what: String,
    },
    /// A data loader setting is out of range.
    #[error("data loader: invalid {field}: {reason}")]
    InvalidLoader {
        /// The setting (`batch_size`, `context_length`, ...).
        field: &'static str,
        /// Why it is invalid.
        reason: String,
    },
    /// A saved data position does not fit the dataset or loader it is resumed with.
    #[error("cannot resume the data loader at {position}: {what}")]
    Position {
        /// The position, as text.
        position: String,
        /// Why it does not fit.
        what: String,
    },
    /// A data loader thread stopped unexpectedly (a bug: per-sample failures are skipped, not
    /// raised).
    #[error("data loader failed: {what}")]
    LoaderFailed {
        /// What happened (the panic message where there is one).
        what: String,
    },
}
