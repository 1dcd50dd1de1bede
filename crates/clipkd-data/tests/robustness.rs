//! Data that is broken in ways that used to lose rows silently, hang or kill the process: CSV
//! files with stray quotes, images whose headers claim billions of pixels, image paths that
//! are FIFOs or directories; and the probe that checks a few samples before training.

use std::io::Cursor;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use clipkd_data::DataError;
use clipkd_data::dataset::{
    CsvConfig, CsvDataset, DataSource, DatasetKind, IndexedDataset, SkipReason, SkipReport,
    SyntheticDataset, WebDataset,
};
use clipkd_data::image::{
    DecodedImage, ImageTransform, MAX_IMAGE_FILE_BYTES, MAX_IMAGE_PIXELS, TransformConfig,
};
use clipkd_data::loader::{DataLoader, LoaderConfig};
use clipkd_data::tokenizer::Tokenizer;

fn encoded(img: image::DynamicImage, format: image::ImageFormat) -> Vec<u8> {
    let mut out = Cursor::new(Vec::new());
    img.write_to(&mut out, format).unwrap();
    out.into_inner()
}

fn rgb(w: u32, h: u32, seed: u32) -> image::DynamicImage {
    image::DynamicImage::ImageRgb8(image::RgbImage::from_fn(w, h, |x, y| {
        image::Rgb([
            ((x * 9 + seed * 29) % 256) as u8,
            ((y * 3 + seed * 13) % 256) as u8,
            ((x * y + seed) % 256) as u8,
        ])
    }))
}

fn jpeg(seed: u32) -> Vec<u8> {
    encoded(rgb(20 + seed % 5, 18, seed), image::ImageFormat::Jpeg)
}

fn png(seed: u32) -> Vec<u8> {
    encoded(rgb(18, 22 + seed % 3, seed), image::ImageFormat::Png)
}

/// The CRC-32 of PNG chunks (ISO-HDLC), bit by bit.
fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in bytes {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xedb8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// A valid 8x8 grayscale PNG (IHDR, a few bytes of IDAT, IEND) whose IHDR claims `w` x `h`
/// (CRC fixed, so that only the size is wrong).
fn lying_png(w: u32, h: u32) -> Vec<u8> {
    let mut b = encoded(
        image::DynamicImage::ImageLuma8(image::GrayImage::new(8, 8)),
        image::ImageFormat::Png,
    );
    assert_eq!(&b[12..16], b"IHDR");
    b[16..20].copy_from_slice(&w.to_be_bytes());
    b[20..24].copy_from_slice(&h.to_be_bytes());
    let crc = crc32(&b[12..29]);
    b[29..33].copy_from_slice(&crc.to_be_bytes());
    b
}

/// A small baseline JPEG whose SOF0 claims `w` x `h`.
fn lying_jpeg(w: u16, h: u16) -> Vec<u8> {
    let mut b = encoded(rgb(16, 16, 1), image::ImageFormat::Jpeg);
    // Walk the marker segments to the frame header.
    let mut i = 2;
    while b[i + 1] != 0xc0 {
        assert_eq!(b[i], 0xff, "marker expected at {i}");
        i += 2 + usize::from(u16::from_be_bytes([b[i + 2], b[i + 3]]));
    }
    b[i + 5..i + 7].copy_from_slice(&h.to_be_bytes());
    b[i + 7..i + 9].copy_from_slice(&w.to_be_bytes());
    b
}

/// Runs `f` on a thread and waits at most `secs` seconds for it: a hang fails the test
/// instead of blocking the test run.
fn within<T: Send + 'static>(secs: u64, what: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(Duration::from_secs(secs))
        .unwrap_or_else(|_| panic!("{what}: no answer within {secs} s (hangs)"))
}

#[cfg(unix)]
fn mkfifo(path: &Path) {
    let status = std::process::Command::new("mkfifo")
        .arg(path)
        .status()
        .expect("run mkfifo");
    assert!(status.success(), "mkfifo {}", path.display());
}

fn transform() -> ImageTransform {
    ImageTransform::new(TransformConfig::square(16)).unwrap()
}

// ---------------------------------------------------------------------------------------------
// CSV

/// `n` rows `caption {i}` / `img{i}.jpg` after the header; row `i` is on line `i + 2`.
fn rows(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("caption {i}\timg{i}.jpg")).collect()
}

