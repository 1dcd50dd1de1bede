//! Dataset formats: CLIP-KD CSV files, webdataset shards (built here with the `tar` crate),
//! ImageFolder and retrieval annotations, read directly and through the loader.

use std::collections::BTreeSet;
use std::io::Cursor;
use std::path::{Path, PathBuf};

use clipkd_data::DataError;
use clipkd_data::dataset::{
    CaptionGrouping, CsvConfig, CsvDataset, CsvSource, DataSource, DatasetKind, ImageFolder,
    IndexedDataset, RetrievalDataset, SkipReason, WebDataset, expand_shards,
};
use clipkd_data::image::{ImageTransform, TransformConfig};
use clipkd_data::loader::{Batch, DataLoader, DataPosition, LoaderConfig, Split};
use clipkd_data::tokenizer::Tokenizer;

fn encoded(format: image::ImageFormat, w: u32, h: u32, seed: u32) -> Vec<u8> {
    let img = image::RgbImage::from_fn(w, h, |x, y| {
        image::Rgb([
            ((x * 9 + seed * 29) % 256) as u8,
            ((y * 3 + seed * 13) % 256) as u8,
            ((x * y + seed) % 256) as u8,
        ])
    });
    let mut out = Cursor::new(Vec::new());
    img.write_to(&mut out, format).unwrap();
    out.into_inner()
}

fn jpeg(seed: u32) -> Vec<u8> {
    encoded(image::ImageFormat::Jpeg, 20 + seed % 7, 18 + seed % 5, seed)
}

fn png(seed: u32) -> Vec<u8> {
    encoded(image::ImageFormat::Png, 18 + seed % 4, 22, seed)
}

fn transform() -> ImageTransform {
    ImageTransform::new(TransformConfig::square(16)).unwrap()
}

fn run(
    source: impl Into<DataSource>,
    config: LoaderConfig,
) -> (Vec<Batch>, clipkd_data::dataset::SkipReport) {
    let l = DataLoader::new(source, transform(), Tokenizer::new(), config).unwrap();
    let mut it = l.epoch(0).unwrap();
    let batches = it.by_ref().map(Result::unwrap).collect();
    (batches, it.skipped().clone())
}

// ---------------------------------------------------------------------------------------------
// CSV

#[test]
fn csv_two_files_two_roots_relative_and_absolute_paths() {
    let dir = tempfile::tempdir().unwrap();
    let (ra, rb) = (dir.path().join("rootA"), dir.path().join("rootB"));
    std::fs::create_dir_all(ra.join("sub")).unwrap();
    std::fs::create_dir_all(&rb).unwrap();
    let abs = dir.path().join("elsewhere.jpg");
    std::fs::write(ra.join("sub/a0.jpg"), jpeg(0)).unwrap();
    std::fs::write(&abs, jpeg(1)).unwrap();
    std::fs::write(rb.join("b0.png"), png(2)).unwrap();
    let a = dir.path().join("a.csv");
    let b = dir.path().join("b.csv");
    // Extra columns are ignored; a quoted caption may hold the separator.
    std::fs::write(
        &a,
        format!(
            "id\ttitle\tfilepath\n1\ta dog\tsub/a0.jpg\n2\t\"a cat\tand a tab\"\t{}\n",
            abs.display()
        ),
    )
    .unwrap();
    std::fs::write(&b, "filepath\ttitle\nb0.png\tthe third one\n").unwrap();
    let spec = format!("{},{}", a.display(), b.display());
    let roots = format!("{},{}", ra.display(), rb.display());
    let sources = CsvSource::from_lists(&spec, Some(&roots)).unwrap();
    let ds = CsvDataset::open(&sources, &CsvConfig::default()).unwrap();
    assert_eq!(ds.len(), 3);
    assert_eq!(ds.caption(0), "a dog");
    assert_eq!(ds.caption(1), "a cat\tand a tab");
    assert_eq!(ds.caption(2), "the third one");
    assert_eq!(ds.image_path(0), ra.join("sub/a0.jpg"));
    assert_eq!(ds.image_path(1), abs, "absolute paths ignore the root");
    assert_eq!(ds.image_path(2), rb.join("b0.png"));
    assert!(ds.skipped().is_empty());
    // All three load.
    let (batches, skipped) = run(ds, LoaderConfig::eval(8).with_workers(2));
    assert!(skipped.is_empty(), "{skipped}");
    assert_eq!(batches.len(), 1);
    assert_eq!(batches[0].ids, [0, 1, 2]);
}

