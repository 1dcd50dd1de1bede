//! `clipkd distill --devices cpu,cpu`: two CPU peers in one process (one thread each) take the
//! steps of one device with the same global batch (every logged term within 1e-5 relative, the
//! weights within 1e-5 relative L2, the same evaluations);
//! a peer that stops responding makes the run fail within `run.collective_timeout_s`, naming
//! it, and the run resumes from its last checkpoint to the straight run's end; a peer that
//! fails ends the run at once with its error. Two processes on localhost, each a node of two
//! CPU peers, joined through burn-collective's orchestrator (node 0 starts it), take the same
//! steps; a node started with another config is refused at join; a node that never starts
//! makes the other fail after the timeout; a node that is killed makes
//! the other fail at once, naming it, and both resume from the last checkpoint to the straight
//! run's end. With unusable images, each node reads and skips only its own part of the data,
//! saves its own position, and a killed-and-resumed run ends bit-identical to the straight one.
#![cfg(feature = "flex")]

mod common;
#[path = "common/train_setup.rs"]
mod train_setup;

use std::path::Path;
use std::process::{Child, Command, Stdio};

use clipkd_train::checkpoint::{CHECKPOINTS_DIR, list_checkpoints, student_weights_path};
use std::time::{Duration, Instant};

use common::{TempDir, ok};
use train_setup::metric_rows;

/// Every logged term of `got` within 1e-5 relative of `want`'s, step by step, relative to at
/// least 0.1: a term's float noise follows the magnitudes it is computed from (logits, losses of
/// order 0.1-10), not its own value once it converges toward 0 (a CRD term of 0.0063 at step 8
/// differed by 1.0e-7 between 2 peers and one device, 1.6e-5 of itself: the CPU backend's
/// parallel sums do not add in a fixed order).
fn same_terms(what: &str, got: &[serde_json::Value], want: &[serde_json::Value]) {
    assert_eq!(got.len(), want.len(), "{what}: logged steps");
    for (x, y) in got.iter().zip(want) {
        assert_eq!(x["step"], y["step"], "{what}");
        assert_eq!(x["lr"], y["lr"], "{what}");
        let (tx, ty) = (
            x["loss"].as_object().unwrap(),
            y["loss"].as_object().unwrap(),
        );
        assert_eq!(tx.keys().collect::<Vec<_>>(), ty.keys().collect::<Vec<_>>());
        for (term, v) in ty {
            let (a, b) = (tx[term].as_f64().unwrap(), v.as_f64().unwrap());
            assert!(
                (a - b).abs() <= 1e-5 * b.abs().max(0.1),
                "{what}, step {}, {term}: {a} vs one device's {b}",
                x["step"]
            );
        }
    }
}

/// `distill --config CONFIG --devices cpu,cpu -q -o OUT` and `extra`.
fn two_peers<'a>(config: &'a str, out: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec![
        "distill",
        "--config",
        config,
        "--devices",
        "cpu,cpu",
        "-q",
        "-o",
        out,
    ];
    args.extend_from_slice(extra);
    args
}

/// Runs `clipkd args` with `CLIPKD_PEER_FAULT=fault`; asserts that it fails and returns its
/// stderr and how long it took.
fn fails_with_fault(fault: &str, args: &[&str]) -> (String, Duration) {
    let start = Instant::now();
    let out = Command::new(env!("CARGO_BIN_EXE_clipkd"))
        .args(args)
        .env("CLIPKD_PEER_FAULT", fault)
        .output()
        .expect("the clipkd binary runs");
    let took = start.elapsed();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        !out.status.success(),
        "{fault}: the run should fail:\n{stderr}"
    );
    (stderr, took)
}

