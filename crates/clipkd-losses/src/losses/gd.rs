//! GD: gradient distillation, without CLIP-KD's `N × D × N` tensor.

use burn::config::Config;
use burn::module::Module;
use burn::tensor::activation::softmax;
use burn::tensor::{Tensor, backend::Backend};

use super::common::check_pair;
use crate::error::LossError;
use crate::input::Embeddings;
use crate::loss::{BuiltinLossConfig, DistillLoss};
use crate::ops::{LocalRows, local, mse};
use crate::projector::DistillBatch;
use crate::terms::LossTerms;

/// How GD uses a model's logit scale `τ` (the exponentiated scale, e.g. ≈ 100 for a trained
/// CLIP) in the contrastive logits whose gradients it matches.
#[derive(Config, Debug, Copy, PartialEq, Eq)]
pub enum GdScaleUse {
    /// `z = p kᵀ / τ`, gradients divided by `τ`: CLIP-KD's released `get_grad` (the default, for
    /// reproduction). The gradients are ~`τ²` smaller than CLIP's, hence the paper's weight 1e8.
    Divide,
    /// `z = τ p kᵀ`: the logits CLIP trains with, so the matched gradients are the true
    /// gradients of the CLIP loss (use a weight about `τ⁴` smaller than `Divide`'s).
    Multiply,
}

/// Gradients of the contrastive loss `CE(z, y)` (mean over the `N` rows) with respect to the
/// anchors `p` and the candidates `k`, for this device's rows, computed in closed form:
/// `P = softmax(z)`, `g_p = c (P - Y) k / N` and `g_k = c (P - Y)ᵀ p / N`, with `z = p kᵀ / τ`,
/// `c = 1/τ` ([`GdScaleUse::Divide`]) or `z = τ p kᵀ`, `c = τ` ([`GdScaleUse::Multiply`]).
///
/// `g_k` is one `N × N` by `N × D` matmul: memory `O(N² + N D)`, where CLIP-KD's `get_grad`
/// materializes two `N × D × N` tensors (2 GiB each in f32 at `N = 1024, D = 512`). The softmax
/// always spans the whole (gathered) batch; `g_p` keeps rows `rows` of the anchors and `g_k`
/// rows `rows` of the candidates.
///
/// # Shapes
/// - `p`, `k`: `[N, D]`, `scale`: `[1]` -> (`g_p`: `[n, D]`, `g_k`: `[n, D]`) with `n = rows.len`
pub fn contrastive_gradients<B: Backend>(
    p: &Tensor<B, 2>,
    k: &Tensor<B, 2>,
    scale: &Tensor<B, 1>,
    scale_use: GdScaleUse,
    rows: LocalRows,
) -> (Tensor<B, 2>, Tensor<B, 2>) {
    let n = p.dims()[0];
    let device = p.device();
    let similarity = p.clone().matmul(k.clone().transpose());
    let scale = scale.clone().unsqueeze::<2>();
    let (logits, factor) = match scale_use {
        GdScaleUse::Divide => (
            similarity / scale.clone(),
            scale.recip().div_scalar(n as f64),
        ),
        GdScaleUse::Multiply => (similarity * scale.clone(), scale.div_scalar(n as f64)),
    };
    let residual = softmax(logits, 1) - Tensor::eye(n, &device);
    let grad_p = local(&residual, rows).matmul(k.clone()) * factor.clone();
    let residual_cols = if rows.is_all(n) {
        residual
    } else {
        residual.narrow(1, rows.offset, rows.len)
    };
    let grad_k = residual_cols.transpose().matmul(p.clone()) * factor;
    (grad_p, grad_k)
}

/// Configuration of the [`GdLoss`].
#[derive(Config, Debug)]
pub struct GdLossConfig {
    /// How the logit scale enters the logits (CLIP-KD: divide).
    #[config(default = "GdScaleUse::Divide")]
    pub scale_use: GdScaleUse,
}

impl GdLossConfig {
    /// Creates the loss.
    pub fn init(&self) -> GdLoss {
        GdLoss {
            scale_use: self.scale_use,
        }
    }
}

impl BuiltinLossConfig for GdLossConfig {
    type Loss<B: Backend> = GdLoss;
    const NAME: &'static str = GdLoss::NAME;
    const USES_ALIGNED_FEATURES: bool = true;

    fn defaults(_teacher_dim: usize) -> Self {
        Self::new()
    }

    fn init_loss<B: Backend>(&self, _device: &B::Device) -> Result<GdLoss, LossError> {
        Ok(self.init())
    }
}

/// Gradient distillation (term `"gd"`): the student's contrastive-loss gradients with respect to
/// its features follow the teacher's.
///
/// Teacher gradients from `(t_img, t_txt, s_T)` and `(t_txt, t_img, s_T)`, student gradients from
/// `(ŝ_img, ŝ_txt, s)` and `(ŝ_txt, ŝ_img, s)` ([`contrastive_gradients`]); the loss is the sum
/// of the four MSEs (`g_p` and `g_k` of each direction). Same value as CLIP-KD's, without its
/// `N × D × N` tensor.
#[derive(Module, Clone, Debug)]
pub struct GdLoss {
    /// How the logit scale enters the logits.
    pub scale_use: GdScaleUse,
}

impl GdLoss {
    /// The term's name.
    pub const NAME: &'static str = "gd";

