//! Parity with PyTorch: every loss's value and its gradients with respect to every input and
//! learnable parameter, against `crates/clipkd-losses/tests/fixtures/losses/` (made by `tools/make_loss_fixtures.py`
//! from CLIP-KD's code and open_clip 3.3.0, in float64).
//!
//! Tolerance: relative error ≤ 1e-4 in f32 — `|a - b| / |b|` for loss values and
//! `max|a - b| / max|b|` over each gradient tensor (elements near zero make an element-wise
//! relative error meaningless). f32 rounding of these O(10)-sized computations is ~1e-6.

mod common;

use std::collections::HashMap;

use burn::module::Param;
use burn::nn::Linear;
use burn::tensor::Tensor;
use clipkd_losses::{
    AfdLoss, BuiltinLoss, CrdLoss, CrossKdLoss, DistillInput, Embeddings, FdLoss, FeatureDistance,
    GdLoss, GdScaleUse, IclLoss, LearnableScale, LossSet, MfdLoss, OpenClipDistillLoss, Projector,
    ScaleMode, TaskLoss,
};
use common::{Array, B, assert_close, fixture_dir, load_case, rel_err, values};

const TOL: f64 = 1e-4;

enum Leaf {
    D1(Tensor<B, 1>),
    D2 {
        tensor: Tensor<B, 2>,
        transposed: bool,
    },
}

struct Leaves(HashMap<String, Leaf>);

impl Leaves {
    fn new(case: &HashMap<String, Array>) -> Self {
        let device = Default::default();
        let mut map = HashMap::new();
        for (key, array) in case {
            if !(key.starts_with("input.") || key.starts_with("param.")) {
                continue;
            }
            let grad = !key.starts_with("input.t_");
            let leaf = if key.ends_with(".weight") {
                let t = array.transposed().tensor::<B, 2>(&device);
                Leaf::D2 {
                    tensor: if grad { t.require_grad() } else { t },
                    transposed: true,
                }
            } else if array.shape.len() == 2 {
                let t = array.tensor::<B, 2>(&device);
                Leaf::D2 {
                    tensor: if grad { t.require_grad() } else { t },
                    transposed: false,
                }
            } else {
                let t = array.tensor::<B, 1>(&device);
                Leaf::D1(if grad { t.require_grad() } else { t })
            };
            map.insert(key.clone(), leaf);
        }
        Self(map)
    }

    fn d2(&self, key: &str) -> Tensor<B, 2> {
        match self.0.get(key) {
            Some(Leaf::D2 { tensor, .. }) => tensor.clone(),
            _ => panic!("no 2-D leaf {key}"),
        }
    }

    fn d1(&self, key: &str) -> Tensor<B, 1> {
        match self.0.get(key) {
            Some(Leaf::D1(t)) => t.clone(),
            _ => panic!("no 1-D leaf {key}"),
        }
    }

    fn has(&self, key: &str) -> bool {
        self.0.contains_key(key)
    }

    fn linear(&self, prefix: &str) -> Linear<B> {
        Linear {
            weight: Param::from_tensor(self.d2(&format!("{prefix}.weight"))),
            bias: Some(Param::from_tensor(self.d1(&format!("{prefix}.bias")))),
        }
    }

    fn scale(&self, key: &str, mode: ScaleMode) -> LearnableScale<B> {
        LearnableScale {
            value: Param::from_tensor(self.d1(key)),
            mode,
        }
    }

    fn projector(&self) -> Projector<B> {
        if self.has("param.proj_img.weight") {
            Projector {
                image: Some(self.linear("param.proj_img")),
                text: Some(self.linear("param.proj_txt")),
            }
        } else {
            Projector::identity()
        }
    }

    fn input(&self) -> DistillInput<B> {
        let student = Embeddings::from_log_scale(
            self.d2("input.s_img"),
            self.d2("input.s_txt"),
            self.d1("input.s_log_scale"),
        )
        .unwrap();
        let teacher = Embeddings::from_log_scale(
            self.d2("input.t_img"),
            self.d2("input.t_txt"),
            self.d1("input.t_log_scale"),
        )
        .unwrap();
        DistillInput::new(student, teacher)
            .unwrap()
            .with_masked_student_image(self.d2("input.s_img_masked"))
            .unwrap()
    }

    /// The gradient of leaf `key`, in the fixture's layout.
    fn grad(
        &self,
        key: &str,
        grads: &<B as burn::tensor::backend::AutodiffBackend>::Gradients,
    ) -> Option<Vec<f32>> {
        match &self.0[key] {
            Leaf::D1(t) => t.grad(grads).map(|g| values(&g)),
            Leaf::D2 { tensor, transposed } => tensor.grad(grads).map(|g| {
                if *transposed {
                    values(&g.transpose())
                } else {
                    values(&g)
                }
            }),
        }
    }
}

fn afd(l: &Leaves, scale_key: &str, mode: ScaleMode) -> BuiltinLoss<B> {
    BuiltinLoss::Afd(AfdLoss {
        image_fusion: l.linear("param.afd.img"),
        text_fusion: l.linear("param.afd.txt"),
        scale: l.scale(scale_key, mode),
    })
}

