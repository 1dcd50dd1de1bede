//! The tensor-level entry points: each loss module's `forward` on two `Embeddings` and the
//! `functional` functions give the values and gradients of the `LossSet` path, their gradients
//! match finite differences (CRD, ICL), and their errors say what is missing.
//!
//! Tolerances: values are compared exactly (both paths run the same function on the same
//! tensors, and the loss set's weight 1 is an exact multiplication); gradients of the two paths
//! to 1e-6 relative (autodiff may accumulate the same terms in another order); finite
//! differences in f32 to 1e-3 relative plus their rounding uncertainty (see `check_gradient`).

mod common;

use burn::module::Param;
use burn::nn::Linear;
use burn::tensor::{Tensor, backend::AutodiffBackend};
use clipkd_losses::functional::{icl_loss, task_loss};
use clipkd_losses::{
    AfdLossConfig, BuiltinLoss, CrdLossConfig, CrossKdLossConfig, DistillInput, Embeddings,
    FdLossConfig, FeatureDistance, GdLossConfig, GdScaleUse, IclLoss, IclLossConfig,
    LearnableScale, LearnableScaleConfig, LocalRows, LossConfig, LossError, LossSetConfig,
    MfdLossConfig, OpenClipDistillLossConfig, Projector, ProjectorConfig, ScaleMode,
    TaskLossConfig,
};
use common::{B, assert_close, randn, values};

/// Every built-in loss (and the options), weight 1 each.
fn all_losses(student_dim: usize, teacher_dim: usize) -> LossSetConfig {
    let exp = LearnableScaleConfig::new().with_mode(ScaleMode::Exp);
    LossSetConfig::new(student_dim, teacher_dim)
        .add(1.0, TaskLossConfig::new().into())
        .add(1.0, CrdLossConfig::new().into())
        .add_named(
            "crd_t2",
            1.0,
            CrdLossConfig::new().with_temperature(2.0).into(),
        )
        .add(1.0, FdLossConfig::new().into())
        .add_named(
            "fd_cos",
            1.0,
            FdLossConfig::new()
                .with_distance(FeatureDistance::Cosine)
                .into(),
        )
        .add(1.0, MfdLossConfig::new().into())
        .add_named(
            "mfd_image",
            1.0,
            MfdLossConfig::new().with_include_text(false).into(),
        )
        .add(1.0, GdLossConfig::new().into())
        .add_named(
            "gd_mul",
            1.0,
            GdLossConfig::new()
                .with_scale_use(GdScaleUse::Multiply)
                .into(),
        )
        .add(1.0, IclLossConfig::new().into())
        .add_named(
            "icl_exp",
            1.0,
            IclLossConfig::new().with_scale(exp.clone()).into(),
        )
        .add(1.0, AfdLossConfig::new(teacher_dim).into())
        .add_named(
            "afd_exp",
            1.0,
            AfdLossConfig::new(teacher_dim).with_scale(exp).into(),
        )
        .add(1.0, CrossKdLossConfig::new().into())
        .add(1.0, OpenClipDistillLossConfig::new().into())
}

/// Student leaves (raw image, raw text, masked view, log scale) and teacher leaves (with
/// gradient, to check that no entry point lets one reach them).
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
    fn random(n: usize, ds: usize, dt: usize, seed: u64) -> Self {
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
            s_log: Tensor::<B, 1>::from_floats([2.659], &device).require_grad(),
            t_img: t_img.require_grad(),
            t_txt: t_txt.require_grad(),
            t_log: Tensor::<B, 1>::from_floats([4.6], &device).require_grad(),
        }
    }

    fn student(&self) -> Embeddings<B> {
        Embeddings::from_log_scale(self.s_img.clone(), self.s_txt.clone(), self.s_log.clone())
            .unwrap()
    }

    fn teacher(&self) -> Embeddings<B> {
        Embeddings::from_log_scale(self.t_img.clone(), self.t_txt.clone(), self.t_log.clone())
            .unwrap()
    }

    fn input(&self) -> DistillInput<B> {
        DistillInput::new(self.student(), self.teacher())
            .unwrap()
            .with_masked_student_image(self.s_mask.clone())
            .unwrap()
    }

    /// Gradients of the student leaves; asserts the teacher's leaves have none (or zero).
    fn student_grads(&self, grads: &<B as AutodiffBackend>::Gradients) -> Vec<Vec<f32>> {
        for (what, g) in [
            ("teacher image", self.t_img.grad(grads).map(|g| values(&g))),
            ("teacher text", self.t_txt.grad(grads).map(|g| values(&g))),
            (
                "teacher log scale",
                self.t_log.grad(grads).map(|g| values(&g)),
            ),
        ] {
            if let Some(g) = g {
                assert!(g.iter().all(|x| *x == 0.0), "gradient reached the {what}");
            }
        }
        let zeros = |t: &Tensor<B, 2>| vec![0.0; t.dims().iter().product()];
        vec![
            self.s_img
                .grad(grads)
                .map_or(zeros(&self.s_img), |g| values(&g)),
            self.s_txt
                .grad(grads)
                .map_or(zeros(&self.s_txt), |g| values(&g)),
            self.s_mask
                .grad(grads)
                .map_or(zeros(&self.s_mask), |g| values(&g)),
            self.s_log.grad(grads).map_or(vec![0.0], |g| values(&g)),
        ]
    }
}