#[test]
fn csv_malformed_lines_are_skipped_with_their_line_numbers() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("m.csv");
    std::fs::write(
        &p,
        "title\tfilepath\n\
         ok one\ta.jpg\n\
         too\tmany\tfields\n\
         ok two\tb.jpg\n\
         no image column here\n\
         empty path\t\n\
         ok three\tc.jpg\n",
    )
    .unwrap();
    let ds = CsvDataset::open_file(&p, None, &CsvConfig::default()).unwrap();
    assert_eq!(ds.len(), 3);
    assert_eq!(
        (0..3).map(|i| ds.image_path_raw(i)).collect::<Vec<_>>(),
        ["a.jpg", "b.jpg", "c.jpg"]
    );
    let r = ds.skipped();
    assert_eq!(r.count(SkipReason::MalformedLine), 3, "{r}");
    let keys: Vec<String> = r.examples.iter().map(|e| e.key.clone()).collect();
    let expect: Vec<String> = [3, 5, 6]
        .iter()
        .map(|l| format!("{}:{l}", p.display()))
        .collect();
    assert_eq!(keys, expect);
    assert!(
        r.examples[0]
            .message
            .contains("3 fields where the header has 2"),
        "{r}"
    );
    assert!(r.examples[2].message.contains("filepath"), "{r}");
}

#[test]
fn csv_unusable_files_are_errors_naming_file_and_column() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = CsvConfig::default();
    let missing_col = dir.path().join("cols.csv");
    std::fs::write(&missing_col, "caption\tfilepath\nx\ty.jpg\n").unwrap();
    let err = CsvDataset::open_file(&missing_col, None, &cfg).unwrap_err();
    assert!(
        matches!(&err, DataError::CsvColumn { column, .. } if column == "title"),
        "{err}"
    );
    let msg = err.to_string();
    assert!(
        msg.contains("cols.csv") && msg.contains("`title`") && msg.contains("caption, filepath"),
        "{msg}"
    );

    let empty = dir.path().join("empty.csv");
    std::fs::write(&empty, "").unwrap();
    let msg = CsvDataset::open_file(&empty, None, &cfg)
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("empty.csv") && msg.contains("no header"),
        "{msg}"
    );

    let header_only = dir.path().join("header.csv");
    std::fs::write(&header_only, "title\tfilepath\n").unwrap();
    let msg = CsvDataset::open_file(&header_only, None, &cfg)
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("header.csv") && msg.contains("no data rows"),
        "{msg}"
    );

    let absent = dir.path().join("absent.csv");
    let err = CsvDataset::open_file(&absent, None, &cfg).unwrap_err();
    assert!(
        matches!(err, DataError::Io { ref path, .. } if path == &absent),
        "{err}"
    );

    let msg = CsvSource::from_lists("a.csv,b.csv,c.csv", Some("r1,r2"))
        .unwrap_err()
        .to_string();
    assert!(msg.contains("3 CSV files but 2 data roots"), "{msg}");
    let one_root = CsvSource::from_lists("a.csv,b.csv", Some("r")).unwrap();
    assert_eq!(one_root[1].root.as_deref(), Some(Path::new("r")));
}

