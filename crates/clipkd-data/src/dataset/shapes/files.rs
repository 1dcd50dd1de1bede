//! [`write_shapes_dataset`]: both splits as PNG files, CSV captions, class names and templates,
//! for the ordinary pipeline to read.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::DataError;
use crate::dataset::IndexedDataset;

use super::*;

/// The files of a written shapes dataset (see the [module docs](self) for the layout).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShapesFiles {
    /// The folder everything is in (the data root of both CSVs).
    pub root: PathBuf,
    /// The training CSV (`title`, `filepath` relative to `root`).
    pub train_csv: PathBuf,
    /// The held-out image folder (one sub-folder per class).
    pub heldout_dir: PathBuf,
    /// The held-out captions (CSV like `train_csv`).
    pub heldout_csv: PathBuf,
    /// `folder<TAB>class name` lines.
    pub classnames: PathBuf,
    /// The zero-shot templates, one per line.
    pub templates: PathBuf,
    /// The config and the counts.
    pub metadata: PathBuf,
    /// Training images written.
    pub train_samples: usize,
    /// Held-out images written.
    pub heldout_samples: usize,
    /// Zero-shot classes.
    pub classes: usize,
}

/// The file name of the metadata written with a shapes dataset.
pub const SHAPES_METADATA: &str = "dataset.json";

/// Generates both splits of `config` and writes them under `root` as PNG files and CSVs (the
/// layout in the [module docs](self)); existing files of the same names are replaced.
///
/// # Errors
/// An invalid config ([`DataError::DatasetSpec`]); a file or folder that cannot be written or
/// created ([`DataError::Write`], naming it).
pub fn write_shapes_dataset(
    config: &ShapesConfig,
    root: impl AsRef<Path>,
) -> Result<ShapesFiles, DataError> {
    let root = root.as_ref();
    config.validate()?;
    let train = ShapesDataset::generate(config, ShapesSplit::Train)?;
    let heldout = ShapesDataset::generate(config, ShapesSplit::HeldOut)?;
    let side = config.image_size;

    let train_dir = root.join(ShapesSplit::Train.name());
    let heldout_dir = root.join(ShapesSplit::HeldOut.name());
    create_dir(&train_dir)?;
    for class in heldout.classes() {
        create_dir(&heldout_dir.join(class.folder()))?;
    }
    let digits = train.len().max(heldout.len()).max(2).ilog10() as usize + 1;
    let digits = digits.max(6);

    let mut train_rows = Vec::with_capacity(train.len());
    for i in 0..train.len() {
        let rel = format!("{}/{i:0digits$}.png", ShapesSplit::Train.name());
        write_png(&root.join(&rel), side, &train.image(i).to_rgb8())?;
        train_rows.push((train.caption(i), rel));
    }
    let mut heldout_rows = Vec::with_capacity(heldout.len());
    for i in 0..heldout.len() {
        let class = heldout.classes()[heldout.label(i)];
        let rel = format!(
            "{}/{}/{i:0digits$}.png",
            ShapesSplit::HeldOut.name(),
            class.folder()
        );
        write_png(&root.join(&rel), side, &heldout.image(i).to_rgb8())?;
        heldout_rows.push((heldout.caption(i), rel));
    }

    let train_csv = root.join("train.csv");
    write_csv(&train_csv, &train_rows)?;
    let heldout_csv = root.join("heldout.csv");
    write_csv(&heldout_csv, &heldout_rows)?;
    let classnames = root.join("classnames.txt");
    let names: String = heldout
        .classes()
        .iter()
        .map(|c| format!("{}\t{}\n", c.folder(), c.name()))
        .collect();
    write_file(&classnames, names.as_bytes())?;
    let templates = root.join("templates.txt");
    let lines: String = zero_shot_templates(config)
        .iter()
        .map(|t| format!("{t}\n"))
        .collect();
    write_file(&templates, lines.as_bytes())?;

    let files = ShapesFiles {
        root: root.to_path_buf(),
        train_csv,
        heldout_dir,
        heldout_csv,
        classnames,
        templates,
        metadata: root.join(SHAPES_METADATA),
        train_samples: train.len(),
        heldout_samples: heldout.len(),
        classes: heldout.classes().len(),
    };
    let meta = serde_json::json!({
        "config": config,
        "classes": heldout.classes().iter().map(ShapeClass::name).collect::<Vec<_>>(),
        "caption_templates": CAPTION_TEMPLATES,
        "zero_shot_templates": zero_shot_templates(config),
        "files": files,
    });
    let text = serde_json::to_string_pretty(&meta).expect("a JSON value always serializes");
    write_file(&files.metadata, text.as_bytes())?;
    Ok(files)
}

/// A [`DataError::Write`] for `path`.
fn write_error(path: &Path) -> impl Fn(std::io::Error) -> DataError + '_ {
    move |source| DataError::Write {
        path: path.to_path_buf(),
        source,
    }
}

fn create_dir(path: &Path) -> Result<(), DataError> {
    std::fs::create_dir_all(path).map_err(write_error(path))
}

fn write_file(path: &Path, bytes: &[u8]) -> Result<(), DataError> {
    std::fs::write(path, bytes).map_err(write_error(path))
}

/// A tab-separated CSV with the header `title<TAB>filepath`. Captions never contain tabs, quotes
/// or newlines, so no field needs quoting.
fn write_csv(path: &Path, rows: &[(String, String)]) -> Result<(), DataError> {
    let mut text = String::from("title\tfilepath\n");
    for (caption, file) in rows {
        debug_assert!(!caption.contains(['\t', '"', '\n']));
        text.push_str(caption);
        text.push('\t');
        text.push_str(file);
        text.push('\n');
    }
    write_file(path, text.as_bytes())
}

/// An 8-bit RGB PNG.
fn write_png(path: &Path, side: usize, rgb: &[u8]) -> Result<(), DataError> {
    let mut bytes = Vec::with_capacity(rgb.len() + 256);
    {
        let mut encoder = png::Encoder::new(&mut bytes, side as u32, side as u32);
        encoder.set_color(png::ColorType::Rgb);
        encoder.set_depth(png::BitDepth::Eight);
        let png_error = |e: png::EncodingError| write_error(path)(std::io::Error::other(e));
        let mut writer = encoder.write_header().map_err(png_error)?;
        writer.write_image_data(rgb).map_err(png_error)?;
        writer.finish().map_err(png_error)?;
    }
    let mut file = std::fs::File::create(path).map_err(write_error(path))?;
    file.write_all(&bytes).map_err(write_error(path))
}
