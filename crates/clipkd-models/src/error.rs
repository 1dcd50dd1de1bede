//! The error type of this crate.

use std::fmt;
use std::path::PathBuf;

/// One tensor whose shape in a checkpoint differs from what the model expects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShapeMismatch {
    /// The open_clip state-dict key.
    pub key: String,
    /// The shape the model expects (open_clip layout).
    pub expected: Vec<usize>,
    /// The shape stored in the file.
    pub found: Vec<usize>,
}

impl fmt::Display for ShapeMismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: expected {:?}, found {:?}",
            self.key, self.expected, self.found
        )
    }
}

/// Everything that is wrong with the keys of a checkpoint, all at once.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct KeyReport {
    /// Keys the model needs that the file lacks.
    pub missing: Vec<String>,
    /// Keys in the file that the model does not have (and that open_clip would reject).
    pub unexpected: Vec<String>,
    /// Keys present on both sides with different shapes.
    pub mismatched: Vec<ShapeMismatch>,
    /// Keys whose stored element type cannot be read as a float tensor (`key: dtype`).
    pub bad_dtype: Vec<String>,
    /// Hints on how to fix the config (not problems by themselves).
    pub notes: Vec<String>,
}

impl KeyReport {
    /// Whether nothing is wrong.
    pub fn is_empty(&self) -> bool {
        self.missing.is_empty()
            && self.unexpected.is_empty()
            && self.mismatched.is_empty()
            && self.bad_dtype.is_empty()
    }
}

impl fmt::Display for KeyReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut first = true;
        let mut section = |f: &mut fmt::Formatter<'_>, title: &str, items: Vec<String>| {
            if items.is_empty() {
                return Ok(());
            }
            if !first {
                write!(f, "; ")?;
            }
            first = false;
            write!(f, "{} {title}: {}", items.len(), items.join(", "))
        };
        section(f, "missing", self.missing.clone())?;
        section(f, "unexpected", self.unexpected.clone())?;
        section(
            f,
            "with wrong shape",
            self.mismatched.iter().map(|m| m.to_string()).collect(),
        )?;
        section(f, "with a non-float dtype", self.bad_dtype.clone())?;
        for note in &self.notes {
            write!(f, " ({note})")?;
        }
        Ok(())
    }
}