fn write_csv(dir: &Path, name: &str, lines: &[String], eol: &str) -> PathBuf {
    let mut text = format!("title\tfilepath{eol}");
    for l in lines {
        text.push_str(l);
        text.push_str(eol);
    }
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

#[test]
fn csv_unterminated_quote_is_an_error_naming_the_line() {
    let dir = tempfile::tempdir().unwrap();
    for eol in ["\n", "\r\n"] {
        // 49 rows; row 10 (line 12) has a caption starting with a stray quote that nothing
        // closes: the csv reader used to take lines 12-50 into one field, silently.
        let mut lines = rows(49);
        lines[10] = "\"stray quote caption\timg10.jpg".into();
        let p = write_csv(dir.path(), "stray.csv", &lines, eol);
        let err = CsvDataset::open_file(&p, None, &CsvConfig::default()).unwrap_err();
        assert!(
            matches!(err, DataError::Csv { ref path, .. } if path == &p),
            "{err}"
        );
        let msg = err.to_string();
        assert!(msg.contains("stray.csv"), "{msg}");
        assert!(msg.contains("line 12:"), "{eol:?}: {msg}");
        assert!(msg.contains("never closed"), "{msg}");
        assert!(msg.contains("data.csv_quoting = false"), "{msg}");
        // Without quoting, every row is there.
        let cfg = CsvConfig::default().with_quoting(false);
        let ds = CsvDataset::open_file(&p, None, &cfg).unwrap();
        assert_eq!(ds.len(), 49);
        assert_eq!(ds.caption(10), "\"stray quote caption");
    }

    // In the header (which then swallows the file): the same error, not a missing column.
    let p = dir.path().join("header.csv");
    std::fs::write(&p, "title\t\"filepath\nx\ty.jpg\n").unwrap();
    let msg = CsvDataset::open_file(&p, None, &CsvConfig::default())
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("line 1:") && msg.contains("never closed"),
        "{msg}"
    );

    // On the last line, after a legitimate multi-line quoted field in the same record.
    let mut lines = rows(3);
    lines.push("\"two\nlines\"\t\"img3.jpg".into());
    let p = write_csv(dir.path(), "last.csv", &lines, "\n");
    let msg = CsvDataset::open_file(&p, None, &CsvConfig::default())
        .unwrap_err()
        .to_string();
    assert!(msg.contains("line 6:"), "{msg}");
}

#[test]
fn csv_closed_quotes_are_not_unterminated() {
    // Quotes that csv_core (and pandas) close: `""` escapes, text after a closing quote, a
    // quote inside an unquoted field, a quoted field ending the file without a newline.
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("ok.csv");
    std::fs::write(
        &p,
        "title\tfilepath\n\
         \"he said \"\"hi\"\"\"\ta.jpg\n\
         \"closed\" then text\tb.jpg\n\
         a \"quote inside\tc.jpg\n\
         \"multi\nline\"\td.jpg\n\
         last\t\"e.jpg\"",
    )
    .unwrap();
    let ds = CsvDataset::open_file(&p, None, &CsvConfig::default()).unwrap();
    assert_eq!(ds.len(), 5, "{}", ds.skipped());
    assert_eq!(ds.caption(0), "he said \"hi\"");
    assert_eq!(ds.caption(1), "closed then text");
    assert_eq!(ds.caption(2), "a \"quote inside");
    assert_eq!(ds.caption(3), "multi\nline");
    assert_eq!(ds.image_path_raw(4), "e.jpg");
    assert!(ds.skipped().is_empty());
    // A file ending in `""` inside a quoted field is still inside it.
    std::fs::write(&p, "title\tfilepath\nok\ta.jpg\n\"x\"\"").unwrap();
    let msg = CsvDataset::open_file(&p, None, &CsvConfig::default())
        .unwrap_err()
        .to_string();
    assert!(msg.contains("line 3:"), "{msg}");
}

