//! The coordinator: hands samples to workers in sequence order, resolves their results in that
//! order, and assembles batches.
//!
//! # The slot layout
//! Samples are numbered by their position `k` in the epoch's sequence. Batch `X` has an anchor
//! `a_X`: the start of the previous batch plus `batch_size` (a deterministic prediction of its
//! start, made when the previous batch became the one being filled). At most two batches are
//! open: the *current* one (being completed) and the next. A sample `k` inside an open
//! batch's range `a_X..a_X + n` is written straight into row `k - a_X` of that batch's buffer;
//! other samples (replacements for skipped ones, or samples handed out before their batch
//! opened) go to a scratch buffer.
//!
//! Results are resolved strictly in sequence order, each into the current batch: a sample in
//! the current batch's range takes its own row (always free: only samples past the range fill
//! other rows, and they come later); any other takes the lowest free row. Pixels are copied
//! only when a sample is not already stored in its final row. The layout therefore depends on
//! the sequence of skipped samples and the anchors alone, not on which thread finished first.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;

use crossbeam_channel::{Receiver, Sender};

use super::buffer::SharedImages;
use super::split::PartOrder;
use super::worker::{self, Dest, Done, Job, Prepared, WorkerContext};
use super::{Batch, DataLoader, DataPosition, Msg};
use crate::DataError;
use crate::dataset::order::{Order, Purpose};
use crate::dataset::{
    DataSource, IndexedDataset, ReaderConfig, ReaderMsg, SampleRef, SkipReport, Skipped,
    StreamCursor, spawn_reader, warn_skipped,
};

/// Starts the threads of one epoch from `position`: the coordinator (returned), the workers
/// and, for webdatasets, the reader.
pub(super) fn start(
    loader: &DataLoader,
    position: &DataPosition,
    stop: Arc<AtomicBool>,
) -> Result<(Receiver<Msg>, JoinHandle<()>), DataError> {
    let cfg = &loader.config;
    let spawn_err = |e: std::io::Error| DataError::LoaderFailed {
        what: format!("cannot start a loader thread: {e}"),
    };
    let mut reader = None;
    let source = match &loader.source {
        DataSource::Indexed(ds) => Source::Indexed {
            order: PartOrder::new(
                Order::new(
                    ds.len() as u64,
                    cfg.shuffle,
                    cfg.seed,
                    Purpose::EpochOrder,
                    position.epoch,
                ),
                cfg.split,
                cfg.batch_size,
            ),
            dataset: ds.clone(),
            next: position.sample,
        },
        DataSource::WebDataset(ds) => {
            let (rx, handle) = spawn_reader(
                ds.clone(),
                ReaderConfig {
                    epoch: position.epoch,
                    seed: cfg.seed,
                    shuffle: cfg.shuffle,
                    block_size: cfg.shuffle_buffer,
                    start: position.stream.unwrap_or_default(),
                    split: cfg.split,
                },
                stop.clone(),
            )
            .map_err(spawn_err)?;
            reader = Some(handle);
            Source::Stream { rx, ended: false }
        }
    };
    let workers = cfg.resolved_workers();
    let ctx = Arc::new(WorkerContext {
        transform: loader.transform.clone(),
        tokenizer: loader.tokenizer.clone(),
        mode: cfg.mode,
        seed: cfg.seed,
        epoch: position.epoch,
        context_length: cfg.context_length,
        pool: cfg.pool,
    });
    let (job_tx, job_rx) = crossbeam_channel::unbounded::<Job>();
    let (done_tx, done_rx) = crossbeam_channel::unbounded::<Done>();
    let mut worker_handles = Vec::with_capacity(workers);
    for i in 0..workers {
        let (ctx, jobs, done, halt) = (ctx.clone(), job_rx.clone(), done_tx.clone(), stop.clone());
        let h = std::thread::Builder::new()
            .name(format!("clipkd-loader-{i}"))
            .spawn(move || worker::run(&ctx, &jobs, &done, &halt))
            .map_err(|e| {
                stop.store(true, Ordering::Relaxed);
                spawn_err(e)
            });
        match h {
            Ok(h) => worker_handles.push(h),
            Err(e) => {
                drop(job_tx);
                for h in worker_handles {
                    let _ = h.join();
                }
                return Err(e);
            }
        }
    }
    drop((job_rx, done_tx));
    let (out_tx, out_rx) = crossbeam_channel::bounded(cfg.prefetch);
    let n = cfg.batch_size;
    let slot_len = loader.transform.output_len();
    let image_shape = loader.transform.output_shape();
    let mut coord = Coordinator {
        n,
        slot_len,
        image_shape,
        context_length: cfg.context_length,
        drop_last: cfg.drop_last,
        epoch: position.epoch,
        min_in_flight: 2 * workers as u64,
        source,
        jobs: Some(job_tx),
        done_rx,
        out: out_tx,
        stop: stop.clone(),
        frontier: position.sample,
        resolved: position.sample,
        pending: VecDeque::new(),
        open: VecDeque::new(),
        epoch_skips: SkipReport::from_counts(position.skipped.clone()),
        source_done: false,
        scratch_pool: Vec::new(),
        last_cursor: position.stream,
    };
    coord.open_batch(position.batch, position.anchor);
    coord.open_batch(position.batch + 1, position.sample + n as u64);
    let handle = std::thread::Builder::new()
        .name("clipkd-loader".into())
        .spawn(move || {
            coord.run();
            // Workers see the closed job channel (or `stop`) and end after their current
            // sample; the reader ends when its channel is dropped with `coord`.
            drop(coord);
            for h in worker_handles {
                let _ = h.join();
            }
            if let Some(h) = reader {
                let _ = h.join();
            }
        });
    match handle {
        Ok(h) => Ok((out_rx, h)),
        Err(e) => {
            stop.store(true, Ordering::Relaxed);
            Err(spawn_err(e))
        }
    }
}

