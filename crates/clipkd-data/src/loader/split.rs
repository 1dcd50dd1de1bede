//! One node's part of every epoch, when the nodes of a multi-machine run each read their own
//! data (see [`Split`]).

use serde::{Deserialize, Serialize};

use crate::DataError;
use crate::dataset::order::Order;

/// Which part of every epoch a loader reads when `parts` loaders share one dataset (the nodes
/// of a multi-machine run, each reading only its own samples): every part is configured with
/// the same seed and a batch size of `global / parts`.
///
/// - **Indexed data** (CSV, image folders, synthetic): the epoch's permutation is cut into
///   blocks of `global = batch_size * parts` samples, one per global batch, and part `p` reads
///   rows `p * batch_size .. (p + 1) * batch_size` of each block, then every `parts`-th sample
///   of the incomplete block at the end. Without skipped samples, batch `b` of part `p` is
///   exactly rows `p * batch_size ..` of the one-loader global batch `b`; a skipped sample is
///   replaced by the part's next sample (from its share of the following block), so with skips
///   the parts stay disjoint but the batches differ from one loader's.
/// - **Webdataset shards**: part `p` reads the shards at positions `p, p + parts, ...` of the
///   epoch's shuffled shard order (open_clip's `split_by_node` after its seeded shard shuffle),
///   through its own shuffle blocks.
///
/// In both, the parts read disjoint samples and every sample of an epoch belongs to exactly one
/// part; sample ids, and so the augmentations, are those of the whole dataset.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Split {
    /// This loader's part, `0..parts`.
    pub part: usize,
    /// The number of parts.
    pub parts: usize,
}

impl Default for Split {
    fn default() -> Self {
        Split::WHOLE
    }
}

impl Split {
    /// The whole dataset (one part).
    pub const WHOLE: Split = Split { part: 0, parts: 1 };

    /// Part `part` of `parts`. Errors: no part, or `part` out of range.
    pub fn new(part: usize, parts: usize) -> Result<Self, DataError> {
        if parts == 0 || part >= parts {
            return Err(DataError::InvalidLoader {
                field: "split",
                reason: format!("part {part} of {parts} does not exist"),
            });
        }
        Ok(Split { part, parts })
    }

    /// The positions of the epoch's shard order that this part reads, of `shards` in all.
    pub(crate) fn shard_positions(&self, shards: usize) -> Vec<usize> {
        (self.part..shards).step_by(self.parts).collect()
    }

    /// How many of `shards` shards this part reads.
    pub(crate) fn shard_count(&self, shards: usize) -> usize {
        shards.saturating_sub(self.part).div_ceil(self.parts)
    }
}

/// The sequence of an indexed epoch that a part reads: its rows of each global block of the
/// epoch's order, then its share of the incomplete last block (see [`Split`]).
#[derive(Debug, Clone)]
pub(crate) struct PartOrder {
    order: Order,
    split: Split,
    /// The part's batch size.
    batch: u64,
    /// Samples in the complete global blocks.
    full: u64,
    len: u64,
}

impl PartOrder {
    /// Part `split` of `order`, read in batches of `batch` samples.
    pub(crate) fn new(order: Order, split: Split, batch: usize) -> Self {
        let (parts, part, batch) = (split.parts as u64, split.part as u64, batch as u64);
        let total = order.len();
        let global = batch * parts;
        let full = total / global * global;
        let tail = total - full;
        let len = full / parts + tail.saturating_sub(part).div_ceil(parts);
        PartOrder {
            order,
            split,
            batch,
            full,
            len,
        }
    }

    /// Samples of the epoch this part reads.
    pub(crate) fn len(&self) -> u64 {
        self.len
    }

    /// The dataset index of the part's sample `j` (`j < len`).
    pub(crate) fn get(&self, j: u64) -> u64 {
        self.order.get(self.position(j))
    }

    /// The position in the epoch's order of the part's sample `j`.
    fn position(&self, j: u64) -> u64 {
        let (parts, part) = (self.split.parts as u64, self.split.part as u64);
        let in_blocks = self.full / parts;
        if j < in_blocks {
            let (block, row) = (j / self.batch, j % self.batch);
            block * self.batch * parts + part * self.batch + row
        } else {
            self.full + part + (j - in_blocks) * parts
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dataset::order::Purpose;

    #[test]
    fn parts_cover_the_epoch_once_in_global_batch_rows() {
        for (len, batch, parts) in [(23, 2, 3), (24, 2, 3), (5, 4, 2), (10, 1, 1), (17, 3, 2)] {
            let order = Order::new(len, true, 9, Purpose::EpochOrder, 1);
            let whole: Vec<u64> = (0..len).map(|i| order.get(i)).collect();
            let mut seen = vec![0u32; len as usize];
            let global = batch as u64 * parts as u64;
            for p in 0..parts {
                let part = PartOrder::new(order.clone(), Split::new(p, parts).unwrap(), batch);
                for j in 0..part.len() {
                    seen[part.get(j) as usize] += 1;
                }
                // Without skips, batch b of the part is rows p·batch.. of global batch b.
                for b in 0..len / global {
                    for r in 0..batch as u64 {
                        let j = b * batch as u64 + r;
                        let row = b * global + p as u64 * batch as u64 + r;
                        assert_eq!(part.get(j), whole[row as usize], "{len} {batch} {parts}");
                    }
                }
            }
            assert!(
                seen.iter().all(|&n| n == 1),
                "{len} {batch} {parts}: {seen:?}"
            );
        }
    }

    #[test]
    fn a_part_out_of_range_is_refused() {
        assert!(Split::new(2, 2).is_err());
        assert!(Split::new(0, 0).is_err());
        assert_eq!(Split::new(1, 3).unwrap().shard_positions(8), [1, 4, 7]);
        for (part, parts, shards) in [(0, 1, 5), (1, 3, 8), (2, 3, 2), (0, 4, 0)] {
            let split = Split::new(part, parts).unwrap();
            assert_eq!(
                split.shard_count(shards),
                split.shard_positions(shards).len()
            );
        }
    }
}
