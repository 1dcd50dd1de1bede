//! [`Student`]: what the trainer needs of the model it trains, beyond a [`ClipEncoder`].
//!
//! `Clip<B>` implements it (CLIP-KD's parameter groups by open_clip name, the `logit_scale`
//! clamp, open_clip safetensors in every checkpoint). A model of your own that implements
//! [`ClipEncoder`] needs one line, `impl<B: AutodiffBackend> Student<B> for MyStudent<B> {}`,
//! and gets Burn's module paths as parameter names (grouped by CLIP-KD's rule), ViT AdamW
//! settings, no step-end hook and no export files besides the checkpoint's Burn record; see
//! `crates/clipkd-train/examples/custom_student.rs`, which overrides the step-end hook.

use std::path::Path;

use burn::module::{AutodiffModule, Module, ModuleDisplay, ParamId};
use burn::tensor::backend::AutodiffBackend;
use clipkd_models::{Clip, ClipEncoder, StoredDType, open_clip_state_dict_spec, save_open_clip};

use crate::error::TrainError;
use crate::optim::{AdamWParams, GroupKind, ParamPaths, excluded_from_weight_decay};

/// Upper bound of CLIP's log logit scale after each step: ln 100 (CLIP, CLIP-KD).
pub const MAX_LOG_LOGIT_SCALE: f64 = 4.605_170_185_988_092;

/// A trainable CLIP-like model: a [`ClipEncoder`] and a Burn module on an autodiff backend
/// whose inference copy (`valid()`) is an encoder too (evaluation runs on it), plus what
/// training needs. Every method has a default.
pub trait Student<B: AutodiffBackend>:
    ClipEncoder<B>
    + AutodiffModule<B, InnerModule: ClipEncoder<B::InnerBackend> + ModuleDisplay>
    + ModuleDisplay
{
    /// Every float parameter as `(name, rank, id)`, in module order. The names are what the
    /// parameter groups are decided on and what errors show. Default: Burn's module paths
    /// (`visual.blocks.0.attn.weight`).
    fn parameter_names(&self) -> Vec<(String, usize, ParamId)> {
        let mut paths = ParamPaths::default();
        self.visit(&mut paths);
        paths.params
    }

    /// The AdamW group of a parameter. Default: CLIP-KD's rule ([`excluded_from_weight_decay`]:
    /// no weight decay for names with `bn`, `ln`, `bias`, `logit_scale` or rank below 2).
    fn parameter_group(&self, name: &str, rank: usize) -> GroupKind {
        if excluded_from_weight_decay(name, rank) {
            GroupKind::NoDecay
        } else {
            GroupKind::Decay
        }
    }

    /// AdamW's betas and epsilon for this architecture (`optim.betas` and `optim.eps`
    /// override them). Default: CLIP-KD's ViT settings.
    fn default_adamw(&self) -> AdamWParams {
        AdamWParams::vit()
    }

    /// Called after every optimizer step (CLIP clamps its logit scale here). Default: nothing.
    fn after_step(self) -> Self
    where
        Self: Sized,
    {
        self
    }

    /// Writes the student's own files into checkpoint directory `dir`, besides the Burn
    /// record that always holds it (CLIP: an open_clip state dict and model config, which
    /// `clipkd export` and open_clip read). Returns the file names written. Default: none.
    fn export(&self, dir: &Path) -> Result<Vec<String>, TrainError> {
        let _ = dir;
        Ok(Vec::new())
    }
}

/// The open_clip state dict of a checkpoint's student.
pub const OPEN_CLIP_WEIGHTS_FILE: &str = "student.safetensors";
/// The open_clip model config of a checkpoint's student.
pub const OPEN_CLIP_CONFIG_FILE: &str = "student_config.json";

impl<B: AutodiffBackend> Student<B> for Clip<B> {
    /// The open_clip state-dict names (`visual.transformer.resblocks.0.ln_1.weight`,
    /// `logit_scale`), as CLIP-KD names the parameters it groups.
    fn parameter_names(&self) -> Vec<(String, usize, ParamId)> {
        let mut paths = ParamPaths::default();
        self.visit(&mut paths);
        // The spec lists the tensors in the same visiting order, plus BatchNorm
        // `num_batches_tracked` counters (int64), which are not parameters.
        let keys: Vec<String> = open_clip_state_dict_spec(self)
            .into_iter()
            .filter(|spec| spec.dtype != StoredDType::I64)
            .map(|spec| spec.key)
            .collect();
        assert_eq!(
            keys.len(),
            paths.params.len(),
            "the open_clip key list follows the model's parameters"
        );
        paths
            .params
            .into_iter()
            .zip(keys)
            .map(|((_, rank, id), key)| (key, rank, id))
            .collect()
    }

    /// CLIP-KD's settings for the student's tower ([`AdamWParams::clip_kd`]).
    fn default_adamw(&self) -> AdamWParams {
        AdamWParams::clip_kd(self.config())
    }

    /// Clamps the log logit scale to `[0, ln 100]`.
    fn after_step(mut self) -> Self {
        self.logit_scale = self
            .logit_scale
            .map(|t| t.clamp(0.0, MAX_LOG_LOGIT_SCALE).detach().require_grad());
        self
    }

    /// `student.safetensors` (open_clip state dict) and `student_config.json`.
    fn export(&self, dir: &Path) -> Result<Vec<String>, TrainError> {
        let weights = dir.join(OPEN_CLIP_WEIGHTS_FILE);
        crate::fault::point("write", &weights);
        save_open_clip(self, &weights)?;
        let config = dir.join(OPEN_CLIP_CONFIG_FILE);
        crate::fault::point("write", &config);
        std::fs::write(&config, self.config().to_open_clip_json())
            .map_err(|e| TrainError::io("writing", &config, e))?;
        Ok(vec![
            OPEN_CLIP_WEIGHTS_FILE.to_string(),
            OPEN_CLIP_CONFIG_FILE.to_string(),
        ])
    }
}
