//! Batched inference: image files and texts to embeddings, as open_clip's eval pipeline does
//! (decode, eval transform, `encode_image`; clean, tokenize, `encode_text`).

use std::path::PathBuf;

use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor, TensorData};
use clipkd_data::image::{DecodedImage, ImageTransform, TransformConfig};
use clipkd_data::tokenizer::Tokenizer;
use clipkd_models::{ClipEncoder, ModelError};

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

    /// The first row at or after `from` holding a NaN or infinite value.
    pub fn first_non_finite_row(&self, from: usize) -> Option<usize> {
        (from..self.rows).find(|&i| self.row(i).iter().any(|v| !v.is_finite()))
    }
}

/// Fails, naming the input of the first non-finite row from `from` on: such a row would be
/// written or compared as if it were an embedding.
fn check_finite(
    out: &HostEmbeddings,
    from: usize,
    input: impl Fn(usize) -> String,
) -> Result<(), TrainError> {
    match out.first_non_finite_row(from) {
        Some(row) => Err(ModelError::NonFiniteEmbedding { input: input(row) }.into()),
        None => Ok(()),
    }
}

/// The eval transform of a model taking `image_size` (`[height, width]`,
/// [`ClipEncoder::image_size`]): OpenAI mean/std, bicubic, `shortest` resize, then whatever an
/// open_clip `preprocess_cfg` object overrides.
pub fn eval_transform_config(
    image_size: [usize; 2],
    preprocess_cfg: Option<&serde_json::Value>,
) -> Result<TransformConfig, TrainError> {
    let [h, w] = image_size;
    let base = TransformConfig::default().with_size(h, w);
    Ok(match preprocess_cfg {
        Some(cfg) => base.merge_preprocess_cfg(cfg)?,
        None => base,
    })
}

/// Normalized (unit-norm) image embeddings of image files, in order, `batch_size` at a time.
/// The first file that cannot be read or decoded, or whose embedding is not finite
/// ([`ModelError::NonFiniteEmbedding`]), stops it with an error naming the file.
pub fn embed_image_files<B: Backend, M: ClipEncoder<B>>(
    model: &M,
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
        let first = out.rows;
        append_rows(&mut out, model.encode_image_normalized(images)?)?;
        check_finite(&out, first, |row| {
            format!("image {}", chunk[row - first].display())
        })?;
    }
    Ok(out)
}

