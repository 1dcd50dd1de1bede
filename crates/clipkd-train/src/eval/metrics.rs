//! Ranking metrics on embeddings: top-k accuracy and recall@K, with similarities computed on
//! the device in row chunks and ranks counted on the host.
//!
//! # Ranking rule (ties)
//! Candidates are ordered by score, highest first; equal scores are ordered by candidate index,
//! lowest first (a stable sort of the scores). A NaN score ranks as `-inf`. The rank of a query
//! is the 0-based position of its best-placed positive candidate in that order:
//!
//! `rank(p) = #{j : s_j > s_p} + #{j < p : s_j == s_p}`, and `rank = min over positives p`.
//!
//! A query is a hit at `K` when `rank < K`, so top-k accuracy and recall@K are the fraction of
//! queries with `rank < K`; with `K` at least the number of candidates every query is a hit
//! (top-5 over 3 classes is top-3, i.e. 100%), where PyTorch's `topk` would raise.
//!
//! # Memory
//! [`ranks_of_positives`] uploads the key embeddings once (`keys × dim` floats) and multiplies
//! query chunks of `max(1, SIMILARITY_CHUNK_ELEMENTS / keys)` rows against them, so the device
//! holds at most [`SIMILARITY_CHUNK_ELEMENTS`] scores (64 MiB of f32) at a time, plus the chunk
//! read back to the host. 5,000 COCO images against 25,000 captions: 671-row chunks, 8 chunks.

use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};
use serde::{Deserialize, Serialize};

use crate::embed::HostEmbeddings;
use crate::error::TrainError;

/// The most similarity scores one chunk holds on the device (16 Mi scores, 64 MiB in f32).
pub const SIMILARITY_CHUNK_ELEMENTS: usize = 1 << 24;

/// The sort key of a score: NaN ranks as `-inf`.
fn key(score: f32) -> f32 {
    if score.is_nan() {
        f32::NEG_INFINITY
    } else {
        score
    }
}

/// The 0-based rank of the best-placed positive among `scores` (see the module's ranking rule:
/// score descending, then index ascending; NaN as `-inf`).
///
/// # Panics
/// If `positives` is empty or holds an index out of `scores`.
pub fn rank_of_first_positive(scores: &[f32], positives: &[usize]) -> usize {
    assert!(
        !positives.is_empty(),
        "rank_of_first_positive: a query needs at least one positive"
    );
    // The positive that comes first in the order: highest score, then lowest index.
    let mut best = positives[0];
    for &p in &positives[1..] {
        let (kp, kb) = (key(scores[p]), key(scores[best]));
        if kp > kb || (kp == kb && p < best) {
            best = p;
        }
    }
    let kb = key(scores[best]);
    let above = scores.iter().filter(|&&s| key(s) > kb).count();
    let tied_before = scores[..best].iter().filter(|&&s| key(s) == kb).count();
    above + tied_before
}

/// The fraction of queries whose rank is below `k` (top-k accuracy, recall@K). `NaN` for no
/// query.
pub fn recall_at_k(ranks: &[usize], k: usize) -> f64 {
    ranks.iter().filter(|&&r| r < k).count() as f64 / ranks.len() as f64
}

/// Retrieval metrics of one direction, from the ranks of the queries' first positives: what
/// open_clip's `get_metrics` (the CLIP-KD evaluation) and CLIP benchmark report.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct RankSummary {
    /// Fraction of queries with a positive in the top 1.
    #[serde(rename = "R@1")]
    pub r_at_1: f64,
    /// Fraction of queries with a positive in the top 5.
    #[serde(rename = "R@5")]
    pub r_at_5: f64,
    /// Fraction of queries with a positive in the top 10.
    #[serde(rename = "R@10")]
    pub r_at_10: f64,
    /// Mean 1-based rank of the first positive (open_clip: `preds.mean() + 1`).
    pub mean_rank: f64,
    /// Median 1-based rank of the first positive (open_clip: `floor(median(preds)) + 1`, the
    /// median of an even count being the mean of the two middle ranks).
    pub median_rank: f64,
}

impl RankSummary {
    /// The metrics of these 0-based ranks (NaN everywhere for no rank).
    pub fn from_ranks(ranks: &[usize]) -> Self {
        let n = ranks.len();
        let (mean_rank, median_rank) = if n == 0 {
            (f64::NAN, f64::NAN)
        } else {
            let mean = ranks.iter().map(|&r| r as f64).sum::<f64>() / n as f64;
            let mut sorted = ranks.to_vec();
            sorted.sort_unstable();
            let median = if n % 2 == 1 {
                sorted[n / 2] as f64
            } else {
                (sorted[n / 2 - 1] as f64 + sorted[n / 2] as f64) / 2.0
            };
            (mean + 1.0, median.floor() + 1.0)
        };
        RankSummary {
            r_at_1: recall_at_k(ranks, 1),
            r_at_5: recall_at_k(ranks, 5),
            r_at_10: recall_at_k(ranks, 10),
            mean_rank,
            median_rank,
        }
    }
}

