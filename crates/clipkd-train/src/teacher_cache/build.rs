//! Building a teacher cache: the teacher over every sample, once per crop of the pool and once
//! for the eval view and the caption, written shard by shard.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use burn::tensor::Tensor;
use burn::tensor::backend::Backend;
use clipkd_data::dataset::{DataSource, IndexedDataset, SampleRef, WebDataset};
use clipkd_data::loader::{AugmentationPool, DataLoader, LoaderConfig, Mode};
use clipkd_data::tokenizer::Tokenizer;
use clipkd_models::autocast::autocast;
use clipkd_models::{ClipEncoder, load_open_clip};

use super::manifest::{
    CacheDtype, CacheManifest, CachedData, FORMAT, Preprocessing, ShardEntry, TeacherIdentity,
    file_hash,
};
use super::shard::{ShardRows, write_shard};
use crate::config::{RunConfig, fnv1a};
use crate::error::TrainError;
use crate::trainer::data::{micro_batch, open_data, train_transform};

/// How to build a teacher cache.
#[derive(Debug, Clone, PartialEq)]
pub struct CacheOptions {
    /// The cache directory (created; a partial build there is continued).
    pub dir: PathBuf,
    /// Crops stored per sample (`K`).
    pub augmentations: u64,
    /// How embeddings are stored.
    pub dtype: CacheDtype,
    /// Dataset rows per shard file.
    pub shard_rows: u64,
    /// Images per teacher forward.
    pub batch_size: usize,
}

impl CacheOptions {
    /// `augmentations` crops per sample into `dir`, f32, 4096 rows per shard, batches of 64.
    pub fn new(dir: impl Into<PathBuf>, augmentations: u64) -> Self {
        CacheOptions {
            dir: dir.into(),
            augmentations,
            dtype: CacheDtype::F32,
            shard_rows: 4096,
            batch_size: 64,
        }
    }
}

/// What a build did.
#[derive(Debug, Clone, PartialEq)]
pub struct CacheBuildSummary {
    /// The manifest as written.
    pub manifest: CacheManifest,
    /// Shards written by this call (the others were there from an interrupted build).
    pub shards_written: usize,
    /// Samples stored by this call.
    pub samples_written: u64,
    /// Samples of this call's rows that could not be used (not stored; training skips them
    /// too).
    pub skipped: u64,
    /// Seconds this call took.
    pub seconds: f64,
}

/// Rows `first .. end` of a dataset, keeping their ids (and so their crops).
#[derive(Debug)]
struct RowRange {
    inner: Arc<dyn IndexedDataset>,
    first: usize,
    end: usize,
}

impl IndexedDataset for RowRange {
    fn len(&self) -> usize {
        self.end - self.first
    }

    fn sample(&self, index: usize) -> SampleRef {
        self.inner.sample(self.first + index)
    }
}

/// What the teacher gives for one sample, and what identifies the sample.
#[derive(Debug, Default)]
struct SampleOutputs {
    crops: Vec<Option<(Vec<f32>, [i64; 4])>>,
    eval_image: Vec<f32>,
    text: Vec<f32>,
    key_hash: u64,
    caption_hash: u64,
}

/// The parts of the data a cache is built in, one shard file each: ranges of rows of an
/// indexed dataset, or the tar shards of a webdataset (ids `(shard << 32) | sample`).
enum Units {
    Rows {
        dataset: Arc<dyn IndexedDataset>,
        per_shard: u64,
    },
    Shards(Arc<WebDataset>),
}

impl Units {
    fn of(source: DataSource, per_shard: u64) -> Self {
        match source {
            DataSource::Indexed(dataset) => Units::Rows { dataset, per_shard },
            DataSource::WebDataset(ds) => Units::Shards(ds),
        }
    }

    /// Rows of indexed data (0 for webdataset shards).
    fn rows(&self) -> u64 {
        match self {
            Units::Rows { dataset, .. } => dataset.len() as u64,
            Units::Shards(_) => 0,
        }
    }

    /// The webdataset shards' file names (none for indexed data).
    fn shard_names(&self) -> Vec<String> {
        match self {
            Units::Rows { .. } => Vec::new(),
            Units::Shards(ds) => super::manifest::shard_names(ds),
        }
    }

    fn count(&self) -> u64 {
        match self {
            Units::Rows { dataset, per_shard } => (dataset.len() as u64).div_ceil(*per_shard),
            Units::Shards(ds) => ds.shards().len() as u64,
        }
    }

    /// Unit `u`'s data and the sample ids it covers, `first .. end`.
    fn unit(&self, u: u64) -> (DataSource, u64, u64) {
        match self {
            Units::Rows { dataset, per_shard } => {
                let first = u * per_shard;
                let end = (first + per_shard).min(dataset.len() as u64);
                let range = RowRange {
                    inner: dataset.clone(),
                    first: first as usize,
                    end: end as usize,
                };
                (DataSource::indexed(range), first, end)
            }
            Units::Shards(ds) => (
                DataSource::WebDataset(Arc::new(ds.shard(u as usize))),
                u << 32,
                (u + 1) << 32,
            ),
        }
    }
}

