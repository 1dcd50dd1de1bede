//! What [`PreparedRun`](super::PreparedRun) checks before any work: the teacher fits the
//! student, the models fit the tokenizer, the files it will read exist.

use std::path::Path;

use clipkd_models::EncoderShape;

use crate::config::RunConfig;
use crate::error::TrainError;

/// The teacher reads the student's exact pixels and tokens.
pub(super) fn check_teacher_fits(
    teacher: &EncoderShape,
    student: &EncoderShape,
    teacher_name: &str,
    student_name: &str,
) -> Result<(), TrainError> {
    if teacher.image_size != student.image_size {
        return Err(TrainError::config(
            "teacher.model",
            format!(
                "{teacher_name} takes {:?} images but {student_name} {:?}: the teacher sees the \
                 student's exact pixels, so both need the same image size (use a teacher \
                 config with the student's image_size)",
                teacher.image_size, student.image_size
            ),
        ));
    }
    if teacher.context_length < student.context_length {
        return Err(TrainError::config(
            "teacher.model",
            format!(
                "the teacher's context length {} is shorter than the student's {}: the teacher \
                 reads the student's exact tokens",
                teacher.context_length, student.context_length
            ),
        ));
    }
    Ok(())
}

pub(super) fn check_file(path: &Path, field: &str) -> Result<(), TrainError> {
    if path.is_file() {
        Ok(())
    } else {
        Err(TrainError::config(
            field,
            format!("file not found: {}", path.display()),
        ))
    }
}

/// The model's vocabulary holds every id the tokenizer gives (`model_vocab` from its text
/// config or its [`EncoderShape`]); the error names `field`.
pub(super) fn check_vocab(
    model_vocab: usize,
    tokenizer_vocab: usize,
    field: &str,
) -> Result<(), TrainError> {
    if model_vocab < tokenizer_vocab {
        Err(TrainError::config(
            field,
            TrainError::TokenizerMismatch {
                model_vocab,
                tokenizer_vocab,
            }
            .to_string(),
        ))
    } else {
        Ok(())
    }
}

/// The error of a config that asks for plots (`run.plots`) in a build without clipkd-train's
/// `plots` feature, which has nothing to draw them with; `None` when the plots can be drawn
/// (or are not asked for).
pub(super) fn plots_unavailable(config: &RunConfig) -> Option<TrainError> {
    (config.run.plots && !cfg!(feature = "plots")).then(|| {
        TrainError::config(
            "run.plots",
            "drawing plots needs clipkd-train's `plots` feature, which this build does not \
             have: enable it (`clipkd-train = { features = [\"plots\"] }`) or set \
             `plots = false` in the config's [run] section",
        )
    })
}
