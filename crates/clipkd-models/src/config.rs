//! Model configs in open_clip's JSON schema (`model_configs/*.json`), typed.
//!
//! [`ClipConfig::from_open_clip_json_str`] reads open_clip 3.3.0's model-config JSON as it is:
//! the same field names and the same defaults as its dataclasses `CLIPVisionCfg` and
//! `CLIPTextCfg` (`open_clip/model.py`) and the `CLIP` constructor. Fields that change the
//! math are either implemented or rejected with an error naming the field and its value;
//! fields open_clip's `CLIP` class itself ignores (for example `timm_pool` without
//! `timm_model_name`, or every ViT-only field of a ModifiedResNet config) are accepted and ignored
//! the same way. Unknown fields are errors, as they are for open_clip's dataclasses.

use std::path::Path;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::{Map, Value, json};

use crate::error::ModelError;
use crate::presets;

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
}

impl VisionConfig {
    /// Input image size `[height, width]`.
    pub fn image_size(&self) -> [usize; 2] {
        match self {
            VisionConfig::Vit(c) => c.image_size,
            VisionConfig::ModifiedResNet(c) => [c.image_size, c.image_size],
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
    /// Reads an open_clip model-config JSON file (e.g. `ViT-B-16.json`, or a Hugging Face hub
    /// `open_clip_config.json` whose model config sits under `model_cfg`).
    pub fn from_open_clip_json(path: impl AsRef<Path>) -> Result<Self, ModelError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|source| ModelError::Io {
            action: "reading",
            path: path.to_path_buf(),
            source,
        })?;
        let value: Value = serde_json::from_str(&text).map_err(|source| ModelError::Json {
            origin: Some(path.to_path_buf()),
            source,
        })?;
        Self::from_open_clip_value(value)
    }

    /// Parses open_clip model-config JSON text.
    pub fn from_open_clip_json_str(json: &str) -> Result<Self, ModelError> {
        let value: Value = serde_json::from_str(json).map_err(|source| ModelError::Json {
            origin: None,
            source,
        })?;
        Self::from_open_clip_value(value)
    }

    /// Parses an already-parsed open_clip model-config JSON value.
    pub fn from_open_clip_value(value: Value) -> Result<Self, ModelError> {
        let mut top = Section::new("", value)?;
        // A Hugging Face hub `open_clip_config.json` nests the model config under `model_cfg`.
        if let Some(model_cfg) = top.take("model_cfg") {
            let _ = top.take("preprocess_cfg");
            top.finish()?;
            return Self::from_open_clip_value(model_cfg);
        }
        parse_clip(top)
    }

    /// The config as open_clip model-config JSON (pretty-printed).
    pub fn to_open_clip_json(&self) -> String {
        serde_json::to_string_pretty(&self.to_open_clip_value())
            .expect("a JSON value always serializes")
    }

    /// The config as an open_clip model-config JSON value.
    pub fn to_open_clip_value(&self) -> Value {
        let mut top = Map::new();
        top.insert("embed_dim".into(), json!(self.embed_dim));
        if self.activation == Activation::QuickGelu {
            top.insert("quick_gelu".into(), json!(true));
        }
        if self.init_logit_scale != DEFAULT_LOGIT_SCALE {
            top.insert("init_logit_scale".into(), json!(self.init_logit_scale));
        }
        if let Some(bias) = self.init_logit_bias {
            top.insert("init_logit_bias".into(), json!(bias));
        }
        if self.nonscalar_logit_scale {
            top.insert("nonscalar_logit_scale".into(), json!(true));
        }
        top.insert("vision_cfg".into(), vision_to_value(&self.vision));
        top.insert("text_cfg".into(), text_to_value(&self.text));
        Value::Object(top)
    }

    /// A bundled preset by open_clip name (`"ViT-B-16"`, `"RN50-quickgelu"`, `"ViT-T-16"`, ...);
    /// see [`ClipConfig::preset_names`].
    pub fn preset(name: &str) -> Result<Self, ModelError> {
        match presets::preset_json(name) {
            Some(json) => Self::from_open_clip_json_str(json),
            None => Err(ModelError::UnknownPreset {
                name: name.to_string(),
                known: presets::names().iter().map(|s| s.to_string()).collect(),
            }),
        }
    }

