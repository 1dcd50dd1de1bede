//! Image-text datasets: what the [`loader`](crate::loader) reads.
//!
//! | dataset | format | use |
//! |---|---|---|
//! | [`CsvDataset`] | CLIP-KD / open_clip CSV: a header row, tab-separated, columns `title` (caption) and `filepath` (image); several CSVs, each with its own data root, concatenated | training, validation |
//! | [`WebDataset`] | webdataset tar shards in `img2dataset` layout: `key.jpg\|jpeg\|png\|webp` plus `key.txt` or `key.json` (`"caption"`) | training at scale |
//! | [`ImageFolder`] | one sub-folder per class (ImageNet layout), classes in sorted order as torchvision | zero-shot classification |
//! | [`RetrievalDataset`] | several captions per image: COCO-Karpathy JSON `[{"image": .., "caption": [..]}]`, or a CSV grouped by image (or one caption per row, CLIP-KD's mode) | image-text retrieval |
//! | [`SyntheticDataset`] | generated images and a fixed caption, as open_clip's `synthetic` | throughput tests |
//! | `shapes::ShapesDataset` (feature `shapes`) | rendered captioned shapes, in memory or written as the files above | the `clipkd demo`, examples |
//!
//! Every dataset but [`WebDataset`] has random access ([`IndexedDataset`]); a [`WebDataset`] is
//! read as a stream. [`DataSource`] is either, and [`DataSource::open`] picks the format from a
//! path (or a [`DatasetKind`] flag) the way CLIP-KD's `--train-data`/`--data-root` and
//! open_clip's `--dataset-type` do.
//!
//! # Samples that cannot be used
//! A sample whose image is missing, unreadable or corrupt, a tar sample without image or
//! caption, a truncated or empty shard: none of these is an error. The loader skips the
//! sample, counts it under a [`SkipReason`] and keeps the first few as examples in a
//! [`SkipReport`]; each is also logged with `log::warn!` (the first few of each kind, then a
//! summary). The same holds for a malformed CSV line, which is dropped while the CSV is read
//! ([`CsvDataset::skipped`], [`DataSource::read_skips`]). Errors ([`DataError`]) are kept for
//! what makes a whole dataset unusable: an unreadable or empty CSV, a column missing from a
//! header, a CSV ending inside a quoted field, a shard pattern that matches nothing, an image
//! folder without classes.
//!
//! Image paths that are not regular files (a FIFO would block the reader) and images whose
//! header claims more pixels than PIL accepts are refused before they are opened or decoded
//! ([`SkipReason::NotAFile`], [`SkipReason::TooLarge`]). [`DataSource::probe`] decodes a few
//! samples up front, to tell before training whether the data is usable at all.

mod csv;
mod image_folder;
pub(crate) mod order;
mod probe;
mod retrieval;
#[cfg(feature = "shapes")]
pub mod shapes;
mod synthetic;
mod webdataset;

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::DataError;
use crate::image::DecodedImage;

pub use self::csv::{CsvConfig, CsvDataset, CsvSource};
pub use image_folder::{IMAGE_EXTENSIONS, ImageFolder};
pub use probe::ProbeReport;
pub use retrieval::{CaptionGrouping, RetrievalDataset};
pub use synthetic::SyntheticDataset;
pub use webdataset::{
    CAPTION_EXTENSIONS, StreamCursor, WEBDATASET_IMAGE_EXTENSIONS, WebDataset, expand_braces,
    expand_shards,
};
pub(crate) use webdataset::{ReaderConfig, ReaderMsg, spawn_reader};

/// Where a sample's image comes from.
#[derive(Debug, Clone)]
pub enum ImageSource {
    /// An encoded image file, read by a loader worker.
    File(PathBuf),
    /// Encoded bytes already in memory (a tar member); `name` is used in reports.
    Encoded {
        /// The encoded image (JPEG, PNG, WebP, ...).
        bytes: Vec<u8>,
        /// Where the bytes came from (`shard.tar:member`).
        name: String,
    },
    /// An already decoded image (synthetic data).
    Decoded(Arc<DecodedImage>),
}

/// One sample as a dataset describes it, before anything is read or decoded.
#[derive(Debug, Clone)]
pub struct SampleRef {
    /// A stable identity: the dataset index for indexed datasets, `(shard << 32) | sample` for
    /// webdataset shards (shard in the given shard list, sample in the shard). It seeds the
    /// sample's augmentation, so a sample is cropped the same way whatever thread, batch or
    /// position it lands in.
    pub id: u64,
    /// A readable name for reports and batches: the image path, or `shard.tar:key`.
    pub key: String,
    /// The image.
    pub image: ImageSource,
    /// The captions: one for training data, several for retrieval, none for ImageFolder.
    pub captions: Vec<String>,
    /// The class index (ImageFolder).
    pub label: Option<usize>,
}

