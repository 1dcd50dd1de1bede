//! [`DemoConfig`]: what the demo does (data, models, training lengths), its checks, and the
//! models and loss terms it derives.

use std::path::PathBuf;

use clipkd_data::dataset::shapes::ShapesConfig;
use clipkd_models::ClipConfig;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::config::{DeviceSpec, LossKind, LossTermConfig, Override, Precision};
use crate::error::TrainError;

use super::*;

/// What the demo does: data, models, training lengths. [`DemoConfig::default`] is the standard
/// demo (about 4 minutes on 2 CPU cores); [`DemoConfig::quick`] a run of seconds for tests.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DemoConfig {
    /// The output folder (dataset, runs, results, plots).
    pub output: PathBuf,
    /// The seed of model initialisation, data order and augmentation (the rendered data has
    /// its own, `data.seed`; [`DemoConfig::with_seed`] sets both).
    pub seed: u64,
    /// The rendered dataset.
    pub data: ShapesConfig,
    /// Token positions of both text towers (captions are at most 15 tokens with SOT and EOT;
    /// longer ones would be truncated keeping EOT).
    pub context_length: usize,
    /// The teacher's sizes.
    pub teacher: DemoModel,
    /// The student's sizes.
    pub student: DemoModel,
    /// Images per optimizer step (all three runs).
    pub batch_size: usize,
    /// The teacher's epochs over the training images.
    pub teacher_epochs: u64,
    /// Each student's epochs.
    pub student_epochs: u64,
    /// The teacher's peak learning rate.
    pub teacher_lr: f64,
    /// The students' peak learning rate.
    pub student_lr: f64,
    /// Linear warmup as a fraction of each run's steps (then cosine decay to 0).
    pub warmup_fraction: f64,
    /// Weight of CRD in the CLIP-KD student's loss (paper: 1).
    pub crd_weight: f64,
    /// Weight of ICL (paper: 1).
    pub icl_weight: f64,
    /// Weight of FD. Default (`None`): the paper's 2000 scaled by `teacher.embed_dim / 512`.
    /// FD is a mean over the embedding's elements, so at the paper's width (512) 2000 weighs
    /// each sample's squared feature distance by 2000 / 512 ≈ 3.9; the scaled weight keeps
    /// that at other widths (375 for the demo teacher's 96), where 2000 would let FD drown
    /// the other terms.
    pub fd_weight: Option<f64>,
    /// Evaluations during each run (spread over its epochs; the final one always runs).
    pub evals_per_run: u64,
    /// Data loader threads (0: every core).
    pub workers: usize,
    /// The device name recorded in the run configs (`run.device`); the device itself is the
    /// one [`run_demo`] is given.
    pub device: DeviceSpec,
    /// The runs' precision (`run.precision`: mixed bf16/f16 compute, f16 loss scaling); the
    /// backend that runs it is the one [`run_demo`] is given.
    pub precision: Precision,
    /// Distill the CLIP-KD student from a teacher cache of this many crops per sample
    /// (`clipkd teacher-cache`, built after the teacher is trained) instead of running the
    /// teacher at every step; `None`: from the teacher.
    pub teacher_cache: Option<u64>,
}

impl Default for DemoConfig {
    fn default() -> Self {
        DemoConfig {
            output: PathBuf::from("clipkd-demo"),
            seed: 0,
            data: ShapesConfig::default(),
            context_length: 16,
            teacher: DemoModel::teacher(),
            student: DemoModel::student(),
            batch_size: 64,
            teacher_epochs: 12,
            student_epochs: 3,
            teacher_lr: 3e-3,
            student_lr: 3e-3,
            warmup_fraction: 0.1,
            crd_weight: 1.0,
            icl_weight: 1.0,
            fd_weight: None,
            evals_per_run: 3,
            workers: 1,
            device: DeviceSpec::Cpu,
            precision: Precision::F32,
            teacher_cache: None,
        }
    }
}

impl DemoConfig {
    /// A run of seconds (for tests and CI): 256 training and 60 held-out images, one-block
    /// models of width 32 (teacher) and 16 (student), 2 teacher epochs and 1 per student.
    /// It checks that everything runs, not that distillation helps.
    pub fn quick() -> Self {
        DemoConfig {
            output: PathBuf::from("clipkd-demo-quick"),
            data: ShapesConfig {
                train_samples: 256,
                heldout_samples: 60,
                ..ShapesConfig::default()
            },
            teacher: DemoModel {
                embed_dim: 32,
                vision_width: 32,
                vision_layers: 1,
                head_width: 16,
                patch_size: 8,
                text_width: 32,
                text_layers: 1,
            },
            student: DemoModel {
                embed_dim: 16,
                vision_width: 16,
                vision_layers: 1,
                head_width: 16,
                patch_size: 8,
                text_width: 16,
                text_layers: 1,
            },
            batch_size: 32,
            teacher_epochs: 2,
            student_epochs: 1,
            evals_per_run: 1,
            ..DemoConfig::default()
        }
    }

