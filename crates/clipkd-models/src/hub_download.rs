//! Downloading files from the Hugging Face Hub into the cache Python tools share
//! ([`HubCache`]), as `huggingface_hub.hf_hub_download` does: a `HEAD` of
//! `{endpoint}/{repo}/resolve/{revision}/{file}` names the commit and the file's ETag (the
//! SHA-256 of a large file's content), the bytes go to `blobs/{etag}.incomplete` and are resumed
//! from where a cut connection left them (an HTTP `Range`), checked against the SHA-256 and
//! moved to `blobs/{etag}`, and `snapshots/{commit}/{file}` links to the blob.
//!
//! The environment is `huggingface_hub`'s: `HF_ENDPOINT` (default `https://huggingface.co`),
//! `HF_TOKEN` (sent as a bearer token), `HF_HUB_OFFLINE=1` (the cache only), and the cache
//! variables of [`HubCache`]. HTTP with `ureq` (small, blocking, rustls; already built for the
//! tree's build scripts); the SHA-256 with `sha2`.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use sha2::{Digest, Sha256};

use crate::error::ModelError;
use crate::hub_cache::HubCache;
use crate::pretrained::Pretrained;

/// The Hub `huggingface_hub` talks to by default.
pub const DEFAULT_ENDPOINT: &str = "https://huggingface.co";

/// A client of the Hugging Face Hub that downloads into a [`HubCache`].
#[derive(Debug, Clone)]
pub struct HubClient {
    endpoint: String,
    token: Option<String>,
    offline: bool,
    progress: bool,
    cache: HubCache,
}

/// Why one file could not be had: the server has no such file (another may do), or anything
/// else (an error for the user).
enum Fetch {
    Missing,
    Failed(ModelError),
}

impl From<ModelError> for Fetch {
    fn from(e: ModelError) -> Self {
        Fetch::Failed(e)
    }
}

impl HubClient {
    /// A client of `endpoint` that downloads into `cache`, online, without a token or a
    /// progress bar.
    pub fn new(endpoint: impl Into<String>, cache: HubCache) -> Self {
        Self {
            endpoint: endpoint.into().trim_end_matches('/').to_string(),
            token: None,
            offline: false,
            progress: false,
            cache,
        }
    }

    /// The client the environment describes (see the module docs), with a progress bar on
    /// standard error.
    ///
    /// # Errors
    /// [`ModelError::HubCache`] when no cache folder can be named.
    pub fn from_env() -> Result<Self, ModelError> {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        let offline = var("HF_HUB_OFFLINE").is_some_and(|v| {
            matches!(v.to_ascii_lowercase().as_str(), "1" | "true" | "yes" | "on")
        });
        Ok(Self::new(
            var("HF_ENDPOINT").unwrap_or_else(|| DEFAULT_ENDPOINT.to_string()),
            HubCache::from_env()?,
        )
        .with_token(var("HF_TOKEN"))
        .with_offline(offline)
        .with_progress(true))
    }

    /// Sends `token` as `Authorization: Bearer` (gated or private repositories).
    pub fn with_token(mut self, token: Option<String>) -> Self {
        self.token = token;
        self
    }

    /// Offline: files come from the cache only, and a missing one is an error naming it.
    pub fn with_offline(mut self, offline: bool) -> Self {
        self.offline = offline;
        self
    }

    /// Shows a progress bar on standard error while downloading (hidden when it is not a
    /// terminal).
    pub fn with_progress(mut self, progress: bool) -> Self {
        self.progress = progress;
        self
    }

    /// The cache this client downloads into.
    pub fn cache(&self) -> &HubCache {
        &self.cache
    }

    /// The weights of a pretrained tag: the first of its files (open_clip's order) that the
    /// cache holds or the Hub has, downloaded if needed.
    ///
    /// # Errors
    /// [`ModelError::Hub`] when none of the files can be had: offline and not cached, the
    /// repository has none of them, the network failed, the download was cut (run again to
    /// resume) or its content does not match its checksum.
    pub fn pretrained_file(&self, pretrained: &Pretrained) -> Result<PathBuf, ModelError> {
        self.first_file(&pretrained.repo, &pretrained.files)
    }

