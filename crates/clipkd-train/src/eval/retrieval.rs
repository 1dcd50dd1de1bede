//! Image-text retrieval (MSCOCO 5K, Flickr30K 1K style; CLIP-KD's one-caption mode).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor, TensorData};
use clipkd_data::DataError;
use clipkd_data::dataset::{
    CaptionGrouping, CsvConfig, CsvSource, DataSource, IndexedDataset, RetrievalDataset, SampleRef,
    SkipReport,
};
use clipkd_data::image::ImageTransform;
use clipkd_data::loader::{DataLoader, LoaderConfig};
use clipkd_data::tokenizer::Tokenizer;
use clipkd_models::ClipEncoder;
use serde::{Deserialize, Serialize};

use super::metrics::{RankSummary, retrieval_ranks};
use super::{EvalProgress, EvalTask, LoaderSettings};
use crate::embed::{HostEmbeddings, append_rows};
use crate::error::TrainError;

/// Which captions of each image take part.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CaptionMode {
    /// Every caption (COCO and Flickr30K: 5 per image), as CLIP benchmark and open_clip's
    /// retrieval evaluations.
    #[default]
    All,
    /// Only the first caption of each image, 1:1 pairs: CLIP-KD's evaluation.
    First,
}

/// The format of a retrieval annotation file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AnnotationFormat {
    /// By extension: `.json` is JSON, `.csv` / `.tsv` is CSV.
    #[default]
    Auto,
    /// A COCO-Karpathy JSON array of `{"image": path, "caption": [..] or ".."}`.
    Json,
    /// The training CSV format, rows grouped by image path.
    Csv,
}

impl AnnotationFormat {
    /// The format of `path` (`Auto` resolved by extension). Errors for an unknown extension.
    pub fn resolve(self, path: &Path) -> Result<Self, DataError> {
        if self != AnnotationFormat::Auto {
            return Ok(self);
        }
        let ext = path
            .extension()
            .and_then(|e| e.to_str())
            .map(str::to_ascii_lowercase);
        match ext.as_deref() {
            Some("json") => Ok(AnnotationFormat::Json),
            Some("csv" | "tsv") => Ok(AnnotationFormat::Csv),
            _ => Err(DataError::Annotations {
                path: path.to_path_buf(),
                what: "cannot tell the format from the extension (.json, .csv or .tsv): \
                       name it (json or csv)"
                    .into(),
            }),
        }
    }
}

/// How many images [`RetrievalEval::open`] looks for to check the image root.
pub const ROOT_CHECK_IMAGES: usize = 16;

/// A [`RetrievalDataset`] whose samples keep only their first caption.
#[derive(Debug)]
struct FirstCaption(Arc<RetrievalDataset>);

impl IndexedDataset for FirstCaption {
    fn len(&self) -> usize {
        self.0.len()
    }

    fn sample(&self, index: usize) -> SampleRef {
        let mut sample = self.0.sample(index);
        sample.captions.truncate(1);
        sample
    }
}

/// An image-text retrieval evaluation, ready to run: the annotations are read.
#[derive(Debug, Clone)]
pub struct RetrievalEval {
    annotations: PathBuf,
    dataset: Arc<RetrievalDataset>,
    mode: CaptionMode,
}

impl RetrievalEval {
    /// Reads an annotation file (see [`RetrievalDataset`] for the formats), image paths joined
    /// to `root` unless absolute; CSV files use `csv` (columns, separator) and are grouped by
    /// image path. Errors name the file (and entry or line). As a check of `root`, it is an
    /// error when none of the first [`ROOT_CHECK_IMAGES`] images exists (a few missing images
    /// are only skipped when the evaluation runs).
    pub fn open(
        annotations: impl AsRef<Path>,
        root: Option<&Path>,
        format: AnnotationFormat,
        csv: &CsvConfig,
        mode: CaptionMode,
    ) -> Result<Self, DataError> {
        let path = annotations.as_ref();
        let dataset = match format.resolve(path)? {
            AnnotationFormat::Json => RetrievalDataset::from_json(path, root)?,
            AnnotationFormat::Csv => RetrievalDataset::from_csv(
                &CsvSource::new(path, root.map(Path::to_path_buf)),
                csv,
                CaptionGrouping::ByImage,
            )?,
            AnnotationFormat::Auto => unreachable!("resolved above"),
        };
        let checked = dataset.len().min(ROOT_CHECK_IMAGES);
        if checked > 0 && (0..checked).all(|i| !dataset.image_path(i).exists()) {
            return Err(DataError::Annotations {
                path: path.to_path_buf(),
                what: format!(
                    "none of the first {checked} images exists (the first is {}): is the image \
                     root ({}) right?",
                    dataset.image_path(0).display(),
                    root.map_or("none given".into(), |r| r.display().to_string())
                ),
            });
        }
        Ok(Self::new(path, dataset, mode))
    }

