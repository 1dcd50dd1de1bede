//! The run config: one TOML or JSON file describes a whole run, every field with a default
//! equal to CLIP-KD's recipe (see `docs/training.md` for the reference of every field).
//!
//! A config is assembled in layers, each overriding the one before:
//! 1. the defaults (the paper's recipe: [`RunConfig::default`]);
//! 2. a run preset ([`RunConfig::preset`]), named by `--preset` or a top-level `preset` key;
//! 3. the file (`.toml`, or `.json`);
//! 4. overrides from the command line ([`Override`], `--set optim.lr=5e-4` and the shortcuts).
//!
//! Tables merge key by key; arrays and values replace. The result is deserialized strictly: an
//! unknown key or a value of the wrong type is an error that names its dotted path
//! (`optim.lr`, `loss.terms.1.weight`). [`RunConfig::validate`] then checks ranges and
//! combinations, again naming the field, before any file is opened.
//!
//! ```
//! use clipkd_train::config::{Override, RunConfig};
//!
//! let config = RunConfig::load(
//!     None,
//!     Some("vit-b-16-to-vit-t-16-cc3m-12m"),
//!     &[Override::parse("optim.lr=5e-4")?, Override::parse("data.batch_size=256")?],
//! )?;
//! assert_eq!(config.optim.lr, 5e-4);
//! assert_eq!(config.student.model, "ViT-T-16");
//! assert_eq!(config.optim.warmup, 10_000); // the paper's
//! # Ok::<(), clipkd_train::TrainError>(())
//! ```

mod file;
mod loss_terms;
mod overrides;
mod pretrained;
mod sections;
mod validate;
pub(crate) use validate::host_port;
mod values;

pub use clipkd_models::ModelSource;
pub use loss_terms::{LossKind, LossSection, LossTermConfig};
pub use overrides::Override;
pub use pretrained::WeightsFile;
pub use sections::{
    DataConfig, DataKind, MetricsFormat, OptimConfig, Precision, RunSection, StudentConfig,
    TeacherConfig,
};
pub use values::{CsvSeparator, DeviceSpec};

use std::path::Path;

use clipkd_losses::LossPreset;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::TrainError;
use crate::eval::EvalConfig;
use file::{merge, read_config_value};

/// Whether a run distills from a teacher or trains the student alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TrainMode {
    /// `clipkd distill`: a frozen teacher and the configured losses.
    Distill,
    /// `clipkd train`: no teacher, the task loss only (the "no KD" baseline). The `[teacher]`
    /// section is ignored and the loss is replaced by the `baseline` preset, so one config
    /// file serves both runs of a comparison.
    Baseline,
}

/// The whole run. See the [module docs](self) for how it is assembled.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RunConfig {
    /// The run preset this config starts from (informational once loaded).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub preset: Option<String>,
    /// Training data and its loader.
    pub data: DataConfig,
    /// The teacher (used by `clipkd distill` only).
    pub teacher: TeacherConfig,
    /// The student.
    pub student: StudentConfig,
    /// The losses.
    pub loss: LossSection,
    /// AdamW and the learning-rate schedule.
    pub optim: OptimConfig,
    /// Seeds, outputs, checkpoints, logging, precision, device.
    pub run: RunSection,
    /// Evaluation during training (see [`EvalConfig`]); default: every epoch, when a
    /// zero-shot or retrieval set is configured.
    pub eval: EvalConfig,
}

impl Default for RunConfig {
    fn default() -> Self {
        RunConfig {
            preset: None,
            data: DataConfig::default(),
            teacher: TeacherConfig::default(),
            student: StudentConfig::default(),
            loss: LossSection::default(),
            optim: OptimConfig::default(),
            run: RunSection::default(),
            eval: EvalConfig {
                every_epochs: Some(1),
                ..EvalConfig::default()
            },
        }
    }
}

/// The run presets: the paper's runs, naming teacher and student (data and weights paths are
/// the user's).
const PRESETS: &[(&str, &str, &str, &str)] = &[
    (
        "vit-b-16-to-vit-t-16-cc3m-12m",
        "ViT-B-16",
        "ViT-T-16",
        "ViT-B/16 teacher trained on CC3M+CC12M -> ViT-T/16 on CC3M+CC12M (paper: 30.55 -> 34.90)",
    ),
    (
        "vit-b-16-to-rn50-cc3m-12m",
        "ViT-B-16",
        "RN50",
        "ViT-B/16 teacher trained on CC3M+CC12M -> ResNet-50 (ModifiedResNet) on CC3M+CC12M",
    ),
    (
        "vit-l-14-laion-to-vit-b-16",
        "ViT-L-14",
        "ViT-B-16",
        "open_clip ViT-L-14 laion400m_e32 teacher -> ViT-B/16 on CC3M+CC12M (paper: 37.0 -> 57.5)",
    ),
    (
        "vit-l-14-laion-to-vit-t-16",
        "ViT-L-14",
        "ViT-T-16",
        "open_clip ViT-L-14 laion400m_e32 teacher -> ViT-T/16 (paper: 30.6 -> 40.9)",
    ),
    (
        "vit-b-16-laion-to-vit-t-16",
        "ViT-B-16",
        "ViT-T-16",
        "open_clip ViT-B-16 laion400m_e32 teacher -> ViT-T/16 (paper: 30.6 -> 42.6)",
    ),
    (
        "vit-b-16-laion-to-rn50",
        "ViT-B-16",
        "RN50",
        "open_clip ViT-B-16 laion400m_e32 teacher -> RN50 (paper: 35.3 -> 55.4)",
    ),
];

