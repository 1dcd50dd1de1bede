//! Distilling from a teacher cache equals distilling from the teacher with the same crops.
//!
//! One test on purpose: the Flex backend's RNG is global to the process (MFD's masks draw
//! from it), so another test of the same binary running at the same time could draw from it.

mod common;

use burn_flex::Flex;
use clipkd_train::config::TrainMode;
use clipkd_train::metrics::StepRecord;
use clipkd_train::progress::ProgressMode;
use clipkd_train::teacher_cache::{
    CacheDtype, CacheManifest, CacheOptions, TeacherCache, build_teacher_cache_of,
};
use clipkd_train::trainer::{PreparedRun, RunSummary};
use clipkd_train::{RunConfig, TrainError};
use common::{recipe_with_mfd, relative_l2, squares, steps, tiny_config, write_models};

/// Every float parameter of the student of the run's last checkpoint, in module order.
fn student_weights(summary: &RunSummary) -> Vec<f32> {
    common::student_weights(summary).concat()
}

/// The largest relative difference of any logged term (same steps, rates, samples).
fn worst_term(got: &[StepRecord], want: &[StepRecord]) -> f64 {
    assert_eq!(got.len(), want.len(), "logged steps");
    let mut worst = 0.0f64;
    for (x, y) in got.iter().zip(want) {
        assert_eq!((x.step, x.epoch, x.lr), (y.step, y.epoch, y.lr));
        assert_eq!(x.samples_seen, y.samples_seen);
        assert_eq!(
            x.loss.keys().collect::<Vec<_>>(),
            y.loss.keys().collect::<Vec<_>>()
        );
        for (name, &b) in &y.loss {
            let a = x.loss[name];
            worst = worst.max((a - b).abs() / b.abs().max(1e-12));
        }
    }
    worst
}

fn run(config: RunConfig, resume: Option<&str>, samples: usize) -> Result<RunSummary, TrainError> {
    PreparedRun::prepare(config, TrainMode::Distill, resume)?
        .with_data(squares(samples))?
        .with_progress(ProgressMode::Quiet)
        .run::<burn::backend::Autodiff<Flex>>(&Default::default())
}

