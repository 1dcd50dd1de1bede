//! The one list of built-in losses.
//!
//! `builtin_losses!` below names each built-in loss once: its variant, its config and its module.
//! It generates [`BuiltinLoss`] (the loss modules, dispatching [`DistillLoss`]), [`LossConfig`]
//! (their configs, the JSON form of a [`LossSetConfig`](crate::LossSetConfig) entry) and
//! [`LossKind`] (the loss's `snake_case` name in a run config), with every per-loss property read
//! from the config's [`BuiltinLossConfig`] implementation. To add a built-in loss, write its
//! module and config, implement [`BuiltinLossConfig`] for the config, and add one line here.

// A set holds a handful of `BuiltinLoss`es, once: the AFD variant's size does not matter, and
// Burn has no `Module` implementation for `Box` to shrink it with. Module-wide because the lint
// also fires on the record enum that `derive(Module)` generates inside the macro's expansion.
#![allow(clippy::large_enum_variant)]

use burn::config::Config;
use burn::module::Module;
use burn::tensor::backend::Backend;

use crate::error::LossError;
use crate::loss::{BuiltinLossConfig, DistillLoss};
use crate::losses::{
    AfdLoss, AfdLossConfig, CrdLoss, CrdLossConfig, CrossKdLoss, CrossKdLossConfig, FdLoss,
    FdLossConfig, GdLoss, GdLossConfig, IclLoss, IclLossConfig, MfdLoss, MfdLossConfig,
    OpenClipDistillLoss, OpenClipDistillLossConfig, TaskLoss, TaskLossConfig,
};
use crate::projector::DistillBatch;
use crate::terms::LossTerms;

