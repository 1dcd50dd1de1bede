//! The evaluation pipeline end to end with a tiny randomly initialised CLIP on the CPU (Flex):
//! a generated ImageFolder with a corrupt file, and a retrieval JSON with a missing image.
//! The suite's numbers are checked against the same metrics computed independently (images
//! embedded one file at a time without the loader, prompts embedded directly, ranks from a
//! stable sort on the host); counts and skips exactly.
//!
//! Tolerance: both paths run the same model on the same pixels, but through different batch
//! shapes, so scores may differ in the last bits (~1e-7). The independent ranks are computed
//! as bounds: a candidate within 1e-5 of the query's positive may fall either side of it
//! (the model is randomly initialised, so such near-ties are possible but rare; the test
//! requires at least three quarters of the queries to be unambiguous). Every accuracy,
//! recall and mean rank must lie within the bounds; with no near-tie they are equal.
//!
//! Run: `cargo test -p clipkd-train --test eval_pipeline`

use std::path::{Path, PathBuf};

use burn_flex::Flex;
use clipkd_data::dataset::SkipReason;
use clipkd_data::image::ImageTransform;
use clipkd_data::tokenizer::Tokenizer;
use clipkd_models::{Clip, ClipConfig};
use clipkd_train::TrainError;
use clipkd_train::embed::{HostEmbeddings, embed_image_files, embed_texts, eval_transform_config};
use clipkd_train::eval::zero_shot::classifier_from_template_embeddings;
use clipkd_train::eval::{
    CaptionMode, ClassNames, EvalConfig, EvalReport, RetrievalConfig, Templates, ZeroShotConfig,
};

type Device = burn_flex::FlexDevice;

/// A tiny ViT CLIP; the text tower keeps CLIP's 49408-token vocabulary (the real tokenizer
/// emits ids up to 49407) with a small width.
fn tiny_model() -> Clip<Flex> {
    let config = ClipConfig::from_open_clip_json_str(
        r#"{"embed_dim": 16,
            "vision_cfg": {"image_size": 32, "patch_size": 16, "width": 32, "layers": 1,
                           "head_width": 16},
            "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2,
                         "layers": 1}}"#,
    )
    .unwrap();
    config.init::<Flex>(&Device::default()).unwrap()
}

/// Writes a 24-bit BMP whose pixel (x, y) is `f(x, y)`.
fn write_bmp(path: &Path, width: u32, height: u32, f: impl Fn(u32, u32) -> [u8; 3]) {
    let row = (width * 3).div_ceil(4) * 4;
    let size = 54 + row * height;
    let mut b = Vec::with_capacity(size as usize);
    b.extend_from_slice(b"BM");
    b.extend_from_slice(&size.to_le_bytes());
    b.extend_from_slice(&[0; 4]);
    b.extend_from_slice(&54u32.to_le_bytes());
    b.extend_from_slice(&40u32.to_le_bytes());
    b.extend_from_slice(&(width as i32).to_le_bytes());
    b.extend_from_slice(&(height as i32).to_le_bytes());
    b.extend_from_slice(&1u16.to_le_bytes());
    b.extend_from_slice(&24u16.to_le_bytes());
    b.extend_from_slice(&[0; 4]); // BI_RGB
    b.extend_from_slice(&(row * height).to_le_bytes());
    b.extend_from_slice(&[0; 16]);
    for y in (0..height).rev() {
        let start = b.len();
        for x in 0..width {
            let [r, g, bl] = f(x, y);
            b.extend_from_slice(&[bl, g, r]);
        }
        b.resize(start + row as usize, 0);
    }
    std::fs::write(path, b).unwrap();
}

/// Image `k`: a distinct pattern (gradients and stripes varying with k).
fn write_image(path: &Path, k: u32) {
    write_bmp(path, 40 + 3 * k, 36, |x, y| {
        [
            ((x * (k + 3) * 7) % 256) as u8,
            ((y * (k + 1) * 11 + 40 * k) % 256) as u8,
            (((x + y) * 5 + 60 * k) % 256) as u8,
        ]
    });
}

