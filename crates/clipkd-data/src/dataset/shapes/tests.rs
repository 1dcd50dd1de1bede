use std::collections::{HashMap, HashSet};

use super::*;
use crate::dataset::{CsvConfig, CsvDataset, ImageFolder};
use crate::tokenizer::Tokenizer;

fn small() -> ShapesConfig {
    ShapesConfig {
        train_samples: 120,
        heldout_samples: 90,
        seed: 3,
        ..ShapesConfig::default()
    }
}

/// Parses a caption back into its attributes (each word list is unambiguous).
fn parse_caption(caption: &str) -> (ShapeSize, ShapeColour, ShapeKind, ShapePosition) {
    let words: Vec<&str> = caption
        .split([' ', ','])
        .filter(|w| !w.is_empty())
        .collect();
    let one = |names: Vec<&'static str>| -> usize {
        let hits: Vec<usize> = (0..names.len())
            .filter(|&i| words.contains(&names[i]))
            .collect();
        assert_eq!(
            hits.len(),
            1,
            "caption `{caption}` names {hits:?} of {names:?}"
        );
        hits[0]
    };
    let size = ShapeSize::ALL[one(ShapeSize::ALL.iter().map(|s| s.name()).collect())];
    let colour = ShapeColour::ALL[one(ShapeColour::ALL.iter().map(|c| c.name()).collect())];
    let kind = ShapeKind::ALL[one(ShapeKind::ALL.iter().map(|k| k.name()).collect())];
    let positions: Vec<ShapePosition> = ShapePosition::ALL
        .into_iter()
        .filter(|p| caption.contains(p.phrase()))
        .collect();
    assert_eq!(
        positions.len(),
        1,
        "caption `{caption}`: positions {positions:?}"
    );
    (size, colour, kind, positions[0])
}

#[test]
fn generation_is_deterministic_and_seeded() {
    let a = ShapesDataset::generate(&small(), ShapesSplit::Train).unwrap();
    let b = ShapesDataset::generate(&small(), ShapesSplit::Train).unwrap();
    assert_eq!(a.scenes(), b.scenes());
    for i in 0..a.len() {
        assert_eq!(a.image(i).to_rgb8(), b.image(i).to_rgb8(), "sample {i}");
    }
    // A sample does not depend on how many are generated.
    let mut more = small();
    more.train_samples = 200;
    let c = ShapesDataset::generate(&more, ShapesSplit::Train).unwrap();
    assert_eq!(&c.scenes()[..120], a.scenes());
    // Another seed, other data.
    let mut other = small();
    other.seed = 4;
    let d = ShapesDataset::generate(&other, ShapesSplit::Train).unwrap();
    let same = (0..a.len())
        .filter(|&i| a.image(i).to_rgb8() == d.image(i).to_rgb8())
        .count();
    assert_eq!(same, 0);
    // Pinned values: a change to the generator or the rasterizer shows up here.
    let first = a.caption(0);
    let pixels = a.image(0).to_rgb8();
    let sum: u64 = pixels.iter().map(|&v| u64::from(v)).sum();
    assert_eq!(pixels.len(), 32 * 32 * 3);
    assert_eq!(
        (first.as_str(), sum),
        (PINNED_CAPTION, PINNED_SUM),
        "{first} {sum}"
    );
}

const PINNED_CAPTION: &str = "a picture of a medium orange cross in the top left corner";
const PINNED_SUM: u64 = 448_030;

#[test]
fn captions_and_labels_describe_the_image() {
    let config = small();
    for split in [ShapesSplit::Train, ShapesSplit::HeldOut] {
        let ds = ShapesDataset::generate(&config, split).unwrap();
        for i in 0..ds.len() {
            let scene = &ds.scenes()[i];
            let (size, colour, kind, position) = parse_caption(&ds.caption(i));
            assert_eq!(
                (size, colour, kind, position),
                (scene.size, scene.colour, scene.kind, scene.position)
            );
            assert_eq!(ds.classes()[ds.label(i)], scene.class());
            let sample = ds.sample(i);
            assert_eq!(sample.label, Some(ds.label(i)));
            assert_eq!(sample.captions, vec![ds.caption(i)]);

            // The pixel at the shape's centre has the shape's colour (up to the colour
            // jitter of ±20 and the noise of ±12), and lies in the cell the caption names.
            let side = config.image_size as f32;
            let rgb = ds.image(i).to_rgb8();
            let (cx, cy) = scene.position.centre();
            let (fx, fy) = ((cx + scene.offset.0) * side, (cy + scene.offset.1) * side);
            let (x, y) = (fx.floor() as usize, fy.floor() as usize);
            let p = (y * config.image_size + x) * 3;
            let nominal = scene.colour.rgb();
            let dist = (0..3)
                .map(|c| (i16::from(rgb[p + c]) - i16::from(nominal[c])).abs())
                .max()
                .unwrap();
            assert!(
                dist <= 20 + 12 + 1,
                "sample {i}: centre pixel {:?} vs {nominal:?}",
                &rgb[p..p + 3]
            );
            let (col, row) = scene.position.cell();
            let cell = |v: f32| (3.0 * v / side) as usize;
            assert_eq!((cell(fx), cell(fy)), (col, row), "sample {i}");
        }
    }
}

