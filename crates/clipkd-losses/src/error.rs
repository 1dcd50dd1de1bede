//! The crate's error type.

use std::path::PathBuf;

/// Everything that can go wrong when configuring or evaluating a loss.
///
/// Messages say what was wrong and where: which loss, which tensor, which sizes.
#[derive(Debug, thiserror::Error)]
pub enum LossError {
    /// A tensor has the wrong number of rows (samples) for the batch.
    #[error("{what} has {got} rows, but the batch has {expected} samples")]
    BatchMismatch {
        /// Which tensor, e.g. "student text embeddings".
        what: String,
        /// The batch size the other inputs have.
        expected: usize,
        /// The rows of this tensor.
        got: usize,
    },
    /// A tensor's feature size is not the one a loss or projector was configured for.
    #[error("{what}: expected feature size {expected}, got {got}")]
    DimMismatch {
        /// Which loss and tensor, e.g. "ICL: aligned student image features".
        what: String,
        /// The size expected.
        expected: usize,
        /// The size found.
        got: usize,
    },
    /// A tensor does not have the shape expected.
    #[error("{what}: expected shape {expected:?}, got {got:?}")]
    ShapeMismatch {
        /// Which tensor.
        what: String,
        /// The shape expected (`0` where any size is fine).
        expected: Vec<usize>,
        /// The shape found.
        got: Vec<usize>,
    },
    /// The batch is empty.
    #[error("the distillation batch is empty (0 samples)")]
    EmptyBatch,
    /// A total was asked of a list without terms.
    #[error("no loss terms: a loss must return at least one term to be minimized")]
    NoTerms,
    /// Two lists of terms to be added do not hold the same terms.
    #[error("cannot add loss terms {left:?} and {right:?}: the names differ")]
    TermsMismatch {
        /// The names of the first list.
        left: Vec<String>,
        /// The names of the second.
        right: Vec<String>,
    },
    /// The local rows of a gathered batch fall outside it.
    #[error(
        "local rows {offset}..{end} are outside the gathered batch of {batch} samples (or empty)",
        end = offset + len
    )]
    LocalRowsOutOfRange {
        /// First local row.
        offset: usize,
        /// Number of local rows.
        len: usize,
        /// Global batch size.
        batch: usize,
    },
    /// A loss needs the masked student view but the input has none.
    #[error(
        "loss `{loss}` needs the student's masked-view image embeddings, but the input has none \
         (call `DistillInput::with_masked_student_image` with the student's masked forward)"
    )]
    MissingMaskedView {
        /// The loss entry's name.
        loss: String,
    },
    /// A loss set needs a masked student view, but the student cannot produce one.
    #[error(
        "loss `{loss}` (masked feature distillation) needs a masked forward of the student's vision \
         tower, which only ViT towers have; this student has none (e.g. a ModifiedResNet): \
         remove `{loss}` from the loss set or use a ViT student"
    )]
    MaskedViewUnsupported {
        /// The loss entry's name.
        loss: String,
    },
    /// Two entries of a loss set have the same name.
    #[error("loss set: two entries are named `{name}`; give one of them another name")]
    DuplicateName {
        /// The repeated name.
        name: String,
    },
    /// A loss weight is not a finite number.
    #[error("loss set: entry `{name}` has weight {weight}, which is not finite")]
    InvalidWeight {
        /// The entry's name.
        name: String,
        /// The weight given.
        weight: f64,
    },
    /// A configuration value is invalid.
    #[error("{what}: {reason}")]
    InvalidConfig {
        /// Which loss and field, e.g. "CRD temperature".
        what: String,
        /// Why it is invalid.
        reason: String,
    },
    /// A loss set has no entries.
    #[error("loss set has no losses: add at least one entry")]
    EmptyLossSet,
    /// A loss-set configuration file could not be read.
    #[error("cannot read loss-set config {path}: {source}")]
    ConfigIo {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A loss-set configuration file is not valid JSON for [`LossSetConfig`](crate::LossSetConfig).
    #[error("invalid loss-set config {path} (line {line}, column {column}): {source}")]
    ConfigParse {
        /// The file.
        path: PathBuf,
        /// Line of the error (1-based).
        line: usize,
        /// Column of the error (1-based).
        column: usize,
        /// The JSON error.
        #[source]
        source: serde_json::Error,
    },
}