/// One loss of the set through its tensor-level `forward`, from the two embeddings (mapped
/// into the teacher's space with the set's projector where the loss needs it).
fn tensor_level(
    loss: &BuiltinLoss<B>,
    projector: &Projector<B>,
    batch: &Batch,
) -> Result<Tensor<B, 1>, LossError> {
    let (student, teacher) = (batch.student(), batch.teacher());
    let aligned = projector.project(&student)?;
    match loss {
        BuiltinLoss::Task(l) => l.forward(&student),
        BuiltinLoss::Crd(l) => l.forward(&student, &teacher),
        BuiltinLoss::Fd(l) => l.forward(&aligned, &teacher),
        BuiltinLoss::Mfd(l) => {
            l.forward(&projector.project_image(&batch.s_mask)?, &aligned, &teacher)
        }
        BuiltinLoss::Gd(l) => l.forward(&aligned, &teacher),
        BuiltinLoss::Icl(l) => l.forward(&aligned, &teacher),
        BuiltinLoss::Afd(l) => l.forward(&aligned, &teacher),
        BuiltinLoss::CrossKd(l) => l.forward(&aligned, &teacher),
        BuiltinLoss::OpenClipDistill(l) => l.forward(&student, &teacher),
    }
}

#[test]
fn tensor_level_forward_equals_the_loss_set_in_value_and_gradient() {
    let device = Default::default();
    for (ds, dt) in [(12, 12), (8, 12)] {
        let set = all_losses(ds, dt).init::<B>(&device).unwrap();
        let batch = Batch::random(6, ds, dt, 11);
        for (k, (name, _, loss)) in set.entries().enumerate() {
            let what = format!("D_s {ds}, D_t {dt}, {name}");
            // One graph at a time: a backward frees every node connected to the leaves it
            // reaches, the other path's included.
            let terms = set.forward(&batch.input()).unwrap();
            assert_eq!(terms.len(), set.len());
            let term = terms.iter().nth(k).unwrap();
            assert_eq!(term.name, name);
            let expected = values(&term.value);
            let via_set = batch.student_grads(&term.value.backward());
            let direct = tensor_level(loss, set.projector(), &batch).unwrap();
            assert_eq!(values(&direct), expected, "{what}: value");
            let via_forward = batch.student_grads(&direct.backward());
            for (i, (a, b)) in via_forward.iter().zip(&via_set).enumerate() {
                assert_close(&format!("{what}: gradient {i}"), a, b, 1e-6);
            }
        }
    }
}

/// The functional form with this device's rows is the loss set's value for a gathered batch.
#[test]
fn functional_rows_equal_the_loss_set_with_local_rows() {
    let device = Default::default();
    let set = LossSetConfig::new(8, 12)
        .add(1.0, TaskLossConfig::new().into())
        .add(1.0, IclLossConfig::new().into())
        .init::<B>(&device)
        .unwrap();
    let batch = Batch::random(6, 8, 12, 3);
    let rows = LocalRows { offset: 2, len: 3 };
    let terms = set
        .forward(&batch.input().with_local_rows(2, 3).unwrap())
        .unwrap();
    let student = batch.student();
    let task = task_loss(&student, rows).unwrap();
    assert_eq!(values(&task), values(terms.get("task").unwrap()));
    let scale = match set.entries().nth(1).unwrap().2 {
        BuiltinLoss::Icl(l) => l.scale.multiplier(),
        other => panic!("{other:?}"),
    };
    let aligned = set.projector().project(&student).unwrap();
    let icl = icl_loss(&aligned, &batch.teacher(), &scale, rows).unwrap();
    assert_eq!(values(&icl), values(terms.get("icl").unwrap()));
}

/// Step of the finite differences.
const H: f64 = 2e-2;

