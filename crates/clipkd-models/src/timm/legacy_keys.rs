//! The key layouts of older timm versions, upgraded to timm 1.0's as timm's own
//! `checkpoint_filter_fn`s do when they load a pretrained file. CLIP-KD trained its timm
//! students with an older timm, so its released checkpoints have these layouts.
//!
//! - Swin (timm < 0.9, and the original Microsoft code): patch merging is the *last* module of
//!   a stage (`layers.{i}.downsample`, stage 0 has one, the last stage none); timm >= 0.9 makes
//!   it the *first* module of the next stage (`layers.{i+1}.downsample`). The old files also
//!   store the buffers `relative_position_index` and `attn_mask`, which timm 1.0 (and clipkd)
//!   compute from the geometry instead.

use std::collections::BTreeMap;

use regex::Regex;

use crate::config::TimmTrunkConfig;

/// Rewrites the keys of `state` (an open_clip state dict, keys under `visual.trunk.`) from an
/// older timm layout of `trunk`'s family to timm 1.0's. A file already in the new layout is
/// left alone.
pub(crate) fn upgrade<T>(trunk: &TimmTrunkConfig, state: &mut BTreeMap<String, T>) {
    if let TimmTrunkConfig::Swin(_) = trunk {
        upgrade_swin(state);
    }
}

fn upgrade_swin<T>(state: &mut BTreeMap<String, T>) {
    const PREFIX: &str = "visual.trunk.";
    state.retain(|key, _| {
        !(key.starts_with(PREFIX)
            && (key.ends_with(".relative_position_index") || key.ends_with(".attn_mask")))
    });
    // timm's test: stage 0 has a patch merging only in the old layout.
    if !state.contains_key("visual.trunk.layers.0.downsample.reduction.weight") {
        return;
    }
    let stage = Regex::new(r"^visual\.trunk\.layers\.(\d+)\.downsample\.").expect("valid regex");
    let old = std::mem::take(state);
    for (key, value) in old {
        let key = match stage.captures(&key) {
            Some(c) => {
                let i: usize = c[1].parse().expect("digits");
                stage
                    .replace(&key, format!("visual.trunk.layers.{}.downsample.", i + 1))
                    .into_owned()
            }
            None => key,
        };
        state.insert(key, value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::TimmTrunkConfig;

    #[test]
    fn old_swin_keys_move_to_the_next_stage_and_buffers_go() {
        let swin = TimmTrunkConfig::named("swin_tiny_patch4_window7_224").unwrap();
        let mut state: BTreeMap<String, ()> = [
            "visual.trunk.layers.0.downsample.reduction.weight",
            "visual.trunk.layers.0.downsample.norm.weight",
            "visual.trunk.layers.2.downsample.norm.bias",
            "visual.trunk.layers.0.blocks.0.attn.relative_position_index",
            "visual.trunk.layers.0.blocks.1.attn_mask",
            "visual.trunk.layers.0.blocks.1.attn.qkv.weight",
            "visual.head.proj.weight",
        ]
        .into_iter()
        .map(|k| (k.to_string(), ()))
        .collect();
        upgrade(&swin, &mut state);
        let keys: Vec<&str> = state.keys().map(String::as_str).collect();
        assert_eq!(
            keys,
            [
                "visual.head.proj.weight",
                "visual.trunk.layers.0.blocks.1.attn.qkv.weight",
                "visual.trunk.layers.1.downsample.norm.weight",
                "visual.trunk.layers.1.downsample.reduction.weight",
                "visual.trunk.layers.3.downsample.norm.bias",
            ]
        );
        // The new layout is left alone.
        let mut new: BTreeMap<String, ()> = [(
            "visual.trunk.layers.1.downsample.norm.weight".to_string(),
            (),
        )]
        .into();
        upgrade(&swin, &mut new);
        assert!(new.contains_key("visual.trunk.layers.1.downsample.norm.weight"));
    }
}