/// Builds (or continues) the teacher cache of `config`'s teacher (`[teacher]`: model and
/// weights) over `config`'s training data (`[data]`: CSV files, webdataset shards) on
/// `device`: for every sample, the teacher's raw image embedding of each of the
/// `options.augmentations` crops of the pool seeded `run.seed` (crop `k` is the crop the
/// training loader draws in epoch `k` with that seed), of the eval view, and of its caption;
/// with the crops and the teacher's logit scale. The teacher runs in the run's precision.
/// One cache shard per `options.shard_rows` rows of indexed data, or per webdataset tar shard.
/// Shards are written atomically, then the manifest: a build killed at any point continues
/// from its last shard when called again with the same config and options. `progress` is
/// called after each shard with the cache shards done and in all.
///
/// # Errors
/// A teacher or data that cannot be loaded; a directory holding a cache of another teacher,
/// data or options; I/O.
pub fn build_teacher_cache<B: Backend>(
    config: &RunConfig,
    options: &CacheOptions,
    device: &B::Device,
    progress: impl FnMut(u64, u64),
) -> Result<CacheBuildSummary, TrainError> {
    build_teacher_cache_of::<B>(config, None, options, device, progress)
}

/// [`build_teacher_cache`] over `data` instead of the config's `[data]` files (an in-memory
/// dataset in tests or research code; the config's crop scale and mean/std still apply).
/// Training from the cache must then use the same data (`PreparedRun::with_data`).
pub fn build_teacher_cache_of<B: Backend>(
    config: &RunConfig,
    data: Option<DataSource>,
    options: &CacheOptions,
    device: &B::Device,
    mut progress: impl FnMut(u64, u64),
) -> Result<CacheBuildSummary, TrainError> {
    let start = Instant::now();
    if options.augmentations == 0 || options.shard_rows == 0 || options.batch_size == 0 {
        return Err(TrainError::config(
            "teacher cache",
            "augmentations, rows per shard and batch size must be at least 1",
        ));
    }
    let teacher_config = config.teacher.architecture()?;
    let weights = config.teacher.weights_file()?.ok_or_else(|| {
        TrainError::config(
            "teacher.weights",
            "the teacher's weights are needed to build a cache: a file, or a pretrained tag in \
             teacher.pretrained",
        )
    })?;
    let teacher = load_open_clip::<B>(&weights.path, &teacher_config, device)
        .map_err(|e| TrainError::field(weights.field, e))?;
    let weights = weights.path;
    let shape = teacher.shape();
    let source = match data {
        Some(data) => data,
        None => open_data(config, shape.image_size)?,
    };
    let units = Units::of(source, options.shard_rows);
    let d = &config.data;
    let log_logit_scale = teacher
        .logit_scale()
        .into_data()
        .convert::<f32>()
        .to_vec::<f32>()
        .map_err(|e| TrainError::config("teacher", format!("{e:?}")))?[0];
    let wanted = CacheManifest {
        format: FORMAT,
        clipkd_version: env!("CARGO_PKG_VERSION").to_string(),
        teacher: TeacherIdentity {
            model: config.teacher.model.to_string(),
            config: teacher_config.clone(),
            weights: weights.clone(),
            weights_hash: file_hash(&weights)?,
            log_logit_scale,
        },
        preprocessing: Preprocessing {
            image_size: shape.image_size,
            mean: d.mean,
            std: d.std,
            crop_scale: d.crop_scale,
            context_length: shape.context_length,
        },
        data: CachedData {
            train_data: d.train_data.clone().unwrap_or_default(),
            data_root: d.data_root.clone(),
            rows: units.rows(),
            shards: units.shard_names(),
        },
        pool: AugmentationPool::new(options.augmentations, config.run.seed),
        dtype: options.dtype,
        embed_dim: shape.embed_dim,
        shard_rows: options.shard_rows,
        shards: Vec::new(),
        complete: false,
    };
    let dir = &options.dir;
    let mut manifest = if dir.join(super::manifest::MANIFEST).exists() {
        let found = CacheManifest::read(dir)?;
        let differs = found.differs_from(&wanted);
        if !differs.is_empty() {
            return Err(TrainError::TeacherCache {
                path: dir.clone(),
                what: format!(
                    "holds a cache built with another {}: use another directory, or the same \
                     config and options to continue it",
                    differs.join(", ")
                ),
            });
        }
        found
    } else {
        crate::fault::point("create", dir);
        std::fs::create_dir_all(dir).map_err(|e| TrainError::io("creating", dir, e))?;
        wanted.write(dir)?;
        wanted
    };
    let transform = train_transform(config, shape.image_size)?;
    let mut summary = CacheBuildSummary {
        manifest: manifest.clone(),
        shards_written: 0,
        samples_written: 0,
        skipped: 0,
        seconds: 0.0,
    };
    let precision = config.run.precision.autocast();
    let total = units.count();
    progress(manifest.shards.len() as u64, total);
    for unit in manifest.shards.len() as u64..total {
        let (range, first, end) = units.unit(unit);
        let loader = |config: LoaderConfig| {
            DataLoader::new(range.clone(), transform.clone(), Tokenizer::new(), config)
        };
        let base = LoaderConfig::train(options.batch_size)
            .with_shuffle(false)
            .with_drop_last(false)
            .with_seed(config.run.seed)
            .with_workers(d.workers)
            .with_context_length(shape.context_length);
        let mut outputs: BTreeMap<u64, SampleOutputs> = BTreeMap::new();
        let k_all = options.augmentations as usize;
        // The eval view and the caption.
        let mut batches = loader(base.clone().with_mode(Mode::Eval))?.epoch(0)?;
        for batch in &mut batches {
            let batch = batch?;
            let inputs = micro_batch::<B>(&batch, None, device)?;
            let _scope = autocast(precision);
            let images = rows(teacher.encode_image(inputs.images)?)?;
            let texts = rows(teacher.encode_text(inputs.tokens)?)?;
            for (i, (eval_image, text)) in images.into_iter().zip(texts).enumerate() {
                outputs.insert(
                    batch.ids[i],
                    SampleOutputs {
                        crops: vec![None; k_all],
                        eval_image,
                        text,
                        key_hash: fnv1a(batch.keys[i].as_bytes()),
                        caption_hash: fnv1a(batch.captions[i].as_bytes()),
                    },
                );
            }
        }
        summary.skipped += batches.skipped().total();
        drop(batches);
        // Crop k of every sample is the crop of training epoch k (shuffling does not change
        // a sample's crop).
        for k in 0..k_all {
            for batch in loader(base.clone())?.epoch(k as u64)? {
                let batch = batch?;
                let inputs = micro_batch::<B>(&batch, None, device)?;
                let images = {
                    let _scope = autocast(precision);
                    rows(teacher.encode_image(inputs.images)?)?
                };
                for (i, image) in images.into_iter().enumerate() {
                    let id = batch.ids[i];
                    let crop = batch.augmentations[i].1;
                    let boxed = [crop.top, crop.left, crop.height, crop.width].map(|v| v as i64);
                    let slot = outputs.get_mut(&id).and_then(|o| o.crops.get_mut(k));
                    match slot {
                        Some(slot) => *slot = Some((image, boxed)),
                        None => {
                            return Err(TrainError::TeacherCache {
                                path: dir.clone(),
                                what: format!(
                                    "sample {id} ({}) could be read for crop {k} but not for \
                                     its eval view: did the data change during the build?",
                                    batch.keys[i]
                                ),
                            });
                        }
                    }
                }
            }
        }
        let mut shard = ShardRows::default();
        for (id, out) in outputs {
            shard.ids.push(id);
            shard.key_hash.push(out.key_hash);
            shard.caption_hash.push(out.caption_hash);
            for (k, crop) in out.crops.into_iter().enumerate() {
                let (image, boxed) = crop.ok_or_else(|| TrainError::TeacherCache {
                    path: dir.clone(),
                    what: format!(
                        "sample {id} has an eval view but could not be read for crop {k}: did \
                         the data change during the build?"
                    ),
                })?;
                shard.image.extend(image);
                shard.crops.extend(boxed);
            }
            shard.eval_image.extend(out.eval_image);
            shard.text.extend(out.text);
        }
        let file = format!("shard-{unit:06}.safetensors");
        write_shard(
            &dir.join(&file),
            &shard,
            k_all,
            shape.embed_dim,
            options.dtype,
        )?;
        let samples = shard.ids.len() as u64;
        manifest.shards.push(ShardEntry {
            file,
            first,
            end,
            samples,
        });
        manifest.complete = unit + 1 == total;
        manifest.write(dir)?;
        summary.shards_written += 1;
        summary.samples_written += samples;
        progress(unit + 1, total);
    }
    if !manifest.complete {
        manifest.complete = true;
        manifest.write(dir)?;
    }
    summary.manifest = manifest;
    summary.seconds = start.elapsed().as_secs_f64();
    Ok(summary)
}

/// The rows of a `[n, D]` tensor of embeddings, as host vectors.
fn rows<B: Backend>(t: Tensor<B, 2>) -> Result<Vec<Vec<f32>>, TrainError> {
    let [_, dim] = t.dims();
    let v = t
        .into_data()
        .convert::<f32>()
        .to_vec::<f32>()
        .map_err(|e| TrainError::config("teacher", format!("{e:?}")))?;
    Ok(v.chunks(dim).map(<[f32]>::to_vec).collect())
}