#[test]
fn csv_record_spanning_lines_counts_every_line() {
    let dir = tempfile::tempdir().unwrap();
    // A stray quote on line 5 opens a quoted field that the quote on line 9 closes: lines 5-9
    // are read as one record (3 fields), dropped, and counted as 5 bad lines.
    let mut lines = rows(10);
    lines[3] = "\"stray\timg3.jpg".into();
    lines[7] = "closing \"quote\" here\timg7.jpg\textra".into();
    let p = write_csv(dir.path(), "span.csv", &lines, "\n");
    let ds = CsvDataset::open_file(&p, None, &CsvConfig::default()).unwrap();
    assert_eq!(ds.len(), 5, "rows 0-2 and 8-9");
    assert_eq!(ds.image_path_raw(3), "img8.jpg");
    let r = ds.skipped();
    assert_eq!(r.count(SkipReason::MalformedLine), 5, "{r}");
    assert_eq!(r.examples.len(), 1, "{r}");
    assert_eq!(r.examples[0].key, format!("{}:5", p.display()));
    assert!(r.examples[0].message.contains("lines 5-9"), "{r}");
    assert!(r.examples[0].message.contains("3 fields"), "{r}");
}

#[test]
fn csv_malformed_line_numbers_in_crlf_files_and_after_blank_lines() {
    let dir = tempfile::tempdir().unwrap();
    // The csv reader's own line numbers are one short for CRLF files and point at the blank
    // lines before a record: the keys must name the line with the record's text.
    let mut lines = rows(6);
    lines[1] = "too\tmany\tfields".into(); // line 3
    lines[4] = "\n\nno tab".into(); // two blank lines, then line 8
    for eol in ["\n", "\r\n"] {
        let lines: Vec<String> = lines.iter().map(|l| l.replace('\n', eol)).collect();
        let p = write_csv(dir.path(), "crlf.csv", &lines, eol);
        let ds = CsvDataset::open_file(&p, None, &CsvConfig::default()).unwrap();
        assert_eq!(ds.len(), 4);
        let r = ds.skipped();
        assert_eq!(r.count(SkipReason::MalformedLine), 2, "{eol:?}: {r}");
        let keys: Vec<&str> = r.examples.iter().map(|e| e.key.as_str()).collect();
        assert_eq!(
            keys,
            [format!("{}:3", p.display()), format!("{}:8", p.display())],
            "{eol:?}"
        );
    }
}

#[test]
fn read_skips_are_visible_on_the_data_source() {
    let dir = tempfile::tempdir().unwrap();
    let mut lines = rows(5);
    lines[2] = "no separator".into();
    lines[3] = "two\ttoo\tmany".into();
    let p = write_csv(dir.path(), "r.csv", &lines, "\n");
    let data = DataSource::open(
        p.to_str().unwrap(),
        None,
        DatasetKind::Csv,
        &CsvConfig::default(),
    )
    .unwrap();
    let skips = data.read_skips();
    assert_eq!(skips.count(SkipReason::MalformedLine), 2, "{skips}");
    assert_eq!(skips.examples[0].key, format!("{}:4", p.display()));
    // Other datasets: nothing dropped while reading.
    let shard = dir.path().join("s.tar");
    std::fs::write(&shard, tar::Builder::new(Vec::new()).into_inner().unwrap()).unwrap();
    let wds = DataSource::from(WebDataset::new(vec![shard]).unwrap());
    assert!(wds.read_skips().is_empty());
}

// ---------------------------------------------------------------------------------------------
// Images

#[test]
fn ordinary_images_still_decode() {
    let dir = tempfile::tempdir().unwrap();
    for (name, bytes, w, h) in [
        ("a.png", png(1), 18, 23),
        ("b.jpg", jpeg(2), 22, 18),
        (
            "c.bmp",
            encoded(rgb(7, 5, 3), image::ImageFormat::Bmp),
            7,
            5,
        ),
        (
            "d.gif",
            encoded(rgb(6, 9, 4), image::ImageFormat::Gif),
            6,
            9,
        ),
        (
            "e.webp",
            encoded(rgb(9, 4, 5), image::ImageFormat::WebP),
            9,
            4,
        ),
    ] {
        let p = dir.path().join(name);
        std::fs::write(&p, &bytes).unwrap();
        let img = DecodedImage::open(&p).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!((img.width(), img.height()), (w, h), "{name}");
        assert_eq!(DecodedImage::from_bytes(&bytes, name).unwrap(), img);
    }
}

