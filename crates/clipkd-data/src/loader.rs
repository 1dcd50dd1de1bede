//! The parallel data loader: batches of transformed images and tokenized captions, prepared on
//! worker threads ahead of the training step, deterministic and resumable.
//!
//! ```no_run
//! use clipkd_data::dataset::{CsvConfig, DataSource, DatasetKind};
//! use clipkd_data::image::{ImageTransform, TransformConfig};
//! use clipkd_data::loader::{DataLoader, DataPosition, LoaderConfig};
//! use clipkd_data::tokenizer::Tokenizer;
//! # fn main() -> Result<(), clipkd_data::DataError> {
//! let data = DataSource::open("cc3m.csv,cc12m.csv", Some("/data/cc3m,/data/cc12m"),
//!                             DatasetKind::Auto, &CsvConfig::default())?;
//! let loader = DataLoader::new(data, ImageTransform::new(TransformConfig::default())?,
//!                              Tokenizer::new(), LoaderConfig::train(256).with_seed(0))?;
//! let mut position = DataPosition::start(0); // or the one saved in a checkpoint
//! for _epoch in 0..2 {
//!     let mut batches = loader.resume(&position)?;
//!     for batch in &mut batches {
//!         let batch = batch?;
//!         // batch.images: [256, 3, 224, 224], batch.tokens: [256, 77]
//!         // ... train; a checkpoint stores `batch.position` ...
//!     }
//!     eprintln!("epoch {}: {}", position.epoch, batches.skipped());
//!     position = batches.position().clone(); // the start of the next epoch
//! }
//! # Ok(()) }
//! ```
//!
//! # How an epoch is ordered
//! The epoch's samples form one sequence: a permutation of an indexed dataset seeded by
//! `(seed, epoch)` (or dataset order without shuffling), or a webdataset stream (see
//! [`WebDataset`](crate::dataset::WebDataset)). Batch `b` holds the next `batch_size` samples
//! of that sequence that could be prepared: a skipped sample is replaced by the following one,
//! so batches keep their size and every usable sample appears once per epoch. With `drop_last`
//! (training, as CLIP-KD) a final incomplete batch is dropped; without it (evaluation) it is
//! yielded smaller.
//!
//! # Determinism
//! Batches depend only on the data, the seed, the epoch, the batch size and the mode — not on
//! the number of workers or on thread timing. Each sample's augmentation (RandomResizedCrop)
//! draws from a ChaCha8 stream keyed by `(seed, epoch, sample id)`; results are put in order
//! by their position in the sequence. Within a batch, a sample normally sits at its position
//! in the sequence; the ones that replace skipped samples take the free slots in order (the
//! exact rule: see [`Batch`]). `Batch::ids`/`keys` say which sample is in which row.
//!
//! # Resuming
//! Every [`Batch`] carries the [`DataPosition`] after it; saved in a checkpoint and passed to
//! [`DataLoader::resume`], the loader yields exactly the batches an uninterrupted run would
//! have yielded next. An indexed dataset resumes by recomputing the permutation; a webdataset
//! re-reads only the current shuffle block.
//!
//! # Threads and memory
//! One coordinator thread hands samples to `workers` threads (each reads, decodes, transforms
//! and tokenizes one sample at a time, writing the image straight into its batch buffer) and
//! assembles batches in order; webdatasets add one reader thread. Up to `prefetch` finished
//! batches wait for the consumer, and two batches are being filled, so memory is about
//! `(prefetch + 3) * batch_size * 3 * H * W * 4` bytes (plus two shuffle blocks of encoded
//! samples for webdatasets). Dropping [`Batches`] stops and joins every thread.

mod buffer;
mod coordinator;
mod pool;
mod split;
mod worker;

pub use pool::AugmentationPool;
pub use split::Split;

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;

use crossbeam_channel::Receiver;
use serde::{Deserialize, Serialize};

use crate::DataError;
use crate::dataset::{DataSource, SkipReason, SkipReport, StreamCursor};
use crate::image::ImageTransform;
use crate::tokenizer::{DEFAULT_CONTEXT_LENGTH, Tokenizer};

/// Which image transform the loader applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Mode {
    /// open_clip's train transform (RandomResizedCrop), seeded per sample and epoch.
    #[default]
    Train,
    /// open_clip's eval transform (resize, center crop).
    Eval,
}