    /// Names accepted by [`ClipConfig::preset`].
    pub fn preset_names() -> &'static [&'static str] {
        presets::names()
    }

    /// A preset name, or a path to an open_clip model-config JSON file.
    ///
    /// A string ending in `.json` or containing a path separator is read as a file; anything
    /// else is looked up as a preset, then as a file if no preset has that name.
    pub fn resolve(name_or_path: &str) -> Result<Self, ModelError> {
        let looks_like_path = name_or_path.ends_with(".json")
            || name_or_path.contains('/')
            || name_or_path.contains('\\');
        if looks_like_path {
            return Self::from_open_clip_json(name_or_path);
        }
        match Self::preset(name_or_path) {
            Err(ModelError::UnknownPreset { .. }) if Path::new(name_or_path).is_file() => {
                Self::from_open_clip_json(name_or_path)
            }
            other => other,
        }
    }

    /// Checks the invariants the model needs (the parser already ensures them; this is for
    /// configs built or edited in code). [`ClipConfig::init`] calls it.
    pub fn validate(&self) -> Result<(), ModelError> {
        let positive = |field: &str, value: usize| {
            if value == 0 {
                Err(invalid(field, &json!(value), "must be positive"))
            } else {
                Ok(())
            }
        };
        positive("embed_dim", self.embed_dim)?;
        match &self.vision {
            VisionConfig::Vit(v) => {
                positive("vision_cfg.width", v.width)?;
                positive("vision_cfg.head_width", v.head_width)?;
                positive(
                    "vision_cfg.patch_size",
                    v.patch_size[0].min(v.patch_size[1]),
                )?;
                let heads = v.heads();
                if heads == 0 || v.width % heads != 0 {
                    return Err(invalid(
                        "vision_cfg.head_width",
                        &json!(v.head_width),
                        &format!(
                            "width {} must split into width // head_width = {heads} equal heads",
                            v.width
                        ),
                    ));
                }
                if v.grid_size()[0] == 0 || v.grid_size()[1] == 0 {
                    return Err(invalid(
                        "vision_cfg.image_size",
                        &json!(v.image_size),
                        &format!("smaller than the patch size {:?}", v.patch_size),
                    ));
                }
                if v.mlp_width() == 0 {
                    return Err(invalid(
                        "vision_cfg.mlp_ratio",
                        &json!(v.mlp_ratio),
                        "MLP width is 0",
                    ));
                }
                if !(0.0..1.0).contains(&v.patch_dropout) {
                    return Err(invalid(
                        "vision_cfg.patch_dropout",
                        &json!(v.patch_dropout),
                        "must be in [0, 1)",
                    ));
                }
                if v.pos_embed_type == PosEmbedType::SinCos2d {
                    let [gh, gw] = v.grid_size();
                    if gh != gw || v.width % 4 != 0 {
                        return Err(invalid(
                            "vision_cfg.pos_embed_type",
                            &json!("sin_cos_2d"),
                            "needs a square patch grid and a width divisible by 4",
                        ));
                    }
                }
            }
            VisionConfig::ModifiedResNet(r) => {
                positive("vision_cfg.width", r.width)?;
                positive("vision_cfg.head_width", r.head_width)?;
                for (i, &n) in r.layers.iter().enumerate() {
                    positive(&format!("vision_cfg.layers[{i}]"), n)?;
                }
                let heads = r.heads();
                if heads == 0 || r.feature_width() % heads != 0 {
                    return Err(invalid(
                        "vision_cfg.head_width",
                        &json!(r.head_width),
                        &format!(
                            "feature width 32 * {} must split into 32 * width // head_width = {heads} equal heads",
                            r.width
                        ),
                    ));
                }
                if r.grid_size() == 0 {
                    return Err(invalid(
                        "vision_cfg.image_size",
                        &json!(r.image_size),
                        "a ModifiedResNet needs at least 32 px",
                    ));
                }
            }
        }
        let t = &self.text;
        positive("text_cfg.context_length", t.context_length)?;
        positive("text_cfg.vocab_size", t.vocab_size)?;
        positive("text_cfg.width", t.width)?;
        positive("text_cfg.heads", t.heads)?;
        if !t.width.is_multiple_of(t.heads) {
            return Err(invalid(
                "text_cfg.heads",
                &json!(t.heads),
                &format!("width {} is not divisible by it", t.width),
            ));
        }
        if t.mlp_width() == 0 {
            return Err(invalid(
                "text_cfg.mlp_ratio",
                &json!(t.mlp_ratio),
                "MLP width is 0",
            ));
        }
        Ok(())
    }

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

impl Serialize for ClipConfig {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.to_open_clip_value().serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for ClipConfig {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let value = Value::deserialize(deserializer)?;
        ClipConfig::from_open_clip_value(value).map_err(serde::de::Error::custom)
    }
}

// ---------------------------------------------------------------------------------------------
// Parsing

fn invalid(field: &str, value: &Value, reason: &str) -> ModelError {
    ModelError::InvalidConfig {
        field: field.to_string(),
        value: value.to_string(),
        reason: reason.to_string(),
    }
}

fn unsupported(field: &str, value: &Value, reason: &str) -> ModelError {
    ModelError::UnsupportedConfig {
        field: field.to_string(),
        value: value.to_string(),
        reason: reason.to_string(),
    }
}

/// One JSON object being consumed field by field; leftover fields are errors.
struct Section {
    prefix: &'static str,
    map: Map<String, Value>,
}

impl Section {
    fn new(prefix: &'static str, value: Value) -> Result<Self, ModelError> {
        match value {
            Value::Object(map) => Ok(Self { prefix, map }),
            other => Err(invalid(
                if prefix.is_empty() { "<root>" } else { prefix },
                &other,
                "expected a JSON object",
            )),
        }
    }

    fn field(&self, key: &str) -> String {
        if self.prefix.is_empty() {
            key.to_string()
        } else {
            format!("{}.{key}", self.prefix)
        }
    }

    /// Removes a field; JSON `null` counts as absent (open_clip's `None`).
    fn take(&mut self, key: &str) -> Option<Value> {
        match self.map.remove(key) {
            Some(Value::Null) | None => None,
            Some(v) => Some(v),
        }
    }

    fn usize_value(&self, key: &str, v: &Value) -> Result<usize, ModelError> {
        v.as_u64()
            .map(|n| n as usize)
            .ok_or_else(|| invalid(&self.field(key), v, "expected a non-negative integer"))
    }

    fn usize(&mut self, key: &str, default: usize) -> Result<usize, ModelError> {
        match self.take(key) {
            None => Ok(default),
            Some(v) => self.usize_value(key, &v),
        }
    }

    fn required_usize(&mut self, key: &str) -> Result<usize, ModelError> {
        match self.take(key) {
            None => Err(invalid(&self.field(key), &Value::Null, "required")),
            Some(v) => self.usize_value(key, &v),
        }
    }

    fn i64(&mut self, key: &str, default: i64) -> Result<i64, ModelError> {
        match self.take(key) {
            None => Ok(default),
            Some(v) => v
                .as_i64()
                .ok_or_else(|| invalid(&self.field(key), &v, "expected an integer")),
        }
    }

    fn f64(&mut self, key: &str, default: f64) -> Result<f64, ModelError> {
        Ok(self.opt_f64(key)?.unwrap_or(default))
    }

    fn opt_f64(&mut self, key: &str) -> Result<Option<f64>, ModelError> {
        match self.take(key) {
            None => Ok(None),
            Some(v) => v
                .as_f64()
                .map(Some)
                .ok_or_else(|| invalid(&self.field(key), &v, "expected a number")),
        }
    }

