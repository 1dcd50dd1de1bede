//! `manifest.json`: the size and CRC-32 of every file of a checkpoint, checked before a resume.

use std::collections::BTreeMap;
use std::fs;
use std::io::Read;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::*;

/// The size and CRC-32 of one file of a checkpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileCheck {
    /// Length in bytes.
    pub bytes: u64,
    /// CRC-32 (IEEE) of the content.
    pub crc32: u32,
}

impl FileCheck {
    /// Reads `path` and computes its check.
    pub fn of(path: &Path) -> Result<Self, std::io::Error> {
        let mut file = fs::File::open(path)?;
        let mut hasher = crc32fast::Hasher::new();
        let mut buf = vec![0u8; 1 << 20];
        let mut bytes = 0u64;
        loop {
            let n = file.read(&mut buf)?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
            bytes += n as u64;
        }
        Ok(FileCheck {
            bytes,
            crc32: hasher.finalize(),
        })
    }
}

/// `manifest.json`: the check of every other file of a checkpoint, by name.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Manifest {
    /// File name to check.
    pub files: BTreeMap<String, FileCheck>,
}

/// Checks that a checkpoint is complete and intact before it is used: `state.json` parses, and
/// every file matches the size and CRC-32 of `manifest.json` (checkpoints written before
/// manifests existed are checked for their files only). Returns what is wrong.
pub fn verify_checkpoint(dir: &Path) -> Result<(), String> {
    let state = dir.join(STATE_FILE);
    let text = fs::read_to_string(&state).map_err(|e| format!("{STATE_FILE}: {e}"))?;
    serde_json::from_str::<TrainState>(&text)
        .map_err(|e| format!("{STATE_FILE} line {}: {e}", e.line()))?;
    let manifest_path = dir.join(MANIFEST_FILE);
    if !manifest_path.exists() {
        for name in [MODEL_FILE, OPTIMIZER_FILE, CONFIG_FILE] {
            if !dir.join(name).is_file() {
                return Err(format!("{name} is missing"));
            }
        }
        return Ok(());
    }
    let manifest: Manifest = fs::read_to_string(&manifest_path)
        .map_err(|e| e.to_string())
        .and_then(|t| serde_json::from_str(&t).map_err(|e| e.to_string()))
        .map_err(|e| format!("{MANIFEST_FILE}: {e}"))?;
    for (name, want) in &manifest.files {
        let got = FileCheck::of(&dir.join(name)).map_err(|e| format!("{name}: {e}"))?;
        if got.bytes != want.bytes {
            return Err(format!(
                "{name} is {} bytes where {MANIFEST_FILE} says {} ({})",
                got.bytes,
                want.bytes,
                if got.bytes < want.bytes {
                    "truncated"
                } else {
                    "longer than written"
                }
            ));
        }
        if got.crc32 != want.crc32 {
            return Err(format!(
                "{name} has CRC-32 {:08x} where {MANIFEST_FILE} says {:08x} (damaged)",
                got.crc32, want.crc32
            ));
        }
    }
    Ok(())
}