/// The epoch's sequence of samples.
enum Source {
    /// An indexed dataset in a (permuted) order, or this loader's part of it.
    Indexed {
        dataset: Arc<dyn IndexedDataset>,
        order: PartOrder,
        next: u64,
    },
    /// A webdataset reader thread.
    Stream {
        rx: Receiver<ReaderMsg>,
        ended: bool,
    },
}

/// The next sample of a [`Source`].
enum Next {
    /// A sample (or a skipped one) and, for streams, the cursor after it.
    Item(Result<SampleRef, Skipped>, Option<StreamCursor>),
    End,
    /// Nothing yet (the reader is reading).
    NotYet,
    /// The reader thread stopped without finishing the epoch.
    Broken,
}

impl Source {
    /// The next sample without waiting for the reader.
    fn try_next(&mut self) -> Next {
        match self {
            Source::Indexed {
                dataset,
                order,
                next,
            } => {
                if *next >= order.len() {
                    return Next::End;
                }
                let sample = dataset.sample(order.get(*next) as usize);
                *next += 1;
                Next::Item(Ok(sample), None)
            }
            Source::Stream { rx, ended } => {
                if *ended {
                    return Next::End;
                }
                match rx.try_recv() {
                    Ok(msg) => Self::accept(ended, Ok(msg)),
                    Err(crossbeam_channel::TryRecvError::Empty) => Next::NotYet,
                    Err(crossbeam_channel::TryRecvError::Disconnected) => Next::Broken,
                }
            }
        }
    }

    /// The reader's channel, for waiting on it (streams that have not ended).
    fn waitable(&self) -> Option<Receiver<ReaderMsg>> {
        match self {
            Source::Stream { rx, ended: false } => Some(rx.clone()),
            _ => None,
        }
    }

    /// A message received from the reader.
    fn accept(ended: &mut bool, msg: Result<ReaderMsg, crossbeam_channel::RecvError>) -> Next {
        match msg {
            Ok(ReaderMsg::Item { cursor, sample }) => Next::Item(sample, Some(cursor)),
            Ok(ReaderMsg::End) => {
                *ended = true;
                Next::End
            }
            Err(_) => Next::Broken,
        }
    }
}

/// Where a handed-out sample's pixels are being written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Storage {
    /// Row `slot` of open batch `batch`.
    Slot { batch: u64, slot: usize },
    /// A scratch buffer (returned with the result).
    Scratch,
    /// Nowhere: the sample was skipped before any work (a webdataset sample without caption).
    Nowhere,
}

/// A sample handed out and not yet resolved.
struct Pending {
    storage: Storage,
    /// Webdataset: the reader cursor after this sample.
    cursor: Option<StreamCursor>,
    outcome: Option<Result<Prepared, Skipped>>,
    scratch: Option<Vec<f32>>,
}

/// A batch being filled.
struct OpenBatch {
    index: u64,
    anchor: u64,
    images: Arc<SharedImages>,
    rows: Vec<Option<Prepared>>,
    filled: usize,
    skipped: SkipReport,
}

