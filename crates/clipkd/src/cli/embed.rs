//! `clipkd embed`: image and text embeddings of a CLIP model, written as safetensors.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::Context;
use burn::tensor::backend::AutodiffBackend;
use clap::Args;
use clipkd_data::image::ImageTransform;
use clipkd_data::tokenizer::Tokenizer;
use clipkd_models::{ModelError, load_open_clip};
use clipkd_train::embed::{HostEmbeddings, embed_image_files, embed_texts, eval_transform_config};
use clipkd_train::error::TrainError;
use safetensors::tensor::{Dtype, TensorView};

use super::backend::{BackendTask, DeviceSpec, Precision, dispatch};
use super::model_args::{ModelArgs, ResolvedModel};
use super::output::check_output;

/// Options of `clipkd embed`.
#[derive(Debug, Clone, Args)]
pub struct EmbedArgs {
    /// The model and its weights.
    #[command(flatten)]
    pub model: ModelArgs,
    /// An image to embed (JPEG, PNG, WebP...); repeat for several. Rows follow argument order.
    #[arg(long = "image", value_name = "PATH")]
    pub images: Vec<PathBuf>,
    /// A UTF-8 text file: one caption per line, each line embedded (empty lines included).
    #[arg(long, value_name = "PATH")]
    pub text_file: Option<PathBuf>,
    /// Where to write the embeddings: a safetensors file with `image_embeds` [images, dim] and
    /// `text_embeds` [lines, dim], f32, L2-normalized, and what produced them in its
    /// `__metadata__` (model, weights, clipkd version, inputs).
    #[arg(long, short = 'o', value_name = "OUT.safetensors")]
    pub output: PathBuf,
    /// Device: cpu, cuda[:N], wgpu[:N] (among those compiled in).
    #[arg(long, default_value = "cpu")]
    pub device: DeviceSpec,
    /// Precision: f32; bf16 or f16 mixed precision (half-precision matrix products, the rest
    /// f32; CPU and CUDA); pure_bf16 or pure_f16 (every tensor; CPU and CUDA).
    #[arg(long, value_name = "f32|bf16|f16|pure_bf16|pure_f16", default_value_t = Precision::F32)]
    pub precision: Precision,
    /// Images or captions per forward pass.
    #[arg(long, default_value_t = 32)]
    pub batch_size: usize,
}

/// Runs `clipkd embed`.
pub fn run(args: EmbedArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        !args.images.is_empty() || args.text_file.is_some(),
        "nothing to embed: give at least one --image or a --text-file"
    );
    anyhow::ensure!(args.batch_size > 0, "--batch-size must be at least 1");
    // Check every input before any work, so a typo fails fast and names the file.
    for path in &args.images {
        anyhow::ensure!(path.is_file(), "image file not found: {}", path.display());
    }
    args.model.check()?;
    check_output(&args.output)?;
    let texts = match &args.text_file {
        Some(path) => read_lines(path)?,
        None => Vec::new(),
    };
    let model = args.model.resolve()?;
    let transform = ImageTransform::new(eval_transform_config(
        model.config.image_size(),
        model.preprocess_cfg.as_ref(),
    )?)
    .context("image preprocessing settings")?;
    let metadata = metadata(&args, &model);
    let task = EmbedTask {
        args: args.clone(),
        model,
        transform,
        texts,
    };
    // Fails on a NaN or infinite embedding, naming the input, before anything is written.
    let (images, texts) = dispatch(args.device, args.precision, task)?;
    write_embeddings(&args.output, &images, &texts, metadata)?;
    eprintln!(
        "wrote {} image and {} text embeddings (dim {}) to {}",
        images.rows,
        texts.rows,
        images.dim,
        args.output.display()
    );
    Ok(())
}

struct EmbedTask {
    args: EmbedArgs,
    model: ResolvedModel,
    transform: ImageTransform,
    texts: Vec<String>,
}

impl BackendTask for EmbedTask {
    type Output = (HostEmbeddings, HostEmbeddings);

    fn run<B: AutodiffBackend>(self, device: B::Device) -> anyhow::Result<Self::Output> {
        // Inference only: the inner backend builds no autodiff graph.
        let weights = &self.model.weights;
        let model = load_open_clip::<B::InnerBackend>(weights, &self.model.config, &device)
            .with_context(|| format!("loading weights {}", weights.display()))?;
        let images = embed_image_files(
            &model,
            &self.transform,
            &self.args.images,
            self.args.batch_size,
            &device,
        )?;
        let texts = embed_texts(
            &model,
            &Tokenizer::new(),
            &self.texts,
            self.args.batch_size,
            &device,
        )
        .map_err(|e| {
            let file = self.args.text_file.as_deref().unwrap_or(Path::new(""));
            // The library counts texts from 0; the user thinks in lines.
            let lines = match e {
                TrainError::Model(ModelError::NonFiniteEmbedding { .. }) => {
                    " (text index N is line N + 1)"
                }
                _ => "",
            };
            anyhow::Error::new(e)
                .context(format!("embedding the lines of {}{lines}", file.display()))
        })?;
        Ok((images, texts))
    }
}

/// The lines of a text file; `a\n\nb\n` has three (the empty one included), `\r\n` is accepted.
fn read_lines(path: &Path) -> anyhow::Result<Vec<String>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading text file {}", path.display()))?;
    Ok(text.lines().map(str::to_owned).collect())
}

