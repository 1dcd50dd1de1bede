//! Webdataset tar shards (`img2dataset` layout), streamed.

use std::fs::File;
use std::io::{BufReader, Read};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;

use crossbeam_channel::{Receiver, Sender};
use serde::{Deserialize, Serialize};

use super::order::{self, Order, Purpose};
use super::{ImageSource, SampleRef, SkipReason, Skipped};
use crate::DataError;
use crate::loader::Split;

mod shards;

pub use shards::{expand_braces, expand_shards};

/// Image members of a sample, in order of preference when a sample has several (open_clip's
/// `rename(image="jpg;png;jpeg;webp")`).
pub const WEBDATASET_IMAGE_EXTENSIONS: [&str; 4] = ["jpg", "png", "jpeg", "webp"];

/// Caption members, in order of preference: `txt` (the caption as UTF-8 text), then `json`
/// (its string field `caption`, as `img2dataset` writes it).
pub const CAPTION_EXTENSIONS: [&str; 2] = ["txt", "json"];

/// Webdataset tar shards, as written by `img2dataset` (`--output_format webdataset`).
///
/// # Layout
/// A shard is a tar file whose members are grouped into samples by *key*, webdataset's
/// `base_plus_ext`: the member's path up to the first dot of its file name is the key, the
/// rest is the extension (lower-cased), so `dir/000123.seg.png` is key `dir/000123`, extension
/// `seg.png`. Consecutive members with the same key form a sample; a repeated extension
/// starts a new sample (open_clip's `group_by_keys_nothrow`). Members that are not regular
/// files, have no dot, or are top-level `__*__` metadata are ignored. A sample's image is its
/// first member among [`WEBDATASET_IMAGE_EXTENSIONS`]; its caption is the `txt` member, or
/// else the `caption` string of the `json` member ([`CAPTION_EXTENSIONS`]).
///
/// # What is skipped (and counted, never fatal)
/// - a sample without image ([`SkipReason::NoImage`]) or caption ([`SkipReason::NoCaption`]);
/// - a shard without any sample: a warning and one [`SkipReason::EmptyShard`];
/// - a shard that cannot be opened, is not a regular file (a FIFO, a directory: never
///   opened) or is not a tar file: one [`SkipReason::UnreadableShard`];
/// - a shard that ends inside a header or a member (a partial download): the sample being
///   read is lost and the shard ends there, counted once as [`SkipReason::TruncatedShard`].
///   (A cut exactly between two members cannot be told from the end of the archive, and a cut
///   inside a member that is not read, such as a `.parquet`, shows as the archive's end.)
///
/// # Order and shuffling
/// Per epoch the shard order is a permutation seeded by `(seed, epoch)`. Samples are then
/// read in that order and cut into consecutive *shuffle blocks* of `shuffle_buffer` samples
/// (a block may span shards); each block is permuted with a seed from `(seed, epoch, block)`.
/// The block is the bounded in-memory shuffle buffer: memory is about two blocks of encoded
/// samples (the block being read and the one being handed out). Unlike webdataset's
/// sliding buffer, which depends on all earlier samples, a block can be rebuilt from where it
/// starts, so a [`StreamCursor`] (block, its first shard and sample, offset in the block)
/// resumes exactly, reading only that block again. Without shuffling, blocks keep the
/// stream's order.
#[derive(Debug, Clone)]
pub struct WebDataset {
    shards: Vec<PathBuf>,
    /// The shard number of `shards[0]` in sample ids (non-zero for [`WebDataset::shard`]).
    id_base: usize,
}

impl WebDataset {
    /// A dataset of these shards (at least one), read in this order when not shuffled.
    pub fn new(shards: Vec<PathBuf>) -> Result<Self, DataError> {
        if shards.is_empty() {
            return Err(DataError::Shards {
                pattern: String::new(),
                what: "no shard".into(),
            });
        }
        Ok(WebDataset { shards, id_base: 0 })
    }

