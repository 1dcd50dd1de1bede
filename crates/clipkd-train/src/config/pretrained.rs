//! The weights `[teacher]` and `[student]` name: a file (`weights`, `init`), an open_clip
//! pretrained tag (`pretrained`), or an `hf-hub:` model's own, resolved with
//! [`PretrainedModel`]: found in the Hugging Face cache or downloaded into it. The config keeps
//! the names (a resumed run compares names, not the cache's paths); the files are resolved when
//! a run is prepared.

use std::path::PathBuf;

use clipkd_data::image::TransformConfig;
use clipkd_models::{ClipConfig, ModelError, PretrainedModel};

use super::{RunConfig, StudentConfig, TeacherConfig};
use crate::error::TrainError;

/// A weights file, and the config field that named it (for errors).
#[derive(Debug, Clone, PartialEq)]
pub struct WeightsFile {
    /// The file.
    pub path: PathBuf,
    /// The field it came from (`teacher.weights`, `teacher.pretrained`, `student.model`...).
    pub field: &'static str,
}

/// The field an error about `section`'s model belongs to.
fn model_error(section: &str, e: ModelError) -> TrainError {
    let field = match e {
        ModelError::UnknownPretrained { .. } | ModelError::TagNotApplicable { .. } => "pretrained",
        _ => "model",
    };
    TrainError::field(format!("{section}.{field}"), e)
}

/// `file` if given, else what `model` names; `None` when neither names weights.
fn weights_of(
    section: &'static str,
    file: Option<&PathBuf>,
    file_field: &'static str,
    model: &PretrainedModel,
    tag_given: bool,
) -> Result<Option<WeightsFile>, TrainError> {
    if let Some(path) = file {
        return Ok(Some(WeightsFile {
            path: path.clone(),
            field: file_field,
        }));
    }
    let field = match (section, tag_given) {
        ("teacher", true) => "teacher.pretrained",
        ("teacher", false) => "teacher.model",
        (_, true) => "student.pretrained",
        (_, false) => "student.model",
    };
    // The tag is checked first, so that its errors keep their own field.
    model.tag().map_err(|e| model_error(section, e))?;
    Ok(model
        .weights()
        .map_err(|e| TrainError::field(field, e))?
        .map(|path| WeightsFile { path, field }))
}

impl TeacherConfig {
    /// `model` with the `pretrained` tag, as open_clip's `create_model` takes them.
    pub fn pretrained_model(&self) -> PretrainedModel {
        PretrainedModel::new(self.model.clone(), self.pretrained.clone())
    }

    /// The teacher's architecture, with the activation its pretrained weights expect.
    ///
    /// # Errors
    /// Naming `teacher.model` or `teacher.pretrained`.
    pub fn architecture(&self) -> Result<ClipConfig, TrainError> {
        self.pretrained_model()
            .config()
            .map_err(|e| model_error("teacher", e))
    }

    /// The teacher's weights: `weights`, or the `pretrained` tag's or the `hf-hub:` model's
    /// file (from the Hugging Face cache, downloaded if missing); `None` when none is named.
    ///
    /// # Errors
    /// Naming the field, when the file cannot be had (offline and not cached, network failure,
    /// cut download, checksum mismatch).
    pub fn weights_file(&self) -> Result<Option<WeightsFile>, TrainError> {
        weights_of(
            "teacher",
            self.weights.as_ref(),
            "teacher.weights",
            &self.pretrained_model(),
            self.pretrained.is_some(),
        )
    }
}

impl StudentConfig {
    /// `model` with the `pretrained` tag, as open_clip's `create_model` takes them.
    pub fn pretrained_model(&self) -> PretrainedModel {
        PretrainedModel::new(self.model.clone(), self.pretrained.clone())
    }

    /// The student's architecture, with the activation its pretrained weights expect.
    ///
    /// # Errors
    /// Naming `student.model` or `student.pretrained`.
    pub fn architecture(&self) -> Result<ClipConfig, TrainError> {
        self.pretrained_model()
            .config()
            .map_err(|e| model_error("student", e))
    }

    /// The student's starting weights: `init`, or the `pretrained` tag's or the `hf-hub:`
    /// model's file (downloaded if missing); `None`: a random initialisation.
    ///
    /// # Errors
    /// As [`TeacherConfig::weights_file`].
    pub fn init_file(&self) -> Result<Option<WeightsFile>, TrainError> {
        weights_of(
            "student",
            self.init.as_ref(),
            "student.init",
            &self.pretrained_model(),
            self.pretrained.is_some(),
        )
    }
}

impl RunConfig {
    /// The `pretrained` fields, checked without the network: not beside a file of weights,
    /// and a tag the model has.
    pub(super) fn check_pretrained(&self) -> Result<(), TrainError> {
        let pairs = [
            (
                "teacher",
                self.teacher.weights.is_some(),
                "weights",
                self.teacher.pretrained_model(),
            ),
            (
                "student",
                self.student.init.is_some(),
                "init",
                self.student.pretrained_model(),
            ),
        ];
        for (section, file_given, file_field, model) in pairs {
            let tag = model.tag().map_err(|e| model_error(section, e))?;
            if tag.is_some() && file_given {
                return Err(TrainError::config(
                    format!("{section}.pretrained"),
                    format!(
                        "give either {section}.{file_field} (a file) or a pretrained tag, not both"
                    ),
                ));
            }
        }
        Ok(())
    }
}

/// The mean and std of an open_clip `preprocess_cfg`, where it gives both (read as the image
/// transform reads them).
fn mean_std(cfg: &serde_json::Value) -> Option<([f64; 3], [f64; 3])> {
    let given = |key| cfg.get(key).filter(|v| !v.is_null());
    let both = serde_json::json!({"mean": given("mean")?, "std": given("std")?});
    let t = TransformConfig::default()
        .merge_preprocess_cfg(&both)
        .ok()?;
    Some((t.mean, t.std))
}

impl TeacherConfig {
    /// A warning when the teacher's weights were trained with another normalization than
    /// `data.mean`/`data.std` (student and teacher see the same pixels, as in CLIP-KD, so the
    /// frozen teacher would see inputs it was not trained on).
    ///
    /// # Errors
    /// As [`TeacherConfig::architecture`].
    pub fn normalization_warning(&self, config: &RunConfig) -> Result<Option<String>, TrainError> {
        let Some(cfg) = self
            .pretrained_model()
            .preprocess_cfg()
            .map_err(|e| model_error("teacher", e))?
        else {
            return Ok(None);
        };
        let Some((mean, std)) = mean_std(&cfg) else {
            return Ok(None);
        };
        let d = &config.data;
        let close = |a: [f64; 3], b: [f64; 3]| a.iter().zip(b).all(|(x, y)| (x - y).abs() < 1e-6);
        Ok((!close(mean, d.mean) || !close(std, d.std)).then(|| {
            format!(
                "the teacher `{}` was trained with mean {mean:?} and std {std:?}, but data.mean \
                 and data.std are {:?} and {:?}: the frozen teacher sees inputs normalized \
                 otherwise than in its training; set data.mean and data.std to its values",
                describe(self),
                d.mean,
                d.std
            )
        }))
    }
}

fn describe(teacher: &TeacherConfig) -> String {
    match &teacher.pretrained {
        Some(tag) => format!("{} ({tag})", teacher.model),
        None => teacher.model.to_string(),
    }
}