/// The loss set computing fixture loss `name` from the leaves.
fn loss_set(name: &str, l: &Leaves) -> LossSet<B> {
    let single = |loss: BuiltinLoss<B>| {
        LossSet::new(l.projector())
            .with_loss(name, 1.0, loss)
            .unwrap()
    };
    let icl = |key: &str, mode| {
        BuiltinLoss::Icl(IclLoss {
            scale: l.scale(key, mode),
        })
    };
    match name {
        "task" | "distill_contrastive" => single(BuiltinLoss::Task(TaskLoss)),
        "crd" => single(BuiltinLoss::Crd(CrdLoss { temperature: 1.0 })),
        "crd_t2" => single(BuiltinLoss::Crd(CrdLoss { temperature: 2.0 })),
        "fd" => single(BuiltinLoss::Fd(FdLoss {
            distance: FeatureDistance::Mse,
        })),
        "fd_cos" => single(BuiltinLoss::Fd(FdLoss {
            distance: FeatureDistance::Cosine,
        })),
        "mfd" => single(BuiltinLoss::Mfd(MfdLoss {
            distance: FeatureDistance::Mse,
            include_text: true,
        })),
        "mfd_image_only" => single(BuiltinLoss::Mfd(MfdLoss {
            distance: FeatureDistance::Mse,
            include_text: false,
        })),
        "gd" => single(BuiltinLoss::Gd(GdLoss {
            scale_use: GdScaleUse::Divide,
        })),
        "gd_mul" => single(BuiltinLoss::Gd(GdLoss {
            scale_use: GdScaleUse::Multiply,
        })),
        "icl" => single(icl("param.icl.scale", ScaleMode::Raw)),
        "icl_exp" => single(icl("param.icl_exp.scale", ScaleMode::Exp)),
        "cross_kd" => single(BuiltinLoss::CrossKd(CrossKdLoss {
            scale: l.scale("param.cross_kd.scale", ScaleMode::Raw),
            temperature: 1.0,
        })),
        "afd" => single(afd(l, "param.afd.scale", ScaleMode::Raw)),
        "afd_exp" => single(afd(l, "param.afd_exp.scale", ScaleMode::Exp)),
        "distill" => single(BuiltinLoss::OpenClipDistill(OpenClipDistillLoss)),
        "recipe" => LossSet::new(l.projector())
            .with_loss("task", 1.0, BuiltinLoss::Task(TaskLoss))
            .unwrap()
            .with_loss("crd", 1.0, BuiltinLoss::Crd(CrdLoss { temperature: 1.0 }))
            .unwrap()
            .with_loss("icl", 1.0, icl("param.icl.scale", ScaleMode::Raw))
            .unwrap()
            .with_loss(
                "fd",
                2000.0,
                BuiltinLoss::Fd(FdLoss {
                    distance: FeatureDistance::Mse,
                }),
            )
            .unwrap(),
        other => panic!("fixture loss `{other}` has no Rust counterpart: add it here"),
    }
}

fn check_case(case: &str) {
    let meta: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fixture_dir().join("meta.json")).unwrap())
            .unwrap();
    let fixture = load_case(case);
    let losses = meta["cases"][case]["losses"].as_object().unwrap();
    assert!(
        losses.len() >= 17,
        "{case}: only {} losses in the fixture",
        losses.len()
    );
    let (mut worst_value, mut worst_grad, mut checked) = (0f64, 0f64, 0usize);
    for (name, info) in losses {
        let leaves = Leaves::new(&fixture);
        let set = loss_set(name, &leaves);
        let terms = set.forward(&leaves.input()).unwrap();
        let total = terms.total().unwrap();
        let expected = &fixture[&format!("loss.{name}.value")].values;
        assert_close(
            &format!("{case}/{name} value"),
            &values(&total),
            expected,
            TOL,
        );
        worst_value = worst_value.max(rel_err(&values(&total), expected));
        let grads = total.backward();
        let with_grad: Vec<&str> = info["grads"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap())
            .collect();
        assert!(
            !with_grad.is_empty(),
            "{case}/{name}: no gradients in the fixture"
        );
        for key in leaves.0.keys() {
            let actual = leaves.grad(key, &grads);
            if with_grad.contains(&key.as_str()) {
                let actual =
                    actual.unwrap_or_else(|| panic!("{case}/{name}: no gradient for {key}"));
                let expected = &fixture[&format!("loss.{name}.grad.{key}")].values;
                assert_close(&format!("{case}/{name} d/d {key}"), &actual, expected, TOL);
                worst_grad = worst_grad.max(rel_err(&actual, expected));
                checked += 1;
            } else if let Some(actual) = actual {
                // PyTorch has no gradient here: Burn's must be absent or zero.
                assert!(
                    actual.iter().all(|x| *x == 0.0),
                    "{case}/{name}: unexpected gradient for {key}"
                );
            }
        }
    }
    eprintln!(
        "{case}: {} losses, {checked} gradients; worst relative error: values {worst_value:.2e}, \
         gradients {worst_grad:.2e}",
        losses.len()
    );
}

#[test]
fn parity_student_and_teacher_sizes_differ() {
    check_case("diff");
}

#[test]
fn parity_same_sizes_no_projector() {
    check_case("same");
}

/// open_clip's `DistillClipLoss` contrastive part is CLIP-KD's task loss: both fixtures agree.
#[test]
fn open_clip_contrastive_equals_task() {
    for case in ["diff", "same"] {
        let f = load_case(case);
        assert_close(
            case,
            &f["loss.task.value"].values,
            &f["loss.distill_contrastive.value"].values,
            1e-7,
        );
    }
}
