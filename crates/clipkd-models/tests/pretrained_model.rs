//! open_clip's `(model_name, pretrained)` pairs resolved through a Hub on the loopback address
//! (`support::hub_server`): a bundled model with a tag (its weights, QuickGELU, its
//! preprocessing), a `hf-hub:org/name` repository (its `open_clip_config.json` and weights), and
//! the refusals (a tag on a Hub repository or a file, an unknown tag, a repository without
//! `model_cfg`, a name that is not a repository id); a `local-dir:` folder, its checkpoint
//! picked as open_clip picks it.

mod support;

use clipkd_models::config::Activation;
use clipkd_models::{
    ClipConfig, HubCache, HubClient, ModelError, ModelSource, PretrainedModel, load_open_clip,
    save_open_clip,
};
use serde_json::json;
use support::hub_server::Server;

fn client(server: &Server, cache: &std::path::Path) -> HubClient {
    HubClient::new(&server.address, HubCache::new(cache))
}

fn tiny_config() -> ClipConfig {
    ClipConfig::from_open_clip_value(json!({
        "embed_dim": 16,
        "vision_cfg": {"image_size": 16, "layers": 1, "width": 32, "head_width": 16,
                       "patch_size": 8},
        "text_cfg": {"context_length": 8, "vocab_size": 64, "width": 32, "heads": 2,
                     "layers": 1},
    }))
    .unwrap()
}

/// A small model saved as open_clip safetensors, and its bytes.
fn tiny_checkpoint(config: &ClipConfig) -> Vec<u8> {
    use burn_flex::Flex;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("w.safetensors");
    let model = config.init::<Flex>(&Default::default()).unwrap();
    save_open_clip(&model, &path).unwrap();
    std::fs::read(&path).unwrap()
}