/// Asserts that `err` is [`DataError::ImageTooLarge`] for `w` x `h` and names `name`.
fn assert_too_large(err: &DataError, name: &str, w: u64, h: u64) {
    assert!(
        matches!(err, DataError::ImageTooLarge { width, height, limit, .. }
            if (*width, *height, *limit) == (w, h, MAX_IMAGE_PIXELS)),
        "{name}: {err:?}"
    );
    assert!(err.to_string().contains(name), "{err}");
}

#[test]
fn lying_headers_are_refused_before_decoding() {
    let dir = tempfile::tempdir().unwrap();
    let cases: Vec<(&str, Vec<u8>, u64, u64)> = vec![
        // 74 bytes claiming 30 GB used to abort the process.
        ("huge.png", lying_png(100_000, 100_000), 100_000, 100_000),
        // Used to take 12.5 GB and 100 s.
        ("huge.jpg", lying_jpeg(65_000, 65_000), 65_000, 65_000),
        // Just above PIL's threshold (13400^2 = 179.56 M > 178.96 M).
        ("above.png", lying_png(13_400, 13_400), 13_400, 13_400),
    ];
    for (name, bytes, w, h) in cases {
        assert!(bytes.len() < 1000, "{name}: {} bytes", bytes.len());
        let p = dir.path().join(name);
        std::fs::write(&p, &bytes).unwrap();
        let t = Instant::now();
        let err = within(60, name, move || DecodedImage::open(&p).unwrap_err());
        assert!(
            t.elapsed() < Duration::from_secs(2),
            "{name}: {:?}",
            t.elapsed()
        );
        assert_too_large(&err, name, w, h);
        let err = DecodedImage::from_bytes(&bytes, name).unwrap_err();
        assert_too_large(&err, name, w, h);
    }
    // At or below the threshold the header is believed, as PIL does: decoding this one fails
    // on its missing data (quickly), not on its size.
    let below = lying_png(13_000, 13_000);
    let t = Instant::now();
    let err = DecodedImage::from_bytes(&below, "below.png").unwrap_err();
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
    assert!(matches!(err, DataError::ImageDecode { .. }), "{err:?}");
}

#[test]
fn lying_headers_of_webp_gif_bmp_are_refused() {
    // GIF: logical screen, u16 LE at 6..10.
    let mut gif = encoded(rgb(4, 4, 1), image::ImageFormat::Gif);
    gif[6..8].copy_from_slice(&60_000u16.to_le_bytes());
    gif[8..10].copy_from_slice(&60_000u16.to_le_bytes());
    // BMP: i32 LE width and height at 18..26.
    let mut bmp = encoded(rgb(4, 4, 1), image::ImageFormat::Bmp);
    bmp[18..22].copy_from_slice(&20_000i32.to_le_bytes());
    bmp[22..26].copy_from_slice(&20_000i32.to_le_bytes());
    // Lossless WebP: after `VP8L` and its size, 0x2f then 14 bits width - 1, 14 bits
    // height - 1.
    let mut webp = encoded(rgb(4, 4, 1), image::ImageFormat::WebP);
    assert_eq!(&webp[12..16], b"VP8L");
    assert_eq!(webp[20], 0x2f);
    let bits = u32::from_le_bytes(webp[21..25].try_into().unwrap());
    // (16000, not 16384: image-webp reads a width of 16384 as 0.)
    let bits = (bits & !0x0fff_ffff) | 15_999 | (15_999 << 14);
    webp[21..25].copy_from_slice(&bits.to_le_bytes());
    for (name, bytes, w, h) in [
        ("huge.gif", gif, 60_000, 60_000),
        ("huge.bmp", bmp, 20_000, 20_000),
        ("huge.webp", webp, 16_000, 16_000),
    ] {
        let t = Instant::now();
        let err = within(60, name, move || {
            DecodedImage::from_bytes(&bytes, name).unwrap_err()
        });
        assert!(
            t.elapsed() < Duration::from_secs(2),
            "{name}: {:?}",
            t.elapsed()
        );
        assert_too_large(&err, name, w, h);
    }
}

