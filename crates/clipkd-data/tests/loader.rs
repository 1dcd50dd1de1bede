//! The data loader on small generated CSV datasets: skipped samples, batch contents,
//! determinism across seeds and worker counts, exact resume, shutdown.
//!
//! Images are 24-40 px and the transform outputs 16 px, so each test runs well under a second.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use clipkd_data::dataset::{
    CsvConfig, CsvDataset, CsvSource, DataSource, IndexedDataset, SkipReason, SyntheticDataset,
};
use clipkd_data::image::{DecodedImage, ImageTransform, TransformConfig};
use clipkd_data::loader::{
    AugmentationPool, Batch, DataLoader, DataPosition, LoaderConfig, Mode, Split,
};
use clipkd_data::tokenizer::Tokenizer;

/// A JPEG of `w` x `h` whose colours depend on `seed`.
fn jpeg_bytes(w: u32, h: u32, seed: u32) -> Vec<u8> {
    let img = image::RgbImage::from_fn(w, h, |x, y| {
        image::Rgb([
            ((x * 7 + seed * 31) % 256) as u8,
            ((y * 5 + seed * 17) % 256) as u8,
            ((x + y + seed * 3) % 256) as u8,
        ])
    });
    let mut out = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 90)
        .encode_image(&img)
        .unwrap();
    out
}

/// `n` images `img{i}.jpg` (sizes 24..40 px) in `dir`, with captions `"photo number {i}"`, and a
/// CSV listing them with relative paths. Returns the CSV path.
fn write_dataset(dir: &Path, n: usize) -> PathBuf {
    let mut csv = String::from("title\tfilepath\n");
    for i in 0..n {
        let (w, h) = (24 + (i % 5) as u32 * 4, 24 + (i % 3) as u32 * 8);
        std::fs::write(dir.join(format!("img{i}.jpg")), jpeg_bytes(w, h, i as u32)).unwrap();
        csv.push_str(&format!("photo number {i}\timg{i}.jpg\n"));
    }
    let path = dir.join("data.csv");
    std::fs::write(&path, csv).unwrap();
    path
}

fn transform() -> ImageTransform {
    ImageTransform::new(TransformConfig::square(16)).unwrap()
}

fn loader(csv: &Path, root: &Path, config: LoaderConfig) -> DataLoader {
    let ds = CsvDataset::open_file(csv, Some(root.to_path_buf()), &CsvConfig::default()).unwrap();
    DataLoader::new(ds, transform(), Tokenizer::new(), config).unwrap()
}

fn collect(batches: impl Iterator<Item = Result<Batch, clipkd_data::DataError>>) -> Vec<Batch> {
    batches.map(Result::unwrap).collect()
}

/// What identifies a batch's content: ids, images and tokens.
fn fingerprint(b: &Batch) -> (Vec<u64>, Vec<u32>, Vec<u32>) {
    (
        b.ids.clone(),
        b.images.iter().map(|v| v.to_bits()).collect(),
        b.tokens.clone(),
    )
}

#[test]
fn eval_batches_match_the_transform_and_tokenizer() {
    let dir = tempfile::tempdir().unwrap();
    let csv = write_dataset(dir.path(), 10);
    let l = loader(
        &csv,
        dir.path(),
        LoaderConfig::eval(4).with_workers(2).with_context_length(8),
    );
    let batches = collect(l.epoch(0).unwrap());
    assert_eq!(
        batches.iter().map(Batch::len).collect::<Vec<_>>(),
        [4, 4, 2]
    );
    let t = transform();
    let tok = Tokenizer::new();
    for (b, batch) in batches.iter().enumerate() {
        assert_eq!(batch.images_shape(), [batch.len(), 3, 16, 16]);
        assert_eq!(batch.tokens_shape(), [batch.len(), 8]);
        assert_eq!(batch.index, b as u64);
        for i in 0..batch.len() {
            let id = batch.ids[i] as usize;
            assert_eq!(id, b * 4 + i, "eval keeps dataset order");
            assert_eq!(batch.text_image[i], i);
            let img = DecodedImage::open(dir.path().join(format!("img{id}.jpg"))).unwrap();
            assert_eq!(batch.image(i), &t.eval(&img).data[..], "image {id}");
            assert_eq!(
                batch.text(i),
                &tok.tokenize(&format!("photo number {id}"), 8).unwrap()[..]
            );
            assert!(batch.keys[i].ends_with(&format!("img{id}.jpg")));
        }
        assert!(batch.labels.is_none());
    }
    assert_eq!(batches[2].position.sample, 10);
}