/// A dataset with random access: a length and the sample at an index. Implemented by every
/// dataset here but [`WebDataset`]; implement it to feed the loader with anything else.
pub trait IndexedDataset: Send + Sync + fmt::Debug {
    /// Number of samples.
    fn len(&self) -> usize;

    /// Whether there is no sample.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The sample at `index`. Cheap (no file is read): the loader calls it on its coordinating
    /// thread and reads the image on a worker.
    ///
    /// # Panics
    /// If `index >= self.len()`.
    fn sample(&self, index: usize) -> SampleRef;

    /// What was dropped while the dataset was read, before any sample is loaded (malformed CSV
    /// lines: [`CsvDataset::skipped`]). Empty by default.
    fn read_skips(&self) -> SkipReport {
        SkipReport::default()
    }
}

/// What a [`DataLoader`](crate::loader::DataLoader) reads: a random-access dataset or a
/// stream of webdataset shards.
#[derive(Debug, Clone)]
pub enum DataSource {
    /// A dataset with random access (shuffled by a per-epoch permutation).
    Indexed(Arc<dyn IndexedDataset>),
    /// Webdataset shards (shard order shuffled per epoch, then a bounded shuffle buffer).
    WebDataset(Arc<WebDataset>),
}

impl DataSource {
    /// A random-access dataset.
    pub fn indexed(dataset: impl IndexedDataset + 'static) -> Self {
        DataSource::Indexed(Arc::new(dataset))
    }

    /// The number of samples, where it is known without reading the data (not for shards).
    pub fn known_len(&self) -> Option<usize> {
        match self {
            DataSource::Indexed(d) => Some(d.len()),
            DataSource::WebDataset(_) => None,
        }
    }

    /// What was dropped while the data was opened, before any sample is loaded: the malformed
    /// lines of CSV data ([`IndexedDataset::read_skips`]); empty for webdatasets, whose
    /// problems show while they are read.
    pub fn read_skips(&self) -> SkipReport {
        match self {
            DataSource::Indexed(d) => d.read_skips(),
            DataSource::WebDataset(_) => SkipReport::default(),
        }
    }

    /// Opens training data given as CLIP-KD's command line does: `data` is a comma-separated
    /// list of CSV files (`--train-data a.csv,b.csv`) with `roots` the matching comma-separated
    /// data roots (`--data-root rootA,rootB`; one root serves every CSV; none: paths are used
    /// as written), or webdataset shard patterns separated by `::` (brace ranges, globs,
    /// directories: see [`expand_shards`]; `roots` must then be `None`). `kind` picks the
    /// format; [`DatasetKind::Auto`] goes by the first path's extension (`.csv`/`.tsv`: CSV;
    /// `.tar` or a directory: webdataset), as open_clip's `--dataset-type auto`.
    pub fn open(
        data: &str,
        roots: Option<&str>,
        kind: DatasetKind,
        csv: &CsvConfig,
    ) -> Result<Self, DataError> {
        let kind = match kind {
            DatasetKind::Auto => DatasetKind::detect(data)?,
            k => k,
        };
        match kind {
            DatasetKind::Csv => {
                let sources = CsvSource::from_lists(data, roots)?;
                Ok(DataSource::indexed(CsvDataset::open(&sources, csv)?))
            }
            DatasetKind::WebDataset => {
                if roots.is_some() {
                    return Err(DataError::DatasetSpec {
                        what: "a data root only applies to CSV data, not to webdataset shards"
                            .into(),
                    });
                }
                Ok(DataSource::WebDataset(Arc::new(WebDataset::from_pattern(
                    data,
                )?)))
            }
            DatasetKind::Auto => unreachable!("resolved above"),
        }
    }
}

impl<D: IndexedDataset + 'static> From<D> for DataSource {
    fn from(dataset: D) -> Self {
        DataSource::indexed(dataset)
    }
}

impl From<WebDataset> for DataSource {
    fn from(dataset: WebDataset) -> Self {
        DataSource::WebDataset(Arc::new(dataset))
    }
}

/// The training-data format (open_clip's `--dataset-type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum DatasetKind {
    /// By the extension of the first path: `.csv`/`.tsv` is CSV, `.tar` (after brace
    /// expansion) or a directory is webdataset.
    #[default]
    Auto,
    /// Tab-separated CSV files ([`CsvDataset`]).
    Csv,
    /// Webdataset tar shards ([`WebDataset`]).
    WebDataset,
}

