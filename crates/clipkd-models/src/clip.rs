//! The CLIP model (open_clip's `CLIP` class): a vision tower under `visual`, the text tower's
//! modules at the top level, and the learned logit scale.

use burn::module::{Initializer, Module, Param};
use burn::nn::{Embedding, LayerNorm};
use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor};
use burn_flex::Flex;

use crate::config::{Activation, ClipConfig, VisionConfig};
use crate::error::ModelError;
use crate::host_init::{build_on_host, copy_parameters};
use crate::resnet::ModifiedResNet;
pub use crate::text::TextProjection;
use crate::text::{TextTowerRef, TextTransformer};
use crate::timm::TimmTower;
use crate::transformer::Transformer;
use crate::vit::VisionTransformer;

/// The vision tower of a [`Clip`] (state-dict prefix `visual.`).
// A model holds exactly one tower, so the size difference between the variants costs nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Module, Debug)]
pub enum VisionTower<B: Backend> {
    /// A vision transformer.
    Vit(VisionTransformer<B>),
    /// A ModifiedResNet.
    ModifiedResNet(ModifiedResNet<B>),
    /// A timm trunk with open_clip's `TimmModel` head.
    Timm(TimmTower<B>),
}

impl<B: Backend> VisionTower<B> {
    /// Image embeddings (see the towers' `forward`).
    ///
    /// # Shapes
    /// - `images`: `[N, 3, H, W]` -> `[N, embed_dim]`
    ///
    /// # Errors
    /// [`ModelError::InputShape`] if the images do not fit the tower (see
    /// [`VisionTower::check_images`]).
    pub fn forward(&self, images: Tensor<B, 4>) -> Result<Tensor<B, 2>, ModelError> {
        match self {
            VisionTower::Vit(vit) => vit.forward(images),
            VisionTower::ModifiedResNet(resnet) => resnet.forward(images),
            VisionTower::Timm(timm) => timm.forward(images),
        }
    }

    /// Checks an image batch's shape `[N, C, H, W]` without touching its data
    /// ([`VisionTransformer::check_images`], [`ModifiedResNet::check_images`]).
    ///
    /// # Errors
    /// [`ModelError::InputShape`], naming the sides that fit.
    pub fn check_images(&self, dims: [usize; 4]) -> Result<(), ModelError> {
        match self {
            VisionTower::Vit(vit) => vit.check_images(dims),
            VisionTower::ModifiedResNet(resnet) => resnet.check_images(dims),
            VisionTower::Timm(timm) => timm.check_images(dims),
        }
    }

    fn as_vit(&self) -> Result<&VisionTransformer<B>, ModelError> {
        match self {
            VisionTower::Vit(vit) => Ok(vit),
            VisionTower::ModifiedResNet(_) => Err(ModelError::MaskedForwardUnsupported {
                tower: "a ModifiedResNet",
            }),
            VisionTower::Timm(_) => Err(ModelError::MaskedForwardUnsupported {
                tower: "a timm tower",
            }),
        }
    }
}

impl VisionConfig {
    /// Builds the vision tower, projecting to `embed_dim`: [`VitConfig::init`] (with
    /// `activation`), [`ModifiedResNetConfig::init`] or [`TimmConfig::init`] (which have no
    /// use for it: their activations are ReLUs and timm's own, as in open_clip).
    ///
    /// [`VitConfig::init`]: crate::VitConfig::init
    /// [`ModifiedResNetConfig::init`]: crate::ModifiedResNetConfig::init
    /// [`TimmConfig::init`]: crate::TimmConfig::init
    ///
    /// # Errors
    /// [`ModelError::InvalidConfig`], naming the field, if the tower's config is invalid or
    /// `embed_dim` is 0.
    pub fn init<B: Backend>(
        &self,
        embed_dim: usize,
        activation: Activation,
        device: &B::Device,
    ) -> Result<VisionTower<B>, ModelError> {
        Ok(match self {
            VisionConfig::Vit(v) => VisionTower::Vit(v.init(embed_dim, activation, device)?),
            VisionConfig::ModifiedResNet(r) => {
                VisionTower::ModifiedResNet(r.init(embed_dim, device)?)
            }
            VisionConfig::Timm(t) => VisionTower::Timm(t.init(embed_dim, device)?),
        })
    }
}