#[test]
fn corrupt_and_missing_images_are_skipped_and_counted() {
    let dir = tempfile::tempdir().unwrap();
    let csv = write_dataset(dir.path(), 12);
    // img3: truncated JPEG; img5: random bytes; img7: missing; img8: a directory.
    let full = std::fs::read(dir.path().join("img3.jpg")).unwrap();
    std::fs::write(dir.path().join("img3.jpg"), &full[..full.len() / 3]).unwrap();
    std::fs::write(dir.path().join("img5.jpg"), b"this is not an image at all").unwrap();
    std::fs::remove_file(dir.path().join("img7.jpg")).unwrap();
    std::fs::remove_file(dir.path().join("img8.jpg")).unwrap();
    std::fs::create_dir(dir.path().join("img8.jpg")).unwrap();
    for workers in [1, 3] {
        let l = loader(
            &csv,
            dir.path(),
            LoaderConfig::eval(3).with_workers(workers),
        );
        let mut it = l.epoch(0).unwrap();
        let batches = collect(&mut it);
        // 12 - 4 usable = 8 -> 3, 3, 2, every batch but the last full.
        assert_eq!(
            batches.iter().map(Batch::len).collect::<Vec<_>>(),
            [3, 3, 2]
        );
        let ids: Vec<u64> = batches.iter().flat_map(|b| b.ids.clone()).collect();
        let mut sorted = ids.clone();
        sorted.sort();
        assert_eq!(sorted, [0, 1, 2, 4, 6, 9, 10, 11]);
        let report = it.skipped();
        assert_eq!(report.total(), 4, "{report}");
        assert_eq!(report.count(SkipReason::CorruptImage), 2, "{report}");
        assert_eq!(report.count(SkipReason::MissingFile), 1, "{report}");
        assert_eq!(report.count(SkipReason::NotAFile), 1, "{report}");
        let keys: Vec<&str> = report.examples.iter().map(|e| e.key.as_str()).collect();
        for bad in ["img3.jpg", "img5.jpg", "img7.jpg", "img8.jpg"] {
            assert!(
                keys.iter().any(|k| k.ends_with(bad)),
                "{bad} not in {keys:?}"
            );
        }
        // Per-batch reports add up to the epoch's.
        let per_batch: u64 = batches.iter().map(|b| b.skipped.total()).sum();
        assert_eq!(per_batch, 4);
        assert_eq!(
            batches
                .last()
                .unwrap()
                .position
                .skipped
                .values()
                .sum::<u64>(),
            4
        );
        // The documented layout: batch 1's anchor is 3 (batch 0 started at 0); sample 4 takes
        // its own row 1, then 6 and 9 (the next usable samples) fill rows 0 and 2. Batch 2's
        // rows (anchor 6) were all consumed, so 10 and 11 come in row order.
        assert_eq!(batches[0].ids, [0, 1, 2]);
        assert_eq!(batches[1].ids, [6, 4, 9], "workers {workers}");
        assert_eq!(batches[2].ids, [10, 11], "workers {workers}");
    }
}

