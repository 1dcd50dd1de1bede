//! timm vision towers: open_clip's `TimmModel` (`visual.trunk` = a timm model without its
//! classifier, `visual.head` = the projection to `embed_dim`), built from a [`TimmConfig`].
//!
//! The trunks are Burn modules written after timm's source (timm 1.0.x) with timm's module
//! names, so that open_clip checkpoints of timm towers load key for key. BatchNorm follows
//! clipkd's convention (`batch_norm.rs`): batch statistics on an autodiff backend (training),
//! running statistics otherwise; so do dropout and stochastic depth.

mod drop_path;
pub mod efficientnet;
pub mod efficientnet_arch;
mod layers;
pub(crate) mod legacy_keys;
pub mod mobilevit;
pub mod resnet;
pub mod swin;

use burn::module::Module;
use burn::nn::{Dropout, DropoutConfig, Linear};
use burn::tensor::Tensor;
use burn::tensor::backend::Backend;

pub use drop_path::drop_path;
pub use efficientnet::TimmEfficientNet;
pub use mobilevit::TimmMobileVit;
pub use resnet::TimmResNet;
pub use swin::TimmSwin;

use crate::autocast;
use crate::config::{TimmConfig, TimmPool, TimmProj, TimmTrunkConfig, check_embed_dim};
use crate::error::ModelError;
use crate::shape::check_channels;
use crate::transformer::{gelu_exact, linear, torch_linear, uniform};

/// A timm trunk (state-dict prefix `visual.trunk.`).
#[allow(clippy::large_enum_variant)]
#[derive(Module, Debug)]
pub enum TimmTrunk<B: Backend> {
    /// timm's `ResNet`.
    ResNet(TimmResNet<B>),
    /// timm's `EfficientNet` or `MobileNetV3`.
    EfficientNet(TimmEfficientNet<B>),
    /// timm's `SwinTransformer`.
    Swin(TimmSwin<B>),
    /// timm's `mobilevit_*`.
    MobileVit(TimmMobileVit<B>),
}

impl<B: Backend> TimmTrunk<B> {
    /// The pooled features the trunk hands to the head: timm's `forward_features` then
    /// `forward_head(pre_logits=True)` without the classifier (the pooling and, for
    /// MobileNetV3, the head convolution after it).
    ///
    /// # Shapes
    /// - `images`: `[N, 3, H, W]` -> `[N, num_features]`
    pub fn forward_pooled(&self, images: Tensor<B, 4>, pool: TimmPool) -> Tensor<B, 2> {
        let pooled = match self {
            TimmTrunk::ResNet(r) => global_pool(r.forward_features(images), pool),
            TimmTrunk::EfficientNet(e) => e.forward_pooled(images, pool),
            TimmTrunk::MobileVit(m) => global_pool(m.forward_features(images), pool),
            // NHWC tokens; the pooling is over the spatial axes.
            TimmTrunk::Swin(w) => {
                global_pool(w.forward_features(images).permute([0, 3, 1, 2]), pool)
            }
        };
        let [n, c, _, _] = pooled.dims();
        pooled.reshape([n, c])
    }

    /// The image side the trunk requires, if it requires one (Swin's patch embedding is built
    /// for one size; the others pool globally).
    pub fn required_side(&self) -> Option<usize> {
        match self {
            TimmTrunk::Swin(w) => Some(w.img_size()),
            TimmTrunk::ResNet(_) | TimmTrunk::EfficientNet(_) | TimmTrunk::MobileVit(_) => None,
        }
    }
}

/// timm's `SelectAdaptivePool2d` with output size 1: `[N, C, H, W]` -> `[N, C, 1, 1]` (the
/// trunks' own pooling, `""`, is the average for every trunk clipkd has).
pub(crate) fn global_pool<B: Backend>(x: Tensor<B, 4>, pool: TimmPool) -> Tensor<B, 4> {
    match pool {
        TimmPool::TrunkDefault | TimmPool::Avg => x.mean_dim(3).mean_dim(2),
        TimmPool::Max => x.max_dim(3).max_dim(2),
    }
}

/// timm's `Mlp` as open_clip's `head.mlp`: `fc2(drop(gelu(fc1(x))))`.
#[derive(Module, Debug)]
pub struct TimmMlp<B: Backend> {
    /// `num_features -> 2 * embed_dim`, with bias.
    pub fc1: Linear<B>,
    /// `2 * embed_dim -> embed_dim`, with a bias if `timm_proj_bias`.
    pub fc2: Linear<B>,
    /// Dropout after the activation (`timm_drop`).
    pub drop: Dropout,
}

/// open_clip's `TimmModel.head` (state-dict prefix `visual.head.`): the projection from the
/// pooled features to `embed_dim`.
#[derive(Module, Debug)]
pub struct TimmHead<B: Backend> {
    /// `head.drop` before `head.proj` (`timm_proj: "linear"`).
    pub drop: Dropout,
    /// `head.proj` (`timm_proj: "linear"`).
    pub proj: Option<Linear<B>>,
    /// `head.mlp` (`timm_proj: "mlp"`).
    pub mlp: Option<TimmMlp<B>>,
}

