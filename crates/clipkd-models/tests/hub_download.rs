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

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::sync::{Arc, Mutex};

use clipkd_models::hub_download::sha256_file;
use clipkd_models::{HubCache, HubClient, pretrained};

const COMMIT: &str = "a1b2c3d4e5f60718293a4b5c6d7e8f9012345678";

/// One file the server has.
#[derive(Clone)]
struct Served {
    body: Vec<u8>,
    /// The ETag it announces (the body's SHA-256 unless a test lies).
    etag: String,
}

/// What the server saw and how it misbehaves.
#[derive(Default)]
struct State {
    files: HashMap<String, Served>,
    /// Requests seen: (method, path, Range header, Authorization header).
    seen: Vec<(String, String, Option<String>, Option<String>)>,
    /// Close the connection after this many body bytes of the next GET.
    cut_after: Option<usize>,
    /// Answer every request 401 unless this bearer token is sent.
    token: Option<String>,
}

struct Server {
    address: String,
    state: Arc<Mutex<State>>,
}

impl Server {
    fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let address = format!("http://{}", listener.local_addr().unwrap());
        let state = Arc::new(Mutex::new(State::default()));
        let shared = state.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                let state = shared.clone();
                std::thread::spawn(move || serve(stream, &state));
            }
        });
        Server { address, state }
    }

    fn add(&self, path: &str, body: Vec<u8>) {
        let etag = sha256_hex(&body);
        self.state
            .lock()
            .unwrap()
            .files
            .insert(path.to_string(), Served { body, etag });
    }

    fn gets(&self) -> Vec<(String, Option<String>)> {
        self.state
            .lock()
            .unwrap()
            .seen
            .iter()
            .filter(|(method, ..)| method == "GET")
            .map(|(_, path, range, _)| (path.clone(), range.clone()))
            .collect()
    }

    fn requests(&self) -> usize {
        self.state.lock().unwrap().seen.len()
    }
}

fn sha256_hex(bytes: &[u8]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("x");
    std::fs::write(&path, bytes).unwrap();
    sha256_file(&path).unwrap()
}

/// One HTTP/1.1 exchange per connection (the client's requests each open one here).
fn serve(stream: TcpStream, state: &Mutex<State>) {
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut line = String::new();
    if reader.read_line(&mut line).is_err() || line.is_empty() {
        return;
    }
    let mut parts = line.split_whitespace();
    let method = parts.next().unwrap_or("").to_string();
    let path = parts.next().unwrap_or("").to_string();
    let mut headers = HashMap::new();
    loop {
        let mut header = String::new();
        if reader.read_line(&mut header).is_err() || header.trim().is_empty() {
            break;
        }
        if let Some((k, v)) = header.split_once(':') {
            headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
        }
    }
    let range = headers.get("range").cloned();
    let authorization = headers.get("authorization").cloned();
    let (file, cut, token) = {
        let mut s = state.lock().unwrap();
        s.seen.push((
            method.clone(),
            path.clone(),
            range.clone(),
            authorization.clone(),
        ));
        let cut = if method == "GET" {
            s.cut_after.take()
        } else {
            None
        };
        (s.files.get(&path).cloned(), cut, s.token.clone())
    };
    let mut out = stream;
    if let Some(token) = token
        && authorization.as_deref() != Some(&format!("Bearer {token}"))
    {
        let _ = write!(
            out,
            "HTTP/1.1 401 Unauthorized\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        );
        return;
    }
    let Some(file) = file else {
        let _ = write!(
            out,
            "HTTP/1.1 404 Not Found\r\nX-Repo-Commit: {COMMIT}\r\nContent-Length: 0\r\n\
             Connection: close\r\n\r\n"
        );
        return;
    };
    let start = range
        .as_deref()
        .and_then(|r| r.strip_prefix("bytes="))
        .and_then(|r| r.trim_end_matches('-').parse::<usize>().ok())
        .unwrap_or(0)
        .min(file.body.len());
    let body = &file.body[start..];
    let status = if start > 0 {
        "206 Partial Content"
    } else {
        "200 OK"
    };
    let _ = write!(
        out,
        "HTTP/1.1 {status}\r\nX-Repo-Commit: {COMMIT}\r\nX-Linked-Etag: \"{}\"\r\n\
         X-Linked-Size: {}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        file.etag,
        file.body.len(),
        if method == "HEAD" {
            file.body.len()
        } else {
            body.len()
        },
    );
    if method == "GET" {
        let send = cut.map_or(body.len(), |n| n.min(body.len()));
        let _ = out.write_all(&body[..send]);
    }
    let _ = out.flush();
}

/// A few MiB of bytes that are not all alike.
fn weights(len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (i * 31 % 251) as u8 ^ (i >> 12) as u8)
        .collect()
}

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
        error.contains("cannot reach http://127.0.0.1:9/org/other"),
        "{error}"
    );
}
