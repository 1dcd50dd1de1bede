//! Validation: the invariants a model needs, per tower and for the whole [`ClipConfig`].
//!
//! The open_clip reader validates what it parses; these checks are for configs built or edited
//! in code, and the tower constructors (`init`) run them. Errors name the field by its path in
//! open_clip's JSON (`vision_cfg.head_width`, `text_cfg.heads`, ...) and its value.

use serde_json::{Value, json};

use super::timm::{TimmConfig, TimmTrunkConfig};
use super::types::{
    ClipConfig, ModifiedResNetConfig, PosEmbedType, TextConfig, VisionConfig, VitConfig,
};
use crate::error::ModelError;

/// A [`ModelError::InvalidConfig`] for `field` with `value`.
pub(crate) fn invalid(field: &str, value: &Value, reason: &str) -> ModelError {
    ModelError::InvalidConfig {
        field: field.to_string(),
        value: value.to_string(),
        reason: reason.to_string(),
    }
}

/// `field` must not be 0.
fn positive(field: &str, value: usize) -> Result<(), ModelError> {
    if value == 0 {
        Err(invalid(field, &json!(value), "must be positive"))
    } else {
        Ok(())
    }
}

/// `embed_dim` (the joint embedding width a tower projects to) must not be 0.
pub(crate) fn check_embed_dim(embed_dim: usize) -> Result<(), ModelError> {
    positive("embed_dim", embed_dim)
}

impl VitConfig {
    /// Checks the invariants a [`crate::VisionTransformer`] needs: positive sizes, a width
    /// that splits into `width / head_width` equal heads, an image at least one patch large, a
    /// non-empty MLP, `patch_dropout` in `[0, 1)`, and for `sin_cos_2d` positions a square grid
    /// and a width divisible by 4. [`VitConfig::init`] calls it.
    pub fn validate(&self) -> Result<(), ModelError> {
        positive("vision_cfg.width", self.width)?;
        positive("vision_cfg.head_width", self.head_width)?;
        positive(
            "vision_cfg.patch_size",
            self.patch_size[0].min(self.patch_size[1]),
        )?;
        let heads = self.heads();
        if heads == 0 || !self.width.is_multiple_of(heads) {
            return Err(invalid(
                "vision_cfg.head_width",
                &json!(self.head_width),
                &format!(
                    "width {} must split into width // head_width = {heads} equal heads",
                    self.width
                ),
            ));
        }
        let [gh, gw] = self.grid_size();
        if gh == 0 || gw == 0 {
            return Err(invalid(
                "vision_cfg.image_size",
                &json!(self.image_size),
                &format!("smaller than the patch size {:?}", self.patch_size),
            ));
        }
        if self.mlp_width() == 0 {
            return Err(invalid(
                "vision_cfg.mlp_ratio",
                &json!(self.mlp_ratio),
                "MLP width is 0",
            ));
        }
        if !(0.0..1.0).contains(&self.patch_dropout) {
            return Err(invalid(
                "vision_cfg.patch_dropout",
                &json!(self.patch_dropout),
                "must be in [0, 1)",
            ));
        }
        if self.pos_embed_type == PosEmbedType::SinCos2d
            && (gh != gw || !self.width.is_multiple_of(4))
        {
            return Err(invalid(
                "vision_cfg.pos_embed_type",
                &json!("sin_cos_2d"),
                "needs a square patch grid and a width divisible by 4",
            ));
        }
        Ok(())
    }
}

