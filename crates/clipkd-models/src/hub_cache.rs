//! The Hugging Face Hub cache on disk, in the layout Python's `huggingface_hub` writes, so that
//! weights one tool downloaded serve the other: `<root>/models--<org>--<name>/` holds `refs/<rev>`
//! (the commit a branch or tag points to), `snapshots/<commit>/<file>` (links into `blobs/`) and
//! `.no_exist/<commit>/<file>` (files known to be absent).
//!
//! The root is found as `huggingface_hub` finds it: `HF_HUB_CACHE`, else the older
//! `HUGGINGFACE_HUB_CACHE`, else `HF_HOME/hub`, else `$XDG_CACHE_HOME/huggingface/hub`, else
//! `~/.cache/huggingface/hub`.

use std::path::{Path, PathBuf};

use crate::error::ModelError;
use crate::pretrained::Pretrained;

/// A Hugging Face Hub cache folder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HubCache {
    root: PathBuf,
}

impl HubCache {
    /// The cache at `root` (the folder that holds the `models--*` folders).
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    /// The cache the environment names (see the module docs).
    ///
    /// # Errors
    /// [`ModelError::HubCache`] when no variable is set and there is no home folder.
    pub fn from_env() -> Result<Self, ModelError> {
        Self::from_vars(|name| std::env::var_os(name).filter(|v| !v.is_empty()))
    }

    /// [`HubCache::from_env`] with the variables read by `var` (for tests and embedders).
    ///
    /// # Errors
    /// As [`HubCache::from_env`].
    pub fn from_vars(var: impl Fn(&str) -> Option<std::ffi::OsString>) -> Result<Self, ModelError> {
        if let Some(root) = var("HF_HUB_CACHE").or_else(|| var("HUGGINGFACE_HUB_CACHE")) {
            return Ok(Self::new(root));
        }
        let home = match var("HF_HOME") {
            Some(home) => PathBuf::from(home),
            None => {
                let cache = var("XDG_CACHE_HOME")
                    .map(PathBuf::from)
                    .or_else(|| var("HOME").map(|h| PathBuf::from(h).join(".cache")))
                    .ok_or_else(|| ModelError::HubCache {
                        path: PathBuf::new(),
                        message: "no Hugging Face cache: none of HF_HUB_CACHE, HF_HOME, \
                                  XDG_CACHE_HOME or HOME is set"
                            .to_string(),
                    })?;
                cache.join("huggingface")
            }
        };
        Ok(Self::new(home.join("hub")))
    }

    /// The cache's root folder.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The folder of a model repository (`org/name` -> `models--org--name`).
    pub fn repo_folder(&self, repo: &str) -> PathBuf {
        self.root
            .join(format!("models--{}", repo.replace('/', "--")))
    }

    /// The commit `revision` (a branch, a tag or a commit hash) points to in the cache, if the
    /// cache knows it.
    pub fn commit(&self, repo: &str, revision: &str) -> Option<String> {
        let folder = self.repo_folder(repo);
        if let Ok(commit) = std::fs::read_to_string(folder.join("refs").join(revision)) {
            let commit = commit.trim();
            return (!commit.is_empty()).then(|| commit.to_string());
        }
        // A commit hash asked for directly has no ref of its own.
        folder
            .join("snapshots")
            .join(revision)
            .is_dir()
            .then(|| revision.to_string())
    }

    /// `file` of `repo` at `revision`, if it is in the cache (a link that resolves to a file).
    pub fn cached_file(&self, repo: &str, revision: &str, file: &str) -> Option<PathBuf> {
        let commit = self.commit(repo, revision)?;
        let path = self
            .repo_folder(repo)
            .join("snapshots")
            .join(commit)
            .join(file);
        path.is_file().then_some(path)
    }

    /// Whether the cache records `file` as absent from `repo` at `revision`.
    pub fn known_absent(&self, repo: &str, revision: &str, file: &str) -> bool {
        self.commit(repo, revision).is_some_and(|commit| {
            self.repo_folder(repo)
                .join(".no_exist")
                .join(commit)
                .join(file)
                .exists()
        })
    }

    /// The first of `pretrained`'s weight files the cache holds at `revision`.
    pub fn pretrained_file(&self, pretrained: &Pretrained, revision: &str) -> Option<PathBuf> {
        self.first_cached_file(&pretrained.repo, revision, &pretrained.files)
    }