/// The outputs of [`Clip::forward`].
///
/// The embeddings are RAW (as the towers produce them, not L2-normalized); use the
/// `*_normalized` helpers for unit vectors.
#[derive(Debug, Clone)]
pub struct ClipOutput<B: Backend> {
    /// Raw image embeddings, `[N, embed_dim]`.
    pub image_embeds: Tensor<B, 2>,
    /// Raw text embeddings, `[M, embed_dim]`.
    pub text_embeds: Tensor<B, 2>,
    /// The LOG logit scale as stored (`logit_scale`, shape `[1]`); the temperature is its exp.
    pub logit_scale: Tensor<B, 1>,
    /// The logit bias, shape `[1]`, for models configured with `init_logit_bias`.
    pub logit_bias: Option<Tensor<B, 1>>,
}

impl<B: Backend> ClipOutput<B> {
    /// L2-normalized image embeddings, `[N, embed_dim]`.
    pub fn image_embeds_normalized(&self) -> Tensor<B, 2> {
        l2_normalize(self.image_embeds.clone())
    }

    /// L2-normalized text embeddings, `[M, embed_dim]`.
    pub fn text_embeds_normalized(&self) -> Tensor<B, 2> {
        l2_normalize(self.text_embeds.clone())
    }

    /// CLIP's image-to-text logits `exp(logit_scale) * img_n @ txt_n^T (+ logit_bias)`,
    /// `[N, M]` (transpose for text-to-image).
    pub fn logits_per_image(&self) -> Tensor<B, 2> {
        let sim = self
            .image_embeds_normalized()
            .matmul(self.text_embeds_normalized().transpose());
        let logits = sim * self.logit_scale.clone().exp().unsqueeze::<2>();
        match &self.logit_bias {
            Some(bias) => logits + bias.clone().unsqueeze::<2>(),
            None => logits,
        }
    }
}

/// `x / max(||x||_2, 1e-12)` along the last dimension (PyTorch's `F.normalize`).
///
/// # Shapes
/// - `x`: `[N, D]` -> `[N, D]`
pub fn l2_normalize<B: Backend>(x: Tensor<B, 2>) -> Tensor<B, 2> {
    let norm = x.clone().square().sum_dim(1).sqrt().clamp_min(1e-12);
    x / norm
}

/// A CLIP model with open_clip's module tree and state-dict keys.
///
/// Build one with [`ClipConfig::init`], or load weights with
/// [`crate::load_open_clip`] / [`Clip::load_open_clip_weights`].
#[derive(Module, Debug)]
pub struct Clip<B: Backend> {
    /// The vision tower (`visual.*`).
    pub visual: VisionTower<B>,
    /// The text transformer (`transformer.resblocks.*`), causal unless `no_causal_mask`.
    pub transformer: Transformer<B>,
    /// Token embeddings, `[vocab_size, width]`.
    pub token_embedding: Embedding<B>,
    /// Text positional embeddings, `[context_length, width]`.
    pub positional_embedding: Param<Tensor<B, 2>>,
    /// Final LayerNorm of the text tower.
    pub ln_final: LayerNorm<B>,
    /// Text projection (absent with `proj_type: "none"`).
    pub text_projection: Option<TextProjection<B>>,
    /// The log logit scale, shape `[1]` (open_clip stores `[]` unless `nonscalar_logit_scale`).
    pub logit_scale: Param<Tensor<B, 1>>,
    /// The logit bias, shape `[1]` (only with `init_logit_bias`).
    pub logit_bias: Option<Param<Tensor<B, 1>>>,
    #[module(skip)]
    config: ClipConfig,
}

