//! Properties the math promises: zero losses when the student is the teacher, image/text role
//! symmetry, finiteness for batch 1 and extreme logit scales, and the global-batch contract.
//!
//! Tolerances: "zero" means below 1e-6 (f32 rounding of unit-vector arithmetic, ~1e-7);
//! equalities between two f32 evaluations of the same sums in a different order use a relative
//! error of 1e-5.

mod common;

use burn::tensor::{Tensor, backend::AutodiffBackend};
use clipkd_losses::{
    AfdLossConfig, BuiltinLoss, CrdLossConfig, CrossKdLossConfig, DistillInput, Embeddings,
    FdLossConfig, FeatureDistance, GdLossConfig, GdScaleUse, IclLossConfig, LearnableScaleConfig,
    LossConfig, LossSet, LossSetConfig, LossTerms, MfdLossConfig, OpenClipDistillLossConfig,
    ScaleMode, TaskLossConfig,
};
use common::{B, assert_close, randn, values};

/// Every built-in loss (and the options), weight 1 each.
fn all_losses(student_dim: usize, teacher_dim: usize) -> LossSetConfig {
    let exp = LearnableScaleConfig::new().with_mode(ScaleMode::Exp);
    LossSetConfig::new(student_dim, teacher_dim)
        .add(1.0, LossConfig::Task(TaskLossConfig::new()))
        .add(1.0, LossConfig::Crd(CrdLossConfig::new()))
        .add_named(
            "crd_t2",
            1.0,
            LossConfig::Crd(CrdLossConfig::new().with_temperature(2.0)),
        )
        .add(1.0, LossConfig::Fd(FdLossConfig::new()))
        .add_named(
            "fd_cos",
            1.0,
            LossConfig::Fd(FdLossConfig::new().with_distance(FeatureDistance::Cosine)),
        )
        .add(1.0, LossConfig::Mfd(MfdLossConfig::new()))
        .add(1.0, LossConfig::Gd(GdLossConfig::new()))
        .add_named(
            "gd_mul",
            1.0,
            LossConfig::Gd(GdLossConfig::new().with_scale_use(GdScaleUse::Multiply)),
        )
        .add(1.0, LossConfig::Icl(IclLossConfig::new()))
        .add_named(
            "icl_exp",
            1.0,
            LossConfig::Icl(IclLossConfig::new().with_scale(exp.clone())),
        )
        .add(1.0, LossConfig::Afd(AfdLossConfig::new(teacher_dim)))
        .add_named(
            "afd_exp",
            1.0,
            LossConfig::Afd(AfdLossConfig::new(teacher_dim).with_scale(exp)),
        )
        .add(1.0, LossConfig::CrossKd(CrossKdLossConfig::new()))
        .add(
            1.0,
            LossConfig::OpenClipDistill(OpenClipDistillLossConfig::new()),
        )
}

/// Student leaves (raw image, raw text, masked image, log scale) and the teacher's tensors.
struct Batch {
    s_img: Tensor<B, 2>,
    s_txt: Tensor<B, 2>,
    s_mask: Tensor<B, 2>,
    s_log: Tensor<B, 1>,
    t_img: Tensor<B, 2>,
    t_txt: Tensor<B, 2>,
    t_log: Tensor<B, 1>,
}

impl Batch {
    fn random(n: usize, ds: usize, dt: usize, s_log: f32, t_log: f32, seed: u64) -> Self {
        let device = Default::default();
        let t_img = randn::<B>(n, dt, seed, &device);
        let t_txt = t_img.clone() + randn::<B>(n, dt, seed + 1, &device);
        let s_img = randn::<B>(n, ds, seed + 2, &device).mul_scalar(2.0);
        let s_txt = s_img.clone() + randn::<B>(n, ds, seed + 3, &device);
        let s_mask = s_img.clone() + randn::<B>(n, ds, seed + 4, &device);
        Self {
            s_img: s_img.require_grad(),
            s_txt: s_txt.require_grad(),
            s_mask: s_mask.require_grad(),
            s_log: Tensor::<B, 1>::from_floats([s_log], &device).require_grad(),
            t_img,
            t_txt,
            t_log: Tensor::from_floats([t_log], &device),
        }
    }

    fn input(&self) -> DistillInput<B> {
        let student =
            Embeddings::from_log_scale(self.s_img.clone(), self.s_txt.clone(), self.s_log.clone())
                .unwrap();
        let teacher =
            Embeddings::from_log_scale(self.t_img.clone(), self.t_txt.clone(), self.t_log.clone())
                .unwrap();
        DistillInput::new(student, teacher)
            .unwrap()
            .with_masked_student_image(self.s_mask.clone())
            .unwrap()
    }