#[test]
fn csv_custom_keys_separator_and_no_quoting() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("c.csv");
    std::fs::write(&p, "image,text\nx.jpg,\"quoted\" caption\n").unwrap();
    let cfg = CsvConfig::default()
        .with_keys("text", "image")
        .with_separator(b',')
        .with_quoting(false);
    let ds = CsvDataset::open_file(&p, None, &cfg).unwrap();
    assert_eq!(ds.caption(0), "\"quoted\" caption");
    assert_eq!(ds.image_path_raw(0), "x.jpg");
}

#[test]
fn dataset_kind_by_extension_or_flag() {
    assert_eq!(
        DatasetKind::detect("a.csv,b.csv").unwrap(),
        DatasetKind::Csv
    );
    assert_eq!(DatasetKind::detect("x.TSV").unwrap(), DatasetKind::Csv);
    assert_eq!(
        DatasetKind::detect("s-{000..009}.tar").unwrap(),
        DatasetKind::WebDataset
    );
    assert_eq!(
        DatasetKind::detect("a.tar::b.tar").unwrap(),
        DatasetKind::WebDataset
    );
    assert!(DatasetKind::detect("data.parquet").is_err());
    assert_eq!(
        "webdataset".parse::<DatasetKind>().unwrap(),
        DatasetKind::WebDataset
    );
    assert!("lmdb".parse::<DatasetKind>().is_err());
    let err = DataSource::open(
        "x.tar",
        Some("root"),
        DatasetKind::Auto,
        &CsvConfig::default(),
    );
    assert!(err.unwrap_err().to_string().contains("data root"));
}

// ---------------------------------------------------------------------------------------------
// Webdataset

/// Appends a member to a tar under construction.
fn add(b: &mut tar::Builder<Vec<u8>>, name: &str, data: &[u8]) {
    let mut h = tar::Header::new_gnu();
    h.set_size(data.len() as u64);
    h.set_mode(0o644);
    h.set_cksum();
    b.append_data(&mut h, name, data).unwrap();
}

/// A shard of `n` samples `{prefix}{i}` (JPEG + txt, every third PNG + json).
fn shard(prefix: &str, n: u32, seed: u32) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for i in 0..n {
        let key = format!("{prefix}{i:04}");
        if i % 3 == 2 {
            add(&mut b, &format!("{key}.png"), &png(seed + i));
            let json = format!("{{\"caption\": \"json caption {key}\", \"width\": 3}}");
            add(&mut b, &format!("{key}.json"), json.as_bytes());
        } else {
            add(&mut b, &format!("{key}.jpg"), &jpeg(seed + i));
            add(
                &mut b,
                &format!("{key}.txt"),
                format!("caption {key}").as_bytes(),
            );
        }
    }
    b.into_inner().unwrap()
}

/// Cuts a tar in the middle of the data of member `member`.
fn truncate_inside(tar_bytes: &[u8], member: &str) -> Vec<u8> {
    let mut a = tar::Archive::new(Cursor::new(tar_bytes));
    for e in a.entries().unwrap() {
        let e = e.unwrap();
        if e.path().unwrap().to_str() == Some(member) {
            let cut = e.raw_file_position() + e.size() / 2;
            return tar_bytes[..cut as usize].to_vec();
        }
    }
    panic!("no member {member}");
}