    fn bool(&mut self, key: &str, default: bool) -> Result<bool, ModelError> {
        match self.take(key) {
            None => Ok(default),
            Some(v) => v
                .as_bool()
                .ok_or_else(|| invalid(&self.field(key), &v, "expected true or false")),
        }
    }

    fn opt_str(&mut self, key: &str) -> Result<Option<(String, Value)>, ModelError> {
        match self.take(key) {
            None => Ok(None),
            Some(v) => match v.as_str() {
                Some(s) => Ok(Some((s.to_string(), v.clone()))),
                None => Err(invalid(&self.field(key), &v, "expected a string")),
            },
        }
    }

    /// A size given as an int or as `[height, width]`.
    fn pair(&mut self, key: &str, default: [usize; 2]) -> Result<[usize; 2], ModelError> {
        match self.take(key) {
            None => Ok(default),
            Some(v) => self.pair_value(key, &v),
        }
    }

    fn pair_value(&self, key: &str, v: &Value) -> Result<[usize; 2], ModelError> {
        if let Some(n) = v.as_u64() {
            return Ok([n as usize, n as usize]);
        }
        match v
            .as_array()
            .map(|a| a.iter().map(Value::as_u64).collect::<Vec<_>>())
        {
            Some(items) if items.len() == 2 && items.iter().all(Option::is_some) => {
                Ok([items[0].unwrap() as usize, items[1].unwrap() as usize])
            }
            _ => Err(invalid(
                &self.field(key),
                v,
                "expected an integer or a [height, width] pair",
            )),
        }
    }

    /// Fields that only matter together with a feature that is off (e.g. `timm_pool` without
    /// `timm_model_name`): removed without effect, as in open_clip.
    fn ignore(&mut self, keys: &[&str]) {
        for key in keys {
            self.map.remove(*key);
        }
    }

    /// Custom-block flags (`qk_norm`, `scale_fc`, ...) and `block_type`: only the default block
    /// is implemented.
    fn default_block_only(&mut self) -> Result<(), ModelError> {
        if let Some((kind, v)) = self.opt_str("block_type")?
            && kind != "default"
        {
            return Err(unsupported(
                &self.field("block_type"),
                &v,
                "only open_clip's default ResidualAttentionBlock is implemented",
            ));
        }
        for flag in [
            "qk_norm",
            "scaled_cosine_attn",
            "scale_heads",
            "scale_attn_inner",
            "scale_attn",
            "scale_fc",
        ] {
            if self.bool(flag, false)? {
                return Err(unsupported(
                    &self.field(flag),
                    &json!(true),
                    "open_clip's CustomResidualAttentionBlock is not implemented",
                ));
            }
        }
        Ok(())
    }

    /// `act_kwargs`: only GELU's `approximate` is meaningful.
    fn act_kwargs(&mut self, activation: Activation) -> Result<GeluApproximate, ModelError> {
        let Some(v) = self.take("act_kwargs") else {
            return Ok(GeluApproximate::None);
        };
        let field = self.field("act_kwargs");
        let Some(map) = v.as_object() else {
            return Err(invalid(&field, &v, "expected an object"));
        };
        if map.is_empty() {
            return Ok(GeluApproximate::None);
        }
        if activation == Activation::QuickGelu {
            return Err(invalid(
                &field,
                &v,
                "QuickGELU takes no arguments (open_clip raises a TypeError)",
            ));
        }
        let mut approx = GeluApproximate::None;
        for (k, val) in map {
            match (k.as_str(), val.as_str()) {
                ("approximate", Some("none")) => approx = GeluApproximate::None,
                ("approximate", Some("tanh")) => approx = GeluApproximate::Tanh,
                _ => {
                    return Err(unsupported(
                        &field,
                        &v,
                        "only {\"approximate\": \"none\" | \"tanh\"} is implemented",
                    ));
                }
            }
        }
        Ok(approx)
    }

    /// `norm_kwargs`: only LayerNorm's `eps` is implemented.
    fn norm_kwargs(&mut self) -> Result<f64, ModelError> {
        let Some(v) = self.take("norm_kwargs") else {
            return Ok(1e-5);
        };
        let field = self.field("norm_kwargs");
        let Some(map) = v.as_object() else {
            return Err(invalid(&field, &v, "expected an object"));
        };
        let mut eps = 1e-5;
        for (k, val) in map {
            match (k.as_str(), val.as_f64()) {
                ("eps", Some(e)) if e >= 0.0 => eps = e,
                _ => {
                    return Err(unsupported(
                        &field,
                        &v,
                        "only {\"eps\": <number>} is implemented",
                    ));
                }
            }
        }
        Ok(eps)
    }

    fn finish(self) -> Result<(), ModelError> {
        if let Some((key, value)) = self.map.into_iter().next() {
            let field = if self.prefix.is_empty() {
                key
            } else {
                format!("{}.{key}", self.prefix)
            };
            return Err(invalid(
                &field,
                &value,
                "unknown field (open_clip's config dataclasses reject it too)",
            ));
        }
        Ok(())
    }
}