struct Data {
    _dir: tempfile::TempDir,
    folder: PathBuf,
    annotations: PathBuf,
    /// (image file, label) in ImageFolder order, readable images only.
    labelled: Vec<(PathBuf, usize)>,
    /// Readable retrieval images with their captions.
    pairs: Vec<(PathBuf, Vec<String>)>,
}

fn make_data() -> Data {
    let dir = tempfile::tempdir().unwrap();
    let folder = dir.path().join("val");
    let mut labelled = Vec::new();
    let mut k = 0;
    for (label, class) in ["n001_cat", "n002_dog", "n003_fish"].iter().enumerate() {
        std::fs::create_dir_all(folder.join(class)).unwrap();
        for i in 0..3 {
            let path = folder.join(class).join(format!("img{i}.bmp"));
            write_image(&path, k);
            k += 1;
            labelled.push((path, label));
        }
    }
    // A corrupt image: listed (PNG extension), skipped when decoded.
    std::fs::write(folder.join("n002_dog").join("broken.png"), b"not a png").unwrap();

    let images = dir.path().join("images");
    std::fs::create_dir_all(&images).unwrap();
    let captions: [&[&str]; 5] = [
        &["a red striped square", "stripes of red", "a square"],
        &["a dog on grass"],
        &["a fish in the sea", "blue water"],
        &["this image is missing"],
        &[
            "a cat asleep",
            "a sleeping cat",
            "a cat",
            "cat on a sofa",
            "grey cat",
        ],
    ];
    let mut entries = Vec::new();
    let mut pairs = Vec::new();
    for (i, caps) in captions.iter().enumerate() {
        let name = format!("im{i}.bmp");
        if i != 3 {
            write_image(&images.join(&name), 20 + i as u32);
            pairs.push((
                images.join(&name),
                caps.iter().map(|c| c.to_string()).collect(),
            ));
        }
        entries.push(serde_json::json!({"image": name, "caption": caps}));
    }
    let annotations = dir.path().join("test.json");
    std::fs::write(&annotations, serde_json::to_vec(&entries).unwrap()).unwrap();
    Data {
        _dir: dir,
        folder,
        annotations,
        labelled,
        pairs,
    }
}

const TEMPLATES: [&str; 2] = ["a photo of a {}.", "a blurry {} picture"];

fn config(data: &Data, mode: CaptionMode) -> EvalConfig {
    EvalConfig {
        zero_shot: Some(ZeroShotConfig {
            root: data.folder.clone(),
            classnames: ClassNames::Folders,
            templates: Templates::List(TEMPLATES.iter().map(|t| t.to_string()).collect()),
        }),
        retrieval: Some(RetrievalConfig {
            captions: mode,
            ..RetrievalConfig::new(
                &data.annotations,
                Some(data.annotations.with_file_name("images")),
            )
        }),
        batch_size: 4,
        workers: 2,
        ..EvalConfig::default()
    }
}

/// Bounds on the rank of the best-placed positive: `lo` counts only candidates more than
/// `EPS` above a positive, `hi` also those within `EPS` of it.
fn host_rank(query: &[f32], keys: &HostEmbeddings, positives: &[usize]) -> (usize, usize) {
    const EPS: f32 = 1e-5;
    let scores: Vec<f32> = (0..keys.rows)
        .map(|j| query.iter().zip(keys.row(j)).map(|(a, b)| a * b).sum())
        .collect();
    let count = |p: usize, margin: f32| {
        (0..scores.len())
            .filter(|&j| j != p && scores[j] > scores[p] + margin)
            .count()
    };
    let lo = positives.iter().map(|&p| count(p, EPS)).min().unwrap();
    let hi = positives.iter().map(|&p| count(p, -EPS)).min().unwrap();
    (lo, hi)
}

