//! timm's `ResNet` trunk (`timm/models/resnet.py`, timm 1.0.x) with its default stem and
//! shortcuts: `resnet18`, `resnet34` ([`BasicBlock`]) and `resnet50`, `resnet101`,
//! `resnet152` ([`Bottleneck`]).
//!
//! Field names are timm's module names, so the Burn paths are the checkpoint keys under
//! `visual.trunk.` (the shortcut's `conv` / `bn` are timm's `downsample.0` / `downsample.1`).

use burn::module::Module;
use burn::nn::BatchNorm;
use burn::nn::conv::Conv2d;
use burn::tensor::Tensor;
use burn::tensor::activation::relu;
use burn::tensor::backend::Backend;
use burn::tensor::module::max_pool2d;

use super::drop_path::drop_path;
use super::layers::{apply_conv, batch_norm, conv};
use crate::autocast;
use crate::batch_norm::batch_norm_2d;
use crate::config::{ResNetBlock, TimmResNetConfig};

/// timm's `downsample_conv`: a strided 1x1 convolution and BatchNorm (`downsample.0`, `.1`).
#[derive(Module, Debug)]
pub struct ConvShortcut<B: Backend> {
    /// The 1x1 convolution (`downsample.0`).
    pub conv: Conv2d<B>,
    /// Its BatchNorm (`downsample.1`).
    pub bn: BatchNorm<B>,
}

impl<B: Backend> ConvShortcut<B> {
    fn new(c_in: usize, c_out: usize, stride: usize, device: &B::Device) -> Self {
        Self {
            conv: conv(c_in, c_out, 1, stride, 1, false, device),
            bn: batch_norm(c_out, false, device),
        }
    }

    fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        batch_norm_2d(&self.bn, apply_conv(&self.conv, x))
    }
}

/// timm's `BasicBlock`: `relu(bn2(conv2(relu(bn1(conv1(x))))) + shortcut(x))`, the first 3x3
/// convolution strided.
#[derive(Module, Debug)]
pub struct BasicBlock<B: Backend> {
    /// 3x3 convolution (strided in a stage's first block).
    pub conv1: Conv2d<B>,
    /// BatchNorm after `conv1`.
    pub bn1: BatchNorm<B>,
    /// 3x3 convolution.
    pub conv2: Conv2d<B>,
    /// BatchNorm after `conv2` (weight initialised to zero).
    pub bn2: BatchNorm<B>,
    /// The shortcut's projection when the shape changes.
    pub downsample: Option<ConvShortcut<B>>,
    /// Stochastic-depth rate of the residual branch.
    #[module(skip)]
    drop_path: f64,
}

/// timm's `Bottleneck`: 1x1 reduction, strided 3x3, 1x1 expansion (x4), each with BatchNorm.
#[derive(Module, Debug)]
pub struct Bottleneck<B: Backend> {
    /// 1x1 reduction.
    pub conv1: Conv2d<B>,
    /// BatchNorm after `conv1`.
    pub bn1: BatchNorm<B>,
    /// 3x3 convolution (strided in a stage's first block).
    pub conv2: Conv2d<B>,
    /// BatchNorm after `conv2`.
    pub bn2: BatchNorm<B>,
    /// 1x1 expansion.
    pub conv3: Conv2d<B>,
    /// BatchNorm after `conv3` (weight initialised to zero).
    pub bn3: BatchNorm<B>,
    /// The shortcut's projection when the shape changes.
    pub downsample: Option<ConvShortcut<B>>,
    /// Stochastic-depth rate of the residual branch.
    #[module(skip)]
    drop_path: f64,
}

/// One residual block of either kind (timm's stages are `Sequential`s of one block type; the
/// enum's variant names are not part of the checkpoint keys).
#[allow(clippy::large_enum_variant)]
#[derive(Module, Debug)]
pub enum ResNetBlockModule<B: Backend> {
    /// A [`BasicBlock`].
    Basic(BasicBlock<B>),
    /// A [`Bottleneck`].
    Bottleneck(Bottleneck<B>),
}

impl<B: Backend> ResNetBlockModule<B> {
    fn new(
        kind: ResNetBlock,
        inplanes: usize,
        planes: usize,
        stride: usize,
        drop_path: f64,
        device: &B::Device,
    ) -> Self {
        let out = planes * kind.expansion();
        let downsample = (stride != 1 || inplanes != out)
            .then(|| ConvShortcut::new(inplanes, out, stride, device));
        match kind {
            ResNetBlock::Basic => Self::Basic(BasicBlock {
                conv1: conv(inplanes, planes, 3, stride, 1, false, device),
                bn1: batch_norm(planes, false, device),
                conv2: conv(planes, out, 3, 1, 1, false, device),
                bn2: batch_norm(out, true, device),
                downsample,
                drop_path,
            }),
            ResNetBlock::Bottleneck => Self::Bottleneck(Bottleneck {
                conv1: conv(inplanes, planes, 1, 1, 1, false, device),
                bn1: batch_norm(planes, false, device),
                conv2: conv(planes, planes, 3, stride, 1, false, device),
                bn2: batch_norm(planes, false, device),
                conv3: conv(planes, out, 1, 1, 1, false, device),
                bn3: batch_norm(out, true, device),
                downsample,
                drop_path,
            }),
        }
    }