    /// The loss of one batch; the same value as the loss in a [`LossSet`](crate::LossSet).
    /// The student must already be in the teacher's space: when `D_s != D_t`, map it with a
    /// (learnable) [`Projector`](crate::Projector) first, as a loss set does. The teacher is
    /// detached. [`gd_loss`] is the form for a gathered global batch.
    ///
    /// Errors if the batch sizes or the embedding sizes differ.
    ///
    /// # Shapes
    /// - `student`: `[N, D_t]` (aligned), `teacher`: `[N, D_t]`, logit scales `[1]` -> `[1]`
    ///
    /// ```
    /// use burn::tensor::{Distribution, Tensor};
    /// use burn_flex::Flex;
    /// use clipkd_losses::{Embeddings, GdLossConfig, GdScaleUse};
    ///
    /// let device = Default::default();
    /// let randn = |d| Tensor::<Flex, 2>::random([4, d], Distribution::Normal(0.0, 1.0), &device);
    /// let student = Embeddings::from_log_scale(randn(12), randn(12), Tensor::from_floats([2.659], &device))?;
    /// let teacher = Embeddings::from_log_scale(randn(12), randn(12), Tensor::from_floats([4.6], &device))?;
    /// let gd = GdLossConfig::new().with_scale_use(GdScaleUse::Multiply).init();
    /// assert!(gd.forward(&student, &teacher)?.into_scalar() > 0.0);
    /// # Ok::<(), clipkd_losses::LossError>(())
    /// ```
    pub fn forward<B: Backend>(
        &self,
        student: &Embeddings<B>,
        teacher: &Embeddings<B>,
    ) -> Result<Tensor<B, 1>, LossError> {
        gd_loss(
            student,
            teacher,
            self.scale_use,
            LocalRows::all(student.batch_size()),
        )
    }
}

/// GD of this device's `rows` of a (gathered) batch: what [`GdLoss`] computes, in both of its
/// `forward`s. `student_aligned` is the student in the teacher's space
/// ([`Projector::project`](crate::Projector::project)), with the student's logit scale; the
/// teacher is detached.
///
/// Errors if the batch sizes or the embedding sizes differ, or `rows` fall outside the batch.
///
/// # Shapes
/// - `student_aligned`, `teacher`: `[N, D_t]`, logit scales `[1]` -> `[1]`
pub fn gd_loss<B: Backend>(
    student_aligned: &Embeddings<B>,
    teacher: &Embeddings<B>,
    scale_use: GdScaleUse,
    rows: LocalRows,
) -> Result<Tensor<B, 1>, LossError> {
    check_pair("GD", student_aligned, teacher, true, rows)?;
    let (s, t) = (student_aligned, teacher.clone().detach());
    let grads = |p: &Tensor<B, 2>, k: &Tensor<B, 2>, scale: &Tensor<B, 1>| {
        contrastive_gradients(p, k, scale, scale_use, rows)
    };
    let (t_p_img, t_k_txt) = grads(t.image_normalized(), t.text_normalized(), t.logit_scale());
    let (t_p_txt, t_k_img) = grads(t.text_normalized(), t.image_normalized(), t.logit_scale());
    let (s_p_img, s_k_txt) = grads(s.image_normalized(), s.text_normalized(), s.logit_scale());
    let (s_p_txt, s_k_img) = grads(s.text_normalized(), s.image_normalized(), s.logit_scale());
    Ok(mse(s_p_img, t_p_img)
        + mse(s_k_txt, t_k_txt)
        + mse(s_p_txt, t_p_txt)
        + mse(s_k_img, t_k_img))
}

impl<B: Backend> DistillLoss<B> for GdLoss {
    fn forward(&self, batch: &DistillBatch<B>) -> Result<LossTerms<B>, LossError> {
        let input = batch.input();
        let value = gd_loss(
            batch.student_aligned(),
            input.teacher(),
            self.scale_use,
            input.rows(),
        )?;
        Ok(LossTerms::single(Self::NAME, value))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::{Distribution, Int};

    type B = burn::backend::Autodiff<burn_flex::Flex>;

    /// The closed form equals autodiff's gradient of `CE(z, y)` for both scale uses.
    #[test]
    fn closed_form_matches_autodiff_of_the_clip_loss() {
        let device = Default::default();
        let (n, d) = (7, 5);
        let p =
            Tensor::<B, 2>::random([n, d], Distribution::Normal(0.0, 1.0), &device).require_grad();
        let k =
            Tensor::<B, 2>::random([n, d], Distribution::Normal(0.0, 1.0), &device).require_grad();
        let tau = 2.5f32;
        let scale = Tensor::<B, 1>::from_floats([tau], &device);
        for scale_use in [GdScaleUse::Divide, GdScaleUse::Multiply] {
            let sim = p.clone().matmul(k.clone().transpose());
            let logits = match scale_use {
                GdScaleUse::Divide => sim.div_scalar(tau),
                GdScaleUse::Multiply => sim.mul_scalar(tau),
            };
            let targets = Tensor::<B, 1, Int>::arange(0..n as i64, &device).unsqueeze_dim::<2>(1);
            let loss = burn::tensor::activation::log_softmax(logits, 1)
                .gather(1, targets)
                .mean()
                .neg();
            let grads = loss.backward();
            let rows = LocalRows { offset: 0, len: n };
            let (gp, gk) = contrastive_gradients(&p, &k, &scale, scale_use, rows);
            for (what, closed, auto) in [
                ("g_p", gp, p.grad(&grads).unwrap()),
                ("g_k", gk, k.grad(&grads).unwrap()),
            ] {
                let a = closed.inner().to_data().to_vec::<f32>().unwrap();
                let b = auto.to_data().to_vec::<f32>().unwrap();
                let max = b.iter().fold(0f32, |m, x| m.max(x.abs()));
                let err = a
                    .iter()
                    .zip(&b)
                    .fold(0f32, |m, (x, y)| m.max((x - y).abs()));
                assert!(
                    err <= 1e-5 * max,
                    "{scale_use:?} {what}: {err} vs max {max}"
                );
            }
        }
    }
}