/// What the coordinator waited for.
enum Event {
    Done(Result<Done, crossbeam_channel::RecvError>),
    Source(Result<ReaderMsg, crossbeam_channel::RecvError>),
}

/// Why the coordinator stops early.
enum Halt {
    /// The consumer is gone (or asked to stop).
    Stopped,
    /// Something is broken; tell the consumer.
    Failed(String),
}

struct Coordinator {
    n: usize,
    slot_len: usize,
    image_shape: [usize; 3],
    context_length: usize,
    drop_last: bool,
    epoch: u64,
    /// Samples kept in flight even beyond the open batches (keeps every worker busy with
    /// small batches or many skipped samples).
    min_in_flight: u64,
    source: Source,
    jobs: Option<Sender<Job>>,
    done_rx: Receiver<Done>,
    out: Sender<Msg>,
    stop: Arc<AtomicBool>,
    /// The next sample to hand out.
    frontier: u64,
    /// Samples before this one are resolved.
    resolved: u64,
    /// Samples `resolved..frontier`.
    pending: VecDeque<Pending>,
    /// The current batch, then the next.
    open: VecDeque<OpenBatch>,
    epoch_skips: SkipReport,
    source_done: bool,
    scratch_pool: Vec<Vec<f32>>,
    /// Webdataset: the reader cursor after the last resolved sample.
    last_cursor: Option<StreamCursor>,
}

impl Coordinator {
    fn run(&mut self) {
        match self.run_inner() {
            Ok(()) | Err(Halt::Stopped) => {}
            Err(Halt::Failed(what)) => {
                let _ = self.out.send(Msg::Failed(what));
            }
        }
        // Close the job channel so that idle workers end.
        self.jobs = None;
    }

    fn run_inner(&mut self) -> Result<(), Halt> {
        loop {
            if self.stop.load(Ordering::Relaxed) {
                return Err(Halt::Stopped);
            }
            self.hand_out()?;
            self.resolve_ready()?;
            if self.resolved == self.frontier && self.source_done {
                return self.finish();
            }
            // Wait for a worker's result and, when more samples may be handed out, for the
            // reader: a batch can complete while the reader is busy with a shuffle block.
            let waiting_results = self.frontier > self.resolved;
            let reader = if self.can_hand_out() {
                self.source.waitable()
            } else {
                None
            };
            let event = match (waiting_results, &reader) {
                (true, None) => Event::Done(self.done_rx.recv()),
                (false, Some(rx)) => Event::Source(rx.recv()),
                (true, Some(rx)) => crossbeam_channel::select! {
                    recv(self.done_rx) -> d => Event::Done(d),
                    recv(rx) -> m => Event::Source(m),
                },
                (false, None) => continue,
            };
            match event {
                Event::Done(done) => {
                    let done =
                        done.map_err(|_| Halt::Failed("every loader worker stopped".into()))?;
                    self.store(done);
                    // Take whatever else has arrived without blocking.
                    while let Ok(done) = self.done_rx.try_recv() {
                        self.store(done);
                    }
                }
                Event::Source(msg) => {
                    let Source::Stream { ended, .. } = &mut self.source else {
                        unreachable!("only streams are waited on");
                    };
                    let next = Source::accept(ended, msg);
                    self.take(next)?;
                }
            }
        }
    }

    fn open_batch(&mut self, index: u64, anchor: u64) {
        self.open.push_back(OpenBatch {
            index,
            anchor,
            images: Arc::new(SharedImages::new(self.n, self.slot_len)),
            rows: (0..self.n).map(|_| None).collect(),
            filled: 0,
            skipped: SkipReport::default(),
        });
    }

    fn can_hand_out(&self) -> bool {
        if self.source_done {
            return false;
        }
        let last = self.open.back().expect("two batches are open");
        self.frontier < last.anchor + self.n as u64
            || self.frontier - self.resolved < self.min_in_flight
    }

    /// Hands out samples while allowed and available without waiting.
    fn hand_out(&mut self) -> Result<(), Halt> {
        while self.can_hand_out() {
            let next = self.source.try_next();
            if matches!(next, Next::NotYet) {
                break;
            }
            self.take(next)?;
        }
        Ok(())
    }

