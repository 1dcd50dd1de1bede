//! The trainer on several local peers (`PreparedRun::run_on_devices`, CPU peers, one thread
//! each): 2 and 4 peers with the global batch take the steps of one device with the same
//! batch, for the paper's recipe (task + CRD + ICL + FD, with gradient accumulation and
//! clipping, 6 steps) and for task + GD (2 peers, 3 steps): every logged loss term within 1e-5
//! relative and the student's weights at the end within 1e-5 relative L2 (all parameters; 5e-5
//! per tensor, see `same_weights`), in f32 (the peers sum in another order). A 2-peer run
//! stopped after 3 steps and resumed on 2 peers, and one resumed on 4, end where the straight
//! run does.
//!
//! One test in this file: burn-collective's local server and the CPU backend's RNG are
//! global to the process.

mod common;

use std::path::Path;

use burn_flex::Flex;
use clipkd_train::config::{LossKind, TrainMode};
use clipkd_train::metrics::StepRecord;
use clipkd_train::progress::ProgressMode;
use clipkd_train::trainer::PreparedRun;
use common::{relative_l2, squares, steps, student_weights, term, tiny_config, write_models};

type B = burn::backend::Autodiff<Flex>;

/// The same logged steps (steps, learning rates, samples) with every term within `tol`
/// relative; returns the largest relative difference.
fn same_steps(what: &str, got: &[StepRecord], want: &[StepRecord], tol: f64) -> f64 {
    assert_eq!(got.len(), want.len(), "{what}: logged steps");
    let mut worst = 0.0f64;
    for (x, y) in got.iter().zip(want) {
        assert_eq!((x.step, x.epoch, x.lr), (y.step, y.epoch, y.lr), "{what}");
        assert_eq!(x.samples_seen, y.samples_seen, "{what}: samples seen");
        assert_eq!(
            x.loss.keys().collect::<Vec<_>>(),
            y.loss.keys().collect::<Vec<_>>()
        );
        for (name, want) in &y.loss {
            let error = (x.loss[name] - want).abs() / want.abs().max(1e-12);
            worst = worst.max(error);
            assert!(
                error <= tol,
                "{what}, step {} term {name}: {} vs one device's {want} ({error:.2e})",
                x.step,
                x.loss[name]
            );
        }
    }
    worst
}

/// All parameters together within 1e-5 relative (L2), each tensor within 5e-5; returns both
/// worst figures. Per tensor the attention's key bias is the worst: its exact gradient is zero
/// (a softmax does not see it), so it moves only by float noise, which AdamW normalises into
/// steps of the learning rate's size on one device and on peers alike.
fn same_weights(what: &str, got: &[Vec<f32>], want: &[Vec<f32>]) -> (f64, f64) {
    assert_eq!(got.len(), want.len(), "{what}: parameters");
    let mut worst = 0.0f64;
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        let error = relative_l2(g, w);
        worst = worst.max(error);
        assert!(
            error <= 5e-5,
            "{what}: parameter {i} differs by {error:.2e}"
        );
    }
    let all = relative_l2(&got.concat(), &want.concat());
    assert!(all <= 1e-5, "{what}: the parameters differ by {all:.2e}");
    (all, worst)
}

const RECIPE: &[LossKind] = &[LossKind::Task, LossKind::Crd, LossKind::Icl, LossKind::Fd];
const GD: &[LossKind] = &[LossKind::Task, LossKind::Gd];

#[test]
fn peers_train_like_one_device_with_the_global_batch() {
    let dir = tempfile::tempdir().unwrap();
    let (student, teacher, weights) = write_models(dir.path());
    let run_with =
        |out: &Path, world: usize, stop: u64, resume: Option<&str>, kinds: &[LossKind]| {
            let mut c = tiny_config(&student, &teacher, &weights, out);
            c.data.batch_size = 8;
            c.optim.grad_accum = 2;
            c.optim.grad_clip_norm = Some(1.0);
            c.optim.epochs = 3;
            c.optim.warmup = 2;
            c.loss.terms = kinds
                .iter()
                .map(|&k| term(k, if k == LossKind::Fd { 2000.0 } else { 1.0 }))
                .collect();
            c.run.stop_after_steps = Some(stop);
            let devices = vec![Default::default(); world];
            PreparedRun::prepare(c, TrainMode::Distill, resume)
                .unwrap()
                .with_data(squares(32))
                .unwrap()
                .with_progress(ProgressMode::Quiet)
                .run_on_devices::<B>(&devices)
                .unwrap()
        };
    let run = |out: &Path, world: usize, stop: u64, resume: Option<&str>| {
        run_with(out, world, stop, resume, RECIPE)
    };
    // GD (its key gradients sum over the whole batch): 3 steps on 1 and 2 peers.
    let gd_one = run_with(&dir.path().join("gd1"), 1, 3, None, GD);
    let gd_two = run_with(&dir.path().join("gd2"), 2, 3, None, GD);
    let terms = same_steps(
        "GD, 2 peers",
        &steps(&gd_two.run_dir),
        &steps(&gd_one.run_dir),
        1e-5,
    );
    let (all, worst) = same_weights(
        "GD, 2 peers",
        &student_weights(&gd_two),
        &student_weights(&gd_one),
    );
    println!(
        "GD, 2 peers: worst term {terms:.2e}, parameters {all:.2e} (worst tensor {worst:.2e})"
    );
    // 32 samples, batches of 8, 2 per step: 2 steps an epoch, 6 in all.
    let one = run(&dir.path().join("one"), 1, 6, None);
    assert_eq!((one.steps, one.total_steps), (6, 6));
    let reference = steps(&one.run_dir);
    let reference_weights = student_weights(&one);
    assert!(
        reference[5].loss["fd"] < 0.8 * reference[0].loss["fd"],
        "the run trains: {:?}",
        reference.iter().map(|r| r.loss["fd"]).collect::<Vec<_>>()
    );
    for world in [2, 4] {
        let what = format!("{world} peers");
        let run_dir = dir.path().join(format!("peers{world}"));
        let summary = run(&run_dir, world, 6, None);
        assert_eq!(summary.steps, 6, "{what}");
        let terms = same_steps(&what, &steps(&run_dir), &reference, 1e-5);
        let (all, worst) = same_weights(&what, &student_weights(&summary), &reference_weights);
        println!("{what}: worst term {terms:.2e}, parameters {all:.2e} (worst tensor {worst:.2e})");
    }
    // Interrupted at step 3 (mid-epoch) and resumed, on as many peers and on more.
    for (first, then) in [(2, 2), (2, 4)] {
        let what = format!("{first} peers, resumed on {then}");
        let run_dir = dir.path().join(format!("resume{first}to{then}"));
        let stopped = run(&run_dir, first, 3, None);
        assert!(stopped.stopped_early && stopped.steps == 3, "{what}");
        let resumed = run(&run_dir, then, 6, Some("latest"));
        assert_eq!(resumed.steps, 6, "{what}");
        let terms = same_steps(&what, &steps(&run_dir), &reference, 1e-5);
        let (all, worst) = same_weights(&what, &student_weights(&resumed), &reference_weights);
        println!("{what}: worst term {terms:.2e}, parameters {all:.2e} (worst tensor {worst:.2e})");
    }
}