    /// Sets the training seed and the data seed.
    pub fn with_seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self.data.seed = seed;
        self
    }

    /// Applies `overrides` (dotted paths of this config's JSON form, e.g.
    /// `teacher.vision_width=192` or `data.train_samples=8000`, as `--set` gives them). A path
    /// that names no field, or a value of the wrong type, is an error naming it.
    pub fn with_overrides(self, overrides: &[Override]) -> Result<Self, TrainError> {
        if overrides.is_empty() {
            return Ok(self);
        }
        let mut value = serde_json::to_value(&self)
            .map_err(|e| TrainError::config("demo", format!("cannot represent the config: {e}")))?;
        for o in overrides {
            let mut node = &mut value;
            for part in o.path.split('.') {
                let field = format!("demo.{}", o.path);
                node = match node {
                    Value::Object(map) => map.get_mut(part).ok_or_else(|| {
                        TrainError::config(
                            &field,
                            format!("`{part}` is not a field of the demo config"),
                        )
                    })?,
                    _ => {
                        return Err(TrainError::config(
                            field,
                            format!("`{part}` is inside a value that has no fields"),
                        ));
                    }
                };
            }
            *node = o.value.clone();
        }
        serde_path_to_error::deserialize::<_, DemoConfig>(value)
            .map_err(|e| TrainError::config(format!("demo.{}", e.path()), e.inner().to_string()))
    }

    /// Checks every field, naming the first bad one (`demo.student.text_width`, ...).
    pub fn validate(&self) -> Result<(), TrainError> {
        self.data
            .validate()
            .map_err(|e| TrainError::field("demo.data", e))?;
        if self.output.as_os_str().is_empty() {
            return Err(TrainError::config("demo.output", "must not be empty"));
        }
        if self.teacher_cache == Some(0) {
            return Err(TrainError::config(
                "demo.teacher_cache",
                "a teacher cache holds at least one crop per sample",
            ));
        }
        if self.context_length < 3 {
            return Err(TrainError::config(
                "demo.context_length",
                format!(
                    "{} leaves no room for a word between SOT and EOT",
                    self.context_length
                ),
            ));
        }
        self.model_configs()?;
        for (field, v) in [
            ("demo.batch_size", self.batch_size as u64),
            ("demo.teacher_epochs", self.teacher_epochs),
            ("demo.student_epochs", self.student_epochs),
        ] {
            if v == 0 {
                return Err(TrainError::config(field, "must be at least 1"));
            }
        }
        if self.batch_size > self.data.train_samples {
            return Err(TrainError::config(
                "demo.batch_size",
                format!(
                    "{} is more than the {} training images",
                    self.batch_size, self.data.train_samples
                ),
            ));
        }
        for (field, v) in [
            ("demo.teacher_lr", self.teacher_lr),
            ("demo.student_lr", self.student_lr),
            ("demo.crd_weight", self.crd_weight),
            ("demo.icl_weight", self.icl_weight),
            ("demo.fd_weight", self.fd_weight()),
        ] {
            if !(v.is_finite() && v >= 0.0) {
                return Err(TrainError::config(
                    field,
                    format!("{v} must be finite and >= 0"),
                ));
            }
        }
        if !(0.0..1.0).contains(&self.warmup_fraction) {
            return Err(TrainError::config(
                "demo.warmup_fraction",
                format!("{} is not in [0, 1)", self.warmup_fraction),
            ));
        }
        Ok(())
    }

    /// The teacher's and the student's open_clip configs.
    pub fn model_configs(&self) -> Result<(ClipConfig, ClipConfig), TrainError> {
        let size = self.data.image_size;
        Ok((
            self.teacher
                .clip_config(size, self.context_length, "demo.teacher")?,
            self.student
                .clip_config(size, self.context_length, "demo.student")?,
        ))
    }

    /// Optimizer steps per epoch (the loader drops the last incomplete batch).
    pub fn steps_per_epoch(&self) -> u64 {
        (self.data.train_samples / self.batch_size.max(1)) as u64
    }

    /// The FD weight used: [`DemoConfig::fd_weight`], or the paper's scaled to the teacher's
    /// embedding size.
    pub fn fd_weight(&self) -> f64 {
        self.fd_weight
            .unwrap_or(2000.0 * self.teacher.embed_dim as f64 / 512.0)
    }

    /// The CLIP-KD student's loss terms: task (1), CRD, ICL and FD with this config's weights
    /// (the `clip_kd` preset's losses and options).
    pub fn kd_loss_terms(&self) -> Vec<LossTermConfig> {
        [
            (LossKind::Task, 1.0),
            (LossKind::Crd, self.crd_weight),
            (LossKind::Icl, self.icl_weight),
            (LossKind::Fd, self.fd_weight()),
        ]
        .into_iter()
        .map(|(kind, weight)| LossTermConfig {
            kind,
            weight,
            name: None,
            options: Map::new(),
        })
        .collect()
    }
}