#[test]
fn files_above_the_byte_limit_are_not_read() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("big.jpg");
    // Sparse: no disk space, but `open` used to read all of it into memory.
    let f = std::fs::File::create(&p).unwrap();
    f.set_len(MAX_IMAGE_FILE_BYTES + 1).unwrap();
    drop(f);
    let t = Instant::now();
    let err = DecodedImage::open(&p).unwrap_err();
    assert!(t.elapsed() < Duration::from_secs(1), "{:?}", t.elapsed());
    assert!(
        matches!(err, DataError::ImageFileTooLarge { bytes, limit, .. }
            if bytes == MAX_IMAGE_FILE_BYTES + 1 && limit == MAX_IMAGE_FILE_BYTES),
        "{err:?}"
    );
    assert!(err.to_string().contains("big.jpg"), "{err}");
}

#[test]
fn directories_and_fifos_are_refused_without_opening() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().join("folder.jpg");
    std::fs::create_dir(&d).unwrap();
    let err = DecodedImage::open(&d).unwrap_err();
    assert!(
        matches!(err, DataError::NotAFile { ref path, kind } if path == &d && kind.contains("directory")),
        "{err:?}"
    );
    #[cfg(unix)]
    {
        let fifo = dir.path().join("pipe.jpg");
        mkfifo(&fifo);
        let f = fifo.clone();
        // Opening a FIFO for reading blocks until a writer appears.
        let err = within(20, "open a FIFO", move || {
            DecodedImage::open(&f).unwrap_err()
        });
        assert!(
            matches!(err, DataError::NotAFile { ref path, kind } if path == &fifo && kind.contains("FIFO")),
            "{err:?}"
        );
        assert!(err.to_string().contains("pipe.jpg"), "{err}");
    }
}

// ---------------------------------------------------------------------------------------------
// The loader and the probe

/// A CSV over `names` (relative to `dir`), captions `caption {i}`.
fn csv_of(dir: &Path, names: &[&str]) -> PathBuf {
    let lines: Vec<String> = names
        .iter()
        .enumerate()
        .map(|(i, n)| format!("caption {i}\t{n}"))
        .collect();
    write_csv(dir, "data.csv", &lines, "\n")
}

#[test]
fn loader_skips_and_counts_lying_images_fifos_and_missing_files() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let names = [
        "g0.jpg",
        "g1.png",
        "lying.png",
        "g3.jpg",
        "fifo.jpg",
        "g5.png",
        "missing.jpg",
        "g7.jpg",
        "folder.jpg",
        "lying.jpg",
        "g10.png",
    ];
    for (i, n) in names.iter().enumerate() {
        if n.starts_with('g') {
            let bytes = if n.ends_with(".png") {
                png(i as u32)
            } else {
                jpeg(i as u32)
            };
            std::fs::write(d.join(n), bytes).unwrap();
        }
    }
    std::fs::write(d.join("lying.png"), lying_png(100_000, 100_000)).unwrap();
    std::fs::write(d.join("lying.jpg"), lying_jpeg(65_000, 65_000)).unwrap();
    std::fs::create_dir(d.join("folder.jpg")).unwrap();
    #[cfg(unix)]
    mkfifo(&d.join("fifo.jpg"));
    #[cfg(not(unix))]
    std::fs::create_dir(d.join("fifo.jpg")).unwrap();
    let csv = csv_of(d, &names);
    let ds = CsvDataset::open_file(&csv, Some(d.to_path_buf()), &CsvConfig::default()).unwrap();
    for (mode, config) in [
        ("eval", LoaderConfig::eval(4).with_workers(2)),
        (
            "train",
            LoaderConfig::train(2).with_workers(3).with_drop_last(false),
        ),
    ] {
        let ds = ds.clone();
        let (ids, report) = within(60, mode, move || {
            let l = DataLoader::new(ds, transform(), Tokenizer::new(), config).unwrap();
            let mut it = l.epoch(0).unwrap();
            let mut ids: Vec<u64> = Vec::new();
            for b in it.by_ref() {
                ids.extend(b.unwrap().ids);
            }
            (ids, it.skipped().clone())
        });
        let mut ids = ids;
        ids.sort();
        assert_eq!(ids, [0, 1, 3, 5, 7, 10], "{mode}: every good sample, once");
        assert_eq!(report.count(SkipReason::TooLarge), 2, "{mode}: {report}");
        assert_eq!(report.count(SkipReason::NotAFile), 2, "{mode}: {report}");
        assert_eq!(report.count(SkipReason::MissingFile), 1, "{mode}: {report}");
        assert_eq!(report.total(), 5, "{mode}: {report}");
        let example = |name: &str| {
            report
                .examples
                .iter()
                .find(|e| e.key.ends_with(name))
                .unwrap_or_else(|| panic!("{name} not in {report}"))
        };
        assert_eq!(example("lying.png").reason, SkipReason::TooLarge);
        assert!(
            example("lying.jpg").message.contains("65000x65000"),
            "{report}"
        );
        #[cfg(unix)]
        assert!(example("fifo.jpg").message.contains("FIFO"), "{report}");
    }
}

