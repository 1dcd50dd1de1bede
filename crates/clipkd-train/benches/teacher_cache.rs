//! The teacher cache on the CPU (Flex backend): how fast `build_teacher_cache` stores a
//! teacher's outputs, how many bytes a sample takes, and how long reading a batch's rows back
//! takes (`TeacherCache::lookup`, what replaces the teacher's forward in each step). The KD
//! step itself, online vs from a cache, is `train_step`'s `kd` and `cached` workloads.
//!
//! The teacher keeps its real widths and depths (default `ViT-B-16`, random weights) at a
//! reduced image size (default 64 px), over synthetic images.
//!
//! Run: `cargo bench -p clipkd-train --bench teacher_cache`. Settings by environment variable:
//! `CLIPKD_BENCH_TEACHER` (`ViT-B-16`), `CLIPKD_BENCH_IMAGE` (64), `CLIPKD_BENCH_SAMPLES` (64),
//! `CLIPKD_BENCH_AUGMENTATIONS` (2), `CLIPKD_BENCH_BATCH` (32).

use std::time::Instant;

use burn_flex::Flex;
use clipkd_data::dataset::SyntheticDataset;
use clipkd_data::image::{ImageTransform, TransformConfig};
use clipkd_data::loader::{DataLoader, LoaderConfig};
use clipkd_data::tokenizer::Tokenizer;
use clipkd_models::{ClipConfig, ModelSource, VisionConfig, save_open_clip};
use clipkd_train::RunConfig;
use clipkd_train::teacher_cache::{CacheDtype, CacheOptions, TeacherCache, build_teacher_cache_of};
use clipkd_train::trainer::force_init;

fn env<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() {
    let name: String = env("CLIPKD_BENCH_TEACHER", "ViT-B-16".to_string());
    let size: usize = env("CLIPKD_BENCH_IMAGE", 64);
    let samples: usize = env("CLIPKD_BENCH_SAMPLES", 64);
    let k: u64 = env("CLIPKD_BENCH_AUGMENTATIONS", 2);
    let batch: usize = env("CLIPKD_BENCH_BATCH", 32);
    let dir = tempfile::tempdir().expect("a temporary folder");
    let mut config = ClipConfig::resolve(&name).expect("teacher config");
    match &mut config.vision {
        VisionConfig::Vit(v) => v.image_size = [size, size],
        VisionConfig::ModifiedResNet(r) => r.image_size = size,
        VisionConfig::Timm(t) => t.image_size = [size, size],
    }
    let device = Default::default();
    let teacher = config.init::<Flex>(&device).expect("teacher");
    force_init(&teacher);
    let json = dir.path().join("teacher.json");
    let weights = dir.path().join("teacher.safetensors");
    std::fs::write(&json, config.to_open_clip_json()).expect("config");
    save_open_clip(&teacher, &weights).expect("weights");
    drop(teacher);
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!(
        "teacher_cache bench: teacher {name}, {size} px, {samples} samples, {k} crops each, \
         batch {batch}, {threads} CPU threads, Flex backend"
    );

    let mut run = RunConfig::default();
    run.teacher.model = ModelSource::File(json);
    run.teacher.weights = Some(weights);
    run.data.workers = threads;
    let data = || {
        clipkd_data::dataset::DataSource::indexed(SyntheticDataset::new(
            samples,
            size + 16,
            size + 16,
        ))
    };
    for dtype in [CacheDtype::F32, CacheDtype::F16] {
        let mut options = CacheOptions::new(dir.path().join(format!("{dtype:?}")), k);
        options.dtype = dtype;
        options.batch_size = batch;
        let t = Instant::now();
        let built =
            build_teacher_cache_of::<Flex>(&run, Some(data()), &options, &device, |_, _| {})
                .expect("build");
        let s = t.elapsed().as_secs_f64();
        let m = &built.manifest;
        println!(
            "build {dtype:?}: {:.2} samples/s ({s:.1} s: per sample the image tower on {k} crops \
             and the eval view ({} forwards), the text tower on the caption), {} bytes per \
             sample (embed dim {})",
            samples as f64 / s,
            k + 1,
            m.bytes_per_sample(),
            m.embed_dim
        );

        // Reading a batch's rows back, as each training step does.
        let cache = TeacherCache::open(&options.dir).expect("open");
        let d = &run.data;
        let transform = ImageTransform::new(
            TransformConfig::default()
                .with_size(size, size)
                .with_mean_std(d.mean, d.std)
                .with_crop_scale(d.crop_scale[0], d.crop_scale[1]),
        )
        .expect("transform");
        let loader = DataLoader::new(
            data(),
            transform,
            Tokenizer::new(),
            LoaderConfig::train(batch)
                .with_pool(Some(cache.pool()))
                .with_seed(run.run.seed)
                .with_context_length(config.context_length()),
        )
        .expect("loader");
        let mut seconds = 0.0;
        let mut rows = 0;
        for b in loader.epoch(0).expect("epoch") {
            let b = b.expect("batch");
            let t = Instant::now();
            let stored = cache.lookup(&b).expect("lookup");
            seconds += t.elapsed().as_secs_f64();
            rows += stored.image.len() / stored.dim;
        }
        println!(
            "lookup {dtype:?}: {:.1} us per sample ({rows} samples)",
            seconds / rows as f64 * 1e6
        );
    }
}