#[test]
fn drop_last_drops_the_incomplete_batch_and_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let csv = write_dataset(dir.path(), 10);
    let l = loader(&csv, dir.path(), LoaderConfig::train(4).with_workers(2));
    assert_eq!(l.batches_per_epoch(), Some(2));
    let mut it = l.epoch(0).unwrap();
    let batches = collect(&mut it);
    assert_eq!(batches.len(), 2);
    assert!(batches.iter().all(|b| b.len() == 4));
    assert_eq!(it.dropped(), 2);
    assert_eq!(it.position(), &DataPosition::start(1));
    // Every sample at most once; the two left out are the permutation's last.
    let mut ids: Vec<u64> = batches.iter().flat_map(|b| b.ids.clone()).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 8);
}

#[test]
fn same_seed_same_batches_for_any_worker_count() {
    let dir = tempfile::tempdir().unwrap();
    let csv = write_dataset(dir.path(), 14);
    // A missing file makes the skip-and-refill path part of what must be deterministic.
    std::fs::remove_file(dir.path().join("img4.jpg")).unwrap();
    let run = |workers: usize, seed: u64, epoch: u64| -> Vec<_> {
        let l = loader(
            &csv,
            dir.path(),
            LoaderConfig::train(3).with_workers(workers).with_seed(seed),
        );
        collect(l.epoch(epoch).unwrap())
            .iter()
            .map(fingerprint)
            .collect()
    };
    let reference = run(1, 5, 0);
    assert_eq!(reference.len(), 4);
    assert_eq!(run(1, 5, 0), reference);
    assert_eq!(run(4, 5, 0), reference);
    assert_eq!(run(7, 5, 0), reference);
    let other_seed = run(2, 6, 0);
    assert_ne!(other_seed, reference);
    let other_epoch = run(2, 5, 1);
    assert_ne!(other_epoch, reference);
    // Shuffled: not dataset order.
    let ids: Vec<u64> = reference.iter().flat_map(|f| f.0.clone()).collect();
    assert_ne!(ids, (0..ids.len() as u64).collect::<Vec<_>>());
}

#[test]
fn train_crops_are_seeded_per_sample_and_epoch() {
    // The same sample in two epochs gets different crops; in one epoch, the same crop whatever
    // batch size puts it where.
    let dir = tempfile::tempdir().unwrap();
    let csv = write_dataset(dir.path(), 8);
    let image_of = |batch_size: usize, epoch: u64, id: u64| -> Vec<f32> {
        // A wide crop range, so that two draws differ on these small images.
        let t = ImageTransform::new(TransformConfig::square(16).with_crop_scale(0.1, 1.0)).unwrap();
        let ds = CsvDataset::open_file(&csv, Some(dir.path().to_path_buf()), &CsvConfig::default())
            .unwrap();
        let config = LoaderConfig::train(batch_size)
            .with_workers(2)
            .with_drop_last(false);
        let l = DataLoader::new(ds, t, Tokenizer::new(), config).unwrap();
        for b in l.epoch(epoch).unwrap() {
            let b = b.unwrap();
            if let Some(i) = b.ids.iter().position(|&x| x == id) {
                return b.image(i).to_vec();
            }
        }
        panic!("sample {id} not found");
    };
    let a = image_of(2, 0, 3);
    assert_eq!(a, image_of(5, 0, 3));
    assert_ne!(a, image_of(2, 1, 3));
}