    /// From an already read dataset (`annotations` names it in reports).
    pub fn new(
        annotations: impl Into<PathBuf>,
        dataset: RetrievalDataset,
        mode: CaptionMode,
    ) -> Self {
        RetrievalEval {
            annotations: annotations.into(),
            dataset: Arc::new(dataset),
            mode,
        }
    }

    /// The dataset.
    pub fn dataset(&self) -> &RetrievalDataset {
        &self.dataset
    }

    /// The caption mode.
    pub fn mode(&self) -> CaptionMode {
        self.mode
    }

    /// Embeds every image and its captions (the loader decodes images in parallel, eval
    /// transform; an image that cannot be read is skipped with its captions, and counted),
    /// then ranks both directions.
    pub(crate) fn run<B: Backend, M: ClipEncoder<B>>(
        &self,
        model: &M,
        transform: &ImageTransform,
        settings: &LoaderSettings,
        device: &B::Device,
        progress: &mut dyn FnMut(EvalProgress),
    ) -> Result<RetrievalReport, TrainError> {
        let started = Instant::now();
        let tokenizer = Tokenizer::new();
        let vocab = model.vocab_size();
        if vocab < tokenizer.vocab_size() {
            return Err(TrainError::TokenizerMismatch {
                model_vocab: vocab,
                tokenizer_vocab: tokenizer.vocab_size(),
            });
        }
        let source = match self.mode {
            CaptionMode::All => DataSource::Indexed(self.dataset.clone()),
            CaptionMode::First => DataSource::indexed(FirstCaption(self.dataset.clone())),
        };
        let context = model.context_length();
        let loader = DataLoader::new(
            source,
            transform.clone(),
            tokenizer,
            LoaderConfig::eval(settings.batch_size)
                .with_workers(settings.workers)
                .with_context_length(context),
        )?;
        let total = self.dataset.len();
        progress(EvalProgress {
            task: EvalTask::Retrieval,
            done: 0,
            total,
        });
        let dim = model.embed_dim();
        let mut images = HostEmbeddings {
            data: Vec::new(),
            rows: 0,
            dim,
        };
        let mut texts = images.clone();
        let mut text_image = Vec::new();
        let mut batches = loader.epoch(0)?;
        let mut done = 0;
        for batch in &mut batches {
            let batch = batch?;
            let pixels = Tensor::<B, 4>::from_data(
                TensorData::new(batch.images.clone(), batch.images_shape()),
                device,
            );
            append_rows(&mut images, model.encode_image_normalized(pixels)?)?;
            let first_text = texts.rows;
            let per_text = batch.context_length;
            for rows in batch.tokens.chunks(settings.batch_size.max(1) * per_text) {
                let n = rows.len() / per_text;
                let ids: Vec<i64> = rows.iter().map(|&t| i64::from(t)).collect();
                let tokens =
                    Tensor::<B, 2, Int>::from_data(TensorData::new(ids, [n, per_text]), device);
                append_rows(&mut texts, model.encode_text_normalized(tokens)?)?;
            }
            debug_assert_eq!(texts.rows - first_text, batch.num_texts());
            text_image.extend(
                batch
                    .text_image
                    .iter()
                    .map(|&i| i + images.rows - batch.len()),
            );
            done += batch.len() + batch.skipped.total() as usize;
            progress(EvalProgress {
                task: EvalTask::Retrieval,
                done,
                total,
            });
        }
        let mut skipped = self.dataset.skipped().clone();
        skipped.merge(batches.skipped());
        if images.rows == 0 {
            return Err(DataError::Annotations {
                path: self.annotations.clone(),
                what: format!("no image could be read: {skipped}"),
            }
            .into());
        }
        let ranks = retrieval_ranks::<B>(&images, &texts, &text_image, device)?;
        Ok(RetrievalReport {
            annotations: self.annotations.clone(),
            mode: self.mode,
            image_to_text: RankSummary::from_ranks(&ranks.image_to_text),
            text_to_image: RankSummary::from_ranks(&ranks.text_to_image),
            images: images.rows,
            captions: texts.rows,
            skipped,
            seconds: started.elapsed().as_secs_f64(),
        })
    }
}

/// The result of a retrieval evaluation. Recalls are fractions (0.5 = 50%).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RetrievalReport {
    /// The annotation file.
    pub annotations: PathBuf,
    /// Which captions took part.
    pub mode: CaptionMode,
    /// Images as queries, captions as candidates: a hit when any of the image's captions is
    /// in the top K (CLIP benchmark's `text_retrieval_recall@K`).
    pub image_to_text: RankSummary,
    /// Captions as queries, images as candidates: a hit when the caption's image is in the
    /// top K (CLIP benchmark's `image_retrieval_recall@K`).
    pub text_to_image: RankSummary,
    /// Images evaluated (skipped ones excluded).
    pub images: usize,
    /// Captions evaluated (those of skipped images excluded).
    pub captions: usize,
    /// Images that could not be read (their captions left out too) and, for CSV annotations,
    /// malformed lines, by reason with examples.
    pub skipped: SkipReport,
    /// Wall-clock seconds.
    pub seconds: f64,
}
