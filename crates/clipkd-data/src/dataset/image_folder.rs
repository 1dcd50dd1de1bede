//! torchvision's `ImageFolder` (ImageNet layout) for zero-shot classification.

use std::path::{Path, PathBuf};

use super::{ImageSource, IndexedDataset, SampleRef};
use crate::DataError;

/// torchvision's `IMG_EXTENSIONS`, matched case-insensitively.
pub const IMAGE_EXTENSIONS: [&str; 9] = [
    "jpg", "jpeg", "png", "ppm", "bmp", "pgm", "tif", "tiff", "webp",
];

/// Labelled images in one sub-folder per class (`root/n01440764/*.JPEG`, ...), listed exactly
/// as torchvision's `datasets.ImageFolder`: classes are the sub-folders of `root` in sorted
/// order (label = position); each class folder is walked recursively (following symbolic
/// links), folders in sorted path order and files sorted by name within a folder; files whose
/// extension is one of [`IMAGE_EXTENSIONS`] (any case) are kept. Sorting is by code point, as
/// Python's.
///
/// Samples have no caption and carry their label; the loader gives them in this order in eval
/// mode. (PPM, PGM and TIFF files are listed as torchvision does but this crate cannot decode
/// them: they are skipped as corrupt images.)
#[derive(Debug, Clone)]
pub struct ImageFolder {
    root: PathBuf,
    classes: Vec<String>,
    samples: Vec<(PathBuf, usize)>,
}

impl ImageFolder {
    /// Lists `root`. Errors: `root` unreadable, no class folder, or a class folder without a
    /// single image (torchvision raises the same).
    pub fn open(root: impl AsRef<Path>) -> Result<Self, DataError> {
        let root = root.as_ref();
        let err = |what: String| DataError::ImageFolder {
            path: root.to_path_buf(),
            what,
        };
        let io = |path: &Path, source| DataError::Io {
            path: path.to_path_buf(),
            source,
        };
        let mut classes = Vec::new();
        for entry in std::fs::read_dir(root).map_err(|e| io(root, e))? {
            let entry = entry.map_err(|e| io(root, e))?;
            if is_dir(&entry) {
                classes.push(entry.file_name().to_string_lossy().into_owned());
            }
        }
        classes.sort();
        if classes.is_empty() {
            return Err(err(
                "no class folder (expected one sub-folder per class)".into()
            ));
        }
        let mut samples = Vec::new();
        let mut empty = Vec::new();
        for (label, class) in classes.iter().enumerate() {
            let before = samples.len();
            let mut dirs = Vec::new();
            walk_dirs(&root.join(class), &mut dirs, 0)?;
            dirs.sort_by(|a, b| a.as_os_str().cmp(b.as_os_str()));
            for dir in dirs {
                let mut files: Vec<PathBuf> = Vec::new();
                for entry in std::fs::read_dir(&dir).map_err(|e| io(&dir, e))? {
                    let entry = entry.map_err(|e| io(&dir, e))?;
                    let path = entry.path();
                    if has_image_extension(&path) && !is_dir(&entry) {
                        files.push(path);
                    }
                }
                files.sort_by(|a, b| a.file_name().cmp(&b.file_name()));
                samples.extend(files.into_iter().map(|p| (p, label)));
            }
            if samples.len() == before {
                empty.push(class.clone());
            }
        }
        if !empty.is_empty() {
            return Err(err(format!(
                "no image in the class folder(s) {} (extensions: {})",
                empty.join(", "),
                IMAGE_EXTENSIONS.join(", ")
            )));
        }
        Ok(ImageFolder {
            root: root.to_path_buf(),
            classes,
            samples,
        })
    }

    /// The root folder.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The class names (folder names), in label order.
    pub fn classes(&self) -> &[String] {
        &self.classes
    }

    /// The image path and label of sample `index`.
    ///
    /// # Panics
    /// If `index >= self.len()`.
    pub fn item(&self, index: usize) -> (&Path, usize) {
        let (p, l) = &self.samples[index];
        (p, *l)
    }
}

/// Whether an entry is a folder, through symbolic links (Python's `DirEntry.is_dir()`); no
/// extra `stat` for plain entries, which matters for ImageNet's 1.3 million files.
fn is_dir(entry: &std::fs::DirEntry) -> bool {
    match entry.file_type() {
        Ok(t) if t.is_symlink() => entry.path().is_dir(),
        Ok(t) => t.is_dir(),
        Err(_) => entry.path().is_dir(),
    }
}

/// Whether `path`'s extension is an image extension (case-insensitive).
fn has_image_extension(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| IMAGE_EXTENSIONS.iter().any(|x| x.eq_ignore_ascii_case(e)))
}

/// `dir` and every folder below it (following links, as `os.walk(followlinks=True)`), with a
/// depth limit against link cycles.
fn walk_dirs(dir: &Path, out: &mut Vec<PathBuf>, depth: usize) -> Result<(), DataError> {
    const MAX_DEPTH: usize = 64;
    if depth > MAX_DEPTH {
        return Err(DataError::ImageFolder {
            path: dir.to_path_buf(),
            what: format!("more than {MAX_DEPTH} nested folders (a symbolic link cycle?)"),
        });
    }
    out.push(dir.to_path_buf());
    let entries = std::fs::read_dir(dir).map_err(|source| DataError::Io {
        path: dir.to_path_buf(),
        source,
    })?;
    for entry in entries {
        let entry = entry.map_err(|source| DataError::Io {
            path: dir.to_path_buf(),
            source,
        })?;
        if is_dir(&entry) {
            walk_dirs(&entry.path(), out, depth + 1)?;
        }
    }
    Ok(())
}

impl IndexedDataset for ImageFolder {
    fn len(&self) -> usize {
        self.samples.len()
    }

    fn sample(&self, index: usize) -> SampleRef {
        let (path, label) = &self.samples[index];
        SampleRef {
            id: index as u64,
            key: path.display().to_string(),
            image: ImageSource::File(path.clone()),
            captions: Vec::new(),
            label: Some(*label),
        }
    }
}
