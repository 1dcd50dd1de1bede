//! timm's MobileViT trunk (`timm/models/mobilevit.py` on `byobnet.py`, timm 1.0.x): a strided
//! 3x3 stem, stages of inverted residuals (timm's `BottleneckBlock` with `bottle_in`,
//! depthwise, linear output) and MobileViT blocks, and a final 1x1 convolution; SiLU
//! throughout. A MobileViT block runs a 3x3 and a 1x1 convolution, unfolds the map into
//! `patch^2` sequences (one per pixel position inside a patch, over all patches), runs a
//! transformer over them, folds back (bilinear resizing to a multiple of the patch and back
//! where the map is not one), projects with a 1x1 convolution and fuses with its input by a
//! 3x3 convolution.
//!
//! Field names are timm's (`stem.conv`, `stages.{i}.{j}.conv1_1x1.bn`,
//! `stages.{i}.{j}.transformer.{k}.attn.qkv`, `final_conv`), so the Burn paths are the
//! checkpoint keys under `visual.trunk.`.

use burn::module::Module;
use burn::nn::conv::Conv2d;
use burn::nn::{BatchNorm, LayerNorm, Linear};
use burn::tensor::Tensor;
use burn::tensor::activation::{silu, softmax};
use burn::tensor::backend::Backend;
use burn::tensor::module::interpolate;
use burn::tensor::ops::{InterpolateMode, InterpolateOptions};

use super::drop_path::drop_path;
use super::layers::{apply_conv, batch_norm, conv};
use crate::autocast;
use crate::batch_norm::batch_norm_2d;
use crate::config::{TimmMobileVitConfig, make_divisible};
use crate::transformer::{layer_norm, linear, normal};

/// ByobNet's `Linear` initialisation: weight normal(0, 0.01), bias zero.
fn byob_linear<B: Backend>(d_in: usize, d_out: usize, device: &B::Device) -> Linear<B> {
    linear(
        d_in,
        d_out,
        normal(0.01),
        Some(burn::module::Initializer::Zeros),
        device,
    )
}

/// timm's `ConvNormAct`: convolution, BatchNorm, and SiLU unless `act` is off.
#[derive(Module, Debug)]
pub struct ConvNormAct<B: Backend> {
    /// The convolution (no bias).
    pub conv: Conv2d<B>,
    /// Its BatchNorm.
    pub bn: BatchNorm<B>,
    #[module(skip)]
    act: bool,
}

impl<B: Backend> ConvNormAct<B> {
    #[allow(clippy::too_many_arguments)]
    fn new(
        c_in: usize,
        c_out: usize,
        k: usize,
        stride: usize,
        groups: usize,
        act: bool,
        zero_bn: bool,
        device: &B::Device,
    ) -> Self {
        Self {
            conv: conv(c_in, c_out, k, stride, groups, false, device),
            bn: batch_norm(c_out, zero_bn, device),
            act,
        }
    }

    fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        let y = batch_norm_2d(&self.bn, apply_conv(&self.conv, x));
        if self.act { silu(y) } else { y }
    }
}

/// timm's `BottleneckBlock` as MobileViT uses it (an inverted residual): 1x1 expansion of the
/// input by `bottle_ratio`, depthwise 3x3 (strided), 1x1 projection without activation; the
/// input added when the shape is kept.
#[derive(Module, Debug)]
pub struct InvertedBottleneck<B: Backend> {
    /// 1x1 expansion.
    pub conv1_1x1: ConvNormAct<B>,
    /// Depthwise 3x3.
    pub conv2_kxk: ConvNormAct<B>,
    /// 1x1 projection (linear).
    pub conv3_1x1: ConvNormAct<B>,
    #[module(skip)]
    residual: bool,
    #[module(skip)]
    drop_path: f64,
}

/// timm's vision-transformer `Block` inside a MobileViT block (SiLU MLP).
#[derive(Module, Debug)]
pub struct MobileVitTransformerBlock<B: Backend> {
    /// LayerNorm before the attention.
    pub norm1: LayerNorm<B>,
    /// Attention.
    pub attn: MobileVitAttention<B>,
    /// LayerNorm before the MLP.
    pub norm2: LayerNorm<B>,
    /// The MLP.
    pub mlp: MobileVitMlp<B>,
    #[module(skip)]
    heads: usize,
    #[module(skip)]
    drop_path: f64,
}

/// timm's `Attention`: fused q/k/v projection with bias, output projection.
#[derive(Module, Debug)]
pub struct MobileVitAttention<B: Backend> {
    /// q, k, v projection.
    pub qkv: Linear<B>,
    /// Output projection.
    pub proj: Linear<B>,
}