/// Checks `got` against the fraction of queries with rank below `k`, given rank bounds.
fn check_fraction(got: f64, bounds: &[(usize, usize)], k: usize, what: &str) {
    let n = bounds.len() as f64;
    let surely = bounds.iter().filter(|(_, hi)| *hi < k).count() as f64 / n;
    let maybe = bounds.iter().filter(|(lo, _)| *lo < k).count() as f64 / n;
    assert!(
        surely <= got && got <= maybe,
        "{what}: {got} not in [{surely}, {maybe}] (rank bounds {bounds:?})"
    );
}

/// Checks a mean 1-based rank against rank bounds, and that near-ties are rare.
fn check_mean_rank(got: f64, bounds: &[(usize, usize)], what: &str) {
    let n = bounds.len() as f64;
    let lo = bounds.iter().map(|b| b.0).sum::<usize>() as f64 / n + 1.0;
    let hi = bounds.iter().map(|b| b.1).sum::<usize>() as f64 / n + 1.0;
    assert!(
        lo - 1e-12 <= got && got <= hi + 1e-12,
        "{what} mean rank {got} not in [{lo}, {hi}]"
    );
    check_unambiguous(bounds, what);
}

/// At least three quarters of the queries have an exact independent rank.
fn check_unambiguous(bounds: &[(usize, usize)], what: &str) {
    let ambiguous = bounds.iter().filter(|(lo, hi)| lo != hi).count();
    assert!(
        4 * ambiguous <= bounds.len(),
        "{what}: too many near-ties to check ({bounds:?})"
    );
}

fn transform(model: &Clip<Flex>) -> ImageTransform {
    ImageTransform::new(eval_transform_config(model.image_size(), None).unwrap()).unwrap()
}

/// Zero-shot: images one at a time, the classifier from the prompts directly.
fn check_zero_shot(model: &Clip<Flex>, data: &Data, report: &EvalReport) {
    let (device, transform, tokenizer) = (Device::default(), transform(model), Tokenizer::new());
    let paths: Vec<PathBuf> = data.labelled.iter().map(|(p, _)| p.clone()).collect();
    let images = embed_image_files(model, &transform, &paths, 1, &device).unwrap();
    let prompts: Vec<String> = ["n001_cat", "n002_dog", "n003_fish"]
        .iter()
        .flat_map(|c| TEMPLATES.iter().map(move |t| t.replace("{}", c)))
        .collect();
    let classifier = classifier_from_template_embeddings(
        &embed_texts(model, &tokenizer, &prompts, 3, &device).unwrap(),
        TEMPLATES.len(),
    );
    let ranks: Vec<(usize, usize)> = data
        .labelled
        .iter()
        .enumerate()
        .map(|(i, (_, label))| host_rank(images.row(i), &classifier, &[*label]))
        .collect();
    let z = report.zero_shot.as_ref().unwrap();
    check_fraction(z.top1, &ranks, 1, "top-1");
    check_unambiguous(&ranks, "zero-shot");
    // Three images per class: per-class top-1, averaged.
    let (mut surely, mut maybe) = (0.0, 0.0);
    for c in 0..3 {
        let of_c: Vec<(usize, usize)> = (0..ranks.len())
            .filter(|&i| data.labelled[i].1 == c)
            .map(|i| ranks[i])
            .collect();
        surely += of_c.iter().filter(|(_, hi)| *hi == 0).count() as f64 / of_c.len() as f64 / 3.0;
        maybe += of_c.iter().filter(|(lo, _)| *lo == 0).count() as f64 / of_c.len() as f64 / 3.0;
    }
    let got = z.mean_per_class_recall;
    assert!(
        surely - 1e-12 <= got && got <= maybe + 1e-12,
        "mean per-class recall {got} not in [{surely}, {maybe}] (ranks {ranks:?})"
    );
    assert_eq!(z.top5, 1.0, "3 classes: top-5 is top-3");
}

