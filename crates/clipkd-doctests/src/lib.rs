//! The Rust snippets of the repository's README and `docs/*.md`, compiled as doctests so that
//! they stay true (`cargo test -p clipkd-doctests --doc`). A crate of its own, not published:
//! the files live outside every published crate, and a crate's package holds only its own
//! folder. Code blocks that are not Rust are fenced as `text`, `toml`, `json` or `bash`.
#![cfg(doctest)]

/// The README's snippets.
#[doc = include_str!("../../../README.md")]
pub struct Readme;

/// `docs/architecture.md`'s snippets.
#[doc = include_str!("../../../docs/architecture.md")]
pub struct Architecture;

/// `docs/training.md`'s snippets.
#[doc = include_str!("../../../docs/training.md")]
pub struct Training;

/// `docs/losses.md`'s snippets.
#[doc = include_str!("../../../docs/losses.md")]
pub struct Losses;
