//! Single-core throughput of image preprocessing on the fixture photos: decode + eval transform
//! and decode + train transform at 224, plus decode alone and each transform alone.
//!
//! Run: `cargo bench -p clipkd-data --bench image_preprocess` (optionally `-- <seconds per case>`).
//! `CLIPKD_IMAGE_DIR` overrides the image folder (default: the fixture photos).

use std::hint::black_box;
use std::path::Path;
use std::time::{Duration, Instant};

use clipkd_data::image::{DecodedImage, ImageTransform, TransformConfig};
use rand::SeedableRng;
use rand::rngs::StdRng;

/// Runs `f` repeatedly for about `budget` and returns calls per second.
fn rate(budget: Duration, mut f: impl FnMut()) -> f64 {
    f(); // warm-up
    let start = Instant::now();
    let mut n = 0u64;
    while start.elapsed() < budget {
        f();
        n += 1;
    }
    n as f64 / start.elapsed().as_secs_f64()
}

fn main() {
    let secs: f64 = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(0.4);
    let budget = Duration::from_secs_f64(secs);
    let dir = std::env::var_os("CLIPKD_IMAGE_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| {
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/images/src")
        });
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .expect("fixture images")
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    let t = ImageTransform::new(TransformConfig::default()).unwrap();
    let mut out = vec![0.0f32; t.output_len()];
    let mut rng = StdRng::seed_from_u64(0);
    println!(
        "{:26} {:>9} {:>11} {:>11} {:>9} {:>9} {:>9}   (images/s, one core, 224x224)",
        "file", "size", "decode+eval", "decode+train", "decode", "eval", "train"
    );
    let (mut sum_eval, mut sum_train) = (0.0, 0.0);
    for path in &files {
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let bytes = std::fs::read(path).unwrap();
        let img = DecodedImage::from_bytes(&bytes, &name).unwrap();
        let decode_eval = rate(budget, || {
            let img = DecodedImage::from_bytes(black_box(&bytes), &name).unwrap();
            t.eval_into(&img, &mut out);
            black_box(&out);
        });
        let decode_train = rate(budget, || {
            let img = DecodedImage::from_bytes(black_box(&bytes), &name).unwrap();
            t.train_into(&img, &mut rng, &mut out);
            black_box(&out);
        });
        let decode = rate(budget, || {
            black_box(DecodedImage::from_bytes(black_box(&bytes), &name).unwrap());
        });
        let eval = rate(budget, || {
            t.eval_into(black_box(&img), &mut out);
            black_box(&out);
        });
        let train = rate(budget, || {
            t.train_into(black_box(&img), &mut rng, &mut out);
            black_box(&out);
        });
        // Harmonic accumulation: total time for one pass over all files.
        sum_eval += 1.0 / decode_eval;
        sum_train += 1.0 / decode_train;
        println!(
            "{name:26} {:>9} {decode_eval:11.0} {decode_train:12.0} {decode:9.0} {eval:9.0} {train:9.0}",
            format!("{}x{}", img.width(), img.height())
        );
    }
    let n = files.len() as f64;
    println!(
        "mean over the {} files: decode+eval {:.0} images/s, decode+train {:.0} images/s per core",
        files.len(),
        n / sum_eval,
        n / sum_train
    );
}