#[test]
fn two_cpu_peers_distill_like_one_device_and_fail_in_bounded_time() {
    let dir = TempDir::new("cli-data-parallel");
    // 16 images, global batches of 4: 8 steps, a checkpoint after each.
    let config = train_setup::setup(
        &dir.0,
        &format!(
            "checkpoint_every_steps = 1\n{}",
            train_setup::retrieval_on_training_images(&dir.0)
        ),
    );
    let c = config.to_str().unwrap();
    let out = |name: &str| dir.0.join(name).to_str().unwrap().to_string();

    let one = out("one");
    ok(&["distill", "--config", c, "-q", "-o", &one]);
    let reference = metric_rows(dir.0.join("one").as_path());
    assert_eq!(reference.len(), 8);

    let two = out("two");
    ok(&two_peers(c, &two, &[]));
    same_terms(
        "2 peers",
        &metric_rows(dir.0.join("two").as_path()),
        &reference,
    );
    let error = relative_l2(
        &student_weights(&dir.0.join("two")),
        &student_weights(&dir.0.join("one")),
    );
    println!("2 peers: weights within {error:.2e} of one device");
    assert!(error <= 1e-5, "2 peers: weights differ by {error:.2e}");
    // Evaluation runs once, on peer 0, with the numbers of one device.
    let evals = |run: &str| -> Vec<serde_json::Value> {
        std::fs::read_to_string(dir.0.join(run).join("eval.jsonl"))
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    };
    let (e1, e2) = (evals("one"), evals("two"));
    assert_eq!(e1.len(), 2, "evaluations at steps 4 and 8: {e1:?}");
    for (a, b) in e1.iter().zip(&e2) {
        assert_eq!(a["step"], b["step"]);
        let (ma, mb) = (
            a["metrics"].as_object().unwrap(),
            b["metrics"].as_object().unwrap(),
        );
        assert_eq!(ma.keys().collect::<Vec<_>>(), mb.keys().collect::<Vec<_>>());
        for (name, v) in ma {
            let (x, y) = (v.as_f64().unwrap(), mb[name].as_f64().unwrap());
            assert!(
                (x - y).abs() <= 1e-6,
                "step {}: {name} {x} vs {y}",
                a["step"]
            );
        }
    }

    // Peer 1 stops responding before its third step: peer 0 waits in the step's first
    // collective, and the run fails once it has waited 10 s, naming peer 1.
    let stalled = out("stalled");
    let (e, took) = fails_with_fault(
        "stall:1:3",
        &two_peers(c, &stalled, &["--set", "run.collective_timeout_s=10"]),
    );
    assert!(
        e.contains("peer 1") && e.contains("run.collective_timeout_s = 10"),
        "{e}"
    );
    assert!(took < Duration::from_secs(120), "took {took:?}: {e}");
    // Steps 1 and 2 were checkpointed; the resumed run ends where the straight one does.
    assert_eq!(metric_rows(dir.0.join("stalled").as_path()).len(), 2);
    ok(&two_peers(c, &stalled, &["--resume"]));
    same_terms(
        "2 peers, stalled and resumed",
        &metric_rows(dir.0.join("stalled").as_path()),
        &reference,
    );

    // A peer that fails ends the run with its error, without waiting for the timeout.
    let failed = out("failed");
    let (e, took) = fails_with_fault("fail:1:2", &two_peers(c, &failed, &[]));
    assert!(
        e.contains("data-parallel peer 1 failed") && e.contains("fails before its step 2"),
        "{e}"
    );
    assert!(took < Duration::from_secs(300), "took {took:?}");

    // Two backends, or a batch that does not split evenly, are refused before any work.
    let e = fails_with_fault(
        "",
        &[
            "distill",
            "--config",
            c,
            "--devices",
            "cpu,cpu,cpu",
            "-q",
            "-o",
            &out("uneven"),
        ],
    )
    .0;
    assert!(
        e.contains("data.batch_size") && e.contains("3 devices"),
        "{e}"
    );
}

