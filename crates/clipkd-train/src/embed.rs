//! Batched inference: image files and texts to embeddings, as open_clip's eval pipeline does
//! (decode, eval transform, `encode_image`; clean, tokenize, `encode_text`).

use std::path::PathBuf;

use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor, TensorData};
use clipkd_data::image::{DecodedImage, ImageTransform, TransformConfig};
use clipkd_data::tokenizer::Tokenizer;
use clipkd_models::{Clip, ClipConfig};

use crate::error::TrainError;

/// Row-major `[rows, dim]` embeddings, f32, on the host.
#[derive(Debug, Clone, PartialEq)]
pub struct HostEmbeddings {
    /// The values, row after row.
    pub data: Vec<f32>,
    /// Number of rows.
    pub rows: usize,
    /// Embedding size.
    pub dim: usize,
}

impl HostEmbeddings {
    /// Row `i`.
    pub fn row(&self, i: usize) -> &[f32] {
        &self.data[i * self.dim..(i + 1) * self.dim]
    }
}

/// The eval transform of a model: its image size, OpenAI mean/std, bicubic, `shortest` resize,
/// then whatever an open_clip `preprocess_cfg` object overrides.
pub fn eval_transform_config(
    config: &ClipConfig,
    preprocess_cfg: Option<&serde_json::Value>,
) -> Result<TransformConfig, TrainError> {
    let [h, w] = config.image_size();
    let base = TransformConfig::default().with_size(h, w);
    Ok(match preprocess_cfg {
        Some(cfg) => base.merge_preprocess_cfg(cfg)?,
        None => base,
    })
}

/// Normalized (unit-norm) image embeddings of image files, in order, `batch_size` at a time.
/// The first file that cannot be read or decoded stops it with an error naming the file.
pub fn embed_image_files<B: Backend>(
    model: &Clip<B>,
    transform: &ImageTransform,
    paths: &[PathBuf],
    batch_size: usize,
    device: &B::Device,
) -> Result<HostEmbeddings, TrainError> {
    let [c, h, w] = transform.output_shape();
    let per_image = c * h * w;
    let mut out = HostEmbeddings {
        data: Vec::with_capacity(paths.len() * model.embed_dim()),
        rows: 0,
        dim: model.embed_dim(),
    };
    for chunk in paths.chunks(batch_size.max(1)) {
        let mut pixels = vec![0f32; chunk.len() * per_image];
        for (path, slot) in chunk.iter().zip(pixels.chunks_mut(per_image)) {
            let image = DecodedImage::open(path)?;
            transform.eval_into(&image, slot);
        }
        let images =
            Tensor::<B, 4>::from_data(TensorData::new(pixels, [chunk.len(), c, h, w]), device);
        append_rows(&mut out, model.encode_image_normalized(images))?;
    }
    Ok(out)
}

/// Normalized text embeddings, in order, `batch_size` at a time (open_clip's cleaning and
/// tokenization, truncated to the model's context length with the end-of-text token kept).
pub fn embed_texts<B: Backend>(
    model: &Clip<B>,
    tokenizer: &Tokenizer,
    texts: &[impl AsRef<str>],
    batch_size: usize,
    device: &B::Device,
) -> Result<HostEmbeddings, TrainError> {
    let context = model.context_length();
    let vocab = model.config().text.vocab_size;
    if vocab < tokenizer.vocab_size() && !texts.is_empty() {
        return Err(TrainError::TokenizerMismatch {
            model_vocab: vocab,
            tokenizer_vocab: tokenizer.vocab_size(),
        });
    }
    let mut out = HostEmbeddings {
        data: Vec::with_capacity(texts.len() * model.embed_dim()),
        rows: 0,
        dim: model.embed_dim(),
    };
    for chunk in texts.chunks(batch_size.max(1)) {
        let ids: Vec<i64> = tokenizer
            .tokenize_batch(chunk, context)
            .into_iter()
            .map(i64::from)
            .collect();
        let tokens =
            Tensor::<B, 2, Int>::from_data(TensorData::new(ids, [chunk.len(), context]), device);
        append_rows(&mut out, model.encode_text_normalized(tokens))?;
    }
    Ok(out)
}

/// Appends a `[n, dim]` device tensor's rows to host embeddings (read back as f32).
pub(crate) fn append_rows<B: Backend>(
    out: &mut HostEmbeddings,
    rows: Tensor<B, 2>,
) -> Result<(), TrainError> {
    let [n, _] = rows.dims();
    let values = rows
        .into_data()
        .convert::<f32>()
        .into_vec::<f32>()
        .map_err(|e| TrainError::Device(format!("reading embeddings back: {e:?}")))?;
    out.data.extend(values);
    out.rows += n;
    Ok(())
}