impl ClipConfig {
    /// Builds a model with open_clip's initialisation: the ViT at PyTorch's module defaults
    /// (`class_embedding`, `positional_embedding`, `proj` ~ `width^-0.5 * randn`); the text
    /// tower as `TextTransformer.init_parameters` (token embedding std 0.02, positions 0.01,
    /// attention `width^-0.5`, projections `width^-0.5 * (2 layers)^-0.5`, MLP input
    /// `(2 width)^-0.5`, text projection `width^-0.5`); the ModifiedResNet as
    /// `ModifiedResNet.init_parameters` (zero `bn3` weights, attention pool normal
    /// `width^-0.5`); `logit_scale = init_logit_scale` (default ln(1/0.07)). Parameters are
    /// created lazily, so building a model only to load weights into it is cheap.
    ///
    /// The towers are built by [`VisionConfig::init`] and
    /// [`TextConfig::init`](crate::TextConfig::init), which also build one alone.
    ///
    /// # Errors
    /// [`ModelError::InvalidConfig`], naming the field, if [`ClipConfig::validate`] fails.
    pub fn init<B: Backend>(&self, device: &B::Device) -> Result<Clip<B>, ModelError> {
        self.validate()?;
        let visual = self.vision.init(self.embed_dim, self.activation, device)?;
        // The text tower's modules sit at the top level of open_clip's `CLIP`, and of `Clip`.
        let TextTransformer {
            transformer,
            token_embedding,
            positional_embedding,
            ln_final,
            text_projection,
            ..
        } = self.text.init(self.embed_dim, self.activation, device)?;
        Ok(Clip {
            visual,
            transformer,
            token_embedding,
            positional_embedding,
            ln_final,
            text_projection,
            logit_scale: Initializer::Constant {
                value: self.init_logit_scale,
            }
            .init([1], device),
            logit_bias: self
                .init_logit_bias
                .map(|value| Initializer::Constant { value }.init([1], device)),
            config: self.clone(),
        })
    }

    /// [`ClipConfig::init`] with initial weights drawn on the CPU from `seed`, the same on every
    /// backend and device (Burn's own initialisers draw from each backend's generator, which
    /// differ between the CPU and the GPUs); see [`host_init`](crate::host_init). On the CPU
    /// the weights equal those of `init` after seeding the CPU backend with `seed`, read in
    /// visiting order (Burn draws a parameter when it is first read).
    ///
    /// # Errors
    /// As [`ClipConfig::init`].
    pub fn init_seeded<B: Backend>(
        &self,
        seed: u64,
        device: &B::Device,
    ) -> Result<Clip<B>, ModelError> {
        let host = build_on_host(seed, |cpu| self.init::<Flex>(cpu))?;
        copy_parameters(&host, self.init::<B>(device)?)
    }
}

impl<B: Backend> Clip<B> {
    /// The config the model was built from.
    pub fn config(&self) -> &ClipConfig {
        &self.config
    }

    /// Width of the image embedding (and of the text embedding unless `proj_type: "none"`).
    pub fn embed_dim(&self) -> usize {
        self.config.embed_dim
    }

    /// Expected input image size `[height, width]`.
    pub fn image_size(&self) -> [usize; 2] {
        self.config.image_size()
    }

    /// Text context length (maximum token positions).
    pub fn context_length(&self) -> usize {
        self.config.context_length()
    }

    /// Whether the vision tower is a ViT.
    pub fn is_vit(&self) -> bool {
        matches!(self.visual, VisionTower::Vit(_))
    }

    /// Raw (unnormalized) image embeddings.
    ///
    /// # Shapes
    /// - `images`: `[N, 3, H, W]` (normalized pixels at [`Clip::image_size`]) -> `[N, embed_dim]`
    ///
    /// # Errors
    /// [`ModelError::InputShape`] if the images do not have 3 channels or their size does not
    /// give the patch grid (ViT) or feature map (ModifiedResNet) the model was built for;
    /// checked from the shape, before any compute.
    pub fn encode_image(&self, images: Tensor<B, 4>) -> Result<Tensor<B, 2>, ModelError> {
        self.visual.forward(images)
    }

    /// L2-normalized image embeddings.
    ///
    /// # Shapes
    /// - `images`: `[N, 3, H, W]` -> `[N, embed_dim]`
    ///
    /// # Errors
    /// As [`Clip::encode_image`].
    pub fn encode_image_normalized(
        &self,
        images: Tensor<B, 4>,
    ) -> Result<Tensor<B, 2>, ModelError> {
        Ok(l2_normalize(self.encode_image(images)?))
    }

    /// Raw image embeddings of a randomly masked view (CLIP-KD's MFD): per image,
    /// `int(L * (1 - mask_ratio))` of the `L` patches are kept (MAE-style: uniform noise,
    /// argsort, keep the first), after their positional embeddings are added; the class token
    /// is kept. Random draws use the backend RNG, reproducible with `B::seed`.
    ///
    /// Errors with [`ModelError::MaskedForwardUnsupported`] for a ModifiedResNet tower,
    /// [`ModelError::InvalidMaskRatio`] outside `[0, 1)` and [`ModelError::InputShape`] as
    /// [`Clip::encode_image`].
    ///
    /// # Shapes
    /// - `images`: `[N, 3, H, W]` -> `[N, embed_dim]`
    pub fn encode_image_masked(
        &self,
        images: Tensor<B, 4>,
        mask_ratio: f64,
    ) -> Result<Tensor<B, 2>, ModelError> {
        self.visual.as_vit()?.forward_masked(images, mask_ratio)
    }

