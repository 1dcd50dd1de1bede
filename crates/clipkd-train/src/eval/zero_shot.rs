//! Zero-shot classification, as open_clip's `build_zero_shot_classifier` and `zero_shot_eval`.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};
use clipkd_data::DataError;
use clipkd_data::dataset::{DataSource, ImageFolder, IndexedDataset, SkipReport};
use clipkd_data::image::ImageTransform;
use clipkd_data::loader::{DataLoader, LoaderConfig};
use clipkd_data::tokenizer::Tokenizer;
use clipkd_models::ClipEncoder;
use serde::{Deserialize, Serialize};

use super::metrics::{Positives, rank_rows, read_scores, recall_at_k};
use super::{EvalProgress, EvalTask, LoaderSettings};
use crate::embed::{HostEmbeddings, embed_texts};
use crate::error::TrainError;

mod prompts;

pub use prompts::{
    ClassNames, IMAGENET_CLASSNAMES_TXT, OPENAI_IMAGENET_TEMPLATES_TXT, Template, Templates,
    imagenet_classnames, openai_imagenet_templates, parse_classnames,
};

/// The zero-shot classifier from text embeddings laid out class after class
/// (`[classes * templates, dim]`, the templates of class 0 first): each template embedding is
/// L2-normalized, a class's are averaged, and the mean is L2-normalized again (both with
/// PyTorch's `F.normalize` floor of 1e-12 on the norm). Returns `[classes, dim]` rows (open_clip
/// returns the transpose).
///
/// # Panics
/// If `templates` is 0 or the rows are not a multiple of it.
pub fn classifier_from_template_embeddings(
    embeddings: &HostEmbeddings,
    templates: usize,
) -> HostEmbeddings {
    assert!(
        templates > 0 && embeddings.rows.is_multiple_of(templates),
        "classifier_from_template_embeddings: {} rows is not a multiple of {templates} templates",
        embeddings.rows
    );
    let (classes, dim) = (embeddings.rows / templates, embeddings.dim);
    let mut data = Vec::with_capacity(classes * dim);
    let mut mean = vec![0f64; dim];
    for c in 0..classes {
        mean.iter_mut().for_each(|m| *m = 0.0);
        for t in 0..templates {
            let row = embeddings.row(c * templates + t);
            let norm = row.iter().map(|&v| (v as f64).powi(2)).sum::<f64>().sqrt();
            let inv = 1.0 / norm.max(1e-12);
            for (m, &v) in mean.iter_mut().zip(row) {
                *m += v as f64 * inv;
            }
        }
        mean.iter_mut().for_each(|m| *m /= templates as f64);
        let norm = mean.iter().map(|m| m * m).sum::<f64>().sqrt().max(1e-12);
        data.extend(mean.iter().map(|m| (m / norm) as f32));
    }
    HostEmbeddings {
        data,
        rows: classes,
        dim,
    }
}

/// Builds the zero-shot classifier of `model` (`[classes, dim]`, unit rows): every template
/// filled with every class name, tokenized, encoded `batch_size` prompts at a time, then
/// reduced by [`classifier_from_template_embeddings`]. Classes are processed a few at a time
/// (open_clip: 10; here `batch_size / gcd(batch_size, templates)`, so the prompts fill whole
/// batches), which does not change the result.
pub fn build_classifier<B: Backend, M: ClipEncoder<B>>(
    model: &M,
    tokenizer: &Tokenizer,
    classnames: &[String],
    templates: &[Template],
    batch_size: usize,
    device: &B::Device,
) -> Result<HostEmbeddings, TrainError> {
    build_classifier_with_progress(
        model,
        tokenizer,
        classnames,
        templates,
        batch_size,
        device,
        &mut |_| {},
    )
}

/// [`build_classifier`], calling `progress` with the number of classes done.
fn build_classifier_with_progress<B: Backend, M: ClipEncoder<B>>(
    model: &M,
    tokenizer: &Tokenizer,
    classnames: &[String],
    templates: &[Template],
    batch_size: usize,
    device: &B::Device,
    progress: &mut dyn FnMut(usize),
) -> Result<HostEmbeddings, TrainError> {
    assert!(
        !templates.is_empty(),
        "build_classifier: at least one template is needed"
    );
    let batch_size = batch_size.max(1);
    let classes_per_chunk = batch_size / gcd(batch_size, templates.len());
    let mut classifier = HostEmbeddings {
        data: Vec::with_capacity(classnames.len() * model.embed_dim()),
        rows: 0,
        dim: model.embed_dim(),
    };
    for chunk in classnames.chunks(classes_per_chunk) {
        let prompts: Vec<String> = chunk
            .iter()
            .flat_map(|c| templates.iter().map(move |t| t.format(c)))
            .collect();
        let embeddings = embed_texts(model, tokenizer, &prompts, batch_size, device)?;
        let part = classifier_from_template_embeddings(&embeddings, templates.len());
        classifier.data.extend(part.data);
        classifier.rows += part.rows;
        progress(classifier.rows);
    }
    Ok(classifier)
}