/// Loader settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoaderConfig {
    /// Samples per batch.
    pub batch_size: usize,
    /// Worker threads; 0 uses every core (`std::thread::available_parallelism`). Results do
    /// not depend on it.
    pub workers: usize,
    /// Finished batches kept ready ahead of the consumer (at least 1).
    pub prefetch: usize,
    /// The seed of every random choice (epoch order, shard order, shuffle blocks, crops).
    pub seed: u64,
    /// Whether each epoch is shuffled.
    pub shuffle: bool,
    /// Whether a final incomplete batch is dropped.
    pub drop_last: bool,
    /// Train or eval transform.
    pub mode: Mode,
    /// Tokens per caption (the text tower's context length).
    pub context_length: usize,
    /// Webdataset shuffle block, in samples (open_clip's sample shuffle buffer is 5000).
    pub shuffle_buffer: usize,
    /// The part of every epoch this loader reads (the whole epoch by default; one node's part
    /// in a multi-machine run: see [`Split`]).
    pub split: Split,
    /// Train mode: a finite pool of crops per sample instead of a fresh one every epoch (see
    /// [`AugmentationPool`]); `None` (the default): epoch `e` draws the crop from `(seed, e)`.
    pub pool: Option<AugmentationPool>,
}

impl LoaderConfig {
    /// Training as CLIP-KD: shuffled, train transform, incomplete last batch dropped, seed 0,
    /// context 77, all cores, 2 batches of prefetch, shuffle blocks of 5000.
    pub fn train(batch_size: usize) -> Self {
        LoaderConfig {
            batch_size,
            workers: 0,
            prefetch: 2,
            seed: 0,
            shuffle: true,
            drop_last: true,
            mode: Mode::Train,
            context_length: DEFAULT_CONTEXT_LENGTH,
            shuffle_buffer: 5000,
            split: Split::WHOLE,
            pool: None,
        }
    }

    /// Evaluation: dataset order, eval transform, last batch kept.
    pub fn eval(batch_size: usize) -> Self {
        LoaderConfig {
            shuffle: false,
            drop_last: false,
            mode: Mode::Eval,
            ..Self::train(batch_size)
        }
    }

    /// Sets the number of workers (0: all cores).
    pub fn with_workers(mut self, workers: usize) -> Self {
        self.workers = workers;
        self
    }

    /// Sets the prefetch depth.
    pub fn with_prefetch(mut self, prefetch: usize) -> Self {
        self.prefetch = prefetch;
        self
    }

    /// Sets the seed.
    pub fn with_seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }

    /// Turns shuffling on or off.
    pub fn with_shuffle(mut self, shuffle: bool) -> Self {
        self.shuffle = shuffle;
        self
    }

    /// Sets whether the last incomplete batch is dropped.
    pub fn with_drop_last(mut self, drop_last: bool) -> Self {
        self.drop_last = drop_last;
        self
    }

    /// Sets the transform mode.
    pub fn with_mode(mut self, mode: Mode) -> Self {
        self.mode = mode;
        self
    }

    /// Sets the context length.
    pub fn with_context_length(mut self, context_length: usize) -> Self {
        self.context_length = context_length;
        self
    }

    /// Sets the webdataset shuffle block size.
    pub fn with_shuffle_buffer(mut self, samples: usize) -> Self {
        self.shuffle_buffer = samples;
        self
    }

    /// Reads only part `split` of every epoch (see [`Split`]); `batch_size` is then the part's
    /// batch.
    pub fn with_split(mut self, split: Split) -> Self {
        self.split = split;
        self
    }

    /// Crops samples from a finite pool (see [`AugmentationPool`]).
    pub fn with_pool(mut self, pool: Option<AugmentationPool>) -> Self {
        self.pool = pool;
        self
    }

    /// The number of worker threads that will run.
    pub fn resolved_workers(&self) -> usize {
        if self.workers > 0 {
            self.workers
        } else {
            std::thread::available_parallelism().map_or(1, |n| n.get())
        }
    }

    fn validate(&self) -> Result<(), DataError> {
        let bad = |field, reason: &str| {
            Err(DataError::InvalidLoader {
                field,
                reason: reason.to_string(),
            })
        };
        if self.batch_size == 0 {
            return bad("batch_size", "must be at least 1");
        }
        if self.prefetch == 0 {
            return bad("prefetch", "must be at least 1");
        }
        if self.context_length == 0 {
            return bad("context_length", "must be at least 1");
        }
        if self.shuffle_buffer == 0 {
            return bad("shuffle_buffer", "must be at least 1");
        }
        if self.pool.is_some_and(|p| p.size == 0) {
            return bad(
                "pool",
                "an augmentation pool needs at least one crop per sample",
            );
        }
        if self.split.parts == 0 || self.split.part >= self.split.parts {
            return bad("split", "the part must be one of `parts`");
        }
        Ok(())
    }
}

