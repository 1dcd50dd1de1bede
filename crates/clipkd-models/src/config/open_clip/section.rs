//! [`Section`]: one JSON object of an open_clip model config, consumed field by field with
//! typed getters that fall back to open_clip's defaults; fields left over are errors.

use serde_json::{Map, Value, json};

use crate::config::types::{Activation, GeluApproximate};
use crate::config::validate::invalid;
use crate::error::ModelError;

/// A [`ModelError::UnsupportedConfig`] for `field` with `value`.
pub(super) fn unsupported(field: &str, value: &Value, reason: &str) -> ModelError {
    ModelError::UnsupportedConfig {
        field: field.to_string(),
        value: value.to_string(),
        reason: reason.to_string(),
    }
}

/// One JSON object being consumed field by field; leftover fields are errors.
pub(super) struct Section {
    prefix: &'static str,
    map: Map<String, Value>,
}

impl Section {
    pub(super) fn new(prefix: &'static str, value: Value) -> Result<Self, ModelError> {
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

    /// Whether `key` is given as JSON `null` (which [`Section::take`] treats as absent).
    pub(super) fn is_null(&self, key: &str) -> bool {
        self.map.get(key) == Some(&Value::Null)
    }

    /// Removes a field; JSON `null` counts as absent (open_clip's `None`).
    pub(super) fn take(&mut self, key: &str) -> Option<Value> {
        match self.map.remove(key) {
            Some(Value::Null) | None => None,
            Some(v) => Some(v),
        }
    }

    pub(super) fn usize_value(&self, key: &str, v: &Value) -> Result<usize, ModelError> {
        v.as_u64()
            .map(|n| n as usize)
            .ok_or_else(|| invalid(&self.field(key), v, "expected a non-negative integer"))
    }

    pub(super) fn usize(&mut self, key: &str, default: usize) -> Result<usize, ModelError> {
        match self.take(key) {
            None => Ok(default),
            Some(v) => self.usize_value(key, &v),
        }
    }

    pub(super) fn required_usize(&mut self, key: &str) -> Result<usize, ModelError> {
        match self.take(key) {
            None => Err(invalid(&self.field(key), &Value::Null, "required")),
            Some(v) => self.usize_value(key, &v),
        }
    }

    pub(super) fn i64(&mut self, key: &str, default: i64) -> Result<i64, ModelError> {
        match self.take(key) {
            None => Ok(default),
            Some(v) => v
                .as_i64()
                .ok_or_else(|| invalid(&self.field(key), &v, "expected an integer")),
        }
    }

    pub(super) fn f64(&mut self, key: &str, default: f64) -> Result<f64, ModelError> {
        Ok(self.opt_f64(key)?.unwrap_or(default))
    }

    pub(super) fn opt_f64(&mut self, key: &str) -> Result<Option<f64>, ModelError> {
        match self.take(key) {
            None => Ok(None),
            Some(v) => v
                .as_f64()
                .map(Some)
                .ok_or_else(|| invalid(&self.field(key), &v, "expected a number")),
        }
    }

    pub(super) fn bool(&mut self, key: &str, default: bool) -> Result<bool, ModelError> {
        match self.take(key) {
            None => Ok(default),
            Some(v) => v
                .as_bool()
                .ok_or_else(|| invalid(&self.field(key), &v, "expected true or false")),
        }
    }

    pub(super) fn opt_str(&mut self, key: &str) -> Result<Option<(String, Value)>, ModelError> {
        match self.take(key) {
            None => Ok(None),
            Some(v) => match v.as_str() {
                Some(s) => Ok(Some((s.to_string(), v.clone()))),
                None => Err(invalid(&self.field(key), &v, "expected a string")),
            },
        }
    }

    /// A size given as an int or as `[height, width]`.
    pub(super) fn pair(
        &mut self,
        key: &str,
        default: [usize; 2],
    ) -> Result<[usize; 2], ModelError> {
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
    pub(super) fn ignore(&mut self, keys: &[&str]) {
        for key in keys {
            self.map.remove(*key);
        }
    }

    /// Custom-block flags (`qk_norm`, `scale_fc`, ...) and `block_type`: only the default block
    /// is implemented.
    pub(super) fn default_block_only(&mut self) -> Result<(), ModelError> {
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
    pub(super) fn act_kwargs(
        &mut self,
        activation: Activation,
    ) -> Result<GeluApproximate, ModelError> {
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
    pub(super) fn norm_kwargs(&mut self) -> Result<f64, ModelError> {
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

    pub(super) fn finish(self) -> Result<(), ModelError> {
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