    /// The first of `files` (in order of preference) the cache holds for `repo` at `revision`.
    pub fn first_cached_file<S: AsRef<str>>(
        &self,
        repo: &str,
        revision: &str,
        files: &[S],
    ) -> Option<PathBuf> {
        files
            .iter()
            .find_map(|file| self.cached_file(repo, revision, file.as_ref()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;
    use std::ffi::OsString;

    fn vars(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<OsString> {
        let map: HashMap<String, OsString> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), OsString::from(v)))
            .collect();
        move |name| map.get(name).cloned()
    }

    #[test]
    fn the_root_follows_huggingface_hub_s_variables() {
        let root = |pairs: &[(&str, &str)]| HubCache::from_vars(vars(pairs)).unwrap().root;
        assert_eq!(
            root(&[("HOME", "/h")]),
            Path::new("/h/.cache/huggingface/hub")
        );
        assert_eq!(
            root(&[("HOME", "/h"), ("XDG_CACHE_HOME", "/x")]),
            Path::new("/x/huggingface/hub")
        );
        assert_eq!(
            root(&[("HOME", "/h"), ("XDG_CACHE_HOME", "/x"), ("HF_HOME", "/hf")]),
            Path::new("/hf/hub")
        );
        assert_eq!(
            root(&[("HF_HOME", "/hf"), ("HUGGINGFACE_HUB_CACHE", "/old")]),
            Path::new("/old")
        );
        assert_eq!(
            root(&[("HUGGINGFACE_HUB_CACHE", "/old"), ("HF_HUB_CACHE", "/new")]),
            Path::new("/new")
        );
        let error = HubCache::from_vars(vars(&[])).unwrap_err().to_string();
        assert!(error.contains("HF_HUB_CACHE"), "{error}");
    }

    /// The layout Python's huggingface_hub writes: a blob, a snapshot link to it, a ref.
    #[cfg(unix)]
    #[test]
    fn a_file_python_cached_is_found_by_branch_and_by_commit() {
        let dir = tempfile::tempdir().unwrap();
        let cache = HubCache::new(dir.path());
        let repo = "timm/vit_base_patch16_clip_224.laion400m_e32";
        let folder = dir
            .path()
            .join("models--timm--vit_base_patch16_clip_224.laion400m_e32");
        let commit = "0123456789abcdef0123456789abcdef01234567";
        std::fs::create_dir_all(folder.join("blobs")).unwrap();
        std::fs::create_dir_all(folder.join("refs")).unwrap();
        std::fs::create_dir_all(folder.join("snapshots").join(commit)).unwrap();
        std::fs::create_dir_all(folder.join(".no_exist").join(commit)).unwrap();
        std::fs::write(folder.join("blobs").join("e7a9"), b"weights").unwrap();
        std::fs::write(folder.join("refs").join("main"), format!("{commit}\n")).unwrap();
        std::os::unix::fs::symlink(
            "../../blobs/e7a9",
            folder
                .join("snapshots")
                .join(commit)
                .join("open_clip_pytorch_model.bin"),
        )
        .unwrap();
        std::fs::write(
            folder
                .join(".no_exist")
                .join(commit)
                .join("open_clip_model.safetensors"),
            b"",
        )
        .unwrap();

        assert_eq!(cache.repo_folder(repo), folder);
        assert_eq!(cache.commit(repo, "main").as_deref(), Some(commit));
        assert_eq!(cache.commit(repo, commit).as_deref(), Some(commit));
        assert_eq!(cache.commit(repo, "v2"), None);
        let found = cache
            .cached_file(repo, "main", "open_clip_pytorch_model.bin")
            .unwrap();
        assert_eq!(std::fs::read(&found).unwrap(), b"weights");
        assert!(cache.known_absent(repo, "main", "open_clip_model.safetensors"));
        assert!(!cache.known_absent(repo, "main", "open_clip_pytorch_model.bin"));
        // open_clip's preference: safetensors first, absent here, so the .bin.
        let pretrained = crate::pretrained::pretrained("ViT-B-16", "laion400m_e32").unwrap();
        assert_eq!(cache.pretrained_file(pretrained, "main"), Some(found));
        // A snapshot link whose blob is gone is not a cached file.
        std::fs::remove_file(folder.join("blobs").join("e7a9")).unwrap();
        assert_eq!(cache.pretrained_file(pretrained, "main"), None);
        assert_eq!(
            HubCache::new(dir.path().join("elsewhere")).pretrained_file(pretrained, "main"),
            None
        );
    }
}
