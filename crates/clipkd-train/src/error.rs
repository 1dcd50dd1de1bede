//! The error type of `clipkd-train`.

use std::path::PathBuf;

use clipkd_data::DataError;
use clipkd_losses::LossError;
use clipkd_models::ModelError;

/// Everything that can stop training, with what failed and where.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    /// A loss rejected its input or configuration.
    #[error(transparent)]
    Loss(#[from] LossError),
    /// A model could not be built, loaded or run.
    #[error(transparent)]
    Model(#[from] ModelError),
    /// Reading or preparing data failed (names the file).
    #[error(transparent)]
    Data(#[from] DataError),
    /// The device failed (e.g. reading a tensor back).
    #[error("device error: {0}")]
    Device(String),
    /// A collective operation of a data-parallel group failed (burn-collective).
    #[error("data-parallel peer {rank}: {operation} failed: {message}")]
    Collective {
        /// The peer's rank.
        rank: usize,
        /// The operation (`join`, `all_reduce`, `broadcast`, `finish`).
        operation: &'static str,
        /// burn-collective's error.
        message: String,
    },
    /// A peer of a data-parallel group failed; the group stopped.
    #[error("data-parallel peer {rank} failed: {source}")]
    Peer {
        /// The peer's rank.
        rank: usize,
        /// Its error.
        source: Box<TrainError>,
    },
    /// A thread of the run panicked (a bug: please report it with this message).
    #[error("panicked: {message}")]
    Panicked {
        /// The panic's message.
        message: String,
    },
    /// The model's token table is smaller than the tokenizer's vocabulary.
    #[error(
        "the model's text_cfg.vocab_size is {model_vocab}, smaller than the CLIP tokenizer's \
         {tokenizer_vocab} tokens: this model cannot embed tokenized captions"
    )]
    TokenizerMismatch {
        /// `text_cfg.vocab_size` of the model.
        model_vocab: usize,
        /// The tokenizer's vocabulary size.
        tokenizer_vocab: usize,
    },
    /// A run-config field has a bad value (or a required one is missing). `field` is the dotted
    /// path in the config file, e.g. `optim.lr` or `loss.terms[2].weight`.
    #[error("config field `{field}`: {reason}")]
    Config {
        /// The dotted path of the field.
        field: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A run-config field names something that failed (a model config, a checkpoint, the
    /// data, the losses): the field, and the typed error as the source.
    #[error("config field `{field}`: {source}")]
    Field {
        /// The dotted path of the field.
        field: String,
        /// What failed.
        #[source]
        source: Box<TrainError>,
    },
    /// A run-config file (TOML or JSON) cannot be parsed.
    #[error("config file {path}{}: {message}", location.map(|(l, c)| format!(", line {l} column {c}")).unwrap_or_default())]
    ConfigParse {
        /// The file (or `<command line>` for a `--set` value).
        path: PathBuf,
        /// 1-based line and column, where the parser gives one.
        location: Option<(usize, usize)>,
        /// The parser's message.
        message: String,
    },
    /// A file or directory could not be read, written, renamed or removed.
    #[error("{action} {path}: {source}")]
    Io {
        /// What was being done (`reading`, `writing`, `renaming`, ...).
        action: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A checkpoint is missing, incomplete or does not fit this run.
    #[error("checkpoint {path}: {what}")]
    Checkpoint {
        /// The checkpoint directory (or the folder searched).
        path: PathBuf,
        /// What is wrong.
        what: String,
    },
    /// A teacher cache is incomplete, damaged, or does not fit this run's teacher or data.
    #[error("teacher cache {path}: {what}")]
    TeacherCache {
        /// The cache directory (or the file in it).
        path: PathBuf,
        /// What is wrong.
        what: String,
    },
    /// A Burn record (model or optimizer state) could not be written or read.
    #[error("record {path}: {message}")]
    Record {
        /// The record file.
        path: PathBuf,
        /// The recorder's message.
        message: String,
    },
    /// A metrics file could not be written or parsed.
    #[error("metrics file {path}: {what}")]
    Metrics {
        /// The file.
        path: PathBuf,
        /// What is wrong (with the line number where there is one).
        what: String,
    },
    /// A plot could not be drawn or saved (feature `plots`).
    #[error("plot {path}: {what}")]
    Plot {
        /// The PNG file.
        path: PathBuf,
        /// The plotting library's message.
        what: String,
    },
    /// Evaluation failed (names the dataset or file where it can).
    #[error("evaluation: {what}")]
    Eval {
        /// What failed.
        what: String,
    },
    /// Training diverged: a loss became NaN or infinite.
    #[error(
        "the loss is not finite at step {step} (terms: {terms}); lower optim.lr or set optim.grad_clip_norm"
    )]
    NonFiniteLoss {
        /// The optimizer step (counted from 1, as in the metrics file).
        step: u64,
        /// The terms, `name=value` comma-separated.
        terms: String,
    },
    /// The weights or the optimizer state hold NaN or infinite values after a step whose
    /// loss was finite (a diverging update); nothing of that step is saved.
    #[error(
        "the {what} after step {step} hold non-finite values ({details}); the checkpoints on \
         disk are from before: lower optim.lr or set optim.grad_clip_norm, and resume"
    )]
    NonFiniteWeights {
        /// The optimizer step (counted from 1).
        step: u64,
        /// `weights` or `optimizer moments`.
        what: &'static str,
        /// The tensors concerned (first few) and their counts of non-finite values.
        details: String,
    },
    /// Another process holds the run directory.
    #[error(
        "run directory {path} is in use by {holder}; wait for it to finish, stop it, or choose \
         another run.output_dir"
    )]
    RunDirLocked {
        /// The run directory.
        path: PathBuf,
        /// Who holds it: pid, host, start time, command line.
        holder: String,
    },
    /// The training data yields no usable batch (every sample skipped, or fewer samples than
    /// one step needs).
    #[error("no usable training data: {what}")]
    NoUsableData {
        /// What was read and why nothing could be used (counts by cause, first files).
        what: String,
    },
    /// More of the training data was skipped than `data.max_skipped_fraction` allows.
    #[error(
        "{skipped} of {seen} samples read so far were unusable ({fraction:.1}%, more than \
         data.max_skipped_fraction = {limit}): {report}"
    )]
    TooManySkipped {
        /// Samples skipped.
        skipped: u64,
        /// Samples read (used or skipped).
        seen: u64,
        /// `skipped / seen` in percent.
        fraction: f64,
        /// The configured limit (a fraction).
        limit: f64,
        /// Counts by cause and the first files.
        report: String,
    },
}

impl TrainError {
    /// A [`TrainError::Config`] for `field`.
    pub fn config(field: impl Into<String>, reason: impl Into<String>) -> Self {
        TrainError::Config {
            field: field.into(),
            reason: reason.into(),
        }
    }

    /// A [`TrainError::Field`]: `source` (a model, loss or data error...) about `field`.
    pub fn field(field: impl Into<String>, source: impl Into<TrainError>) -> Self {
        TrainError::Field {
            field: field.into(),
            source: Box::new(source.into()),
        }
    }

    /// A [`TrainError::Io`].
    pub fn io(action: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        TrainError::Io {
            action,
            path: path.into(),
            source,
        }
    }
}
