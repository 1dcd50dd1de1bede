//! A built teacher cache, opened for training.

use std::path::{Path, PathBuf};

use clipkd_data::dataset::DataSource;
use clipkd_data::loader::{AugmentationPool, Batch};
use clipkd_models::EncoderShape;

use super::manifest::{CacheManifest, file_hash};
use super::shard::MappedShard;
use crate::config::{RunConfig, fnv1a};
use crate::error::TrainError;
use crate::trainer::data::HostTeacher;

/// A complete teacher cache, every shard memory-mapped: what training reads instead of running
/// the teacher. Cheap to share between threads (`Arc`).
#[derive(Debug)]
pub struct TeacherCache {
    dir: PathBuf,
    manifest: CacheManifest,
    shards: Vec<MappedShard>,
}

impl TeacherCache {
    /// Opens the cache in `dir`. Errors: no manifest, an incomplete build, a shard missing or
    /// not matching the manifest.
    pub fn open(dir: &Path) -> Result<Self, TrainError> {
        let manifest = CacheManifest::read(dir)?;
        let bad = |what: String| TrainError::TeacherCache {
            path: dir.to_path_buf(),
            what,
        };
        if !manifest.complete {
            let (done, all, unit) = match manifest.data.shards.len() {
                0 => (
                    manifest.shards.last().map_or(0, |s| s.end),
                    manifest.data.rows,
                    "rows",
                ),
                n => (manifest.shards.len() as u64, n as u64, "shards"),
            };
            return Err(bad(format!(
                "the build is incomplete ({done} of {all} {unit}): run `clipkd teacher-cache` \
                 again with the same config and options to finish it"
            )));
        }
        let mut shards = Vec::with_capacity(manifest.shards.len());
        let mut next = 0;
        for entry in &manifest.shards {
            if entry.first != next {
                return Err(bad(format!(
                    "shard {} starts at row {}, but the previous one ends at row {next}",
                    entry.file, entry.first
                )));
            }
            next = entry.end;
            shards.push(MappedShard::open(
                &dir.join(&entry.file),
                entry.samples as usize,
                manifest.pool.size as usize,
                manifest.embed_dim,
                manifest.dtype,
            )?);
        }
        if next != manifest.data.id_end() {
            return Err(bad(format!(
                "the shards cover sample ids 0..{next} of 0..{}",
                manifest.data.id_end()
            )));
        }
        Ok(TeacherCache {
            dir: dir.to_path_buf(),
            manifest,
            shards,
        })
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The manifest.
    pub fn manifest(&self) -> &CacheManifest {
        &self.manifest
    }

    /// The crops stored per sample: training draws from the same pool.
    pub fn pool(&self) -> AugmentationPool {
        self.manifest.pool
    }

    /// The teacher's shape, from its recorded config.
    pub fn teacher_shape(&self) -> EncoderShape {
        self.manifest.teacher.config.encoder_shape()
    }

    /// The shard holding dataset row `id`, and the sample's row in it.
    fn locate(&self, id: u64) -> Option<(&MappedShard, Option<usize>)> {
        let i = self.manifest.shards.partition_point(|s| s.end <= id);
        let shard = self.shards.get(i)?;
        Some((shard, shard.row(id)))
    }

    /// Checks that the cache fits a run's config: the preprocessing the student's data uses
    /// (image size, mean/std, crop scale, context length) and the teacher the config names
    /// (when it names weights).
    pub fn check_config(
        &self,
        config: &RunConfig,
        student: &EncoderShape,
    ) -> Result<(), TrainError> {
        let m = &self.manifest;
        let bad = |what: String| TrainError::TeacherCache {
            path: self.dir.clone(),
            what,
        };
        let p = &m.preprocessing;
        let d = &config.data;
        let mut differ = Vec::new();
        if p.image_size != student.image_size {
            differ.push(format!(
                "image size {:?} (the student's is {:?})",
                p.image_size, student.image_size
            ));
        }
        if p.mean != d.mean || p.std != d.std {
            differ.push(format!(
                "mean/std {:?}/{:?} (data.mean/std: {:?}/{:?})",
                p.mean, p.std, d.mean, d.std
            ));
        }
        if p.crop_scale != d.crop_scale {
            differ.push(format!(
                "crop scale {:?} (data.crop_scale: {:?})",
                p.crop_scale, d.crop_scale
            ));
        }
        if p.context_length != student.context_length {
            differ.push(format!(
                "context length {} (the student's is {})",
                p.context_length, student.context_length
            ));
        }
        if !differ.is_empty() {
            return Err(bad(format!(
                "built with another preprocessing than this run's: {}",
                differ.join("; ")
            )));
        }
        // Named weights (a file, a tag, an `hf-hub:` model) must be the cache's teacher's.
        if let Some(weights) = config.teacher.weights_file()? {
            let hash = file_hash(&weights.path)?;
            if hash != m.teacher.weights_hash {
                return Err(bad(format!(
                    "built with the teacher weights {} ({}), but {} names {} ({hash})",
                    m.teacher.weights.display(),
                    m.teacher.weights_hash,
                    weights.field,
                    weights.path.display()
                )));
            }
            let model = config.teacher.architecture()?;
            if model != m.teacher.config {
                return Err(bad(format!(
                    "built with the teacher architecture `{}`, but teacher.model is `{}`",
                    m.teacher.model, config.teacher.model
                )));
            }
        }
        Ok(())
    }

    /// Checks that `data` is the data the cache was built from: for indexed data, that every
    /// row is the image and caption the cache stored there (by name and caption; rows absent
    /// from the cache, unusable when it was built, are counted into `warnings`, and training
    /// fails if one of them becomes readable); for webdataset shards, the shard files by name
    /// and order (their samples are checked, by name and caption, as batches read them).
    pub fn check_data(
        &self,
        data: &DataSource,
        warnings: &mut Vec<String>,
    ) -> Result<(), TrainError> {
        let m = &self.manifest;
        let bad = |what: String| TrainError::TeacherCache {
            path: self.dir.clone(),
            what,
        };
        let kind = |webdataset: bool| {
            if webdataset {
                "webdataset shards"
            } else {
                "indexed data"
            }
        };
        let ds = match data {
            DataSource::Indexed(ds) if m.data.shards.is_empty() => ds,
            DataSource::WebDataset(ds) if !m.data.shards.is_empty() => {
                let names = super::manifest::shard_names(ds);
                if names != m.data.shards {
                    let first = names
                        .iter()
                        .zip(&m.data.shards)
                        .position(|(a, b)| a != b)
                        .unwrap_or(names.len().min(m.data.shards.len()));
                    return Err(bad(format!(
                        "built from {} webdataset shards, this run's data has {}; they differ \
                         from shard #{first} ({} here, {} in the cache)",
                        m.data.shards.len(),
                        names.len(),
                        names.get(first).map_or("none", String::as_str),
                        m.data.shards.get(first).map_or("none", String::as_str),
                    )));
                }
                return Ok(());
            }
            _ => {
                return Err(bad(format!(
                    "built from {} (`{}`), but this run's data is {}",
                    kind(!m.data.shards.is_empty()),
                    m.data.train_data,
                    kind(matches!(data, DataSource::WebDataset(_)))
                )));
            }
        };
        if ds.len() as u64 != m.data.rows {
            return Err(bad(format!(
                "built from {} rows of data (`{}`), but this run's data has {}",
                m.data.rows,
                m.data.train_data,
                ds.len()
            )));
        }
        let mut absent = 0u64;
        for row in 0..ds.len() {
            let sample = ds.sample(row);
            let (shard, found) = self.locate(sample.id).expect("the shards cover every row");
            let Some(at) = found else {
                absent += 1;
                continue;
            };
            let caption = sample.captions.first().map_or("", String::as_str);
            if shard.key_hash[at] != fnv1a(sample.key.as_bytes()) {
                return Err(bad(format!(
                    "row {row} of the data is {}, not the image the cache stored there (built \
                     from {})",
                    sample.key, m.data.train_data
                )));
            }
            if shard.caption_hash[at] != fnv1a(caption.as_bytes()) {
                return Err(bad(format!(
                    "row {row} of the data ({}) has another caption than when the cache was \
                     built: `{caption}`",
                    sample.key
                )));
            }
        }
        if absent > 0 {
            warnings.push(format!(
                "{absent} rows of the data are not in the teacher cache {} (their images could \
                 not be used when it was built); training stops if one becomes readable",
                self.dir.display()
            ));
        }
        Ok(())
    }

    /// The teacher's stored outputs for the rows of `batch`: each row's crop (chosen from the
    /// pool by the loader) and its caption.
    ///
    /// # Errors
    /// A row not in the cache, a batch without crops (eval mode), or a crop other than the
    /// stored one (the loader's seed or transform differs from the build's).
    pub fn lookup(&self, batch: &Batch) -> Result<HostTeacher, TrainError> {
        let bad = |what: String| TrainError::TeacherCache {
            path: self.dir.clone(),
            what,
        };
        if batch.augmentations.len() != batch.len() {
            return Err(bad(
                "a batch without crops (eval transform) cannot be looked up".into(),
            ));
        }
        let dim = self.manifest.embed_dim;
        let mut image = Vec::with_capacity(batch.len() * dim);
        let mut text = Vec::with_capacity(batch.len() * dim);
        for (i, &id) in batch.ids.iter().enumerate() {
            let (k, crop) = batch.augmentations[i];
            let located = self.locate(id);
            let Some((shard, Some(row))) = located else {
                return Err(bad(format!(
                    "sample {id} ({}) is not in the cache: its image could not be used when the \
                     cache was built, but it can now",
                    batch.keys[i]
                )));
            };
            if k >= self.manifest.pool.size {
                return Err(bad(format!(
                    "crop {k} of sample {} asked, the cache holds {}",
                    batch.keys[i], self.manifest.pool.size
                )));
            }
            if shard.key_hash[row] != fnv1a(batch.keys[i].as_bytes())
                || shard.caption_hash[row] != fnv1a(batch.captions[i].as_bytes())
            {
                return Err(bad(format!(
                    "sample {id} of this run's data ({}) is not the image and caption the cache \
                     stored under that id: the data changed since the cache was built",
                    batch.keys[i]
                )));
            }
            let stored = shard.crop(row, k as usize);
            if stored != crop {
                return Err(bad(format!(
                    "sample {} was cropped {crop:?} for crop {k}, but the cache ({}) holds \
                     {stored:?}: the data loader's seed or transform differs from the build's",
                    batch.keys[i],
                    shard.path().display()
                )));
            }
            shard.image(row, k as usize, &mut image);
            shard.text(row, &mut text);
        }
        Ok(HostTeacher {
            image,
            text,
            dim,
            log_logit_scale: self.manifest.teacher.log_logit_scale,
        })
    }

    /// The stored eval-view image embeddings and caption embeddings of dataset rows `ids`
    /// (for analyses of the cache itself), row-major `[n, D]` each.
    pub fn eval_rows(&self, ids: &[u64]) -> Result<(Vec<f32>, Vec<f32>), TrainError> {
        let mut image = Vec::new();
        let mut text = Vec::new();
        for &id in ids {
            let Some((shard, Some(row))) = self.locate(id) else {
                return Err(TrainError::TeacherCache {
                    path: self.dir.clone(),
                    what: format!("sample {id} is not in the cache"),
                });
            };
            shard.eval_image(row, &mut image);
            shard.text(row, &mut text);
        }
        Ok((image, text))
    }
}
