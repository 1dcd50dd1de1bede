//! Replacing a file so that a crash at any instant leaves the old file or the new one.

use std::io::Write;
use std::path::{Path, PathBuf};

use crate::error::TrainError;

/// Writes `bytes` to `path` through `path.tmp` in the same directory (a fixed name, so a
/// leftover of a killed write is overwritten by the next one), flushed to disk and renamed over
/// `path`; then the directory entry is flushed. Each step is a [`crate::fault::point`].
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), TrainError> {
    let tmp = tmp_path(path);
    crate::fault::point("write", &tmp);
    let mut f = std::fs::File::create(&tmp).map_err(|e| TrainError::io("creating", &tmp, e))?;
    f.write_all(bytes)
        .and_then(|()| f.sync_all())
        .map_err(|e| TrainError::io("writing", &tmp, e))?;
    crate::fault::point("rename", &tmp);
    std::fs::rename(&tmp, path).map_err(|e| TrainError::io("renaming", &tmp, e))?;
    if let Some(dir) = path.parent() {
        crate::checkpoint::sync_dir(dir);
    }
    Ok(())
}

/// `path` with `.tmp` appended to its file name.
fn tmp_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".tmp");
    path.with_file_name(name)
}
