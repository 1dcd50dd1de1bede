//! Zero-shot and retrieval metrics on constructed embeddings, against hand-computed answers.
//!
//! Every expected value below is worked out in the comments. Ranks and accuracies are exact
//! (the constructed scores are exact in f32: products with 0 and 1, sums with 0); the
//! classifier rows are compared with a tolerance of 1e-6 (f32 rounding of values computed in
//! f64 from square roots).
//!
//! Run: `cargo test -p clipkd-train --test eval_metrics`

use burn_flex::Flex;
use clipkd_train::embed::HostEmbeddings;
use clipkd_train::eval::metrics::{
    Positives, RankSummary, rank_of_first_positive, ranks_of_positives_chunked, retrieval_ranks,
};
use clipkd_train::eval::zero_shot::{
    ZeroShotMetrics, classifier_from_template_embeddings, zero_shot_ranks,
};

fn emb(rows: &[&[f32]]) -> HostEmbeddings {
    HostEmbeddings {
        data: rows.iter().flat_map(|r| r.iter().copied()).collect(),
        rows: rows.len(),
        dim: rows[0].len(),
    }
}

fn device() -> burn_flex::FlexDevice {
    Default::default()
}

#[test]
fn zero_shot_top_k_with_ties_and_more_k_than_classes() {
    let s = std::f32::consts::FRAC_1_SQRT_2;
    // Three classes in 2-D: c0 = +x, c1 = +y, c2 = -x.
    let classifier = emb(&[&[1.0, 0.0], &[0.0, 1.0], &[-1.0, 0.0]]);
    let images = emb(&[
        &[1.0, 0.0],  // label 0: scores (1, 0, -1)          -> rank 0
        &[0.6, 0.8],  // label 0: scores (.6, .8, -.6)       -> rank 1 (c1 above)
        &[s, s],      // label 1: scores (s, s, -s), tie c0/c1 -> c0 first by index -> rank 1
        &[s, s],      // label 0: the same tie, c0 first      -> rank 0
        &[-1.0, 0.0], // label 0: scores (-1, 0, 1)         -> rank 2
    ]);
    let labels = [0, 0, 1, 0, 0];
    let ranks = zero_shot_ranks::<Flex>(&images, &classifier, &labels, &device()).unwrap();
    assert_eq!(ranks, [0, 1, 1, 0, 2]);
    let m = ZeroShotMetrics::from_ranks(&ranks, &labels);
    // top-1: images 0 and 3 -> 2/5. top-5 over 3 classes counts as top-3: every image.
    assert_eq!(m.top1, 0.4);
    assert_eq!(m.top5, 1.0);
    // Per class: class 0 has images 0, 1, 3, 4 with 2 right (1/2); class 1 has image 2,
    // wrong (0); class 2 has no image and does not count -> (1/2 + 0) / 2.
    assert_eq!(m.mean_per_class_recall, 0.25);
}

#[test]
fn top5_counts_rank_four_but_not_five() {
    // Seven classes e0..e6; an image scoring class j with 7 - j: class j has rank j.
    let classes: Vec<Vec<f32>> = (0..7)
        .map(|j| (0..7).map(|k| f32::from(u8::from(j == k))).collect())
        .collect();
    let rows: Vec<&[f32]> = classes.iter().map(Vec::as_slice).collect();
    let classifier = emb(&rows);
    let image: Vec<f32> = (0..7).map(|j| (7 - j) as f32).collect();
    let images = emb(&[image.as_slice(); 7]);
    let labels: Vec<usize> = (0..7).collect();
    let ranks = zero_shot_ranks::<Flex>(&images, &classifier, &labels, &device()).unwrap();
    assert_eq!(ranks, labels);
    let m = ZeroShotMetrics::from_ranks(&ranks, &labels);
    assert_eq!((m.top1, m.top5), (1.0 / 7.0, 5.0 / 7.0));
    // One image per class: the per-class mean is top-1.
    assert_eq!(m.mean_per_class_recall, 1.0 / 7.0);
}