    /// Shard `index` alone, its samples keeping their ids (`(index << 32) | sample`, hence
    /// their crops): one shard of the data at a time, e.g. for a teacher cache's build.
    ///
    /// # Panics
    /// If `index` is not a shard of this dataset.
    pub fn shard(&self, index: usize) -> WebDataset {
        WebDataset {
            shards: vec![self.shards[index].clone()],
            id_base: self.id_base + index,
        }
    }

    /// The shard number of the first shard in sample ids (0 unless from [`WebDataset::shard`]).
    pub fn id_base(&self) -> usize {
        self.id_base
    }

    /// The shards of a pattern (see [`expand_shards`]).
    pub fn from_pattern(pattern: &str) -> Result<Self, DataError> {
        Self::new(expand_shards(pattern)?)
    }

    /// The shard files.
    pub fn shards(&self) -> &[PathBuf] {
        &self.shards
    }
}

/// Where the reader of a webdataset epoch is: the next sample is number `offset` of shuffle
/// block `block`, which starts at sample `sample` (counting every key group, skipped ones
/// included) of shard `shard` of the epoch's shard order (a block that starts past a shard's
/// last group goes on with the next shard; past the last shard, the epoch is over).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub struct StreamCursor {
    /// The shuffle block.
    pub block: u64,
    /// Position, in the epoch's shard order (with a [`Split`], in the part's shards of that
    /// order), of the shard where the block starts.
    pub shard: usize,
    /// The key group of that shard where the block starts.
    pub sample: u64,
    /// Samples of the block already handed out.
    pub offset: u64,
}

/// webdataset's `base_plus_ext`: `(key, extension)` of a member path, `None` without a dot in
/// the file name.
fn split_key(name: &str) -> Option<(&str, &str)> {
    let base_start = name.rfind('/').map_or(0, |i| i + 1);
    let dot = name[base_start..].find('.')? + base_start;
    if dot == base_start {
        // A file name starting with a dot has an empty key: `[^.]+` does not match.
        return None;
    }
    Some((&name[..dot], &name[dot + 1..]))
}

/// One key group being read.
struct Group {
    key: String,
    index: u64,
    extensions: Vec<String>,
    members: Vec<(String, Vec<u8>)>,
}

/// Whether the data of a member with this extension is needed.
fn wanted(ext: &str) -> bool {
    WEBDATASET_IMAGE_EXTENSIONS.contains(&ext) || CAPTION_EXTENSIONS.contains(&ext)
}

/// The sample of a finished group.
fn finish(group: Group, shard: &Path, shard_id: usize) -> Result<SampleRef, Skipped> {
    let key = format!("{}:{}", shard.display(), group.key);
    let member = |ext: &str| {
        group
            .members
            .iter()
            .find(|(e, _)| e == ext)
            .map(|(_, d)| d.as_slice())
    };
    let image_ext = WEBDATASET_IMAGE_EXTENSIONS
        .iter()
        .find(|e| member(e).is_some());
    let Some(image_ext) = image_ext else {
        return Err(Skipped {
            reason: SkipReason::NoImage,
            key,
            message: format!(
                "no image member ({}); members: {}",
                WEBDATASET_IMAGE_EXTENSIONS.join(", "),
                group.extensions.join(", ")
            ),
        });
    };
    let caption = if let Some(txt) = member("txt") {
        Some(String::from_utf8_lossy(txt).into_owned())
    } else if let Some(json) = member("json") {
        serde_json::from_slice::<serde_json::Value>(json)
            .ok()
            .and_then(|v| {
                v.get("caption")
                    .and_then(|c| c.as_str())
                    .map(str::to_string)
            })
    } else {
        None
    };
    let Some(caption) = caption else {
        return Err(Skipped {
            reason: SkipReason::NoCaption,
            key,
            message: format!(
                "no caption (a txt member, or a json member with a string \"caption\"); members: {}",
                group.extensions.join(", ")
            ),
        });
    };
    let bytes = group
        .members
        .into_iter()
        .find(|(e, _)| e == image_ext)
        .map(|(_, d)| d)
        .unwrap_or_default();
    Ok(SampleRef {
        id: ((shard_id as u64) << 32) | (group.index & 0xffff_ffff),
        key: key.clone(),
        image: ImageSource::Encoded {
            bytes,
            name: format!("{key}.{image_ext}"),
        },
        captions: vec![caption],
        label: None,
    })
}