#[test]
fn webdataset_layout_captions_and_every_skip_kind() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // Shard 0: txt and json captions, a sample without caption, one without image, a
    // json without caption, a sub-folder key, upper-case extensions, metadata to ignore.
    let mut b = tar::Builder::new(Vec::new());
    add(&mut b, "__meta__", b"ignored");
    add(&mut b, "a.jpg", &jpeg(1));
    add(&mut b, "a.txt", b"a txt caption");
    add(&mut b, "b.png", &png(2));
    add(
        &mut b,
        "b.json",
        br#"{"caption": "a json caption", "url": "http://x"}"#,
    );
    add(&mut b, "c.jpg", &jpeg(3)); // no caption
    add(&mut b, "d.txt", b"no image");
    add(&mut b, "e.jpg", &jpeg(4));
    add(&mut b, "e.json", br#"{"url": "no caption field"}"#);
    add(&mut b, "dir/f.JPG", &jpeg(5));
    add(&mut b, "dir/f.TXT", b"upper case");
    add(&mut b, "g.seg.png", &png(6)); // extension "seg.png": not an image member
    add(&mut b, "g.txt", b"no plain image");
    std::fs::write(d.join("shard-000000.tar"), b.into_inner().unwrap()).unwrap();
    // Shard 1: empty. Shard 2: truncated inside its third sample's image.
    std::fs::write(
        d.join("shard-000001.tar"),
        tar::Builder::new(Vec::new()).into_inner().unwrap(),
    )
    .unwrap();
    let full = shard("t", 4, 10);
    std::fs::write(
        d.join("shard-000002.tar"),
        truncate_inside(&full, "t0002.png"),
    )
    .unwrap();
    // Shard 3: not a tar at all.
    std::fs::write(d.join("shard-000003.tar"), vec![0x5a; 700]).unwrap();

    let pattern = format!("{}/shard-{{000000..000003}}.tar", d.display());
    let ds = WebDataset::from_pattern(&pattern).unwrap();
    assert_eq!(ds.shards().len(), 4);
    let (batches, skipped) = run(ds, LoaderConfig::eval(3).with_workers(2));
    let keys: Vec<String> = batches.iter().flat_map(|b| b.keys.clone()).collect();
    let short: Vec<&str> = keys.iter().map(|k| k.rsplit(':').next().unwrap()).collect();
    assert_eq!(short, ["a", "b", "dir/f", "t0000", "t0001"], "{keys:?}");
    let tok = Tokenizer::new();
    let texts: Vec<Vec<u32>> = batches
        .iter()
        .flat_map(|b| {
            (0..b.num_texts())
                .map(|t| b.text(t).to_vec())
                .collect::<Vec<_>>()
        })
        .collect();
    for (t, caption) in texts.iter().zip([
        "a txt caption",
        "a json caption",
        "upper case",
        "caption t0000",
        "caption t0001",
    ]) {
        assert_eq!(t, &tok.tokenize(caption, 77).unwrap(), "{caption}");
    }
    assert_eq!(skipped.count(SkipReason::NoCaption), 2, "{skipped}"); // c, e
    assert_eq!(skipped.count(SkipReason::NoImage), 2, "{skipped}"); // d, g
    assert_eq!(skipped.count(SkipReason::EmptyShard), 1, "{skipped}");
    assert_eq!(skipped.count(SkipReason::TruncatedShard), 1, "{skipped}");
    assert_eq!(skipped.count(SkipReason::UnreadableShard), 1, "{skipped}");
    assert_eq!(skipped.total(), 7, "{skipped}");
    let trunc = skipped
        .examples
        .iter()
        .find(|e| e.reason == SkipReason::TruncatedShard)
        .unwrap();
    assert!(
        trunc.key.ends_with("shard-000002.tar") && trunc.message.contains("t0002.png"),
        "{trunc}"
    );
    // Sample ids are (shard << 32) | key group index.
    assert_eq!(batches[1].ids, [2u64 << 32, (2u64 << 32) | 1]); // t0000, t0001
}

#[test]
fn shard_patterns_directories_and_globs() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    for i in 0..3 {
        std::fs::write(d.join(format!("s-{i:02}.tar")), shard("k", 1, i)).unwrap();
    }
    std::fs::write(d.join("notes.txt"), "not a shard").unwrap();
    let names = |v: Vec<PathBuf>| -> Vec<String> {
        v.iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect()
    };
    let dir_s = d.display().to_string();
    assert_eq!(
        names(expand_shards(&dir_s).unwrap()),
        ["s-00.tar", "s-01.tar", "s-02.tar"]
    );
    assert_eq!(
        names(expand_shards(&format!("{dir_s}/s-*.tar")).unwrap()).len(),
        3
    );
    assert_eq!(
        names(expand_shards(&format!("{dir_s}/s-{{00,02}}.tar::{dir_s}/s-01.tar")).unwrap()),
        ["s-00.tar", "s-02.tar", "s-01.tar"]
    );
    assert!(expand_shards(&format!("{dir_s}/x-*.tar")).is_err());
    assert!(expand_shards(&format!("{dir_s}/s-{{00..01.tar")).is_err());
    let empty = tempfile::tempdir().unwrap();
    assert!(expand_shards(&empty.path().display().to_string()).is_err());
}

