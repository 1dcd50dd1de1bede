//! A finite pool of augmentations per sample (what a teacher cache stores).

use serde::{Deserialize, Serialize};

use crate::dataset::order::{Purpose, below, rng_for};

/// A finite pool of `size` crops per sample instead of a fresh crop every epoch: crop `k` of
/// sample `id` is the RandomResizedCrop drawn from `(seed, k, id)`, which is the crop the
/// loader without a pool draws in epoch `k` with this seed; each epoch a sample takes crop
/// `choose(run seed, epoch, id)` of its pool. A teacher cache stores the teacher's embeddings
/// of every crop of the pool, so that training can look up the crop a batch row was cut with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct AugmentationPool {
    /// Crops per sample (at least 1).
    pub size: u64,
    /// The seed the crops are drawn with (the cache's, which may differ from the run's seed).
    pub seed: u64,
}

impl AugmentationPool {
    /// `size` crops per sample drawn with `seed`.
    pub fn new(size: u64, seed: u64) -> Self {
        AugmentationPool { size, seed }
    }

    /// The crop of the pool that sample `id` takes in `epoch` of a run seeded `run_seed`.
    pub fn choose(&self, run_seed: u64, epoch: u64, id: u64) -> u64 {
        let mut rng = rng_for(run_seed, Purpose::PoolChoice, epoch, id);
        below(&mut rng, self.size.max(1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn choices_cover_the_pool_and_follow_the_seed() {
        let pool = AugmentationPool::new(4, 7);
        let mut seen = [0u32; 4];
        for id in 0..400 {
            let k = pool.choose(3, 1, id);
            assert_eq!(k, pool.choose(3, 1, id));
            seen[k as usize] += 1;
        }
        assert!(seen.iter().all(|&n| n > 60), "{seen:?}");
        let differ = (0..100)
            .filter(|&id| pool.choose(3, 1, id) != pool.choose(3, 2, id))
            .count();
        assert!(differ > 50, "epochs choose independently: {differ}");
    }
}
