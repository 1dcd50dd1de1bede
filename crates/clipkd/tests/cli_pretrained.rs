//! Pretrained weights by name through the `clipkd` binary, against a Hugging Face Hub on the
//! loopback address (`HF_ENDPOINT`; the server of the models crate's download tests): an
//! `hf-hub:` teacher is fetched into `HF_HUB_CACHE` by `clipkd download`, distils exactly as the
//! same weights from a local file do without asking the Hub again, and a resumed run reads it
//! offline (`HF_HUB_OFFLINE=1`); `embed` and `eval` of the `hf-hub:` model (and of the cache's
//! snapshot folder as `local-dir:`) equal those of the file; a pretrained tag asks
//! the tag's Hub repository (open_clip's file order) and names `teacher.pretrained` when its
//! file does not fit; an unknown tag lists the model's tags; offline with an empty cache names
//! what is missing; a repository that is not open_clip's is named.
#![cfg(feature = "flex")]

mod common;
#[path = "../../clipkd-models/tests/support/hub_server.rs"]
mod hub_server;
#[path = "common/train_setup.rs"]
mod train_setup;

use std::path::Path;
use std::process::{Command, Output};

use common::TempDir;
use hub_server::{COMMIT, Server};
use train_setup::{TEACHER_JSON, metric_rows};

/// `clipkd args` with the Hub at `server`, the cache in `cache`, and the other HF variables of
/// the environment removed; `offline` sets `HF_HUB_OFFLINE=1`.
fn clipkd_hub(args: &[&str], server: &Server, cache: &Path, offline: bool) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_clipkd"));
    for var in [
        "HF_HOME",
        "HF_TOKEN",
        "HF_HUB_OFFLINE",
        "HUGGINGFACE_HUB_CACHE",
    ] {
        command.env_remove(var);
    }
    command
        .env("HF_ENDPOINT", &server.address)
        .env("HF_HUB_CACHE", cache);
    if offline {
        command.env("HF_HUB_OFFLINE", "1");
    }
    command.args(args).output().expect("the clipkd binary runs")
}

fn succeeds(out: &Output) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "clipkd failed:\n{stderr}");
    stderr
}

