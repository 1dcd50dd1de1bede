//! Logits shared by several losses.

use burn::tensor::{Tensor, backend::Backend};

use crate::input::DistillInput;
use crate::ops::{local, scaled_similarity};

/// The student's own CLIP logits, this device's rows: `s ū_img ū_txtᵀ` and `s ū_txt ū_imgᵀ`.
pub(crate) fn student_logits<B: Backend>(input: &DistillInput<B>) -> (Tensor<B, 2>, Tensor<B, 2>) {
    let s = input.student();
    let rows = input.rows();
    let per_image = scaled_similarity(
        local(s.image_normalized(), rows),
        s.text_normalized().clone(),
        s.logit_scale(),
    );
    let per_text = scaled_similarity(
        local(s.text_normalized(), rows),
        s.image_normalized().clone(),
        s.logit_scale(),
    );
    (per_image, per_text)
}

/// The teacher's CLIP logits, this device's rows: `s_T t_img t_txtᵀ` and `s_T t_txt t_imgᵀ`.
pub(crate) fn teacher_logits<B: Backend>(input: &DistillInput<B>) -> (Tensor<B, 2>, Tensor<B, 2>) {
    let t = input.teacher();
    let rows = input.rows();
    let per_image = scaled_similarity(
        local(t.image_normalized(), rows),
        t.text_normalized().clone(),
        t.logit_scale(),
    );
    let per_text = scaled_similarity(
        local(t.text_normalized(), rows),
        t.image_normalized().clone(),
        t.logit_scale(),
    );
    (per_image, per_text)
}

/// Cross-model logits with the student's aligned features as anchors and the teacher's as
/// candidates, this device's rows: `c ŝ_img t_txtᵀ` and `c ŝ_txt t_imgᵀ`.
pub(crate) fn cross_logits<B: Backend>(
    input: &DistillInput<B>,
    image_aligned: &Tensor<B, 2>,
    text_aligned: &Tensor<B, 2>,
    scale: &Tensor<B, 1>,
) -> (Tensor<B, 2>, Tensor<B, 2>) {
    let t = input.teacher();
    let rows = input.rows();
    let per_image = scaled_similarity(
        local(image_aligned, rows),
        t.text_normalized().clone(),
        scale,
    );
    let per_text = scaled_similarity(
        local(text_aligned, rows),
        t.image_normalized().clone(),
        scale,
    );
    (per_image, per_text)
}

/// Checks a temperature is a positive finite number.
pub(crate) fn check_temperature(what: &str, t: f64) -> Result<(), crate::LossError> {
    if !(t.is_finite() && t > 0.0) {
        return Err(crate::LossError::InvalidConfig {
            what: format!("{what} temperature"),
            reason: format!("{t} is not a positive finite number"),
        });
    }
    Ok(())
}
