//! `manifest.json`: what a teacher cache holds and what it was built from.

use std::path::{Path, PathBuf};

use clipkd_data::loader::AugmentationPool;
use clipkd_models::ClipConfig;
use serde::{Deserialize, Serialize};

use crate::error::TrainError;

/// The manifest's file name in a cache directory.
pub const MANIFEST: &str = "manifest.json";

/// The format version this build writes and reads.
pub const FORMAT: u32 = 1;

/// How embeddings are stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum CacheDtype {
    /// 2 bytes a value (IEEE half precision; about 3 significant digits).
    F16,
    /// 4 bytes a value: the teacher's outputs exactly.
    #[default]
    F32,
}

impl CacheDtype {
    /// Bytes per stored value.
    pub fn size(self) -> usize {
        match self {
            CacheDtype::F16 => 2,
            CacheDtype::F32 => 4,
        }
    }
}

impl std::str::FromStr for CacheDtype {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "f16" => Ok(CacheDtype::F16),
            "f32" => Ok(CacheDtype::F32),
            other => Err(format!("`{other}` is not a cache dtype (f16, f32)")),
        }
    }
}

/// The teacher a cache was built with: enough to refuse another teacher or preprocessing.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TeacherIdentity {
    /// How the run config named the architecture (`ViT-B-16`, a JSON file).
    pub model: String,
    /// Its open_clip model config.
    pub config: ClipConfig,
    /// The weights file as given.
    pub weights: PathBuf,
    /// `crc32:XXXXXXXX:BYTES` of the weights file.
    pub weights_hash: String,
    /// The teacher's logit-scale parameter `ln s`.
    pub log_logit_scale: f32,
}

/// The preprocessing the stored crops were cut with (the student must use the same).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Preprocessing {
    /// `[height, width]` of the model input.
    pub image_size: [usize; 2],
    /// Normalization mean and std.
    pub mean: [f64; 3],
    /// Normalization std.
    pub std: [f64; 3],
    /// RandomResizedCrop's area fraction range.
    pub crop_scale: [f64; 2],
    /// Tokens per caption.
    pub context_length: usize,
}

/// The data a cache covers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CachedData {
    /// `data.train_data` as given.
    pub train_data: String,
    /// `data.data_root` as given.
    pub data_root: Option<String>,
    /// Rows of indexed data (0 for webdataset shards).
    pub rows: u64,
    /// Webdataset: the shards' file names, in order (their samples' ids are
    /// `(shard << 32) | sample`); empty for indexed data.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub shards: Vec<String>,
}

impl CachedData {
    /// One past the last sample id the cache covers: the rows, or `shards << 32`.
    pub fn id_end(&self) -> u64 {
        if self.shards.is_empty() {
            self.rows
        } else {
            (self.shards.len() as u64) << 32
        }
    }
}

/// The file names of a webdataset's shards (what a cache records of them).
pub(super) fn shard_names(ds: &clipkd_data::dataset::WebDataset) -> Vec<String> {
    ds.shards()
        .iter()
        .map(|p| {
            p.file_name()
                .map_or_else(|| p.to_string_lossy(), |n| n.to_string_lossy())
                .into_owned()
        })
        .collect()
}

/// One file of stored embeddings: the samples with ids `first .. end` (rows of indexed data,
/// or one webdataset shard's `(shard << 32) ..`), less those that could not be used.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardEntry {
    /// File name in the cache directory.
    pub file: String,
    /// The first sample id covered.
    pub first: u64,
    /// One past the last sample id covered.
    pub end: u64,
    /// Samples stored.
    pub samples: u64,
}

/// A teacher cache's `manifest.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CacheManifest {
    /// [`FORMAT`].
    pub format: u32,
    /// The clipkd version that built it.
    pub clipkd_version: String,
    /// The teacher.
    pub teacher: TeacherIdentity,
    /// The preprocessing.
    pub preprocessing: Preprocessing,
    /// The data.
    pub data: CachedData,
    /// The crops stored per sample (the training loader draws from the same pool).
    pub pool: AugmentationPool,
    /// How embeddings are stored.
    pub dtype: CacheDtype,
    /// The teacher's embedding width.
    pub embed_dim: usize,
    /// Rows of indexed data per shard (webdataset: one cache shard per tar shard).
    pub shard_rows: u64,
    /// The shards written so far, in row order.
    pub shards: Vec<ShardEntry>,
    /// Whether every row of the data has its shard.
    pub complete: bool,
}

impl CacheManifest {
    /// Reads `dir/manifest.json`.
    pub fn read(dir: &Path) -> Result<Self, TrainError> {
        let path = dir.join(MANIFEST);
        let text =
            std::fs::read_to_string(&path).map_err(|e| TrainError::io("reading", &path, e))?;
        let manifest: CacheManifest =
            serde_json::from_str(&text).map_err(|e| TrainError::TeacherCache {
                path: path.clone(),
                what: format!("not a teacher-cache manifest: {e}"),
            })?;
        if manifest.format != FORMAT {
            return Err(TrainError::TeacherCache {
                path,
                what: format!(
                    "format {} (this clipkd reads format {FORMAT}): rebuild the cache",
                    manifest.format
                ),
            });
        }
        Ok(manifest)
    }

    /// Writes `dir/manifest.json` atomically (a temporary file, flushed, renamed over it).
    pub fn write(&self, dir: &Path) -> Result<(), TrainError> {
        let json = serde_json::to_string_pretty(self).expect("a manifest serializes");
        crate::atomic_write::write_atomic(&dir.join(MANIFEST), json.as_bytes())
    }

    /// What of `other` differs from this manifest in what a build is made of (the teacher,
    /// preprocessing, data, pool, dtype, shard size), by name; empty when the same.
    pub fn differs_from(&self, other: &CacheManifest) -> Vec<&'static str> {
        let mut out = Vec::new();
        if self.teacher != other.teacher {
            out.push("teacher");
        }
        if self.preprocessing != other.preprocessing {
            out.push("preprocessing (image size, mean/std, crop scale, context length)");
        }
        if self.data != other.data {
            out.push("data");
        }
        if self.pool != other.pool {
            out.push("number of augmentations or seed");
        }
        if self.dtype != other.dtype {
            out.push("dtype");
        }
        if self.shard_rows != other.shard_rows || self.embed_dim != other.embed_dim {
            out.push("shard size");
        }
        out
    }

    /// Bytes stored per sample: the embeddings of every crop, the eval view and the caption,
    /// each crop's box (4 x i64), the id and two hashes (3 x i64).
    pub fn bytes_per_sample(&self) -> usize {
        (self.pool.size as usize + 2) * self.embed_dim * self.dtype.size()
            + self.pool.size as usize * 32
            + 24
    }
}

/// `crc32:XXXXXXXX:BYTES` of a file (the teacher's weights).
pub(super) fn file_hash(path: &Path) -> Result<String, TrainError> {
    use std::io::Read;
    let mut f = std::fs::File::open(path).map_err(|e| TrainError::io("opening", path, e))?;
    let mut hasher = crc32fast::Hasher::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut total = 0u64;
    loop {
        let n = f
            .read(&mut buf)
            .map_err(|e| TrainError::io("reading", path, e))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        total += n as u64;
    }
    Ok(format!("crc32:{:08x}:{total}", hasher.finalize()))
}