    /// # Shapes
    /// - `x`: `[N, inplanes, H, W]` -> `[N, planes * expansion, H / stride, W / stride]`
    pub fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        let (branch, downsample, rate) = match self {
            Self::Basic(b) => {
                let y = relu(batch_norm_2d(&b.bn1, apply_conv(&b.conv1, x.clone())));
                let y = batch_norm_2d(&b.bn2, apply_conv(&b.conv2, y));
                (y, &b.downsample, b.drop_path)
            }
            Self::Bottleneck(b) => {
                let y = relu(batch_norm_2d(&b.bn1, apply_conv(&b.conv1, x.clone())));
                let y = relu(batch_norm_2d(&b.bn2, apply_conv(&b.conv2, y)));
                let y = batch_norm_2d(&b.bn3, apply_conv(&b.conv3, y));
                (y, &b.downsample, b.drop_path)
            }
        };
        let shortcut = match downsample {
            Some(d) => d.forward(x),
            None => x,
        };
        relu(drop_path(branch, rate) + shortcut)
    }
}

/// timm's `ResNet` without its classifier: stem, four stages; the tower pools its output.
#[derive(Module, Debug)]
pub struct TimmResNet<B: Backend> {
    /// Stem: 7x7 convolution, stride 2.
    pub conv1: Conv2d<B>,
    /// Stem BatchNorm.
    pub bn1: BatchNorm<B>,
    /// Stage 1 (stride 1 after the stem's max pool).
    pub layer1: Vec<ResNetBlockModule<B>>,
    /// Stage 2 (stride 2).
    pub layer2: Vec<ResNetBlockModule<B>>,
    /// Stage 3 (stride 2).
    pub layer3: Vec<ResNetBlockModule<B>>,
    /// Stage 4 (stride 2).
    pub layer4: Vec<ResNetBlockModule<B>>,
}

impl<B: Backend> TimmResNet<B> {
    /// The trunk of `config`, with stochastic depth rising linearly from 0 to `drop_path_rate`
    /// over the blocks (timm's `make_blocks`).
    pub(crate) fn new(config: &TimmResNetConfig, drop_path_rate: f64, device: &B::Device) -> Self {
        let total: usize = config.layers.iter().sum();
        let mut index = 0;
        let stem = TimmResNetConfig::STEM_WIDTH;
        let mut inplanes = stem;
        let mut stages = config.layers.iter().zip(config.channels).enumerate().map(
            |(stage, (&blocks, planes))| {
                let stride = if stage == 0 { 1 } else { 2 };
                (0..blocks)
                    .map(|i| {
                        let rate = if total > 1 {
                            drop_path_rate * index as f64 / (total - 1) as f64
                        } else {
                            0.0
                        };
                        index += 1;
                        let block = ResNetBlockModule::new(
                            config.block,
                            inplanes,
                            planes,
                            if i == 0 { stride } else { 1 },
                            rate,
                            device,
                        );
                        inplanes = planes * config.block.expansion();
                        block
                    })
                    .collect::<Vec<_>>()
            },
        );
        let (layer1, layer2, layer3, layer4) = (
            stages.next().unwrap(),
            stages.next().unwrap(),
            stages.next().unwrap(),
            stages.next().unwrap(),
        );
        Self {
            conv1: conv(3, stem, 7, 2, 1, false, device),
            bn1: batch_norm(stem, false, device),
            layer1,
            layer2,
            layer3,
            layer4,
        }
    }

    /// The final feature map (timm's `forward_features`).
    ///
    /// # Shapes
    /// - `images`: `[N, 3, H, W]` -> `[N, num_features, ~H/32, ~W/32]`
    pub fn forward_features(&self, images: Tensor<B, 4>) -> Tensor<B, 4> {
        let x = relu(batch_norm_2d(
            &self.bn1,
            autocast::conv2d(&self.conv1, images),
        ));
        let mut x = max_pool2d(x, [3, 3], [2, 2], [1, 1], [1, 1], false);
        for block in self
            .layer1
            .iter()
            .chain(&self.layer2)
            .chain(&self.layer3)
            .chain(&self.layer4)
        {
            x = block.forward(x);
        }
        x
    }
}
