//! timm's `EfficientNet` and `MobileNetV3` trunks (`timm/models/efficientnet.py`,
//! `mobilenetv3.py`, `_efficientnet_blocks.py`, timm 1.0.x): a strided 3x3 stem, stages of
//! depthwise-separable, inverted-residual (MBConv) and conv-BN-act blocks with
//! squeeze-excitation, and a 1x1 head convolution (before the pooling in EfficientNet, after it
//! in MobileNetV3). The block list comes from [`TimmEfficientNetConfig::spec`].
//!
//! Field names are timm's module names (`conv_stem`, `bn1`, `blocks.{stage}.{block}.conv_dw`,
//! `se.conv_reduce`, `conv_head`, `bn2`), so the Burn paths are the checkpoint keys under
//! `visual.trunk.`. timm's `BatchNormAct2d` is a BatchNorm followed by the activation, with the
//! BatchNorm's keys.

use burn::module::Module;
use burn::nn::BatchNorm;
use burn::nn::conv::Conv2d;
use burn::tensor::Tensor;
use burn::tensor::activation::{hard_sigmoid, hard_swish, relu, sigmoid, silu};
use burn::tensor::backend::Backend;

use super::drop_path::drop_path;
use super::efficientnet_arch::{Act, BlockKind, BlockSpec, EfficientNetSpec, Gate, SeSpec};
use super::layers::{apply_conv, batch_norm, conv};
use crate::autocast;
use crate::batch_norm::batch_norm_2d;
use crate::config::{TimmEfficientNetConfig, TimmPool};

fn activate<B: Backend>(act: Act, x: Tensor<B, 4>) -> Tensor<B, 4> {
    match act {
        Act::Relu => relu(x),
        Act::HardSwish => hard_swish(x),
        Act::Silu => silu(x),
    }
}

/// timm's `SqueezeExcite`: the input scaled per channel by
/// `gate(conv_expand(act(conv_reduce(mean_hw(x)))))`.
#[derive(Module, Debug)]
pub struct SqueezeExcite<B: Backend> {
    /// 1x1 reduction, with bias.
    pub conv_reduce: Conv2d<B>,
    /// 1x1 expansion, with bias.
    pub conv_expand: Conv2d<B>,
    #[module(skip)]
    spec: SeSpec,
}

impl<B: Backend> SqueezeExcite<B> {
    fn new(channels: usize, spec: SeSpec, device: &B::Device) -> Self {
        Self {
            conv_reduce: conv(channels, spec.channels, 1, 1, 1, true, device),
            conv_expand: conv(spec.channels, channels, 1, 1, 1, true, device),
            spec,
        }
    }

    fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        let pooled = x.clone().mean_dim(3).mean_dim(2);
        let reduced = activate(self.spec.act, apply_conv(&self.conv_reduce, pooled));
        let scale = apply_conv(&self.conv_expand, reduced);
        let gate = match self.spec.gate {
            Gate::Sigmoid => sigmoid(scale),
            Gate::HardSigmoid => hard_sigmoid(scale, 1.0 / 6.0, 0.5),
        };
        x * gate
    }
}

/// timm's `DepthwiseSeparableConv`: depthwise convolution, BN + act, SE, pointwise
/// convolution, BN (+ act for `dsa`).
#[derive(Module, Debug)]
pub struct DepthwiseSeparableConv<B: Backend> {
    /// Depthwise convolution (groups = channels).
    pub conv_dw: Conv2d<B>,
    /// BatchNorm (and activation) after `conv_dw`.
    pub bn1: BatchNorm<B>,
    /// Squeeze-excitation.
    pub se: Option<SqueezeExcite<B>>,
    /// Pointwise convolution.
    pub conv_pw: Conv2d<B>,
    /// BatchNorm after `conv_pw`.
    pub bn2: BatchNorm<B>,
    #[module(skip)]
    spec: BlockSpec,
}

