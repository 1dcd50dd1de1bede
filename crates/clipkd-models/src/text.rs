//! The text tower (open_clip's `TextTransformer`): token and positional embeddings, a causal
//! pre-norm transformer, pooling, `ln_final` and the text projection.
//!
//! open_clip's `CLIP` class keeps these modules at its top level (state-dict keys without a
//! `text.` prefix), and so does [`crate::Clip`]; [`TextTransformer`] is the same tower on its
//! own, built with [`TextConfig::init`]. Both run the same forward code.

use burn::module::{Initializer, Module, Param};
use burn::nn::{Embedding, EmbeddingConfig, LayerNorm, Linear};
use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor};

use crate::autocast;
use crate::config::{Activation, TextConfig, TextPool, TextProjType, check_embed_dim};
use crate::error::ModelError;
use crate::transformer::{
    BlockInit, MlpActivation, Transformer, TransformerSpec, layer_norm, linear, normal,
};

/// The text projection (state-dict key `text_projection`).
#[derive(Module, Debug)]
pub enum TextProjection<B: Backend> {
    /// A raw `[width, embed_dim]` matrix applied as `x @ text_projection` (the default).
    Matrix(Param<Tensor<B, 2>>),
    /// An `nn.Linear` with bias (`proj_bias: true`; keys `text_projection.weight` / `.bias`).
    Linear(Linear<B>),
}

impl<B: Backend> TextProjection<B> {
    /// # Shapes
    /// - `x`: `[N, width]` -> `[N, embed_dim]`
    pub fn forward(&self, x: Tensor<B, 2>) -> Tensor<B, 2> {
        match self {
            TextProjection::Matrix(p) => autocast::matmul(x, p.val()),
            TextProjection::Linear(l) => autocast::linear(l, x),
        }
    }
}

/// The text tower on its own: the modules a [`crate::Clip`] keeps at its top level, with the
/// same field names (open_clip's state-dict keys).
///
/// Build one with [`TextConfig::init`].
#[derive(Module, Debug)]
pub struct TextTransformer<B: Backend> {
    /// The transformer (`transformer.resblocks.*`), causal unless `no_causal_mask`.
    pub transformer: Transformer<B>,
    /// Token embeddings, `[vocab_size, width]`.
    pub token_embedding: Embedding<B>,
    /// Positional embeddings, `[context_length, width]`.
    pub positional_embedding: Param<Tensor<B, 2>>,
    /// Final LayerNorm.
    pub ln_final: LayerNorm<B>,
    /// Text projection (absent with `proj_type: "none"`).
    pub text_projection: Option<TextProjection<B>>,
    #[module(skip)]
    config: TextConfig,
}

impl TextConfig {
    /// Builds the text tower, projecting to `embed_dim` (unless `proj_type` is `"none"`), with
    /// `activation` in its MLPs (the top-level `quick_gelu` of a [`crate::ClipConfig`]), as
    /// open_clip's `_build_text_tower(embed_dim, text_cfg, quick_gelu)`. The initialisation is
    /// `TextTransformer.init_parameters`: token embedding std 0.02, positions 0.01, attention
    /// `width^-0.5`, projections `width^-0.5 * (2 layers)^-0.5`, MLP input `(2 width)^-0.5`,
    /// text projection `width^-0.5` (biases at PyTorch's defaults). Parameters are created
    /// lazily, so building a tower only to load weights into it is cheap.
    ///
    /// # Errors
    /// [`ModelError::InvalidConfig`], naming the field, if [`TextConfig::validate`] fails or
    /// `embed_dim` is 0.
    pub fn init<B: Backend>(
        &self,
        embed_dim: usize,
        activation: Activation,
        device: &B::Device,
    ) -> Result<TextTransformer<B>, ModelError> {
        check_embed_dim(embed_dim)?;
        self.validate()?;
        let width = self.width as f64;
        let spec = TransformerSpec {
            width: self.width,
            layers: self.layers,
            heads: self.heads,
            mlp_width: self.mlp_width(),
            ls_init_value: self.ls_init_value,
            activation: MlpActivation::resolve(activation, self.gelu_approximate),
            norm_eps: self.norm_eps,
            init: BlockInit::Normal {
                attn_std: width.powf(-0.5),
                proj_std: width.powf(-0.5) * ((2 * self.layers.max(1)) as f64).powf(-0.5),
                fc_std: (2.0 * width).powf(-0.5),
            },
        };
        let text_projection = match (self.proj_type, self.proj_bias) {
            (TextProjType::None, _) => None,
            (TextProjType::Linear, false) => Some(TextProjection::Matrix(
                normal(width.powf(-0.5)).init([self.width, embed_dim], device),
            )),
            (TextProjType::Linear, true) => Some(TextProjection::Linear(linear(
                self.width,
                embed_dim,
                normal(width.powf(-0.5)),
                Some(Initializer::Zeros),
                device,
            ))),
        };
        Ok(TextTransformer {
            transformer: Transformer::new(&spec, device),
            token_embedding: EmbeddingConfig::new(self.vocab_size, self.width)
                .with_initializer(normal(0.02))
                .init(device),
            positional_embedding: normal(0.01).init([self.context_length, self.width], device),
            ln_final: layer_norm(self.width, self.norm_eps, device),
            text_projection,
            config: self.clone(),
        })
    }
}

