//! One shard file of a teacher cache: a safetensors file of the stored rows.
//!
//! | tensor | shape | dtype |
//! |---|---|---|
//! | `ids` | `[n]` | I64: the samples' ids (dataset rows), ascending |
//! | `key_hash`, `caption_hash` | `[n]` | I64: FNV-1a of the sample's name and caption |
//! | `image` | `[n, K, D]` | F16/F32: raw image embeddings of the pool's crops |
//! | `crops` | `[n, K, 4]` | I64: each crop's top, left, height, width in image pixels |
//! | `eval_image` | `[n, D]` | F16/F32: raw image embedding of the eval view |
//! | `text` | `[n, D]` | F16/F32: raw text embedding of the caption |

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use clipkd_data::image::CropBox;
use memmap2::Mmap;
use safetensors::tensor::{Dtype, SafeTensors, TensorView};

use super::manifest::CacheDtype;
use crate::atomic_write::write_atomic;
use crate::error::TrainError;

/// A shard's rows in host memory, as the builder collects them.
#[derive(Debug, Default, Clone)]
pub(super) struct ShardRows {
    pub ids: Vec<u64>,
    pub key_hash: Vec<u64>,
    pub caption_hash: Vec<u64>,
    /// `[n, K, D]`.
    pub image: Vec<f32>,
    /// `[n, K, 4]`.
    pub crops: Vec<i64>,
    /// `[n, D]`.
    pub eval_image: Vec<f32>,
    /// `[n, D]`.
    pub text: Vec<f32>,
}

fn floats(values: &[f32], dtype: CacheDtype) -> Vec<u8> {
    match dtype {
        CacheDtype::F32 => values.iter().flat_map(|v| v.to_le_bytes()).collect(),
        CacheDtype::F16 => values
            .iter()
            .flat_map(|&v| half::f16::from_f32(v).to_le_bytes())
            .collect(),
    }
}

fn ints(values: &[u64]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

/// Writes `rows` (K crops of width `dim` each) to `path` atomically.
pub(super) fn write_shard(
    path: &Path,
    rows: &ShardRows,
    pool: usize,
    dim: usize,
    dtype: CacheDtype,
) -> Result<(), TrainError> {
    let n = rows.ids.len();
    let float_type = match dtype {
        CacheDtype::F16 => Dtype::F16,
        CacheDtype::F32 => Dtype::F32,
    };
    let crops: Vec<u64> = rows.crops.iter().map(|&v| v as u64).collect();
    let buffers: Vec<(&str, Dtype, Vec<usize>, Vec<u8>)> = vec![
        ("ids", Dtype::I64, vec![n], ints(&rows.ids)),
        ("key_hash", Dtype::I64, vec![n], ints(&rows.key_hash)),
        (
            "caption_hash",
            Dtype::I64,
            vec![n],
            ints(&rows.caption_hash),
        ),
        (
            "image",
            float_type,
            vec![n, pool, dim],
            floats(&rows.image, dtype),
        ),
        ("crops", Dtype::I64, vec![n, pool, 4], ints(&crops)),
        (
            "eval_image",
            float_type,
            vec![n, dim],
            floats(&rows.eval_image, dtype),
        ),
        ("text", float_type, vec![n, dim], floats(&rows.text, dtype)),
    ];
    let views = buffers
        .iter()
        .map(|(name, dtype, shape, bytes)| {
            TensorView::new(*dtype, shape.clone(), bytes).map(|v| (*name, v))
        })
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TrainError::TeacherCache {
            path: path.to_path_buf(),
            what: format!("cannot lay out the shard: {e}"),
        })?;
    let bytes = safetensors::serialize(views, None).map_err(|e| TrainError::TeacherCache {
        path: path.to_path_buf(),
        what: format!("cannot serialize the shard: {e}"),
    })?;
    write_atomic(path, &bytes)
}

/// Where a tensor's bytes lie in a mapped shard.
#[derive(Debug, Clone, Copy)]
struct Region {
    start: usize,
    end: usize,
}

/// A shard file, memory-mapped: the ids in memory, embeddings read row by row.
#[derive(Debug)]
pub(super) struct MappedShard {
    path: PathBuf,
    map: Mmap,
    pub ids: Vec<u64>,
    pub key_hash: Vec<u64>,
    pub caption_hash: Vec<u64>,
    image: Region,
    crops: Region,
    eval_image: Region,
    text: Region,
    dtype: CacheDtype,
    pool: usize,
    dim: usize,
}