fn fails(out: &Output) -> String {
    assert!(!out.status.success(), "clipkd should have failed");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

const REPO: &str = "test-org/tiny-teacher";

/// The tiny teacher of `train_setup` as an open_clip Hub repository.
fn serve_teacher(server: &Server, dir: &Path) {
    let config = serde_json::json!({
        "model_cfg": serde_json::from_str::<serde_json::Value>(TEACHER_JSON).unwrap(),
        "preprocess_cfg": {
            "mean": [0.48145466, 0.4578275, 0.40821073],
            "std": [0.26862954, 0.26130258, 0.27577711],
        },
    });
    server.add(
        &format!("/{REPO}/resolve/main/open_clip_config.json"),
        serde_json::to_vec(&config).unwrap(),
    );
    server.add(
        &format!("/{REPO}/resolve/main/open_clip_model.safetensors"),
        std::fs::read(dir.join("teacher.safetensors")).unwrap(),
    );
}

/// The run config of `train_setup` with the teacher's `model` and `weights` lines removed
/// (the command line names the teacher).
fn config_without_teacher(dir: &Path) -> String {
    let path = train_setup::setup(dir, "");
    let text = std::fs::read_to_string(&path).unwrap();
    let text: String = text
        .lines()
        .filter(|l| !l.contains("teacher.json") && !l.contains("teacher.safetensors"))
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(&path, text).unwrap();
    path.to_str().unwrap().to_string()
}

fn losses(run: &Path) -> Vec<f64> {
    metric_rows(run)
        .iter()
        .map(|r| r["total"].as_f64().unwrap())
        .collect()
}

#[test]
fn an_hf_hub_teacher_is_downloaded_once_and_distils_like_the_same_file() {
    let dir = TempDir::new("cli-pretrained-hub");
    let d = &dir.0;
    let config = config_without_teacher(d);
    let server = Server::start();
    serve_teacher(&server, d);
    let cache = d.join("hf-cache");
    let hub_teacher = format!("hf-hub:{REPO}");
    let run = d.join("run-hub");

    // Fetched ahead of time (as on a login node), the path printed.
    let out = clipkd_hub(
        &["download", "--model", &hub_teacher],
        &server,
        &cache,
        false,
    );
    succeeds(&out);
    let printed = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert!(
        printed.ends_with(&format!("{COMMIT}/open_clip_model.safetensors")),
        "{printed}"
    );
    let error = fails(&clipkd_hub(
        &["download", "--model", "ViT-B-16"],
        &server,
        &cache,
        true,
    ));
    assert!(error.contains("--pretrained TAG"), "{error}");
    let after_download = server.requests();

    // 2 of 8 steps with the Hub teacher (online, but the cache has it: nothing asked)...
    succeeds(&clipkd_hub(
        &[
            "distill",
            "--config",
            &config,
            "--teacher",
            &hub_teacher,
            "-o",
            run.to_str().unwrap(),
            "--set",
            "run.stop_after_steps=2",
            "-q",
        ],
        &server,
        &cache,
        false,
    ));
    assert_eq!(server.requests(), after_download);
    let snapshot = cache
        .join("models--test-org--tiny-teacher/snapshots")
        .join(COMMIT);
    assert!(snapshot.join("open_clip_config.json").is_file());
    assert_eq!(
        std::fs::read(snapshot.join("open_clip_model.safetensors")).unwrap(),
        std::fs::read(d.join("teacher.safetensors")).unwrap()
    );
    let saved = std::fs::read_to_string(run.join("config.toml")).unwrap();
    assert!(
        saved.contains(&format!("model = \"{hub_teacher}\"")),
        "{saved}"
    );

    // ... resumed offline: the cache alone, no request, the same config.
    let requests = server.requests();
    let stderr = succeeds(&clipkd_hub(
        &[
            "distill",
            "--config",
            &config,
            "--teacher",
            &hub_teacher,
            "-o",
            run.to_str().unwrap(),
            "--set",
            "run.stop_after_steps=4",
            "--resume",
        ],
        &server,
        &cache,
        true,
    ));
    assert_eq!(server.requests(), requests, "offline asked the Hub");
    assert!(!stderr.contains("differs"), "{stderr}");

    // The same teacher from its local file: the same losses, step for step.
    let local = d.join("run-local");
    succeeds(&clipkd_hub(
        &[
            "distill",
            "--config",
            &config,
            "--teacher",
            d.join("teacher.json").to_str().unwrap(),
            "--teacher-weights",
            d.join("teacher.safetensors").to_str().unwrap(),
            "-o",
            local.to_str().unwrap(),
            "--set",
            "run.stop_after_steps=4",
            "-q",
        ],
        &server,
        &cache,
        true,
    ));
    let (hub, file) = (losses(&run), losses(&local));
    assert_eq!(hub.len(), 4);
    assert_eq!(hub, file, "the downloaded teacher distils as the file does");

    // `embed` and `eval` (retrieval on the training images) of the Hub model equal those of
    // the file: one offline run of `command` per model, with `inputs`, writing `out`.
    std::fs::write(d.join("captions.txt"), "a photo of a red square\n").unwrap();
    let (image, captions, csv) = (
        d.join("images/00.bmp"),
        d.join("captions.txt"),
        d.join("train.csv"),
    );
    let run_with = |command: &str, model: &[&str], inputs: &[&str], out: &str| {
        let out_path = d.join(out);
        let mut args = vec![command];
        args.extend_from_slice(model);
        args.extend_from_slice(inputs);
        args.extend_from_slice(&["-o", out_path.to_str().unwrap()]);
        succeeds(&clipkd_hub(&args, &server, &cache, true));
        std::fs::read(&out_path).unwrap()
    };
    let embed_inputs = [
        "--image",
        image.to_str().unwrap(),
        "--text-file",
        captions.to_str().unwrap(),
    ];
    let embed = |model: &[&str], out: &str| {
        let bytes = run_with("embed", model, &embed_inputs, out);
        let file = safetensors::SafeTensors::deserialize(&bytes).unwrap();
        ["image_embeds", "text_embeds"].map(|n| file.tensor(n).unwrap().data().to_vec())
    };
    let eval_inputs = [
        "--retrieval",
        csv.to_str().unwrap(),
        "--retrieval-root",
        d.to_str().unwrap(),
    ];
    let eval = |model: &[&str], out: &str| -> serde_json::Value {
        serde_json::from_slice(&run_with("eval", model, &eval_inputs, out)).unwrap()
    };
    let (teacher_json, teacher_weights) = (d.join("teacher.json"), d.join("teacher.safetensors"));
    let file_model = [
        "--model",
        teacher_json.to_str().unwrap(),
        "--weights",
        teacher_weights.to_str().unwrap(),
    ];
    let hub_model = ["--model", hub_teacher.as_str()];

    let from_file = embed(&file_model, "file.safetensors");
    assert_eq!(embed(&hub_model, "hub.safetensors"), from_file);
    // The cache's snapshot is a folder laid out as the repository: `local-dir:` reads it.
    let local_dir = format!("local-dir:{}", snapshot.display());
    assert_eq!(
        embed(&["--model", &local_dir], "dir.safetensors"),
        from_file
    );

    // The results name the weights file the cache holds.
    let hub_results = eval(&hub_model, "hub.json");
    let file_results = eval(&file_model, "file.json");
    assert_eq!(hub_results["metrics"], file_results["metrics"]);
    assert!(
        hub_results["metrics"].as_object().unwrap().len() >= 4,
        "{hub_results}"
    );
    assert_eq!(
        hub_results["weights"],
        snapshot
            .join("open_clip_model.safetensors")
            .to_str()
            .unwrap()
    );
}

#[test]
fn a_pretrained_tag_is_fetched_from_its_repository_and_checked() {
    let dir = TempDir::new("cli-pretrained-tag");
    let d = &dir.0;
    let config = config_without_teacher(d);
    let server = Server::start();
    let cache = d.join("hf-cache");
    // A student of the tag's image size (it is never trained here: the teacher is refused).
    let student = d.join("student224.json");
    std::fs::write(
        &student,
        train_setup::STUDENT_JSON.replace(
            r#""image_size": 32, "layers": 1, "width": 32, "head_width": 16, "patch_size": 8"#,
            r#""image_size": 224, "layers": 1, "width": 32, "head_width": 16, "patch_size": 32"#,
        ),
    )
    .unwrap();
    let distill = |tag: &str, offline: bool| {
        clipkd_hub(
            &[
                "distill",
                "--config",
                &config,
                "--teacher",
                "ViT-B-16",
                "--teacher-pretrained",
                tag,
                "--student",
                student.to_str().unwrap(),
                "-q",
            ],
            &server,
            &cache,
            offline,
        )
    };

    // An unknown tag: refused before anything is asked, listing the model's tags.
    let error = fails(&distill("laion400m_e33", false));
    assert!(error.contains("teacher.pretrained"), "{error}");
    assert!(error.contains("laion400m_e32"), "{error}");
    assert_eq!(server.requests(), 0);

    // Offline with an empty cache: names the repository and the cache.
    let error = fails(&distill("laion400m_e32", true));
    assert!(
        error.contains("teacher.pretrained")
            && error.contains("timm/vit_base_patch16_clip_224.laion400m_e32")
            && error.contains("offline"),
        "{error}"
    );
    assert_eq!(server.requests(), 0);

    // Online: the tag's repository is asked for open_clip's files in order; here it holds the
    // tiny teacher's file, which is not a ViT-B-16: refused naming the field and the keys.
    let tag_repo = "timm/vit_base_patch16_clip_224.laion400m_e32";
    server.add(
        &format!("/{tag_repo}/resolve/main/open_clip_pytorch_model.bin"),
        std::fs::read(d.join("teacher.safetensors")).unwrap(),
    );
    let error = fails(&distill("laion400m_e32", false));
    assert!(error.contains("teacher.pretrained"), "{error}");
    let gets: Vec<String> = server.gets().into_iter().map(|(path, _)| path).collect();
    assert_eq!(
        gets,
        [format!(
            "/{tag_repo}/resolve/main/open_clip_pytorch_model.bin"
        )],
        "the safetensors was asked first (HEAD, missing), then the .bin downloaded"
    );
    assert!(
        cache
            .join("models--timm--vit_base_patch16_clip_224.laion400m_e32/.no_exist")
            .join(COMMIT)
            .join("open_clip_model.safetensors")
            .exists()
    );

    // A tag and a file for one teacher: refused by the command line.
    let out = clipkd_hub(
        &[
            "distill",
            "--config",
            &config,
            "--teacher-pretrained",
            "openai",
            "--teacher-weights",
            "t.safetensors",
        ],
        &server,
        &cache,
        true,
    );
    assert!(fails(&out).contains("cannot be used with"));

    // A repository that is not an open_clip one.
    server.add(
        "/someone/hf-transformers-clip/resolve/main/open_clip_config.json",
        br#"{"architectures": ["CLIPModel"]}"#.to_vec(),
    );
    let out = d.join("e.safetensors");
    let embed_fails = |model: &str, offline: bool| {
        fails(&clipkd_hub(
            &[
                "embed",
                "--model",
                model,
                "--text-file",
                config.as_str(),
                "-o",
                out.to_str().unwrap(),
            ],
            &server,
            &cache,
            offline,
        ))
    };
    let error = embed_fails("hf-hub:someone/hf-transformers-clip", false);
    assert!(error.contains("no `model_cfg`"), "{error}");
    // `embed` without any weights says what to give.
    let error = embed_fails("ViT-B-16", true);
    assert!(error.contains("--pretrained TAG"), "{error}");
}
