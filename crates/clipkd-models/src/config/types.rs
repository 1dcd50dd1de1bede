//! The config types: a [`ClipConfig`] and its towers, with open_clip's field names and
//! defaults, and the sizes derived from them.

use serde_json::{Map, Value};

use super::timm::TimmConfig;

/// ln(1/0.07), open_clip's default `init_logit_scale` (`np.log(1 / 0.07)`).
pub const DEFAULT_LOGIT_SCALE: f64 = 2.659_260_036_932_778;

/// The MLP activation of the transformer blocks (open_clip's top-level `quick_gelu`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Activation {
    /// `nn.GELU` (exact, erf based): open_clip's default.
    #[default]
    Gelu,
    /// `x * sigmoid(1.702 x)`: the activation of OpenAI's pretrained CLIP weights
    /// (`"quick_gelu": true`).
    QuickGelu,
}

/// The approximation of GELU (`act_kwargs: {"approximate": ...}` of a tower config).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum GeluApproximate {
    /// Exact GELU (erf).
    #[default]
    None,
    /// The tanh approximation (`"approximate": "tanh"`).
    Tanh,
}

/// How the ViT turns its tokens into one vector (`vision_cfg.pool_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum VisionPool {
    /// The class token (`"tok"`, the default).
    #[default]
    Token,
    /// The mean of the patch tokens, class token excluded (`"avg"`).
    Average,
}

/// The ViT's positional embedding (`vision_cfg.pos_embed_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PosEmbedType {
    /// A learned parameter (`"learnable"`, the default).
    #[default]
    Learnable,
    /// Fixed 2-D sine-cosine values (`"sin_cos_2d"`, square grids only), not trained.
    SinCos2d,
}

/// Which token's features become the text embedding (`text_cfg.pool_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TextPool {
    /// The first token (`"first"`).
    First,
    /// The last token (`"last"`).
    Last,
    /// The token with the highest id, the end-of-text token of CLIP's tokenizer (`"argmax"`,
    /// the default).
    #[default]
    Argmax,
    /// The first occurrence of `eos_id` (`"eos"`).
    Eos,
}

/// The text projection (`text_cfg.proj_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TextProjType {
    /// A projection to `embed_dim` (`"linear"`): a raw matrix, or an `nn.Linear` when
    /// `proj_bias` is set.
    #[default]
    Linear,
    /// No projection (`"none"`): the text embedding has the text width.
    None,
}

/// A ViT vision tower (`vision_cfg` whose `layers` is an integer).
#[derive(Debug, Clone, PartialEq)]
pub struct VitConfig {
    /// Input size `[height, width]` (`image_size`, an int or a pair).
    pub image_size: [usize; 2],
    /// Patch size `[height, width]` (`patch_size`, an int or a pair).
    pub patch_size: [usize; 2],
    /// Token width (`width`).
    pub width: usize,
    /// Number of residual blocks (`layers`).
    pub layers: usize,
    /// Width of one attention head (`head_width`); heads = width / head_width.
    pub head_width: usize,
    /// MLP width as a multiple of `width` (`mlp_ratio`; the MLP has `int(width * mlp_ratio)`).
    pub mlp_ratio: f64,
    /// LayerScale initial value (`ls_init_value`); `None` means no LayerScale.
    pub ls_init_value: Option<f64>,
    /// Fraction of patches dropped in training (`patch_dropout`); no-op in inference.
    pub patch_dropout: f64,
    /// Skip the LayerNorm before the transformer (`no_ln_pre`).
    pub no_ln_pre: bool,
    /// Positional embedding kind (`pos_embed_type`).
    pub pos_embed_type: PosEmbedType,
    /// Apply `ln_post` after pooling instead of before (`final_ln_after_pool`).
    pub final_ln_after_pool: bool,
    /// Pooling (`pool_type`).
    pub pool_type: VisionPool,
    /// open_clip's `output_tokens` (its `encode_image` then also returns the tokens). Kept for
    /// round trips; clipkd's `encode_image` always returns the pooled embedding.
    pub output_tokens: bool,
    /// GELU approximation (`act_kwargs`).
    pub gelu_approximate: GeluApproximate,
    /// LayerNorm epsilon (`norm_kwargs: {"eps": ...}`, default 1e-5).
    pub norm_eps: f64,
}