#[test]
fn new_skip_reasons_have_stable_names() {
    for (reason, name) in [
        (SkipReason::TooLarge, "too_large"),
        (SkipReason::NotAFile, "not_a_file"),
    ] {
        assert!(SkipReason::ALL.contains(&reason));
        assert_eq!(reason.name(), name);
        assert_eq!(reason.to_string(), name);
    }
    // Every name is distinct, and a checkpoint's skip counts (old names and new) read back.
    let names: std::collections::BTreeSet<_> = SkipReason::ALL.iter().map(|r| r.name()).collect();
    assert_eq!(names.len(), SkipReason::ALL.len());
    let json = r#"{"missing_file": 2, "unreadable_file": 1, "corrupt_image": 3, "too_large": 4, "not_a_file": 5, "malformed_line": 6}"#;
    let counts: std::collections::BTreeMap<SkipReason, u64> = serde_json::from_str(json).unwrap();
    assert_eq!(counts[&SkipReason::TooLarge], 4);
    assert_eq!(counts[&SkipReason::NotAFile], 5);
    assert_eq!(counts[&SkipReason::CorruptImage], 3);
    let report = SkipReport::from_counts(counts);
    assert_eq!(report.total(), 21);
}

#[test]
fn probe_of_a_wrong_data_root_finds_nothing_usable() {
    let dir = tempfile::tempdir().unwrap();
    let names: Vec<String> = (0..20).map(|i| format!("img{i}.jpg")).collect();
    for (i, n) in names.iter().enumerate() {
        std::fs::write(dir.path().join(n), jpeg(i as u32)).unwrap();
    }
    let csv = csv_of(
        dir.path(),
        &names.iter().map(String::as_str).collect::<Vec<_>>(),
    );
    let typo = dir.path().join("no-such-root");
    let data = DataSource::open(
        csv.to_str().unwrap(),
        Some(typo.to_str().unwrap()),
        DatasetKind::Auto,
        &CsvConfig::default(),
    )
    .unwrap();
    let report = data.probe(8, &transform());
    assert_eq!((report.checked, report.usable), (8, 0), "{report}");
    assert!(report.none_usable());
    assert_eq!(report.skipped.count(SkipReason::MissingFile), 8, "{report}");
    // Spread over the dataset: rows 0, 2, 5, 7, 10, 12, 15, 17.
    let keys: Vec<PathBuf> = report
        .skipped
        .examples
        .iter()
        .map(|e| PathBuf::from(&e.key))
        .collect();
    let expect: Vec<PathBuf> = [0, 2, 5, 7, 10, 12, 15, 17]
        .iter()
        .map(|i| typo.join(format!("img{i}.jpg")))
        .collect();
    assert_eq!(keys, expect);
    assert!(
        report.to_string().contains("0 of 8 probed samples usable"),
        "{report}"
    );
    // With the right root, all usable.
    let data = DataSource::open(
        csv.to_str().unwrap(),
        Some(dir.path().to_str().unwrap()),
        DatasetKind::Auto,
        &CsvConfig::default(),
    )
    .unwrap();
    let report = data.probe(8, &transform());
    assert_eq!((report.checked, report.usable), (8, 8), "{report}");
    assert!(!report.none_usable() && report.skipped.is_empty());
}