/// The student of the latest checkpoint of `run` (its open_clip state dict), every value in key
/// order, without the attention's key biases (the middle third of each `in_proj_bias`): their
/// exact gradient is zero (`softmax(q·k + q·b_k)` does not depend on `b_k`), so they move only by
/// float noise, which AdamW turns into steps of the learning rate's size whatever the number of
/// peers (measured: 2e-2 relative on a 4-peer run, every other parameter within 5e-7).
fn student_weights(run: &Path) -> Vec<f32> {
    let (_, latest) = list_checkpoints(&run.join(CHECKPOINTS_DIR))
        .unwrap()
        .pop()
        .expect("a checkpoint");
    let bytes = std::fs::read(student_weights_path(&latest)).unwrap();
    let file = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut names: Vec<String> = file.names().into_iter().map(String::from).collect();
    names.sort();
    let mut out = Vec::new();
    for name in names {
        let tensor = file.tensor(&name).unwrap();
        let values: Vec<f32> = tensor
            .data()
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        if name.ends_with("in_proj_bias") {
            let d = values.len() / 3;
            out.extend_from_slice(&values[..d]);
            out.extend_from_slice(&values[2 * d..]);
        } else {
            out.extend(values);
        }
    }
    out
}

/// The relative L2 difference of two weight vectors.
fn relative_l2(a: &[f32], b: &[f32]) -> f64 {
    assert_eq!(a.len(), b.len());
    let diff: f64 = a
        .iter()
        .zip(b)
        .map(|(x, y)| (*x as f64 - *y as f64).powi(2))
        .sum();
    let norm: f64 = b.iter().map(|y| (*y as f64).powi(2)).sum();
    (diff / norm).sqrt()
}

/// A free TCP port on the loopback interface.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Starts node `rank` of 2 (2 CPU peers each) with `args` added; `fault` in CLIPKD_PEER_FAULT.
fn node(rank: usize, orchestrator: u16, args: &[&str], fault: &str) -> Child {
    let rank_text = rank.to_string();
    let address = format!("127.0.0.1:{}", free_port());
    let orchestrator = format!("127.0.0.1:{orchestrator}");
    let mut all = vec![
        "distill",
        "--devices",
        "cpu,cpu",
        "-q",
        "--num-nodes",
        "2",
        "--node-rank",
        &rank_text,
        "--orchestrator",
        &orchestrator,
        "--node-address",
        &address,
    ];
    all.extend_from_slice(args);
    Command::new(env!("CARGO_BIN_EXE_clipkd"))
        .args(&all)
        .env("CLIPKD_PEER_FAULT", fault)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the clipkd binary runs")
}

/// Waits for both nodes; returns (success, stderr) of each.
fn wait_nodes(nodes: [Child; 2]) -> Vec<(bool, String)> {
    nodes
        .into_iter()
        .map(|child| {
            let out = child.wait_with_output().unwrap();
            (
                out.status.success(),
                String::from_utf8_lossy(&out.stderr).into_owned(),
            )
        })
        .collect()
}

