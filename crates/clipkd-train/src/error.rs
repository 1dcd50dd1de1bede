//! The error type of `clipkd-train`.

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
}