#[test]
fn heldout_is_balanced_distinct_and_disjoint_from_train() {
    let config = small();
    let train = ShapesDataset::generate(&config, ShapesSplit::Train).unwrap();
    let heldout = ShapesDataset::generate(&config, ShapesSplit::HeldOut).unwrap();
    let classes = config.classes().len();
    assert_eq!(classes, 30);
    let mut per_class = HashMap::new();
    for i in 0..heldout.len() {
        *per_class.entry(heldout.label(i)).or_insert(0) += 1;
        assert_eq!(heldout.label(i), i % classes);
    }
    assert_eq!(per_class.len(), classes);
    assert!(per_class.values().all(|&n| n == 3));
    // 90 <= 30 classes x 27 (size, position) pairs: every held-out caption's attributes
    // are distinct.
    let combos: HashSet<_> = heldout
        .scenes()
        .iter()
        .map(|s| (s.kind, s.colour, s.size, s.position))
        .collect();
    assert_eq!(combos.len(), heldout.len());
    // No held-out image equals a training image.
    let train_pixels: HashSet<Vec<u8>> =
        (0..train.len()).map(|i| train.image(i).to_rgb8()).collect();
    assert!((0..heldout.len()).all(|i| !train_pixels.contains(&heldout.image(i).to_rgb8())));
    // Train attributes are spread: every colour and shape appears.
    let colours: HashSet<_> = train.scenes().iter().map(|s| s.colour).collect();
    let kinds: HashSet<_> = train.scenes().iter().map(|s| s.kind).collect();
    assert_eq!((colours.len(), kinds.len()), (6, 5));
    // Classes are in ImageFolder order (sorted folder names).
    let folders: Vec<String> = config.classes().iter().map(ShapeClass::folder).collect();
    let mut sorted = folders.clone();
    sorted.sort();
    assert_eq!(folders, sorted);
}

#[test]
fn written_files_are_read_back_by_the_pipeline() {
    let dir = tempfile::tempdir().unwrap();
    let config = ShapesConfig {
        train_samples: 40,
        heldout_samples: 30,
        colours: vec![ShapeColour::Red, ShapeColour::Blue],
        kinds: vec![ShapeKind::Circle, ShapeKind::Triangle, ShapeKind::Cross],
        ..ShapesConfig::default()
    };
    let files = write_shapes_dataset(&config, dir.path()).unwrap();
    assert_eq!(
        (files.train_samples, files.heldout_samples, files.classes),
        (40, 30, 6)
    );
    let memory = ShapesDataset::generate(&config, ShapesSplit::Train).unwrap();

    let csv = CsvDataset::open_file(
        &files.train_csv,
        Some(files.root.clone()),
        &CsvConfig::default(),
    )
    .unwrap();
    assert_eq!(csv.len(), 40);
    for i in 0..csv.len() {
        let s = csv.sample(i);
        assert_eq!(s.captions, vec![memory.caption(i)]);
        let ImageSource::File(path) = &s.image else {
            panic!("a file sample")
        };
        let decoded = DecodedImage::open(path).unwrap();
        assert_eq!(
            decoded.to_rgb8(),
            memory.image(i).to_rgb8(),
            "PNG round trip {i}"
        );
    }
    let folder = ImageFolder::open(&files.heldout_dir).unwrap();
    let expected: Vec<String> = config.classes().iter().map(ShapeClass::folder).collect();
    assert_eq!(folder.classes(), expected.as_slice());
    assert_eq!(folder.len(), 30);
    let heldout = ShapesDataset::generate(&config, ShapesSplit::HeldOut).unwrap();
    let captions = std::fs::read_to_string(&files.heldout_csv).unwrap();
    let rows: Vec<&str> = captions.lines().skip(1).collect();
    assert_eq!(rows.len(), 30);
    for (i, row) in rows.iter().enumerate() {
        let (caption, file) = row.split_once('\t').unwrap();
        assert_eq!(caption, heldout.caption(i));
        // The file sits in its class folder, and ImageFolder gives it the same label.
        let class = heldout.classes()[heldout.label(i)];
        assert!(
            file.starts_with(&format!("heldout/{}/", class.folder())),
            "{file}"
        );
        let index = (0..folder.len())
            .find(|&k| folder.item(k).0 == files.root.join(file))
            .unwrap();
        assert_eq!(folder.item(index).1, heldout.label(i));
    }
    let names = std::fs::read_to_string(&files.classnames).unwrap();
    assert!(
        names.lines().any(|l| l == "red_circle\tred circle"),
        "{names}"
    );
    let templates = std::fs::read_to_string(&files.templates).unwrap();
    assert_eq!(templates.lines().count(), 3 * 3 * 9);
    assert!(
        templates.lines().all(|t| t.matches("{}").count() == 1),
        "{templates}"
    );
    assert!(
        templates
            .lines()
            .any(|t| t == "a small {} in the top left corner"),
        "{templates}"
    );
    let meta: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&files.metadata).unwrap()).unwrap();
    assert_eq!(meta["config"]["train_samples"], 40);
}