#[test]
fn distilling_from_the_cache_equals_distilling_from_the_teacher() {
    let dir = tempfile::tempdir().unwrap();
    let (student, teacher, weights) = write_models(dir.path());
    let cache_dir = dir.path().join("cache");
    let base = |out: &str| {
        let mut c = tiny_config(&student, &teacher, &weights, &dir.path().join(out));
        c.data.batch_size = 8;
        c.optim.epochs = 2;
        c.run.seed = 5;
        // The paper's recipe plus MFD (which reads the student's masked view).
        c.loss.terms = recipe_with_mfd();
        c.run.stop_after_steps = Some(3);
        c
    };

    // Build: 2 crops per sample over 30 samples, in shards of 12 rows, batches of 7.
    let mut options = CacheOptions::new(&cache_dir, 2);
    options.shard_rows = 12;
    options.batch_size = 7;
    let device = Default::default();
    let built =
        build_teacher_cache_of::<Flex>(&base("x"), Some(squares(30)), &options, &device, |_, _| {})
            .unwrap();
    let m = &built.manifest;
    assert!(m.complete);
    assert_eq!(m.shards.len(), 3);
    assert_eq!(built.samples_written, 30);
    assert_eq!((m.pool.size, m.pool.seed, m.embed_dim), (2, 5, 24));

    // The eval views and captions are stored too, one row of the teacher's width each.
    let opened = TeacherCache::open(&cache_dir).unwrap();
    let (eval_images, texts) = opened.eval_rows(&[0, 1, 29]).unwrap();
    assert_eq!((eval_images.len(), texts.len()), (3 * 24, 3 * 24));
    assert_ne!(eval_images[..24], eval_images[24..48]);
    assert!(opened.eval_rows(&[30]).is_err(), "row 30 is past the data");

    // Online, with the same pool of crops, vs from the cache (no teacher loaded).
    let mut online = base("online");
    online.data.augmentation_pool = 2;
    let a = run(online, None, 30).unwrap();
    let mut cached = base("cached");
    cached.teacher.weights = None;
    cached.teacher.cache = Some(cache_dir.clone());
    let b = run(cached.clone(), None, 30).unwrap();
    assert_eq!((a.steps, b.steps), (3, 3));
    let (sa, sb) = (steps(&a.run_dir), steps(&b.run_dir));
    let terms = worst_term(&sb, &sa);
    let weights_diff = relative_l2(&student_weights(&b), &student_weights(&a));
    println!("cache vs online: terms within {terms:.1e}, weights within {weights_diff:.1e}");
    assert!(terms <= 1e-6, "loss terms differ by {terms:.2e}");
    assert!(weights_diff <= 1e-6, "weights differ by {weights_diff:.2e}");
    // The run trains: the student moved.
    assert!(sa[2].loss["fd"] < sa[0].loss["fd"], "{:?}", sa);

    // Stopped at step 2 and resumed: the pool chooses the same crops.
    let mut first = cached.clone();
    first.run.output_dir = dir.path().join("resumed");
    first.run.stop_after_steps = Some(2);
    run(first.clone(), None, 30).unwrap();
    first.run.stop_after_steps = Some(3);
    let c = run(first, Some("latest"), 30).unwrap();
    let resumed = worst_term(&steps(&c.run_dir), &sb);
    assert!(resumed <= 1e-6, "resumed: {resumed:.2e}");
    assert_eq!(student_weights(&c), student_weights(&b));

    // What does not fit is refused before training, naming what differs.
    let tries = std::cell::Cell::new(0);
    let refused = |mut config: RunConfig, samples: usize| -> String {
        tries.set(tries.get() + 1);
        config.run.output_dir = dir.path().join(format!("refused-{}", tries.get()));
        match run(config, None, samples) {
            Ok(_) => panic!("should be refused"),
            Err(e) => e.to_string(),
        }
    };
    let e = refused(cached.clone(), 31);
    assert!(e.contains("30 rows") && e.contains("31"), "{e}");
    let mut other_teacher = cached.clone();
    other_teacher.teacher.weights = Some(dir.path().join("student.json"));
    let e = refused(other_teacher, 30);
    assert!(e.contains("teacher weights"), "{e}");
    let mut other_crops = cached.clone();
    other_crops.data.crop_scale = [0.5, 1.0];
    let e = refused(other_crops, 30);
    assert!(e.contains("crop scale"), "{e}");
    let mut other_pool = cached.clone();
    other_pool.data.augmentation_seed = Some(6);
    let e = refused(other_pool, 30);
    assert!(
        e.contains("data.augmentation_pool") && e.contains("seed 5"),
        "{e}"
    );

    // A build stopped after its second shard continues to the same files.
    let shard = |d: &std::path::Path, i: usize| {
        std::fs::read(d.join(format!("shard-{i:06}.safetensors"))).unwrap()
    };
    let partial = dir.path().join("partial");
    std::fs::create_dir_all(&partial).unwrap();
    let mut manifest = CacheManifest::read(&cache_dir).unwrap();
    for i in 0..2 {
        std::fs::write(
            partial.join(format!("shard-{i:06}.safetensors")),
            shard(&cache_dir, i),
        )
        .unwrap();
    }
    manifest.shards.truncate(2);
    manifest.complete = false;
    manifest.write(&partial).unwrap();
    let e = TeacherCache::open(&partial).unwrap_err().to_string();
    assert!(e.contains("incomplete (24 of 30 rows)"), "{e}");
    let mut resumed_options = options.clone();
    resumed_options.dir = partial.clone();
    let done = build_teacher_cache_of::<Flex>(
        &base("x"),
        Some(squares(30)),
        &resumed_options,
        &device,
        |_, _| {},
    )
    .unwrap();
    assert_eq!((done.shards_written, done.samples_written), (1, 6));
    assert_eq!(shard(&partial, 2), shard(&cache_dir, 2));
    webdataset_cache_equals_the_teacher(&dir, &base);

    // Another dtype in the same directory is refused.
    let mut f16 = resumed_options.clone();
    f16.dtype = CacheDtype::F16;
    let e = build_teacher_cache_of::<Flex>(&base("x"), Some(squares(30)), &f16, &device, |_, _| {})
        .unwrap_err()
        .to_string();
    assert!(e.contains("another dtype"), "{e}");
}

