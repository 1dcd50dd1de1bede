//! timm vision towers (open_clip's `TimmModel`, `vision_cfg.timm_model_name`): the tower's
//! settings and the trunk architectures clipkd builds, by timm model name.
//!
//! open_clip creates the trunk with `timm.create_model(timm_model_name)`; clipkd has no timm,
//! so each supported name maps to an architecture config here ([`TimmTrunkConfig::named`]).
//! The architecture parameters can also be given as `vision_cfg.timm_model_kwargs`, with
//! timm's own keyword names (`timm.create_model(name, **kwargs)`), for smaller variants of a
//! family (tests, experiments). That field is clipkd's: open_clip 3.3.0's `CLIPVisionCfg` has
//! no such field and would reject it, so the writer emits it only for a trunk that differs from
//! the named one.

/// How the trunk's feature map becomes one vector (`vision_cfg.timm_pool`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TimmPool {
    /// The trunk's own default pooling (`""`): global average pooling for every trunk clipkd
    /// has. CLIP-KD's configs use this.
    TrunkDefault,
    /// Global average pooling (`"avg"`, open_clip's default).
    #[default]
    Avg,
    /// Global max pooling (`"max"`).
    Max,
}

impl TimmPool {
    /// The name in open_clip's JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            TimmPool::TrunkDefault => "",
            TimmPool::Avg => "avg",
            TimmPool::Max => "max",
        }
    }
}

/// The projection from the trunk's pooled features to `embed_dim` (`vision_cfg.timm_proj`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TimmProj {
    /// `head.drop` (dropout `timm_drop`) then `head.proj`, a `Linear` (`"linear"`, the default).
    #[default]
    Linear,
    /// `head.mlp`: timm's `Mlp` (`fc1` to `2 * embed_dim`, GELU, dropout `timm_drop`, `fc2`)
    /// (`"mlp"`).
    Mlp,
}

impl TimmProj {
    /// The name in open_clip's JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            TimmProj::Linear => "linear",
            TimmProj::Mlp => "mlp",
        }
    }
}

/// The residual block of a timm ResNet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResNetBlock {
    /// Two 3x3 convolutions (`BasicBlock`, expansion 1): ResNet-18 and -34.
    Basic,
    /// 1x1, 3x3 (strided), 1x1 convolutions (`Bottleneck`, expansion 4): ResNet-50 and deeper.
    Bottleneck,
}

impl ResNetBlock {
    /// Output channels per stage channel (`block.expansion`).
    pub fn expansion(self) -> usize {
        match self {
            ResNetBlock::Basic => 1,
            ResNetBlock::Bottleneck => 4,
        }
    }
}

/// timm's `ResNet` with its default stem (`stem_type=""`: a 7x7 stride-2 convolution,
/// BatchNorm, ReLU, 3x3 stride-2 max pooling), strided 1x1 convolution shortcuts and global
/// average pooling: `resnet18`, `resnet34`, `resnet50`, `resnet101`, `resnet152`.
#[derive(Debug, Clone, PartialEq)]
pub struct TimmResNetConfig {
    /// The block of every stage.
    pub block: ResNetBlock,
    /// Blocks per stage (timm's `layers`).
    pub layers: [usize; 4],
    /// Stage widths before the block expansion (timm's `channels`, default 64, 128, 256, 512).
    /// The default stem has 64 channels whatever these are (timm's `stem_width` only sizes its
    /// deep stems).
    pub channels: [usize; 4],
}

impl TimmResNetConfig {
    fn new(block: ResNetBlock, layers: [usize; 4]) -> Self {
        Self {
            block,
            layers,
            channels: [64, 128, 256, 512],
        }
    }

    /// Output channels of timm's default stem.
    pub const STEM_WIDTH: usize = 64;

    /// The pooled feature width (timm's `num_features`): the last stage's output channels.
    pub fn num_features(&self) -> usize {
        self.channels[3] * self.block.expansion()
    }
}