/// Six shards of 5 samples, one empty and one truncated: 29 usable samples.
fn shuffled_shards(d: &Path) -> WebDataset {
    let mut paths = Vec::new();
    for s in 0..6u32 {
        let p = d.join(format!("part-{s}.tar"));
        std::fs::write(&p, shard(&format!("s{s}_"), 5, s * 100)).unwrap();
        paths.push(p);
    }
    let e = d.join("part-empty.tar");
    std::fs::write(&e, tar::Builder::new(Vec::new()).into_inner().unwrap()).unwrap();
    let t = d.join("part-trunc.tar");
    std::fs::write(&t, truncate_inside(&shard("tr_", 3, 900), "tr_0001.jpg")).unwrap();
    paths.insert(2, e);
    paths.insert(5, t);
    WebDataset::new(paths).unwrap()
}

fn fingerprint(b: &Batch) -> (Vec<u64>, Vec<u32>, Vec<u32>) {
    (
        b.ids.clone(),
        b.images.iter().map(|v| v.to_bits()).collect(),
        b.tokens.clone(),
    )
}

#[test]
fn webdataset_shuffle_is_deterministic_complete_and_resumable() {
    let dir = tempfile::tempdir().unwrap();
    let ds = shuffled_shards(dir.path());
    let config = LoaderConfig::train(4)
        .with_seed(3)
        .with_shuffle_buffer(7)
        .with_drop_last(false);
    let l = |workers| {
        DataLoader::new(
            ds.clone(),
            transform(),
            Tokenizer::new(),
            config.clone().with_workers(workers),
        )
        .unwrap()
    };
    let epoch =
        |workers, e| -> Vec<Batch> { l(workers).epoch(e).unwrap().map(Result::unwrap).collect() };
    let e0 = epoch(1, 0);
    // 30 shard samples + 1 of the truncated shard = 31 usable, in batches of 4.
    assert_eq!(e0.iter().map(Batch::len).sum::<usize>(), 31);
    let ids: BTreeSet<u64> = e0.iter().flat_map(|b| b.ids.clone()).collect();
    assert_eq!(ids.len(), 31, "every usable sample exactly once");
    // Worker count does not matter; the epoch does.
    let fp: Vec<_> = e0.iter().map(fingerprint).collect();
    assert_eq!(epoch(4, 0).iter().map(fingerprint).collect::<Vec<_>>(), fp);
    let e1: Vec<u64> = epoch(2, 1).iter().flat_map(|b| b.ids.clone()).collect();
    let e0_ids: Vec<u64> = e0.iter().flat_map(|b| b.ids.clone()).collect();
    assert_ne!(e1, e0_ids);
    // Shuffled: consecutive samples are not in shard order.
    assert!(e0_ids.windows(2).any(|w| w[1] != w[0] + 1));
    // Resume after every batch, through JSON.
    for stop_after in 0..e0.len() {
        let json = serde_json::to_string(&e0[stop_after].position).unwrap();
        let pos: DataPosition = serde_json::from_str(&json).unwrap();
        assert!(pos.stream.is_some());
        let rest: Vec<Batch> = l(3).resume(&pos).unwrap().map(Result::unwrap).collect();
        assert_eq!(
            rest.iter().map(fingerprint).collect::<Vec<_>>(),
            fp[stop_after + 1..].to_vec(),
            "resumed after batch {stop_after} at {pos}"
        );
        let positions: Vec<&DataPosition> = rest.iter().map(|b| &b.position).collect();
        let expected: Vec<&DataPosition> =
            e0[stop_after + 1..].iter().map(|b| &b.position).collect();
        assert_eq!(positions, expected);
    }
    // The skipped shard-level samples are counted once per epoch, resumed or not.
    let mut it = l(2).resume(&e0[2].position).unwrap();
    while it.next().is_some() {}
    assert_eq!(
        it.skipped().count(SkipReason::EmptyShard),
        1,
        "{}",
        it.skipped()
    );
    assert_eq!(
        it.skipped().count(SkipReason::TruncatedShard),
        1,
        "{}",
        it.skipped()
    );
    assert_eq!(it.position(), &DataPosition::start(1));
}

