//! The training data of a run: opening it, the loader, the schedule's length, the check of a
//! sample before any model is built, and batches as device tensors.

use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor, TensorData};
use clipkd_data::dataset::{CsvConfig, DataSource, DatasetKind, SkipReport, SyntheticDataset};
use clipkd_data::image::{ImageTransform, TransformConfig};
use clipkd_data::loader::{AugmentationPool, Batch, DataLoader, LoaderConfig, Split};
use clipkd_data::tokenizer::Tokenizer;
use clipkd_models::EncoderShape;

use crate::config::{DataKind, RunConfig};
use crate::error::TrainError;
use crate::step::{MicroBatch, TeacherOutputs};
use crate::teacher_cache::TeacherCache;

/// Opens the training data named by `[data]`.
pub(crate) fn open_data(
    config: &RunConfig,
    image_size: [usize; 2],
) -> Result<DataSource, TrainError> {
    let d = &config.data;
    if d.kind == DataKind::Synthetic {
        let [h, w] = image_size;
        return Ok(DataSource::indexed(SyntheticDataset::new(
            d.synthetic_samples,
            w,
            h,
        )));
    }
    let kind = match d.kind {
        DataKind::Auto => DatasetKind::Auto,
        DataKind::Csv => DatasetKind::Csv,
        DataKind::Webdataset => DatasetKind::WebDataset,
        DataKind::Synthetic => unreachable!("handled above"),
    };
    let csv = CsvConfig::default()
        .with_keys(d.csv_caption_key.clone(), d.csv_img_key.clone())
        .with_separator(d.csv_separator.byte())
        .with_quoting(d.csv_quoting);
    let data = d.train_data.as_deref().expect("validated");
    DataSource::open(data, d.data_root.as_deref(), kind, &csv)
        .map_err(|e| TrainError::field("data.train_data", e))
}

/// The training loader for a student of shape `student`.
pub(super) fn build_loader(
    config: &RunConfig,
    student: &EncoderShape,
    source: DataSource,
    cache: Option<&TeacherCache>,
) -> Result<DataLoader, TrainError> {
    let d = &config.data;
    let transform = train_transform(config, student.image_size)?;
    // On several nodes each reads its own part of every epoch (its rows of each global batch,
    // or its shards): see `docs/distributed.md`.
    let nodes = config.run.num_nodes;
    let split = Split::new(config.run.node_rank, nodes)
        .map_err(|e| TrainError::field("run.node_rank", e))?;
    if let DataSource::WebDataset(ds) = &source
        && ds.shards().len() < nodes
    {
        return Err(TrainError::config(
            "data.train_data",
            format!(
                "{} webdataset shards for {nodes} nodes (run.num_nodes): each node reads its own \
                 shards, so there must be at least one per node",
                ds.shards().len()
            ),
        ));
    }
    let pool = augmentation_pool(config, cache)?;
    let loader_config = LoaderConfig::train(d.batch_size / nodes)
        .with_split(split)
        .with_pool(pool)
        .with_workers(d.workers)
        .with_prefetch(d.prefetch)
        .with_seed(config.run.seed)
        .with_context_length(student.context_length)
        .with_shuffle_buffer(d.shuffle_buffer);
    Ok(DataLoader::new(
        source,
        transform,
        Tokenizer::new(),
        loader_config,
    )?)
}

/// The crops' pool: a teacher cache's (the config may only name the same), or
/// `data.augmentation_pool` crops drawn with `data.augmentation_seed` (default `run.seed`).
fn augmentation_pool(
    config: &RunConfig,
    cache: Option<&TeacherCache>,
) -> Result<Option<AugmentationPool>, TrainError> {
    let d = &config.data;
    let configured = (d.augmentation_pool > 0).then(|| {
        AugmentationPool::new(
            d.augmentation_pool,
            d.augmentation_seed.unwrap_or(config.run.seed),
        )
    });
    let Some(cache) = cache else {
        return Ok(configured);
    };
    let pool = cache.pool();
    if d.augmentation_pool > 0 && d.augmentation_pool != pool.size
        || d.augmentation_seed.is_some_and(|s| s != pool.seed)
    {
        return Err(TrainError::config(
            "data.augmentation_pool",
            format!(
                "the teacher cache holds {} crops per sample drawn with seed {}; leave \
                 data.augmentation_pool and data.augmentation_seed unset or give those",
                pool.size, pool.seed
            ),
        ));
    }
    Ok(Some(pool))
}