/// timm's `Mlp` with SiLU.
#[derive(Module, Debug)]
pub struct MobileVitMlp<B: Backend> {
    /// Expansion.
    pub fc1: Linear<B>,
    /// Projection.
    pub fc2: Linear<B>,
}

impl<B: Backend> MobileVitTransformerBlock<B> {
    /// # Shapes
    /// - `x`: `[S, L, D]` -> the same
    fn forward(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        let [s, l, d] = x.dims();
        let heads = self.heads;
        let hd = d / heads;
        let y = self.norm1.forward(x.clone());
        let qkv = autocast::linear(&self.attn.qkv, y)
            .reshape([s, l, 3, heads, hd])
            .permute([2, 0, 3, 1, 4]);
        let part = |i: usize| qkv.clone().narrow(0, i, 1).reshape([s, heads, l, hd]);
        let (q, k, v) = (part(0), part(1), part(2));
        let scores = autocast::matmul(q.mul_scalar((hd as f64).powf(-0.5)), k.swap_dims(2, 3));
        let attn = autocast::matmul(softmax(scores, 3), v)
            .swap_dims(1, 2)
            .reshape([s, l, d]);
        let x = x + drop_path(autocast::linear(&self.attn.proj, attn), self.drop_path);
        let hidden = silu(autocast::linear(
            &self.mlp.fc1,
            self.norm2.forward(x.clone()),
        ));
        x + drop_path(autocast::linear(&self.mlp.fc2, hidden), self.drop_path)
    }
}

/// timm's `MobileVitBlock`.
#[derive(Module, Debug)]
pub struct MobileVitBlock<B: Backend> {
    /// Local 3x3 convolution.
    pub conv_kxk: ConvNormAct<B>,
    /// 1x1 to the token width (no norm, no bias).
    pub conv_1x1: Conv2d<B>,
    /// The transformer blocks.
    pub transformer: Vec<MobileVitTransformerBlock<B>>,
    /// LayerNorm after the transformer.
    pub norm: LayerNorm<B>,
    /// 1x1 back to the block width.
    pub conv_proj: ConvNormAct<B>,
    /// 3x3 fusion of the input and the projection (concatenated).
    pub conv_fusion: ConvNormAct<B>,
    #[module(skip)]
    patch: usize,
}

/// Bilinear resizing as `F.interpolate(mode="bilinear", align_corners=False)`.
fn resize<B: Backend>(x: Tensor<B, 4>, h: usize, w: usize) -> Tensor<B, 4> {
    let options = InterpolateOptions {
        mode: InterpolateMode::Bilinear,
        align_corners: false,
    };
    interpolate(x, [h, w], options)
}

impl<B: Backend> MobileVitBlock<B> {
    /// # Shapes
    /// - `x`: `[N, C, H, W]` -> the same
    fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        let shortcut = x.clone();
        let y = apply_conv(&self.conv_1x1, self.conv_kxk.forward(x));
        let [n, d, h, w] = y.dims();
        let p = self.patch;
        let (hp, wp) = (h.div_ceil(p) * p, w.div_ceil(p) * p);
        let resized = (hp, wp) != (h, w);
        let y = if resized { resize(y, hp, wp) } else { y };
        let (nh, nw) = (hp / p, wp / p);
        // Unfold: the token at (pixel i, j of a patch) of patch (a, b) is sequence i * p + j,
        // position a * nw + b.
        let mut tokens = y
            .reshape([n, d, nh, p, nw, p])
            .permute([0, 3, 5, 2, 4, 1])
            .reshape([n * p * p, nh * nw, d]);
        for block in &self.transformer {
            tokens = block.forward(tokens);
        }
        let y = self
            .norm
            .forward(tokens)
            .reshape([n, p, p, nh, nw, d])
            .permute([0, 5, 3, 1, 4, 2])
            .reshape([n, d, hp, wp]);
        let y = if resized { resize(y, h, w) } else { y };
        let y = self.conv_proj.forward(y);
        self.conv_fusion.forward(Tensor::cat(vec![shortcut, y], 1))
    }
}

/// A block of a MobileViT stage (the variant names are not part of the checkpoint keys).
#[allow(clippy::large_enum_variant)]
#[derive(Module, Debug)]
pub enum MobileVitStageBlock<B: Backend> {
    /// An [`InvertedBottleneck`].
    Bottleneck(InvertedBottleneck<B>),
    /// A [`MobileVitBlock`].
    MobileVit(MobileVitBlock<B>),
}

/// timm's `mobilevit_*` (`ByobNet`) without its classifier.
#[derive(Module, Debug)]
pub struct TimmMobileVit<B: Backend> {
    /// The 3x3 stride-2 stem.
    pub stem: ConvNormAct<B>,
    /// The stages.
    pub stages: Vec<Vec<MobileVitStageBlock<B>>>,
    /// The final 1x1 convolution to `num_features`.
    pub final_conv: ConvNormAct<B>,
}