#[test]
fn probe_counts_mixed_data_by_reason() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // Rows: 0 good, 1 missing, 2 corrupt, 3 good, 4 lying PNG, 5 good.
    let names = [
        "a.jpg",
        "missing.jpg",
        "bad.jpg",
        "b.png",
        "lying.png",
        "c.jpg",
    ];
    std::fs::write(d.join("a.jpg"), jpeg(1)).unwrap();
    std::fs::write(d.join("bad.jpg"), b"not an image").unwrap();
    std::fs::write(d.join("b.png"), png(2)).unwrap();
    std::fs::write(d.join("lying.png"), lying_png(50_000, 50_000)).unwrap();
    std::fs::write(d.join("c.jpg"), jpeg(3)).unwrap();
    let csv = csv_of(d, &names);
    let ds = CsvDataset::open_file(&csv, Some(d.to_path_buf()), &CsvConfig::default()).unwrap();
    assert_eq!(ds.len(), 6);
    let data = DataSource::from(ds);
    // More than the dataset holds: every sample, once.
    let all = data.probe(100, &transform());
    assert_eq!((all.checked, all.usable), (6, 3), "{all}");
    assert_eq!(all.skipped.count(SkipReason::MissingFile), 1, "{all}");
    assert_eq!(all.skipped.count(SkipReason::CorruptImage), 1, "{all}");
    assert_eq!(all.skipped.count(SkipReason::TooLarge), 1, "{all}");
    // Three of six: rows 0, 2, 4.
    let some = data.probe(3, &transform());
    assert_eq!((some.checked, some.usable), (3, 1), "{some}");
    assert_eq!(some.skipped.count(SkipReason::CorruptImage), 1, "{some}");
    assert_eq!(some.skipped.count(SkipReason::TooLarge), 1, "{some}");
    assert_eq!(data.probe(0, &transform()).checked, 0);
}

/// Appends a member to a tar under construction.
fn add(b: &mut tar::Builder<Vec<u8>>, name: &str, data: &[u8]) {
    let mut h = tar::Header::new_gnu();
    h.set_size(data.len() as u64);
    h.set_mode(0o644);
    h.set_cksum();
    b.append_data(&mut h, name, data).unwrap();
}

#[test]
fn probe_of_a_webdataset_reads_the_first_samples_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let mut b = tar::Builder::new(Vec::new());
    add(&mut b, "k0.jpg", &jpeg(0));
    add(&mut b, "k0.txt", b"zero");
    add(&mut b, "k1.txt", b"no image");
    add(&mut b, "k2.png", &lying_png(100_000, 100_000));
    add(&mut b, "k2.txt", b"lying");
    add(&mut b, "k3.png", &png(3));
    add(&mut b, "k3.txt", b"three");
    std::fs::write(d.join("s1.tar"), b.into_inner().unwrap()).unwrap();
    let mut b = tar::Builder::new(Vec::new());
    add(&mut b, "m0.jpg", &jpeg(5));
    add(&mut b, "m0.txt", b"m zero");
    std::fs::write(d.join("s2.tar"), b.into_inner().unwrap()).unwrap();
    let shards = vec![d.join("missing.tar"), d.join("s1.tar"), d.join("s2.tar")];
    let data = DataSource::from(WebDataset::new(shards.clone()).unwrap());
    let r = data.probe(4, &transform());
    // missing shard, k0, k1, k2: then it stops.
    assert_eq!((r.checked, r.usable), (4, 1), "{r}");
    assert_eq!(r.skipped.count(SkipReason::UnreadableShard), 1, "{r}");
    assert_eq!(r.skipped.count(SkipReason::NoImage), 1, "{r}");
    assert_eq!(r.skipped.count(SkipReason::TooLarge), 1, "{r}");
    let r = data.probe(100, &transform());
    assert_eq!((r.checked, r.usable), (6, 3), "{r}");
    // A shard that is a FIFO is not opened (it would block).
    #[cfg(unix)]
    {
        mkfifo(&d.join("fifo.tar"));
        let data =
            DataSource::from(WebDataset::new(vec![d.join("fifo.tar"), d.join("s2.tar")]).unwrap());
        let r = within(20, "probe a FIFO shard", move || {
            data.probe(10, &transform())
        });
        assert_eq!((r.checked, r.usable), (2, 1), "{r}");
        assert_eq!(r.skipped.count(SkipReason::UnreadableShard), 1, "{r}");
        assert!(r.skipped.examples[0].message.contains("FIFO"), "{r}");
    }
}

#[test]
fn probe_of_decoded_images_reads_no_file() {
    // A dataset without files (synthetic): the probe decodes nothing and finds all usable.
    let data = DataSource::from(SyntheticDataset::new(5, 24, 24));
    let r = data.probe(3, &transform());
    assert_eq!((r.checked, r.usable), (3, 3), "{r}");
    assert!(data.read_skips().is_empty());
}