/// Reads the samples of one shard, from key group `skip` on (earlier groups are passed over
/// without reading their data), calling `emit(group index, sample)` for each; `emit` returns
/// `false` to stop. Shard-level problems are emitted as skipped samples (see [`WebDataset`]).
pub(super) fn read_shard(
    path: &Path,
    shard_id: usize,
    skip: u64,
    stop: &AtomicBool,
    emit: &mut dyn FnMut(u64, Result<SampleRef, Skipped>) -> bool,
) {
    let shard_skip = |reason, message: String| Skipped {
        reason,
        key: path.display().to_string(),
        message,
    };
    // Checked before opening: opening a FIFO blocks until a writer appears.
    match std::fs::metadata(path) {
        Ok(m) if !m.is_file() => {
            emit(
                0,
                Err(shard_skip(
                    SkipReason::UnreadableShard,
                    format!(
                        "not a regular file but {}",
                        crate::image::file_kind(&m.file_type())
                    ),
                )),
            );
            return;
        }
        // A missing shard is reported by `open` below.
        _ => {}
    }
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) => {
            emit(
                0,
                Err(shard_skip(
                    SkipReason::UnreadableShard,
                    format!("cannot open: {e}"),
                )),
            );
            return;
        }
    };
    let mut archive = tar::Archive::new(BufReader::with_capacity(1 << 20, file));
    let entries = match archive.entries_with_seek() {
        Ok(e) => e,
        Err(e) => {
            emit(
                0,
                Err(shard_skip(
                    SkipReason::UnreadableShard,
                    format!("not a tar archive: {e}"),
                )),
            );
            return;
        }
    };
    let mut group: Option<Group> = None;
    let mut next_index = 0u64;
    // A problem that ends the shard: (group index, skipped).
    let mut failure: Option<(u64, Skipped)> = None;
    for entry in entries {
        if stop.load(Ordering::Relaxed) {
            return;
        }
        let mut entry = match entry {
            Ok(e) => e,
            Err(e) => {
                failure = Some(if next_index == 0 {
                    (
                        0,
                        shard_skip(
                            SkipReason::UnreadableShard,
                            format!("not a tar archive: {e}"),
                        ),
                    )
                } else {
                    let at = group.as_ref().map_or(next_index, |g| g.index);
                    (
                        at,
                        shard_skip(
                            SkipReason::TruncatedShard,
                            format!("cut inside a header after {next_index} key groups: {e}"),
                        ),
                    )
                });
                break;
            }
        };
        if !entry.header().entry_type().is_file() {
            continue;
        }
        let name = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
        if !name.contains('/') && name.starts_with("__") && name.ends_with("__") {
            continue;
        }
        let Some((key, ext)) = split_key(&name) else {
            continue;
        };
        let ext = ext.to_lowercase();
        let starts_group = match &group {
            None => true,
            Some(g) => g.key != key || g.extensions.contains(&ext),
        };
        if starts_group {
            if let Some(g) = group.take()
                && g.index >= skip
                && !emit(g.index, finish(g, path, shard_id))
            {
                return;
            }
            group = Some(Group {
                key: key.to_string(),
                index: next_index,
                extensions: Vec::new(),
                members: Vec::new(),
            });
            next_index += 1;
        }
        let g = group.as_mut().expect("a group was just started");
        g.extensions.push(ext.clone());
        if g.index < skip || !wanted(&ext) {
            continue;
        }
        let size = entry.size();
        let mut data = Vec::with_capacity(size.min(1 << 30) as usize);
        let read = entry.read_to_end(&mut data);
        if read.is_err() || data.len() as u64 != size {
            let why = match read {
                Err(e) => e.to_string(),
                Ok(_) => format!("{} of {size} bytes", data.len()),
            };
            failure = Some((
                g.index,
                shard_skip(
                    SkipReason::TruncatedShard,
                    format!("cut inside member {name} (key group {}): {why}", g.index),
                ),
            ));
            group = None;
            break;
        }
        g.members.push((ext, data));
    }
    if let Some(g) = group
        && g.index >= skip
        && !emit(g.index, finish(g, path, shard_id))
    {
        return;
    }
    if let Some((at, skipped)) = failure {
        if at >= skip {
            emit(at, Err(skipped));
        }
    } else if next_index == 0 {
        emit(
            0,
            Err(shard_skip(
                SkipReason::EmptyShard,
                "no sample in the shard".into(),
            )),
        );
    }
}