fn parse_clip(mut top: Section) -> Result<ClipConfig, ModelError> {
    if top.bool("custom_text", false)? {
        return Err(unsupported(
            "custom_text",
            &json!(true),
            "open_clip's CustomTextCLIP (text tower under `text.`, HF text models) is not implemented",
        ));
    }
    if let Some(v) = top.take("multimodal_cfg") {
        return Err(unsupported(
            "multimodal_cfg",
            &v,
            "CoCa models are not implemented",
        ));
    }
    let embed_dim = top.required_usize("embed_dim")?;
    let activation = if top.bool("quick_gelu", false)? {
        Activation::QuickGelu
    } else {
        Activation::Gelu
    };
    let init_logit_scale = top.f64("init_logit_scale", DEFAULT_LOGIT_SCALE)?;
    let init_logit_bias = top.opt_f64("init_logit_bias")?;
    let nonscalar_logit_scale = top.bool("nonscalar_logit_scale", false)?;
    let vision = match top.take("vision_cfg") {
        Some(v) => parse_vision(Section::new("vision_cfg", v)?, activation)?,
        None => return Err(invalid("vision_cfg", &Value::Null, "required")),
    };
    let text = match top.take("text_cfg") {
        Some(v) => parse_text(Section::new("text_cfg", v)?, activation)?,
        None => return Err(invalid("text_cfg", &Value::Null, "required")),
    };
    top.finish()?;
    let config = ClipConfig {
        embed_dim,
        vision,
        text,
        activation,
        init_logit_scale,
        init_logit_bias,
        nonscalar_logit_scale,
    };
    config.validate()?;
    Ok(config)
}

const TIMM_FIELDS: &[&str] = &[
    "timm_model_pretrained",
    "timm_pool",
    "timm_proj",
    "timm_proj_bias",
    "timm_drop",
    "timm_drop_path",
];

fn parse_vision(mut s: Section, activation: Activation) -> Result<VisionConfig, ModelError> {
    if let Some(v) = s.take("timm_model_name") {
        return Err(unsupported(
            "vision_cfg.timm_model_name",
            &v,
            "timm vision towers are not implemented (ViT and ModifiedResNet are)",
        ));
    }
    s.ignore(TIMM_FIELDS);
    let defaults = VitConfig::default();
    let layers = s.take("layers").unwrap_or(json!(defaults.layers));
    if let Some(list) = layers.as_array() {
        // ModifiedResNet: open_clip reads only layers, width, head_width and image_size.
        let stages: Vec<Option<u64>> = list.iter().map(Value::as_u64).collect();
        if stages.len() != 4 || stages.iter().any(Option::is_none) {
            return Err(invalid(
                "vision_cfg.layers",
                &layers,
                "a ModifiedResNet needs four block counts",
            ));
        }
        let width = s.usize("width", defaults.width)?;
        let head_width = s.usize("head_width", defaults.head_width)?;
        let image_size = s.pair("image_size", defaults.image_size)?;
        if image_size[0] != image_size[1] {
            return Err(unsupported(
                "vision_cfg.image_size",
                &json!(image_size),
                "open_clip's ModifiedResNet takes a single (square) image size",
            ));
        }
        let vit_only_fields = [
            "mlp_ratio",
            "patch_size",
            "ls_init_value",
            "patch_dropout",
            "attentional_pool",
            "attn_pooler_queries",
            "attn_pooler_heads",
            "no_ln_pre",
            "pos_embed_type",
            "final_ln_after_pool",
            "pool_type",
            "output_tokens",
            "act_kwargs",
            "norm_kwargs",
            "block_type",
            "qk_norm",
            "scaled_cosine_attn",
            "scale_heads",
            "scale_attn_inner",
            "scale_attn",
            "scale_fc",
        ];
        s.ignore(&vit_only_fields);
        s.finish()?;
        return Ok(VisionConfig::ModifiedResNet(ModifiedResNetConfig {
            layers: [
                stages[0].unwrap() as usize,
                stages[1].unwrap() as usize,
                stages[2].unwrap() as usize,
                stages[3].unwrap() as usize,
            ],
            width,
            head_width,
            image_size: image_size[0],
        }));
    }
    let layers = s.usize_value("layers", &layers)?;
    let width = s.usize("width", defaults.width)?;
    let head_width = s.usize("head_width", defaults.head_width)?;
    let mlp_ratio = s.f64("mlp_ratio", defaults.mlp_ratio)?;
    if s.map.get("patch_size") == Some(&Value::Null) {
        return Err(invalid(
            "vision_cfg.patch_size",
            &Value::Null,
            "a ViT needs a patch size",
        ));
    }
    let patch_size = s.pair("patch_size", defaults.patch_size)?;
    let image_size = s.pair("image_size", defaults.image_size)?;
    let ls_init_value = s.opt_f64("ls_init_value")?;
    let patch_dropout = s.f64("patch_dropout", 0.0)?;
    if let Some(v) = s.take("attentional_pool")
        && v != json!(false)
    {
        return Err(unsupported(
            "vision_cfg.attentional_pool",
            &v,
            "the attentional pooler (CoCa) is not implemented",
        ));
    }
    s.ignore(&["attn_pooler_queries", "attn_pooler_heads"]);
    let no_ln_pre = s.bool("no_ln_pre", false)?;
    let pos_embed_type = match s.opt_str("pos_embed_type")? {
        None => PosEmbedType::Learnable,
        Some((kind, v)) => match kind.as_str() {
            "learnable" => PosEmbedType::Learnable,
            "sin_cos_2d" => PosEmbedType::SinCos2d,
            _ => {
                return Err(invalid(
                    "vision_cfg.pos_embed_type",
                    &v,
                    "expected \"learnable\" or \"sin_cos_2d\"",
                ));
            }
        },
    };
    let final_ln_after_pool = s.bool("final_ln_after_pool", false)?;
    let pool_type = match s.opt_str("pool_type")? {
        None => VisionPool::Token,
        Some((kind, v)) => match kind.as_str() {
            "tok" => VisionPool::Token,
            "avg" => VisionPool::Average,
            "none" => {
                return Err(unsupported(
                    "vision_cfg.pool_type",
                    &v,
                    "without pooling the tower returns every token, not an embedding",
                ));
            }
            _ => {
                return Err(invalid(
                    "vision_cfg.pool_type",
                    &v,
                    "expected \"tok\", \"avg\" or \"none\"",
                ));
            }
        },
    };
    let output_tokens = s.bool("output_tokens", false)?;
    let gelu_approximate = s.act_kwargs(activation)?;
    let norm_eps = s.norm_kwargs()?;
    s.default_block_only()?;
    s.finish()?;
    Ok(VisionConfig::Vit(VitConfig {
        image_size,
        patch_size,
        width,
        layers,
        head_width,
        mlp_ratio,
        ls_init_value,
        patch_dropout,
        no_ln_pre,
        pos_embed_type,
        final_ln_after_pool,
        pool_type,
        output_tokens,
        gelu_approximate,
        norm_eps,
    }))
}