/// timm's `InvertedResidual` (MBConv): pointwise expansion, BN + act, depthwise, BN + act, SE,
/// pointwise projection, BN.
#[derive(Module, Debug)]
pub struct InvertedResidual<B: Backend> {
    /// Pointwise expansion.
    pub conv_pw: Conv2d<B>,
    /// BatchNorm (and activation) after `conv_pw`.
    pub bn1: BatchNorm<B>,
    /// Depthwise convolution.
    pub conv_dw: Conv2d<B>,
    /// BatchNorm (and activation) after `conv_dw`.
    pub bn2: BatchNorm<B>,
    /// Squeeze-excitation.
    pub se: Option<SqueezeExcite<B>>,
    /// Pointwise projection.
    pub conv_pwl: Conv2d<B>,
    /// BatchNorm after `conv_pwl` (no activation).
    pub bn3: BatchNorm<B>,
    #[module(skip)]
    spec: BlockSpec,
}

/// timm's `ConvBnAct`: convolution, BN + act.
#[derive(Module, Debug)]
pub struct ConvBnAct<B: Backend> {
    /// The convolution.
    pub conv: Conv2d<B>,
    /// BatchNorm (and activation).
    pub bn1: BatchNorm<B>,
    #[module(skip)]
    spec: BlockSpec,
}

/// One block (the enum's variant names are not part of the checkpoint keys).
#[allow(clippy::large_enum_variant)]
#[derive(Module, Debug)]
pub enum EfficientBlock<B: Backend> {
    /// A [`DepthwiseSeparableConv`].
    DepthwiseSeparable(DepthwiseSeparableConv<B>),
    /// An [`InvertedResidual`].
    InvertedResidual(InvertedResidual<B>),
    /// A [`ConvBnAct`].
    ConvBnAct(ConvBnAct<B>),
}

impl<B: Backend> EfficientBlock<B> {
    fn new(spec: &BlockSpec, device: &B::Device) -> Self {
        let (i, o, k, s) = (spec.in_chs, spec.out_chs, spec.kernel, spec.stride);
        let se = |c| spec.se.map(|se| SqueezeExcite::new(c, se, device));
        let spec = spec.clone();
        match spec.kind {
            BlockKind::DepthwiseSeparable { .. } => {
                Self::DepthwiseSeparable(DepthwiseSeparableConv {
                    conv_dw: conv(i, i, k, s, i, false, device),
                    bn1: batch_norm(i, false, device),
                    se: se(i),
                    conv_pw: conv(i, o, 1, 1, 1, false, device),
                    bn2: batch_norm(o, false, device),
                    spec,
                })
            }
            BlockKind::InvertedResidual { mid } => Self::InvertedResidual(InvertedResidual {
                conv_pw: conv(i, mid, 1, 1, 1, false, device),
                bn1: batch_norm(mid, false, device),
                conv_dw: conv(mid, mid, k, s, mid, false, device),
                bn2: batch_norm(mid, false, device),
                se: se(mid),
                conv_pwl: conv(mid, o, 1, 1, 1, false, device),
                bn3: batch_norm(o, false, device),
                spec,
            }),
            BlockKind::ConvBnAct => Self::ConvBnAct(ConvBnAct {
                conv: conv(i, o, k, s, 1, false, device),
                bn1: batch_norm(o, false, device),
                spec,
            }),
        }
    }