/// What the reader thread sends.
#[derive(Debug)]
pub(crate) enum ReaderMsg {
    /// The next sample of the epoch, with the cursor that resumes *after* it.
    Item {
        cursor: StreamCursor,
        sample: Result<SampleRef, Skipped>,
    },
    /// The epoch is over.
    End,
}

/// Settings of one epoch's reader.
#[derive(Debug, Clone)]
pub(crate) struct ReaderConfig {
    pub epoch: u64,
    pub seed: u64,
    pub shuffle: bool,
    pub block_size: usize,
    pub start: StreamCursor,
    /// The part of the epoch's shard order to read.
    pub split: Split,
}

/// Starts the thread that reads an epoch of `dataset` from `config.start` and sends its
/// samples in epoch order (blocks permuted when shuffling). It stops at the end, when `stop`
/// is set, or when the receiver is dropped.
pub(crate) fn spawn_reader(
    dataset: Arc<WebDataset>,
    config: ReaderConfig,
    stop: Arc<AtomicBool>,
) -> std::io::Result<(Receiver<ReaderMsg>, JoinHandle<()>)> {
    let (tx, rx) = crossbeam_channel::bounded(config.block_size.max(16));
    let handle = std::thread::Builder::new()
        .name("clipkd-wds-reader".into())
        .spawn(move || run_reader(&dataset, &config, &stop, &tx))?;
    Ok((rx, handle))
}

/// A shuffle block being filled: its samples, where it starts, and the reader position after
/// its last sample.
struct Block {
    number: u64,
    samples: Vec<Result<SampleRef, Skipped>>,
    start: (usize, u64),
    after: (usize, u64),
    /// Samples already handed out before a resume.
    skip: u64,
}

impl Block {
    /// Permutes (when shuffling) and sends the block; each sample carries the cursor after it:
    /// the next offset of this block, or for the last one the start of the next block
    /// (`after`). False when the receiver is gone.
    fn flush(&mut self, cfg: &ReaderConfig, tx: &Sender<ReaderMsg>) -> bool {
        if cfg.shuffle {
            // Each part's blocks have their own streams (the whole dataset's: `number`).
            let stream = self.number * cfg.split.parts as u64 + cfg.split.part as u64;
            let mut rng = order::rng_for(cfg.seed, Purpose::ShuffleBlock, cfg.epoch, stream);
            order::shuffle(&mut self.samples, &mut rng);
        }
        let len = self.samples.len() as u64;
        for (offset, sample) in self.samples.drain(..).enumerate() {
            let offset = offset as u64;
            if offset < self.skip {
                continue;
            }
            let cursor = if offset + 1 < len {
                StreamCursor {
                    block: self.number,
                    shard: self.start.0,
                    sample: self.start.1,
                    offset: offset + 1,
                }
            } else {
                StreamCursor {
                    block: self.number + 1,
                    shard: self.after.0,
                    sample: self.after.1,
                    offset: 0,
                }
            };
            if tx.send(ReaderMsg::Item { cursor, sample }).is_err() {
                return false;
            }
        }
        self.number += 1;
        self.skip = 0;
        true
    }
}