/// Generates [`BuiltinLoss`], [`LossConfig`] and [`LossKind`] from `Variant(Config => Loss)`
/// lines (each with its doc comment).
macro_rules! builtin_losses {
    ($($(#[$doc:meta])* $variant:ident($config:ty => $loss:ty),)+) => {
        /// Any built-in loss, so that a [`LossSet`](crate::LossSet) of them is one concrete Burn
        /// module (trained by the optimizer and saved by a recorder or `burn-store`, learnable
        /// scales and layers included). Record paths name the variant
        /// (`losses.2.Icl.scale.value`).
        #[derive(Module, Debug)]
        pub enum BuiltinLoss<B: Backend> {
            $($(#[$doc])* $variant($loss),)+
        }

        impl<B: Backend> DistillLoss<B> for BuiltinLoss<B> {
            fn forward(&self, batch: &DistillBatch<B>) -> Result<LossTerms<B>, LossError> {
                match self {
                    $(BuiltinLoss::$variant(l) => DistillLoss::<B>::forward(l, batch),)+
                }
            }

            fn requires_masked_view(&self) -> bool {
                match self {
                    $(BuiltinLoss::$variant(l) => DistillLoss::<B>::requires_masked_view(l),)+
                }
            }
        }

        /// Configuration of one built-in loss. Serialized externally tagged, by variant:
        /// `{"Fd": {"distance": "Mse"}}`.
        #[derive(Config, Debug)]
        pub enum LossConfig {
            $($(#[$doc])* $variant($config),)+
        }

        impl LossConfig {
            /// Which loss this configures.
            pub fn kind(&self) -> LossKind {
                match self {
                    $(LossConfig::$variant(_) => LossKind::$variant,)+
                }
            }

            /// The name of the loss's term (and its default entry name in a loss set).
            pub fn default_name(&self) -> &'static str {
                self.kind().default_name()
            }

            /// Whether the loss reads the student's masked view.
            pub fn requires_masked_view(&self) -> bool {
                self.kind().requires_masked_view()
            }

            /// Whether the loss reads the student features aligned to the teacher's space (so
            /// needs the projector when `D_s != D_t`).
            pub fn uses_aligned_features(&self) -> bool {
                self.kind().uses_aligned_features()
            }

            /// Whether the loss reads the teacher's embeddings.
            pub fn needs_teacher(&self) -> bool {
                self.kind().needs_teacher()
            }

            /// Checks the options that depend on the loss set's sizes (AFD's `teacher_dim`);
            /// `entry` names the entry in the error.
            pub fn check_sizes(
                &self,
                entry: &str,
                student_dim: usize,
                teacher_dim: usize,
            ) -> Result<(), LossError> {
                match self {
                    $(LossConfig::$variant(c) => c.check_sizes(entry, student_dim, teacher_dim),)+
                }
            }

            /// Creates the loss on `device`.
            pub fn init<B: Backend>(&self, device: &B::Device) -> Result<BuiltinLoss<B>, LossError> {
                Ok(match self {
                    $(LossConfig::$variant(c) => {
                        BuiltinLoss::$variant(BuiltinLossConfig::init_loss::<B>(c, device)?)
                    })+
                })
            }
        }

        $(
            impl From<$config> for LossConfig {
                fn from(config: $config) -> Self {
                    LossConfig::$variant(config)
                }
            }
        )+

        /// The kind of a built-in loss, without its options: how a run config names a loss
        /// (`kind = "cross_kd"`; serialized in `snake_case`).
        #[derive(
            Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize,
        )]
        #[serde(rename_all = "snake_case")]
        pub enum LossKind {
            $($(#[$doc])* $variant,)+
        }

        impl LossKind {
            /// Every built-in loss, in the list's order.
            pub const ALL: &'static [LossKind] = &[$(LossKind::$variant,)+];

            /// The loss's configuration with every option at its default, for a teacher of
            /// embedding size `teacher_dim`.
            pub fn default_config(self, teacher_dim: usize) -> LossConfig {
                match self {
                    $(LossKind::$variant => {
                        LossConfig::$variant(<$config as BuiltinLossConfig>::defaults(teacher_dim))
                    })+
                }
            }

            /// The name of the loss's term (and its default entry name in a loss set), e.g.
            /// `"distill"` for [`LossKind::OpenClipDistill`].
            pub fn default_name(self) -> &'static str {
                match self {
                    $(LossKind::$variant => <$config as BuiltinLossConfig>::NAME,)+
                }
            }

            /// Whether the loss reads the teacher's embeddings.
            pub fn needs_teacher(self) -> bool {
                match self {
                    $(LossKind::$variant => <$config as BuiltinLossConfig>::NEEDS_TEACHER,)+
                }
            }

            /// Whether the loss reads the student features aligned to the teacher's space.
            pub fn uses_aligned_features(self) -> bool {
                match self {
                    $(LossKind::$variant => {
                        <$config as BuiltinLossConfig>::USES_ALIGNED_FEATURES
                    })+
                }
            }

            /// Whether the loss reads the student's masked view.
            pub fn requires_masked_view(self) -> bool {
                match self {
                    $(LossKind::$variant => {
                        <$config as BuiltinLossConfig>::REQUIRES_MASKED_VIEW
                    })+
                }
            }
        }
    };
}

builtin_losses! {
    /// CLIP's InfoNCE.
    Task(TaskLossConfig => TaskLoss),
    /// Contrastive relational distillation.
    Crd(CrdLossConfig => CrdLoss),
    /// Feature distillation.
    Fd(FdLossConfig => FdLoss),
    /// Masked feature distillation (ViT students only).
    Mfd(MfdLossConfig => MfdLoss),
    /// Gradient distillation.
    Gd(GdLossConfig => GdLoss),
    /// Interactive contrastive learning.
    Icl(IclLossConfig => IclLoss<B>),
    /// Augmented feature distillation.
    Afd(AfdLossConfig => AfdLoss<B>),
    /// Cross-model KD.
    CrossKd(CrossKdLossConfig => CrossKdLoss<B>),
    /// open_clip's `DistillClipLoss` term.
    OpenClipDistill(OpenClipDistillLossConfig => OpenClipDistillLoss),
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The kinds keep the names existing run configs use.
    #[test]
    fn kinds_serialize_in_snake_case_and_cover_every_config() {
        let names: Vec<String> = LossKind::ALL
            .iter()
            .map(|k| {
                serde_json::to_value(k)
                    .unwrap()
                    .as_str()
                    .unwrap()
                    .to_string()
            })
            .collect();
        assert_eq!(
            names,
            [
                "task",
                "crd",
                "fd",
                "mfd",
                "gd",
                "icl",
                "afd",
                "cross_kd",
                "open_clip_distill"
            ]
        );
        for &kind in LossKind::ALL {
            let config = kind.default_config(16);
            assert_eq!(config.kind(), kind);
            assert_eq!(config.default_name(), kind.default_name());
            let back: LossConfig =
                serde_json::from_value(serde_json::to_value(&config).unwrap()).unwrap();
            assert_eq!(back.kind(), kind);
            let loss = config.init::<burn_flex::Flex>(&Default::default()).unwrap();
            assert_eq!(loss.requires_masked_view(), kind.requires_masked_view());
        }
        assert!(!LossKind::Task.needs_teacher());
        assert!(LossKind::ALL[1..].iter().all(|k| k.needs_teacher()));
        let aligned: Vec<_> = LossKind::ALL
            .iter()
            .filter(|k| k.uses_aligned_features())
            .map(|k| k.default_name())
            .collect();
        assert_eq!(aligned, ["fd", "mfd", "gd", "icl", "afd", "cross_kd"]);
    }
}