/// Retrieval: images one at a time, captions directly.
fn check_retrieval(model: &Clip<Flex>, data: &Data, report: &EvalReport, mode: CaptionMode) {
    let (device, transform, tokenizer) = (Device::default(), transform(model), Tokenizer::new());
    let paths: Vec<PathBuf> = data.pairs.iter().map(|(p, _)| p.clone()).collect();
    let images = embed_image_files(model, &transform, &paths, 1, &device).unwrap();
    let mut captions = Vec::new();
    let mut owners = Vec::new();
    for (i, (_, caps)) in data.pairs.iter().enumerate() {
        let caps = match mode {
            CaptionMode::All => &caps[..],
            CaptionMode::First => &caps[..1],
        };
        captions.extend(caps.iter().cloned());
        owners.extend(std::iter::repeat_n(i, caps.len()));
    }
    let texts = embed_texts(model, &tokenizer, &captions, 2, &device).unwrap();
    let i2t: Vec<(usize, usize)> = (0..images.rows)
        .map(|i| {
            let own: Vec<usize> = (0..owners.len()).filter(|&t| owners[t] == i).collect();
            host_rank(images.row(i), &texts, &own)
        })
        .collect();
    let t2i: Vec<(usize, usize)> = (0..texts.rows)
        .map(|t| host_rank(texts.row(t), &images, &[owners[t]]))
        .collect();
    let r = report.retrieval.as_ref().unwrap();
    assert_eq!((r.images, r.captions), (images.rows, texts.rows));
    for (k, got_i2t, got_t2i) in [
        (1, r.image_to_text.r_at_1, r.text_to_image.r_at_1),
        (5, r.image_to_text.r_at_5, r.text_to_image.r_at_5),
        (10, r.image_to_text.r_at_10, r.text_to_image.r_at_10),
    ] {
        check_fraction(got_i2t, &i2t, k, &format!("image->text R@{k}"));
        check_fraction(got_t2i, &t2i, k, &format!("text->image R@{k}"));
    }
    check_mean_rank(r.image_to_text.mean_rank, &i2t, "image->text");
    check_mean_rank(r.text_to_image.mean_rank, &t2i, "text->image");
}

#[test]
fn suite_matches_an_independent_computation_and_counts_skips() {
    let data = make_data();
    let model = tiny_model();
    let suite = config(&data, CaptionMode::All).build().unwrap();
    let report = suite.run(&model, &Device::default()).unwrap();

    let z = report.zero_shot.as_ref().unwrap();
    assert_eq!((z.images, z.classes, z.num_templates), (9, 3, 2));
    assert_eq!(z.skipped.count(SkipReason::CorruptImage), 1);
    assert_eq!(z.skipped.total(), 1);
    assert!(z.skipped.examples[0].key.ends_with("broken.png"));

    let r = report.retrieval.as_ref().unwrap();
    // Image 3 is missing: it and its caption are left out.
    assert_eq!((r.images, r.captions), (4, 11));
    assert_eq!(r.skipped.count(SkipReason::MissingFile), 1);
    check_zero_shot(&model, &data, &report);
    check_retrieval(&model, &data, &report, CaptionMode::All);

    // The flat metrics and the JSON.
    let metrics = report.metrics();
    let get = |name: &str| metrics.iter().find(|(n, _)| n == name).map(|(_, v)| *v);
    assert_eq!(get("zeroshot/top1"), Some(z.top1));
    assert_eq!(get("zeroshot/skipped"), Some(1.0));
    assert_eq!(
        get("retrieval/image_to_text_R@1"),
        Some(r.image_to_text.r_at_1)
    );
    assert_eq!(
        get("retrieval/text_to_image_R@10"),
        Some(r.text_to_image.r_at_10)
    );
    assert_eq!(get("retrieval/captions"), Some(11.0));
    let json = serde_json::to_value(&report).unwrap();
    assert_eq!(
        json["retrieval"]["image_to_text"]["R@5"],
        r.image_to_text.r_at_5
    );
    assert_eq!(json["zero_shot"]["skipped"]["counts"]["corrupt_image"], 1);
    let back: EvalReport = serde_json::from_value(json).unwrap();
    assert_eq!(back, report);
    let table = report.to_string();
    assert!(
        table.contains("top-1") && table.contains("image->text"),
        "{table}"
    );
}