impl ModifiedResNetConfig {
    /// Checks the invariants a [`crate::ModifiedResNet`] needs: positive widths and block
    /// counts, a feature width `32 * width` that splits into equal attention-pool heads, and
    /// an image of at least 32 px. [`ModifiedResNetConfig::init`] calls it.
    pub fn validate(&self) -> Result<(), ModelError> {
        positive("vision_cfg.width", self.width)?;
        positive("vision_cfg.head_width", self.head_width)?;
        for (i, &n) in self.layers.iter().enumerate() {
            positive(&format!("vision_cfg.layers[{i}]"), n)?;
        }
        let heads = self.heads();
        if heads == 0 || !self.feature_width().is_multiple_of(heads) {
            return Err(invalid(
                "vision_cfg.head_width",
                &json!(self.head_width),
                &format!(
                    "feature width 32 * {} must split into 32 * width // head_width = {heads} equal heads",
                    self.width
                ),
            ));
        }
        if self.grid_size() == 0 {
            return Err(invalid(
                "vision_cfg.image_size",
                &json!(self.image_size),
                "a ModifiedResNet needs at least 32 px",
            ));
        }
        Ok(())
    }
}

impl TimmConfig {
    /// Checks the invariants a [`crate::TimmTower`] needs: a timm model name clipkd has, a
    /// trunk of that name's family (for a ResNet, its block type), positive widths and image
    /// sizes, at least one block per stage, dropout rates in `[0, 1)`.
    /// [`TimmConfig::init`](crate::TimmConfig::init) calls it.
    pub fn validate(&self) -> Result<(), ModelError> {
        positive(
            "vision_cfg.image_size",
            self.image_size[0].min(self.image_size[1]),
        )?;
        for (field, rate) in [
            ("vision_cfg.timm_drop", Some(self.drop)),
            ("vision_cfg.timm_drop_path", self.drop_path),
        ] {
            if let Some(rate) = rate
                && !(0.0..1.0).contains(&rate)
            {
                return Err(invalid(field, &json!(rate), "must be in [0, 1)"));
            }
        }
        let Some(named) = TimmTrunkConfig::named(&self.model_name) else {
            return Err(invalid(
                "vision_cfg.timm_model_name",
                &json!(self.model_name),
                &format!(
                    "clipkd has no timm model of this name; it has {}",
                    TimmTrunkConfig::known_names().join(", ")
                ),
            ));
        };
        match (&self.trunk, &named) {
            (TimmTrunkConfig::ResNet(r), TimmTrunkConfig::ResNet(n)) => {
                if r.block != n.block {
                    return Err(invalid(
                        "vision_cfg.timm_model_name",
                        &json!(self.model_name),
                        &format!(
                            "the trunk has {:?} blocks, this model has {:?} blocks",
                            r.block, n.block
                        ),
                    ));
                }
                for c in r.channels {
                    positive("vision_cfg.timm_model_kwargs.channels", c)?;
                }
                if r.layers.contains(&0) {
                    return Err(invalid(
                        "vision_cfg.timm_model_kwargs.layers",
                        &json!(r.layers),
                        "every stage needs at least one block",
                    ));
                }
            }
            (TimmTrunkConfig::EfficientNet(e), TimmTrunkConfig::EfficientNet(n)) => {
                if e.arch != n.arch {
                    return Err(invalid(
                        "vision_cfg.timm_model_name",
                        &json!(self.model_name),
                        &format!("the trunk is a {:?}, this model a {:?}", e.arch, n.arch),
                    ));
                }
                for (field, m) in [
                    ("channel_multiplier", e.channel_multiplier),
                    ("depth_multiplier", e.depth_multiplier),
                ] {
                    if !(m > 0.0 && m.is_finite()) {
                        return Err(invalid(
                            &format!("vision_cfg.timm_model_kwargs.{field}"),
                            &json!(m),
                            "must be a positive number",
                        ));
                    }
                }
            }
            (TimmTrunkConfig::Swin(w), TimmTrunkConfig::Swin(_)) => {
                const KW: &str = "vision_cfg.timm_model_kwargs";
                positive(&format!("{KW}.patch_size"), w.patch_size)?;
                positive(&format!("{KW}.window_size"), w.window_size)?;
                positive(&format!("{KW}.embed_dim"), w.embed_dim)?;
                if w.depths.is_empty()
                    || w.depths.len() != w.num_heads.len()
                    || w.depths.contains(&0)
                {
                    return Err(invalid(
                        &format!("{KW}.depths"),
                        &json!(w.depths),
                        &format!(
                            "one positive block count per stage, as many as num_heads {:?}",
                            w.num_heads
                        ),
                    ));
                }
                for (i, &heads) in w.num_heads.iter().enumerate() {
                    if heads == 0 || !w.stage_dim(i).is_multiple_of(heads) {
                        return Err(invalid(
                            &format!("{KW}.num_heads"),
                            &json!(w.num_heads),
                            &format!(
                                "stage {i}'s width {} must split into {heads} heads",
                                w.stage_dim(i)
                            ),
                        ));
                    }
                }
                if w.img_size < w.patch_size {
                    return Err(invalid(
                        &format!("{KW}.img_size"),
                        &json!(w.img_size),
                        "smaller than the patch size",
                    ));
                }
                if self.image_size != [w.img_size, w.img_size] {
                    return Err(invalid(
                        "vision_cfg.image_size",
                        &json!(self.image_size),
                        &format!(
                            "timm's Swin is built for {0}x{0} images (img_size) and takes no \
                             other size",
                            w.img_size
                        ),
                    ));
                }
                if !w.mlp_ratio.is_finite() || w.mlp_ratio <= 0.0 {
                    return Err(invalid(
                        &format!("{KW}.mlp_ratio"),
                        &json!(w.mlp_ratio),
                        "must be positive",
                    ));
                }
            }
            (TimmTrunkConfig::MobileVit(v), TimmTrunkConfig::MobileVit(_)) => {
                const KW: &str = "vision_cfg.timm_model_kwargs";
                positive(&format!("{KW}.stem_chs"), v.stem_chs)?;
                positive(&format!("{KW}.num_features"), v.num_features)?;
                if !v.bottle_ratio.is_finite() || v.bottle_ratio <= 0.0 || v.stages.is_empty() {
                    return Err(invalid(
                        &format!("{KW}.bottle_ratio"),
                        &json!(v.bottle_ratio),
                        "a positive ratio, with at least one stage",
                    ));
                }
                for (i, stage) in v.stages.iter().enumerate() {
                    let field = format!("{KW}.stages[{i}]");
                    if stage.blocks == 0 || stage.channels == 0 || !(1..=2).contains(&stage.stride)
                    {
                        return Err(invalid(
                            &field,
                            &json!({"d": stage.blocks, "c": stage.channels, "s": stage.stride}),
                            "needs d >= 1 blocks, c >= 1 channels and a stride s of 1 or 2",
                        ));
                    }
                    if let Some(t) = &stage.transformer
                        && (t.depth == 0
                            || t.patch_size == 0
                            || t.dim == 0
                            || !t.dim.is_multiple_of(v.num_heads))
                    {
                        return Err(invalid(
                            &field,
                            &json!({"transformer_dim": t.dim, "transformer_depth": t.depth, "patch_size": t.patch_size}),
                            &format!(
                                "needs a positive depth and patch size, and a width that splits into {} heads",
                                v.num_heads
                            ),
                        ));
                    }
                }
            }
            _ => {
                return Err(invalid(
                    "vision_cfg.timm_model_name",
                    &json!(self.model_name),
                    "the trunk's architecture is of another family than this timm model",
                ));
            }
        }
        Ok(())
    }
}