    /// The first of `files` (in order of preference) that the cache holds or `repo` has at
    /// `main`, downloaded if needed: how open_clip finds a repository's weights.
    ///
    /// # Errors
    /// As [`HubClient::pretrained_file`].
    pub fn first_file<S: AsRef<str>>(
        &self,
        repo: &str,
        files: &[S],
    ) -> Result<PathBuf, ModelError> {
        if let Some(path) = self.cache.first_cached_file(repo, "main", files) {
            return Ok(path);
        }
        for file in files {
            match self.fetch(repo, "main", file.as_ref()) {
                Ok(path) => return Ok(path),
                Err(Fetch::Missing) => continue,
                Err(Fetch::Failed(e)) => return Err(e),
            }
        }
        let names: Vec<&str> = files.iter().map(AsRef::as_ref).collect();
        Err(self.error(
            repo,
            &names.join(" or "),
            format!("the repository has none of these files ({})", self.endpoint),
        ))
    }

    /// `file` of `repo` at `revision` (a branch, tag or commit): from the cache, or downloaded
    /// into it.
    ///
    /// # Errors
    /// As [`HubClient::pretrained_file`]; a file the repository does not have is an error too.
    pub fn download(&self, repo: &str, revision: &str, file: &str) -> Result<PathBuf, ModelError> {
        if let Some(path) = self.cache.cached_file(repo, revision, file) {
            return Ok(path);
        }
        match self.fetch(repo, revision, file) {
            Ok(path) => Ok(path),
            Err(Fetch::Missing) => Err(self.error(
                repo,
                file,
                format!("no such file at revision `{revision}` ({})", self.endpoint),
            )),
            Err(Fetch::Failed(e)) => Err(e),
        }
    }

    fn error(&self, repo: &str, file: &str, message: impl Into<String>) -> ModelError {
        ModelError::Hub {
            repo: repo.to_string(),
            file: file.to_string(),
            message: message.into(),
        }
    }

    fn agent(&self, redirects: u32) -> ureq::Agent {
        ureq::AgentBuilder::new()
            .redirects(redirects)
            .timeout_connect(Duration::from_secs(30))
            .timeout_read(Duration::from_secs(60))
            .user_agent(concat!("clipkd/", env!("CARGO_PKG_VERSION")))
            .build()
    }

    fn authorize(&self, request: ureq::Request) -> ureq::Request {
        match &self.token {
            Some(token) => request.set("Authorization", &format!("Bearer {token}")),
            None => request,
        }
    }

    /// One file, not in the cache: ask the Hub, then download.
    fn fetch(&self, repo: &str, revision: &str, file: &str) -> Result<PathBuf, Fetch> {
        if self.offline {
            return Err(self
                .error(
                    repo,
                    file,
                    format!(
                        "offline (HF_HUB_OFFLINE) and not in the cache {} (revision `{revision}`); \
                         download it once online, or give the file's path",
                        self.cache.root().display()
                    ),
                )
                .into());
        }
        if self.cache.known_absent(repo, revision, file) {
            return Err(Fetch::Missing);
        }
        let url = format!("{}/{repo}/resolve/{revision}/{file}", self.endpoint);
        let head = match self.authorize(self.agent(0).head(&url)).call() {
            Ok(response) => response,
            Err(ureq::Error::Status(404, response)) => {
                if let Some(commit) = response.header("X-Repo-Commit") {
                    self.mark_absent(repo, revision, commit, file);
                }
                return Err(Fetch::Missing);
            }
            Err(ureq::Error::Status(code, _)) => {
                let hint = if matches!(code, 401 | 403) {
                    " (a gated or private repository: set HF_TOKEN)"
                } else {
                    ""
                };
                return Err(self
                    .error(repo, file, format!("{url} answered HTTP {code}{hint}"))
                    .into());
            }
            Err(e) => {
                return Err(self
                    .error(repo, file, format!("cannot reach the Hub: {e}"))
                    .into());
            }
        };
        let header = |name: &str| head.header(name).map(str::to_string);
        let commit = header("X-Repo-Commit")
            .ok_or_else(|| self.error(repo, file, format!("{url} gave no X-Repo-Commit header")))?;
        let etag = header("X-Linked-Etag")
            .or_else(|| header("ETag"))
            .map(|e| e.trim_start_matches("W/").trim_matches('"').to_string())
            .filter(|e| !e.is_empty() && !e.contains(['/', '\\']))
            .ok_or_else(|| self.error(repo, file, format!("{url} gave no ETag")))?;
        let size: Option<u64> = header("X-Linked-Size")
            .or_else(|| header("Content-Length"))
            .and_then(|s| s.parse().ok());
        // Large files redirect to a content server; a relative location is on the endpoint.
        let source = match (head.status(), header("Location")) {
            (300..=399, Some(location)) if location.starts_with('/') => {
                format!("{}{location}", self.endpoint)
            }
            (300..=399, Some(location)) => location,
            _ => url.clone(),
        };

        let folder = self.cache.repo_folder(repo);
        let blob = folder.join("blobs").join(&etag);
        let io = |path: &Path, e: std::io::Error| {
            self.error(repo, file, format!("{}: {e}", path.display()))
        };
        // Another process (clipkd or Python) may be fetching the same blob: wait for it, as
        // huggingface_hub does, on the lock file it uses, then reuse what it wrote.
        let _lock = self
            .lock_blob(repo, &etag)
            .map_err(|(path, e)| io(&path, e))?;
        if !blob.is_file() {
            self.download_blob(repo, file, &source, &blob, size, &etag)?;
        }
        if revision != commit {
            let refs = folder.join("refs");
            std::fs::create_dir_all(&refs).map_err(|e| io(&refs, e))?;
            let path = refs.join(revision);
            std::fs::write(&path, &commit).map_err(|e| io(&path, e))?;
        }
        let snapshot = folder.join("snapshots").join(&commit).join(file);
        if let Some(parent) = snapshot.parent() {
            std::fs::create_dir_all(parent).map_err(|e| io(parent, e))?;
        }
        link_blob(&blob, &etag, &snapshot, file).map_err(|e| io(&snapshot, e))?;
        Ok(snapshot)
    }