// ---------------------------------------------------------------------------------------------
// ImageFolder and retrieval

#[test]
fn image_folder_classes_in_torchvision_order() {
    let dir = tempfile::tempdir().unwrap();
    let r = dir.path();
    for class in ["b", "a", "A", "a b"] {
        std::fs::create_dir_all(r.join(class)).unwrap();
    }
    std::fs::create_dir_all(r.join("a/sub")).unwrap();
    std::fs::write(r.join("a/y.png"), png(1)).unwrap();
    std::fs::write(r.join("a/X.JPEG"), jpeg(2)).unwrap();
    std::fs::write(r.join("a/notes.txt"), "skip me").unwrap();
    std::fs::write(r.join("a/sub/z.jpg"), jpeg(3)).unwrap();
    std::fs::write(r.join("A/1.jpg"), jpeg(4)).unwrap();
    std::fs::write(r.join("a b/q.webp.jpg"), jpeg(5)).unwrap();
    std::fs::write(r.join("b/0.png"), png(6)).unwrap();
    std::fs::write(r.join("top-level-file.jpg"), jpeg(7)).unwrap();
    let f = ImageFolder::open(r).unwrap();
    assert_eq!(f.classes(), ["A", "a", "a b", "b"]);
    let items: Vec<(String, usize)> = (0..f.len())
        .map(|i| {
            let (p, l) = f.item(i);
            (p.strip_prefix(r).unwrap().display().to_string(), l)
        })
        .collect();
    assert_eq!(
        items,
        [
            ("A/1.jpg".to_string(), 0),
            ("a/X.JPEG".to_string(), 1),
            ("a/y.png".to_string(), 1),
            ("a/sub/z.jpg".to_string(), 1),
            ("a b/q.webp.jpg".to_string(), 2),
            ("b/0.png".to_string(), 3),
        ]
    );
    let (batches, skipped) = run(f, LoaderConfig::eval(4).with_workers(2));
    assert!(skipped.is_empty());
    let labels: Vec<usize> = batches
        .iter()
        .flat_map(|b| b.labels.clone().unwrap())
        .collect();
    assert_eq!(labels, [0, 1, 1, 1, 2, 3]);
    assert!(
        batches
            .iter()
            .all(|b| b.tokens.is_empty() && b.num_texts() == 0)
    );

    std::fs::create_dir_all(r.join("c-empty")).unwrap();
    let msg = ImageFolder::open(r).unwrap_err().to_string();
    assert!(msg.contains("c-empty"), "{msg}");
    let none = tempfile::tempdir().unwrap();
    assert!(
        ImageFolder::open(none.path())
            .unwrap_err()
            .to_string()
            .contains("no class folder")
    );
}