/// Normalized text embeddings, in order, `batch_size` at a time (open_clip's cleaning and
/// tokenization, truncated to the model's context length with the end-of-text token kept).
/// A text whose embedding is not finite stops it with [`ModelError::NonFiniteEmbedding`]
/// naming its index (from 0) and its start.
pub fn embed_texts<B: Backend, M: ClipEncoder<B>>(
    model: &M,
    tokenizer: &Tokenizer,
    texts: &[impl AsRef<str>],
    batch_size: usize,
    device: &B::Device,
) -> Result<HostEmbeddings, TrainError> {
    let context = model.context_length();
    let vocab = model.vocab_size();
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
            .tokenize_batch(chunk, context)?
            .into_iter()
            .map(i64::from)
            .collect();
        let tokens =
            Tensor::<B, 2, Int>::from_data(TensorData::new(ids, [chunk.len(), context]), device);
        let first = out.rows;
        append_rows(&mut out, model.encode_text_normalized(tokens)?)?;
        check_finite(&out, first, |row| {
            let text = chunk[row - first].as_ref();
            let start: String = text.chars().take(40).collect();
            let more = if start.len() < text.len() { "..." } else { "" };
            format!("text at index {row} ({start:?}{more})")
        })?;
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

#[cfg(test)]
mod tests {

    use burn::module::{Module, ModuleMapper, Param};
    use burn_flex::Flex;
    use clipkd_data::image::ImageTransform;

    use super::*;
    use clipkd_models::{Clip, ClipConfig};

    type B = Flex;

    /// A tiny ViT CLIP with the tokenizer's vocabulary (open_clip's default `vocab_size`).
    const TINY: &str = r#"{
        "embed_dim": 16,
        "vision_cfg": {"image_size": 16, "layers": 1, "width": 16, "head_width": 8, "patch_size": 8},
        "text_cfg": {"context_length": 8, "width": 16, "heads": 2, "layers": 1}
    }"#;

    /// Multiplies every float parameter by a number (NaN here: broken weights that bypass
    /// the checkpoint loader's check).
    struct Scale(f32);

    impl<Bk: Backend> ModuleMapper<Bk> for Scale {
        fn map_float<const D: usize>(
            &mut self,
            param: Param<Tensor<Bk, D>>,
        ) -> Param<Tensor<Bk, D>> {
            let (id, tensor, mapper) = param.consume();
            Param::from_mapped_value(id, tensor.mul_scalar(self.0), mapper)
        }
    }

    fn model(scale: f32) -> (ClipConfig, Clip<B>) {
        let config = ClipConfig::from_open_clip_json_str(TINY).unwrap();
        let model = config.init::<B>(&Default::default()).unwrap();
        (config, model.map(&mut Scale(scale)))
    }

    /// Three small PNGs of different sizes and contents, written for the test (in a folder that
    /// lives as long as the returned guard).
    fn images() -> (tempfile::TempDir, Vec<PathBuf>) {
        let dir = tempfile::tempdir().unwrap();
        let paths = [(40u32, 30u32), (32, 48), (64, 64)]
            .iter()
            .enumerate()
            .map(|(k, &(w, h))| {
                let path = dir.path().join(format!("image{k}.png"));
                let step = 7 + 13 * k as u32;
                let pixels: Vec<u8> = (0..w * h * 3).map(|i| (i * step % 251) as u8).collect();
                let file = std::io::BufWriter::new(std::fs::File::create(&path).unwrap());
                let mut encoder = png::Encoder::new(file, w, h);
                encoder.set_color(png::ColorType::Rgb);
                encoder.set_depth(png::BitDepth::Eight);
                let mut writer = encoder.write_header().unwrap();
                writer.write_image_data(&pixels).unwrap();
                path
            })
            .collect();
        (dir, paths)
    }

    #[test]
    fn first_non_finite_row_starts_at_from() {
        let e = HostEmbeddings {
            data: vec![0.0, f32::NAN, 1.0, 0.0, 0.0, f32::INFINITY, 1.0, 1.0],
            rows: 4,
            dim: 2,
        };
        assert_eq!(e.first_non_finite_row(0), Some(0));
        assert_eq!(e.first_non_finite_row(1), Some(2));
        assert_eq!(e.first_non_finite_row(3), None);
        let error = check_finite(&e, 1, |row| format!("input {row}"))
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("the embedding of input 2 is not finite"),
            "{error}"
        );
        check_finite(&e, 3, |row| format!("input {row}")).unwrap();
    }

    #[test]
    fn non_finite_embeddings_are_errors_naming_the_input() {
        let device = Default::default();
        let (config, good) = model(1.0);
        let transform =
            ImageTransform::new(eval_transform_config(config.image_size(), None).unwrap()).unwrap();
        let texts = ["a photo of a cat", "a diagram"];
        let (_dir, paths) = images();
        // A healthy model embeds them.
        let e = embed_image_files(&good, &transform, &paths, 2, &device).unwrap();
        assert_eq!((e.rows, e.first_non_finite_row(0)), (3, None));
        let e = embed_texts(&good, &Tokenizer::new(), &texts, 2, &device).unwrap();
        assert_eq!((e.rows, e.first_non_finite_row(0)), (2, None));

        let (_, broken) = model(f32::NAN);
        let error = embed_image_files(&broken, &transform, &paths, 2, &device)
            .unwrap_err()
            .to_string();
        assert!(
            error.contains(&format!("image {}", paths[0].display()))
                && error.contains("not finite"),
            "{error}"
        );
        let error = embed_texts(&broken, &Tokenizer::new(), &texts, 2, &device)
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("text at index 0 (\"a photo of a cat\")")
                && error.contains("not finite"),
            "{error}"
        );
    }
}