    /// An exclusive lock on `.locks/<repo folder>/<etag>.lock` (the path and `flock` lock
    /// `huggingface_hub` takes), held until the returned file is dropped; blocks while another
    /// process holds it.
    fn lock_blob(
        &self,
        repo: &str,
        etag: &str,
    ) -> Result<std::fs::File, (PathBuf, std::io::Error)> {
        let folder = self.cache.root().join(".locks").join(
            self.cache
                .repo_folder(repo)
                .file_name()
                .expect("a repository folder has a name"),
        );
        std::fs::create_dir_all(&folder).map_err(|e| (folder.clone(), e))?;
        let path = folder.join(format!("{etag}.lock"));
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|e| (path.clone(), e))?;
        file.lock().map_err(|e| (path, e))?;
        Ok(file)
    }

    /// Records, as `huggingface_hub` does, that `file` is not in `repo` at `commit` (best
    /// effort: only a later look-up is saved by it).
    fn mark_absent(&self, repo: &str, revision: &str, commit: &str, file: &str) {
        let folder = self.cache.repo_folder(repo);
        let marker = folder.join(".no_exist").join(commit).join(file);
        if let Some(parent) = marker.parent() {
            let _ = std::fs::create_dir_all(parent);
        }
        let _ = std::fs::write(&marker, b"");
        if revision != commit {
            let _ = std::fs::create_dir_all(folder.join("refs"));
            let _ = std::fs::write(folder.join("refs").join(revision), commit);
        }
    }

    /// The bytes of `source` into `blob`, through `blob.incomplete` (resumed if it exists),
    /// checked against `size` and, for a SHA-256 ETag, the content's hash.
    fn download_blob(
        &self,
        repo: &str,
        file: &str,
        source: &str,
        blob: &Path,
        size: Option<u64>,
        etag: &str,
    ) -> Result<(), ModelError> {
        let partial = blob.with_extension("incomplete");
        let io = |path: &Path, e: std::io::Error| {
            self.error(repo, file, format!("{}: {e}", path.display()))
        };
        if let Some(parent) = blob.parent() {
            std::fs::create_dir_all(parent).map_err(|e| io(parent, e))?;
        }
        let mut have = std::fs::metadata(&partial).map(|m| m.len()).unwrap_or(0);
        if size.is_some_and(|size| have > size) {
            have = 0;
        }
        let mut request = self.authorize(self.agent(8).get(source));
        if have > 0 {
            request = request.set("Range", &format!("bytes={have}-"));
        }
        let response = request
            .call()
            .map_err(|e| self.error(repo, file, format!("download from {source} failed: {e}")))?;
        // 206: the server continues where the partial file stops; 200: it sends everything.
        let resumed = response.status() == 206 && have > 0;
        let mut out = std::fs::OpenOptions::new()
            .create(true)
            .write(true)
            .append(resumed)
            .truncate(!resumed)
            .open(&partial)
            .map_err(|e| io(&partial, e))?;
        let start = if resumed { have } else { 0 };
        let bar = self.progress_bar(file, size, start);
        let mut reader = response.into_reader();
        let mut buffer = vec![0u8; 1 << 20];
        let mut written = start;
        let cut = loop {
            match reader.read(&mut buffer) {
                Ok(0) => break None,
                Ok(n) => {
                    out.write_all(&buffer[..n]).map_err(|e| io(&partial, e))?;
                    written += n as u64;
                    bar.set_position(written);
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => break Some(e),
            }
        };
        out.sync_all().map_err(|e| io(&partial, e))?;
        drop(out);
        bar.finish_and_clear();
        let incomplete = |why: String| {
            self.error(
                repo,
                file,
                format!(
                    "{why}: {written} of {} bytes kept in {}; run again to resume",
                    size.map_or("?".to_string(), |s| s.to_string()),
                    partial.display()
                ),
            )
        };
        if let Some(e) = cut {
            return Err(incomplete(format!("the connection broke ({e})")));
        }
        if let Some(size) = size
            && written != size
        {
            return Err(incomplete("the download ended early".to_string()));
        }
        if etag.len() == 64 && etag.bytes().all(|b| b.is_ascii_hexdigit()) {
            let sha = sha256_file(&partial).map_err(|e| io(&partial, e))?;
            if !sha.eq_ignore_ascii_case(etag) {
                let _ = std::fs::remove_file(&partial);
                return Err(self.error(
                    repo,
                    file,
                    format!(
                        "checksum mismatch: the downloaded content's SHA-256 is {sha}, the Hub \
                         says {etag}; the file was removed, run again to download it anew"
                    ),
                ));
            }
        }
        std::fs::rename(&partial, blob).map_err(|e| io(blob, e))
    }

    fn progress_bar(&self, file: &str, size: Option<u64>, start: u64) -> indicatif::ProgressBar {
        if !self.progress {
            return indicatif::ProgressBar::hidden();
        }
        let bar = match size {
            Some(size) => indicatif::ProgressBar::new(size),
            None => indicatif::ProgressBar::no_length(),
        };
        bar.set_draw_target(indicatif::ProgressDrawTarget::stderr());
        if let Ok(style) = indicatif::ProgressStyle::with_template(
            "{msg} {bar:30} {bytes}/{total_bytes} {bytes_per_sec} {eta}",
        ) {
            bar.set_style(style);
        }
        bar.set_message(file.to_string());
        bar.set_position(start);
        bar
    }
}