fn gcd(a: usize, b: usize) -> usize {
    if b == 0 { a } else { gcd(b, a % b) }
}

/// Zero-shot accuracies from the ranks of the true classes (see [`super::metrics`] for ties;
/// with fewer than 5 classes top-5 counts every image as correct, as top-`classes` would).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ZeroShotMetrics {
    /// Fraction of images whose true class scores highest.
    pub top1: f64,
    /// Fraction of images whose true class is among the 5 highest.
    pub top5: f64,
    /// Top-1 accuracy of each class, averaged over the classes that have images (CLIP
    /// benchmark's `mean_per_class_recall`, scikit-learn's balanced accuracy); equal to
    /// `top1` when every class has as many images (ImageNet val: 50).
    pub mean_per_class_recall: f64,
}

impl ZeroShotMetrics {
    /// From the 0-based ranks of the true classes `labels` (one per image).
    ///
    /// # Panics
    /// If `ranks` and `labels` differ in length.
    pub fn from_ranks(ranks: &[usize], labels: &[usize]) -> Self {
        assert_eq!(
            ranks.len(),
            labels.len(),
            "ZeroShotMetrics: {} ranks, {} labels",
            ranks.len(),
            labels.len()
        );
        let classes = labels.iter().max().map_or(0, |&m| m + 1);
        let (mut hits, mut counts) = (vec![0usize; classes], vec![0usize; classes]);
        for (&r, &l) in ranks.iter().zip(labels) {
            counts[l] += 1;
            hits[l] += usize::from(r == 0);
        }
        let present: Vec<f64> = hits
            .iter()
            .zip(&counts)
            .filter(|(_, c)| **c > 0)
            .map(|(&h, &c)| h as f64 / c as f64)
            .collect();
        ZeroShotMetrics {
            top1: recall_at_k(ranks, 1),
            top5: recall_at_k(ranks, 5),
            mean_per_class_recall: present.iter().sum::<f64>() / present.len() as f64,
        }
    }
}

/// The 0-based rank of each image's true class (`labels[i]`) among the classes: logits
/// `100 · image · classifierᵀ` (open_clip's scale; it does not change the order) on `device`,
/// ranked on the host (see [`super::metrics`] for ties). Both inputs are `[rows, dim]`;
/// the pipeline passes unit rows.
///
/// # Panics
/// If the sizes differ or a label is not a classifier row.
pub fn zero_shot_ranks<B: Backend>(
    images: &HostEmbeddings,
    classifier: &HostEmbeddings,
    labels: &[usize],
    device: &B::Device,
) -> Result<Vec<usize>, TrainError> {
    assert_eq!(
        images.dim, classifier.dim,
        "zero_shot_ranks: images have dim {} but the classifier {}",
        images.dim, classifier.dim
    );
    let features = Tensor::<B, 2>::from_data(
        TensorData::new(images.data.clone(), [images.rows, images.dim]),
        device,
    );
    let mut ranks = Vec::with_capacity(images.rows);
    rank_batch(
        features,
        classifier_tensor::<B>(classifier, device),
        labels,
        &mut ranks,
    )?;
    Ok(ranks)
}

/// The classifier as a `[dim, classes]` device tensor.
fn classifier_tensor<B: Backend>(classifier: &HostEmbeddings, device: &B::Device) -> Tensor<B, 2> {
    Tensor::<B, 2>::from_data(
        TensorData::new(classifier.data.clone(), [classifier.rows, classifier.dim]),
        device,
    )
    .transpose()
}