/// Query-to-key positives in compressed rows: the positives of query `q` are
/// `indices[offsets[q]..offsets[q + 1]]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Positives {
    offsets: Vec<usize>,
    indices: Vec<usize>,
}

impl Positives {
    /// One positive per query: query `q`'s is `targets[q]` (a class label, a caption's image).
    pub fn one_each(targets: &[usize]) -> Self {
        Positives {
            offsets: (0..=targets.len()).collect(),
            indices: targets.to_vec(),
        }
    }

    /// The inverse of a many-to-one map: for `owner[t]` = the query that key `t` belongs to
    /// (a caption's image), query `q`'s positives are the keys it owns, in key order.
    /// `queries` is the number of queries (a query may own no key; ranking it then panics).
    pub fn grouped(owner: &[usize], queries: usize) -> Self {
        let mut counts = vec![0usize; queries + 1];
        for &q in owner {
            assert!(
                q < queries,
                "Positives::grouped: key owned by query {q} of {queries}"
            );
            counts[q + 1] += 1;
        }
        for q in 0..queries {
            counts[q + 1] += counts[q];
        }
        let offsets = counts;
        let mut fill = offsets.clone();
        let mut indices = vec![0; owner.len()];
        for (t, &q) in owner.iter().enumerate() {
            indices[fill[q]] = t;
            fill[q] += 1;
        }
        Positives { offsets, indices }
    }

    /// Number of queries.
    pub fn len(&self) -> usize {
        self.offsets.len() - 1
    }

    /// Whether there is no query.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The positives of query `q`.
    pub fn of(&self, q: usize) -> &[usize] {
        &self.indices[self.offsets[q]..self.offsets[q + 1]]
    }
}

/// A `[rows, dim]` tensor of rows `start..end` of host embeddings.
fn upload<B: Backend>(
    e: &HostEmbeddings,
    start: usize,
    end: usize,
    device: &B::Device,
) -> Tensor<B, 2> {
    Tensor::from_data(
        TensorData::new(
            e.data[start * e.dim..end * e.dim].to_vec(),
            [end - start, e.dim],
        ),
        device,
    )
}

/// Reads a score tensor back to the host as f32.
pub(crate) fn read_scores<B: Backend>(scores: Tensor<B, 2>) -> Result<Vec<f32>, TrainError> {
    scores
        .into_data()
        .convert::<f32>()
        .into_vec::<f32>()
        .map_err(|e| TrainError::Device(format!("reading similarity scores back: {e:?}")))
}

/// Ranks every row of a `[rows, cols]` score matrix (row-major) whose query indices start at
/// `first_query`, appending to `out`.
pub(crate) fn rank_rows(
    scores: &[f32],
    cols: usize,
    first_query: usize,
    positives: &Positives,
    out: &mut Vec<usize>,
) {
    for (i, row) in scores.chunks_exact(cols).enumerate() {
        out.push(rank_of_first_positive(row, positives.of(first_query + i)));
    }
}

/// For each query row, the 0-based rank of its best-placed positive among all keys, by dot
/// product (cosine similarity for normalized embeddings; a positive scale does not change
/// ranks). Scores are computed on `device` in chunks of at most [`SIMILARITY_CHUNK_ELEMENTS`]
/// and ranked on the host (see the module documentation for the tie rule and memory).
///
/// # Panics
/// If the embedding sizes differ, `positives` does not have one entry per query, a query has
/// no positive or a positive is not a key index.
pub fn ranks_of_positives<B: Backend>(
    queries: &HostEmbeddings,
    keys: &HostEmbeddings,
    positives: &Positives,
    device: &B::Device,
) -> Result<Vec<usize>, TrainError> {
    ranks_of_positives_chunked::<B>(queries, keys, positives, SIMILARITY_CHUNK_ELEMENTS, device)
}