/// The block layout of a timm `EfficientNet`-builder model (timm's `arch_def` of its generator
/// function), before the channel and depth multipliers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EfficientNetArch {
    /// `_gen_efficientnet`: MBConv blocks with SiLU and sigmoid-gated squeeze-excitation, stem
    /// 32, a 1x1 head convolution to 1280 with BatchNorm before the pooling.
    EfficientNet,
    /// `_gen_mobilenet_v3` for a `small` variant: hard-swish (ReLU in the first blocks),
    /// hard-sigmoid-gated squeeze-excitation, stem 16, pooling then a 1x1 head convolution to
    /// 1024 (with bias, no norm).
    MobileNetV3Small,
    /// `_gen_mobilenet_v3` for a `large` variant: as `small`, head 1280.
    MobileNetV3Large,
}

/// A model of timm's `EfficientNetBuilder` family: `efficientnet_b0`..`b3` (`EfficientNet`)
/// and `mobilenetv3_small_*` / `mobilenetv3_large_*` (`MobileNetV3`): the layout, scaled by
/// timm's channel and depth multipliers (the arguments of its generator functions).
#[derive(Debug, Clone, PartialEq)]
pub struct TimmEfficientNetConfig {
    /// The block layout.
    pub arch: EfficientNetArch,
    /// Channel multiplier (`channel_multiplier`): every width times it, rounded to a multiple
    /// of 8 (timm's `round_channels`); a MobileNetV3 below 0.75 keeps its 16-channel stem.
    pub channel_multiplier: f64,
    /// Depth multiplier (`depth_multiplier`): the blocks of each stage times it, rounded up.
    pub depth_multiplier: f64,
}

impl TimmEfficientNetConfig {
    /// timm's `round_channels(channels, multiplier)`: `channels * multiplier` to a multiple of 8.
    pub fn round_channels(&self, channels: usize) -> usize {
        make_divisible(channels as f64 * self.channel_multiplier, 8)
    }

    /// The trunk's pooled output width (see [`TimmTrunkConfig::num_features`]).
    pub fn num_features(&self) -> usize {
        match self.arch {
            EfficientNetArch::EfficientNet => self.round_channels(1280),
            EfficientNetArch::MobileNetV3Small => 1024,
            EfficientNetArch::MobileNetV3Large => 1280,
        }
    }
}

/// timm's `make_divisible(v, divisor)`: the nearest multiple of `divisor` (halves up), at least
/// `divisor`, and not below 90% of `v`.
pub(crate) fn make_divisible(v: f64, divisor: usize) -> usize {
    let d = divisor as f64;
    let mut rounded = (((v + d / 2.0) as usize) / divisor * divisor).max(divisor);
    if (rounded as f64) < 0.9 * v {
        rounded += divisor;
    }
    rounded
}

/// timm's `SwinTransformer` (`swin_*_patch4_window7_224`): a patch embedding, stages of
/// shifted-window attention blocks with relative position bias, patch merging between stages,
/// a final LayerNorm and average pooling. The arguments are timm's keyword arguments.
#[derive(Debug, Clone, PartialEq)]
pub struct TimmSwinConfig {
    /// Input side the model is built for (`img_size`; timm's patch embedding requires it).
    pub img_size: usize,
    /// Patch side (`patch_size`).
    pub patch_size: usize,
    /// Attention window side (`window_size`); a stage whose feature map is not larger uses
    /// the whole map as its window, without shift.
    pub window_size: usize,
    /// Width of the first stage (`embed_dim`), doubled at each later stage.
    pub embed_dim: usize,
    /// Blocks per stage (`depths`).
    pub depths: Vec<usize>,
    /// Attention heads per stage (`num_heads`).
    pub num_heads: Vec<usize>,
    /// MLP width over block width (`mlp_ratio`).
    pub mlp_ratio: f64,
}

impl TimmSwinConfig {
    fn new(embed_dim: usize, depths: &[usize], num_heads: &[usize]) -> Self {
        Self {
            img_size: 224,
            patch_size: 4,
            window_size: 7,
            embed_dim,
            depths: depths.to_vec(),
            num_heads: num_heads.to_vec(),
            mlp_ratio: 4.0,
        }
    }