#[test]
fn retrieval_json_and_csv_formats() {
    let dir = tempfile::tempdir().unwrap();
    let r = dir.path();
    std::fs::create_dir_all(r.join("val")).unwrap();
    std::fs::write(r.join("val/1.jpg"), jpeg(1)).unwrap();
    std::fs::write(r.join("val/2.jpg"), jpeg(2)).unwrap();
    let json = r.join("test.json");
    std::fs::write(
        &json,
        r#"[{"image": "val/1.jpg", "caption": "only one", "image_id": 1},
            {"image": "val/2.jpg", "caption": ["first", "second", "third"]}]"#,
    )
    .unwrap();
    let ds = RetrievalDataset::from_json(&json, Some(r)).unwrap();
    assert_eq!(ds.len(), 2);
    assert_eq!(ds.num_texts(), 4);
    assert_eq!(ds.captions(1), ["first", "second", "third"]);
    assert_eq!(ds.texts().map(|(i, _)| i).collect::<Vec<_>>(), [0, 1, 1, 1]);
    let (batches, _) = run(
        ds,
        LoaderConfig::eval(2).with_workers(2).with_context_length(6),
    );
    let b = &batches[0];
    assert_eq!(b.len(), 2);
    assert_eq!(b.tokens_shape(), [4, 6]);
    assert_eq!(b.text_image, [0, 1, 1, 1]);
    assert_eq!(
        b.text(2),
        &Tokenizer::new().tokenize("second", 6).unwrap()[..]
    );

    let bad = r.join("bad.json");
    std::fs::write(
        &bad,
        r#"[{"image": "val/1.jpg", "caption": ["x"]}, {"image": "val/2.jpg", "caption": [3]}]"#,
    )
    .unwrap();
    let msg = RetrievalDataset::from_json(&bad, Some(r))
        .unwrap_err()
        .to_string();
    assert!(msg.contains("bad.json") && msg.contains("entry 1"), "{msg}");

    let csv = r.join("pairs.csv");
    std::fs::write(
        &csv,
        "title\tfilepath\na\tval/1.jpg\nb\tval/2.jpg\nc\tval/1.jpg\n",
    )
    .unwrap();
    let src = CsvSource::new(&csv, Some(r.to_path_buf()));
    let grouped =
        RetrievalDataset::from_csv(&src, &CsvConfig::default(), CaptionGrouping::ByImage).unwrap();
    assert_eq!(grouped.len(), 2);
    assert_eq!(grouped.captions(0), ["a", "c"]);
    assert_eq!(grouped.image_path(1), r.join("val/2.jpg"));
    let pairs = RetrievalDataset::from_csv(&src, &CsvConfig::default(), CaptionGrouping::OnePerRow)
        .unwrap();
    assert_eq!(pairs.len(), 3);
    assert_eq!(pairs.captions(2), ["c"]);
}

#[test]
fn webdataset_parts_read_disjoint_shards_and_resume_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let ds = shuffled_shards(dir.path());
    let part = |p: usize| {
        DataLoader::new(
            ds.clone(),
            transform(),
            Tokenizer::new(),
            LoaderConfig::train(2)
                .with_seed(3)
                .with_shuffle_buffer(4)
                .with_drop_last(false)
                .with_workers(2)
                .with_split(Split::new(p, 3).unwrap()),
        )
        .unwrap()
    };
    let mut all = BTreeSet::new();
    for p in 0..3 {
        let batches: Vec<Batch> = part(p).epoch(1).unwrap().map(Result::unwrap).collect();
        // Shard ids (the high word) seen by this part: no other part reads them.
        let shards: BTreeSet<u64> = batches
            .iter()
            .flat_map(|b| b.ids.iter().map(|id| id >> 32))
            .collect();
        assert!(shards.len() <= 3, "part {p} read shards {shards:?}");
        for b in &batches {
            for &id in &b.ids {
                assert!(all.insert(id), "sample {id:#x} read by two parts");
            }
        }
        for stop_after in 0..batches.len() {
            let rest: Vec<Batch> = part(p)
                .resume(&batches[stop_after].position)
                .unwrap()
                .map(Result::unwrap)
                .collect();
            assert_eq!(
                rest.iter().map(fingerprint).collect::<Vec<_>>(),
                batches[stop_after + 1..]
                    .iter()
                    .map(fingerprint)
                    .collect::<Vec<_>>(),
                "part {p}, resumed after batch {stop_after}"
            );
        }
    }
    // Together the parts read every usable sample of the epoch once.
    assert_eq!(all.len(), 31);
}