/// The training images' transform of `[data]` for a model input of `image_size`
/// (`[height, width]`).
pub(crate) fn train_transform(
    config: &RunConfig,
    image_size: [usize; 2],
) -> Result<ImageTransform, TrainError> {
    let d = &config.data;
    let [h, w] = image_size;
    Ok(ImageTransform::new(
        TransformConfig::default()
            .with_size(h, w)
            .with_mean_std(d.mean, d.std)
            .with_crop_scale(d.crop_scale[0], d.crop_scale[1]),
    )?)
}

/// Optimizer steps per epoch and in total.
pub(super) fn schedule_length(
    config: &RunConfig,
    loader: &DataLoader,
) -> Result<(u64, u64), TrainError> {
    let d = &config.data;
    let batches = match loader.batches_per_epoch() {
        Some(b) => b,
        None => match d.train_num_samples {
            Some(n) => n / d.batch_size as u64,
            None => {
                return Err(TrainError::config(
                    "data.train_num_samples",
                    "required for webdataset shards (their length is unknown until read): \
                     the number of samples in one epoch",
                ));
            }
        },
    };
    let k = config.optim.grad_accum as u64;
    let steps_per_epoch = batches / k;
    if steps_per_epoch == 0 {
        let samples = loader
            .source()
            .known_len()
            .map_or_else(|| "too few".to_string(), |n| n.to_string());
        return Err(TrainError::config(
            "data.batch_size",
            format!(
                "the data has {samples} samples, fewer than one optimizer step's \
                 data.batch_size x optim.grad_accum = {} x {k}",
                d.batch_size
            ),
        ));
    }
    let total = steps_per_epoch
        .checked_mul(config.optim.epochs)
        .filter(|&t| t < 1 << 53)
        .ok_or_else(|| {
            TrainError::config(
                "optim.epochs",
                format!(
                    "{} epochs of {steps_per_epoch} steps is more optimizer steps than can be \
                     counted",
                    config.optim.epochs
                ),
            )
        })?;
    Ok((steps_per_epoch, total))
}

/// How many samples [`check_data`] reads before any model is built.
const PROBE_SAMPLES: usize = 32;

/// Reads a sample of the data before any model is built: data of which nothing can be used
/// (a wrong data root, every image corrupt) fails here, naming the first files. Also checks
/// the lines dropped while reading the data files against `data.max_skipped_fraction`.
/// Returns those dropped lines; notes go to `warnings`.
pub(super) fn check_data(
    config: &RunConfig,
    loader: &DataLoader,
    warnings: &mut Vec<String>,
) -> Result<SkipReport, TrainError> {
    let limit = config.data.max_skipped_fraction;
    let source = loader.source();
    let read_skips = source.read_skips();
    let dropped = read_skips.total();
    if dropped > 0 {
        let rows = source.known_len().unwrap_or(0) as u64;
        let seen = rows + dropped;
        let fraction = dropped as f64 / seen as f64;
        if fraction > limit {
            return Err(TrainError::TooManySkipped {
                skipped: dropped,
                seen,
                fraction: 100.0 * fraction,
                limit,
                report: skip_details(&read_skips),
            });
        }
        warnings.push(format!(
            "{dropped} of {seen} data lines dropped while reading: {}",
            skip_details(&read_skips)
        ));
    }
    let probe = source.probe(PROBE_SAMPLES, loader.transform());
    if probe.checked > 0 && probe.usable == 0 {
        return Err(TrainError::NoUsableData {
            what: format!(
                "none of the {} samples read to check the data could be used: {} (check \
                 data.train_data and data.data_root)",
                probe.checked,
                skip_details(&probe.skipped)
            ),
        });
    }
    if probe.usable < probe.checked {
        warnings.push(format!(
            "{} of {} samples read to check the data are unusable: {}",
            probe.checked - probe.usable,
            probe.checked,
            skip_details(&probe.skipped)
        ));
    }
    Ok(read_skips)
}

/// `12 (missing_file 10, corrupt_image 2)`.
pub(super) fn skip_counts(report: &SkipReport) -> String {
    let by: Vec<String> = report
        .counts
        .iter()
        .map(|(reason, n)| format!("{reason} {n}"))
        .collect();
    format!("{} ({})", report.total(), by.join(", "))
}

