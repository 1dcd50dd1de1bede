//! Command-line overrides (`--set optim.lr=5e-4`): a dotted path and a TOML value, applied to
//! the assembled config tree before it is parsed.

use std::path::PathBuf;

use serde_json::{Map, Value};

use super::file::toml_to_json;
use crate::error::TrainError;

/// A command-line override: a dotted path (`optim.lr`, `loss.terms.0.weight`) and a value.
#[derive(Debug, Clone, PartialEq)]
pub struct Override {
    /// The dotted path.
    pub path: String,
    /// The value.
    pub value: Value,
}

impl Override {
    /// An override of `path` with `value`.
    pub fn new(path: impl Into<String>, value: impl Into<Value>) -> Self {
        Override {
            path: path.into(),
            value: value.into(),
        }
    }

    /// Parses `path=value`, the value as a TOML value (`5e-4`, `true`, `"text"`, `[1, 2]`,
    /// `{ mode = "Exp" }`); a value that is not valid TOML is taken as a string, so
    /// `data.train_data=/data/cc3m.csv` needs no quotes.
    pub fn parse(s: &str) -> Result<Self, TrainError> {
        let (path, raw) = s.split_once('=').ok_or_else(|| TrainError::ConfigParse {
            path: PathBuf::from("<command line>"),
            location: None,
            message: format!("override `{s}`: expected `path.to.field=value`"),
        })?;
        let path = path.trim();
        if path.is_empty() || path.split('.').any(str::is_empty) {
            return Err(TrainError::ConfigParse {
                path: PathBuf::from("<command line>"),
                location: None,
                message: format!("override `{s}`: `{path}` is not a dotted field path"),
            });
        }
        let raw = raw.trim();
        let value = match toml::from_str::<toml::Table>(&format!("v = {raw}")) {
            Ok(mut table) => toml_to_json(table.remove("v").expect("parsed key `v`"), path)
                .map_err(|(field, value)| {
                    TrainError::config(field, format!("{value} is not a finite number"))
                })?,
            Err(_) => Value::String(raw.to_string()),
        };
        Ok(Override::new(path, value))
    }

    pub(super) fn apply(&self, root: &mut Value) -> Result<(), TrainError> {
        let mut node = root;
        let parts: Vec<&str> = self.path.split('.').collect();
        for (i, part) in parts.iter().enumerate() {
            let last = i + 1 == parts.len();
            let here = parts[..=i].join(".");
            if node.is_null() {
                // An unset optional section (`eval.zero_shot`): setting a field inside it
                // creates it.
                *node = Value::Object(Map::new());
            }
            node = match node {
                Value::Object(map) => {
                    if last {
                        map.insert(part.to_string(), self.value.clone());
                        return Ok(());
                    }
                    map.entry(part.to_string())
                        .or_insert_with(|| Value::Object(Map::new()))
                }
                Value::Array(items) => {
                    let index: usize = part.parse().map_err(|_| {
                        TrainError::config(&here, "expected an index into the list")
                    })?;
                    let len = items.len();
                    let slot = items.get_mut(index).ok_or_else(|| {
                        TrainError::config(
                            &here,
                            format!("index {index} past the end ({len} items)"),
                        )
                    })?;
                    if last {
                        *slot = self.value.clone();
                        return Ok(());
                    }
                    slot
                }
                _ => {
                    return Err(TrainError::config(
                        parts[..i].join("."),
                        format!("is a value, so `{}` cannot be set inside it", self.path),
                    ));
                }
            };
        }
        Ok(())
    }
}