impl<B: Backend> TimmMobileVit<B> {
    /// The trunk of `config`; stochastic depth rises linearly over the blocks from 0 to
    /// `drop_path_rate` (timm's stage-wise `calculate_drop_path_rates`, a MobileViT block's
    /// transformer blocks taking that block's rate).
    pub(crate) fn new(
        config: &TimmMobileVitConfig,
        drop_path_rate: f64,
        device: &B::Device,
    ) -> Self {
        let stem = ConvNormAct::new(3, config.stem_chs, 3, 2, 1, true, false, device);
        let total: usize = config
            .stages
            .iter()
            .map(|s| s.blocks + s.transformer.is_some() as usize)
            .sum();
        let rate = |index: usize| {
            if total > 1 {
                drop_path_rate * index as f64 / (total - 1) as f64
            } else {
                0.0
            }
        };
        let mut index = 0;
        let mut in_chs = config.stem_chs;
        let stages = config
            .stages
            .iter()
            .map(|stage| {
                let out = make_divisible(stage.channels as f64, 8);
                let mut blocks = Vec::new();
                for b in 0..stage.blocks {
                    let stride = if b == 0 { stage.stride } else { 1 };
                    let mid = make_divisible(in_chs as f64 * config.bottle_ratio, 8);
                    let residual = stride == 1 && in_chs == out;
                    blocks.push(MobileVitStageBlock::Bottleneck(InvertedBottleneck {
                        conv1_1x1: ConvNormAct::new(in_chs, mid, 1, 1, 1, true, false, device),
                        conv2_kxk: ConvNormAct::new(mid, mid, 3, stride, mid, true, false, device),
                        // timm zero-initialises the last BatchNorm of residual blocks.
                        conv3_1x1: ConvNormAct::new(mid, out, 1, 1, 1, false, residual, device),
                        residual,
                        drop_path: rate(index),
                    }));
                    index += 1;
                    in_chs = out;
                }
                if let Some(t) = &stage.transformer {
                    let hidden = (t.dim as f64 * config.mlp_ratio) as usize;
                    let dp = rate(index);
                    index += 1;
                    blocks.push(MobileVitStageBlock::MobileVit(MobileVitBlock {
                        conv_kxk: ConvNormAct::new(out, out, 3, 1, 1, true, false, device),
                        conv_1x1: conv(out, t.dim, 1, 1, 1, false, device),
                        transformer: (0..t.depth)
                            .map(|_| MobileVitTransformerBlock {
                                norm1: layer_norm(t.dim, 1e-5, device),
                                attn: MobileVitAttention {
                                    qkv: byob_linear(t.dim, 3 * t.dim, device),
                                    proj: byob_linear(t.dim, t.dim, device),
                                },
                                norm2: layer_norm(t.dim, 1e-5, device),
                                mlp: MobileVitMlp {
                                    fc1: byob_linear(t.dim, hidden, device),
                                    fc2: byob_linear(hidden, t.dim, device),
                                },
                                heads: config.num_heads,
                                drop_path: dp,
                            })
                            .collect(),
                        norm: layer_norm(t.dim, 1e-5, device),
                        conv_proj: ConvNormAct::new(t.dim, out, 1, 1, 1, true, false, device),
                        conv_fusion: ConvNormAct::new(2 * out, out, 3, 1, 1, true, false, device),
                        patch: t.patch_size,
                    }));
                }
                blocks
            })
            .collect();
        Self {
            stem,
            stages,
            final_conv: ConvNormAct::new(in_chs, config.num_features, 1, 1, 1, true, false, device),
        }
    }

    /// The final feature map (timm's `forward_features`).
    ///
    /// # Shapes
    /// - `images`: `[N, 3, H, W]` -> `[N, num_features, ~H/32, ~W/32]`
    pub fn forward_features(&self, images: Tensor<B, 4>) -> Tensor<B, 4> {
        let mut x = self.stem.forward(images);
        for block in self.stages.iter().flatten() {
            x = match block {
                MobileVitStageBlock::Bottleneck(b) => {
                    let y = b.conv1_1x1.forward(x.clone());
                    let y = b.conv3_1x1.forward(b.conv2_kxk.forward(y));
                    if b.residual {
                        drop_path(y, b.drop_path) + x
                    } else {
                        drop_path(y, b.drop_path)
                    }
                }
                MobileVitStageBlock::MobileVit(m) => m.forward(x),
            };
        }
        self.final_conv.forward(x)
    }
}
