//! Seeded orders: every random choice of the data pipeline comes from a ChaCha8 stream keyed by
//! `(seed, purpose, a, b)`, and permutations use our own Fisher–Yates with unbiased bounded
//! integers. ChaCha8's output is fixed by its specification and neither of these depends on
//! `rand`'s version, so a seed gives the same epochs, crops and batches on every release and
//! platform.

use rand::RngCore;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

/// What a random stream is for (part of its key, so that streams never overlap).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u64)]
pub(crate) enum Purpose {
    /// The epoch permutation of an indexed dataset: `(epoch, 0)`.
    EpochOrder = 1,
    /// The epoch's shard order of a webdataset: `(epoch, 0)`.
    ShardOrder = 2,
    /// A webdataset shuffle block: `(epoch, block)`.
    ShuffleBlock = 3,
    /// A sample's augmentation: `(epoch, sample id)`; with an augmentation pool, `(k, sample
    /// id)` for crop `k` of the pool.
    Augment = 4,
    /// Which crop of an augmentation pool a sample takes: `(epoch, sample id)`.
    PoolChoice = 5,
}

/// SplitMix64's finalizer: a bijective mixer of 64-bit words.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The ChaCha8 stream for `(seed, purpose, a, b)`: the 256-bit key is the four words, each
/// mixed with a different constant.
pub(crate) fn rng_for(seed: u64, purpose: Purpose, a: u64, b: u64) -> ChaCha8Rng {
    let words = [
        mix(seed ^ 0x9e37_79b9_7f4a_7c15),
        mix(purpose as u64 ^ 0xd1b5_4a32_d192_ed03),
        mix(a ^ 0x8cb9_2ba7_2f3d_8dd7),
        mix(b ^ 0xa076_1d64_78bd_642f),
    ];
    let mut key = [0u8; 32];
    for (chunk, w) in key.chunks_exact_mut(8).zip(words) {
        chunk.copy_from_slice(&w.to_le_bytes());
    }
    ChaCha8Rng::from_seed(key)
}

/// A uniform integer in `0..n` (`n > 0`): Lemire's multiply-and-reject, unbiased.
pub(crate) fn below(rng: &mut impl RngCore, n: u64) -> u64 {
    debug_assert!(n > 0);
    let threshold = n.wrapping_neg() % n;
    loop {
        let m = u128::from(rng.next_u64()) * u128::from(n);
        if (m as u64) >= threshold {
            return (m >> 64) as u64;
        }
    }
}

/// Fisher–Yates shuffle (from the last element down, as `random.shuffle`).
pub(crate) fn shuffle<T>(items: &mut [T], rng: &mut impl RngCore) {
    for i in (1..items.len()).rev() {
        let j = below(rng, i as u64 + 1) as usize;
        items.swap(i, j);
    }
}

/// The order of an epoch over `len` items: identity, or a seeded permutation. Held as `u32`
/// while the indices fit (half the memory for datasets under 4 billion samples).
#[derive(Debug, Clone)]
pub(crate) enum Order {
    /// `0, 1, 2, ...`.
    Identity(u64),
    /// A permutation of `0..len` in 32-bit indices.
    Small(Vec<u32>),
    /// A permutation of `0..len` in 64-bit indices.
    Large(Vec<u64>),
}

impl Order {
    /// The order of epoch `epoch`: a permutation keyed by `(seed, purpose, epoch)` when
    /// `shuffled`, else the identity.
    pub(crate) fn new(len: u64, shuffled: bool, seed: u64, purpose: Purpose, epoch: u64) -> Self {
        if !shuffled {
            return Order::Identity(len);
        }
        let mut rng = rng_for(seed, purpose, epoch, 0);
        if len <= u64::from(u32::MAX) + 1 {
            let mut v: Vec<u32> = (0..len).map(|i| i as u32).collect();
            shuffle(&mut v, &mut rng);
            Order::Small(v)
        } else {
            let mut v: Vec<u64> = (0..len).collect();
            shuffle(&mut v, &mut rng);
            Order::Large(v)
        }
    }

    /// Number of items.
    pub(crate) fn len(&self) -> u64 {
        match self {
            Order::Identity(n) => *n,
            Order::Small(v) => v.len() as u64,
            Order::Large(v) => v.len() as u64,
        }
    }

    /// The item at position `i` of the epoch.
    pub(crate) fn get(&self, i: u64) -> u64 {
        match self {
            Order::Identity(_) => i,
            Order::Small(v) => u64::from(v[i as usize]),
            Order::Large(v) => v[i as usize],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streams_are_reproducible_and_distinct() {
        let a = rng_for(0, Purpose::Augment, 1, 2).next_u64();
        assert_eq!(a, rng_for(0, Purpose::Augment, 1, 2).next_u64());
        assert_ne!(a, rng_for(0, Purpose::Augment, 2, 1).next_u64());
        assert_ne!(a, rng_for(1, Purpose::Augment, 1, 2).next_u64());
        assert_ne!(a, rng_for(0, Purpose::EpochOrder, 1, 2).next_u64());
    }

    #[test]
    fn permutation_is_a_permutation_and_changes_per_epoch() {
        let e0 = Order::new(1000, true, 7, Purpose::EpochOrder, 0);
        let e1 = Order::new(1000, true, 7, Purpose::EpochOrder, 1);
        let mut seen = vec![false; 1000];
        for i in 0..1000 {
            seen[e0.get(i) as usize] = true;
        }
        assert!(seen.iter().all(|&s| s));
        let same = (0..1000).filter(|&i| e0.get(i) == e1.get(i)).count();
        assert!(same < 20, "{same} fixed points between epochs");
        let id = Order::new(5, false, 7, Purpose::EpochOrder, 0);
        assert_eq!(
            (0..5).map(|i| id.get(i)).collect::<Vec<_>>(),
            [0, 1, 2, 3, 4]
        );
    }

    #[test]
    fn below_is_roughly_uniform() {
        let mut rng = rng_for(3, Purpose::Augment, 0, 0);
        let mut hist = [0u32; 3];
        for _ in 0..30_000 {
            hist[below(&mut rng, 3) as usize] += 1;
        }
        for h in hist {
            assert!((9_400..10_600).contains(&h), "{hist:?}");
        }
    }
}