/// Where an epoch stands: what a checkpoint saves to resume the data exactly. Serializable
/// (JSON: `{"epoch": 3, "batch": 120, "sample": 30721, "anchor": 30720, "stream": null,
/// "skipped": {"missing_file": 1}}`).
///
/// Only meaningful with the same dataset, seed, batch size and shuffle settings.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct DataPosition {
    /// The epoch.
    pub epoch: u64,
    /// Batches of this epoch already yielded.
    pub batch: u64,
    /// Samples of the epoch's sequence already consumed (used or skipped).
    pub sample: u64,
    /// Where the next batch's slot layout starts in the sequence (at most `sample`; see
    /// [`Batch`]).
    pub anchor: u64,
    /// Webdataset only: the reader position of sample `sample` (`None`: the epoch's start).
    #[serde(default)]
    pub stream: Option<StreamCursor>,
    /// Samples skipped so far this epoch, by reason.
    #[serde(default)]
    pub skipped: BTreeMap<SkipReason, u64>,
}

impl DataPosition {
    /// The start of `epoch`.
    pub fn start(epoch: u64) -> Self {
        DataPosition {
            epoch,
            ..Default::default()
        }
    }

    /// The start of the epoch after this one.
    pub fn next_epoch(&self) -> Self {
        Self::start(self.epoch + 1)
    }

    /// Whether this is the start of an epoch.
    pub fn is_epoch_start(&self) -> bool {
        self.sample == 0 && self.batch == 0
    }
}

impl fmt::Display for DataPosition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "epoch {} batch {} (sample {}",
            self.epoch, self.batch, self.sample
        )?;
        if let Some(c) = &self.stream {
            write!(
                f,
                ", shuffle block {} from shard #{} sample {}, offset {}",
                c.block, c.shard, c.sample, c.offset
            )?;
        }
        f.write_str(")")
    }
}

/// One batch, in plain row-major buffers.
///
/// # Layout
/// `images` is `[len, 3, H, W]` (normalized CHW, [`Batch::image_shape`] = `[3, H, W]`).
/// `tokens` is `[texts, context_length]`: one row per caption, and `text_image[t]` is the image
/// row of caption `t` (for training data, one caption per image: `text_image[i] == i`; for
/// retrieval data, every caption of every image; for ImageFolder, none). `labels` holds the
/// class of each image when the dataset has classes.
///
/// # Which sample is in which row
/// Batch `b` starts at sample `s_b` of the epoch's sequence and its layout at an anchor
/// `a_b <= s_b` (`a_b = s_{b-1} + batch_size`, or the position's anchor for the first batch
/// after a resume). Sample `k` of the sequence goes to row `k - a_b` when that row exists and
/// is free; samples that replace skipped ones take the lowest free rows. This lets workers
/// write most images straight into place while batches stay independent of thread timing.
#[derive(Debug, Clone)]
pub struct Batch {
    /// Images, `[len, 3, H, W]`.
    pub images: Vec<f32>,
    /// `[3, H, W]`.
    pub image_shape: [usize; 3],
    /// Token ids, `[texts, context_length]`.
    pub tokens: Vec<u32>,
    /// Tokens per caption.
    pub context_length: usize,
    /// For each caption row, its image row.
    pub text_image: Vec<usize>,
    /// The captions as read (before tokenization), one per caption row.
    pub captions: Vec<String>,
    /// Class labels (ImageFolder), one per image.
    pub labels: Option<Vec<usize>>,
    /// Sample ids (dataset indices; `(shard << 32) | sample` for webdatasets).
    pub ids: Vec<u64>,
    /// Sample names (image paths, `shard.tar:key`).
    pub keys: Vec<String>,
    /// Train mode: for each row, the augmentation it was cropped with (the epoch, or the crop's
    /// index in the [`AugmentationPool`]) and the crop box in the decoded image's pixels;
    /// empty in eval mode.
    pub augmentations: Vec<(u64, crate::image::CropBox)>,
    /// The epoch.
    pub epoch: u64,
    /// The batch's number in its epoch.
    pub index: u64,
    /// Samples skipped while this batch was filled.
    pub skipped: SkipReport,
    /// The position after this batch (save it with a checkpoint taken after this batch's
    /// step).
    pub position: DataPosition,
}