    /// The same batch with image and text swapped on both sides (the masked view stays).
    fn swapped(&self) -> Self {
        Self {
            s_img: self.s_txt.clone(),
            s_txt: self.s_img.clone(),
            s_mask: self.s_mask.clone(),
            s_log: self.s_log.clone(),
            t_img: self.t_txt.clone(),
            t_txt: self.t_img.clone(),
            t_log: self.t_log.clone(),
        }
    }
}

fn scalars(terms: &LossTerms<B>) -> Vec<(String, f64)> {
    terms.to_scalars()
}

#[test]
fn student_equal_to_teacher_zeroes_fd_gd_crd() {
    let device = Default::default();
    let n = 6;
    let img = randn::<B>(n, 8, 11, &device);
    let txt = img.clone() + randn::<B>(n, 8, 12, &device);
    let log_scale = Tensor::<B, 1>::from_floats([4.0], &device);
    let make = || Embeddings::from_log_scale(img.clone(), txt.clone(), log_scale.clone()).unwrap();
    let input = DistillInput::new(make(), make())
        .unwrap()
        .with_masked_student_image(img.clone())
        .unwrap();
    let set = LossSetConfig::new(8, 8)
        .add(1.0, LossConfig::Fd(FdLossConfig::new()))
        .add_named(
            "fd_cos",
            1.0,
            LossConfig::Fd(FdLossConfig::new().with_distance(FeatureDistance::Cosine)),
        )
        .add(1.0, LossConfig::Mfd(MfdLossConfig::new()))
        .add(1.0, LossConfig::Gd(GdLossConfig::new()))
        .add_named(
            "gd_mul",
            1.0,
            LossConfig::Gd(GdLossConfig::new().with_scale_use(GdScaleUse::Multiply)),
        )
        .add(1.0, LossConfig::Crd(CrdLossConfig::new()))
        .add_named(
            "crd_t2",
            1.0,
            LossConfig::Crd(CrdLossConfig::new().with_temperature(2.0)),
        )
        .init::<B>(&device)
        .unwrap();
    let terms = set.forward(&input).unwrap();
    assert_eq!(terms.len(), 7);
    for (name, value) in scalars(&terms) {
        assert!(value.abs() < 1e-6, "{name} = {value:e}, expected 0");
    }
    // and the task loss of that batch is not zero (the check above is not vacuous)
    let task = LossSetConfig::preset(clipkd_losses::LossPreset::Baseline, 8, 8)
        .init::<B>(&device)
        .unwrap()
        .forward(&input)
        .unwrap();
    assert!(task.to_scalars()[0].1 > 0.01);
}

#[test]
fn swapping_image_and_text_keeps_symmetric_losses() {
    let device = Default::default();
    let (ds, dt) = (6, 10);
    let set = all_losses(ds, dt).init::<B>(&device).unwrap();
    let batch = Batch::random(7, ds, dt, 2.6, 4.0, 100);
    let swapped = batch.swapped();
    let terms = set.forward(&batch.input()).unwrap();
    // the swapped set exchanges the two projectors and AFD's two fusion layers, as the math does
    let mut swapped_set = set.clone();
    {
        let p = swapped_set.projector().clone();
        swapped_set = swap_modalities(swapped_set, p);
    }
    let swapped_terms = swapped_set.forward(&swapped.input()).unwrap();
    for ((name, a), (_, b)) in scalars(&terms).into_iter().zip(scalars(&swapped_terms)) {
        if name == "mfd" {
            // MFD's image side is the masked view: swapping moves it to the text side
            continue;
        }
        let err = (a - b).abs() / a.abs().max(1e-12);
        assert!(err < 1e-5, "{name}: {a} vs swapped {b}");
    }
    // and the gradients swap with the roles (recipe = all symmetric terms)
    let total = |terms: &LossTerms<B>| {
        terms
            .iter()
            .filter(|t| t.name != "mfd")
            .fold(Tensor::<B, 1>::zeros([1], &device), |acc, t| {
                acc + t.value.clone()
            })
    };
    let g = total(&terms).backward();
    let gs = total(&swapped_terms).backward();
    assert_close(
        "d/d s_img vs swapped d/d s_txt",
        &values(&batch.s_img.grad(&g).unwrap()),
        &values(&swapped.s_txt.grad(&gs).unwrap()),
        1e-4,
    );
    assert_close(
        "d/d s_log",
        &values(&batch.s_log.grad(&g).unwrap()),
        &values(&swapped.s_log.grad(&gs).unwrap()),
        1e-4,
    );
}