impl DatasetKind {
    /// open_clip's name (`auto`, `csv`, `webdataset`).
    pub fn name(self) -> &'static str {
        match self {
            DatasetKind::Auto => "auto",
            DatasetKind::Csv => "csv",
            DatasetKind::WebDataset => "webdataset",
        }
    }

    /// The format of `data` (see [`DataSource::open`]).
    pub fn detect(data: &str) -> Result<Self, DataError> {
        let first = data
            .split("::")
            .next()
            .and_then(|s| s.split(',').next())
            .unwrap_or("")
            .trim();
        if first.is_empty() {
            return Err(DataError::DatasetSpec {
                what: "no training data given".into(),
            });
        }
        let lower = first.to_ascii_lowercase();
        if lower.ends_with(".csv") || lower.ends_with(".tsv") {
            Ok(DatasetKind::Csv)
        } else if lower.ends_with(".tar")
            || Path::new(first).is_dir()
            || (first.contains('{')
                && expand_braces(first)?
                    .iter()
                    .any(|p| p.to_ascii_lowercase().ends_with(".tar")))
        {
            Ok(DatasetKind::WebDataset)
        } else {
            Err(DataError::DatasetSpec {
                what: format!(
                    "cannot tell the format of `{first}` from its extension (.csv/.tsv for CSV, \
                     .tar or a directory for webdataset): name it with the dataset kind"
                ),
            })
        }
    }
}

impl FromStr for DatasetKind {
    type Err = DataError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "auto" => Ok(DatasetKind::Auto),
            "csv" => Ok(DatasetKind::Csv),
            "webdataset" | "wds" => Ok(DatasetKind::WebDataset),
            other => Err(DataError::DatasetSpec {
                what: format!("unknown dataset kind `{other}` (auto, csv, webdataset)"),
            }),
        }
    }
}

impl fmt::Display for DatasetKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Why a sample (or a line, or a shard) was skipped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SkipReason {
    /// The image file does not exist.
    MissingFile,
    /// The image file exists but cannot be read (permissions, I/O error).
    UnreadableFile,
    /// The image path is not a regular file: a directory, a FIFO, a socket, a device (never
    /// opened: a FIFO would block).
    NotAFile,
    /// The image is too large: its header claims more pixels than
    /// [`MAX_IMAGE_PIXELS`](crate::image::MAX_IMAGE_PIXELS), or the file is larger than
    /// [`MAX_IMAGE_FILE_BYTES`](crate::image::MAX_IMAGE_FILE_BYTES). Refused before decoding.
    TooLarge,
    /// The image cannot be decoded: truncated, not an image, unsupported format.
    CorruptImage,
    /// A tar sample has no image member (`jpg`, `jpeg`, `png`, `webp`).
    NoImage,
    /// A tar sample has no caption (`txt`, or `json` with a string `caption`).
    NoCaption,
    /// A shard ends in the middle of a member or header: the rest of the shard is lost.
    TruncatedShard,
    /// A shard has no sample.
    EmptyShard,
    /// A shard cannot be opened.
    UnreadableShard,
    /// A CSV line has the wrong number of fields, no image path, or is not UTF-8.
    MalformedLine,
    /// Decoding or transforming the sample panicked (a bug in a decoder; reported, not fatal).
    Panic,
}

impl SkipReason {
    /// Every reason, in report order.
    pub const ALL: [SkipReason; 12] = [
        SkipReason::MissingFile,
        SkipReason::UnreadableFile,
        SkipReason::NotAFile,
        SkipReason::TooLarge,
        SkipReason::CorruptImage,
        SkipReason::NoImage,
        SkipReason::NoCaption,
        SkipReason::TruncatedShard,
        SkipReason::EmptyShard,
        SkipReason::UnreadableShard,
        SkipReason::MalformedLine,
        SkipReason::Panic,
    ];

    /// A short name (`missing_file`, `corrupt_image`, ...), as serialized.
    pub fn name(self) -> &'static str {
        match self {
            SkipReason::MissingFile => "missing_file",
            SkipReason::UnreadableFile => "unreadable_file",
            SkipReason::NotAFile => "not_a_file",
            SkipReason::TooLarge => "too_large",
            SkipReason::CorruptImage => "corrupt_image",
            SkipReason::NoImage => "no_image",
            SkipReason::NoCaption => "no_caption",
            SkipReason::TruncatedShard => "truncated_shard",
            SkipReason::EmptyShard => "empty_shard",
            SkipReason::UnreadableShard => "unreadable_shard",
            SkipReason::MalformedLine => "malformed_line",
            SkipReason::Panic => "panic",
        }
    }
}

impl SkipReason {
    /// The reason a sample is skipped when reading or decoding its image fails with `error`:
    /// a missing file, an unreadable one, a path that is not a regular file, an image too
    /// large, otherwise a corrupt image.
    pub fn of_image_error(error: &DataError) -> Self {
        match error {
            DataError::Io { source, .. } if source.kind() == std::io::ErrorKind::NotFound => {
                SkipReason::MissingFile
            }
            DataError::Io { .. } => SkipReason::UnreadableFile,
            DataError::NotAFile { .. } => SkipReason::NotAFile,
            DataError::ImageTooLarge { .. } | DataError::ImageFileTooLarge { .. } => {
                SkipReason::TooLarge
            }
            _ => SkipReason::CorruptImage,
        }
    }
}