impl MappedShard {
    /// Maps `path` and checks that it holds the tensors of a shard of `pool` crops of width
    /// `dim` in `dtype`, with `samples` rows.
    pub(super) fn open(
        path: &Path,
        samples: usize,
        pool: usize,
        dim: usize,
        dtype: CacheDtype,
    ) -> Result<Self, TrainError> {
        let bad = |what: String| TrainError::TeacherCache {
            path: path.to_path_buf(),
            what,
        };
        let file = std::fs::File::open(path).map_err(|e| TrainError::io("opening", path, e))?;
        // SAFETY: shard files are written once, through a temporary file renamed into place,
        // and never modified; a cache must not be rebuilt in place while a run reads it.
        let map = unsafe { Mmap::map(&file) }.map_err(|e| TrainError::io("mapping", path, e))?;
        let (header, metadata) = SafeTensors::read_metadata(&map)
            .map_err(|e| bad(format!("not a complete safetensors file: {e}")))?;
        let base = 8 + header;
        let infos: HashMap<String, _> = metadata.tensors();
        let float_type = match dtype {
            CacheDtype::F16 => Dtype::F16,
            CacheDtype::F32 => Dtype::F32,
        };
        let region = |name: &str, want_type: Dtype, shape: Vec<usize>| {
            let info = infos
                .get(name)
                .ok_or_else(|| bad(format!("no tensor `{name}`")))?;
            if info.dtype != want_type || info.shape != shape {
                return Err(bad(format!(
                    "tensor `{name}` is {:?} {:?}, expected {want_type:?} {shape:?}",
                    info.dtype, info.shape
                )));
            }
            Ok(Region {
                start: base + info.data_offsets.0,
                end: base + info.data_offsets.1,
            })
        };
        let n = samples;
        let ids = region("ids", Dtype::I64, vec![n])?;
        let key_hash = region("key_hash", Dtype::I64, vec![n])?;
        let caption_hash = region("caption_hash", Dtype::I64, vec![n])?;
        let read_ints = |r: Region| -> Vec<u64> {
            map[r.start..r.end]
                .chunks_exact(8)
                .map(|c| u64::from_le_bytes(c.try_into().expect("8 bytes")))
                .collect()
        };
        let shard = MappedShard {
            path: path.to_path_buf(),
            ids: read_ints(ids),
            key_hash: read_ints(key_hash),
            caption_hash: read_ints(caption_hash),
            image: region("image", float_type, vec![n, pool, dim])?,
            crops: region("crops", Dtype::I64, vec![n, pool, 4])?,
            eval_image: region("eval_image", float_type, vec![n, dim])?,
            text: region("text", float_type, vec![n, dim])?,
            map,
            dtype,
            pool,
            dim,
        };
        if !shard.ids.windows(2).all(|w| w[0] < w[1]) {
            return Err(bad("the sample ids are not ascending".into()));
        }
        Ok(shard)
    }

    /// The file.
    pub(super) fn path(&self) -> &Path {
        &self.path
    }

    /// The row of sample `id`, if stored.
    pub(super) fn row(&self, id: u64) -> Option<usize> {
        self.ids.binary_search(&id).ok()
    }

    /// `dim` values of `region` from value `at`, appended to `out` as f32.
    fn read(&self, region: Region, at: usize, out: &mut Vec<f32>) {
        let size = self.dtype.size();
        let start = region.start + at * size;
        let bytes = &self.map[start..start + self.dim * size];
        match self.dtype {
            CacheDtype::F32 => out.extend(
                bytes
                    .chunks_exact(4)
                    .map(|c| f32::from_le_bytes(c.try_into().expect("4 bytes"))),
            ),
            CacheDtype::F16 => out.extend(
                bytes
                    .chunks_exact(2)
                    .map(|c| half::f16::from_le_bytes(c.try_into().expect("2 bytes")).to_f32()),
            ),
        }
    }

    /// Appends row `row`'s crop `k` image embedding.
    pub(super) fn image(&self, row: usize, k: usize, out: &mut Vec<f32>) {
        self.read(self.image, (row * self.pool + k) * self.dim, out);
    }

    /// Appends row `row`'s eval-view image embedding.
    pub(super) fn eval_image(&self, row: usize, out: &mut Vec<f32>) {
        self.read(self.eval_image, row * self.dim, out);
    }

    /// Appends row `row`'s caption embedding.
    pub(super) fn text(&self, row: usize, out: &mut Vec<f32>) {
        self.read(self.text, row * self.dim, out);
    }

    /// Row `row`'s crop `k`.
    pub(super) fn crop(&self, row: usize, k: usize) -> CropBox {
        let start = self.crops.start + (row * self.pool + k) * 32;
        let v: Vec<usize> = self.map[start..start + 32]
            .chunks_exact(8)
            .map(|c| u64::from_le_bytes(c.try_into().expect("8 bytes")) as usize)
            .collect();
        CropBox {
            top: v[0],
            left: v[1],
            height: v[2],
            width: v[3],
        }
    }
}