/// [`ranks_of_positives`] with chunks of at most `max_chunk_elements` scores (at least one
/// query row per chunk). The ranks do not depend on the chunk size.
pub fn ranks_of_positives_chunked<B: Backend>(
    queries: &HostEmbeddings,
    keys: &HostEmbeddings,
    positives: &Positives,
    max_chunk_elements: usize,
    device: &B::Device,
) -> Result<Vec<usize>, TrainError> {
    assert_eq!(
        queries.dim, keys.dim,
        "ranks_of_positives: queries have dim {} but keys {}",
        queries.dim, keys.dim
    );
    assert_eq!(
        positives.len(),
        queries.rows,
        "ranks_of_positives: {} positive lists for {} queries",
        positives.len(),
        queries.rows
    );
    let mut ranks = Vec::with_capacity(queries.rows);
    if queries.rows == 0 {
        return Ok(ranks);
    }
    assert!(keys.rows > 0, "ranks_of_positives: no key to rank");
    let keys_t = upload::<B>(keys, 0, keys.rows, device).transpose();
    let chunk = (max_chunk_elements / keys.rows).max(1);
    let mut start = 0;
    while start < queries.rows {
        let end = (start + chunk).min(queries.rows);
        let scores = upload::<B>(queries, start, end, device).matmul(keys_t.clone());
        rank_rows(
            &read_scores(scores)?,
            keys.rows,
            start,
            positives,
            &mut ranks,
        );
        start = end;
    }
    Ok(ranks)
}

/// Ranks in both retrieval directions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetrievalRanks {
    /// Per image: the rank of its best-placed caption among all captions.
    pub image_to_text: Vec<usize>,
    /// Per caption: the rank of its image among all images.
    pub text_to_image: Vec<usize>,
}

/// Image-to-text and text-to-image ranks of normalized embeddings, with `text_image[t]` the
/// image of caption `t` (every image needs at least one caption). Each direction computes its
/// own score chunks (queries as rows), so every rank compares scores of one matrix product.
///
/// # Panics
/// As [`ranks_of_positives`]; if `text_image` does not have one entry per caption or names an
/// image out of range.
pub fn retrieval_ranks<B: Backend>(
    images: &HostEmbeddings,
    texts: &HostEmbeddings,
    text_image: &[usize],
    device: &B::Device,
) -> Result<RetrievalRanks, TrainError> {
    assert_eq!(
        text_image.len(),
        texts.rows,
        "retrieval_ranks: {} caption owners for {} captions",
        text_image.len(),
        texts.rows
    );
    let image_to_text = ranks_of_positives::<B>(
        images,
        texts,
        &Positives::grouped(text_image, images.rows),
        device,
    )?;
    let text_to_image =
        ranks_of_positives::<B>(texts, images, &Positives::one_each(text_image), device)?;
    Ok(RetrievalRanks {
        image_to_text,
        text_to_image,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rank_counts_higher_scores_then_earlier_ties() {
        let s = [0.1, 0.5, 0.3, 0.5, 0.2];
        assert_eq!(rank_of_first_positive(&s, &[1]), 0);
        assert_eq!(rank_of_first_positive(&s, &[3]), 1); // tie with index 1, which comes first
        assert_eq!(rank_of_first_positive(&s, &[2]), 2);
        assert_eq!(rank_of_first_positive(&s, &[0]), 4);
        assert_eq!(rank_of_first_positive(&s, &[0, 4, 2]), 2); // best of several
        assert_eq!(rank_of_first_positive(&s, &[3, 1]), 0);
    }

    #[test]
    fn nan_ranks_last() {
        let s = [f32::NAN, 0.2, -1.0];
        assert_eq!(rank_of_first_positive(&s, &[0]), 2);
        assert_eq!(rank_of_first_positive(&s, &[2]), 1);
        // All NaN: ties in index order.
        assert_eq!(rank_of_first_positive(&[f32::NAN; 3], &[2]), 2);
    }

    #[test]
    fn grouped_positives_invert_owners() {
        let p = Positives::grouped(&[1, 0, 1, 2, 0], 4);
        assert_eq!(p.len(), 4);
        assert_eq!(p.of(0), &[1, 4]);
        assert_eq!(p.of(1), &[0, 2]);
        assert_eq!(p.of(2), &[3]);
        assert!(p.of(3).is_empty());
        let q = Positives::one_each(&[2, 0]);
        assert_eq!((q.of(0), q.of(1)), (&[2][..], &[0][..]));
    }

    #[test]
    fn summary_follows_open_clip() {
        // preds = [0, 3, 12, 1]: R@1 1/4, R@5 3/4, R@10 3/4; mean 4 + 1; median floor(2) + 1.
        let s = RankSummary::from_ranks(&[0, 3, 12, 1]);
        assert_eq!((s.r_at_1, s.r_at_5, s.r_at_10), (0.25, 0.75, 0.75));
        assert_eq!((s.mean_rank, s.median_rank), (5.0, 3.0));
        let odd = RankSummary::from_ranks(&[4, 0, 9]);
        assert_eq!(odd.median_rank, 5.0);
        assert!(RankSummary::from_ranks(&[]).r_at_1.is_nan());
    }
}
