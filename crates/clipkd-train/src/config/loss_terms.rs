//! `[loss]`: a preset or explicit `[[loss.terms]]`, each term's options merged strictly onto the
//! defaults of its loss.

use clipkd_losses::{LossConfig, LossPreset, LossSetConfig, WeightedLossConfig};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::TrainMode;
use crate::error::TrainError;

/// The kind of one explicit loss term (`[[loss.terms]]`, `kind = "fd"`): the losses crate's
/// list of built-in losses, so a loss added there is a kind here too. Its `default_config`
/// gives the options an explicit term's are merged onto.
pub use clipkd_losses::LossKind;

/// One explicit loss term: `kind`, `weight`, an optional `name`, and any option of that loss
/// (the fields of its `clipkd_losses` config, e.g. `distance = "Cosine"` for FD or
/// `scale = { mode = "Exp" }` for ICL); options not given keep their defaults.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LossTermConfig {
    /// The loss.
    pub kind: LossKind,
    /// Its weight in the total.
    pub weight: f64,
    /// The term's name in logs (default: the loss's name, e.g. `fd`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Options of the loss, merged onto its defaults.
    #[serde(flatten)]
    pub options: Map<String, Value>,
}

/// `[loss]`: a preset or explicit terms, and the settings the trainer owns.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LossSection {
    /// A preset of `clipkd_losses` (`clip_kd`, `baseline`, `crd`, `fd`, `mfd`, `gd`, `icl`,
    /// `afd`, `open_clip_distill`). Default: `clip_kd` (CRD + ICL + FD), unless `terms` is set.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub preset: Option<LossPreset>,
    /// Explicit terms instead of a preset.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub terms: Vec<LossTermConfig>,
    /// MFD's mask ratio (fraction of patches hidden from the student), paper: 0.75.
    pub mask_ratio: f64,
    /// Whether the student-to-teacher projectors have a bias (CLIP-KD's do).
    pub projector_bias: bool,
}

impl Default for LossSection {
    fn default() -> Self {
        LossSection {
            preset: None,
            terms: Vec::new(),
            mask_ratio: 0.75,
            projector_bias: true,
        }
    }
}

impl LossSection {
    /// The loss set for these embedding sizes (`teacher_dim = student_dim` without a teacher).
    /// Errors name the field (`loss.terms.2.distance`, ...).
    pub fn loss_set_config(
        &self,
        mode: TrainMode,
        student_dim: usize,
        teacher_dim: usize,
    ) -> Result<LossSetConfig, TrainError> {
        if mode == TrainMode::Baseline {
            return Ok(
                LossSetConfig::preset(LossPreset::Baseline, student_dim, student_dim)
                    .with_projector_bias(self.projector_bias),
            );
        }
        if self.preset.is_some() && !self.terms.is_empty() {
            return Err(TrainError::config(
                "loss.preset",
                "give either a preset or explicit `loss.terms`, not both",
            ));
        }
        if self.terms.is_empty() {
            let preset = self.preset.unwrap_or(LossPreset::ClipKd);
            return Ok(LossSetConfig::preset(preset, student_dim, teacher_dim)
                .with_projector_bias(self.projector_bias));
        }
        let mut set =
            LossSetConfig::new(student_dim, teacher_dim).with_projector_bias(self.projector_bias);
        for (i, term) in self.terms.iter().enumerate() {
            let field = format!("loss.terms.{i}");
            let loss = term_config(term, teacher_dim, &field)?;
            set.losses
                .push(WeightedLossConfig::new(loss, term.weight).with_name(term.name.clone()));
        }
        Ok(set)
    }
}

/// The loss config of an explicit term: its defaults with the term's options merged in.
fn term_config(
    term: &LossTermConfig,
    teacher_dim: usize,
    field: &str,
) -> Result<LossConfig, TrainError> {
    let default = term.kind.default_config(teacher_dim);
    let mut value = serde_json::to_value(&default).map_err(|e| {
        TrainError::config(field, format!("cannot represent the default options: {e}"))
    })?;
    // Externally tagged: {"Fd": {...}} (unit-like configs are {"Task": {}}).
    let inner = value
        .as_object_mut()
        .and_then(|o| o.values_mut().next())
        .ok_or_else(|| TrainError::config(field, "unexpected default loss config shape"))?;
    for (key, v) in &term.options {
        merge_strict(inner, key, v.clone(), field)?;
    }
    serde_path_to_error::deserialize::<_, LossConfig>(value).map_err(|e| {
        let path = e.path().to_string();
        // The path starts with the variant (`Fd.distance`): drop it.
        let sub = path.split_once('.').map(|(_, rest)| rest).unwrap_or("");
        TrainError::config(
            if sub.is_empty() {
                field.to_string()
            } else {
                format!("{field}.{sub}")
            },
            e.inner().to_string(),
        )
    })
}

/// Sets `key` of the object `base` to `value`, recursing into objects; unknown keys are errors.
fn merge_strict(base: &mut Value, key: &str, value: Value, field: &str) -> Result<(), TrainError> {
    let obj = base
        .as_object_mut()
        .ok_or_else(|| TrainError::config(field, "this loss takes no options"))?;
    let here = format!("{field}.{key}");
    let Some(slot) = obj.get_mut(key) else {
        let known: Vec<&str> = obj.keys().map(String::as_str).collect();
        return Err(TrainError::config(
            here,
            if known.is_empty() {
                "unknown option: this loss has none".to_string()
            } else {
                format!("unknown option (this loss has: {})", known.join(", "))
            },
        ));
    };
    match (slot.is_object(), value) {
        (true, Value::Object(map)) => {
            for (k, v) in map {
                merge_strict(slot, &k, v, &here)?;
            }
        }
        (_, value) => *slot = value,
    }
    Ok(())
}