impl fmt::Display for SkipReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One skipped sample: why, which, and the underlying message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Skipped {
    /// The reason.
    pub reason: SkipReason,
    /// The sample: image path, `shard.tar:key`, or `file.csv:line`.
    pub key: String,
    /// The underlying error, or what is missing.
    pub message: String,
}

impl fmt::Display for Skipped {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({}): {}", self.key, self.reason, self.message)
    }
}

/// How many samples were skipped, by reason, with the first few kept as examples.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SkipReport {
    /// Skipped samples per reason (reasons with none are absent).
    pub counts: BTreeMap<SkipReason, u64>,
    /// The first skipped samples, at most [`SkipReport::EXAMPLES`].
    pub examples: Vec<Skipped>,
}

impl SkipReport {
    /// How many skipped samples a report keeps as examples.
    pub const EXAMPLES: usize = 16;

    /// A report with these counts and no examples (e.g. restored from a checkpoint).
    pub fn from_counts(counts: BTreeMap<SkipReason, u64>) -> Self {
        SkipReport {
            counts,
            examples: Vec::new(),
        }
    }

    /// Counts one skipped sample (keeping it as an example while there are fewer than
    /// [`SkipReport::EXAMPLES`]).
    pub fn record(&mut self, skipped: &Skipped) {
        *self.counts.entry(skipped.reason).or_insert(0) += 1;
        if self.examples.len() < Self::EXAMPLES {
            self.examples.push(skipped.clone());
        }
    }

    /// Counts `n` skipped items (lines of one malformed CSV record) described by `skipped`,
    /// keeping it as one example.
    pub(crate) fn record_n(&mut self, skipped: &Skipped, n: u64) {
        *self.counts.entry(skipped.reason).or_insert(0) += n;
        if self.examples.len() < Self::EXAMPLES {
            self.examples.push(skipped.clone());
        }
    }

    /// Adds another report's counts and examples (up to the example limit).
    pub fn merge(&mut self, other: &SkipReport) {
        for (&reason, &n) in &other.counts {
            *self.counts.entry(reason).or_insert(0) += n;
        }
        let room = Self::EXAMPLES.saturating_sub(self.examples.len());
        self.examples
            .extend(other.examples.iter().take(room).cloned());
    }

    /// Skipped samples for one reason.
    pub fn count(&self, reason: SkipReason) -> u64 {
        self.counts.get(&reason).copied().unwrap_or(0)
    }

    /// All skipped samples.
    pub fn total(&self) -> u64 {
        self.counts.values().sum()
    }

    /// Whether nothing was skipped.
    pub fn is_empty(&self) -> bool {
        self.total() == 0
    }
}

impl fmt::Display for SkipReport {
    /// `3 skipped (missing_file: 2, corrupt_image: 1)`, then one example per line.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} skipped", self.total())?;
        if !self.counts.is_empty() {
            let parts: Vec<String> = self
                .counts
                .iter()
                .map(|(r, n)| format!("{r}: {n}"))
                .collect();
            write!(f, " ({})", parts.join(", "))?;
        }
        for e in &self.examples {
            write!(f, "\n  {e}")?;
        }
        Ok(())
    }
}

/// Reads and decodes a sample's image, as the loader's workers and [`DataSource::probe`] do; a
/// failure is the skip it causes (see [`SkipReason::of_image_error`]), keyed `key`.
pub(crate) fn load_image<'a>(
    image: &'a ImageSource,
    key: &str,
) -> Result<Cow<'a, DecodedImage>, Skipped> {
    let decoded = match image {
        ImageSource::File(path) => DecodedImage::open(path),
        ImageSource::Encoded { bytes, name } => DecodedImage::from_bytes(bytes, name),
        ImageSource::Decoded(img) => return Ok(Cow::Borrowed(img)),
    };
    decoded.map(Cow::Owned).map_err(|e| Skipped {
        reason: SkipReason::of_image_error(&e),
        key: key.to_string(),
        // The key is the path already.
        message: match e {
            DataError::Io { source, .. } => source.to_string(),
            other => other.to_string(),
        },
    })
}

/// Logs a skipped sample with `log::warn!`: every one while `seen` (the count of this reason so
/// far, this one included) is at most 8, then every power of two, so that a dataset with
/// millions of missing files does not flood the log.
pub(crate) fn warn_skipped(skipped: &Skipped, seen: u64) {
    if seen <= 8 || seen.is_power_of_two() {
        log::warn!(
            "skipped sample #{seen} of kind {}: {skipped}",
            skipped.reason
        );
    }
}
