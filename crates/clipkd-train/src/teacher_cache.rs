//! Teacher caches: the frozen teacher's outputs stored once, so that students train without
//! running it (MobileCLIP's "reinforced datasets", for CLIP-KD's losses).
//!
//! A cache stores, for every sample of an indexed dataset (CSV files, image folders), the
//! teacher's raw image embeddings of `K` crops (the [`AugmentationPool`] seeded by the run
//! seed: crop `k` is the RandomResizedCrop the training loader draws in epoch `k`), of the eval
//! view, and of its caption, with each crop's box and the teacher's logit scale; in shards of
//! rows (safetensors files, f16 or f32) listed by `manifest.json`, which also records the
//! teacher (config, weights hash), the preprocessing and the data, so that a cache is never
//! used with another teacher or data by mistake. [`build_teacher_cache`] writes it (each shard
//! atomically, then the manifest: a killed build continues where it stopped);
//! [`TeacherCache`] reads it, memory-mapped.
//!
//! Training from a cache (`[teacher] cache = "DIR"`, `clipkd distill --teacher-cache DIR`)
//! loads no teacher: the loader crops every sample with one crop of the pool per epoch
//! (chosen from the run seed, the epoch and the sample), and each micro-batch carries the
//! stored embeddings of exactly those crops ([`crate::step::TeacherOutputs`]), which the losses
//! read in place of the teacher's forward. The same type carries teacher outputs from anywhere
//! (another framework, an API). See `docs/teacher-cache.md`.
//!
//! [`AugmentationPool`]: clipkd_data::loader::AugmentationPool

mod build;
mod manifest;
mod reader;
mod shard;

pub use build::{CacheBuildSummary, CacheOptions, build_teacher_cache, build_teacher_cache_of};
pub use manifest::{
    CacheDtype, CacheManifest, CachedData, MANIFEST, Preprocessing, ShardEntry, TeacherIdentity,
};
pub use reader::TeacherCache;