#[test]
fn a_hub_repository_brings_its_config_preprocessing_and_weights() {
    let server = Server::start();
    let config = tiny_config();
    let repo = "someone/tiny-clip";
    server.add(
        &format!("/{repo}/resolve/main/open_clip_config.json"),
        serde_json::to_vec(&json!({
            "model_cfg": config.to_open_clip_value(),
            "preprocess_cfg": {"mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5]},
        }))
        .unwrap(),
    );
    let bytes = tiny_checkpoint(&config);
    server.add(
        &format!("/{repo}/resolve/main/open_clip_model.safetensors"),
        bytes.clone(),
    );
    let cache = tempfile::tempdir().unwrap();
    let source = ModelSource::named("hf-hub:someone/tiny-clip");
    assert_eq!(source, ModelSource::Hub(repo.into()));
    assert_eq!(source.to_string(), "hf-hub:someone/tiny-clip");
    let model =
        PretrainedModel::new(source.clone(), None).with_client(client(&server, cache.path()));

    assert_eq!(model.config().unwrap(), config);
    let weights = model.weights().unwrap().unwrap();
    assert_eq!(std::fs::read(&weights).unwrap(), bytes);
    load_open_clip::<burn_flex::Flex>(&weights, &config, &Default::default()).unwrap();
    assert_eq!(
        model.preprocess_cfg().unwrap().unwrap(),
        json!({"mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5]})
    );
    // Served from the cache from now on, offline too.
    let requests = server.requests();
    let offline = PretrainedModel::new(source.clone(), None)
        .with_client(client(&server, cache.path()).with_offline(true));
    assert_eq!(offline.config().unwrap(), config);
    assert_eq!(offline.weights().unwrap().unwrap(), weights);
    assert_eq!(server.requests(), requests);

    // A tag cannot apply: the repository's weights are the model's.
    let tagged = PretrainedModel::new(source, Some("openai".into()));
    assert!(matches!(
        tagged.config(),
        Err(ModelError::TagNotApplicable { .. })
    ));
}

#[test]
fn a_repository_without_model_cfg_is_named() {
    let server = Server::start();
    let repo = "someone/not-open-clip";
    server.add(
        &format!("/{repo}/resolve/main/open_clip_config.json"),
        br#"{"architectures": ["CLIPModel"]}"#.to_vec(),
    );
    let cache = tempfile::tempdir().unwrap();
    let error = ModelSource::named(&format!("hf-hub:{repo}"))
        .resolve_with(&client(&server, cache.path()))
        .unwrap_err()
        .to_string();
    assert!(
        error.contains(repo) && error.contains("no `model_cfg`"),
        "{error}"
    );
}

#[test]
fn a_tag_names_its_weights_activation_and_preprocessing() {
    let server = Server::start();
    let repo = "timm/vit_base_patch32_clip_224.openai";
    server.add(
        &format!("/{repo}/resolve/main/open_clip_model.safetensors"),
        vec![7; 1000],
    );
    let cache = tempfile::tempdir().unwrap();
    let model = PretrainedModel::new(ModelSource::named("ViT-B-32"), Some("openai".into()))
        .with_client(client(&server, cache.path()));
    assert_eq!(model.config().unwrap().activation, Activation::QuickGelu);
    assert_eq!(
        std::fs::read(model.weights().unwrap().unwrap()).unwrap(),
        vec![7; 1000]
    );
    let preprocess = model.preprocess_cfg().unwrap().unwrap();
    assert_eq!(preprocess["interpolation"], "bicubic");
    assert_eq!(preprocess["mean"][0], 0.48145466);

    // Without a tag: the architecture only, nothing asked of the Hub.
    let bare = PretrainedModel::new(ModelSource::named("ViT-B-32"), None)
        .with_client(client(&server, cache.path()));
    assert_eq!(bare.config().unwrap().activation, Activation::Gelu);
    assert_eq!(bare.weights().unwrap(), None);
    assert_eq!(bare.preprocess_cfg().unwrap(), None);

    let unknown = PretrainedModel::new(ModelSource::named("ViT-B-32"), Some("openia".into()));
    let error = unknown.weights().unwrap_err().to_string();
    assert!(
        error.contains("openia") && error.contains("openai"),
        "{error}"
    );
    let on_file = PretrainedModel::new(ModelSource::named("my/model.json"), Some("openai".into()));
    assert!(matches!(
        on_file.weights(),
        Err(ModelError::TagNotApplicable { .. })
    ));
}

#[test]
fn a_local_dir_is_read_as_open_clip_reads_it() {
    let config = tiny_config();
    let dir = tempfile::tempdir().unwrap();
    let folder = dir.path().join("my-clip");
    let source = ModelSource::named(&format!("local-dir:{}", folder.display()));
    assert_eq!(source, ModelSource::LocalDir(folder.clone()));
    let json = serde_json::to_string(&source).unwrap();
    assert_eq!(serde_json::from_str::<ModelSource>(&json).unwrap(), source);

    // No folder yet: named, with what it must hold.
    let error = source.resolve().unwrap_err().to_string();
    assert!(error.contains("open_clip_config.json not found"), "{error}");

    std::fs::create_dir_all(&folder).unwrap();
    std::fs::write(
        folder.join("open_clip_config.json"),
        serde_json::to_vec(&json!({
            "model_cfg": config.to_open_clip_value(),
            "preprocess_cfg": {"interpolation": "bilinear"},
        }))
        .unwrap(),
    )
    .unwrap();
    let model = PretrainedModel::new(source.clone(), None);
    assert_eq!(model.config().unwrap(), config);
    let error = model.weights().unwrap_err().to_string();
    assert!(error.contains("no checkpoint"), "{error}");

    // open_clip's choice: its preferred names first, whatever the others are called.
    std::fs::write(folder.join("a.safetensors"), b"x").unwrap();
    std::fs::write(folder.join("pytorch_model.bin"), b"x").unwrap();
    assert_eq!(
        model.weights().unwrap().unwrap(),
        folder.join("pytorch_model.bin")
    );
    std::fs::write(
        folder.join("open_clip_model.safetensors"),
        tiny_checkpoint(&config),
    )
    .unwrap();
    let weights = model.weights().unwrap().unwrap();
    assert_eq!(weights, folder.join("open_clip_model.safetensors"));
    load_open_clip::<burn_flex::Flex>(&weights, &config, &Default::default()).unwrap();
    assert_eq!(
        model.preprocess_cfg().unwrap().unwrap(),
        json!({"interpolation": "bilinear"})
    );
    // Without a preferred name: the first .safetensors by name.
    let other = dir.path().join("other");
    std::fs::create_dir_all(&other).unwrap();
    for name in ["a.bin", "c.safetensors", "b.safetensors"] {
        std::fs::write(other.join(name), b"x").unwrap();
    }
    assert_eq!(
        clipkd_models::pretrained_model::find_checkpoint_in_dir(&other).unwrap(),
        other.join("b.safetensors")
    );
}

#[test]
fn a_hub_name_must_be_a_repository_id() {
    let cache = tempfile::tempdir().unwrap();
    let client = HubClient::new("http://127.0.0.1:9", HubCache::new(cache.path()));
    for bad in ["hf-hub:", "hf-hub:a/b/c", "hf-hub:../x", "hf-hub:org/"] {
        let error = ModelSource::named(bad)
            .resolve_with(&client)
            .unwrap_err()
            .to_string();
        assert!(error.contains("hf-hub:org/name"), "{bad}: {error}");
    }
}