    /// Width of stage `i`: `embed_dim * 2^i`.
    pub fn stage_dim(&self, i: usize) -> usize {
        self.embed_dim << i
    }

    /// The pooled feature width: the last stage's width.
    pub fn num_features(&self) -> usize {
        self.stage_dim(self.depths.len().saturating_sub(1))
    }
}

/// The transformer of a MobileViT stage (timm's `MobileVitBlock`).
#[derive(Debug, Clone, PartialEq)]
pub struct MobileVitTransformer {
    /// Token width (`transformer_dim`).
    pub dim: usize,
    /// Transformer blocks (`transformer_depth`).
    pub depth: usize,
    /// Side of the patches whose pixels are the sequences (`patch_size`).
    pub patch_size: usize,
}

/// One stage of a MobileViT: `blocks` inverted-residual blocks (the first with `stride`),
/// then a MobileViT block if `transformer` is set.
#[derive(Debug, Clone, PartialEq)]
pub struct MobileVitStage {
    /// Inverted-residual blocks (timm's `d`).
    pub blocks: usize,
    /// Output channels (timm's `c`, rounded to a multiple of 8 as timm's builder does).
    pub channels: usize,
    /// Stride of the stage's first block (timm's `s`).
    pub stride: usize,
    /// The MobileViT block that ends the stage, if any.
    pub transformer: Option<MobileVitTransformer>,
}

/// timm's `mobilevit_*` (a `ByobNet`): a 3x3 stride-2 stem, stages of inverted residuals
/// (depthwise, `bottle_ratio` expansion of the input, linear output) and MobileViT blocks
/// (local 3x3 + 1x1 convolutions, a transformer over the pixels of each patch position, 1x1
/// projection and a 3x3 fusion with the input), then a 1x1 convolution to `num_features`.
/// `timm_model_kwargs` describes other layouts with timm's `ByoBlockCfg` names:
/// `stem_chs`, `num_features`, `bottle_ratio`, and `stages`, a list of
/// `{"d", "c", "s"[, "transformer_dim", "transformer_depth", "patch_size"]}`.
#[derive(Debug, Clone, PartialEq)]
pub struct TimmMobileVitConfig {
    /// Stem output channels (`stem_chs`).
    pub stem_chs: usize,
    /// The stages.
    pub stages: Vec<MobileVitStage>,
    /// Expansion of the inverted residuals' input width (`br`, 4 for `s`/`xs`, 2 for `xxs`).
    pub bottle_ratio: f64,
    /// Width of the final 1x1 convolution (`num_features`).
    pub num_features: usize,
    /// Attention heads of the transformers (timm's default, 4).
    pub num_heads: usize,
    /// MLP width over token width in the transformers (timm's default, 2).
    pub mlp_ratio: f64,
}

impl TimmMobileVitConfig {
    fn named(
        stem_chs: usize,
        bottle_ratio: f64,
        num_features: usize,
        c: [usize; 5],
        t: [(usize, usize); 3],
    ) -> Self {
        let plain = |blocks, channels, stride| MobileVitStage {
            blocks,
            channels,
            stride,
            transformer: None,
        };
        let vit = |channels, (dim, depth): (usize, usize)| MobileVitStage {
            blocks: 1,
            channels,
            stride: 2,
            transformer: Some(MobileVitTransformer {
                dim,
                depth,
                patch_size: 2,
            }),
        };
        Self {
            stem_chs,
            stages: vec![
                plain(1, c[0], 1),
                plain(3, c[1], 2),
                vit(c[2], t[0]),
                vit(c[3], t[1]),
                vit(c[4], t[2]),
            ],
            bottle_ratio,
            num_features,
            num_heads: 4,
            mlp_ratio: 2.0,
        }
    }
}

/// The architecture of a timm trunk.
#[derive(Debug, Clone, PartialEq)]
pub enum TimmTrunkConfig {
    /// timm's `ResNet`.
    ResNet(TimmResNetConfig),
    /// timm's `EfficientNet` or `MobileNetV3`.
    EfficientNet(TimmEfficientNetConfig),
    /// timm's `SwinTransformer`.
    Swin(TimmSwinConfig),
    /// timm's `mobilevit_*` (`ByobNet`).
    MobileVit(TimmMobileVitConfig),
}