/// The counts by cause and the first example of each cause, on one line.
pub fn skip_details(report: &SkipReport) -> String {
    let first: Vec<String> = report
        .counts
        .keys()
        .filter_map(|reason| report.examples.iter().find(|e| e.reason == *reason))
        .map(ToString::to_string)
        .collect();
    if first.is_empty() {
        skip_counts(report)
    } else {
        format!("{}; first: {}", skip_counts(report), first.join("; "))
    }
}

/// A batch of the loader as device tensors (with the teacher's stored outputs for its rows,
/// when training from a teacher cache).
pub fn micro_batch<B: Backend>(
    batch: &Batch,
    teacher: Option<&HostTeacher>,
    device: &B::Device,
) -> Result<MicroBatch<B>, TrainError> {
    Ok(host_rows(batch, teacher, 0, batch.len())?.into_device(device))
}

/// The teacher's stored outputs for the rows of a batch, in host memory (see
/// [`crate::step::TeacherOutputs`]).
#[derive(Debug, Clone, PartialEq)]
pub struct HostTeacher {
    /// `[N, D]` raw image embeddings, row-major.
    pub image: Vec<f32>,
    /// `[N, D]` raw text embeddings, row-major.
    pub text: Vec<f32>,
    /// The embedding width `D`.
    pub dim: usize,
    /// The teacher's logit-scale parameter `ln s`.
    pub log_logit_scale: f32,
}

impl HostTeacher {
    /// Rows `from .. from + len`, as tensor data.
    fn rows(&self, from: usize, len: usize) -> (TensorData, TensorData, TensorData) {
        let d = self.dim;
        let part = |v: &[f32]| TensorData::new(v[from * d..(from + len) * d].to_vec(), [len, d]);
        (
            part(&self.image),
            part(&self.text),
            TensorData::new(vec![self.log_logit_scale], [1]),
        )
    }
}

/// Rows of a batch in host memory, ready to become a [`MicroBatch`] on any device (a peer's
/// share of a global batch travels to its thread in this form).
#[derive(Debug, Clone)]
pub(crate) struct HostMicroBatch {
    images: TensorData,
    tokens: TensorData,
    /// Stored teacher outputs: image, text, log logit scale.
    teacher: Option<(TensorData, TensorData, TensorData)>,
}

impl HostMicroBatch {
    /// The rows as tensors on `device`.
    pub(crate) fn into_device<B: Backend>(self, device: &B::Device) -> MicroBatch<B> {
        let batch = MicroBatch::new(
            Tensor::<B, 4>::from_data(self.images, device),
            Tensor::<B, 2, Int>::from_data(self.tokens, device),
        );
        match self.teacher {
            None => batch,
            Some((image, text, scale)) => batch.with_teacher(TeacherOutputs {
                image: Tensor::from_data(image, device),
                text: Tensor::from_data(text, device),
                log_logit_scale: Tensor::from_data(scale, device),
            }),
        }
    }
}

/// Rows `from .. from + len` of `batch` (one caption per image, as training needs), with those
/// of the teacher's stored outputs for it.
pub(crate) fn host_rows(
    batch: &Batch,
    teacher: Option<&HostTeacher>,
    from: usize,
    len: usize,
) -> Result<HostMicroBatch, TrainError> {
    if batch.num_texts() != batch.len() {
        return Err(TrainError::Data(clipkd_data::DataError::DatasetSpec {
            what: format!(
                "training needs one caption per image; a batch has {} images and {} captions",
                batch.len(),
                batch.num_texts()
            ),
        }));
    }
    assert!(
        from + len <= batch.len(),
        "rows {from}..{} of a batch of {}",
        from + len,
        batch.len()
    );
    let [_, c, h, w] = batch.images_shape();
    let pixels = c * h * w;
    let context = batch.context_length;
    let images = batch.images[from * pixels..(from + len) * pixels].to_vec();
    let tokens: Vec<i64> = batch.tokens[from * context..(from + len) * context]
        .iter()
        .map(|&t| i64::from(t))
        .collect();
    Ok(HostMicroBatch {
        images: TensorData::new(images, [len, c, h, w]),
        tokens: TensorData::new(tokens, [len, context]),
        teacher: teacher.map(|t| t.rows(from, len)),
    })
}