    /// Acts on the source's next sample.
    fn take(&mut self, next: Next) -> Result<(), Halt> {
        match next {
            Next::Item(sample, cursor) => self.hand_out_one(sample, cursor),
            Next::End => {
                self.source_done = true;
                Ok(())
            }
            Next::NotYet => Ok(()),
            Next::Broken => {
                if self.stop.load(Ordering::Relaxed) {
                    Err(Halt::Stopped)
                } else {
                    Err(Halt::Failed(
                        "the webdataset reader thread stopped before the end of the epoch".into(),
                    ))
                }
            }
        }
    }

    fn hand_out_one(
        &mut self,
        sample: Result<SampleRef, Skipped>,
        cursor: Option<StreamCursor>,
    ) -> Result<(), Halt> {
        let k = self.frontier;
        self.frontier += 1;
        let sample = match sample {
            Ok(s) => s,
            Err(skipped) => {
                self.pending.push_back(Pending {
                    storage: Storage::Nowhere,
                    cursor,
                    outcome: Some(Err(skipped)),
                    scratch: None,
                });
                return Ok(());
            }
        };
        let n = self.n as u64;
        let (storage, dest) = match self.open.iter().find(|b| b.anchor <= k && k < b.anchor + n) {
            Some(b) => {
                let slot = (k - b.anchor) as usize;
                (
                    Storage::Slot {
                        batch: b.index,
                        slot,
                    },
                    Dest::Slot(b.images.clone(), slot),
                )
            }
            None => {
                let buf = self
                    .scratch_pool
                    .pop()
                    .unwrap_or_else(|| vec![0.0; self.slot_len]);
                (Storage::Scratch, Dest::Scratch(buf))
            }
        };
        self.pending.push_back(Pending {
            storage,
            cursor,
            outcome: None,
            scratch: None,
        });
        let job = Job {
            ordinal: k,
            sample,
            dest,
        };
        self.jobs
            .as_ref()
            .expect("the job channel is open while running")
            .send(job)
            .map_err(|_| Halt::Failed("every loader worker stopped".into()))
    }

    fn store(&mut self, done: Done) {
        let i = (done.ordinal - self.resolved) as usize;
        let p = &mut self.pending[i];
        p.outcome = Some(done.outcome);
        p.scratch = done.scratch;
    }

    /// Resolves results in sequence order while the next one is there.
    fn resolve_ready(&mut self) -> Result<(), Halt> {
        while self.pending.front().is_some_and(|p| p.outcome.is_some()) {
            let p = self.pending.pop_front().expect("checked");
            let k = self.resolved;
            self.resolved += 1;
            self.resolve(k, p)?;
        }
        Ok(())
    }

    fn resolve(&mut self, k: u64, mut p: Pending) -> Result<(), Halt> {
        if p.cursor.is_some() {
            self.last_cursor = p.cursor;
        }
        let outcome = p.outcome.take().expect("resolved samples have an outcome");
        let prepared = match outcome {
            Ok(prep) => prep,
            Err(skipped) => {
                self.epoch_skips.record(&skipped);
                warn_skipped(&skipped, self.epoch_skips.count(skipped.reason));
                self.open[0].skipped.record(&skipped);
                if let Some(buf) = p.scratch.take() {
                    self.scratch_pool.push(buf);
                }
                return Ok(());
            }
        };
        let n = self.n as u64;
        let cur = &self.open[0];
        let row = if cur.anchor <= k && k < cur.anchor + n {
            (k - cur.anchor) as usize
        } else {
            cur.rows
                .iter()
                .position(Option::is_none)
                .expect("an incomplete batch has a free row")
        };
        debug_assert!(
            cur.rows[row].is_none(),
            "row {row} of batch {} taken",
            cur.index
        );
        match p.storage {
            Storage::Slot { batch, slot } if batch == cur.index && slot == row => {}
            Storage::Slot { batch, slot } => {
                let src = self
                    .open
                    .iter()
                    .find(|b| b.index == batch)
                    .expect("a batch holding an unresolved sample is open");
                // SAFETY: the source row's job has reported back, and the destination row's
                // own sample (if any) is resolved: nobody else touches either row.
                unsafe { cur.images.copy_slot_from(row, &src.images, slot) };
            }
            Storage::Scratch => {
                let buf = p
                    .scratch
                    .take()
                    .expect("scratch results carry their buffer");
                // SAFETY: as above; the destination row is not being written by any job.
                unsafe { cur.images.write_slot(row, &buf) };
                self.scratch_pool.push(buf);
            }
            Storage::Nowhere => unreachable!("samples without storage are skipped ones"),
        }
        let cur = &mut self.open[0];
        cur.rows[row] = Some(prepared);
        cur.filled += 1;
        if cur.filled == self.n {
            self.complete(k + 1)?;
        }
        Ok(())
    }