#[test]
fn one_caption_mode_keeps_the_first_caption() {
    let data = make_data();
    let model = tiny_model();
    let mut cfg = config(&data, CaptionMode::First);
    cfg.zero_shot = None;
    cfg.workers = 1;
    let report = cfg
        .build()
        .unwrap()
        .run(&model, &Device::default())
        .unwrap();
    assert!(report.zero_shot.is_none());
    let r = report.retrieval.as_ref().unwrap();
    assert_eq!((r.images, r.captions), (4, 4));
    assert_eq!(r.mode, CaptionMode::First);
    check_retrieval(&model, &data, &report, CaptionMode::First);
}

#[test]
fn build_errors_name_the_file_before_any_work() {
    let data = make_data();
    let err = |cfg: EvalConfig| -> String {
        match cfg.build() {
            Err(e) => format!("{e}"),
            Ok(_) => panic!("expected an error"),
        }
    };
    // The bundled ImageNet names need 1000 class folders.
    let mut cfg = config(&data, CaptionMode::All);
    cfg.zero_shot.as_mut().unwrap().classnames = ClassNames::Imagenet;
    let e = err(cfg);
    assert!(e.contains("3 class folders") && e.contains("1000"), "{e}");

    // A class-name file with too few names, and a template file with a bad line.
    let names = data.folder.with_file_name("names.txt");
    std::fs::write(&names, "cat\ndog\n").unwrap();
    let mut cfg = config(&data, CaptionMode::All);
    cfg.zero_shot.as_mut().unwrap().classnames = ClassNames::File(names.clone());
    let e = err(cfg);
    assert!(
        e.contains("names.txt") && e.contains("2 names for 3 class folders"),
        "{e}"
    );

    let templates = data.folder.with_file_name("templates.txt");
    std::fs::write(&templates, "a photo of a {}.\n\nitap of a <class>\n").unwrap();
    let mut cfg = config(&data, CaptionMode::All);
    cfg.zero_shot.as_mut().unwrap().templates = Templates::File(templates);
    let e = err(cfg);
    assert!(
        e.contains("templates.txt, line 3") && e.contains("no `{}`"),
        "{e}"
    );

    // Missing folder and annotation file.
    let mut cfg = config(&data, CaptionMode::All);
    cfg.zero_shot.as_mut().unwrap().root = data.folder.join("nope");
    assert!(err(cfg).contains("nope"));
    let mut cfg = config(&data, CaptionMode::All);
    cfg.retrieval.as_mut().unwrap().annotations = data.folder.with_file_name("missing.json");
    assert!(err(cfg).contains("missing.json"));
    let mut cfg = config(&data, CaptionMode::All);
    cfg.retrieval.as_mut().unwrap().annotations = data.folder.with_file_name("a.txt");
    assert!(err(cfg).contains("cannot tell the format"));
    // A wrong image root: no image of the annotations exists.
    let mut cfg = config(&data, CaptionMode::All);
    cfg.retrieval.as_mut().unwrap().root = Some(data.folder.clone());
    let e = err(cfg);
    assert!(
        e.contains("test.json") && e.contains("none of the first 5 images exists"),
        "{e}"
    );
}

#[test]
fn all_images_unreadable_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("a")).unwrap();
    std::fs::write(dir.path().join("a/x.png"), b"junk").unwrap();
    let cfg = EvalConfig {
        zero_shot: Some(ZeroShotConfig {
            root: dir.path().to_path_buf(),
            classnames: ClassNames::Folders,
            templates: Templates::OpenaiImagenet,
        }),
        workers: 1,
        ..EvalConfig::default()
    };
    let err = cfg.build().unwrap().run(&tiny_model(), &Device::default());
    match err {
        Err(TrainError::Data(e)) => {
            let msg = e.to_string();
            assert!(
                msg.contains("no image could be read") && msg.contains("corrupt_image"),
                "{msg}"
            );
        }
        other => panic!("expected a data error, got {other:?}"),
    }
}
