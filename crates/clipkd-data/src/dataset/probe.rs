//! A quick check of the data before training: read and decode a few samples, without a loader.

use std::fmt;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::AtomicBool;

use super::webdataset::read_shard;
use super::{DataSource, SampleRef, SkipReason, SkipReport, Skipped, load_image};
use crate::image::ImageTransform;

/// What [`DataSource::probe`] found: how many samples it checked, how many were usable, and
/// why the others were not.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProbeReport {
    /// Samples checked (for a webdataset, a shard that is empty or cannot be read counts as
    /// one).
    pub checked: usize,
    /// Samples whose image was read, decoded and transformed.
    pub usable: usize,
    /// The others, by reason, with the first few as examples.
    pub skipped: SkipReport,
}

impl ProbeReport {
    /// Whether samples were checked and none of them was usable (a wrong data root, say).
    pub fn none_usable(&self) -> bool {
        self.checked > 0 && self.usable == 0
    }

    fn check(&mut self, sample: Result<SampleRef, Skipped>, transform: &ImageTransform) {
        self.checked += 1;
        let outcome = sample.and_then(|s| {
            let img = load_image(&s.image, &s.key)?;
            // A decoder or transform bug must not stop the probe: report it as the loader does.
            catch_unwind(AssertUnwindSafe(|| drop(transform.eval(&img)))).map_err(|payload| {
                Skipped {
                    reason: SkipReason::Panic,
                    key: s.key.clone(),
                    message: payload
                        .downcast_ref::<&str>()
                        .map(|m| m.to_string())
                        .or_else(|| payload.downcast_ref::<String>().cloned())
                        .unwrap_or_else(|| "a panic without a message".into()),
                }
            })
        });
        match outcome {
            Ok(()) => self.usable += 1,
            Err(skipped) => self.skipped.record(&skipped),
        }
    }
}

impl fmt::Display for ProbeReport {
    /// `2 of 8 probed samples usable; 6 skipped (missing_file: 6)`, then the examples.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} of {} probed samples usable; {}",
            self.usable, self.checked, self.skipped
        )
    }
}

impl DataSource {
    /// Reads, decodes and eval-transforms up to `n` samples, on this thread and without a
    /// loader, to tell before training whether the data is usable at all (a typo in a data
    /// root makes every image missing). An indexed dataset is probed at `n` indices spread
    /// evenly over it (`i * len / n`; every sample when `n >= len`); a webdataset at its first
    /// `n` samples, shards in the given order, a shard that is empty or cannot be read
    /// counting as one sample (so at most `n` shards are opened, and nothing more is read once
    /// `n` samples are found). Skips are not logged: the report has them.
    pub fn probe(&self, n: usize, transform: &ImageTransform) -> ProbeReport {
        let mut report = ProbeReport::default();
        match self {
            DataSource::Indexed(ds) => {
                let len = ds.len();
                let k = n.min(len);
                for i in 0..k {
                    let index = (i as u128 * len as u128 / k as u128) as usize;
                    report.check(Ok(ds.sample(index)), transform);
                }
            }
            DataSource::WebDataset(ds) => {
                let stop = AtomicBool::new(false);
                for (shard_id, path) in ds.shards().iter().enumerate() {
                    if report.checked >= n {
                        break;
                    }
                    read_shard(path, ds.id_base() + shard_id, 0, &stop, &mut |_, sample| {
                        report.check(sample, transform);
                        report.checked < n
                    });
                }
            }
        }
        report
    }
}
