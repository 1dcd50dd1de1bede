//! Logits and checks shared by several losses.

use burn::tensor::{Tensor, backend::Backend};

use crate::error::LossError;
use crate::input::Embeddings;
use crate::ops::{LocalRows, local, scaled_similarity};

/// One model's CLIP logits, this device's rows: `s ū_img ū_txtᵀ` and `s ū_txt ū_imgᵀ`.
pub(crate) fn clip_logits<B: Backend>(
    e: &Embeddings<B>,
    rows: LocalRows,
) -> (Tensor<B, 2>, Tensor<B, 2>) {
    let per_image = scaled_similarity(
        local(e.image_normalized(), rows),
        e.text_normalized().clone(),
        e.logit_scale(),
    );
    let per_text = scaled_similarity(
        local(e.text_normalized(), rows),
        e.image_normalized().clone(),
        e.logit_scale(),
    );
    (per_image, per_text)
}

/// Cross-model logits with the student's aligned features as anchors and the teacher's as
/// candidates, this device's rows: `c ŝ_img t_txtᵀ` and `c ŝ_txt t_imgᵀ`.
pub(crate) fn cross_logits<B: Backend>(
    student_aligned: &Embeddings<B>,
    teacher: &Embeddings<B>,
    scale: &Tensor<B, 1>,
    rows: LocalRows,
) -> (Tensor<B, 2>, Tensor<B, 2>) {
    let per_image = scaled_similarity(
        local(student_aligned.image_normalized(), rows),
        teacher.text_normalized().clone(),
        scale,
    );
    let per_text = scaled_similarity(
        local(student_aligned.text_normalized(), rows),
        teacher.image_normalized().clone(),
        scale,
    );
    (per_image, per_text)
}

/// Checks the arguments of a tensor-level loss: `rows` inside the batch, the teacher's batch
/// the student's, and, when the loss reads aligned features (`aligned`), the student already in
/// the teacher's space. `loss` names the loss in the errors.
pub(crate) fn check_pair<B: Backend>(
    loss: &str,
    student: &Embeddings<B>,
    teacher: &Embeddings<B>,
    aligned: bool,
    rows: LocalRows,
) -> Result<(), LossError> {
    let n = student.batch_size();
    check_rows(rows, n)?;
    if teacher.batch_size() != n {
        return Err(LossError::BatchMismatch {
            what: format!("{loss}: teacher embeddings"),
            expected: n,
            got: teacher.batch_size(),
        });
    }
    if aligned && student.dim() != teacher.dim() {
        return Err(LossError::DimMismatch {
            what: format!(
                "{loss}: student features aligned to the teacher's space (the student and \
                 teacher sizes differ: map the student with a projector first, \
                 `Projector::project`, or use a loss set, which owns one)"
            ),
            expected: teacher.dim(),
            got: student.dim(),
        });
    }
    Ok(())
}

/// Checks that `rows` lie inside a batch of `n` samples (and are not empty).
pub(crate) fn check_rows(rows: LocalRows, n: usize) -> Result<(), LossError> {
    if rows.len == 0 || rows.offset + rows.len > n {
        return Err(LossError::LocalRowsOutOfRange {
            offset: rows.offset,
            len: rows.len,
            batch: n,
        });
    }
    Ok(())
}

/// Checks a temperature is a positive finite number.
pub(crate) fn check_temperature(what: &str, t: f64) -> Result<(), LossError> {
    if !(t.is_finite() && t > 0.0) {
        return Err(LossError::InvalidConfig {
            what: format!("{what} temperature"),
            reason: format!("{t} is not a positive finite number"),
        });
    }
    Ok(())
}

/// Checks a logit-scale multiplier has shape `[1]`.
pub(crate) fn check_scale<B: Backend>(loss: &str, scale: &Tensor<B, 1>) -> Result<(), LossError> {
    if scale.dims() != [1] {
        return Err(LossError::ShapeMismatch {
            what: format!("{loss}: logit scale"),
            expected: vec![1],
            got: scale.dims().to_vec(),
        });
    }
    Ok(())
}