/// `d/dε f(x + ε v)` at 0: central differences with steps `H` and `H/2`, extrapolated
/// (Richardson) so that the error is `O(H⁴)`.
fn directional<const D: usize>(
    f: &dyn Fn(Tensor<B, D>) -> Tensor<B, 1>,
    x: &Tensor<B, D>,
    v: &Tensor<B, D>,
) -> f64 {
    // fresh leaves without gradient (a `Param` made of them must be a leaf)
    let at = |step: f64| {
        let shifted = x.clone() + v.clone().mul_scalar(step);
        values(&f(Tensor::<B, D>::from_data(
            shifted.into_data(),
            &x.device(),
        )))[0] as f64
    };
    let central = |h: f64| (at(h) - at(-h)) / (2.0 * h);
    (4.0 * central(H / 2.0) - central(H)) / 3.0
}

/// Autodiff's gradient of `f` at `x` along `v`, against finite differences: they agree to 1e-3
/// relative, plus the differences' own uncertainty from rounding the f32 loss `f` (about
/// `ε |f| / H` for the unit roundoff `ε`).
fn check_gradient<const D: usize>(
    what: &str,
    f: &dyn Fn(Tensor<B, D>) -> Tensor<B, 1>,
    x: Tensor<B, D>,
    v: Tensor<B, D>,
) {
    let x = x.detach().require_grad();
    let value = f(x.clone());
    let rounding = 8.0 * f32::EPSILON as f64 * (values(&value)[0] as f64).abs() / H;
    let grads = value.backward();
    let g = x.grad(&grads).expect("a gradient");
    let along: f64 = values(&g)
        .iter()
        .zip(values(&v))
        .map(|(a, b)| *a as f64 * b as f64)
        .sum();
    let numeric = directional(f, &x, &v);
    let allowed = 1e-3 * along.abs().max(numeric.abs()) + rounding;
    assert!(
        (along - numeric).abs() <= allowed,
        "{what}: autodiff {along:.6e}, finite differences {numeric:.6e} (allowed {allowed:.1e})"
    );
}

/// A projector `D_s -> D_t` with fixed weights (the config's random init is not seeded).
fn fixed_projector(ds: usize, dt: usize) -> Projector<B> {
    let device = Default::default();
    let linear = |seed| Linear {
        weight: Param::from_tensor(randn::<B>(ds, dt, seed, &device).mul_scalar(0.3)),
        bias: Some(Param::from_tensor(
            randn::<B>(1, dt, seed + 1, &device)
                .mul_scalar(0.1)
                .reshape([dt]),
        )),
    };
    Projector {
        image: Some(linear(70)),
        text: Some(linear(72)),
    }
}

#[test]
fn crd_gradients_match_finite_differences() {
    let device = Default::default();
    let batch = Batch::random(5, 6, 9, 21);
    let teacher = batch.teacher();
    for temperature in [1.0, 2.0] {
        let crd = CrdLossConfig::new()
            .with_temperature(temperature)
            .init()
            .unwrap();
        let with_image = |x: Tensor<B, 2>| {
            let student =
                Embeddings::from_log_scale(x, batch.s_txt.clone(), batch.s_log.clone()).unwrap();
            crd.forward(&student, &teacher).unwrap()
        };
        let with_text = |x: Tensor<B, 2>| {
            let student =
                Embeddings::from_log_scale(batch.s_img.clone(), x, batch.s_log.clone()).unwrap();
            crd.forward(&student, &teacher).unwrap()
        };
        let with_scale = |x: Tensor<B, 1>| {
            let student =
                Embeddings::from_log_scale(batch.s_img.clone(), batch.s_txt.clone(), x).unwrap();
            crd.forward(&student, &teacher).unwrap()
        };
        check_gradient(
            &format!("CRD τ={temperature}: student image"),
            &with_image,
            batch.s_img.clone(),
            randn(5, 6, 90, &device),
        );
        check_gradient(
            &format!("CRD τ={temperature}: student text"),
            &with_text,
            batch.s_txt.clone(),
            randn(5, 6, 91, &device),
        );
        check_gradient(
            &format!("CRD τ={temperature}: student log scale"),
            &with_scale,
            batch.s_log.clone(),
            Tensor::from_floats([1.0], &device),
        );
    }
}