    /// Raw image embeddings from the given patches only (the deterministic form of
    /// [`Clip::encode_image_masked`]); `keep[i]` lists the kept patch indices (row-major over
    /// the patch grid) of image `i`.
    ///
    /// # Shapes
    /// - `images`: `[N, 3, H, W]`, `keep`: `[N, K]` -> `[N, embed_dim]`
    pub fn encode_image_masked_with_indices(
        &self,
        images: Tensor<B, 4>,
        keep: Tensor<B, 2, Int>,
    ) -> Result<Tensor<B, 2>, ModelError> {
        self.visual
            .as_vit()?
            .forward_with_keep_indices(images, keep)
    }

    /// Number of patch tokens of a ViT tower (`None` for a ModifiedResNet or timm tower).
    pub fn num_patches(&self) -> Option<usize> {
        match &self.visual {
            VisionTower::Vit(vit) => Some(vit.num_patches()),
            VisionTower::ModifiedResNet(_) | VisionTower::Timm(_) => None,
        }
    }

    /// Raw (unnormalized) text embeddings: token + positional embeddings, the transformer
    /// (causal unless `no_causal_mask`), pooling (the end-of-text token, i.e. the highest id, by
    /// default), `ln_final`, projection. Token sequences shorter than the context length use
    /// the first positional embeddings (open_clip itself requires exactly `context_length`).
    ///
    /// # Shapes
    /// - `tokens`: `[N, L]`, `1 <= L <= context_length` -> `[N, embed_dim]`
    ///
    /// # Errors
    /// [`ModelError::InputShape`] if the batch is empty or `L` is 0 or above the context length;
    /// checked from the shape, before any compute.
    pub fn encode_text(&self, tokens: Tensor<B, 2, Int>) -> Result<Tensor<B, 2>, ModelError> {
        TextTowerRef {
            transformer: &self.transformer,
            token_embedding: &self.token_embedding,
            positional_embedding: &self.positional_embedding,
            ln_final: &self.ln_final,
            text_projection: self.text_projection.as_ref(),
            config: &self.config.text,
        }
        .forward(tokens)
    }

    /// L2-normalized text embeddings.
    ///
    /// # Shapes
    /// - `tokens`: `[N, L]` -> `[N, embed_dim]`
    ///
    /// # Errors
    /// As [`Clip::encode_text`].
    pub fn encode_text_normalized(
        &self,
        tokens: Tensor<B, 2, Int>,
    ) -> Result<Tensor<B, 2>, ModelError> {
        Ok(l2_normalize(self.encode_text(tokens)?))
    }

    /// The log logit scale as stored, shape `[1]` (the temperature is `exp` of it).
    pub fn logit_scale(&self) -> Tensor<B, 1> {
        self.logit_scale.val()
    }

    /// The logit bias, shape `[1]`, if the config has `init_logit_bias`.
    pub fn logit_bias(&self) -> Option<Tensor<B, 1>> {
        self.logit_bias.as_ref().map(Param::val)
    }

    /// Both towers. The embeddings in the output are RAW (see [`ClipOutput`]).
    ///
    /// # Shapes
    /// - `images`: `[N, 3, H, W]`, `tokens`: `[M, L]` -> embeddings `[N, E]` and `[M, E]`
    ///
    /// # Errors
    /// As [`Clip::encode_image`] and [`Clip::encode_text`]; both inputs are checked before
    /// either tower runs.
    pub fn forward(
        &self,
        images: Tensor<B, 4>,
        tokens: Tensor<B, 2, Int>,
    ) -> Result<ClipOutput<B>, ModelError> {
        self.visual.check_images(images.dims())?;
        crate::text::check_tokens(&self.config.text, tokens.dims())?;
        Ok(ClipOutput {
            image_embeds: self.encode_image(images)?,
            text_embeds: self.encode_text(tokens)?,
            logit_scale: self.logit_scale(),
            logit_bias: self.logit_bias(),
        })
    }
}