#[test]
fn captions_fit_a_short_context() {
    // Every template with the longest attribute words stays within 15 tokens with SOT and
    // EOT, so a context of 16 never truncates.
    let tokenizer = Tokenizer::new();
    let config = ShapesConfig::default();
    let mut longest = 0;
    for template in 0..CAPTION_TEMPLATES.len() {
        for &position in &config.positions {
            for &colour in &config.colours {
                for &kind in &config.kinds {
                    for &size in &config.sizes {
                        let scene = ShapeScene {
                            template,
                            position,
                            colour,
                            kind,
                            size,
                            ..config.scene(ShapesSplit::Train, 0)
                        };
                        let ids = tokenizer.encode(&scene.caption());
                        longest = longest.max(ids.len() + 2);
                    }
                }
            }
        }
    }
    assert!(longest <= 15, "longest caption: {longest} tokens");
    assert_eq!(
        ShapeScene {
            template: 3,
            colour: ShapeColour::Orange,
            ..config.scene(ShapesSplit::Train, 0)
        }
        .caption()
        .split(' ')
        .next(),
        Some("an")
    );
}

#[test]
fn bad_configs_are_errors_that_name_the_field() {
    let c = ShapesConfig {
        image_size: 8,
        ..ShapesConfig::default()
    };
    assert!(c.validate().unwrap_err().to_string().contains("image_size"));
    let mut c = ShapesConfig::default();
    c.kinds.clear();
    assert!(c.validate().unwrap_err().to_string().contains("kinds"));
    let mut c = ShapesConfig::default();
    c.colours.push(ShapeColour::Red);
    assert!(c.validate().unwrap_err().to_string().contains("repeat"));
    let c = ShapesConfig {
        heldout_samples: 0,
        ..ShapesConfig::default()
    };
    assert!(
        c.validate()
            .unwrap_err()
            .to_string()
            .contains("heldout_samples")
    );
    let dir = tempfile::tempdir().unwrap();
    assert!(matches!(
        write_shapes_dataset(&c, dir.path()),
        Err(DataError::DatasetSpec { what }) if what.contains("heldout_samples")
    ));
}

#[test]
fn unwritable_files_are_errors_that_name_them() {
    let dir = tempfile::tempdir().unwrap();
    let blocker = dir.path().join("file");
    std::fs::write(&blocker, "x").unwrap();
    let e = write_shapes_dataset(
        &ShapesConfig {
            train_samples: 2,
            heldout_samples: 2,
            ..ShapesConfig::default()
        },
        &blocker,
    )
    .unwrap_err();
    match &e {
        DataError::Write { path, .. } => assert!(path.starts_with(&blocker), "{e}"),
        other => panic!("expected DataError::Write, got {other:?}"),
    }
    let message = e.to_string();
    assert!(
        message.contains("cannot write") && message.contains(&*blocker.to_string_lossy()),
        "{message}"
    );
}
