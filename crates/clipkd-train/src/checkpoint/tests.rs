use super::*;

#[test]
fn step_seeds_differ_and_are_stable() {
    assert_ne!(step_seed(0, 0), step_seed(0, 1));
    assert_ne!(step_seed(0, 1), step_seed(1, 1));
    assert_eq!(step_seed(7, 3), step_seed(7, 3));
}

#[test]
fn listing_ignores_temporaries_and_incomplete_dirs() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    for name in [
        "step-00000002",
        "step-00000010",
        ".tmp-step-00000011-1",
        "step-00000012",
    ] {
        fs::create_dir_all(root.join(name)).unwrap();
    }
    for (name, step) in [
        ("step-00000002", 2),
        ("step-00000010", 10),
        (".tmp-step-00000011-1", 11),
    ] {
        fake_checkpoint(&root.join(name), step);
    }
    // step-00000012 has no state.json: not a checkpoint.
    let steps: Vec<u64> = list_checkpoints(root)
        .unwrap()
        .into_iter()
        .map(|c| c.0)
        .collect();
    assert_eq!(steps, [2, 10]);
    assert_eq!(
        resolve_checkpoint("latest", root).unwrap(),
        root.join("step-00000010")
    );
    recover_checkpoints(root).unwrap();
    assert!(!root.join(".tmp-step-00000011-1").exists());
    prune_checkpoints(root, 1).unwrap();
    assert!(!root.join("step-00000002").exists());
    assert!(root.join("step-00000010").exists());
    let e = resolve_checkpoint("latest", &root.join("nowhere"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("nowhere"), "{e}");
}

fn fake_checkpoint(path: &Path, step: u64) {
    fs::create_dir_all(path).unwrap();
    let state = format!(
        r#"{{"step": {step}, "epoch": 0, "data_position": {{"epoch": 0, "batch": 0,
            "sample": 0, "anchor": 0}}, "rng": {{"seed": 0, "next_step": {step}}},
            "samples_seen": 0, "total_steps": 8, "config_hash": "x", "distill": true,
            "clipkd_version": "0"}}"#
    );
    fs::write(path.join(STATE_FILE), state).unwrap();
    for name in [MODEL_FILE, OPTIMIZER_FILE, CONFIG_FILE] {
        fs::write(path.join(name), format!("{name} of step {step}")).unwrap();
    }
}

/// A save of step 12 over an older step 12, killed between its two renames: the old copy
/// (`.replaced-…`) is still listed as step 12, is what resume finds, and is put back by
/// the recovery; the uncommitted new copy is removed.
#[test]
fn a_replacing_save_cut_between_its_renames_keeps_the_old_copy() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    fake_checkpoint(&root.join(".replaced-step-00000012"), 12);
    fake_checkpoint(&root.join(".tmp-step-00000012-77"), 12);
    let listed = list_checkpoints(root).unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].0, 12);
    let (found, notes) = find_checkpoint("latest", root).unwrap();
    assert!(found.ends_with(".replaced-step-00000012"), "{found:?}");
    assert!(notes.is_empty(), "{notes:?}");
    let notes = recover_checkpoints(root).unwrap();
    assert_eq!(notes.len(), 2, "{notes:?}");
    assert!(root.join("step-00000012").join(STATE_FILE).is_file());
    assert!(!root.join(".replaced-step-00000012").exists());
    assert!(!root.join(".tmp-step-00000012-77").exists());
    // With both copies present, the `.replaced-` one is the leftover.
    fake_checkpoint(&root.join(".replaced-step-00000012"), 12);
    assert_eq!(list_checkpoints(root).unwrap().len(), 1);
    recover_checkpoints(root).unwrap();
    assert!(!root.join(".replaced-step-00000012").exists());
    assert!(root.join("step-00000012").exists());
}

/// Pruning renames first: a prune killed halfway leaves a `.deleting-…` folder, which is
/// not a checkpoint (even with its state.json still there) and is removed on recovery.
#[test]
fn a_half_pruned_checkpoint_is_never_listed_and_is_cleaned() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    for step in [2, 4, 6] {
        fake_checkpoint(&root.join(checkpoint_name(step)), step);
    }
    fake_checkpoint(&root.join(".deleting-step-00000001"), 1);
    let steps: Vec<u64> = list_checkpoints(root)
        .unwrap()
        .iter()
        .map(|c| c.0)
        .collect();
    assert_eq!(steps, [2, 4, 6]);
    prune_checkpoints(root, 0).unwrap();
    let steps: Vec<u64> = list_checkpoints(root)
        .unwrap()
        .iter()
        .map(|c| c.0)
        .collect();
    assert_eq!(steps, [6], "keep 0 still keeps the newest");
    recover_checkpoints(root).unwrap();
    let left: Vec<String> = fs::read_dir(root)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(left, ["step-00000006"]);
}

/// A damaged latest checkpoint is passed over (with a note naming the file and what is
/// wrong) for the previous one; named by its own path, it is an error.
#[test]
fn a_damaged_latest_checkpoint_falls_back_to_the_previous_one() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    for step in [3, 6] {
        let path = root.join(checkpoint_name(step));
        fake_checkpoint(&path, step);
        let mut manifest = Manifest::default();
        for name in [MODEL_FILE, OPTIMIZER_FILE, CONFIG_FILE, STATE_FILE] {
            manifest
                .files
                .insert(name.into(), FileCheck::of(&path.join(name)).unwrap());
        }
        fs::write(
            path.join(MANIFEST_FILE),
            serde_json::to_string(&manifest).unwrap(),
        )
        .unwrap();
    }
    let latest = root.join(checkpoint_name(6));
    assert_eq!(find_checkpoint("latest", root).unwrap().0, latest);
    // Truncated: named with both sizes.
    fs::write(latest.join(MODEL_FILE), "model").unwrap();
    let (found, notes) = find_checkpoint("latest", root).unwrap();
    assert_eq!(found, root.join(checkpoint_name(3)));
    assert_eq!(notes.len(), 1);
    assert!(
        notes[0].contains("model.mpk is 5 bytes") && notes[0].contains("truncated"),
        "{notes:?}"
    );
    let e = find_checkpoint(latest.to_str().unwrap(), root)
        .unwrap_err()
        .to_string();
    assert!(e.contains("model.mpk") && e.contains("truncated"), "{e}");
    // Same length, other bytes: the CRC tells.
    fs::write(latest.join(MODEL_FILE), "model.mpk of step 9").unwrap();
    let (_, notes) = find_checkpoint("latest", root).unwrap();
    assert!(notes[0].contains("CRC-32"), "{notes:?}");
}