fn run_reader(ds: &WebDataset, cfg: &ReaderConfig, stop: &AtomicBool, tx: &Sender<ReaderMsg>) {
    let order = Order::new(
        ds.shards.len() as u64,
        cfg.shuffle,
        cfg.seed,
        Purpose::ShardOrder,
        cfg.epoch,
    );
    // This part's shards, in epoch order; cursors count positions in this list.
    let mine: Vec<usize> = cfg
        .split
        .shard_positions(ds.shards.len())
        .into_iter()
        .map(|p| order.get(p as u64) as usize)
        .collect();
    let block_size = cfg.block_size.max(1);
    let mut block = Block {
        number: cfg.start.block,
        samples: Vec::with_capacity(block_size),
        start: (cfg.start.shard, cfg.start.sample),
        after: (cfg.start.shard, cfg.start.sample),
        skip: cfg.start.offset,
    };
    for (pos, &shard_id) in mine.iter().enumerate().skip(cfg.start.shard) {
        let skip = if pos == cfg.start.shard {
            cfg.start.sample
        } else {
            0
        };
        let mut alive = true;
        read_shard(
            &ds.shards[shard_id],
            ds.id_base + shard_id,
            skip,
            stop,
            &mut |index, sample| {
                if block.samples.is_empty() {
                    block.start = (pos, index);
                }
                // Where reading resumes after this sample: the next key group of this shard
                // (past its end, that reads nothing more from it), or the next shard after a
                // shard-level problem reported at group 0.
                let shard_level = matches!(
                    &sample,
                    Err(s) if matches!(s.reason, SkipReason::EmptyShard | SkipReason::UnreadableShard)
                );
                block.after = if shard_level {
                    (pos + 1, 0)
                } else {
                    (pos, index + 1)
                };
                block.samples.push(sample);
                if block.samples.len() == block_size {
                    alive = block.flush(cfg, tx);
                }
                alive
            },
        );
        if !alive || stop.load(Ordering::Relaxed) {
            return;
        }
    }
    if !block.samples.is_empty() && !block.flush(cfg, tx) {
        return;
    }
    let _ = tx.send(ReaderMsg::End);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn braces_as_braceexpand() {
        assert_eq!(
            expand_braces("s-{000..003}.tar").unwrap(),
            ["s-000.tar", "s-001.tar", "s-002.tar", "s-003.tar"]
        );
        assert_eq!(expand_braces("{1..3}").unwrap(), ["1", "2", "3"]);
        assert_eq!(expand_braces("{3..1}").unwrap(), ["3", "2", "1"]);
        assert_eq!(expand_braces("{0..10..5}").unwrap(), ["0", "5", "10"]);
        assert_eq!(expand_braces("{8..10}").unwrap(), ["8", "9", "10"]);
        assert_eq!(expand_braces("{08..10}").unwrap(), ["08", "09", "10"]);
        assert_eq!(expand_braces("{a..c}").unwrap(), ["a", "b", "c"]);
        assert_eq!(expand_braces("{a,b{1..2}}x").unwrap(), ["ax", "b1x", "b2x"]);
        assert_eq!(expand_braces("{x}").unwrap(), ["{x}"]);
        assert_eq!(expand_braces(r"\{1..2\}").unwrap(), ["{1..2}"]);
        assert_eq!(
            expand_braces("{a,b}/{0..1}").unwrap(),
            ["a/0", "a/1", "b/0", "b/1"]
        );
        assert!(expand_braces("{1..2").is_err());
        assert!(expand_braces("1..2}").is_err());
    }

    #[test]
    fn keys_as_base_plus_ext() {
        assert_eq!(split_key("000123.jpg"), Some(("000123", "jpg")));
        assert_eq!(split_key("d/000123.seg.png"), Some(("d/000123", "seg.png")));
        assert_eq!(split_key("a.b/c.txt"), Some(("a.b/c", "txt")));
        assert_eq!(split_key("noext"), None);
        assert_eq!(split_key(".hidden"), None);
    }
}