impl Batch {
    /// Number of images.
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    /// Whether the batch is empty (never, for yielded batches).
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// Number of caption rows.
    pub fn num_texts(&self) -> usize {
        self.text_image.len()
    }

    /// `[len, 3, H, W]`.
    pub fn images_shape(&self) -> [usize; 4] {
        let [c, h, w] = self.image_shape;
        [self.len(), c, h, w]
    }

    /// `[texts, context_length]`.
    pub fn tokens_shape(&self) -> [usize; 2] {
        [self.num_texts(), self.context_length]
    }

    /// Image row `i` (`3 * H * W` values).
    ///
    /// # Panics
    /// If `i >= self.len()`.
    pub fn image(&self, i: usize) -> &[f32] {
        let n = self.image_shape.iter().product::<usize>();
        &self.images[i * n..(i + 1) * n]
    }

    /// Caption row `t` (`context_length` ids).
    ///
    /// # Panics
    /// If `t >= self.num_texts()`.
    pub fn text(&self, t: usize) -> &[u32] {
        &self.tokens[t * self.context_length..(t + 1) * self.context_length]
    }
}

/// Prepares batches of a [`DataSource`] with worker threads. Cheap to keep around: threads run
/// only while a [`Batches`] iterator lives.
#[derive(Debug, Clone)]
pub struct DataLoader {
    source: DataSource,
    transform: ImageTransform,
    tokenizer: Tokenizer,
    config: LoaderConfig,
}

impl DataLoader {
    /// A loader of `source` with this transform (its output size is the batch's image size),
    /// tokenizer and settings. Errors: settings out of range.
    pub fn new(
        source: impl Into<DataSource>,
        transform: ImageTransform,
        tokenizer: Tokenizer,
        config: LoaderConfig,
    ) -> Result<Self, DataError> {
        config.validate()?;
        Ok(DataLoader {
            source: source.into(),
            transform,
            tokenizer,
            config,
        })
    }

    /// The settings.
    pub fn config(&self) -> &LoaderConfig {
        &self.config
    }

    /// The data.
    pub fn source(&self) -> &DataSource {
        &self.source
    }

    /// The image transform.
    pub fn transform(&self) -> &ImageTransform {
        &self.transform
    }

    /// Batches per epoch when no sample is skipped (`None` for webdatasets, whose size is
    /// unknown until read). With a [`Split`], the global batches (`batch_size * parts`
    /// samples): each part yields at least that many when no sample is skipped.
    pub fn batches_per_epoch(&self) -> Option<u64> {
        let n = self.source.known_len()? as u64;
        let b = (self.config.batch_size * self.config.split.parts) as u64;
        Some(if self.config.drop_last {
            n / b
        } else {
            n.div_ceil(b)
        })
    }

    /// The batches of `epoch`, from its start.
    pub fn epoch(&self, epoch: u64) -> Result<Batches, DataError> {
        self.resume(&DataPosition::start(epoch))
    }