/// The timm model names clipkd builds, with their architectures.
const NAMED_TRUNKS: &[&str] = &[
    "resnet18",
    "resnet34",
    "resnet50",
    "resnet101",
    "resnet152",
    "efficientnet_b0",
    "efficientnet_b1",
    "efficientnet_b2",
    "efficientnet_b3",
    "mobilenetv3_small_050",
    "mobilenetv3_small_075",
    "mobilenetv3_small_100",
    "mobilenetv3_large_075",
    "mobilenetv3_large_100",
    "swin_tiny_patch4_window7_224",
    "swin_small_patch4_window7_224",
    "swin_base_patch4_window7_224",
    "mobilevit_s",
    "mobilevit_xs",
    "mobilevit_xxs",
];

impl TimmTrunkConfig {
    /// The architecture timm builds for `name` (`timm.create_model(name)`), or `None` if
    /// clipkd does not have it (see [`TimmTrunkConfig::known_names`]).
    pub fn named(name: &str) -> Option<Self> {
        use ResNetBlock::{Basic, Bottleneck};
        let resnet = |block, layers| Some(Self::ResNet(TimmResNetConfig::new(block, layers)));
        let effnet = |arch, channel_multiplier, depth_multiplier| {
            Some(Self::EfficientNet(TimmEfficientNetConfig {
                arch,
                channel_multiplier,
                depth_multiplier,
            }))
        };
        use EfficientNetArch::{EfficientNet, MobileNetV3Large, MobileNetV3Small};
        let swin = |embed_dim, depths: &[usize], heads: &[usize]| {
            Some(Self::Swin(TimmSwinConfig::new(embed_dim, depths, heads)))
        };
        let mobilevit = |stem, br, features, c, t| {
            Some(Self::MobileVit(TimmMobileVitConfig::named(
                stem, br, features, c, t,
            )))
        };
        match name {
            "mobilevit_s" => mobilevit(
                16,
                4.0,
                640,
                [32, 64, 96, 128, 160],
                [(144, 2), (192, 4), (240, 3)],
            ),
            "mobilevit_xs" => mobilevit(
                16,
                4.0,
                384,
                [32, 48, 64, 80, 96],
                [(96, 2), (120, 4), (144, 3)],
            ),
            "mobilevit_xxs" => mobilevit(
                16,
                2.0,
                320,
                [16, 24, 48, 64, 80],
                [(64, 2), (80, 4), (96, 3)],
            ),
            "swin_tiny_patch4_window7_224" => swin(96, &[2, 2, 6, 2], &[3, 6, 12, 24]),
            "swin_small_patch4_window7_224" => swin(96, &[2, 2, 18, 2], &[3, 6, 12, 24]),
            "swin_base_patch4_window7_224" => swin(128, &[2, 2, 18, 2], &[4, 8, 16, 32]),
            "efficientnet_b0" => effnet(EfficientNet, 1.0, 1.0),
            "efficientnet_b1" => effnet(EfficientNet, 1.0, 1.1),
            "efficientnet_b2" => effnet(EfficientNet, 1.1, 1.2),
            "efficientnet_b3" => effnet(EfficientNet, 1.2, 1.4),
            "mobilenetv3_small_050" => effnet(MobileNetV3Small, 0.5, 1.0),
            "mobilenetv3_small_075" => effnet(MobileNetV3Small, 0.75, 1.0),
            "mobilenetv3_small_100" => effnet(MobileNetV3Small, 1.0, 1.0),
            "mobilenetv3_large_075" => effnet(MobileNetV3Large, 0.75, 1.0),
            "mobilenetv3_large_100" => effnet(MobileNetV3Large, 1.0, 1.0),
            "resnet18" => resnet(Basic, [2, 2, 2, 2]),
            "resnet34" => resnet(Basic, [3, 4, 6, 3]),
            "resnet50" => resnet(Bottleneck, [3, 4, 6, 3]),
            "resnet101" => resnet(Bottleneck, [3, 4, 23, 3]),
            "resnet152" => resnet(Bottleneck, [3, 8, 36, 3]),
            _ => None,
        }
    }

