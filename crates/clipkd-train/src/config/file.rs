//! Reading config files (TOML or JSON) into one JSON tree, and merging the layers.

use std::path::Path;

use serde_json::{Map, Value};

use crate::error::TrainError;

/// Reads a TOML (or, by extension, JSON) config file as a JSON value.
pub(super) fn read_config_value(path: &Path) -> Result<Value, TrainError> {
    let text =
        std::fs::read_to_string(path).map_err(|e| TrainError::io("reading config", path, e))?;
    let is_json = path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("json"));
    if is_json {
        serde_json::from_str(&text).map_err(|e| TrainError::ConfigParse {
            path: path.to_path_buf(),
            location: Some((e.line(), e.column())),
            message: e.to_string(),
        })
    } else {
        let table: toml::Table = toml::from_str(&text).map_err(|e| {
            let location = e.span().map(|span| line_column(&text, span.start));
            TrainError::ConfigParse {
                path: path.to_path_buf(),
                location,
                message: e.message().to_string(),
            }
        })?;
        toml_to_json(toml::Value::Table(table), "").map_err(|(field, value)| {
            TrainError::ConfigParse {
                path: path.to_path_buf(),
                location: None,
                message: format!("{field}: {value} is not a finite number"),
            }
        })
    }
}

/// 1-based line and column of byte `offset` in `text`.
fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, column)
}

/// A TOML value at `path` (`optim.lr`, `loss.terms[0].weight`, as serde_path_to_error names
/// fields) as JSON (datetimes become strings). JSON has no NaN or infinity (serde_json would
/// make them `null`, then "invalid type: null"), so those are an error: the path of the value
/// and its TOML spelling (`nan`, `inf`, `-inf`).
pub(super) fn toml_to_json(
    value: toml::Value,
    path: &str,
) -> Result<Value, (String, &'static str)> {
    let child = |key: &str| {
        if path.is_empty() {
            key.to_string()
        } else {
            format!("{path}.{key}")
        }
    };
    Ok(match value {
        toml::Value::String(s) => Value::String(s),
        toml::Value::Integer(i) => Value::from(i),
        toml::Value::Float(f) => match serde_json::Number::from_f64(f) {
            Some(n) => Value::Number(n),
            None if f.is_nan() => return Err((path.to_string(), "nan")),
            None if f > 0.0 => return Err((path.to_string(), "inf")),
            None => return Err((path.to_string(), "-inf")),
        },
        toml::Value::Boolean(b) => Value::Bool(b),
        toml::Value::Datetime(d) => Value::String(d.to_string()),
        toml::Value::Array(a) => Value::Array(
            a.into_iter()
                .enumerate()
                .map(|(i, v)| toml_to_json(v, &format!("{path}[{i}]")))
                .collect::<Result<_, _>>()?,
        ),
        toml::Value::Table(t) => {
            let mut map = Map::new();
            for (k, v) in t {
                let value = toml_to_json(v, &child(&k))?;
                map.insert(k, value);
            }
            Value::Object(map)
        }
    })
}

/// Merges `overlay` into `base`: objects key by key (recursively), anything else replaced.
pub(super) fn merge(base: &mut Value, overlay: Value) {
    match (base, overlay) {
        (Value::Object(b), Value::Object(o)) => {
            for (k, v) in o {
                match b.get_mut(&k) {
                    Some(slot) if slot.is_object() && v.is_object() => merge(slot, v),
                    _ => {
                        b.insert(k, v);
                    }
                }
            }
        }
        (slot, v) => *slot = v,
    }
}