    /// The current batch is full and the next batch starts at sample `next`: send it, and
    /// open the one after the next.
    fn complete(&mut self, next: u64) -> Result<(), Halt> {
        let batch = self.open.pop_front().expect("a current batch");
        let following = self.open.front().expect("the next batch is open");
        let position = DataPosition {
            epoch: self.epoch,
            batch: batch.index + 1,
            sample: next,
            anchor: following.anchor,
            stream: self.last_cursor,
            skipped: self.epoch_skips.counts.clone(),
        };
        let new_index = following.index + 1;
        self.open_batch(new_index, next + self.n as u64);
        let rows = self.n;
        let msg = self.assemble(batch, rows, position);
        self.out
            .send(Msg::Batch(Box::new(msg)))
            .map_err(|_| Halt::Stopped)
    }

    /// The end of the sequence: yield or drop what the current batch holds.
    fn finish(&mut self) -> Result<(), Halt> {
        let mut batch = self.open.pop_front().expect("a current batch");
        self.open.clear();
        let filled = batch.filled;
        if filled == 0 || self.drop_last {
            return self
                .out
                .send(Msg::End {
                    skipped: batch.skipped,
                    dropped: filled,
                })
                .map_err(|_| Halt::Stopped);
        }
        // Move the rows up to the front, in row order.
        let mut rows: Vec<Option<Prepared>> = (0..self.n).map(|_| None).collect();
        let mut to = 0;
        for from in 0..self.n {
            if let Some(prep) = batch.rows[from].take() {
                if from != to {
                    let img = &batch.images;
                    // SAFETY: every job is resolved; `to < from`, distinct rows.
                    unsafe {
                        std::ptr::copy_nonoverlapping(
                            img.slot_ptr(from),
                            img.slot_ptr(to),
                            img.slot_len(),
                        )
                    };
                }
                rows[to] = Some(prep);
                to += 1;
            }
        }
        batch.rows = rows;
        let position = DataPosition {
            epoch: self.epoch,
            batch: batch.index + 1,
            sample: self.frontier,
            anchor: self.frontier,
            stream: self.last_cursor,
            skipped: self.epoch_skips.counts.clone(),
        };
        let msg = self.assemble(batch, filled, position);
        self.out
            .send(Msg::Batch(Box::new(msg)))
            .map_err(|_| Halt::Stopped)?;
        self.out
            .send(Msg::End {
                skipped: SkipReport::default(),
                dropped: 0,
            })
            .map_err(|_| Halt::Stopped)
    }

    /// The [`Batch`] of the first `len` rows of a finished batch.
    fn assemble(&self, batch: OpenBatch, len: usize, position: DataPosition) -> Batch {
        let OpenBatch {
            index,
            images,
            rows,
            skipped,
            ..
        } = batch;
        let images = Arc::try_unwrap(images)
            .unwrap_or_else(|_| panic!("batch {index}: a worker still holds its buffer"))
            .into_vec(len);
        let mut tokens = Vec::new();
        let mut text_image = Vec::new();
        let mut ids = Vec::with_capacity(len);
        let mut keys = Vec::with_capacity(len);
        let mut labels = Vec::with_capacity(len);
        let mut augmentations = Vec::with_capacity(len);
        let mut captions = Vec::with_capacity(len);
        for (i, row) in rows.into_iter().take(len).enumerate() {
            let prep = row.expect("the first `len` rows of a finished batch are filled");
            tokens.extend_from_slice(&prep.tokens);
            text_image.extend(std::iter::repeat_n(i, prep.captions.len()));
            ids.push(prep.id);
            keys.push(prep.key);
            labels.push(prep.label);
            augmentations.extend(prep.augmentation);
            captions.extend(prep.captions);
        }
        let labels = labels
            .iter()
            .all(Option::is_some)
            .then(|| labels.into_iter().map(|l| l.expect("all some")).collect());
        Batch {
            images,
            image_shape: self.image_shape,
            tokens,
            context_length: self.context_length,
            text_image,
            captions,
            labels,
            ids,
            keys,
            augmentations,
            epoch: self.epoch,
            index,
            skipped,
            position,
        }
    }
}