/// Errors of `clipkd-models`: configs, checkpoints, and forward passes given unsupported input.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// A file could not be read or written.
    #[error("{action} {path}: {source}")]
    Io {
        /// What was being done ("reading", "writing", ...).
        action: &'static str,
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },

    /// A config is not valid JSON or a field has the wrong JSON type.
    #[error("invalid open_clip config JSON{}: {source}", origin_suffix(.origin))]
    Json {
        /// The file, if the JSON came from one.
        origin: Option<PathBuf>,
        /// The parser's error (it carries line and column).
        #[source]
        source: serde_json::Error,
    },

    /// A config field has a value that open_clip itself would reject.
    #[error("config field `{field}` = {value}: {reason}")]
    InvalidConfig {
        /// Dotted path of the field, e.g. `vision_cfg.width`.
        field: String,
        /// The offending value, as JSON.
        value: String,
        /// Why it is invalid.
        reason: String,
    },

    /// A config field asks for a feature open_clip has but clipkd does not implement.
    #[error("config field `{field}` = {value} is not supported by clipkd-models: {reason}")]
    UnsupportedConfig {
        /// Dotted path of the field, e.g. `vision_cfg.timm_model_name`.
        field: String,
        /// The offending value, as JSON.
        value: String,
        /// What is missing, and what to do instead.
        reason: String,
    },

    /// Two modules that should have the same parameters in the same order do not (see
    /// [`copy_parameters`](crate::host_init::copy_parameters)).
    #[error("cannot copy parameters between modules of different structure: {detail}")]
    StructureMismatch {
        /// The first difference: which parameter (in visiting order) and the two shapes, or the
        /// two counts.
        detail: String,
    },

    /// `ClipConfig::preset` was given a name it does not know.
    #[error("unknown model preset `{name}` (known: {})", known.join(", "))]
    UnknownPreset {
        /// The name asked for.
        name: String,
        /// The names that exist.
        known: Vec<String>,
    },

    /// A pretrained tag the model does not have (`known` lists the ones it has; empty when the
    /// model has none).
    #[error("{}", unknown_pretrained(model, tag, known))]
    UnknownPretrained {
        /// The model asked for.
        model: String,
        /// The tag asked for.
        tag: String,
        /// The model's tags.
        known: Vec<String>,
    },

    /// A pretrained tag given for a model source that has none by definition (a file, an
    /// inline config, a Hub repository).
    #[error("pretrained tag `{tag}` given for `{model}`: {reason}")]
    TagNotApplicable {
        /// The model source, as written.
        model: String,
        /// The tag given.
        tag: String,
        /// Why it cannot apply, and what to give instead.
        reason: String,
    },

    /// A file of a Hugging Face Hub repository could not be had (offline and not cached, not
    /// in the repository, network failure, cut download, checksum mismatch).
    #[error("Hugging Face Hub, {repo}, {file}: {message}")]
    Hub {
        /// The repository (`org/name`).
        repo: String,
        /// The file (or the files tried).
        file: String,
        /// What went wrong and what to do.
        message: String,
    },

    /// The Hugging Face cache could not be found or read.
    #[error("Hugging Face cache {}: {message}", path.display())]
    HubCache {
        /// The folder or file concerned (empty when no folder could be named).
        path: std::path::PathBuf,
        /// What went wrong.
        message: String,
    },

    /// A checkpoint file could not be parsed (not safetensors, not a PyTorch pickle, ...).
    #[error("cannot read checkpoint {path}: {message}")]
    CheckpointFormat {
        /// The file.
        path: PathBuf,
        /// What the reader reported.
        message: String,
    },

    /// A checkpoint's keys or shapes do not match the model built from the config.
    #[error("checkpoint {path} does not match the model config: {report}")]
    KeyMismatch {
        /// The file.
        path: PathBuf,
        /// Every missing, unexpected and mis-shaped key.
        report: Box<KeyReport>,
    },

    /// The data of one tensor could not be read or converted.
    #[error("tensor `{key}` in {path}: {message}")]
    TensorData {
        /// The file.
        path: PathBuf,
        /// The open_clip key of the tensor.
        key: String,
        /// What went wrong.
        message: String,
    },

    /// A checkpoint holds NaN or infinite weights (a diverged or corrupted save): loading it
    /// would only turn every embedding into NaN.
    #[error(
        "checkpoint {path} holds {total} non-finite (NaN or infinite) values in {} tensor(s): {}",
        tensors.len(),
        list_non_finite(tensors)
    )]
    NonFiniteWeights {
        /// The file.
        path: PathBuf,
        /// Every tensor with non-finite values: its open_clip key and how many it holds, in
        /// model order.
        tensors: Vec<(String, usize)>,
        /// The number of non-finite values in all of them.
        total: usize,
    },

    /// A forward pass produced a NaN or infinite embedding (weights that overflow in the
    /// backend's precision, or broken weights).
    #[error(
        "the embedding of {input} is not finite (NaN or infinite): the model's weights overflow or are broken"
    )]
    NonFiniteEmbedding {
        /// Which input: `image <file>` or `text at index <i> ("<its start>")`.
        input: String,
    },

    /// Writing a safetensors file failed.
    #[error("cannot write safetensors file {path}: {source}")]
    SafetensorsWrite {
        /// The file.
        path: PathBuf,
        /// The writer's error.
        #[source]
        source: safetensors::SafeTensorError,
    },

    /// An intermediate feature was asked that the model does not have.
    #[error("no image feature named `{name}` (this model has: {})", if available.is_empty() { "none".to_string() } else { available.join(", ") })]
    UnknownFeature {
        /// The name asked.
        name: String,
        /// The names the model has.
        available: Vec<String>,
    },
    /// The masked forward (MFD) was asked of a vision tower that has no patch tokens.
    #[error("masked image forward needs a ViT vision tower; this model's vision tower is {tower}")]
    MaskedForwardUnsupported {
        /// The kind of vision tower the model has.
        tower: &'static str,
    },

    /// An input tensor of a forward pass has a shape the model cannot take (images of the
    /// wrong size or channel count, token sequences longer than the context). Checked from the
    /// shape alone, before any compute.
    #[error("{part}: {input} of shape {got:?} do not fit; expected {expected}")]
    InputShape {
        /// The model part that checked: `ViT vision tower`, `ModifiedResNet vision tower` or
        /// `text tower`.
        part: &'static str,
        /// Which input: `images` or `tokens`.
        input: &'static str,
        /// The shape the part takes, and what to change to get it.
        expected: String,
        /// The shape given.
        got: Vec<usize>,
    },

    /// A mask ratio outside `[0, 1)`.
    #[error("mask ratio must be in [0, 1), got {0}")]
    InvalidMaskRatio(f64),

    /// Explicit keep indices of the wrong shape.
    #[error("keep indices have shape {found:?}; expected [{batch}, K] with 0 <= K <= {patches}")]
    InvalidKeepIndices {
        /// The shape given.
        found: [usize; 2],
        /// The batch size of the images.
        batch: usize,
        /// The number of patches per image.
        patches: usize,
    },
}

fn origin_suffix(origin: &Option<PathBuf>) -> String {
    match origin {
        Some(path) => format!(" in {}", path.display()),
        None => String::new(),
    }
}

/// How many tensors [`ModelError::NonFiniteWeights`] names before `... and N more`.
const NON_FINITE_SHOWN: usize = 5;

fn list_non_finite(tensors: &[(String, usize)]) -> String {
    let mut shown: Vec<String> = tensors
        .iter()
        .take(NON_FINITE_SHOWN)
        .map(|(key, n)| format!("{key} ({n})"))
        .collect();
    if tensors.len() > NON_FINITE_SHOWN {
        shown.push(format!("and {} more", tensors.len() - NON_FINITE_SHOWN));
    }
    shown.join(", ")
}

/// The message of [`ModelError::UnknownPretrained`].
fn unknown_pretrained(model: &str, tag: &str, known: &[String]) -> String {
    if known.is_empty() {
        format!(
            "model `{model}` has no pretrained weights in clipkd's table (open_clip 3.3.0's tags \
             on the Hugging Face Hub); models that have some: {}",
            crate::pretrained::pretrained_models().join(", ")
        )
    } else {
        format!(
            "model `{model}` has no pretrained tag `{tag}` (its tags: {})",
            known.join(", ")
        )
    }
}
