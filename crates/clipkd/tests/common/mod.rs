//! Helpers shared by the tests that run the `clipkd` binary.
#![allow(dead_code)] // each test file uses its own subset

use std::path::PathBuf;
use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};

/// A fresh directory under the system temp dir, removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    /// `clipkd-<prefix>-<pid>-<n>` under the temp dir, empty.
    pub fn new(prefix: &str) -> Self {
        static COUNT: AtomicUsize = AtomicUsize::new(0);
        let path = std::env::temp_dir().join(format!(
            "clipkd-{prefix}-{}-{}",
            std::process::id(),
            COUNT.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).unwrap();
        TempDir(path)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Runs the `clipkd` binary with `args`.
pub fn clipkd(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_clipkd"))
        .args(args)
        .output()
        .expect("the clipkd binary runs")
}

/// Runs `clipkd args`, asserts that it succeeds and returns its stdout.
pub fn ok(args: &[&str]) -> String {
    let out = clipkd(args);
    assert!(
        out.status.success(),
        "clipkd {args:?} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}