    /// timm's default `drop_path_rate` of the model class: 0.1 for `SwinTransformer`, 0 for
    /// the others. open_clip passes `timm_drop_path` only when it is set, so a Swin student
    /// of CLIP-KD's config trains with stochastic depth 0.1.
    pub fn default_drop_path_rate(&self) -> f64 {
        match self {
            TimmTrunkConfig::Swin(_) => 0.1,
            TimmTrunkConfig::ResNet(_)
            | TimmTrunkConfig::EfficientNet(_)
            | TimmTrunkConfig::MobileVit(_) => 0.0,
        }
    }

    /// Every timm model name [`TimmTrunkConfig::named`] knows.
    pub fn known_names() -> &'static [&'static str] {
        NAMED_TRUNKS
    }

    /// The pooled feature width the trunk hands to the head (what `head.proj` takes).
    ///
    /// For a MobileNetV3 this is the width of its head convolution after the pooling (timm's
    /// `head_hidden_size`, 1024 for `mobilenetv3_small_100`), which is what the trunk outputs.
    /// open_clip 3.3.0 sizes `head.proj` from timm's `num_features` instead (576, the width
    /// before that convolution, in timm >= 0.9) and then fails on its own forward; CLIP-KD's
    /// checkpoints (older timm) have the 1024-wide `head.proj` this builds.
    pub fn num_features(&self) -> usize {
        match self {
            TimmTrunkConfig::ResNet(c) => c.num_features(),
            TimmTrunkConfig::EfficientNet(c) => c.num_features(),
            TimmTrunkConfig::Swin(c) => c.num_features(),
            TimmTrunkConfig::MobileVit(c) => c.num_features,
        }
    }
}

/// A timm vision tower: open_clip's `TimmModel(timm_model_name, embed_dim, image_size, pool,
/// proj, proj_bias, drop, drop_path)` with `timm_model_pretrained: false` (clipkd loads
/// weights from checkpoints instead).
#[derive(Debug, Clone, PartialEq)]
pub struct TimmConfig {
    /// timm's model name (`timm_model_name`), e.g. `resnet18`.
    pub model_name: String,
    /// The trunk's architecture: [`TimmTrunkConfig::named`] for `model_name`, changed by
    /// `timm_model_kwargs` if given.
    pub trunk: TimmTrunkConfig,
    /// `timm_pool`.
    pub pool: TimmPool,
    /// `timm_proj`.
    pub proj: TimmProj,
    /// Whether the projection's last layer has a bias (`timm_proj_bias`).
    pub proj_bias: bool,
    /// Head dropout probability (`timm_drop`).
    pub drop: f64,
    /// Stochastic depth of the trunk's blocks (`timm_drop_path`, timm's `drop_path_rate`;
    /// `None`: the trunk's default, [`TimmTrunkConfig::default_drop_path_rate`]).
    pub drop_path: Option<f64>,
    /// Input size `[height, width]` (`image_size`): the preprocessing size. The trunks pool
    /// globally, so other sizes also run.
    pub image_size: [usize; 2],
}

impl TimmConfig {
    /// The tower of a named timm model with open_clip's defaults (`timm_pool: "avg"`,
    /// `timm_proj: "linear"`, no bias, no dropout), or `None` for a name clipkd does not have.
    pub fn named(model_name: &str, image_size: usize) -> Option<Self> {
        Some(Self {
            model_name: model_name.to_string(),
            trunk: TimmTrunkConfig::named(model_name)?,
            pool: TimmPool::default(),
            proj: TimmProj::default(),
            proj_bias: false,
            drop: 0.0,
            drop_path: None,
            image_size: [image_size, image_size],
        })
    }

    /// The stochastic-depth rate the trunk uses: `drop_path`, or the trunk's default.
    pub fn drop_path_rate(&self) -> f64 {
        self.drop_path
            .unwrap_or_else(|| self.trunk.default_drop_path_rate())
    }
}