#[test]
fn resume_mid_epoch_gives_the_same_following_batches() {
    let dir = tempfile::tempdir().unwrap();
    let csv = write_dataset(dir.path(), 23);
    for bad in [2, 9, 10, 17] {
        std::fs::remove_file(dir.path().join(format!("img{bad}.jpg"))).unwrap();
    }
    let config = LoaderConfig::train(3).with_workers(3).with_seed(11);
    let l = loader(&csv, dir.path(), config.clone());
    let full = collect(l.epoch(2).unwrap());
    assert_eq!(full.len(), 6); // 19 usable samples
    for stop_after in 0..full.len() {
        // Save the position after batch `stop_after`, through JSON as a checkpoint would.
        let json = serde_json::to_string(&full[stop_after].position).unwrap();
        let pos: DataPosition = serde_json::from_str(&json).unwrap();
        let l2 = loader(&csv, dir.path(), config.clone().with_workers(1));
        let rest = collect(l2.resume(&pos).unwrap());
        assert_eq!(
            rest.len(),
            full.len() - stop_after - 1,
            "after {stop_after}"
        );
        for (a, b) in rest.iter().zip(&full[stop_after + 1..]) {
            assert_eq!(fingerprint(a), fingerprint(b), "after {stop_after}");
            assert_eq!(a.index, b.index);
            assert_eq!(a.position, b.position);
        }
    }
    // The epoch's skip counts survive the resume.
    let mut it = l.resume(&full[1].position).unwrap();
    while it.next().is_some() {}
    assert_eq!(it.skipped().total(), 4);
}

#[test]
fn positions_that_do_not_fit_are_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let csv = write_dataset(dir.path(), 4);
    let l = loader(&csv, dir.path(), LoaderConfig::train(2));
    let past_end = DataPosition {
        sample: 5,
        anchor: 5,
        ..DataPosition::start(0)
    };
    let err = l.resume(&past_end).unwrap_err().to_string();
    assert!(err.contains("only 4 samples"), "{err}");
    let bad_anchor = DataPosition {
        sample: 1,
        anchor: 2,
        ..DataPosition::start(0)
    };
    assert!(l.resume(&bad_anchor).is_err());
    let stream = DataPosition {
        stream: Some(Default::default()),
        ..DataPosition::start(0)
    };
    assert!(
        l.resume(&stream)
            .unwrap_err()
            .to_string()
            .contains("webdataset")
    );
    let zero = DataLoader::new(
        SyntheticDataset::new(4, 8, 8),
        transform(),
        Tokenizer::new(),
        LoaderConfig::train(0),
    );
    assert!(zero.unwrap_err().to_string().contains("batch_size"));
}

#[test]
fn dropping_the_iterator_mid_epoch_stops_the_threads() {
    // A large synthetic epoch with a single prefetch slot: the loader is blocked on the
    // consumer when dropped, and must not run the epoch to its end.
    let l = DataLoader::new(
        SyntheticDataset::new(100_000, 32, 32),
        transform(),
        Tokenizer::new(),
        LoaderConfig::train(8).with_workers(4).with_prefetch(1),
    )
    .unwrap();
    let t0 = Instant::now();
    let mut it = l.epoch(0).unwrap();
    let first = it.next().unwrap().unwrap();
    assert_eq!(first.len(), 8);
    drop(it); // joins the coordinator, which joins the workers
    let elapsed = t0.elapsed();
    assert!(elapsed < Duration::from_secs(5), "{elapsed:?}");
    // Dropping before any batch, and after the end, works too.
    drop(l.epoch(1).unwrap());
    let small = DataLoader::new(
        SyntheticDataset::new(5, 20, 20),
        transform(),
        Tokenizer::new(),
        LoaderConfig::eval(2).with_workers(2),
    )
    .unwrap();
    let mut it = small.epoch(0).unwrap();
    assert_eq!(collect(&mut it).len(), 3);
    assert!(it.next().is_none());
    drop(it);
}