/// The hex SHA-256 of a file's content.
pub fn sha256_file(path: &Path) -> std::io::Result<String> {
    let mut hasher = Sha256::new();
    let mut file = std::fs::File::open(path)?;
    let mut buffer = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buffer)?;
        if n == 0 {
            break;
        }
        hasher.update(&buffer[..n]);
    }
    Ok(hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect())
}

/// `snapshot` -> the blob, as a relative link where the system has them (the layout
/// `huggingface_hub` writes), else a copy.
fn link_blob(blob: &Path, etag: &str, snapshot: &Path, file: &str) -> std::io::Result<()> {
    // `symlink_metadata`: a dangling link is there too, and must go.
    if snapshot.symlink_metadata().is_ok() {
        std::fs::remove_file(snapshot)?;
    }
    #[cfg(unix)]
    {
        // snapshots/<commit>/<file> -> ../../blobs/<etag>, one more `..` per folder in `file`.
        let depth = 2 + file.matches('/').count();
        let target = PathBuf::from("../".repeat(depth)).join("blobs").join(etag);
        let _ = blob;
        std::os::unix::fs::symlink(target, snapshot)
    }
    #[cfg(not(unix))]
    {
        let _ = (etag, file);
        std::fs::copy(blob, snapshot).map(|_| ())
    }
}
