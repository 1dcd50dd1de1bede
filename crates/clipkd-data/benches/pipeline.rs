//! Throughput of the training data pipeline through the loader: read + JPEG decode + train
//! transform (RandomResizedCrop to 224) + tokenize, on a generated CSV dataset of JPEGs about
//! 500x375 (a CC3M-like size), with one worker and with every core.
//!
//! Run: `cargo bench -p clipkd-data --bench pipeline` (optionally `-- <images> <epochs>`,
//! default 256 images, 2 epochs per setting; the first epoch of the first setting also warms
//! the page cache). Prints images/s and images/s per worker.

use std::path::Path;
use std::time::Instant;

use clipkd_data::dataset::{CsvConfig, CsvDataset};
use clipkd_data::image::{DecodedImage, ImageTransform, TransformConfig};
use clipkd_data::loader::{DataLoader, LoaderConfig};
use clipkd_data::tokenizer::Tokenizer;

/// A photo-like JPEG (smooth gradients, a few shapes, mild noise) of `w` x `h`.
fn photo(w: u32, h: u32, seed: u32) -> Vec<u8> {
    let mut state = seed.wrapping_mul(2_654_435_761).wrapping_add(1);
    let mut noise = move || {
        state ^= state << 13;
        state ^= state >> 17;
        state ^= state << 5;
        (state % 13) as i32 - 6
    };
    let (cx, cy, r) = (
        (seed * 37 % w) as i32,
        (seed * 53 % h) as i32,
        (40 + seed % 90) as i32,
    );
    let img = image::RgbImage::from_fn(w, h, |x, y| {
        let (xi, yi) = (x as i32, y as i32);
        let inside = (xi - cx).pow(2) + (yi - cy).pow(2) < r * r;
        let base = [
            (x * 255 / w) as i32,
            (y * 255 / h) as i32,
            ((x + y + seed * 7) % 256) as i32,
        ];
        let px = if inside {
            [255 - base[1], base[2], base[0] / 2]
        } else {
            base
        };
        let n = noise();
        image::Rgb(px.map(|v| (v + n).clamp(0, 255) as u8))
    });
    let mut out = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 90)
        .encode_image(&img)
        .expect("JPEG encoding");
    out
}

fn write_dataset(dir: &Path, n: usize) -> (std::path::PathBuf, usize) {
    let mut csv = String::from("title\tfilepath\n");
    let mut bytes = 0;
    for i in 0..n {
        let (w, h) = if i % 4 == 3 { (375, 500) } else { (500, 375) };
        let data = photo(w, h, i as u32);
        bytes += data.len();
        std::fs::write(dir.join(format!("{i:05}.jpg")), data).expect("write image");
        csv.push_str(&format!(
            "a photo of generated scene number {i} with a circle and a gradient\t{i:05}.jpg\n"
        ));
    }
    let path = dir.join("train.csv");
    std::fs::write(&path, csv).expect("write csv");
    (path, bytes)
}

fn main() {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let images = args.first().copied().unwrap_or(256);
    let epochs = args.get(1).copied().unwrap_or(2).max(1);
    let dir = tempfile::tempdir().expect("temporary directory");
    let (csv, bytes) = write_dataset(dir.path(), images);
    let ds = CsvDataset::open_file(&csv, Some(dir.path().to_path_buf()), &CsvConfig::default())
        .expect("dataset");
    let transform = ImageTransform::new(TransformConfig::default()).expect("transform");
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!(
        "{images} JPEGs, about 500x375, {} KiB on average; train transform to 224, context 77; \
         {cores} cores",
        bytes / images / 1024
    );

    // The same work on the calling thread, without the loader, as a reference.
    let tok = Tokenizer::new();
    let mut out = vec![0.0f32; transform.output_len()];
    let mut rng = <rand::rngs::StdRng as rand::SeedableRng>::seed_from_u64(0);
    let t0 = Instant::now();
    for i in 0..images {
        let img = DecodedImage::open(dir.path().join(format!("{i:05}.jpg"))).expect("decode");
        transform.train_into(&img, &mut rng, &mut out);
        std::hint::black_box(tok.tokenize(&format!("a photo of scene {i}"), 77).unwrap());
    }
    let direct = images as f64 / t0.elapsed().as_secs_f64();
    println!("{:>28}: {direct:8.1} images/s", "direct loop, 1 thread");

    let mut settings = vec![1];
    if cores > 1 {
        settings.push(cores);
    }
    for workers in settings {
        let loader = DataLoader::new(
            ds.clone(),
            transform.clone(),
            Tokenizer::new(),
            LoaderConfig::train(32)
                .with_workers(workers)
                .with_prefetch(4),
        )
        .expect("loader");
        let mut done = 0usize;
        let t0 = Instant::now();
        for epoch in 0..epochs as u64 {
            for batch in loader.epoch(epoch).expect("epoch") {
                let batch = batch.expect("batch");
                done += batch.len();
                std::hint::black_box(&batch.images);
            }
        }
        let rate = done as f64 / t0.elapsed().as_secs_f64();
        println!(
            "{:>28}: {rate:8.1} images/s, {:.1} images/s per worker ({:.0}% of the direct loop)",
            format!("loader, {workers} worker(s)"),
            rate / workers as f64,
            100.0 * rate / workers as f64 / direct
        );
    }
}
