//! The error type of `clipkd-train`.

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
}
