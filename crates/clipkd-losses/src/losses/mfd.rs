//! MFD: masked feature distillation.

use burn::config::Config;
use burn::module::Module;
use burn::tensor::backend::Backend;

use super::fd::FeatureDistance;
use crate::error::LossError;
use crate::loss::DistillLoss;
use crate::projector::DistillBatch;
use crate::terms::LossTerms;

/// Configuration of the [`MfdLoss`].
#[derive(Config, Debug)]
pub struct MfdLossConfig {
    /// The distance (CLIP-KD: MSE).
    #[config(default = "FeatureDistance::Mse")]
    pub distance: FeatureDistance,
    /// Whether to add FD's text term `MSE(ŝ_txt, t_txt)` (CLIP-KD's MFD ablation is FD with a
    /// masked image, text included). Turn it off when FD is in the same set.
    #[config(default = true)]
    pub include_text: bool,
}

impl MfdLossConfig {
    /// Creates the loss.
    pub fn init(&self) -> MfdLoss {
        MfdLoss {
            distance: self.distance,
            include_text: self.include_text,
        }
    }
}

/// Masked feature distillation (term `"mfd"`): FD where the student's image side comes from a
/// *masked* view of the images (the teacher sees the full images):
/// `MSE(normalize(P s_img_masked), t_img) [+ MSE(ŝ_txt, t_txt)]`.
///
/// It reads [`DistillInput::with_masked_student_image`](crate::DistillInput::with_masked_student_image)
/// (e.g. `Clip::encode_image_masked(images, 0.75)`: MAE-style random per-sample patch keep, CLS
/// kept). Only ViT students have a masked forward: check a loss set with
/// [`LossSetConfig::check_student`](crate::LossSetConfig::check_student) when configuring.
/// (CLIP-KD's released MFD discards the masked forward, so it equals FD; this one is real.)
#[derive(Module, Clone, Debug)]
pub struct MfdLoss {
    /// The distance.
    pub distance: FeatureDistance,
    /// Whether the text term is included.
    pub include_text: bool,
}

impl MfdLoss {
    /// The term's name.
    pub const NAME: &'static str = "mfd";
}

impl<B: Backend> DistillLoss<B> for MfdLoss {
    fn forward(&self, batch: &DistillBatch<B>) -> Result<LossTerms<B>, LossError> {
        batch.check_aligned("MFD")?;
        let masked = batch
            .masked_image_aligned()
            .ok_or_else(|| LossError::MissingMaskedView {
                loss: Self::NAME.into(),
            })?;
        let input = batch.input();
        let (t, rows) = (input.teacher(), input.rows());
        let mut value = self.distance.apply(masked, t.image_normalized(), rows);
        if self.include_text {
            value = value
                + self
                    .distance
                    .apply(batch.text_aligned(), t.text_normalized(), rows);
        }
        Ok(LossTerms::single(Self::NAME, value))
    }

    fn requires_masked_view(&self) -> bool {
        true
    }
}