impl VisionConfig {
    /// Checks the tower's invariants ([`VitConfig::validate`],
    /// [`ModifiedResNetConfig::validate`] or [`TimmConfig::validate`]).
    pub fn validate(&self) -> Result<(), ModelError> {
        match self {
            VisionConfig::Vit(v) => v.validate(),
            VisionConfig::ModifiedResNet(r) => r.validate(),
            VisionConfig::Timm(t) => t.validate(),
        }
    }
}

impl TextConfig {
    /// Checks the invariants a [`crate::TextTransformer`] needs: positive context length,
    /// vocabulary, width and heads, a width divisible by the heads, and a non-empty MLP.
    /// [`TextConfig::init`] calls it.
    pub fn validate(&self) -> Result<(), ModelError> {
        positive("text_cfg.context_length", self.context_length)?;
        positive("text_cfg.vocab_size", self.vocab_size)?;
        positive("text_cfg.width", self.width)?;
        positive("text_cfg.heads", self.heads)?;
        if !self.width.is_multiple_of(self.heads) {
            return Err(invalid(
                "text_cfg.heads",
                &json!(self.heads),
                &format!("width {} is not divisible by it", self.width),
            ));
        }
        if self.mlp_width() == 0 {
            return Err(invalid(
                "text_cfg.mlp_ratio",
                &json!(self.mlp_ratio),
                "MLP width is 0",
            ));
        }
        Ok(())
    }
}

