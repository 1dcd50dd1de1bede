//! A Hugging Face Hub on the loopback address, for tests without the internet: `HEAD`/`GET
//! /{repo}/resolve/{revision}/{file}` answered as the Hub does (`X-Repo-Commit`,
//! `X-Linked-Etag`, `X-Linked-Size`; `Range` answered with 206; 404 with the commit for a
//! missing file), with switches to cut a download, slow it, or require a token. Shared by the
//! models crate's download tests and the command line's (`#[path]`).

#![allow(dead_code)]

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};

use clipkd_models::hub_download::sha256_file;

pub const COMMIT: &str = "a1b2c3d4e5f60718293a4b5c6d7e8f9012345678";

/// One file the server has.
#[derive(Clone)]
pub struct Served {
    pub body: Vec<u8>,
    /// The ETag it announces (the body's SHA-256 unless a test lies).
    pub etag: String,
}

/// What the server saw and how it misbehaves.
#[derive(Default)]
pub struct State {
    pub files: HashMap<String, Served>,
    /// Requests seen: (method, path, Range header, Authorization header).
    pub seen: Vec<(String, String, Option<String>, Option<String>)>,
    /// Close the connection after this many body bytes of the next GET.
    pub cut_after: Option<usize>,
    /// Answer every request 401 unless this bearer token is sent.
    pub token: Option<String>,
    /// Send GET bodies in 64 KiB pieces this far apart (to make downloads overlap).
    pub slow: Option<std::time::Duration>,
}

pub struct Server {
    pub address: String,
    pub state: Arc<Mutex<State>>,
}

impl Server {
    pub fn start() -> Self {
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

    pub fn add(&self, path: &str, body: Vec<u8>) {
        let etag = sha256_hex(&body);
        self.state
            .lock()
            .unwrap()
            .files
            .insert(path.to_string(), Served { body, etag });
    }

    pub fn gets(&self) -> Vec<(String, Option<String>)> {
        self.state
            .lock()
            .unwrap()
            .seen
            .iter()
            .filter(|(method, ..)| method == "GET")
            .map(|(_, path, range, _)| (path.clone(), range.clone()))
            .collect()
    }

    pub fn requests(&self) -> usize {
        self.state.lock().unwrap().seen.len()
    }
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    static COUNT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let path = std::env::temp_dir().join(format!(
        "clipkd-hub-server-{}-{}",
        std::process::id(),
        COUNT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    ));
    std::fs::write(&path, bytes).unwrap();
    let hash = sha256_file(&path).unwrap();
    std::fs::remove_file(&path).unwrap();
    hash
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
    let (file, cut, token, slow) = {
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
        (s.files.get(&path).cloned(), cut, s.token.clone(), s.slow)
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
        match slow {
            None => {
                let _ = out.write_all(&body[..send]);
            }
            Some(pause) => {
                for piece in body[..send].chunks(64 << 10) {
                    if out.write_all(piece).is_err() {
                        return;
                    }
                    std::thread::sleep(pause);
                }
            }
        }
    }
    let _ = out.flush();
}

/// `len` bytes that are not all alike.
pub fn weights(len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (i * 31 % 251) as u8 ^ (i >> 12) as u8)
        .collect()
}
