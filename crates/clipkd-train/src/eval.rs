//! Evaluation: zero-shot classification (ImageNet layout) and image-text retrieval, as
//! open_clip 3.3.0 and CLIP-KD compute them; during training and standalone (`clipkd eval`).
//!
//! ```no_run
//! # use burn::tensor::backend::Backend;
//! # fn demo<B: Backend>(model: &clipkd_models::Clip<B>, device: &B::Device)
//! #     -> Result<(), clipkd_train::TrainError> {
//! use clipkd_train::eval::EvalConfig;
//! let config: EvalConfig = serde_json::from_str(
//!     r#"{"zero_shot": {"root": "/data/imagenet/val"},
//!         "retrieval": {"annotations": "coco_karpathy_test.json", "root": "/data/coco"}}"#,
//! ).expect("valid JSON");
//! let suite = config.build()?;            // lists folders, reads files: errors before work
//! let report = suite.run(model, device)?; // model: an inference (non-autodiff) backend
//! for (name, value) in report.metrics() {
//!     println!("{name} {value}");       // zeroshot/top1 0.31, retrieval/image_to_text_R@1 ...
//! }
//! # Ok(()) }
//! ```
//!
//! - [`zero_shot`]: class embedding = mean of the L2-normalized embeddings of the prompts
//!   (every template filled with the class name), L2-normalized again; logits
//!   `100 · image · Wᵀ`; top-1 and top-5 accuracy. The 1000 ImageNet class names and the 80
//!   OpenAI templates of open_clip are bundled; any class-name list and templates can be given.
//! - [`retrieval`]: image->text R@K is the fraction of images with any of their captions in
//!   the top K captions, text->image R@K the fraction of captions whose image is in the top K
//!   images (K = 1, 5, 10), plus open_clip's mean and median rank; every caption, or CLIP-KD's
//!   first caption only.
//! - [`metrics`]: the ranking rule (ties: score, then index) and chunked similarities.
//!
//! Images are decoded by the [`DataLoader`](clipkd_data::loader::DataLoader) in eval mode
//! (parallel workers, the model's eval transform); an image that cannot be read is skipped and
//! counted in the report, not an error. Pass a model on an inference backend (for a training
//! model, `model.valid()`): on an autodiff backend training behaviour (patch dropout,
//! BatchNorm batch statistics) would be on.

pub mod metrics;
pub mod retrieval;
pub mod zero_shot;

use std::fmt;
use std::path::PathBuf;

use burn::tensor::backend::Backend;
use clipkd_data::DataError;
use clipkd_data::dataset::CsvConfig;
use clipkd_data::image::ImageTransform;
use clipkd_models::ClipEncoder;
use serde::{Deserialize, Serialize};

use crate::config::CsvSeparator;
use crate::embed::eval_transform_config;
use crate::error::TrainError;

pub use metrics::{RankSummary, RetrievalRanks, recall_at_k};
pub use retrieval::{AnnotationFormat, CaptionMode, RetrievalEval, RetrievalReport};
pub use zero_shot::{
    ClassNames, Template, Templates, ZeroShotEval, ZeroShotMetrics, ZeroShotReport,
};

/// The default images (or captions) per forward pass.
pub const DEFAULT_BATCH_SIZE: usize = 64;

/// How the loader runs for an evaluation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoaderSettings {
    /// Images per forward pass (captions are encoded this many at a time too).
    pub batch_size: usize,
    /// Decoding threads (0: every core).
    pub workers: usize,
}

impl Default for LoaderSettings {
    fn default() -> Self {
        LoaderSettings {
            batch_size: DEFAULT_BATCH_SIZE,
            workers: 0,
        }
    }
}

/// Which evaluation a progress report is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EvalTask {
    /// Building the zero-shot classifier (progress in classes).
    ZeroShotClassifier,
    /// Zero-shot classification (progress in images).
    ZeroShot,
    /// Image-text retrieval (progress in images).
    Retrieval,
}

impl EvalTask {
    /// What `done` and `total` count (`classes`, `images`).
    pub fn unit(self) -> &'static str {
        match self {
            EvalTask::ZeroShotClassifier => "classes",
            EvalTask::ZeroShot | EvalTask::Retrieval => "images",
        }
    }
}

impl fmt::Display for EvalTask {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            EvalTask::ZeroShotClassifier => "zero-shot classifier",
            EvalTask::ZeroShot => "zero-shot",
            EvalTask::Retrieval => "retrieval",
        })
    }
}

/// Progress of a running evaluation: `done` of `total` classes embedded, or images read (used
/// or skipped).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EvalProgress {
    /// The evaluation.
    pub task: EvalTask,
    /// Classes or images done so far.
    pub done: usize,
    /// Classes or images in all.
    pub total: usize,
}

