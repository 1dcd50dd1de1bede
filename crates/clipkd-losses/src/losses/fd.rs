//! FD: feature distillation.

use burn::config::Config;
use burn::module::Module;
use burn::tensor::{Tensor, backend::Backend};

use crate::error::LossError;
use crate::input::LocalRows;
use crate::loss::DistillLoss;
use crate::ops::{cosine_distance_normalized, local, mse};
use crate::projector::DistillBatch;
use crate::terms::LossTerms;

/// How FD and MFD compare the aligned student features with the teacher's.
#[derive(Config, Debug, Copy, PartialEq, Eq)]
pub enum FeatureDistance {
    /// Mean squared error over all `N · D_t` elements, as CLIP-KD.
    Mse,
    /// Mean over samples of `1 - cos(ŝ_i, t_i)` (= `D_t / 2` times the MSE of unit vectors,
    /// so it needs a weight about `D_t / 2` times smaller than MSE's for the same effect).
    Cosine,
}

impl FeatureDistance {
    pub(crate) fn apply<B: Backend>(
        self,
        student: &Tensor<B, 2>,
        teacher: &Tensor<B, 2>,
        rows: LocalRows,
    ) -> Tensor<B, 1> {
        let (s, t) = (local(student, rows), local(teacher, rows));
        match self {
            FeatureDistance::Mse => mse(s, t),
            FeatureDistance::Cosine => cosine_distance_normalized(s, t),
        }
    }
}

/// Configuration of the [`FdLoss`].
#[derive(Config, Debug)]
pub struct FdLossConfig {
    /// The distance (CLIP-KD: MSE).
    #[config(default = "FeatureDistance::Mse")]
    pub distance: FeatureDistance,
}

impl FdLossConfig {
    /// Creates the loss.
    pub fn init(&self) -> FdLoss {
        FdLoss {
            distance: self.distance,
        }
    }
}

/// Feature distillation (term `"fd"`): `MSE(ŝ_img, t_img) + MSE(ŝ_txt, t_txt)` where
/// `ŝ = normalize(P s)` are the student's embeddings aligned by the loss set's projector
/// (identity when `D_s == D_t`) and `t` the teacher's normalized embeddings.
#[derive(Module, Clone, Debug)]
pub struct FdLoss {
    /// The distance.
    pub distance: FeatureDistance,
}

impl FdLoss {
    /// The term's name.
    pub const NAME: &'static str = "fd";
}

impl<B: Backend> DistillLoss<B> for FdLoss {
    fn forward(&self, batch: &DistillBatch<B>) -> Result<LossTerms<B>, LossError> {
        batch.check_aligned("FD")?;
        let input = batch.input();
        let (t, rows) = (input.teacher(), input.rows());
        let value = self
            .distance
            .apply(batch.image_aligned(), t.image_normalized(), rows)
            + self
                .distance
                .apply(batch.text_aligned(), t.text_normalized(), rows);
        Ok(LossTerms::single(Self::NAME, value))
    }
}