#[test]
fn two_nodes_of_two_peers_on_localhost_distill_like_one_device() {
    let dir = TempDir::new("cli-two-nodes");
    let config = train_setup::setup(
        &dir.0,
        "checkpoint_every_steps = 1\ncollective_timeout_s = 15\n",
    );
    let c = config.to_str().unwrap();
    let out = |name: &str| dir.0.join(name).to_str().unwrap().to_string();
    let one = out("one");
    ok(&["distill", "--config", c, "-q", "-o", &one]);
    let reference = metric_rows(dir.0.join("one").as_path());

    // 2 nodes x 2 peers, global batch 4: one sample per peer.
    let run = out("nodes");
    let port = free_port();
    let base = ["--config", c, "-o", run.as_str()];
    let results = wait_nodes([node(0, port, &base, ""), node(1, port, &base, "")]);
    for (rank, (success, _)) in results.iter().enumerate() {
        assert!(success, "node {rank} failed: {results:#?}");
    }
    same_terms(
        "2 nodes x 2 peers",
        &metric_rows(dir.0.join("nodes").as_path()),
        &reference,
    );
    // The student's weights at the end (see `student_weights`): within 1e-5 relative L2.
    let reference_weights = student_weights(&dir.0.join("one"));
    let error = relative_l2(&student_weights(&dir.0.join("nodes")), &reference_weights);
    println!("2 nodes x 2 peers: weights within {error:.2e} of one device");
    assert!(
        error <= 1e-5,
        "2 nodes x 2 peers: weights differ by {error:.2e}"
    );

    // Node 1 with another learning rate is refused when it joins, and so is node 0.
    let refused = out("refused");
    let port = free_port();
    let base = ["--config", c, "-o", refused.as_str()];
    let other = [
        "--config",
        c,
        "-o",
        refused.as_str(),
        "--set",
        "optim.lr=1e-3",
    ];
    let results = wait_nodes([node(0, port, &base, ""), node(1, port, &other, "")]);
    for (rank, (success, stderr)) in results.iter().enumerate() {
        assert!(!success, "node {rank} should be refused");
        assert!(
            stderr.contains("refused") && stderr.contains("another config"),
            "{stderr}"
        );
    }

    // Node 1 is killed before its third step: node 0 fails within the timeout; both resume
    // from the last checkpoint and end on the single-device trajectory.
    // Node 1 never starts: node 0 waits at join and fails after the timeout, saying so.
    let alone = out("alone");
    let port = free_port();
    let start = Instant::now();
    let out0 = node(0, port, &["--config", c, "-o", alone.as_str()], "")
        .wait_with_output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out0.stderr);
    assert!(!out0.status.success(), "node 0 alone should fail");
    assert!(
        stderr.contains("never joined")
            && stderr.contains("only 1 of the 2 nodes registered")
            && stderr.contains("(ws://127.0.0.1:")
            && stderr.contains("collective_timeout_s = 15"),
        "{stderr}"
    );
    assert!(start.elapsed() < Duration::from_secs(120), "{stderr}");

    let killed = out("killed");
    let port = free_port();
    let base = ["--config", c, "-o", killed.as_str()];
    let start = Instant::now();
    let results = wait_nodes([node(0, port, &base, ""), node(1, port, &base, "exit:1:3")]);
    let took = start.elapsed();
    assert!(!results[1].0, "node 1 was killed: {results:#?}");
    let (success, stderr) = &results[0];
    assert!(!success, "node 0 should fail");
    // The broken connection ends its collective at once, naming the node that is gone.
    assert!(
        stderr.contains("node 1 (127.0.0.1:") && stderr.contains("no longer answer"),
        "{stderr}"
    );
    assert!(took < Duration::from_secs(180), "took {took:?}: {stderr}");
    let port = free_port();
    let resume = ["--config", c, "-o", killed.as_str(), "--resume"];
    let results = wait_nodes([node(0, port, &resume, ""), node(1, port, &resume, "")]);
    for (rank, (success, stderr)) in results.iter().enumerate() {
        assert!(success, "resumed node {rank} failed:\n{stderr}");
    }
    same_terms(
        "2 nodes, killed and resumed",
        &metric_rows(dir.0.join("killed").as_path()),
        &reference,
    );
    let error = relative_l2(&student_weights(&dir.0.join("killed")), &reference_weights);
    println!("2 nodes, killed and resumed: weights within {error:.2e} of one device");
    assert!(
        error <= 1e-5,
        "2 nodes, killed and resumed: weights differ by {error:.2e}"
    );
}

/// Each node's data position, by node rank, in the checkpoint of `step` of `run`.
fn node_positions(run: &Path, step: u64) -> Vec<clipkd_data::loader::DataPosition> {
    let checkpoints = list_checkpoints(&run.join(CHECKPOINTS_DIR)).unwrap();
    let (_, path) = checkpoints.iter().find(|(s, _)| *s == step).unwrap();
    let (state, _) = clipkd_train::checkpoint::read_checkpoint_meta(path).unwrap();
    state.node_positions
}