/// The zero-shot part of an [`EvalConfig`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ZeroShotConfig {
    /// The image folder: one sub-folder per class (ImageNet `val` after the usual
    /// `valprep.sh`: 1000 WordNet-id folders).
    pub root: PathBuf,
    /// The class names (default: the bundled ImageNet names).
    #[serde(default)]
    pub classnames: ClassNames,
    /// The templates (default: the 80 OpenAI ImageNet templates).
    #[serde(default)]
    pub templates: Templates,
}

/// The retrieval part of an [`EvalConfig`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetrievalConfig {
    /// The annotation file: COCO-Karpathy JSON, or a CSV (see [`AnnotationFormat`]).
    pub annotations: PathBuf,
    /// The folder image paths are relative to (none: as written).
    #[serde(default)]
    pub root: Option<PathBuf>,
    /// The annotation format (default: by extension).
    #[serde(default)]
    pub format: AnnotationFormat,
    /// Every caption (default) or the first only (CLIP-KD).
    #[serde(default)]
    pub captions: CaptionMode,
    /// CSV: the caption column (default `title`).
    #[serde(default = "default_caption_key")]
    pub csv_caption_key: String,
    /// CSV: the image path column (default `filepath`).
    #[serde(default = "default_image_key")]
    pub csv_image_key: String,
    /// CSV: the field separator, one ASCII character (default tab).
    #[serde(default)]
    pub csv_separator: CsvSeparator,
}

fn default_caption_key() -> String {
    CsvConfig::default().caption_key
}

fn default_image_key() -> String {
    CsvConfig::default().image_key
}

fn default_batch_size() -> usize {
    DEFAULT_BATCH_SIZE
}

impl RetrievalConfig {
    /// Settings for `annotations` with defaults (every caption, format by extension, CLIP-KD
    /// CSV columns).
    pub fn new(annotations: impl Into<PathBuf>, root: Option<PathBuf>) -> Self {
        RetrievalConfig {
            annotations: annotations.into(),
            root,
            format: AnnotationFormat::Auto,
            captions: CaptionMode::All,
            csv_caption_key: default_caption_key(),
            csv_image_key: default_image_key(),
            csv_separator: CsvSeparator::TAB,
        }
    }

    /// The CSV settings.
    pub fn csv_config(&self) -> CsvConfig {
        CsvConfig::default()
            .with_keys(self.csv_caption_key.clone(), self.csv_image_key.clone())
            .with_separator(self.csv_separator.byte())
    }
}

/// The evaluation settings a run configuration embeds (JSON), or that `clipkd eval` builds
/// from its flags:
///
/// ```json
/// {
///   "zero_shot": {"root": "/data/imagenet/val", "classnames": "imagenet",
///                 "templates": "openai_imagenet"},
///   "retrieval": {"annotations": "coco_karpathy_test.json", "root": "/data/coco",
///                 "captions": "all"},
///   "batch_size": 64, "workers": 0, "every_epochs": 1
/// }
/// ```
///
/// Every field may be left out (defaults as shown; no `zero_shot` / `retrieval`: that
/// evaluation is not run). `preprocess_cfg` is an open_clip `preprocess_cfg` object (mean,
/// std, interpolation, resize mode) overriding the model's eval transform.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EvalConfig {
    /// Zero-shot classification, if any.
    #[serde(default)]
    pub zero_shot: Option<ZeroShotConfig>,
    /// Image-text retrieval, if any.
    #[serde(default)]
    pub retrieval: Option<RetrievalConfig>,
    /// Images per forward pass.
    #[serde(default = "default_batch_size")]
    pub batch_size: usize,
    /// Decoding threads (0: every core).
    #[serde(default)]
    pub workers: usize,
    /// open_clip `preprocess_cfg` overrides of the eval transform.
    #[serde(default)]
    pub preprocess_cfg: Option<serde_json::Value>,
    /// During training: evaluate after every this many epochs (none: not by epoch).
    #[serde(default)]
    pub every_epochs: Option<u64>,
    /// During training: evaluate after every this many optimizer steps (none: not by step).
    #[serde(default)]
    pub every_steps: Option<u64>,
}

impl Default for EvalConfig {
    fn default() -> Self {
        EvalConfig {
            zero_shot: None,
            retrieval: None,
            batch_size: DEFAULT_BATCH_SIZE,
            workers: 0,
            preprocess_cfg: None,
            every_epochs: None,
            every_steps: None,
        }
    }
}

