//! Exact resume: a run interrupted and resumed takes the same steps as one that was not.
//!
//! This file holds a single test on purpose: the Flex backend's RNG is global to the process,
//! so another test running at the same time in the same binary could draw from it.

mod common;

use clipkd_train::checkpoint::{CHECKPOINTS_DIR, list_checkpoints};
use clipkd_train::config::TrainMode;
use common::{
    assert_same_steps, recipe_with_mfd, run_on_squares, steps, tiny_config, write_models,
};

/// Run A: 7 steps straight. Run B: 3 steps, stop (checkpoint), resume from `latest`, 4 more.
/// Every logged term of every step agrees within 1e-6 (Flex, f32). The run exercises
/// everything with state: MFD's random masks (backend RNG), ICL's learnable scale and the
/// projectors (loss module), gradient accumulation over 2 micro-batches, global-norm
/// clipping, warmup and the epoch boundary at step 4 (32 samples, batches of 4, 2 per step).
#[test]
fn interrupted_and_resumed_run_takes_the_same_steps() {
    let dir = tempfile::tempdir().unwrap();
    let (student, teacher, weights) = write_models(dir.path());
    let run = |out: &std::path::Path, stop: u64, resume: Option<&str>| {
        let mut c = tiny_config(&student, &teacher, &weights, out);
        c.data.batch_size = 4;
        c.optim.grad_accum = 2;
        c.optim.grad_clip_norm = Some(1.0);
        c.optim.epochs = 3;
        c.optim.warmup = 3;
        c.loss.terms = recipe_with_mfd();
        c.run.stop_after_steps = Some(stop);
        c.run.checkpoint_at_epoch_end = true;
        run_on_squares(c, TrainMode::Distill, resume, 32)
    };
    let straight = dir.path().join("straight");
    let a = run(&straight, 7, None);
    assert_eq!((a.steps, a.total_steps), (7, 12));
    assert!(a.stopped_early);

    let resumed = dir.path().join("resumed");
    let b1 = run(&resumed, 3, None);
    assert_eq!(b1.steps, 3);
    let b2 = run(&resumed, 7, Some("latest"));
    assert_eq!(b2.steps, 7);

    let (ra, rb) = (steps(&straight), steps(&resumed));
    assert_eq!(ra.len(), 7);
    // The run trains (the comparison is not between two frozen models).
    assert!(
        ra[6].loss["fd"] < 0.7 * ra[0].loss["fd"],
        "{:?}",
        ra[6].loss
    );
    let max_diff = ra
        .iter()
        .zip(&rb)
        .flat_map(|(x, y)| x.loss.iter().map(move |(n, v)| (v - y.loss[n]).abs()))
        .fold(0.0f64, f64::max);
    eprintln!("largest difference of a term, straight vs resumed: {max_diff:e}");
    assert_eq!(
        rb.len(),
        7,
        "the resumed run's metrics file holds one trajectory"
    );
    assert_same_steps(&ra, &rb);
    // Checkpoints of the resumed run: step 3 (stop), 4 (epoch end), 7 (stop); keep 3.
    let kept: Vec<u64> = list_checkpoints(&resumed.join(CHECKPOINTS_DIR))
        .unwrap()
        .iter()
        .map(|c| c.0)
        .collect();
    assert_eq!(kept, [3, 4, 7]);
}