/// What the output's `__metadata__` records: the model, the weights (and the pretrained tag),
/// the clipkd version and the inputs (image paths as a JSON list, the text file).
fn metadata(args: &EmbedArgs, model: &ResolvedModel) -> HashMap<String, String> {
    let images: Vec<String> = args
        .images
        .iter()
        .map(|p| p.display().to_string())
        .collect();
    let mut m = HashMap::from([
        ("format".to_string(), "clipkd-embeddings".to_string()),
        ("model".to_string(), args.model.model.to_string()),
        ("weights".to_string(), model.weights.display().to_string()),
        (
            "clipkd_version".to_string(),
            env!("CARGO_PKG_VERSION").to_string(),
        ),
        (
            "images".to_string(),
            serde_json::to_string(&images).expect("strings serialize"),
        ),
        ("normalized".to_string(), "l2".to_string()),
    ]);
    if let Some(t) = &args.text_file {
        m.insert("text_file".to_string(), t.display().to_string());
    }
    if let Some(tag) = &args.model.pretrained {
        m.insert("pretrained".to_string(), tag.clone());
    }
    m
}

/// Writes `image_embeds` and `text_embeds` as f32 tensors, with `metadata`.
fn write_embeddings(
    path: &Path,
    images: &HostEmbeddings,
    texts: &HostEmbeddings,
    metadata: HashMap<String, String>,
) -> anyhow::Result<()> {
    let bytes =
        |e: &HostEmbeddings| -> Vec<u8> { e.data.iter().flat_map(|v| v.to_le_bytes()).collect() };
    let (image_bytes, text_bytes) = (bytes(images), bytes(texts));
    let views = [
        ("image_embeds", images, &image_bytes),
        ("text_embeds", texts, &text_bytes),
    ]
    .into_iter()
    .map(|(name, e, b)| {
        TensorView::new(Dtype::F32, vec![e.rows, e.dim], b)
            .map(|view| (name.to_string(), view))
            .map_err(|err| anyhow::anyhow!("building tensor {name}: {err}"))
    })
    .collect::<anyhow::Result<HashMap<_, _>>>()?;
    let bytes = safetensors::serialize(views, Some(metadata))
        .map_err(|e| anyhow::anyhow!("writing {}: {e}", path.display()))?;
    std::fs::write(path, with_sorted_header(bytes))
        .with_context(|| format!("writing {}", path.display()))
}

/// A safetensors file's bytes with the keys of its JSON header in sorted order. safetensors
/// 0.7 writes `__metadata__` from a `HashMap`, whose order changes from one process to the
/// next, so two runs embedding the same inputs wrote files that differed in bytes.
fn with_sorted_header(bytes: Vec<u8>) -> Vec<u8> {
    let len = u64::from_le_bytes(bytes[..8].try_into().expect("8 bytes")) as usize;
    let header: serde_json::Value =
        serde_json::from_slice(&bytes[8..8 + len]).expect("safetensors writes a JSON header");
    let mut json = serde_json::to_vec(&sorted_keys(header)).expect("JSON values serialize");
    // The same tokens in another order: the same length, padded with spaces as safetensors does.
    assert!(json.len() <= len, "a reordered header is no longer");
    json.resize(len, b' ');
    let mut out = bytes;
    out[8..8 + len].copy_from_slice(&json);
    out
}

/// `value` with every object's keys inserted in sorted order (so sorted whether or not
/// serde_json keeps insertion order).
fn sorted_keys(value: serde_json::Value) -> serde_json::Value {
    match value {
        serde_json::Value::Object(map) => {
            let mut entries: Vec<_> = map.into_iter().collect();
            entries.sort_by(|a, b| a.0.cmp(&b.0));
            entries
                .into_iter()
                .map(|(k, v)| (k, sorted_keys(v)))
                .collect()
        }
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two writes of the same embeddings with the same metadata (two maps, so two iteration
    /// orders) are the same bytes, and the file reads back with its tensors and metadata.
    #[test]
    fn the_same_embeddings_are_the_same_bytes() {
        let dir = std::env::temp_dir().join(format!("clipkd-embed-bytes-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let images = HostEmbeddings {
            rows: 2,
            dim: 3,
            data: vec![0.5, -1.0, 2.0, 0.0, 1e-3, 7.0],
        };
        let texts = HostEmbeddings {
            rows: 0,
            dim: 3,
            data: vec![],
        };
        let metadata = || -> HashMap<String, String> {
            (0..12)
                .map(|i| (format!("key{i}"), format!("value \"{i}\"")))
                .collect()
        };
        let files: Vec<Vec<u8>> = (0..2)
            .map(|i| {
                let path = dir.join(format!("{i}.safetensors"));
                write_embeddings(&path, &images, &texts, metadata()).unwrap();
                std::fs::read(path).unwrap()
            })
            .collect();
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(files[0], files[1]);
        let (_, read) = safetensors::SafeTensors::read_metadata(&files[0]).unwrap();
        assert_eq!(read.metadata().as_ref(), Some(&metadata()));
        let file = safetensors::SafeTensors::deserialize(&files[0]).unwrap();
        let image = file.tensor("image_embeds").unwrap();
        assert_eq!(image.shape(), [2, 3]);
        let values: Vec<f32> = image
            .data()
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
            .collect();
        assert_eq!(values, images.data);
        assert_eq!(file.tensor("text_embeds").unwrap().shape(), [0, 3]);
    }
}
