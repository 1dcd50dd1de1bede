//! Pretrained weights from the Hugging Face Hub, without the internet: a server on the
//! loopback address (started here, in the Hub's URL layout: `HEAD`/`GET
//! /{repo}/resolve/{revision}/{file}` with `X-Repo-Commit`, `X-Linked-Etag` and
//! `X-Linked-Size`, `Range` answered with 206) serves a small generated file. Checked: a
//! download lands in the layout Python's `huggingface_hub` writes, and a second look-up is a
//! cache hit (no request); open_clip's file order (safetensors, then `.bin`) with the missing
//! one recorded; a connection cut mid-file leaves the partial file, and the next call resumes
//! it with a `Range` request; a content whose SHA-256 is not its ETag is refused and removed;
//! offline mode uses the cache only and names what is missing; a 401 asks for `HF_TOKEN`,
//! which is sent as a bearer token.

mod support;

use std::io::Read;
use std::path::Path;

use clipkd_models::{HubCache, HubClient, pretrained};
use support::hub_server::{COMMIT, Server, sha256_hex, weights};

const REPO: &str = "timm/vit_base_patch16_clip_224.laion400m_e32";

fn client(server: &Server, cache: &Path) -> HubClient {
    HubClient::new(&server.address, HubCache::new(cache))
}

fn read(path: &Path) -> Vec<u8> {
    let mut bytes = Vec::new();
    std::fs::File::open(path)
        .unwrap()
        .read_to_end(&mut bytes)
        .unwrap();
    bytes
}

#[test]
fn a_tag_downloads_into_python_s_cache_layout_and_is_then_a_cache_hit() {
    let server = Server::start();
    let body = weights(3 << 20);
    // The repository has only the `.bin`: open_clip's first choice (safetensors) is missing.
    server.add(
        &format!("/{REPO}/resolve/main/open_clip_pytorch_model.bin"),
        body.clone(),
    );
    let cache = tempfile::tempdir().unwrap();
    let tag = pretrained("ViT-B-16", "laion400m_e32").unwrap();

    let path = client(&server, cache.path()).pretrained_file(tag).unwrap();
    assert_eq!(read(&path), body);
    let folder = cache
        .path()
        .join("models--timm--vit_base_patch16_clip_224.laion400m_e32");
    assert_eq!(
        path,
        folder
            .join("snapshots")
            .join(COMMIT)
            .join("open_clip_pytorch_model.bin")
    );
    let etag = sha256_hex(&body);
    assert!(folder.join("blobs").join(&etag).is_file());
    #[cfg(unix)]
    assert_eq!(
        std::fs::read_link(&path).unwrap(),
        Path::new("../../blobs").join(&etag)
    );
    assert_eq!(
        std::fs::read_to_string(folder.join("refs").join("main")).unwrap(),
        COMMIT
    );
    assert!(
        folder
            .join(".no_exist")
            .join(COMMIT)
            .join("open_clip_model.safetensors")
            .exists(),
        "the missing safetensors is recorded as huggingface_hub does"
    );
    assert!(
        !folder
            .join("blobs")
            .join(format!("{etag}.incomplete"))
            .exists()
    );

    // A second look-up, by a new client: the cache, no request at all.
    let requests = server.requests();
    let again = client(&server, cache.path()).pretrained_file(tag).unwrap();
    assert_eq!(again, path);
    assert_eq!(server.requests(), requests);
    // Offline too.
    let offline = client(&server, cache.path()).with_offline(true);
    assert_eq!(offline.pretrained_file(tag).unwrap(), path);
}

#[test]
fn a_cut_connection_keeps_the_partial_file_and_the_next_call_resumes_it() {
    let server = Server::start();
    let body = weights(2 << 20);
    let file = "open_clip_model.safetensors";
    server.add(&format!("/{REPO}/resolve/main/{file}"), body.clone());
    server.state.lock().unwrap().cut_after = Some(700_000);
    let cache = tempfile::tempdir().unwrap();
    let hub = client(&server, cache.path());

    let error = hub.download(REPO, "main", file).unwrap_err().to_string();
    assert!(error.contains("700000 of 2097152 bytes"), "{error}");
    assert!(error.contains("run again to resume"), "{error}");
    let partial = cache
        .path()
        .join("models--timm--vit_base_patch16_clip_224.laion400m_e32/blobs")
        .join(format!("{}.incomplete", sha256_hex(&body)));
    assert_eq!(std::fs::metadata(&partial).unwrap().len(), 700_000);

    let path = hub.download(REPO, "main", file).unwrap();
    assert_eq!(read(&path), body);
    let gets = server.gets();
    assert_eq!(gets.len(), 2, "{gets:?}");
    assert_eq!(gets[0].1, None);
    assert_eq!(
        gets[1].1.as_deref(),
        Some("bytes=700000-"),
        "resumed, not restarted"
    );
    assert!(!partial.exists());
}