#[test]
fn classifier_is_the_normalized_mean_of_normalized_templates() {
    // Two classes, three templates each, deliberately not unit length.
    let e = emb(&[
        &[3.0, 0.0, 0.0], // class 0: normalizes to e1
        &[0.0, 2.0, 0.0], //          e2
        &[0.0, 0.0, 0.5], //          e3 -> mean (1,1,1)/3 -> (1,1,1)/sqrt(3)
        &[1.0, 1.0, 0.0], // class 1: (1,1,0)/sqrt2
        &[2.0, 2.0, 0.0], //          (1,1,0)/sqrt2
        &[0.0, 0.0, -4.0], //         (0,0,-1)
                          // mean (sqrt2/3, sqrt2/3, -1/3), norm sqrt(5)/3
                          // -> (sqrt(2/5), sqrt(2/5), -1/sqrt5)
    ]);
    let w = classifier_from_template_embeddings(&e, 3);
    assert_eq!((w.rows, w.dim), (2, 3));
    let r3 = 1.0 / 3f32.sqrt();
    let (a, b) = ((2.0f32 / 5.0).sqrt(), 1.0 / 5f32.sqrt());
    let expected = [r3, r3, r3, a, a, -b];
    for (got, want) in w.data.iter().zip(expected) {
        assert!((got - want).abs() < 1e-6, "{:?} vs {expected:?}", w.data);
    }
    // The mean of the raw embeddings would be (1, 1, -4/3)/... for class 1: a different
    // direction, so the normalization before averaging matters.
    assert!((w.row(1)[2] - (-4.0 / 3.0) / (2.0f32 + 16.0 / 9.0).sqrt()).abs() > 0.1);
}

/// Images are the unit vectors of R^3, so image `i` scores caption `t` with `t[i]`.
fn retrieval_case() -> (HostEmbeddings, HostEmbeddings, Vec<usize>) {
    let images = emb(&[&[1.0, 0.0, 0.0], &[0.0, 1.0, 0.0], &[0.0, 0.0, 1.0]]);
    let texts = emb(&[
        &[0.9, 0.2, 0.1], // T0, image 0
        &[0.3, 0.5, 0.4], // T1, image 0
        &[0.6, 0.6, 0.0], // T2, image 1
        &[0.2, 0.1, 0.7], // T3, image 2
        &[0.1, 0.8, 0.5], // T4, image 2
    ]);
    (images, texts, vec![0, 0, 1, 2, 2])
}

#[test]
fn retrieval_with_several_captions_per_image() {
    let (images, texts, owners) = retrieval_case();
    let ranks = retrieval_ranks::<Flex>(&images, &texts, &owners, &device()).unwrap();
    // image -> text, over the columns of the table above:
    //   image 0: (.9 .3 .6 .2 .1), captions {T0, T1}: T0 first          -> rank 0
    //   image 1: (.2 .5 .6 .1 .8), caption T2: .8 above                  -> rank 1
    //   image 2: (.1 .4 .0 .7 .5), captions {T3, T4}: T3 first           -> rank 0
    assert_eq!(ranks.image_to_text, [0, 1, 0]);
    // text -> image, over the rows:
    //   T0 (.9 .2 .1) -> 0; T1 (.3 .5 .4) -> 2; T2 (.6 .6 0): tie, image 0 first -> 1;
    //   T3 (.2 .1 .7) -> 0; T4 (.1 .8 .5) -> 1
    assert_eq!(ranks.text_to_image, [0, 2, 1, 0, 1]);
    let i2t = RankSummary::from_ranks(&ranks.image_to_text);
    assert_eq!((i2t.r_at_1, i2t.r_at_5, i2t.r_at_10), (2.0 / 3.0, 1.0, 1.0));
    assert_eq!((i2t.mean_rank, i2t.median_rank), (1.0 / 3.0 + 1.0, 1.0));
    let t2i = RankSummary::from_ranks(&ranks.text_to_image);
    assert_eq!((t2i.r_at_1, t2i.r_at_5, t2i.r_at_10), (0.4, 1.0, 1.0));
    // mean of (0, 2, 1, 0, 1) = 0.8, + 1; median 1, + 1.
    assert_eq!((t2i.mean_rank, t2i.median_rank), (1.8, 2.0));
}