#[test]
fn synthetic_and_source_helpers() {
    let ds = SyntheticDataset::new(3, 10, 12).with_caption("x");
    assert_eq!(ds.len(), 3);
    let s = ds.sample(2);
    assert_eq!(s.captions, ["x"]);
    let l = DataLoader::new(
        ds,
        transform(),
        Tokenizer::new(),
        LoaderConfig::eval(3).with_mode(Mode::Train).with_workers(1),
    )
    .unwrap();
    let b = collect(l.epoch(0).unwrap());
    assert_eq!(b.len(), 1);
    assert_eq!(b[0].len(), 3);
    // Two CSVs, one root each, through the CLIP-KD style lists.
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    std::fs::create_dir_all(&a).unwrap();
    std::fs::create_dir_all(&b).unwrap();
    let csv_a = write_dataset(&a, 2);
    let csv_b = write_dataset(&b, 3);
    let data = format!("{},{}", csv_a.display(), csv_b.display());
    let roots = format!("{},{}", a.display(), b.display());
    let src = DataSource::open(
        &data,
        Some(&roots),
        clipkd_data::dataset::DatasetKind::Auto,
        &CsvConfig::default(),
    )
    .unwrap();
    assert_eq!(src.known_len(), Some(5));
    let l = DataLoader::new(src, transform(), Tokenizer::new(), LoaderConfig::eval(5)).unwrap();
    let b = collect(l.epoch(0).unwrap());
    assert_eq!(b[0].len(), 5);
    assert!(b[0].skipped.is_empty());
    assert_eq!(CsvSource::from_lists("x.csv", None).unwrap()[0].root, None);
}

#[test]
fn long_runs_of_skipped_samples_keep_batches_full_and_deterministic() {
    // 60 rows, 26 of them missing (a run of 12 longer than two batches, and scattered ones):
    // replacements come from far beyond the open batches and through scratch buffers.
    let dir = tempfile::tempdir().unwrap();
    let csv = write_dataset(dir.path(), 60);
    let missing: Vec<usize> = (20..32)
        .chain((0..60).filter(|i| i % 4 == 1 && !(20..32).contains(i)))
        .collect();
    for &m in &missing {
        std::fs::remove_file(dir.path().join(format!("img{m}.jpg"))).unwrap();
    }
    let usable = 60 - missing.len();
    for shuffle in [false, true] {
        let run = |workers: usize, pos: Option<&DataPosition>| -> Vec<Batch> {
            let config = LoaderConfig::train(4)
                .with_workers(workers)
                .with_shuffle(shuffle)
                .with_seed(9);
            let l = loader(&csv, dir.path(), config);
            let it = match pos {
                Some(p) => l.resume(p).unwrap(),
                None => l.epoch(0).unwrap(),
            };
            collect(it)
        };
        let reference = run(1, None);
        assert_eq!(reference.len(), usable / 4);
        let mut ids: Vec<u64> = reference.iter().flat_map(|b| b.ids.clone()).collect();
        ids.sort();
        ids.dedup();
        assert_eq!(ids.len(), reference.len() * 4, "no sample twice");
        assert!(ids.iter().all(|i| !missing.contains(&(*i as usize))));
        let fp: Vec<_> = reference.iter().map(fingerprint).collect();
        for workers in [2, 5] {
            assert_eq!(
                run(workers, None)
                    .iter()
                    .map(fingerprint)
                    .collect::<Vec<_>>(),
                fp
            );
        }
        for (i, b) in reference.iter().enumerate() {
            let rest = run(3, Some(&b.position));
            assert_eq!(
                rest.iter().map(fingerprint).collect::<Vec<_>>(),
                fp[i + 1..].to_vec()
            );
        }
        let skipped: u64 = reference.iter().map(|b| b.skipped.total()).sum();
        assert!(skipped <= missing.len() as u64);
    }
}