/// The set with its image and text layers exchanged (projector and AFD fusion layers).
fn swap_modalities(set: LossSet<B>, projector: clipkd_losses::Projector<B>) -> LossSet<B> {
    let swapped_projector = clipkd_losses::Projector {
        image: projector.text,
        text: projector.image,
    };
    let mut out = LossSet::new(swapped_projector);
    for (name, weight, loss) in set.entries() {
        let loss = match loss.clone() {
            BuiltinLoss::Afd(mut afd) => {
                std::mem::swap(&mut afd.image_fusion, &mut afd.text_fusion);
                BuiltinLoss::Afd(afd)
            }
            other => other,
        };
        out = out.with_loss(name, weight, loss).unwrap();
    }
    out
}

fn assert_all_finite(what: &str, set: &LossSet<B>, batch: &Batch) {
    let terms = set.forward(&batch.input()).unwrap();
    for (name, value) in scalars(&terms) {
        assert!(value.is_finite(), "{what}: {name} = {value}");
    }
    let grads = terms.total().unwrap().backward();
    for (leaf, t) in [
        ("s_img", &batch.s_img),
        ("s_txt", &batch.s_txt),
        ("s_mask", &batch.s_mask),
    ] {
        let g = values(&t.grad(&grads).unwrap());
        assert!(
            g.iter().all(|x| x.is_finite()),
            "{what}: d/d {leaf} not finite"
        );
    }
    let g = values(&batch.s_log.grad(&grads).unwrap());
    assert!(g[0].is_finite(), "{what}: d/d s_log not finite");
    check_param_grads_finite(what, set, &grads);
}

fn check_param_grads_finite(
    what: &str,
    set: &LossSet<B>,
    grads: &<B as AutodiffBackend>::Gradients,
) {
    let mut params: Vec<Tensor<B, 2>> = Vec::new();
    let mut scales: Vec<Tensor<B, 1>> = Vec::new();
    if let Some(l) = &set.projector().image {
        params.push(l.weight.val());
    }
    for (_, _, loss) in set.entries() {
        match loss {
            BuiltinLoss::Icl(l) => scales.push(l.scale.value.val()),
            BuiltinLoss::CrossKd(l) => scales.push(l.scale.value.val()),
            BuiltinLoss::Afd(l) => {
                scales.push(l.scale.value.val());
                params.push(l.image_fusion.weight.val());
            }
            _ => {}
        }
    }
    for p in params {
        let g = values(&p.grad(grads).expect("parameter without gradient"));
        assert!(
            g.iter().all(|x| x.is_finite()),
            "{what}: parameter gradient not finite"
        );
    }
    for s in scales {
        let g = values(&s.grad(grads).expect("scale without gradient"));
        assert!(g[0].is_finite(), "{what}: scale gradient not finite");
    }
}

#[test]
fn every_term_is_finite_for_batch_one() {
    let device = Default::default();
    let set = all_losses(5, 9).init::<B>(&device).unwrap();
    let batch = Batch::random(1, 5, 9, 2.6, 4.6, 7);
    assert_all_finite("batch 1", &set, &batch);
    // with one sample every contrastive term is exactly 0 (one candidate, probability 1)
    let terms = set.forward(&batch.input()).unwrap();
    for (name, value) in scalars(&terms) {
        if [
            "task", "crd", "crd_t2", "icl", "icl_exp", "afd", "afd_exp", "cross_kd", "gd",
            "gd_mul", "distill",
        ]
        .contains(&name.as_str())
        {
            assert!(value.abs() < 1e-6, "batch 1: {name} = {value}");
        }
    }
}

#[test]
fn every_term_is_finite_for_extreme_logit_scales() {
    let device = Default::default();
    let (ds, dt) = (5, 9);
    // log scales: CLIP's clamp bounds (0 and ln 100) and far beyond them both ways
    for (s_log, t_log) in [
        (0.0, 0.0),
        (4.6052, 4.6052),
        (12.0, 12.0),
        (-12.0, 12.0),
        (12.0, -12.0),
    ] {
        for (scale_init, mode) in [
            (100.0, ScaleMode::Raw),
            (-100.0, ScaleMode::Raw),
            (12.0, ScaleMode::Exp),
        ] {
            let scale = LearnableScaleConfig::new()
                .with_init(scale_init)
                .with_mode(mode);
            let set = all_losses(ds, dt)
                .add_named(
                    "icl_extreme",
                    1.0,
                    LossConfig::Icl(IclLossConfig::new().with_scale(scale.clone())),
                )
                .add_named(
                    "afd_extreme",
                    1.0,
                    LossConfig::Afd(AfdLossConfig::new(dt).with_scale(scale.clone())),
                )
                .add_named(
                    "cross_kd_extreme",
                    1.0,
                    LossConfig::CrossKd(CrossKdLossConfig::new().with_scale(scale)),
                )
                .init::<B>(&device)
                .unwrap();
            let batch = Batch::random(6, ds, dt, s_log, t_log, 21);
            assert_all_finite(
                &format!("log scales {s_log}/{t_log}, c {scale_init} {mode:?}"),
                &set,
                &batch,
            );
        }
    }
}