impl ClipConfig {
    /// Checks the invariants the model needs (the parser already ensures them; this is for
    /// configs built or edited in code): a positive `embed_dim`, then
    /// [`VisionConfig::validate`] and [`TextConfig::validate`]. [`ClipConfig::init`] calls it.
    pub fn validate(&self) -> Result<(), ModelError> {
        check_embed_dim(self.embed_dim)?;
        self.vision.validate()?;
        self.text.validate()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field_of(result: Result<(), ModelError>) -> String {
        match result {
            Err(ModelError::InvalidConfig { field, .. }) => field,
            other => panic!("expected InvalidConfig, got {other:?}"),
        }
    }

    #[test]
    fn defaults_are_valid() {
        VitConfig::default().validate().unwrap();
        ModifiedResNetConfig::default().validate().unwrap();
        TextConfig::default().validate().unwrap();
    }

    #[test]
    fn vit_errors_name_the_field() {
        type Edit = fn(&mut VitConfig);
        let cases: [(Edit, &str); 6] = [
            (|v| v.width = 0, "vision_cfg.width"),
            (|v| v.head_width = 1000, "vision_cfg.head_width"),
            (|v| v.patch_size = [16, 0], "vision_cfg.patch_size"),
            (|v| v.image_size = [8, 224], "vision_cfg.image_size"),
            (|v| v.mlp_ratio = 0.0, "vision_cfg.mlp_ratio"),
            (|v| v.patch_dropout = -0.1, "vision_cfg.patch_dropout"),
        ];
        for (edit, field) in cases {
            let mut v = VitConfig::default();
            edit(&mut v);
            assert_eq!(field_of(v.validate()), field);
        }
        let rect_sincos = VitConfig {
            image_size: [224, 160],
            pos_embed_type: PosEmbedType::SinCos2d,
            ..VitConfig::default()
        };
        assert_eq!(
            field_of(rect_sincos.validate()),
            "vision_cfg.pos_embed_type"
        );
    }

    #[test]
    fn resnet_and_text_errors_name_the_field() {
        let r = ModifiedResNetConfig {
            layers: [3, 0, 6, 3],
            ..ModifiedResNetConfig::default()
        };
        assert_eq!(field_of(r.validate()), "vision_cfg.layers[1]");
        let r = ModifiedResNetConfig {
            image_size: 31,
            ..ModifiedResNetConfig::default()
        };
        assert_eq!(field_of(r.validate()), "vision_cfg.image_size");
        let t = TextConfig {
            heads: 7,
            ..TextConfig::default()
        };
        assert_eq!(field_of(t.validate()), "text_cfg.heads");
        let t = TextConfig {
            context_length: 0,
            ..TextConfig::default()
        };
        assert_eq!(field_of(t.validate()), "text_cfg.context_length");
    }

    #[test]
    fn clip_validation_checks_embed_dim_then_each_tower() {
        let mut c = ClipConfig::preset("ViT-T-16").unwrap();
        c.validate().unwrap();
        c.embed_dim = 0;
        assert_eq!(field_of(c.validate()), "embed_dim");
        c.embed_dim = 512;
        c.text.width = 0;
        assert_eq!(field_of(c.validate()), "text_cfg.width");
        c.text.width = 384;
        c.vision = VisionConfig::ModifiedResNet(ModifiedResNetConfig {
            head_width: 0,
            ..ModifiedResNetConfig::default()
        });
        assert_eq!(field_of(c.validate()), "vision_cfg.head_width");
    }
}
