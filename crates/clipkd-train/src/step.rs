//! One distillation step: teacher forward (no autodiff), student forward, losses, backward,
//! AdamW with CLIP-KD's parameter groups, `logit_scale` clamp.

use burn::module::Module;
use burn::optim::GradientsParams;
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{Int, Tensor};
use clipkd_losses::{DistillInput, Embeddings, LossSet, LossTerms};
use clipkd_models::Clip;

use crate::error::TrainError;
use crate::optim::{AdamWParams, GroupKind, GroupedAdamW, excluded_from_weight_decay};

/// Upper bound of the student's log logit scale after each step: ln 100 (CLIP, CLIP-KD).
pub const MAX_LOG_LOGIT_SCALE: f64 = 4.605_170_185_988_092;

/// What the optimizer trains: the student and the loss module's own parameters (projectors,
/// ICL/AFD scales), together so that one optimizer and one checkpoint cover both.
///
/// Parameter paths are `student.<open_clip key>` and `losses.<...>`.
#[derive(Module, Debug)]
pub struct DistillModel<B: Backend> {
    /// The student CLIP model.
    pub student: Clip<B>,
    /// The weighted loss set (with its projector and learnable scales).
    pub losses: LossSet<B>,
}

/// CLIP-KD's parameter groups for a [`DistillModel`]: loss parameters in their own group,
/// student parameters split by [`excluded_from_weight_decay`].
pub fn distill_param_group(path: &str, rank: usize) -> GroupKind {
    match path.strip_prefix("student.") {
        Some(student_path) if excluded_from_weight_decay(student_path, rank) => GroupKind::NoDecay,
        Some(_) => GroupKind::Decay,
        None => GroupKind::Loss,
    }
}

/// The AdamW of a [`DistillModel`] with CLIP-KD's groups.
pub fn distill_optimizer<B: AutodiffBackend>(
    model: &DistillModel<B>,
    params: AdamWParams,
) -> GroupedAdamW<B, DistillModel<B>> {
    GroupedAdamW::new(model, params, distill_param_group)
}

/// Runs the teacher (if any) and the student on the same pixels and tokens and returns the
/// weighted loss terms (with the autodiff graph of the student and the loss module).
///
/// The teacher runs on the inner backend, so it builds no autodiff graph. With no teacher, the
/// loss set must only hold losses that do not read the teacher (the task loss): the student's
/// own detached embeddings fill the teacher slot. `mask_ratio` adds the student's masked view
/// (MFD) when the loss set needs it.
///
/// # Shapes
/// - `images`: `[N, 3, H, W]` normalized pixels; `tokens`: `[N, C]`
pub fn distill_terms<B: AutodiffBackend>(
    teacher: Option<&Clip<B::InnerBackend>>,
    model: &DistillModel<B>,
    images: Tensor<B::InnerBackend, 4>,
    tokens: Tensor<B::InnerBackend, 2, Int>,
    mask_ratio: Option<f64>,
) -> Result<LossTerms<B>, TrainError> {
    let teacher = teacher.map(|t| {
        (
            Tensor::<B, 2>::from_inner(t.encode_image(images.clone())),
            Tensor::<B, 2>::from_inner(t.encode_text(tokens.clone())),
            Tensor::<B, 1>::from_inner(t.logit_scale()),
        )
    });
    let images = Tensor::<B, 4>::from_inner(images);
    let masked = match mask_ratio {
        Some(ratio) if model.losses.requires_masked_view() => Some(
            model
                .student
                .encode_image_masked(images.clone(), ratio)?,
        ),
        _ => None,
    };
    let out = model.student.forward(images, Tensor::from_inner(tokens));
    let student = Embeddings::from_log_scale(out.image_embeds, out.text_embeds, out.logit_scale)?;
    let teacher = match teacher {
        Some((image, text, log_scale)) => Embeddings::from_log_scale(image, text, log_scale)?,
        None => student.clone(),
    };
    let mut input = DistillInput::new(student, teacher)?;
    if let Some(masked) = masked {
        input = input.with_masked_student_image(masked)?;
    }
    Ok(model.losses.forward(&input)?)
}

/// Clamps the student's log logit scale to `[0, ln 100]` (after each optimizer step).
pub fn clamp_logit_scale<B: Backend>(mut model: DistillModel<B>) -> DistillModel<B> {
    model.student.logit_scale = model
        .student
        .logit_scale
        .map(|t| t.clamp(0.0, MAX_LOG_LOGIT_SCALE).detach().require_grad());
    model
}

/// One full optimizer step: forward, backward, AdamW (all groups) at `lr`, clamp.
/// Returns the updated model and the terms (detached values, for logging).
pub fn train_step<B: AutodiffBackend>(
    teacher: Option<&Clip<B::InnerBackend>>,
    model: DistillModel<B>,
    optimizer: &mut GroupedAdamW<B, DistillModel<B>>,
    images: Tensor<B::InnerBackend, 4>,
    tokens: Tensor<B::InnerBackend, 2, Int>,
    lr: f64,
    mask_ratio: Option<f64>,
) -> Result<(DistillModel<B>, LossTerms<B::InnerBackend>), TrainError> {
    let terms = distill_terms(teacher, &model, images, tokens, mask_ratio)?;
    let grads = terms.total().backward();
    let grads = GradientsParams::from_grads(grads, &model);
    let logged = terms.valid();
    let model = optimizer.step(lr, model, grads);
    Ok((clamp_logit_scale(model), logged))
}

/// Detached copies of loss terms on the inner backend.
trait ValidTerms<B: AutodiffBackend> {
    fn valid(&self) -> LossTerms<B::InnerBackend>;
}

impl<B: AutodiffBackend> ValidTerms<B> for LossTerms<B> {
    fn valid(&self) -> LossTerms<B::InnerBackend> {
        let mut out = LossTerms::new();
        for term in self.iter() {
            out.push(term.name.clone(), term.weight, term.value.clone().inner());
        }
        out
    }
}