impl RunConfig {
    /// Names of the run presets.
    pub fn preset_names() -> Vec<&'static str> {
        PRESETS.iter().map(|p| p.0).collect()
    }

    /// The presets with a one-line description each.
    pub fn preset_descriptions() -> Vec<(&'static str, &'static str)> {
        PRESETS.iter().map(|p| (p.0, p.3)).collect()
    }

    /// A run preset: the paper's recipe (every default) with its teacher and student models
    /// and the `clip_kd` losses. Data and teacher weights are left for the user.
    pub fn preset(name: &str) -> Result<Self, TrainError> {
        let (_, teacher, student, _) = PRESETS.iter().find(|p| p.0 == name).ok_or_else(|| {
            TrainError::config(
                "preset",
                format!(
                    "unknown run preset `{name}`; known: {}",
                    Self::preset_names().join(", ")
                ),
            )
        })?;
        let mut config = RunConfig {
            preset: Some(name.to_string()),
            ..Default::default()
        };
        config.teacher.model = ModelSource::named(teacher);
        config.student.model = ModelSource::named(student);
        config.loss.preset = Some(LossPreset::ClipKd);
        Ok(config)
    }

    /// Assembles a config from the defaults, a preset (`preset`, or the file's top-level
    /// `preset` key), the file (`.json` is JSON, anything else TOML) and the overrides, in
    /// that order, then checks it with [`RunConfig::validate`]-independent strict parsing:
    /// unknown keys and wrong types are errors naming the field.
    pub fn load(
        file: Option<&Path>,
        preset: Option<&str>,
        overrides: &[Override],
    ) -> Result<Self, TrainError> {
        let file_value = match file {
            Some(path) => Some(read_config_value(path)?),
            None => None,
        };
        let preset = preset.map(str::to_string).or_else(|| {
            file_value
                .as_ref()
                .and_then(|v| v.get("preset"))
                .and_then(Value::as_str)
                .map(str::to_string)
        });
        let base = match &preset {
            Some(name) => Self::preset(name)?,
            None => Self::default(),
        };
        let mut value = serde_json::to_value(&base).map_err(|e| {
            TrainError::config("", format!("cannot represent the base config: {e}"))
        })?;
        if let Some(file_value) = file_value {
            if !file_value.is_object() {
                return Err(TrainError::ConfigParse {
                    path: file.map(Path::to_path_buf).unwrap_or_default(),
                    location: None,
                    message: "the top level must be a table of sections".into(),
                });
            }
            merge(&mut value, file_value);
        }
        for o in overrides {
            o.apply(&mut value)?;
        }
        if let Some(name) = &preset {
            value["preset"] = Value::String(name.clone());
        }
        Self::from_value(value)
    }

    /// Parses an assembled config tree strictly (errors name the field).
    pub fn from_value(value: Value) -> Result<Self, TrainError> {
        serde_path_to_error::deserialize::<_, RunConfig>(value).map_err(|e| {
            let path = e.path().to_string();
            let message = e.inner().to_string();
            let field = if path == "." { String::new() } else { path };
            TrainError::config(field, message)
        })
    }

    /// Reads a config file alone (defaults, its preset if it names one, the file).
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self, TrainError> {
        Self::load(Some(path.as_ref()), None, &[])
    }

    /// The config as TOML (what a run writes to `config.toml`).
    pub fn to_toml(&self) -> String {
        toml::to_string(self).expect("a run config always serializes to TOML")
    }

    /// Writes the config as TOML to `path`.
    pub fn save(&self, path: impl AsRef<Path>) -> Result<(), TrainError> {
        let path = path.as_ref();
        std::fs::write(path, self.to_toml()).map_err(|e| TrainError::io("writing", path, e))
    }

    /// A stable 64-bit hash (FNV-1a) of everything that determines the training trajectory
    /// (data, models, losses, optimizer, seed, precision), not of logging or output settings.
    /// Stored in checkpoints to warn when a run is resumed with another config.
    pub fn trajectory_hash(&self) -> String {
        // Settings that do not change the steps taken are left out.
        let mut data = serde_json::to_value(&self.data).expect("a config serializes");
        if let Some(d) = data.as_object_mut() {
            d.remove("max_skipped_fraction");
        }
        let key = serde_json::json!({
            "data": data,
            "teacher": self.teacher,
            "student": self.student,
            "loss": self.loss,
            "optim": self.optim,
            "seed": self.run.seed,
            "precision": self.run.precision,
        });
        format!("{:016x}", fnv1a(key.to_string().as_bytes()))
    }
}

/// The 64-bit FNV-1a hash of `bytes` (stable across builds and platforms).
pub(crate) fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

#[cfg(test)]
mod tests;
