//! How the `clipkd` binary behaves at its edges: non-finite weights and embeddings refused
//! before anything is written, a closed stdout, error chains that name each cause once, and
//! the libraries' warnings on stderr.
#![cfg(feature = "flex")]

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use common::{TempDir, clipkd};
use safetensors::SafeTensors;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures")
}

fn image() -> PathBuf {
    fixtures().join("images/src/astronaut_small.jpg")
}

fn stderr_of(args: &[&str]) -> String {
    let out = clipkd(args);
    assert!(!out.status.success(), "clipkd {args:?} should fail");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// `tiny.safetensors` with `edit` applied to its (f32) tensors, written to `path`.
fn write_tiny(path: &Path, edit: impl Fn(&str, &mut [f32])) {
    let bytes = std::fs::read(fixtures().join("models/tiny.safetensors")).unwrap();
    let file = SafeTensors::deserialize(&bytes).unwrap();
    let buffers: Vec<(String, Vec<usize>, Vec<u8>)> = file
        .tensors()
        .into_iter()
        .map(|(key, view)| {
            let mut values: Vec<f32> = view
                .data()
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
                .collect();
            edit(&key, &mut values);
            let bytes = values.iter().flat_map(|v| v.to_le_bytes()).collect();
            (key, view.shape().to_vec(), bytes)
        })
        .collect();
    let views: Vec<(String, safetensors::tensor::TensorView)> = buffers
        .iter()
        .map(|(key, shape, bytes)| {
            let view =
                safetensors::tensor::TensorView::new(safetensors::Dtype::F32, shape.clone(), bytes)
                    .unwrap();
            (key.clone(), view)
        })
        .collect();
    safetensors::serialize_to_file(views, None, path).unwrap();
}

fn embed_args<'a>(weights: &'a str, output: &'a str, image: &'a str) -> Vec<&'a str> {
    let model = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../tests/fixtures/models/tiny.json"
    );
    vec![
        "embed",
        "--model",
        model,
        "--weights",
        weights,
        "--image",
        image,
        "--output",
        output,
    ]
}

#[test]
fn embed_refuses_non_finite_weights_and_embeddings_and_writes_nothing() {
    let dir = TempDir::new("robust-embed");
    let out = dir.0.join("out.safetensors");
    let out_s = out.to_str().unwrap();
    let image = image();
    let image_s = image.to_str().unwrap();

    // Healthy weights embed.
    let good = dir.0.join("good.safetensors");
    write_tiny(&good, |_, _| {});
    let ok = clipkd(&embed_args(good.to_str().unwrap(), out_s, image_s));
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    // The file says what produced it.
    let bytes = std::fs::read(&out).unwrap();
    let (_, header) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
    let meta = header.metadata().clone().expect("__metadata__");
    assert_eq!(meta["format"], "clipkd-embeddings");
    assert!(meta["model"].ends_with("tiny.json"), "{meta:?}");
    assert_eq!(meta["weights"], good.to_str().unwrap());
    assert_eq!(meta["images"], serde_json::to_string(&[image_s]).unwrap());
    assert_eq!(meta["clipkd_version"], env!("CARGO_PKG_VERSION"));
    std::fs::remove_file(&out).unwrap();

    // An output that cannot be written is refused before the model runs, naming it once.
    let missing = dir.0.join("no-such-folder").join("out.safetensors");
    let err = stderr_of(&embed_args(
        good.to_str().unwrap(),
        missing.to_str().unwrap(),
        image_s,
    ));
    assert!(
        err.contains("no-such-folder") && err.contains("does not exist"),
        "{err}"
    );
    let err = stderr_of(&embed_args(
        good.to_str().unwrap(),
        dir.0.to_str().unwrap(),
        image_s,
    ));
    assert!(err.contains("is a directory"), "{err}");

    // NaN / inf weights: refused at load, naming the keys.
    let nan = dir.0.join("nan.safetensors");
    write_tiny(&nan, |key, values| match key {
        "visual.proj" => values[0] = f32::NAN,
        "ln_final.bias" => values[1] = f32::INFINITY,
        _ => {}
    });
    let err = stderr_of(&embed_args(nan.to_str().unwrap(), out_s, image_s));
    assert!(err.contains("visual.proj (1)"), "{err}");
    assert!(err.contains("ln_final.bias (1)"), "{err}");
    assert!(err.contains("2 non-finite"), "{err}");
    assert!(!out.exists(), "an output was written:\n{err}");

    // Finite weights that overflow f32 in the forward pass: the embedding is NaN.
    let huge = dir.0.join("huge.safetensors");
    write_tiny(&huge, |key, values| {
        if key == "visual.ln_post.bias" || key == "visual.proj" {
            values.fill(1e30);
        }
    });
    let err = stderr_of(&embed_args(huge.to_str().unwrap(), out_s, image_s));
    assert!(
        err.contains(&format!("the embedding of image {image_s} is not finite")),
        "{err}"
    );
    assert!(!out.exists(), "an output was written:\n{err}");
}