const TOKENIZER_FIELDS: &[&str] = &["hf_tokenizer_name", "tokenizer_mode", "tokenizer_kwargs"];

fn parse_text(mut s: Section, activation: Activation) -> Result<TextConfig, ModelError> {
    if let Some(v) = s.take("hf_model_name") {
        return Err(unsupported(
            "text_cfg.hf_model_name",
            &v,
            "Hugging Face text towers are not implemented",
        ));
    }
    s.ignore(&["hf_model_pretrained", "hf_proj_type", "hf_pooler_type"]);
    let d = TextConfig::default();
    let mut tokenizer = Map::new();
    for key in TOKENIZER_FIELDS {
        if let Some(v) = s.take(key) {
            tokenizer.insert(key.to_string(), v);
        }
    }
    if s.bool("embed_cls", false)? {
        return Err(unsupported(
            "text_cfg.embed_cls",
            &json!(true),
            "a text CLS token needs open_clip's CustomTextCLIP/CoCa, which are not implemented",
        ));
    }
    let pool_type = match s.opt_str("pool_type")? {
        None => TextPool::Argmax,
        Some((kind, v)) => match kind.as_str() {
            "first" => TextPool::First,
            "last" => TextPool::Last,
            "argmax" => TextPool::Argmax,
            "eos" => TextPool::Eos,
            "none" => {
                return Err(unsupported(
                    "text_cfg.pool_type",
                    &v,
                    "without pooling the tower returns every token, not an embedding",
                ));
            }
            _ => {
                return Err(invalid(
                    "text_cfg.pool_type",
                    &v,
                    "expected \"first\", \"last\", \"argmax\", \"eos\" or \"none\"",
                ));
            }
        },
    };
    let proj_type = match s.opt_str("proj_type")? {
        None => TextProjType::Linear,
        Some((kind, v)) => match kind.as_str() {
            "linear" => TextProjType::Linear,
            "none" => TextProjType::None,
            _ => {
                return Err(invalid(
                    "text_cfg.proj_type",
                    &v,
                    "expected \"linear\" or \"none\"",
                ));
            }
        },
    };
    let config = TextConfig {
        context_length: s.usize("context_length", d.context_length)?,
        vocab_size: s.usize("vocab_size", d.vocab_size)?,
        width: s.usize("width", d.width)?,
        heads: s.usize("heads", d.heads)?,
        layers: s.usize("layers", d.layers)?,
        mlp_ratio: s.f64("mlp_ratio", d.mlp_ratio)?,
        ls_init_value: s.opt_f64("ls_init_value")?,
        no_causal_mask: s.bool("no_causal_mask", false)?,
        pool_type,
        eos_id: s.i64("eos_id", d.eos_id)?,
        pad_id: s.i64("pad_id", d.pad_id)?,
        proj_type,
        proj_bias: s.bool("proj_bias", false)?,
        final_ln_after_pool: s.bool("final_ln_after_pool", false)?,
        output_tokens: s.bool("output_tokens", false)?,
        gelu_approximate: s.act_kwargs(activation)?,
        norm_eps: s.norm_kwargs()?,
        tokenizer,
    };
    s.default_block_only()?;
    s.finish()?;
    Ok(config)
}

// ---------------------------------------------------------------------------------------------
// Writing

fn pair_to_value(pair: [usize; 2]) -> Value {
    if pair[0] == pair[1] {
        json!(pair[0])
    } else {
        json!(pair)
    }
}

fn act_kwargs_value(approx: GeluApproximate) -> Option<Value> {
    match approx {
        GeluApproximate::None => None,
        GeluApproximate::Tanh => Some(json!({"approximate": "tanh"})),
    }
}

fn vision_to_value(vision: &VisionConfig) -> Value {
    let mut m = Map::new();
    match vision {
        VisionConfig::Vit(v) => {
            m.insert("image_size".into(), pair_to_value(v.image_size));
            m.insert("layers".into(), json!(v.layers));
            m.insert("width".into(), json!(v.width));
            m.insert("head_width".into(), json!(v.head_width));
            m.insert("mlp_ratio".into(), json!(v.mlp_ratio));
            m.insert("patch_size".into(), pair_to_value(v.patch_size));
            if let Some(ls) = v.ls_init_value {
                m.insert("ls_init_value".into(), json!(ls));
            }
            if v.patch_dropout != 0.0 {
                m.insert("patch_dropout".into(), json!(v.patch_dropout));
            }
            if v.no_ln_pre {
                m.insert("no_ln_pre".into(), json!(true));
            }
            if v.pos_embed_type == PosEmbedType::SinCos2d {
                m.insert("pos_embed_type".into(), json!("sin_cos_2d"));
            }
            if v.final_ln_after_pool {
                m.insert("final_ln_after_pool".into(), json!(true));
            }
            if v.pool_type == VisionPool::Average {
                m.insert("pool_type".into(), json!("avg"));
            }
            if v.output_tokens {
                m.insert("output_tokens".into(), json!(true));
            }
            if let Some(kw) = act_kwargs_value(v.gelu_approximate) {
                m.insert("act_kwargs".into(), kw);
            }
            if v.norm_eps != 1e-5 {
                m.insert("norm_kwargs".into(), json!({"eps": v.norm_eps}));
            }
        }
        VisionConfig::ModifiedResNet(r) => {
            m.insert("image_size".into(), json!(r.image_size));
            m.insert("layers".into(), json!(r.layers));
            m.insert("width".into(), json!(r.width));
            if r.head_width != 64 {
                m.insert("head_width".into(), json!(r.head_width));
            }
            m.insert("patch_size".into(), Value::Null);
        }
    }
    Value::Object(m)
}