impl Default for VitConfig {
    /// open_clip's `CLIPVisionCfg()` defaults: ViT-B/16 at 224 px.
    fn default() -> Self {
        Self {
            image_size: [224, 224],
            patch_size: [16, 16],
            width: 768,
            layers: 12,
            head_width: 64,
            mlp_ratio: 4.0,
            ls_init_value: None,
            patch_dropout: 0.0,
            no_ln_pre: false,
            pos_embed_type: PosEmbedType::Learnable,
            final_ln_after_pool: false,
            pool_type: VisionPool::Token,
            output_tokens: false,
            gelu_approximate: GeluApproximate::None,
            norm_eps: 1e-5,
        }
    }
}

impl VitConfig {
    /// Number of attention heads (`width // head_width`, as open_clip).
    pub fn heads(&self) -> usize {
        self.width / self.head_width
    }

    /// Patch grid `[rows, cols]` (`image_size // patch_size`).
    pub fn grid_size(&self) -> [usize; 2] {
        [
            self.image_size[0] / self.patch_size[0],
            self.image_size[1] / self.patch_size[1],
        ]
    }

    /// Number of patch tokens (class token excluded).
    pub fn num_patches(&self) -> usize {
        let [h, w] = self.grid_size();
        h * w
    }

    /// Hidden width of the MLP (`int(width * mlp_ratio)`).
    pub fn mlp_width(&self) -> usize {
        (self.width as f64 * self.mlp_ratio) as usize
    }
}

/// A ModifiedResNet vision tower (`vision_cfg` whose `layers` is a list of four).
#[derive(Debug, Clone, PartialEq)]
pub struct ModifiedResNetConfig {
    /// Bottleneck blocks per stage (`layers`).
    pub layers: [usize; 4],
    /// Stem width (`width`); the final feature width is `32 * width`.
    pub width: usize,
    /// Used only for the attention-pool head count: heads = 32 * width / head_width.
    pub head_width: usize,
    /// Square input size (`image_size`); the attention pool has `(image_size / 32)^2 + 1`
    /// positions.
    pub image_size: usize,
}

impl Default for ModifiedResNetConfig {
    /// RN50 (`layers` [3, 4, 6, 3], width 64, 224 px).
    fn default() -> Self {
        Self {
            layers: [3, 4, 6, 3],
            width: 64,
            head_width: 64,
            image_size: 224,
        }
    }
}

impl ModifiedResNetConfig {
    /// Width of the final feature map (`width * 32`), the attention pool's embedding width.
    pub fn feature_width(&self) -> usize {
        self.width * 32
    }

    /// Attention-pool heads (`width * 32 // head_width`, as open_clip).
    pub fn heads(&self) -> usize {
        self.feature_width() / self.head_width
    }

    /// Side of the final feature map (`image_size // 32`).
    pub fn grid_size(&self) -> usize {
        self.image_size / 32
    }
}

/// The vision tower of a [`ClipConfig`].
#[derive(Debug, Clone, PartialEq)]
pub enum VisionConfig {
    /// A vision transformer.
    Vit(VitConfig),
    /// OpenAI's ModifiedResNet (RN50, RN101, RN50x4, ...).
    ModifiedResNet(ModifiedResNetConfig),
    /// A timm trunk with open_clip's `TimmModel` head (`timm_model_name`).
    Timm(TimmConfig),
}

impl VisionConfig {
    /// Input image size `[height, width]`.
    pub fn image_size(&self) -> [usize; 2] {
        match self {
            VisionConfig::Vit(c) => c.image_size,
            VisionConfig::ModifiedResNet(c) => [c.image_size, c.image_size],
            VisionConfig::Timm(c) => c.image_size,
        }
    }
}