impl<B: Backend> TextTransformer<B> {
    /// The config the tower was built from.
    pub fn config(&self) -> &TextConfig {
        &self.config
    }

    /// Raw (unnormalized) text embeddings, as [`crate::Clip::encode_text`]: token + positional
    /// embeddings, the transformer (causal unless `no_causal_mask`), pooling (the end-of-text
    /// token, i.e. the highest id, by default), `ln_final`, projection. Token sequences shorter
    /// than the context length use the first positional embeddings.
    ///
    /// # Shapes
    /// - `tokens`: `[N, L]`, `1 <= L <= context_length` -> `[N, embed_dim]` (`[N, width]` with
    ///   `proj_type: "none"`)
    ///
    /// # Errors
    /// [`ModelError::InputShape`] if the batch is empty or `L` is 0 or above the context length
    /// (see [`TextTransformer::check_tokens`]).
    pub fn forward(&self, tokens: Tensor<B, 2, Int>) -> Result<Tensor<B, 2>, ModelError> {
        TextTowerRef {
            transformer: &self.transformer,
            token_embedding: &self.token_embedding,
            positional_embedding: &self.positional_embedding,
            ln_final: &self.ln_final,
            text_projection: self.text_projection.as_ref(),
            config: &self.config,
        }
        .forward(tokens)
    }

    /// Checks a token batch's shape `[N, L]` without touching its data: `N >= 1` and
    /// `1 <= L <= context_length`.
    ///
    /// # Errors
    /// [`ModelError::InputShape`], naming the context length.
    pub fn check_tokens(&self, dims: [usize; 2]) -> Result<(), ModelError> {
        check_tokens(&self.config, dims)
    }
}

/// See [`TextTransformer::check_tokens`].
pub(crate) fn check_tokens(config: &TextConfig, dims: [usize; 2]) -> Result<(), ModelError> {
    let [n, l] = dims;
    let context = config.context_length;
    if n >= 1 && (1..=context).contains(&l) {
        return Ok(());
    }
    let fix = if n == 0 {
        "a batch of at least one sequence".to_string()
    } else if l == 0 {
        "at least one token per sequence".to_string()
    } else {
        format!(
            "tokenize with context_length {context}, or truncate the sequences to {context} tokens"
        )
    };
    Err(ModelError::InputShape {
        part: "text tower",
        input: "tokens",
        expected: format!(
            "[N, L] with N >= 1 and 1 <= L <= {context} (text_cfg.context_length): {fix}"
        ),
        got: dims.to_vec(),
    })
}

/// The text tower's modules, borrowed from a [`TextTransformer`] or from a [`crate::Clip`]
/// (which keeps them at its top level), so that both run this one forward.
pub(crate) struct TextTowerRef<'a, B: Backend> {
    pub transformer: &'a Transformer<B>,
    pub token_embedding: &'a Embedding<B>,
    pub positional_embedding: &'a Param<Tensor<B, 2>>,
    pub ln_final: &'a LayerNorm<B>,
    pub text_projection: Option<&'a TextProjection<B>>,
    pub config: &'a TextConfig,
}

impl<B: Backend> TextTowerRef<'_, B> {
    /// See [`TextTransformer::forward`].
    ///
    /// # Shapes
    /// - `tokens`: `[N, L]`, `1 <= L <= context_length` -> `[N, embed_dim]`
    pub(crate) fn forward(&self, tokens: Tensor<B, 2, Int>) -> Result<Tensor<B, 2>, ModelError> {
        let [n, l] = tokens.dims();
        let t = self.config;
        check_tokens(t, [n, l])?;
        let pos = self.positional_embedding.val().narrow(0, 0, l);
        let x = self.token_embedding.forward(tokens.clone()) + pos.unsqueeze::<3>();
        let x = self.transformer.forward(x, !t.no_causal_mask);
        let [_, _, w] = x.dims();
        // LayerNorm acts per token, so pooling before `ln_final` equals open_clip's
        // normalise-everything-then-pool, on N instead of N x L tokens.
        let pooled = match t.pool_type {
            TextPool::First => x.narrow(1, 0, 1).reshape([n, w]),
            TextPool::Last => x.narrow(1, l - 1, 1).reshape([n, w]),
            TextPool::Argmax => take_positions(x, tokens.argmax(1)),
            TextPool::Eos => take_positions(x, tokens.equal_elem(t.eos_id).int().argmax(1)),
        };
        let pooled = self.ln_final.forward(pooled);
        Ok(match self.text_projection {
            Some(p) => p.forward(pooled),
            None => pooled,
        })
    }
}

/// `x[i, positions[i], :]` for every `i`, as one index-select on the flattened batch.
///
/// # Shapes
/// - `x`: `[N, L, W]`, `positions`: `[N, 1]` -> `[N, W]`
fn take_positions<B: Backend>(x: Tensor<B, 3>, positions: Tensor<B, 2, Int>) -> Tensor<B, 2> {
    let [n, l, w] = x.dims();
    // Same integer type as the positions (token tensors may be i32 or i64).
    let offsets = Tensor::<B, 1, Int>::arange(0..n as i64, (&x.device(), positions.dtype()))
        .mul_scalar(l as i64);
    let idx = positions.reshape([n]) + offsets;
    x.reshape([n * l, w]).select(0, idx)
}