impl<B: Backend> TimmHead<B> {
    fn new(config: &TimmConfig, features: usize, embed_dim: usize, device: &B::Device) -> Self {
        let drop = DropoutConfig::new(config.drop).init();
        // nn.Linear's default initialisation: weight and bias uniform ±1/sqrt(fan_in).
        let torch = |d_in: usize, d_out: usize, bias: bool| {
            let bound = 1.0 / (d_in as f64).sqrt();
            linear(
                d_in,
                d_out,
                uniform(bound),
                bias.then(|| uniform(bound)),
                device,
            )
        };
        match config.proj {
            TimmProj::Linear => Self {
                drop,
                proj: Some(torch(features, embed_dim, config.proj_bias)),
                mlp: None,
            },
            TimmProj::Mlp => Self {
                drop: DropoutConfig::new(0.0).init(),
                proj: None,
                mlp: Some(TimmMlp {
                    fc1: torch_linear(features, 2 * embed_dim, device),
                    fc2: torch(2 * embed_dim, embed_dim, config.proj_bias),
                    drop,
                }),
            },
        }
    }

    /// # Shapes
    /// - `x`: `[N, num_features]` -> `[N, embed_dim]`
    pub fn forward(&self, x: Tensor<B, 2>) -> Tensor<B, 2> {
        if let Some(proj) = &self.proj {
            return autocast::linear(proj, self.drop.forward(x));
        }
        let mlp = self.mlp.as_ref().expect("a head has a proj or an mlp");
        let hidden = gelu_exact(autocast::linear(&mlp.fc1, x));
        autocast::linear(&mlp.fc2, mlp.drop.forward(hidden))
    }
}

/// open_clip's `TimmModel`: a timm trunk, global pooling and the head.
#[derive(Module, Debug)]
pub struct TimmTower<B: Backend> {
    /// The timm model without its classifier (`visual.trunk.`).
    pub trunk: TimmTrunk<B>,
    /// The projection to `embed_dim` (`visual.head.`).
    pub head: TimmHead<B>,
    #[module(skip)]
    pool: TimmPool,
}

impl TimmConfig {
    /// Builds the tower, projecting to `embed_dim`, as open_clip's
    /// `TimmModel(timm_model_name, embed_dim, pool=timm_pool, proj=timm_proj, ...)` with
    /// `pretrained=False`: timm's own initialisation for the trunk, PyTorch's `nn.Linear`
    /// defaults for the head. Parameters are created lazily, so building a tower only to load
    /// weights into it is cheap.
    ///
    /// # Errors
    /// [`ModelError::InvalidConfig`], naming the field, if [`TimmConfig::validate`] fails or
    /// `embed_dim` is 0.
    pub fn init<B: Backend>(
        &self,
        embed_dim: usize,
        device: &B::Device,
    ) -> Result<TimmTower<B>, ModelError> {
        check_embed_dim(embed_dim)?;
        self.validate()?;
        let trunk = match &self.trunk {
            TimmTrunkConfig::ResNet(r) => {
                TimmTrunk::ResNet(TimmResNet::new(r, self.drop_path_rate(), device))
            }
            TimmTrunkConfig::EfficientNet(e) => {
                TimmTrunk::EfficientNet(TimmEfficientNet::new(e, self.drop_path_rate(), device))
            }
            TimmTrunkConfig::Swin(w) => {
                TimmTrunk::Swin(TimmSwin::new(w, self.drop_path_rate(), device))
            }
            TimmTrunkConfig::MobileVit(m) => {
                TimmTrunk::MobileVit(TimmMobileVit::new(m, self.drop_path_rate(), device))
            }
        };
        Ok(TimmTower {
            trunk,
            head: TimmHead::new(self, self.trunk.num_features(), embed_dim, device),
            pool: self.pool,
        })
    }
}

impl<B: Backend> TimmTower<B> {
    /// Image embeddings: trunk, global pooling, head.
    ///
    /// # Shapes
    /// - `images`: `[N, 3, H, W]` -> `[N, embed_dim]`
    ///
    /// # Errors
    /// [`ModelError::InputShape`] if the images do not have 3 channels.
    pub fn forward(&self, images: Tensor<B, 4>) -> Result<Tensor<B, 2>, ModelError> {
        self.check_images(images.dims())?;
        Ok(self
            .head
            .forward(self.trunk.forward_pooled(images, self.pool)))
    }

    /// Checks an image batch's shape `[N, C, H, W]`: `C` must be 3; a Swin trunk takes only
    /// its `img_size`; the other trunks pool globally, so any side of at least one pixel runs
    /// (the config's `image_size` is what the preprocessing produces).
    ///
    /// # Errors
    /// [`ModelError::InputShape`] for another channel count, another size for a Swin, or an
    /// empty image.
    pub fn check_images(&self, dims: [usize; 4]) -> Result<(), ModelError> {
        const PART: &str = "timm vision tower";
        check_channels(PART, dims)?;
        if let Some(side) = self.trunk.required_side()
            && (dims[2] != side || dims[3] != side)
        {
            return Err(ModelError::InputShape {
                part: PART,
                input: "images",
                expected: format!(
                    "[N, 3, {side}, {side}]: timm's Swin is built for {side}x{side} images \
                     (resize them to the model's image size, vision_cfg.image_size)"
                ),
                got: dims.to_vec(),
            });
        }
        if dims[2] == 0 || dims[3] == 0 {
            return Err(ModelError::InputShape {
                part: PART,
                input: "images",
                expected: "[N, 3, H, W] with H and W at least 1".into(),
                got: dims.to_vec(),
            });
        }
        Ok(())
    }
}
