//! Loader workers: read, decode, transform and tokenize one sample at a time.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use crossbeam_channel::{Receiver, Sender};

use super::buffer::SharedImages;
use super::{AugmentationPool, Mode};
use crate::dataset::order::{Purpose, rng_for};
use crate::dataset::{SampleRef, SkipReason, Skipped, load_image};
use crate::image::{CropBox, DecodedImage, ImageTransform};
use crate::tokenizer::Tokenizer;

/// What every worker of an epoch shares.
pub(crate) struct WorkerContext {
    pub transform: ImageTransform,
    pub tokenizer: Tokenizer,
    pub mode: Mode,
    pub seed: u64,
    pub epoch: u64,
    pub context_length: usize,
    pub pool: Option<AugmentationPool>,
}

/// Where a job writes its image.
pub(crate) enum Dest {
    /// A slot of a batch buffer (in place).
    Slot(Arc<SharedImages>, usize),
    /// A buffer of its own, handed back with the result.
    Scratch(Vec<f32>),
}

/// One sample to prepare.
pub(crate) struct Job {
    pub ordinal: u64,
    pub sample: SampleRef,
    pub dest: Dest,
}

/// A prepared sample, without its pixels (they are in the job's destination).
#[derive(Debug)]
pub(crate) struct Prepared {
    pub id: u64,
    pub key: String,
    pub label: Option<usize>,
    /// `captions.len() * context_length` token ids.
    pub tokens: Vec<u32>,
    /// The captions, as read.
    pub captions: Vec<String>,
    /// Train mode: the augmentation the sample was cropped with and the box.
    pub augmentation: Option<(u64, CropBox)>,
}

/// A job's result.
pub(crate) struct Done {
    pub ordinal: u64,
    pub outcome: Result<Prepared, Skipped>,
    /// The scratch buffer, for [`Dest::Scratch`] jobs.
    pub scratch: Option<Vec<f32>>,
}

/// The worker loop, until the job channel closes. Once `stop` is set, jobs are answered
/// without being done.
pub(crate) fn run(
    ctx: &WorkerContext,
    jobs: &Receiver<Job>,
    done: &Sender<Done>,
    stop: &AtomicBool,
) {
    while let Ok(job) = jobs.recv() {
        let Job {
            ordinal,
            sample,
            dest,
        } = job;
        let key = sample.key.clone();
        // Every job is answered, even when stopping (the coordinator may be waiting for it).
        let (outcome, scratch) = match dest {
            _ if stop.load(Ordering::Relaxed) => {
                let outcome = Err(Skipped {
                    reason: SkipReason::UnreadableFile,
                    key,
                    message: "not read: the loader is stopping".into(),
                });
                let scratch = match dest {
                    Dest::Scratch(v) => Some(v),
                    Dest::Slot(..) => None,
                };
                (outcome, scratch)
            }
            Dest::Slot(buf, slot) => {
                let outcome = guarded(&key, || {
                    // SAFETY: the coordinator gave this slot to this job only, and reads it
                    // only after the `Done` below.
                    unsafe { buf.with_slot(slot, |out| prepare(ctx, sample, out)) }
                });
                // Release the buffer before reporting, so that the coordinator can take sole
                // ownership of a finished batch.
                drop(buf);
                (outcome, None)
            }
            Dest::Scratch(mut v) => {
                let outcome = guarded(&key, || prepare(ctx, sample, &mut v));
                (outcome, Some(v))
            }
        };
        if done
            .send(Done {
                ordinal,
                outcome,
                scratch,
            })
            .is_err()
        {
            return;
        }
    }
}

/// Runs `f`, turning a panic into a skipped sample.
fn guarded(key: &str, f: impl FnOnce() -> Result<Prepared, Skipped>) -> Result<Prepared, Skipped> {
    catch_unwind(AssertUnwindSafe(f)).unwrap_or_else(|payload| {
        let message = payload
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "a panic without a message".into());
        Err(Skipped {
            reason: SkipReason::Panic,
            key: key.to_string(),
            message,
        })
    })
}

/// Reads and decodes the image, writes its transform into `out`, tokenizes the captions.
pub(crate) fn prepare(
    ctx: &WorkerContext,
    sample: SampleRef,
    out: &mut [f32],
) -> Result<Prepared, Skipped> {
    let SampleRef {
        id,
        key,
        image,
        captions,
        label,
    } = sample;
    let img = load_image(&image, &key)?;
    let img: &DecodedImage = &img;
    let augmentation = match ctx.mode {
        Mode::Train => {
            let (seed, k) = match ctx.pool {
                None => (ctx.seed, ctx.epoch),
                Some(pool) => (pool.seed, pool.choose(ctx.seed, ctx.epoch, id)),
            };
            let mut rng = rng_for(seed, Purpose::Augment, k, id);
            Some((k, ctx.transform.train_into(img, &mut rng, out)))
        }
        Mode::Eval => {
            ctx.transform.eval_into(img, out);
            None
        }
    };
    // The loader config's validation rejects context_length 0, the tokenizer's only error.
    let tokens = ctx
        .tokenizer
        .tokenize_batch(&captions, ctx.context_length)
        .expect("the loader config has context_length >= 1");
    Ok(Prepared {
        id,
        key,
        label,
        tokens,
        captions,
        augmentation,
    })
}
