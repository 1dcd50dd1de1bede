//! An f16 mixed-precision run through the trainer: its loss scaler is in every checkpoint's
//! `state.json`, and a run interrupted and resumed takes the same steps (and scales its
//! losses the same) as one that was not.
//!
//! Alone in its own binary: the Flex backend's RNG is global to the process.

mod common;

use clipkd_train::checkpoint::{CHECKPOINTS_DIR, list_checkpoints, read_checkpoint_meta};
use clipkd_train::config::{Precision, TrainMode};
use clipkd_train::loss_scale::INITIAL_SCALE;
use common::{assert_same_steps, run_on_squares, steps, tiny_config, write_models};

#[test]
fn an_f16_run_checkpoints_its_loss_scale_and_resumes_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let (student, teacher, weights) = write_models(dir.path());
    let run = |out: &std::path::Path, stop: u64, resume: Option<&str>| {
        let mut c = tiny_config(&student, &teacher, &weights, out);
        c.run.precision = Precision::F16;
        c.optim.epochs = 3;
        c.run.stop_after_steps = Some(stop);
        run_on_squares(c, TrainMode::Distill, resume, 32)
    };
    let straight = dir.path().join("straight");
    assert_eq!(run(&straight, 10, None).steps, 10);
    // Interrupted while the scale is still coming down from 2^16 (these tiny models overflow
    // their f16 gradients down to 2^10): a resume that forgot the scaler would skip again.
    let resumed = dir.path().join("resumed");
    assert_eq!(run(&resumed, 3, None).steps, 3);
    assert_eq!(run(&resumed, 10, Some("latest")).steps, 10);

    let scaler = |run_dir: &std::path::Path| {
        let (step, path) = list_checkpoints(&run_dir.join(CHECKPOINTS_DIR))
            .unwrap()
            .pop()
            .unwrap();
        assert_eq!(step, 10);
        read_checkpoint_meta(&path)
            .unwrap()
            .0
            .loss_scaler
            .expect("an f16 run checkpoints its loss scaler")
    };
    let (a, b) = (scaler(&straight), scaler(&resumed));
    eprintln!("loss scaler after 10 steps: {a:?}");
    assert_eq!(a, b);
    // Each step either went through (the scale stays) or overflowed (halved and counted).
    assert_eq!(
        a.scale * 2f64.powi(a.skipped_steps as i32),
        INITIAL_SCALE,
        "{a:?}"
    );
    let (ra, rb) = (steps(&straight), steps(&resumed));
    assert!(
        a.skipped_steps >= 1,
        "no step overflowed: the test shows no skip"
    );
    assert_eq!(
        ra.len() as u64,
        10 - a.skipped_steps,
        "a skipped step logs no row"
    );
    assert!(
        ra.len() >= 3,
        "the run trained after the scale settled: {a:?}"
    );
    assert_same_steps(&ra, &rb);
}