/// A PNG of a 48 x 48 RGB image.
fn png_bytes(rgb: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut encoder = png::Encoder::new(&mut out, 48, 48);
    encoder.set_color(png::ColorType::Rgb);
    encoder.set_depth(png::BitDepth::Eight);
    encoder
        .write_header()
        .unwrap()
        .write_image_data(rgb)
        .unwrap();
    out
}

/// The same squares as webdataset shards (3 tar files of 10 samples, PNG + txt): a cache built
/// from them (one cache shard per tar shard) trains like the teacher with the same crops.
fn webdataset_cache_equals_the_teacher(dir: &tempfile::TempDir, base: &dyn Fn(&str) -> RunConfig) {
    use clipkd_data::dataset::{ImageSource, IndexedDataset};
    let squares = common::ColourSquares::new(30);
    let shards = dir.path().join("shards");
    std::fs::create_dir_all(&shards).unwrap();
    for s in 0..3 {
        let mut tar = tar::Builder::new(Vec::new());
        for i in s * 10..(s + 1) * 10 {
            let sample = squares.sample(i);
            let ImageSource::Decoded(image) = &sample.image else {
                unreachable!("the squares are decoded images")
            };
            for (name, bytes) in [
                (format!("{i:04}.png"), png_bytes(&image.to_rgb8())),
                (
                    format!("{i:04}.txt"),
                    sample.captions[0].clone().into_bytes(),
                ),
            ] {
                let mut header = tar::Header::new_gnu();
                header.set_size(bytes.len() as u64);
                header.set_mode(0o644);
                header.set_cksum();
                tar.append_data(&mut header, name, bytes.as_slice())
                    .unwrap();
            }
        }
        std::fs::write(
            shards.join(format!("{s:03}.tar")),
            tar.into_inner().unwrap(),
        )
        .unwrap();
    }
    let with_shards = |out: &str| {
        let mut c = base(out);
        c.data.kind = clipkd_train::config::DataKind::Webdataset;
        c.data.train_data = Some(format!("{}/{{000..002}}.tar", shards.display()));
        c.data.train_num_samples = Some(30);
        c.data.shuffle_buffer = 7;
        c
    };
    let cache_dir = dir.path().join("wds-cache");
    let built = build_teacher_cache_of::<Flex>(
        &with_shards("x"),
        None,
        &CacheOptions::new(&cache_dir, 2),
        &Default::default(),
        |_, _| {},
    )
    .unwrap();
    assert_eq!(
        built.manifest.shards.len(),
        3,
        "one cache shard per tar shard"
    );
    assert_eq!(built.samples_written, 30);
    assert_eq!(
        built.manifest.data.shards,
        ["000.tar", "001.tar", "002.tar"]
    );
    let run_files = |config: RunConfig| {
        PreparedRun::prepare(config, TrainMode::Distill, None)
            .unwrap()
            .with_progress(ProgressMode::Quiet)
            .run::<burn::backend::Autodiff<Flex>>(&Default::default())
            .unwrap()
    };
    let mut online = with_shards("wds-online");
    online.data.augmentation_pool = 2;
    let a = run_files(online);
    let mut cached = with_shards("wds-cached");
    cached.teacher.weights = None;
    cached.teacher.cache = Some(cache_dir);
    let b = run_files(cached);
    let terms = worst_term(&steps(&b.run_dir), &steps(&a.run_dir));
    println!("webdataset cache vs online: terms within {terms:.1e}");
    assert!(
        terms <= 1e-6,
        "webdataset: loss terms differ by {terms:.2e}"
    );
    assert!(relative_l2(&student_weights(&b), &student_weights(&a)) <= 1e-6);
}