#[test]
fn retrieval_one_caption_mode_is_one_to_one() {
    // CLIP-KD: only each image's first caption, T0, T2, T3.
    let (images, texts, _) = retrieval_case();
    let first = emb(&[texts.row(0), texts.row(2), texts.row(3)]);
    let ranks = retrieval_ranks::<Flex>(&images, &first, &[0, 1, 2], &device()).unwrap();
    // image 0: (.9 .6 .2) -> 0; image 1: (.2 .6 .1) -> 0; image 2: (.1 0 .7) -> 0.
    assert_eq!(ranks.image_to_text, [0, 0, 0]);
    // T0 -> 0; T2: tie with image 0 -> 1; T3 -> 0.
    assert_eq!(ranks.text_to_image, [0, 1, 0]);
    let t2i = RankSummary::from_ranks(&ranks.text_to_image);
    assert_eq!(t2i.r_at_1, 2.0 / 3.0);
}

#[test]
fn recall_at_5_and_10_over_many_candidates() {
    // One image query against 12 captions scoring 11, 10, ..., 0: its caption at position p
    // (0-based) has rank p. Captions of the 12 single-caption queries.
    let image = emb(&[&[1.0]]);
    let captions: Vec<[f32; 1]> = (0..12).map(|p| [(11 - p) as f32]).collect();
    let rows: Vec<&[f32]> = captions.iter().map(|c| c.as_slice()).collect();
    let texts = emb(&rows);
    let mut ranks = Vec::new();
    for p in [0, 4, 5, 9, 10, 11] {
        let r = ranks_of_positives_chunked::<Flex>(
            &image,
            &texts,
            &Positives::one_each(&[p]),
            1 << 20,
            &device(),
        )
        .unwrap();
        ranks.extend(r);
    }
    assert_eq!(ranks, [0, 4, 5, 9, 10, 11]);
    let s = RankSummary::from_ranks(&ranks);
    // < 1: one of six; < 5: two; < 10: four.
    assert_eq!(
        (s.r_at_1, s.r_at_5, s.r_at_10),
        (1.0 / 6.0, 2.0 / 6.0, 4.0 / 6.0)
    );
}

#[test]
fn chunking_does_not_change_ranks() {
    // 37 queries x 23 keys of pseudo-random values with many exact ties (values in 0..4).
    let mut state = 12345u32;
    let mut next = || {
        state = state.wrapping_mul(1_103_515_245).wrapping_add(12345);
        ((state >> 16) % 4) as f32
    };
    let q = HostEmbeddings {
        data: (0..37 * 3).map(|_| next()).collect(),
        rows: 37,
        dim: 3,
    };
    let k = HostEmbeddings {
        data: (0..23 * 3).map(|_| next()).collect(),
        rows: 23,
        dim: 3,
    };
    let owners: Vec<usize> = (0..37).map(|i| (i * 7) % 23).collect();
    let positives = Positives::one_each(&owners);
    let whole = ranks_of_positives_chunked::<Flex>(&q, &k, &positives, 1 << 20, &device()).unwrap();
    for chunk in [1, 23, 50, 23 * 5 + 1] {
        let chunked =
            ranks_of_positives_chunked::<Flex>(&q, &k, &positives, chunk, &device()).unwrap();
        assert_eq!(chunked, whole, "chunk of {chunk} scores");
    }
    // And the same as sorting each row (stable, by descending score) on the host.
    for (i, &rank) in whole.iter().enumerate() {
        let scores: Vec<f32> = (0..23)
            .map(|j| (0..3).map(|d| q.row(i)[d] * k.row(j)[d]).sum())
            .collect();
        let mut order: Vec<usize> = (0..23).collect();
        order.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]));
        assert_eq!(order.iter().position(|&j| j == owners[i]).unwrap(), rank);
        assert_eq!(rank_of_first_positive(&scores, &[owners[i]]), rank);
    }
}