impl EvalConfig {
    /// Whether no evaluation is configured.
    pub fn is_empty(&self) -> bool {
        self.zero_shot.is_none() && self.retrieval.is_none()
    }

    /// Whether to evaluate after `epochs` completed epochs (1-based count).
    pub fn due_after_epoch(&self, epochs: u64) -> bool {
        !self.is_empty()
            && self
                .every_epochs
                .is_some_and(|n| n > 0 && epochs.is_multiple_of(n))
    }

    /// Whether to evaluate after `steps` completed optimizer steps (1-based count).
    pub fn due_after_step(&self, steps: u64) -> bool {
        !self.is_empty()
            && self
                .every_steps
                .is_some_and(|n| n > 0 && steps.is_multiple_of(n))
    }

    /// Opens everything the evaluations read (image folder listing, class names, templates,
    /// annotations) and checks the settings, so that a missing file or a bad line fails here,
    /// naming it, before any model work.
    pub fn build(&self) -> Result<EvalSuite, TrainError> {
        if self.batch_size == 0 {
            return Err(DataError::InvalidLoader {
                field: "batch_size",
                reason: "the evaluation batch size must be at least 1".into(),
            }
            .into());
        }
        if let Some(cfg) = &self.preprocess_cfg {
            // Checked now (against any image size) so a bad key fails before work.
            clipkd_data::image::TransformConfig::default().merge_preprocess_cfg(cfg)?;
        }
        let zero_shot = match &self.zero_shot {
            Some(z) => Some(ZeroShotEval::open(&z.root, &z.classnames, &z.templates)?),
            None => None,
        };
        let retrieval = match &self.retrieval {
            Some(r) => Some(RetrievalEval::open(
                &r.annotations,
                r.root.as_deref(),
                r.format,
                &r.csv_config(),
                r.captions,
            )?),
            None => None,
        };
        Ok(EvalSuite {
            zero_shot,
            retrieval,
            loader: LoaderSettings {
                batch_size: self.batch_size,
                workers: self.workers,
            },
            preprocess_cfg: self.preprocess_cfg.clone(),
        })
    }
}

/// The evaluations to run on a model, with their data opened ([`EvalConfig::build`]).
#[derive(Debug, Clone, Default)]
pub struct EvalSuite {
    /// Zero-shot classification, if any.
    pub zero_shot: Option<ZeroShotEval>,
    /// Image-text retrieval, if any.
    pub retrieval: Option<RetrievalEval>,
    /// Batch size and decoding threads.
    pub loader: LoaderSettings,
    /// open_clip `preprocess_cfg` overrides of the model's eval transform.
    pub preprocess_cfg: Option<serde_json::Value>,
}

impl EvalSuite {
    /// Runs every configured evaluation on `model` (see [`EvalSuite::run_with_progress`]).
    pub fn run<B: Backend, M: ClipEncoder<B>>(
        &self,
        model: &M,
        device: &B::Device,
    ) -> Result<EvalReport, TrainError> {
        self.run_with_progress(model, device, &mut |_| {})
    }

    /// Runs zero-shot classification, then retrieval, calling `progress` at the start of each
    /// stage and after each batch.
    /// Images go through the model's eval transform (its image size, OpenAI mean/std,
    /// bicubic resize of the short side, center crop; then `preprocess_cfg`).
    pub fn run_with_progress<B: Backend, M: ClipEncoder<B>>(
        &self,
        model: &M,
        device: &B::Device,
        progress: &mut dyn FnMut(EvalProgress),
    ) -> Result<EvalReport, TrainError> {
        let transform = ImageTransform::new(eval_transform_config(
            model.image_size(),
            self.preprocess_cfg.as_ref(),
        )?)?;
        let zero_shot = match &self.zero_shot {
            Some(z) => Some(z.run(model, &transform, &self.loader, device, progress)?),
            None => None,
        };
        let retrieval = match &self.retrieval {
            Some(r) => Some(r.run(model, &transform, &self.loader, device, progress)?),
            None => None,
        };
        Ok(EvalReport {
            zero_shot,
            retrieval,
        })
    }
}

/// The results of an [`EvalSuite`]; JSON via serde. Accuracies and recalls are fractions.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct EvalReport {
    /// Zero-shot classification, if run.
    pub zero_shot: Option<ZeroShotReport>,
    /// Image-text retrieval, if run.
    pub retrieval: Option<RetrievalReport>,
}