#[test]
fn content_that_does_not_match_its_checksum_is_refused_and_removed() {
    let server = Server::start();
    let file = "open_clip_model.safetensors";
    let path = format!("/{REPO}/resolve/main/{file}");
    server.add(&path, weights(1 << 20));
    // The server announces the hash of other content.
    server
        .state
        .lock()
        .unwrap()
        .files
        .get_mut(&path)
        .unwrap()
        .etag = sha256_hex(b"other");
    let cache = tempfile::tempdir().unwrap();

    let error = client(&server, cache.path())
        .download(REPO, "main", file)
        .unwrap_err()
        .to_string();
    assert!(error.contains("checksum mismatch"), "{error}");
    let blobs = cache
        .path()
        .join("models--timm--vit_base_patch16_clip_224.laion400m_e32/blobs");
    assert_eq!(
        std::fs::read_dir(&blobs).unwrap().count(),
        0,
        "nothing kept"
    );
    assert_eq!(
        HubCache::new(cache.path()).cached_file(REPO, "main", file),
        None
    );
}

#[test]
fn offline_mode_names_what_is_missing_and_asks_nothing() {
    let server = Server::start();
    server.add(
        &format!("/{REPO}/resolve/main/open_clip_model.safetensors"),
        weights(1024),
    );
    let cache = tempfile::tempdir().unwrap();
    let tag = pretrained("ViT-B-16", "laion400m_e32").unwrap();

    let error = client(&server, cache.path())
        .with_offline(true)
        .pretrained_file(tag)
        .unwrap_err()
        .to_string();
    assert!(error.contains("offline (HF_HUB_OFFLINE)"), "{error}");
    assert!(error.contains(REPO), "{error}");
    assert!(
        error.contains(&cache.path().display().to_string()),
        "{error}"
    );
    assert_eq!(server.requests(), 0);
}

#[test]
fn errors_name_the_repository_and_what_to_do() {
    let server = Server::start();
    let cache = tempfile::tempdir().unwrap();
    // A repository without either file.
    let tag = pretrained("ViT-L-14", "openai").unwrap();
    let error = client(&server, cache.path())
        .pretrained_file(tag)
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("timm/vit_large_patch14_clip_224.openai"),
        "{error}"
    );
    assert!(error.contains("none of these files"), "{error}");

    // A gated repository: 401 without the token, the file with it.
    let file = "open_clip_model.safetensors";
    server.add(&format!("/{REPO}/resolve/main/{file}"), weights(4096));
    server.state.lock().unwrap().token = Some("hf_secret".to_string());
    let error = client(&server, cache.path())
        .download(REPO, "main", file)
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("HTTP 401") && error.contains("HF_TOKEN"),
        "{error}"
    );
    let path = client(&server, cache.path())
        .with_token(Some("hf_secret".to_string()))
        .download(REPO, "main", file)
        .unwrap();
    assert_eq!(read(&path), weights(4096));

    // Nothing listening.
    let closed = HubClient::new("http://127.0.0.1:9", HubCache::new(cache.path()));
    let error = closed
        .download("org/other", "main", file)
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("cannot reach the Hub") && error.contains("http://127.0.0.1:9/org/other"),
        "{error}"
    );
}

#[test]
fn two_processes_fetching_one_file_download_it_once() {
    let server = Server::start();
    let body = weights(1 << 20);
    let file = "open_clip_model.safetensors";
    server.add(&format!("/{REPO}/resolve/main/{file}"), body.clone());
    // 16 pieces 30 ms apart: the second client asks while the first is downloading.
    server.state.lock().unwrap().slow = Some(std::time::Duration::from_millis(30));
    let cache = tempfile::tempdir().unwrap();
    let fetchers: Vec<_> = (0..2)
        .map(|i| {
            let hub = client(&server, cache.path());
            std::thread::spawn(move || {
                std::thread::sleep(std::time::Duration::from_millis(100 * i));
                hub.download(REPO, "main", file)
            })
        })
        .collect();
    let paths: Vec<_> = fetchers
        .into_iter()
        .map(|t| t.join().unwrap().unwrap())
        .collect();
    assert_eq!(paths[0], paths[1]);
    assert_eq!(read(&paths[0]), body);
    // Each asked the Hub (HEAD), but the second waited on the first's lock and found the
    // blob: one GET.
    assert_eq!(server.gets().len(), 1, "{:?}", server.gets());
    assert!(
        cache
            .path()
            .join(".locks/models--timm--vit_base_patch16_clip_224.laion400m_e32")
            .join(format!("{}.lock", sha256_hex(&body)))
            .is_file(),
        "huggingface_hub's lock file"
    );
}