#[test]
fn split_parts_read_disjoint_rows_of_the_global_batches_and_resume_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let csv = write_dataset(dir.path(), 26);
    // Global batches of 6 over 3 parts of 2.
    let whole = loader(
        &csv,
        dir.path(),
        LoaderConfig::train(6).with_workers(2).with_seed(5),
    );
    let part = |p: usize| {
        let split = Split::new(p, 3).unwrap();
        loader(
            &csv,
            dir.path(),
            LoaderConfig::train(2)
                .with_workers(2)
                .with_seed(5)
                .with_split(split),
        )
    };
    assert_eq!(part(1).batches_per_epoch(), whole.batches_per_epoch());
    // Without skipped samples, part p's batch b is rows 2p..2p+2 of the global batch b.
    let global = collect(whole.epoch(1).unwrap());
    assert_eq!(global.len(), 4);
    for p in 0..3 {
        let mine = collect(part(p).epoch(1).unwrap());
        assert!(mine.len() >= 4, "part {p}: {} batches", mine.len());
        for (b, batch) in mine.iter().take(4).enumerate() {
            assert_eq!(
                batch.ids,
                global[b].ids[2 * p..2 * p + 2],
                "part {p} batch {b}"
            );
            assert_eq!(batch.image(1), global[b].image(2 * p + 1), "same crop");
        }
    }

    // With skipped samples the parts stay disjoint, each refilling from its own samples, and
    // each resumes exactly from any of its positions.
    for bad in [1, 8, 9, 14] {
        std::fs::remove_file(dir.path().join(format!("img{bad}.jpg"))).unwrap();
    }
    let mut seen = std::collections::BTreeSet::new();
    let mut skipped = 0;
    for p in 0..3 {
        let mut it = part(p).epoch(0).unwrap();
        let batches = collect(&mut it);
        skipped += it.skipped().total();
        for b in &batches {
            assert_eq!(b.len(), 2);
            for &id in &b.ids {
                assert!(seen.insert(id), "sample {id} read by two parts");
            }
        }
        for stop_after in 0..batches.len() {
            let rest = collect(part(p).resume(&batches[stop_after].position).unwrap());
            let want: Vec<_> = batches[stop_after + 1..].iter().map(fingerprint).collect();
            assert_eq!(
                rest.iter().map(fingerprint).collect::<Vec<_>>(),
                want,
                "part {p}, resumed after batch {stop_after}"
            );
        }
    }
    assert_eq!(
        skipped, 4,
        "each missing image is skipped by exactly one part"
    );
    assert!(seen.iter().all(|id| ![1, 8, 9, 14].contains(id)));
}

#[test]
fn an_augmentation_pool_reuses_the_crops_of_its_epochs() {
    let dir = tempfile::tempdir().unwrap();
    let csv = write_dataset(dir.path(), 10);
    let plain = LoaderConfig::train(5).with_workers(2).with_seed(4);
    // Crop k of the pool (drawn with seed 4) is the crop the plain loader draws in epoch k.
    let by_epoch: Vec<std::collections::BTreeMap<u64, Vec<u32>>> = (0..3)
        .map(|e| {
            collect(loader(&csv, dir.path(), plain.clone()).epoch(e).unwrap())
                .iter()
                .flat_map(|b| {
                    (0..b.len())
                        .map(|i| (b.ids[i], b.image(i).iter().map(|v| v.to_bits()).collect()))
                        .collect::<Vec<_>>()
                })
                .collect()
        })
        .collect();
    // Another run seed shuffles and chooses differently, but the crops come from the pool.
    let pooled = plain
        .clone()
        .with_seed(99)
        .with_pool(Some(AugmentationPool::new(3, 4)));
    let l = loader(&csv, dir.path(), pooled);
    let mut chosen = std::collections::BTreeSet::new();
    for epoch in 0..4 {
        for b in collect(l.epoch(epoch).unwrap()) {
            assert_eq!(b.augmentations.len(), b.len());
            for i in 0..b.len() {
                let (k, crop) = b.augmentations[i];
                assert!(k < 3);
                chosen.insert(k);
                let want = &by_epoch[k as usize][&b.ids[i]];
                let got: Vec<u32> = b.image(i).iter().map(|v| v.to_bits()).collect();
                assert_eq!(&got, want, "sample {} crop {k} ({crop:?})", b.ids[i]);
            }
        }
    }
    assert_eq!(chosen.len(), 3, "every crop of the pool is used");
}
