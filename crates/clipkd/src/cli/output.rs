//! Checks of a command's output path, made before any work.

use std::path::Path;

/// Fails before any work when `path` cannot be written: a directory, or a folder that does not
/// exist or takes no new file (checked by creating and removing a file next to it).
pub(crate) fn check_output(path: &Path) -> anyhow::Result<()> {
    anyhow::ensure!(
        !path.is_dir(),
        "--output {} is a directory: name the file to write",
        path.display()
    );
    let folder = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    anyhow::ensure!(
        folder.is_dir(),
        "--output {}: the folder {} does not exist",
        path.display(),
        folder.display()
    );
    let probe = folder.join(format!(".clipkd-output-{}.tmp", std::process::id()));
    std::fs::File::create(&probe)
        .map_err(|e| anyhow::anyhow!("--output {}: cannot write there: {e}", path.display()))?;
    let _ = std::fs::remove_file(&probe);
    Ok(())
}