    /// # Shapes
    /// - `x`: `[N, in_chs, H, W]` -> `[N, out_chs, H / stride, W / stride]`
    pub fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        let spec = match self {
            Self::DepthwiseSeparable(b) => &b.spec,
            Self::InvertedResidual(b) => &b.spec,
            Self::ConvBnAct(b) => &b.spec,
        };
        let act = |y| activate(spec.act, y);
        let se = |se: &Option<SqueezeExcite<B>>, y| match se {
            Some(se) => se.forward(y),
            None => y,
        };
        let out = match self {
            Self::DepthwiseSeparable(b) => {
                let y = act(batch_norm_2d(&b.bn1, apply_conv(&b.conv_dw, x.clone())));
                let y = se(&b.se, y);
                let y = batch_norm_2d(&b.bn2, apply_conv(&b.conv_pw, y));
                match spec.kind {
                    BlockKind::DepthwiseSeparable { pw_act: true } => act(y),
                    _ => y,
                }
            }
            Self::InvertedResidual(b) => {
                let y = act(batch_norm_2d(&b.bn1, apply_conv(&b.conv_pw, x.clone())));
                let y = act(batch_norm_2d(&b.bn2, apply_conv(&b.conv_dw, y)));
                let y = se(&b.se, y);
                batch_norm_2d(&b.bn3, apply_conv(&b.conv_pwl, y))
            }
            Self::ConvBnAct(b) => act(batch_norm_2d(&b.bn1, apply_conv(&b.conv, x.clone()))),
        };
        if spec.skip {
            drop_path(out, spec.drop_path) + x
        } else {
            out
        }
    }
}

/// timm's `EfficientNet` / `MobileNetV3` without the classifier.
#[derive(Module, Debug)]
pub struct TimmEfficientNet<B: Backend> {
    /// Stem: 3x3 convolution, stride 2.
    pub conv_stem: Conv2d<B>,
    /// Stem BatchNorm (and activation).
    pub bn1: BatchNorm<B>,
    /// The blocks, per stage (`blocks.{stage}.{block}`).
    pub blocks: Vec<Vec<EfficientBlock<B>>>,
    /// The 1x1 head convolution.
    pub conv_head: Conv2d<B>,
    /// EfficientNet: the head's BatchNorm (and activation); MobileNetV3 has none.
    pub bn2: Option<BatchNorm<B>>,
    #[module(skip)]
    act: Act,
}

impl<B: Backend> TimmEfficientNet<B> {
    /// The trunk of `config` with stochastic depth `drop_path_rate · block / blocks`.
    pub(crate) fn new(
        config: &TimmEfficientNetConfig,
        drop_path_rate: f64,
        device: &B::Device,
    ) -> Self {
        let spec: EfficientNetSpec = config.spec(drop_path_rate);
        let last = spec
            .stages
            .iter()
            .flatten()
            .last()
            .map_or(spec.stem, |b| b.out_chs);
        Self {
            conv_stem: conv(3, spec.stem, 3, 2, 1, false, device),
            bn1: batch_norm(spec.stem, false, device),
            blocks: spec
                .stages
                .iter()
                .map(|stage| {
                    stage
                        .iter()
                        .map(|b| EfficientBlock::new(b, device))
                        .collect()
                })
                .collect(),
            conv_head: conv(last, spec.head, 1, 1, 1, spec.head_after_pool, device),
            bn2: (!spec.head_after_pool).then(|| batch_norm(spec.head, false, device)),
            act: spec.act,
        }
    }

    /// The pooled features: timm's `forward_features` and `forward_head(pre_logits=True)`.
    ///
    /// # Shapes
    /// - `images`: `[N, 3, H, W]` -> `[N, head, 1, 1]`
    pub fn forward_pooled(&self, images: Tensor<B, 4>, pool: TimmPool) -> Tensor<B, 4> {
        let mut x = activate(
            self.act,
            batch_norm_2d(&self.bn1, autocast::conv2d(&self.conv_stem, images)),
        );
        for block in self.blocks.iter().flatten() {
            x = block.forward(x);
        }
        match &self.bn2 {
            // EfficientNet: head convolution, BN + act, then the pooling.
            Some(bn2) => {
                let x = activate(self.act, batch_norm_2d(bn2, apply_conv(&self.conv_head, x)));
                super::global_pool(x, pool)
            }
            // MobileNetV3: the pooling, then the head convolution (bias) and the activation.
            None => activate(
                self.act,
                apply_conv(&self.conv_head, super::global_pool(x, pool)),
            ),
        }
    }
}