/// The text tower (`text_cfg`), whose modules sit at the top level of open_clip's `CLIP`.
#[derive(Debug, Clone, PartialEq)]
pub struct TextConfig {
    /// Number of token positions (`context_length`).
    pub context_length: usize,
    /// Token vocabulary size (`vocab_size`).
    pub vocab_size: usize,
    /// Token width (`width`).
    pub width: usize,
    /// Attention heads (`heads`).
    pub heads: usize,
    /// Residual blocks (`layers`).
    pub layers: usize,
    /// MLP width as a multiple of `width` (`mlp_ratio`).
    pub mlp_ratio: f64,
    /// LayerScale initial value (`ls_init_value`); `None` means no LayerScale.
    pub ls_init_value: Option<f64>,
    /// Bidirectional attention instead of causal (`no_causal_mask`).
    pub no_causal_mask: bool,
    /// Pooling (`pool_type`).
    pub pool_type: TextPool,
    /// End-of-sequence id used by [`TextPool::Eos`] (`eos_id`, default 2).
    pub eos_id: i64,
    /// Padding id (`pad_id`); open_clip's `CLIP` class does not use it. Kept for round trips.
    pub pad_id: i64,
    /// Projection kind (`proj_type`).
    pub proj_type: TextProjType,
    /// Projection with a bias, i.e. an `nn.Linear` (`proj_bias`).
    pub proj_bias: bool,
    /// open_clip's `final_ln_after_pool` of the text config. open_clip 3.3.0 does not pass it to
    /// its text tower, so it has no effect there and none here; kept for round trips.
    pub final_ln_after_pool: bool,
    /// open_clip's `output_tokens`; kept for round trips (the pooled embedding is returned).
    pub output_tokens: bool,
    /// GELU approximation (`act_kwargs`).
    pub gelu_approximate: GeluApproximate,
    /// LayerNorm epsilon (`norm_kwargs: {"eps": ...}`, default 1e-5).
    pub norm_eps: f64,
    /// Tokenizer fields (`hf_tokenizer_name`, `tokenizer_mode`, `tokenizer_kwargs`) exactly as
    /// given; they do not affect the model and are kept for round trips.
    pub tokenizer: Map<String, Value>,
}

impl Default for TextConfig {
    /// open_clip's `CLIPTextCfg()` defaults (CLIP's text transformer).
    fn default() -> Self {
        Self {
            context_length: 77,
            vocab_size: 49408,
            width: 512,
            heads: 8,
            layers: 12,
            mlp_ratio: 4.0,
            ls_init_value: None,
            no_causal_mask: false,
            pool_type: TextPool::Argmax,
            eos_id: 2,
            pad_id: 0,
            proj_type: TextProjType::Linear,
            proj_bias: false,
            final_ln_after_pool: false,
            output_tokens: false,
            gelu_approximate: GeluApproximate::None,
            norm_eps: 1e-5,
            tokenizer: Map::new(),
        }
    }
}

impl TextConfig {
    /// Hidden width of the MLP (`int(width * mlp_ratio)`).
    pub fn mlp_width(&self) -> usize {
        (self.width as f64 * self.mlp_ratio) as usize
    }
}

/// A CLIP model: open_clip's `CLIP(embed_dim, vision_cfg, text_cfg, quick_gelu, ...)`.
///
/// Serde (de)serializes it as open_clip's model-config JSON, so it can be embedded in other
/// configs and stays readable by open_clip.
#[derive(Debug, Clone, PartialEq)]
pub struct ClipConfig {
    /// Width of the joint embedding space (`embed_dim`).
    pub embed_dim: usize,
    /// The vision tower (`vision_cfg`).
    pub vision: VisionConfig,
    /// The text tower (`text_cfg`).
    pub text: TextConfig,
    /// MLP activation of both transformers (`quick_gelu`).
    pub activation: Activation,
    /// Initial log logit scale (`init_logit_scale`, default ln(1/0.07)).
    pub init_logit_scale: f64,
    /// Initial logit bias (`init_logit_bias`, SigLIP-style); `None`: the model has none.
    pub init_logit_bias: Option<f64>,
    /// Store `logit_scale` (and `logit_bias`) with shape `[1]` instead of `[]`
    /// (`nonscalar_logit_scale`); only the exported shape differs.
    pub nonscalar_logit_scale: bool,
}

impl ClipConfig {
    /// Input image size `[height, width]`.
    pub fn image_size(&self) -> [usize; 2] {
        self.vision.image_size()
    }

    /// Text context length (token positions).
    pub fn context_length(&self) -> usize {
        self.text.context_length
    }

    /// Whether the vision tower is a ViT (masked forward and patch dropout need one).
    pub fn is_vit(&self) -> bool {
        matches!(self.vision, VisionConfig::Vit(_))
    }

    /// Width of the text embedding: `embed_dim`, or the text width with `proj_type: "none"`.
    pub fn text_embed_dim(&self) -> usize {
        match self.text.proj_type {
            TextProjType::Linear => self.embed_dim,
            TextProjType::None => self.text.width,
        }
    }
}