impl EvalReport {
    /// Flat named metrics, for logs and JSONL: `zeroshot/top1`, `zeroshot/top5`,
    /// `zeroshot/mean_per_class_recall`, `zeroshot/images`, `zeroshot/skipped`, then `retrieval/image_to_text_R@1` (`@5`,
    /// `@10`), `retrieval/image_to_text_mean_rank`, `..._median_rank`, the same for
    /// `text_to_image`, and `retrieval/images`, `retrieval/captions`, `retrieval/skipped`.
    pub fn metrics(&self) -> Vec<(String, f64)> {
        let mut out = Vec::new();
        if let Some(z) = &self.zero_shot {
            out.push(("zeroshot/top1".to_string(), z.top1));
            out.push(("zeroshot/top5".to_string(), z.top5));
            out.push((
                "zeroshot/mean_per_class_recall".to_string(),
                z.mean_per_class_recall,
            ));
            out.push(("zeroshot/images".to_string(), z.images as f64));
            out.push(("zeroshot/skipped".to_string(), z.skipped.total() as f64));
        }
        if let Some(r) = &self.retrieval {
            for (dir, s) in [
                ("image_to_text", &r.image_to_text),
                ("text_to_image", &r.text_to_image),
            ] {
                for (name, v) in [
                    ("R@1", s.r_at_1),
                    ("R@5", s.r_at_5),
                    ("R@10", s.r_at_10),
                    ("mean_rank", s.mean_rank),
                    ("median_rank", s.median_rank),
                ] {
                    out.push((format!("retrieval/{dir}_{name}"), v));
                }
            }
            out.push(("retrieval/images".to_string(), r.images as f64));
            out.push(("retrieval/captions".to_string(), r.captions as f64));
            out.push(("retrieval/skipped".to_string(), r.skipped.total() as f64));
        }
        out
    }
}

impl fmt::Display for EvalReport {
    /// A short table, percentages with two decimals.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(z) = &self.zero_shot {
            writeln!(
                f,
                "zero-shot  {} ({} images, {} classes, {} templates, {} skipped)",
                z.root.display(),
                z.images,
                z.classes,
                z.num_templates,
                z.skipped.total()
            )?;
            writeln!(
                f,
                "  top-1 {:6.2}%   top-5 {:6.2}%",
                100.0 * z.top1,
                100.0 * z.top5
            )?;
        }
        if let Some(r) = &self.retrieval {
            let mode = match r.mode {
                CaptionMode::All => "all captions",
                CaptionMode::First => "first caption",
            };
            writeln!(
                f,
                "retrieval  {} ({} images, {} captions, {mode}, {} skipped)",
                r.annotations.display(),
                r.images,
                r.captions,
                r.skipped.total()
            )?;
            writeln!(f, "                  R@1      R@5      R@10   mean rank")?;
            for (name, s) in [
                ("image->text", &r.image_to_text),
                ("text->image", &r.text_to_image),
            ] {
                writeln!(
                    f,
                    "  {name}  {:6.2}%  {:6.2}%  {:6.2}%  {:9.2}",
                    100.0 * s.r_at_1,
                    100.0 * s.r_at_5,
                    100.0 * s.r_at_10,
                    s.mean_rank
                )?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_defaults_and_serde_forms() {
        let c: EvalConfig = serde_json::from_str(
            r#"{"zero_shot": {"root": "val", "classnames": {"file": "names.txt"},
                              "templates": {"list": ["a {}."]}},
                "retrieval": {"annotations": "a.csv", "captions": "first"},
                "every_steps": 500}"#,
        )
        .unwrap();
        let z = c.zero_shot.as_ref().unwrap();
        assert_eq!(z.classnames, ClassNames::File("names.txt".into()));
        assert_eq!(z.templates, Templates::List(vec!["a {}.".into()]));
        let r = c.retrieval.as_ref().unwrap();
        assert_eq!(r.captions, CaptionMode::First);
        assert_eq!(
            (r.csv_caption_key.as_str(), r.csv_separator),
            ("title", CsvSeparator::TAB)
        );
        assert_eq!((c.batch_size, c.workers), (DEFAULT_BATCH_SIZE, 0));
        assert!(c.due_after_step(1000) && !c.due_after_step(999) && !c.due_after_epoch(1));
        let round: EvalConfig = serde_json::from_str(&serde_json::to_string(&c).unwrap()).unwrap();
        assert_eq!(round, c);
        let d: EvalConfig = serde_json::from_str(r#"{"zero_shot": {"root": "v"}}"#).unwrap();
        let z = d.zero_shot.unwrap();
        assert_eq!(
            (z.classnames, z.templates),
            (ClassNames::Imagenet, Templates::OpenaiImagenet)
        );
        assert!(serde_json::from_str::<EvalConfig>(r#"{"zeroshot": {}}"#).is_err());
        assert!(!EvalConfig::default().due_after_epoch(1));
    }
}