    /// The batches from `position` to the end of its epoch. Errors: a position that does not
    /// fit the data (a stream position for an indexed dataset or the reverse, a sample past
    /// the end), or threads that cannot be started.
    pub fn resume(&self, position: &DataPosition) -> Result<Batches, DataError> {
        let bad = |what: String| DataError::Position {
            position: position.to_string(),
            what,
        };
        if position.anchor > position.sample {
            return Err(bad(format!(
                "anchor {} is past sample {}",
                position.anchor, position.sample
            )));
        }
        match &self.source {
            DataSource::Indexed(ds) => {
                if position.stream.is_some() {
                    return Err(bad(
                        "it is a webdataset position but the data is an indexed dataset".into(),
                    ));
                }
                if position.sample > ds.len() as u64 {
                    return Err(bad(format!("the dataset has only {} samples", ds.len())));
                }
            }
            DataSource::WebDataset(ds) => match &position.stream {
                None if position.sample > 0 => {
                    return Err(bad(
                        "it is an indexed-dataset position but the data is a webdataset".into(),
                    ));
                }
                Some(c) if c.shard > self.config.split.shard_count(ds.shards().len()) => {
                    return Err(bad(format!(
                        "shard #{} but this loader reads {} of the {} shards",
                        c.shard,
                        self.config.split.shard_count(ds.shards().len()),
                        ds.shards().len()
                    )));
                }
                _ => {}
            },
        }
        let stop = Arc::new(AtomicBool::new(false));
        let (rx, handle) = coordinator::start(self, position, stop.clone())?;
        Ok(Batches {
            rx: Some(rx),
            handle: Some(handle),
            stop,
            position: position.clone(),
            skipped: SkipReport::from_counts(position.skipped.clone()),
            dropped: 0,
            finished: false,
        })
    }
}

/// What the coordinator sends to [`Batches`].
pub(crate) enum Msg {
    /// The next batch.
    Batch(Box<Batch>),
    /// The epoch is over: skips after the last batch and samples of a dropped last batch.
    End { skipped: SkipReport, dropped: usize },
    /// Something went wrong that is not a sample's fault.
    Failed(String),
}

/// The batches of one epoch (an iterator). Dropping it stops the loader's threads and waits
/// for them.
pub struct Batches {
    rx: Option<Receiver<Msg>>,
    handle: Option<JoinHandle<()>>,
    stop: Arc<AtomicBool>,
    position: DataPosition,
    skipped: SkipReport,
    dropped: usize,
    finished: bool,
}

impl Batches {
    /// The position after the last batch yielded; once the epoch is over, the start of the
    /// next epoch.
    pub fn position(&self) -> &DataPosition {
        &self.position
    }

    /// Samples skipped so far this epoch (counts include those before a resume; examples only
    /// since).
    pub fn skipped(&self) -> &SkipReport {
        &self.skipped
    }

    /// Usable samples left out because they did not fill a last batch (`drop_last`); known
    /// once the epoch is over.
    pub fn dropped(&self) -> usize {
        self.dropped
    }

    fn fail(&mut self, what: String) -> DataError {
        self.finished = true;
        DataError::LoaderFailed { what }
    }

    fn shutdown(&mut self) -> Option<String> {
        self.stop.store(true, Ordering::Relaxed);
        self.rx.take();
        let handle = self.handle.take()?;
        match handle.join() {
            Ok(()) => None,
            Err(payload) => Some(
                payload
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| payload.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "the coordinator thread panicked".into()),
            ),
        }
    }
}

impl Iterator for Batches {
    type Item = Result<Batch, DataError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.finished {
            return None;
        }
        let msg = self.rx.as_ref()?.recv();
        match msg {
            Ok(Msg::Batch(batch)) => {
                self.position = batch.position.clone();
                self.skipped.merge(&batch.skipped);
                Some(Ok(*batch))
            }
            Ok(Msg::End { skipped, dropped }) => {
                self.skipped.merge(&skipped);
                self.dropped = dropped;
                self.position = self.position.next_epoch();
                self.finished = true;
                self.shutdown();
                None
            }
            Ok(Msg::Failed(what)) => {
                self.shutdown();
                Some(Err(self.fail(what)))
            }
            Err(_) => {
                let what = self
                    .shutdown()
                    .unwrap_or_else(|| "the coordinator thread stopped".into());
                Some(Err(self.fail(what)))
            }
        }
    }
}

impl Drop for Batches {
    fn drop(&mut self) {
        self.shutdown();
    }
}

impl fmt::Debug for Batches {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Batches")
            .field("position", &self.position)
            .field("skipped", &self.skipped.total())
            .field("finished", &self.finished)
            .finish()
    }
}