/// Runs `clipkd args` with a stdout whose reading end is already closed.
#[cfg(unix)]
fn with_closed_stdout(args: &[&str]) -> std::process::Output {
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    Command::new(env!("CARGO_BIN_EXE_clipkd"))
        .args(args)
        .stdout(writer)
        .stderr(Stdio::piped())
        .output()
        .unwrap()
}

#[cfg(unix)]
#[test]
fn a_closed_stdout_ends_the_command_quietly() {
    use std::os::unix::process::ExitStatusExt;

    for args in [
        &["distill", "--list-presets"][..],
        &["distill", "--print-config"],
        &[
            "train",
            "--preset",
            "vit-b-16-to-rn50-cc3m-12m",
            "--print-config",
        ],
    ] {
        let out = with_closed_stdout(args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
        assert!(stderr.is_empty(), "{args:?}: {stderr}");
        assert!(
            out.status.success() || out.status.signal() == Some(libc::SIGPIPE),
            "{args:?}: {:?}",
            out.status
        );
        assert_ne!(out.status.code(), Some(101), "{args:?}");
    }
}

/// How many times `needle` occurs in `haystack`.
fn count(haystack: &str, needle: &str) -> usize {
    haystack.matches(needle).count()
}

#[test]
fn each_cause_is_printed_once() {
    let dir = TempDir::new("robust-chain");

    // An I/O error inside a config error.
    let missing = dir.0.join("missing.toml");
    let err = stderr_of(&[
        "distill",
        "--config",
        missing.to_str().unwrap(),
        "--print-config",
    ]);
    let cause = std::fs::read(&missing).unwrap_err().to_string();
    assert_eq!(count(&err, &cause), 1, "{err}");
    assert!(err.contains("missing.toml"), "{err}");

    // A JSON syntax error inside a model-config error.
    let bad_json = dir.0.join("bad.json");
    std::fs::write(&bad_json, "{ \"embed_dim\": 16,, }").unwrap();
    let weights = dir.0.join("w.safetensors");
    write_tiny(&weights, |_, _| {});
    let out = dir.0.join("out.safetensors");
    let err = stderr_of(&[
        "embed",
        "--model",
        bad_json.to_str().unwrap(),
        "--weights",
        weights.to_str().unwrap(),
        "--image",
        image().to_str().unwrap(),
        "--output",
        out.to_str().unwrap(),
    ]);
    let cause = serde_json::from_str::<serde_json::Value>("{ \"embed_dim\": 16,, }")
        .unwrap_err()
        .to_string();
    assert_eq!(count(&err, &cause), 1, "{err}");
}

#[test]
fn library_warnings_reach_stderr() {
    let dir = TempDir::new("robust-log");
    let shard = dir.0.join("missing-0000.tar");
    // The tokenizer's vocabulary (open_clip's default), which a student needs.
    let student = dir.0.join("student.json");
    std::fs::write(
        &student,
        r#"{"embed_dim": 16,
            "vision_cfg": {"image_size": 16, "layers": 1, "width": 16, "head_width": 8, "patch_size": 8},
            "text_cfg": {"context_length": 8, "width": 16, "heads": 2, "layers": 1}}"#,
    )
    .unwrap();
    // Fails soon after (no `data.train_num_samples`), once the shards are listed.
    let args = [
        "train",
        "--student",
        student.to_str().unwrap(),
        "--train-data",
        shard.to_str().unwrap(),
        "--output",
        dir.0.join("run").to_str().unwrap(),
        "--quiet",
    ]
    .map(str::to_string);
    let expected = format!(
        "warning: webdataset shard {} does not exist (it will be skipped)",
        shard.display()
    );
    let out = clipkd(&args.iter().map(String::as_str).collect::<Vec<_>>());
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(count(&err, &expected), 1, "{err}");

    // RUST_LOG filters them.
    let out = Command::new(env!("CARGO_BIN_EXE_clipkd"))
        .args(&args)
        .env("RUST_LOG", "error")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!err.contains("warning: webdataset"), "{err}");
}