#[test]
fn icl_gradients_match_finite_differences() {
    let device = Default::default();
    let batch = Batch::random(5, 6, 9, 31);
    let projector = fixed_projector(6, 9);
    let teacher = batch.teacher();
    for mode in [ScaleMode::Raw, ScaleMode::Exp] {
        let icl_with = |scale: Tensor<B, 1>| IclLoss {
            scale: LearnableScale {
                value: Param::from_tensor(scale),
                mode,
            },
        };
        let init = Tensor::<B, 1>::from_floats([2.659], &device);
        let icl = icl_with(init.clone());
        let with_image = |x: Tensor<B, 2>| {
            let student =
                Embeddings::from_log_scale(x, batch.s_txt.clone(), batch.s_log.clone()).unwrap();
            icl.forward(&projector.project(&student).unwrap(), &teacher)
                .unwrap()
        };
        let with_text = |x: Tensor<B, 2>| {
            let student =
                Embeddings::from_log_scale(batch.s_img.clone(), x, batch.s_log.clone()).unwrap();
            icl.forward(&projector.project(&student).unwrap(), &teacher)
                .unwrap()
        };
        let with_scale = |c: Tensor<B, 1>| {
            icl_with(c)
                .forward(&projector.project(&batch.student()).unwrap(), &teacher)
                .unwrap()
        };
        let with_projection = |w: Tensor<B, 2>| {
            let mut p = projector.clone();
            let image = p.image.as_mut().unwrap();
            image.weight = Param::from_tensor(w);
            icl.forward(&p.project(&batch.student()).unwrap(), &teacher)
                .unwrap()
        };
        check_gradient(
            &format!("ICL {mode:?}: student image"),
            &with_image,
            batch.s_img.clone(),
            randn(5, 6, 92, &device),
        );
        check_gradient(
            &format!("ICL {mode:?}: student text"),
            &with_text,
            batch.s_txt.clone(),
            randn(5, 6, 93, &device),
        );
        check_gradient(
            &format!("ICL {mode:?}: scale"),
            &with_scale,
            init,
            Tensor::from_floats([1.0], &device),
        );
        check_gradient(
            &format!("ICL {mode:?}: image projection"),
            &with_projection,
            projector.image.as_ref().unwrap().weight.val(),
            randn(6, 9, 94, &device).mul_scalar(0.1),
        );
    }
}

#[test]
fn entry_point_errors_say_what_is_missing() {
    let device = Default::default();
    let batch = Batch::random(4, 6, 9, 41);
    let (student, teacher) = (batch.student(), batch.teacher());
    // sizes differ and no projector: every loss that reads aligned features says so
    let fd = FdLossConfig::new().init().forward(&student, &teacher);
    let err = fd.unwrap_err().to_string();
    assert!(
        err.contains("FD") && err.contains("projector") && err.contains('6') && err.contains('9'),
        "{err}"
    );
    let icl = IclLossConfig::new().init::<B>(&device).unwrap();
    let err = icl.forward(&student, &teacher).unwrap_err().to_string();
    assert!(
        err.contains("ICL") && err.contains("Projector::project"),
        "{err}"
    );
    // losses on the student's own features do not need one
    CrdLossConfig::new()
        .init()
        .unwrap()
        .forward(&student, &teacher)
        .unwrap();
    // a projector for another student size
    let err = ProjectorConfig::new(5, 9)
        .init::<B>(&device)
        .project(&student)
        .unwrap_err()
        .to_string();
    assert!(err.contains("projector") && err.contains("image"), "{err}");
    // batch sizes
    let other = Batch::random(3, 6, 9, 42).teacher();
    let err = CrdLossConfig::new()
        .init()
        .unwrap()
        .forward(&student, &other)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("CRD: teacher") && err.contains('3') && err.contains('4'),
        "{err}"
    );
    // MFD's masked view must be in the teacher's space too
    let aligned = ProjectorConfig::new(6, 9)
        .init::<B>(&device)
        .project(&student)
        .unwrap();
    let err = MfdLossConfig::new()
        .init()
        .forward(&batch.s_mask, &aligned, &teacher)
        .unwrap_err()
        .to_string();
    assert!(err.contains("MFD") && err.contains("masked"), "{err}");
    // rows outside the batch
    let err = task_loss(&student, LocalRows { offset: 3, len: 2 })
        .unwrap_err()
        .to_string();
    assert!(err.contains("3..5") && err.contains('4'), "{err}");
    // a scale that is not [1]
    let err = icl_loss(
        &aligned,
        &teacher,
        &Tensor::from_floats([1.0, 2.0], &device),
        LocalRows::all(4),
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("ICL: logit scale"), "{err}");
}

/// The configs convert into `LossConfig` (`From`), so a set can be built without naming the
/// variant; and the kinds a run config names give the same defaults as the configs.
#[test]
fn configs_convert_and_kinds_give_the_defaults() {
    let a: LossConfig = AfdLossConfig::new(12).into();
    let b = clipkd_losses::LossKind::Afd.default_config(12);
    assert_eq!(
        serde_json::to_string(&a).unwrap(),
        serde_json::to_string(&b).unwrap()
    );
    assert_eq!(a.default_name(), "afd");
}
