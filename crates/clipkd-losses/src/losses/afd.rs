//! AFD: augmented feature distillation (student-teacher feature fusion).

use burn::config::Config;
use burn::module::Module;
use burn::nn::{Linear, LinearConfig};
use burn::tensor::{Tensor, backend::Backend};

use crate::error::LossError;
use crate::loss::{DistillLoss, LearnableScale, LearnableScaleConfig};
use crate::ops::{contrastive_cross_entropy, l2_normalize, local, scaled_similarity};
use crate::projector::{DistillBatch, eager};
use crate::terms::LossTerms;

/// Configuration of the [`AfdLoss`].
#[derive(Config, Debug)]
pub struct AfdLossConfig {
    /// The teacher's embedding size `D_t` (the fusion layers read `[ŝ ; t]`, `2 · D_t` wide).
    pub teacher_dim: usize,
    /// Output size of the fusion layers; `None`: `D_t`.
    #[config(default = "None")]
    pub fused_dim: Option<usize>,
    /// Whether the fusion layers have a bias (CLIP-KD's do).
    #[config(default = true)]
    pub bias: bool,
    /// The learnable logit scale `c_f` (CLIP-KD: raw, init `ln(1/0.07)`).
    #[config(default = "LearnableScaleConfig::new()")]
    pub scale: LearnableScaleConfig,
}

impl AfdLossConfig {
    /// Creates the loss on `device` (fusion layers initialized like PyTorch's `nn.Linear`).
    pub fn init<B: Backend>(&self, device: &B::Device) -> Result<AfdLoss<B>, LossError> {
        self.scale.validate("AFD")?;
        let fused = self.fused_dim.unwrap_or(self.teacher_dim);
        if self.teacher_dim == 0 || fused == 0 {
            return Err(LossError::InvalidConfig {
                what: "AFD sizes".into(),
                reason: format!(
                    "teacher_dim {} and fused_dim {fused} must be positive",
                    self.teacher_dim
                ),
            });
        }
        let linear = || {
            eager(
                LinearConfig::new(2 * self.teacher_dim, fused)
                    .with_bias(self.bias)
                    .init(device),
            )
        };
        Ok(AfdLoss {
            image_fusion: linear(),
            text_fusion: linear(),
            scale: self.scale.init(device),
        })
    }
}

/// Augmented feature distillation (term `"afd"`): contrastive loss on fused student-teacher
/// features, `f_img = normalize(W_v [ŝ_img ; t_img])`, `f_txt = normalize(W_t [ŝ_txt ; t_txt])`,
/// `½ [CE(c_f f_img f_txtᵀ, y) + CE(c_f f_txt f_imgᵀ, y)]`.
///
/// CLIP-KD concatenates after its projector but sizes the fusion layers
/// `Linear(D_s + D_t -> D_s)`, so it only runs when `D_s == D_t`; here they are
/// `Linear(2 · D_t -> D_t)` (the same layer when the sizes match), so any student works.
#[derive(Module, Debug)]
pub struct AfdLoss<B: Backend> {
    /// Image fusion layer `W_v` (CLIP-KD's `visual_fusion_proj`).
    pub image_fusion: Linear<B>,
    /// Text fusion layer `W_t` (CLIP-KD's `text_fusion_proj`).
    pub text_fusion: Linear<B>,
    /// The learnable logit scale `c_f` (CLIP-KD's `fusion_logit_scale`).
    pub scale: LearnableScale<B>,
}

impl<B: Backend> AfdLoss<B> {
    /// The term's name.
    pub const NAME: &'static str = "afd";

    fn fuse(
        &self,
        linear: &Linear<B>,
        student: &Tensor<B, 2>,
        teacher: &Tensor<B, 2>,
    ) -> Tensor<B, 2> {
        l2_normalize(linear.forward(Tensor::cat(vec![student.clone(), teacher.clone()], 1)))
    }
}

impl<B: Backend> DistillLoss<B> for AfdLoss<B> {
    fn forward(&self, batch: &DistillBatch<B>) -> Result<LossTerms<B>, LossError> {
        batch.check_aligned("AFD")?;
        let input = batch.input();
        let t = input.teacher();
        let [fusion_in, _] = self.image_fusion.weight.dims();
        if fusion_in != 2 * t.dim() {
            return Err(LossError::DimMismatch {
                what: "AFD: fusion layer input (2 x the teacher's embedding size)".into(),
                expected: fusion_in,
                got: 2 * t.dim(),
            });
        }
        let rows = input.rows();
        let fused_image = self.fuse(
            &self.image_fusion,
            batch.image_aligned(),
            t.image_normalized(),
        );
        let fused_text = self.fuse(&self.text_fusion, batch.text_aligned(), t.text_normalized());
        let scale = self.scale.multiplier();
        let per_image = scaled_similarity(local(&fused_image, rows), fused_text.clone(), &scale);
        let per_text = scaled_similarity(local(&fused_text, rows), fused_image, &scale);
        let value = (contrastive_cross_entropy(per_image, rows.offset)
            + contrastive_cross_entropy(per_text, rows.offset))
        .div_scalar(2.0);
        Ok(LossTerms::single(Self::NAME, value))
    }
}