/// Appends the ranks of one batch of image embeddings (`[n, dim]`) against the transposed
/// classifier (`[dim, classes]`).
fn rank_batch<B: Backend>(
    features: Tensor<B, 2>,
    classifier_t: Tensor<B, 2>,
    labels: &[usize],
    out: &mut Vec<usize>,
) -> Result<(), TrainError> {
    let [n, _] = features.dims();
    let [_, classes] = classifier_t.dims();
    assert_eq!(
        n,
        labels.len(),
        "zero-shot ranks: {n} images but {} labels",
        labels.len()
    );
    assert!(
        labels.iter().all(|&l| l < classes),
        "zero-shot ranks: a label is not below the {classes} classes"
    );
    let logits = features.matmul(classifier_t).mul_scalar(100.0);
    rank_rows(
        &read_scores(logits)?,
        classes,
        0,
        &Positives::one_each(labels),
        out,
    );
    Ok(())
}

/// A zero-shot classification evaluation, ready to run: the image folder is listed, the class
/// names and templates are read and checked.
#[derive(Debug, Clone)]
pub struct ZeroShotEval {
    folder: Arc<ImageFolder>,
    classnames: Vec<String>,
    templates: Vec<Template>,
    classnames_source: String,
    templates_source: String,
}

impl ZeroShotEval {
    /// Lists the image folder (ImageNet layout) and resolves class names and templates.
    /// Errors name the folder or file (and line) before any model work.
    pub fn open(
        root: impl AsRef<Path>,
        classnames: &ClassNames,
        templates: &Templates,
    ) -> Result<Self, DataError> {
        let folder = ImageFolder::open(root)?;
        Self::new(folder, classnames, templates)
    }

    /// From an already listed folder.
    pub fn new(
        folder: ImageFolder,
        classnames: &ClassNames,
        templates: &Templates,
    ) -> Result<Self, DataError> {
        let names = classnames.resolve(&folder)?;
        let parsed = templates.resolve()?;
        Ok(ZeroShotEval {
            folder: Arc::new(folder),
            classnames: names,
            templates: parsed,
            classnames_source: classnames.describe(),
            templates_source: templates.describe(),
        })
    }

    /// The image folder.
    pub fn folder(&self) -> &ImageFolder {
        &self.folder
    }

    /// The class names, in label order.
    pub fn classnames(&self) -> &[String] {
        &self.classnames
    }

    /// The templates.
    pub fn templates(&self) -> &[Template] {
        &self.templates
    }

    /// Runs the evaluation: builds the classifier, then classifies every image (decoded in
    /// parallel by the loader in eval mode with `transform`; unreadable images are skipped and
    /// counted).
    pub(crate) fn run<B: Backend, M: ClipEncoder<B>>(
        &self,
        model: &M,
        transform: &ImageTransform,
        settings: &LoaderSettings,
        device: &B::Device,
        progress: &mut dyn FnMut(EvalProgress),
    ) -> Result<ZeroShotReport, TrainError> {
        let started = Instant::now();
        let tokenizer = Tokenizer::new();
        let classes = self.classnames.len();
        progress(EvalProgress {
            task: EvalTask::ZeroShotClassifier,
            done: 0,
            total: classes,
        });
        let classifier = build_classifier_with_progress(
            model,
            &tokenizer,
            &self.classnames,
            &self.templates,
            settings.batch_size,
            device,
            &mut |done| {
                progress(EvalProgress {
                    task: EvalTask::ZeroShotClassifier,
                    done,
                    total: classes,
                })
            },
        )?;
        let classifier_t = classifier_tensor::<B>(&classifier, device);
        let total = self.folder.len();
        progress(EvalProgress {
            task: EvalTask::ZeroShot,
            done: 0,
            total,
        });
        let loader = DataLoader::new(
            DataSource::Indexed(self.folder.clone()),
            transform.clone(),
            tokenizer,
            LoaderConfig::eval(settings.batch_size)
                .with_workers(settings.workers)
                .with_context_length(model.context_length()),
        )?;
        let mut batches = loader.epoch(0)?;
        let mut ranks = Vec::with_capacity(total);
        let mut all_labels = Vec::with_capacity(total);
        let mut done = 0;
        for batch in &mut batches {
            let batch = batch?;
            let labels = batch
                .labels
                .as_ref()
                .expect("ImageFolder batches carry labels");
            let images = Tensor::<B, 4>::from_data(
                TensorData::new(batch.images.clone(), batch.images_shape()),
                device,
            );
            let features = model.encode_image_normalized(images)?;
            rank_batch(features, classifier_t.clone(), labels, &mut ranks)?;
            all_labels.extend_from_slice(labels);
            done += batch.len() + batch.skipped.total() as usize;
            progress(EvalProgress {
                task: EvalTask::ZeroShot,
                done,
                total,
            });
        }
        let skipped = batches.skipped().clone();
        if ranks.is_empty() {
            return Err(DataError::ImageFolder {
                path: self.folder.root().to_path_buf(),
                what: format!("no image could be read: {skipped}"),
            }
            .into());
        }
        let metrics = ZeroShotMetrics::from_ranks(&ranks, &all_labels);
        Ok(ZeroShotReport {
            root: self.folder.root().to_path_buf(),
            classnames: self.classnames_source.clone(),
            templates: self.templates_source.clone(),
            top1: metrics.top1,
            top5: metrics.top5,
            mean_per_class_recall: metrics.mean_per_class_recall,
            images: ranks.len(),
            classes: self.classnames.len(),
            num_templates: self.templates.len(),
            skipped,
            seconds: started.elapsed().as_secs_f64(),
        })
    }
}

