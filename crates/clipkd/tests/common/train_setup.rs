//! A tiny distillation run for the tests that drive `clipkd distill|train`: model configs,
//! teacher weights, captioned images, a CSV and a run config.
#![allow(dead_code)] // each test file uses its own subset

use std::path::{Path, PathBuf};

use burn_flex::Flex;
use clipkd_models::{ClipConfig, save_open_clip};

pub const STUDENT_JSON: &str = r#"{
  "embed_dim": 16,
  "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "head_width": 16, "patch_size": 8},
  "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1}
}"#;

pub const TEACHER_JSON: &str = r#"{
  "embed_dim": 24,
  "vision_cfg": {"image_size": 32, "layers": 1, "width": 48, "head_width": 16, "patch_size": 8},
  "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 48, "heads": 3, "layers": 1}
}"#;

/// A 24-bit BMP of `w` x `h` pixels, `rgb(x, y)` each.
pub fn write_bmp(path: &Path, w: usize, h: usize, rgb: impl Fn(usize, usize) -> [u8; 3]) {
    let row = (w * 3).div_ceil(4) * 4;
    let size = 54 + row * h;
    let mut b = Vec::with_capacity(size);
    b.extend_from_slice(b"BM");
    b.extend_from_slice(&(size as u32).to_le_bytes());
    b.extend_from_slice(&[0; 4]);
    b.extend_from_slice(&54u32.to_le_bytes());
    b.extend_from_slice(&40u32.to_le_bytes());
    b.extend_from_slice(&(w as i32).to_le_bytes());
    b.extend_from_slice(&(h as i32).to_le_bytes());
    b.extend_from_slice(&1u16.to_le_bytes());
    b.extend_from_slice(&24u16.to_le_bytes());
    b.extend_from_slice(&[0; 24]);
    for y in (0..h).rev() {
        let start = b.len();
        for x in 0..w {
            let [r, g, bl] = rgb(x, y);
            b.extend_from_slice(&[bl, g, r]);
        }
        b.resize(start + row, 0);
    }
    std::fs::write(path, b).unwrap();
}

const COLOURS: [(&str, [u8; 3]); 4] = [
    ("red", [220, 30, 30]),
    ("green", [30, 200, 40]),
    ("blue", [30, 40, 220]),
    ("yellow", [230, 220, 30]),
];

/// Writes the model configs and teacher weights into `dir`.
pub fn write_models(dir: &Path) {
    std::fs::write(dir.join("student.json"), STUDENT_JSON).unwrap();
    std::fs::write(dir.join("teacher.json"), TEACHER_JSON).unwrap();
    let teacher = ClipConfig::from_open_clip_json(dir.join("teacher.json")).unwrap();
    let model = teacher.init::<Flex>(&Default::default()).unwrap();
    save_open_clip(&model, dir.join("teacher.safetensors")).unwrap();
}

/// Writes `n` captioned images `images/NN.bmp` (a coloured square on grey, captioned with its
/// colour) into `dir`; returns the CSV rows (`caption\tpath`, relative to `dir`).
pub fn write_images(dir: &Path, n: usize) -> Vec<String> {
    std::fs::create_dir_all(dir.join("images")).unwrap();
    (0..n)
        .map(|i| {
            let (name, colour) = COLOURS[i % 4];
            let file = format!("images/{i:02}.bmp");
            let offset = i * 3 % 10;
            write_bmp(&dir.join(&file), 40, 40, |x, y| {
                if (offset..offset + 28).contains(&x) && (offset..offset + 28).contains(&y) {
                    colour
                } else {
                    [128, 128, 128]
                }
            });
            format!("a photo of a {name} square\t{file}")
        })
        .collect()
}

/// Writes `train.csv` (header `title\tfilepath`, then `rows`) into `dir`.
pub fn write_csv(dir: &Path, rows: &[String]) -> PathBuf {
    let mut csv = String::from("title\tfilepath\n");
    for r in rows {
        csv.push_str(r);
        csv.push('\n');
    }
    let path = dir.join("train.csv");
    std::fs::write(&path, csv).unwrap();
    path
}

/// Models, teacher weights, 16 captioned images, `train.csv` and `run.toml` in `dir`: batches
/// of 4, so 4 steps per epoch, 2 epochs, one loader worker, every step logged, output in
/// `dir/run`. `extra` is appended inside the `[run]` table: more `[run]` keys first, then
/// other tables (`[eval]`). Returns the config's path.
pub fn setup(dir: &Path, extra: &str) -> PathBuf {
    write_models(dir);
    let rows = write_images(dir, 16);
    write_csv(dir, &rows);
    write_config(dir, extra)
}

/// An `[eval]` table: retrieval on the training images of [`setup`] in `dir`, every 4 steps
/// (and every epoch), batches of 8, one worker.
pub fn retrieval_on_training_images(dir: &Path) -> String {
    let d = dir.display();
    format!(
        r#"
# Retrieval on the training images themselves, every 4 steps and every epoch.
[eval]
every_steps = 4
batch_size = 8
workers = 1

[eval.retrieval]
annotations = "{d}/train.csv"
root = "{d}"
"#
    )
}

/// Writes `run.toml` for the files of [`setup`] (see there).
pub fn write_config(dir: &Path, extra: &str) -> PathBuf {
    let d = dir.display();
    let config = dir.join("run.toml");
    std::fs::write(
        &config,
        format!(
            r#"# 16 images, batches of 4: 4 steps per epoch.
[data]
train_data = "{d}/train.csv"
data_root = "{d}"
batch_size = 4
workers = 1

[student]
model = "{d}/student.json"

[teacher]
model = "{d}/teacher.json"
weights = "{d}/teacher.safetensors"

[optim]
epochs = 2
warmup = 1
lr = 2e-3

[run]
output_dir = "{d}/run"
log_every_steps = 1
{extra}
"#
        ),
    )
    .unwrap();
    config
}

/// The rows of a run's `metrics.jsonl`.
pub fn metric_rows(run: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(run.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}