fn text_to_value(t: &TextConfig) -> Value {
    let mut m = Map::new();
    m.insert("context_length".into(), json!(t.context_length));
    m.insert("vocab_size".into(), json!(t.vocab_size));
    for (k, v) in &t.tokenizer {
        m.insert(k.clone(), v.clone());
    }
    m.insert("width".into(), json!(t.width));
    m.insert("heads".into(), json!(t.heads));
    m.insert("layers".into(), json!(t.layers));
    if t.mlp_ratio != 4.0 {
        m.insert("mlp_ratio".into(), json!(t.mlp_ratio));
    }
    if let Some(ls) = t.ls_init_value {
        m.insert("ls_init_value".into(), json!(ls));
    }
    if t.no_causal_mask {
        m.insert("no_causal_mask".into(), json!(true));
    }
    let pool = match t.pool_type {
        TextPool::First => Some("first"),
        TextPool::Last => Some("last"),
        TextPool::Argmax => None,
        TextPool::Eos => Some("eos"),
    };
    if let Some(pool) = pool {
        m.insert("pool_type".into(), json!(pool));
    }
    if t.eos_id != 2 {
        m.insert("eos_id".into(), json!(t.eos_id));
    }
    if t.pad_id != 0 {
        m.insert("pad_id".into(), json!(t.pad_id));
    }
    if t.proj_type == TextProjType::None {
        m.insert("proj_type".into(), json!("none"));
    }
    if t.proj_bias {
        m.insert("proj_bias".into(), json!(true));
    }
    if t.final_ln_after_pool {
        m.insert("final_ln_after_pool".into(), json!(true));
    }
    if t.output_tokens {
        m.insert("output_tokens".into(), json!(true));
    }
    if let Some(kw) = act_kwargs_value(t.gelu_approximate) {
        m.insert("act_kwargs".into(), kw);
    }
    if t.norm_eps != 1e-5 {
        m.insert("norm_kwargs".into(), json!({"eps": t.norm_eps}));
    }
    Value::Object(m)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vit(config: &ClipConfig) -> &VitConfig {
        match &config.vision {
            VisionConfig::Vit(v) => v,
            other => panic!("expected a ViT, got {other:?}"),
        }
    }

    fn resnet(config: &ClipConfig) -> &ModifiedResNetConfig {
        match &config.vision {
            VisionConfig::ModifiedResNet(r) => r,
            other => panic!("expected a ModifiedResNet, got {other:?}"),
        }
    }

    /// (name, embed, vision width, layers, heads, patch, image, text width, heads, layers,
    /// context, quick_gelu) as written in open_clip 3.3.0's JSON (ViT-T-16: CLIP-KD's).
    #[allow(clippy::type_complexity)]
    const VITS: &[(
        &str,
        usize,
        usize,
        usize,
        usize,
        usize,
        usize,
        usize,
        usize,
        usize,
        usize,
        bool,
    )] = &[
        ("ViT-T-16", 512, 192, 12, 3, 16, 224, 384, 6, 12, 77, false),
        ("ViT-B-32", 512, 768, 12, 12, 32, 224, 512, 8, 12, 77, false),
        (
            "ViT-B-32-quickgelu",
            512,
            768,
            12,
            12,
            32,
            224,
            512,
            8,
            12,
            77,
            true,
        ),
        ("ViT-B-16", 512, 768, 12, 12, 16, 224, 512, 8, 12, 77, false),
        (
            "ViT-B-16-quickgelu",
            512,
            768,
            12,
            12,
            16,
            224,
            512,
            8,
            12,
            77,
            true,
        ),
        (
            "ViT-L-14", 768, 1024, 24, 16, 14, 224, 768, 12, 12, 77, false,
        ),
        (
            "ViT-L-14-quickgelu",
            768,
            1024,
            24,
            16,
            14,
            224,
            768,
            12,
            12,
            77,
            true,
        ),
        (
            "ViT-L-14-336",
            768,
            1024,
            24,
            16,
            14,
            336,
            768,
            12,
            12,
            77,
            false,
        ),
        (
            "ViT-L-14-336-quickgelu",
            768,
            1024,
            24,
            16,
            14,
            336,
            768,
            12,
            12,
            77,
            true,
        ),
        (
            "ViT-H-14", 1024, 1280, 32, 16, 14, 224, 1024, 16, 24, 77, false,
        ),
        (
            "ViT-H-14-quickgelu",
            1024,
            1280,
            32,
            16,
            14,
            224,
            1024,
            16,
            24,
            77,
            true,
        ),
    ];

    #[test]
    fn vit_presets_match_open_clip_json() {
        for &(name, embed, width, layers, heads, patch, image, tw, th, tl, ctx, quick) in VITS {
            let c = ClipConfig::preset(name).unwrap();
            let v = vit(&c);
            assert_eq!(c.embed_dim, embed, "{name} embed_dim");
            assert_eq!(v.width, width, "{name} vision width");
            assert_eq!(v.layers, layers, "{name} vision layers");
            assert_eq!(v.heads(), heads, "{name} vision heads");
            assert_eq!(v.patch_size, [patch, patch], "{name} patch size");
            assert_eq!(v.image_size, [image, image], "{name} image size");
            assert_eq!(v.mlp_width(), 4 * width, "{name} mlp width");
            assert_eq!(c.text.width, tw, "{name} text width");
            assert_eq!(c.text.heads, th, "{name} text heads");
            assert_eq!(c.text.layers, tl, "{name} text layers");
            assert_eq!(c.text.context_length, ctx, "{name} context");
            assert_eq!(c.text.vocab_size, 49408, "{name} vocab");
            let expected = if quick {
                Activation::QuickGelu
            } else {
                Activation::Gelu
            };
            assert_eq!(c.activation, expected, "{name} activation");
            assert_eq!(c.init_logit_scale, DEFAULT_LOGIT_SCALE);
        }
    }

    #[test]
    fn resnet_presets_match_open_clip_json() {
        // (name, embed, layers, width, attnpool heads, image, text width, heads, layers)
        #[allow(clippy::type_complexity)]
        let cases: &[(
            &str,
            usize,
            [usize; 4],
            usize,
            usize,
            usize,
            usize,
            usize,
            usize,
        )] = &[
            ("RN50", 1024, [3, 4, 6, 3], 64, 32, 224, 512, 8, 12),
            (
                "RN50-quickgelu",
                1024,
                [3, 4, 6, 3],
                64,
                32,
                224,
                512,
                8,
                12,
            ),
            ("RN101", 512, [3, 4, 23, 3], 64, 32, 224, 512, 8, 12),
            (
                "RN101-quickgelu",
                512,
                [3, 4, 23, 3],
                64,
                32,
                224,
                512,
                8,
                12,
            ),
            ("RN50x4", 640, [4, 6, 10, 6], 80, 40, 288, 640, 10, 12),
            (
                "RN50x4-quickgelu",
                640,
                [4, 6, 10, 6],
                80,
                40,
                288,
                640,
                10,
                12,
            ),
        ];
        for &(name, embed, layers, width, heads, image, tw, th, tl) in cases {
            let c = ClipConfig::preset(name).unwrap();
            let r = resnet(&c);
            assert_eq!(c.embed_dim, embed, "{name} embed_dim");
            assert_eq!(r.layers, layers, "{name} layers");
            assert_eq!(r.width, width, "{name} width");
            assert_eq!(r.heads(), heads, "{name} attnpool heads");
            assert_eq!(r.image_size, image, "{name} image size");
            assert_eq!(c.text.width, tw, "{name} text width");
            assert_eq!(c.text.heads, th, "{name} text heads");
            assert_eq!(c.text.layers, tl, "{name} text layers");
            assert_eq!(c.text.context_length, 77, "{name} context");
            assert_eq!(
                c.activation == Activation::QuickGelu,
                name.ends_with("quickgelu"),
                "{name} activation"
            );
        }
    }

    #[test]
    fn every_preset_round_trips_through_json_and_serde() {
        assert!(ClipConfig::preset_names().len() >= 20);
        for name in ClipConfig::preset_names() {
            let c = ClipConfig::preset(name).unwrap();
            let again = ClipConfig::from_open_clip_json_str(&c.to_open_clip_json()).unwrap();
            assert_eq!(c, again, "{name}");
            let via_serde: ClipConfig =
                serde_json::from_value(serde_json::to_value(&c).unwrap()).unwrap();
            assert_eq!(c, via_serde, "{name}");
        }
    }

    #[test]
    fn non_default_fields_round_trip() {
        let json = r#"{
            "embed_dim": 24, "quick_gelu": true, "init_logit_scale": 1.5, "init_logit_bias": -10,
            "nonscalar_logit_scale": true,
            "vision_cfg": {"image_size": [32, 48], "layers": 2, "width": 32, "head_width": 8,
                "patch_size": [8, 16], "mlp_ratio": 2.5, "ls_init_value": 0.1, "no_ln_pre": true,
                "pool_type": "avg", "final_ln_after_pool": true, "patch_dropout": 0.5,
                "norm_kwargs": {"eps": 1e-6}, "timm_pool": "avg", "attn_pooler_heads": 4},
            "text_cfg": {"context_length": 16, "vocab_size": 1000, "width": 32, "heads": 2,
                "layers": 2, "ls_init_value": 0.1, "proj_bias": true, "pool_type": "eos",
                "eos_id": 999, "no_causal_mask": true, "hf_tokenizer_name": "x/y",
                "tokenizer_kwargs": {"clean": "canonicalize"}, "mlp_ratio": 3.0}
        }"#;
        let c = ClipConfig::from_open_clip_json_str(json).unwrap();
        let v = vit(&c);
        assert_eq!(v.image_size, [32, 48]);
        assert_eq!(v.patch_size, [8, 16]);
        assert_eq!(v.grid_size(), [4, 3]);
        assert_eq!(v.mlp_width(), 80);
        assert_eq!(v.pool_type, VisionPool::Average);
        assert!(v.final_ln_after_pool && v.no_ln_pre);
        assert_eq!(v.norm_eps, 1e-6);
        assert_eq!(c.init_logit_bias, Some(-10.0));
        assert_eq!(c.text.pool_type, TextPool::Eos);
        assert_eq!(c.text.eos_id, 999);
        assert!(c.text.proj_bias && c.text.no_causal_mask);
        assert_eq!(c.text.tokenizer["hf_tokenizer_name"], json!("x/y"));
        let again = ClipConfig::from_open_clip_json_str(&c.to_open_clip_json()).unwrap();
        assert_eq!(c, again);
    }

    fn error_of(json: &str) -> ModelError {
        ClipConfig::from_open_clip_json_str(json).expect_err(json)
    }

    fn with_vision(extra: &str) -> String {
        format!(
            r#"{{"embed_dim": 8, "vision_cfg": {{"image_size": 32, "layers": 1, "width": 16, "head_width": 8, "patch_size": 8{extra}}},
               "text_cfg": {{"context_length": 8, "vocab_size": 10, "width": 8, "heads": 2, "layers": 1}}}}"#
        )
    }

    fn with_text(extra: &str) -> String {
        format!(
            r#"{{"embed_dim": 8, "vision_cfg": {{"image_size": 32, "layers": 1, "width": 16, "head_width": 8, "patch_size": 8}},
               "text_cfg": {{"context_length": 8, "vocab_size": 10, "width": 8, "heads": 2, "layers": 1{extra}}}}}"#
        )
    }

    #[test]
    fn unsupported_fields_are_named() {
        let cases = [
            (
                with_vision(r#", "timm_model_name": "resnet18""#),
                "vision_cfg.timm_model_name",
                "\"resnet18\"",
            ),
            (
                with_vision(r#", "attentional_pool": true"#),
                "vision_cfg.attentional_pool",
                "true",
            ),
            (
                with_vision(r#", "pool_type": "none""#),
                "vision_cfg.pool_type",
                "\"none\"",
            ),
            (
                with_vision(r#", "qk_norm": true"#),
                "vision_cfg.qk_norm",
                "true",
            ),
            (
                with_vision(r#", "block_type": "custom""#),
                "vision_cfg.block_type",
                "\"custom\"",
            ),
            (
                with_vision(r#", "norm_kwargs": {"elementwise_affine": false}"#),
                "vision_cfg.norm_kwargs",
                "{\"elementwise_affine\":false}",
            ),
            (
                with_text(r#", "hf_model_name": "roberta-base""#),
                "text_cfg.hf_model_name",
                "\"roberta-base\"",
            ),
            (
                with_text(r#", "embed_cls": true"#),
                "text_cfg.embed_cls",
                "true",
            ),
            (
                with_text(r#", "pool_type": "none""#),
                "text_cfg.pool_type",
                "\"none\"",
            ),
            (
                with_text(r#", "scale_fc": true"#),
                "text_cfg.scale_fc",
                "true",
            ),
        ];
        for (json, field, value) in cases {
            match error_of(&json) {
                ModelError::UnsupportedConfig {
                    field: f, value: v, ..
                } => {
                    assert_eq!((f.as_str(), v.as_str()), (field, value));
                }
                other => panic!("{field}: expected UnsupportedConfig, got {other}"),
            }
        }
        let custom = with_vision("").replacen('{', r#"{"custom_text": true, "#, 1);
        assert!(
            matches!(error_of(&custom), ModelError::UnsupportedConfig { field, .. } if field == "custom_text")
        );
    }

    #[test]
    fn invalid_fields_are_named() {
        let cases = [
            (
                with_vision(r#", "pool_type": "max""#),
                "vision_cfg.pool_type",
            ),
            (
                with_vision(r#", "pos_embed_type": "rope""#),
                "vision_cfg.pos_embed_type",
            ),
            (
                with_vision(r#", "unknown_thing": 1"#),
                "vision_cfg.unknown_thing",
            ),
            (
                with_vision(r#", "patch_dropout": 1.0"#),
                "vision_cfg.patch_dropout",
            ),
            (with_text(r#", "width": "wide""#), "text_cfg.width"),
            (with_text(r#", "heads": 3"#), "text_cfg.heads"),
            (with_text(r#", "proj_type": "mlp""#), "text_cfg.proj_type"),
            (
                with_vision(r#", "act_kwargs": {"approximate": "tanh"}"#).replacen(
                    '{',
                    r#"{"quick_gelu": true, "#,
                    1,
                ),
                "vision_cfg.act_kwargs",
            ),
            (
                with_vision("").replacen("\"embed_dim\": 8,", "", 1),
                "embed_dim",
            ),
        ];
        for (json, field) in cases {
            match error_of(&json) {
                ModelError::InvalidConfig { field: f, .. } => assert_eq!(f, field, "{json}"),
                other => panic!("{field}: expected InvalidConfig, got {other}"),
            }
        }
        let message = error_of(&with_text(r#", "heads": 3"#)).to_string();
        assert!(
            message.contains("text_cfg.heads") && message.contains('3'),
            "{message}"
        );
        assert!(matches!(error_of("{ not json"), ModelError::Json { .. }));
    }

    #[test]
    fn resnet_ignores_vit_only_fields_like_open_clip() {
        let json = r#"{"embed_dim": 8, "vision_cfg": {"image_size": 64, "layers": [1, 1, 1, 1],
            "width": 4, "head_width": 32, "patch_size": null, "pool_type": "avg"},
            "text_cfg": {"context_length": 8, "vocab_size": 10, "width": 8, "heads": 2, "layers": 1}}"#;
        let c = ClipConfig::from_open_clip_json_str(json).unwrap();
        assert_eq!(resnet(&c).heads(), 4);
        assert_eq!(resnet(&c).grid_size(), 2);
        assert!(!c.is_vit());
        let rect = json.replace("\"image_size\": 64", "\"image_size\": [64, 96]");
        assert!(matches!(
            error_of(&rect),
            ModelError::UnsupportedConfig { field, .. } if field == "vision_cfg.image_size"
        ));
    }

    #[test]
    fn hub_config_with_model_cfg_is_read() {
        let inner = ClipConfig::preset("ViT-B-32").unwrap().to_open_clip_json();
        let hub = format!(r#"{{"model_cfg": {inner}, "preprocess_cfg": {{"mean": [0.5]}}}}"#);
        assert_eq!(
            ClipConfig::from_open_clip_json_str(&hub).unwrap(),
            ClipConfig::preset("ViT-B-32").unwrap()
        );
    }

    #[test]
    fn resolve_presets_and_paths() {
        assert_eq!(
            ClipConfig::resolve("RN50").unwrap(),
            ClipConfig::preset("RN50").unwrap()
        );
        assert!(matches!(
            ClipConfig::resolve("ViT-Z-99"),
            Err(ModelError::UnknownPreset { name, .. }) if name == "ViT-Z-99"
        ));
        let path =
            std::env::temp_dir().join(format!("clipkd-models-{}-cfg.json", std::process::id()));
        std::fs::write(
            &path,
            ClipConfig::preset("ViT-T-16").unwrap().to_open_clip_json(),
        )
        .unwrap();
        let from_file = ClipConfig::resolve(path.to_str().unwrap()).unwrap();
        std::fs::remove_file(&path).unwrap();
        assert_eq!(from_file, ClipConfig::preset("ViT-T-16").unwrap());
        assert!(matches!(
            ClipConfig::resolve("/nonexistent/model.json"),
            Err(ModelError::Io { .. })
        ));
    }
}