/// The result of a zero-shot evaluation. Accuracies are fractions (0.5 = 50%).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ZeroShotReport {
    /// The image folder.
    pub root: PathBuf,
    /// Where the class names came from (`imagenet`, `folders`, a file).
    pub classnames: String,
    /// Where the templates came from (`openai_imagenet`, a file, `list`).
    pub templates: String,
    /// Top-1 accuracy.
    pub top1: f64,
    /// Top-5 accuracy (every image counts as correct with fewer than 5 classes).
    pub top5: f64,
    /// Per-class top-1 accuracy averaged over the classes with images.
    pub mean_per_class_recall: f64,
    /// Images classified (skipped ones excluded).
    pub images: usize,
    /// Number of classes.
    pub classes: usize,
    /// Number of templates.
    pub num_templates: usize,
    /// Images that could not be read or decoded, by reason, with examples.
    pub skipped: SkipReport,
    /// Wall-clock seconds (classifier and images).
    pub seconds: f64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bundled_metadata_is_open_clips() {
        let names = imagenet_classnames();
        assert_eq!(names.len(), 1000);
        assert_eq!(names[0], "tench");
        assert_eq!(names[999], "toilet paper");
        let templates = openai_imagenet_templates();
        assert_eq!(templates.len(), 80);
        assert_eq!(templates[0].format("dog"), "a bad photo of a dog.");
        assert_eq!(templates[79].format("dog"), "a tattoo of the dog.");
    }

    #[test]
    fn templates_follow_str_format() {
        let t = Template::parse("{{a}} {0} and {0}").unwrap();
        assert_eq!(t.format("cat"), "{a} cat and cat");
        assert_eq!(
            Template::parse("itap of a {}.").unwrap().format("x y"),
            "itap of a x y."
        );
        for (bad, msg) in [
            ("a photo", "no `{}`"),
            ("{} and {}", "2 `{}` fields"),
            ("{} {0}", "mixes"),
            ("{name}", "unsupported field"),
            ("a {", "unclosed"),
            ("a } {}", "single `}`"),
        ] {
            let e = Template::parse(bad).unwrap_err();
            assert!(e.contains(msg), "{bad}: {e}");
        }
    }

    #[test]
    fn classnames_files_in_both_layouts() {
        let folders = vec!["n01".to_string(), "n02".into(), "n03".into()];
        assert_eq!(
            parse_classnames("cat\n\n dog \r\nfish\n", &folders).unwrap(),
            ["cat", "dog", "fish"]
        );
        let e = parse_classnames("cat\ndog\n", &folders).unwrap_err();
        assert!(e.contains("2 names for 3 class folders"), "{e}");
        assert_eq!(
            parse_classnames("n03\tfish\nn99\tx\nn01\tcat\nn02\tdog\n", &folders).unwrap(),
            ["cat", "dog", "fish"]
        );
        let e = parse_classnames("n01\tcat\nn03\tfish\n", &folders).unwrap_err();
        assert!(e.contains("no name for 1 class folder(s): n02"), "{e}");
        let e = parse_classnames("n01\tcat\nn01\tdog\n", &folders).unwrap_err();
        assert!(e.contains("line 2: folder `n01` is mapped twice"), "{e}");
        let e = parse_classnames("n01\tcat\ndog\n", &folders).unwrap_err();
        assert!(e.contains("line 2: no tab"), "{e}");
    }
}