#[test]
fn zero_embeddings_stay_finite() {
    let device = Default::default();
    let set = all_losses(4, 4).init::<B>(&device).unwrap();
    let mut batch = Batch::random(3, 4, 4, 2.6, 4.6, 3);
    batch.s_img = Tensor::<B, 2>::zeros([3, 4], &device).require_grad();
    assert_all_finite("zero student image embeddings", &set, &batch);
}

/// Per-term values of every loss, averaged over `ranks` equal shares of the batch.
fn mean_over_ranks(set: &LossSet<B>, batch: &Batch, ranks: usize) -> LossTerms<B> {
    let n = batch.s_img.dims()[0];
    let share = n / ranks;
    let per_rank: Vec<LossTerms<B>> = (0..ranks)
        .map(|r| {
            set.forward(&batch.input().with_local_rows(r * share, share).unwrap())
                .unwrap()
        })
        .collect();
    let mut out = LossTerms::new();
    for (i, term) in per_rank[0].iter().enumerate() {
        let sum = per_rank[1..].iter().fold(term.value.clone(), |acc, t| {
            acc + t.clone().into_vec()[i].value.clone()
        });
        out.push(term.name.clone(), term.weight, sum.div_scalar(ranks as f64));
    }
    out
}

#[test]
fn global_batch_contract_matches_single_device() {
    let device = Default::default();
    let (n, ds, dt) = (12, 6, 10);
    let set = all_losses(ds, dt).init::<B>(&device).unwrap();
    let batch = Batch::random(n, ds, dt, 2.6, 4.0, 55);
    let global = set.forward(&batch.input()).unwrap();
    let g_global = global.total().unwrap().backward();
    // one device: declaring all rows local is the plain form
    let all = set
        .forward(&batch.input().with_local_rows(0, n).unwrap())
        .unwrap();
    for ((name, a), (_, b)) in scalars(&global).into_iter().zip(scalars(&all)) {
        assert_eq!(a, b, "{name}: local rows 0..{n} differ from the plain form");
    }
    for ranks in [2, 3, 4] {
        let mean = mean_over_ranks(&set, &batch, ranks);
        for ((name, a), (_, b)) in scalars(&global).into_iter().zip(scalars(&mean)) {
            let err = (a - b).abs() / a.abs().max(1e-12);
            assert!(
                err < 1e-5,
                "{ranks} ranks: {name}: global {a} vs mean over ranks {b}"
            );
        }
        let g_mean = mean.total().unwrap().backward();
        for (leaf, t) in [
            ("s_img", &batch.s_img),
            ("s_txt", &batch.s_txt),
            ("s_mask", &batch.s_mask),
        ] {
            assert_close(
                &format!("{ranks} ranks: d/d {leaf}"),
                &values(&t.grad(&g_mean).unwrap()),
                &values(&t.grad(&g_global).unwrap()),
                1e-5,
            );
        }
        assert_close(
            &format!("{ranks} ranks: d/d s_log"),
            &values(&batch.s_log.grad(&g_mean).unwrap()),
            &values(&batch.s_log.grad(&g_global).unwrap()),
            1e-5,
        );
        let w = set.projector().image.as_ref().unwrap().weight.val();
        assert_close(
            &format!("{ranks} ranks: d/d projector"),
            &values(&w.grad(&g_mean).unwrap()),
            &values(&w.grad(&g_global).unwrap()),
            1e-5,
        );
    }
}

#[test]
fn local_rows_are_validated() {
    let batch = Batch::random(4, 3, 3, 1.0, 1.0, 1);
    assert!(batch.input().with_local_rows(2, 3).is_err());
    assert!(batch.input().with_local_rows(0, 0).is_err());
    let err = batch.input().with_local_rows(3, 2).unwrap_err().to_string();
    assert!(err.contains("3..5") && err.contains("4 samples"), "{err}");
}
