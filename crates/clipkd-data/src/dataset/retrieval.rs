//! Image-text retrieval data: several captions per image.

use std::path::{Path, PathBuf};

use super::{CsvConfig, CsvDataset, CsvSource, ImageSource, IndexedDataset, SampleRef, SkipReport};
use crate::DataError;

/// How CSV rows become retrieval samples.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum CaptionGrouping {
    /// Rows with the same image path are one sample with several captions, in order of first
    /// appearance (five COCO captions: five rows).
    #[default]
    ByImage,
    /// Every row is a sample with one caption, even when images repeat: CLIP-KD's retrieval
    /// evaluation on a CSV (1:1 pairs).
    OnePerRow,
}

/// Images with one or more captions each, for image-text retrieval (MSCOCO 5K, Flickr30K 1K).
///
/// # Formats
/// - **JSON** ([`RetrievalDataset::from_json`]): the COCO-Karpathy test files used by
///   BLIP-style and CLIP benchmark tools, an array of
///   `{"image": "val2014/COCO_val2014_000000391895.jpg", "caption": ["A man ...", ...]}`;
///   `caption` may also be a single string. Other keys are ignored. Image paths are joined to
///   `root` unless absolute.
/// - **CSV** ([`RetrievalDataset::from_csv`]): the training CSV format ([`CsvDataset`]: header,
///   tab-separated, `title` and `filepath` columns by default), one row per (image, caption)
///   pair, grouped by image path ([`CaptionGrouping::ByImage`]) or kept 1:1
///   ([`CaptionGrouping::OnePerRow`]).
///
/// A loader batch of this dataset holds each image once and all its captions:
/// `Batch::tokens` has one row per caption and `Batch::text_image` says which image each
/// belongs to.
#[derive(Debug, Clone)]
pub struct RetrievalDataset {
    images: Vec<PathBuf>,
    /// Caption offsets: the captions of image `i` are `texts[offsets[i]..offsets[i + 1]]`.
    offsets: Vec<usize>,
    texts: Vec<String>,
    skipped: SkipReport,
}

impl RetrievalDataset {
    /// Reads a COCO-Karpathy style JSON array (see the type's documentation). Errors name the
    /// entry: not an array, an entry without a string `image`, a `caption` that is neither a
    /// string nor a non-empty array of strings.
    pub fn from_json(path: impl AsRef<Path>, root: Option<&Path>) -> Result<Self, DataError> {
        let path = path.as_ref();
        let err = |what: String| DataError::Annotations {
            path: path.to_path_buf(),
            what,
        };
        let bytes = std::fs::read(path).map_err(|source| DataError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let value: serde_json::Value =
            serde_json::from_slice(&bytes).map_err(|e| err(format!("invalid JSON: {e}")))?;
        let entries = value.as_array().ok_or_else(|| {
            err("expected a JSON array of {\"image\", \"caption\"} objects".into())
        })?;
        let mut ds = RetrievalDataset::empty();
        for (i, entry) in entries.iter().enumerate() {
            let image = entry
                .get("image")
                .and_then(|v| v.as_str())
                .ok_or_else(|| err(format!("entry {i}: no string `image`")))?;
            let captions: Vec<String> = match entry.get("caption") {
                Some(serde_json::Value::String(s)) => vec![s.clone()],
                Some(serde_json::Value::Array(a)) if !a.is_empty() => a
                    .iter()
                    .map(|c| c.as_str().map(str::to_string))
                    .collect::<Option<_>>()
                    .ok_or_else(|| {
                        err(format!("entry {i} ({image}): a caption is not a string"))
                    })?,
                _ => {
                    return Err(err(format!(
                        "entry {i} ({image}): `caption` must be a string or a non-empty array of strings"
                    )));
                }
            };
            let image_path = match root {
                Some(r) => r.join(image),
                None => PathBuf::from(image),
            };
            ds.push(image_path, captions);
        }
        if ds.images.is_empty() {
            return Err(err("no entry".into()));
        }
        Ok(ds)
    }

    /// Reads a CSV file (the training format) and groups its rows (see [`CaptionGrouping`]).
    /// Malformed lines are skipped and counted as for training data ([`Self::skipped`]).
    pub fn from_csv(
        source: &CsvSource,
        config: &CsvConfig,
        grouping: CaptionGrouping,
    ) -> Result<Self, DataError> {
        let csv = CsvDataset::open(std::slice::from_ref(source), config)?;
        let mut ds = RetrievalDataset::empty();
        ds.skipped = csv.skipped().clone();
        match grouping {
            CaptionGrouping::OnePerRow => {
                for i in 0..csv.len() {
                    ds.push(csv.image_path(i), vec![csv.caption(i).to_string()]);
                }
            }
            CaptionGrouping::ByImage => {
                let mut index: std::collections::HashMap<&str, usize> = Default::default();
                let mut groups: Vec<(usize, Vec<String>)> = Vec::new();
                for i in 0..csv.len() {
                    let g = *index.entry(csv.image_path_raw(i)).or_insert_with(|| {
                        groups.push((i, Vec::new()));
                        groups.len() - 1
                    });
                    groups[g].1.push(csv.caption(i).to_string());
                }
                for (first_row, captions) in groups {
                    ds.push(csv.image_path(first_row), captions);
                }
            }
        }
        Ok(ds)
    }

    fn empty() -> Self {
        RetrievalDataset {
            images: Vec::new(),
            offsets: vec![0],
            texts: Vec::new(),
            skipped: SkipReport::default(),
        }
    }

    fn push(&mut self, image: PathBuf, captions: Vec<String>) {
        self.images.push(image);
        self.texts.extend(captions);
        self.offsets.push(self.texts.len());
    }

    /// The image path of sample `index`.
    ///
    /// # Panics
    /// If `index >= self.len()`.
    pub fn image_path(&self, index: usize) -> &Path {
        &self.images[index]
    }

    /// The captions of sample `index`.
    ///
    /// # Panics
    /// If `index >= self.len()`.
    pub fn captions(&self, index: usize) -> &[String] {
        &self.texts[self.offsets[index]..self.offsets[index + 1]]
    }

    /// Number of captions over all images.
    pub fn num_texts(&self) -> usize {
        self.texts.len()
    }

    /// Every caption with the index of its image, in dataset order (for text-side embedding).
    pub fn texts(&self) -> impl Iterator<Item = (usize, &str)> + '_ {
        (0..self.images.len())
            .flat_map(move |i| self.captions(i).iter().map(move |c| (i, c.as_str())))
    }

    /// Malformed CSV lines skipped while reading (empty for JSON).
    pub fn skipped(&self) -> &SkipReport {
        &self.skipped
    }
}

impl IndexedDataset for RetrievalDataset {
    fn len(&self) -> usize {
        self.images.len()
    }

    fn read_skips(&self) -> SkipReport {
        self.skipped.clone()
    }

    fn sample(&self, index: usize) -> SampleRef {
        let path = &self.images[index];
        SampleRef {
            id: index as u64,
            key: path.display().to_string(),
            image: ImageSource::File(path.clone()),
            captions: self.captions(index).to_vec(),
            label: None,
        }
    }
}