#[test]
fn two_nodes_read_their_own_parts_of_the_data_and_resume_exactly() {
    let dir = TempDir::new("cli-two-nodes-parts");
    let config = train_setup::setup(
        &dir.0,
        "checkpoint_every_steps = 1\nkeep_checkpoints = 8\ncollective_timeout_s = 15\n",
    );
    // Two images that cannot be used: the node whose part holds one skips it and refills from
    // its own next samples, so the nodes' data positions differ.
    for bad in ["images/05.bmp", "images/10.bmp"] {
        std::fs::write(dir.0.join(bad), b"not an image").unwrap();
    }
    let c = config.to_str().unwrap();
    let out = |name: &str| dir.0.join(name).to_str().unwrap().to_string();

    let straight = out("straight");
    let port = free_port();
    let tolerant = "data.max_skipped_fraction=0.5";
    let base = ["--config", c, "-o", straight.as_str(), "--set", tolerant];
    let results = wait_nodes([node(0, port, &base, ""), node(1, port, &base, "")]);
    for (rank, (success, _)) in results.iter().enumerate() {
        assert!(success, "node {rank} failed: {results:#?}");
    }
    let run = dir.0.join("straight");
    let rows = metric_rows(&run);
    assert_eq!(rows.len(), 8, "two epochs of 4 steps");
    // Every node read batches of 2 (its part of each global batch of 4): after step 1 each
    // has used 2 samples of its own sequence, plus the ones it skipped.
    let after_one = node_positions(&run, 1);
    assert_eq!(after_one.len(), 2);
    for (node, p) in after_one.iter().enumerate() {
        let skipped: u64 = p.skipped.values().sum();
        assert_eq!(p.sample, 2 + skipped, "node {node}: {p}");
    }
    // Each unusable image is skipped by the one node whose part holds it, once per pass: the
    // logged count (over the nodes) never exceeds the two images.
    let most = rows
        .iter()
        .map(|r| r["skipped"].as_u64().unwrap())
        .max()
        .unwrap();
    assert!((1..=2).contains(&most), "skipped counts: {rows:?}");
    // Where the nodes differ, a resumed node must take its own position.
    let differ = (1..8).find(|&s| {
        let p = node_positions(&run, s);
        p[0] != p[1]
    });
    let kill_after = differ.expect("the nodes' positions differ after some step");
    println!("node positions differ after step {kill_after}");

    // Node 1 dies right after that step's checkpoint; both resume and end on the straight
    // run's trajectory (the same nodes and peers: the same sums).
    let killed = out("killed");
    let port = free_port();
    let fault = format!("exit:1:{}", kill_after + 1);
    let base = ["--config", c, "-o", killed.as_str(), "--set", tolerant];
    let results = wait_nodes([node(0, port, &base, ""), node(1, port, &base, &fault)]);
    assert!(
        !results[1].0 && !results[0].0,
        "node 1 was killed: {results:#?}"
    );
    let port = free_port();
    let resume = [
        "--config",
        c,
        "-o",
        killed.as_str(),
        "--set",
        tolerant,
        "--resume",
    ];
    let results = wait_nodes([node(0, port, &resume, ""), node(1, port, &resume, "")]);
    for (rank, (success, stderr)) in results.iter().enumerate() {
        assert!(success, "resumed node {rank} failed:\n{stderr}");
    }
    same_terms(
        "2 nodes with skipped samples, killed and resumed",
        &metric_rows(dir.0.join("killed").as_path()),
        &rows,
    );
    let error = relative_l2(
        &student_weights(&dir.0.join("killed")),
        &student_weights(&run),
    );
    println!("2 nodes with skips, killed and resumed: weights within {error:.2e} of straight");
    assert!(error <= 1e-6, "weights differ by {error:.2e}");

    // The same checkpoint resumed on one node: its part of the data changes, so the pass goes
    // on at its global batch, and the run says so.
    let one = out("one-node");
    let from = list_checkpoints(&dir.0.join("killed").join(CHECKPOINTS_DIR))
        .unwrap()
        .into_iter()
        .find(|(s, _)| *s == kill_after)
        .unwrap()
        .1;
    let output = Command::new(env!("CARGO_BIN_EXE_clipkd"))
        .args(["distill", "--config", c, "-o", &one, "--set", tolerant])
        .arg("--resume")
        .arg(&from)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(
        stderr.contains("written by 2 node(s) and this run has 1")
            && stderr.contains(&format!("at its global batch {kill_after}")),
        "{stderr}"
    );
    assert_eq!(metric_rows(Path::new(&one)).last().unwrap()["step"], 8);
}
