#!/usr/bin/env bash
# A new user's first build: a fresh crate whose only dependency is `clipkd` (by path, as
# `cargo add clipkd` would add it from crates.io) compiles the README's Rust snippet.
# The versions are this repository's Cargo.lock (copied), and the crate takes the workspace's
# [patch.crates-io] and build profiles (copied, absolute paths), so that it reuses CI's build
# (a user's crate builds Burn's crates.io releases: see docs/distributed.md for the patch that
# data parallelism wants).
# Usage: tools/fresh_crate_check.sh   (CARGO_TARGET_DIR is honoured)
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/readme-user/src"
cat > "$work/readme-user/Cargo.toml" <<TOML
[package]
name = "readme-user"
version = "0.1.0"
edition = "2024"

[dependencies]
clipkd = { path = "$repo/crates/clipkd" }

[profile.dev.package."*"]
opt-level = 3

[patch.crates-io]
TOML
# The workspace's patches, their paths made absolute.
awk '/^\[patch\.crates-io\]/{f=1;next} /^\[/{f=0} f && /path = "/' "$repo/Cargo.toml" \
    | sed "s#path = \"#path = \"$repo/#" >> "$work/readme-user/Cargo.toml"
cp "$repo/Cargo.lock" "$work/readme-user/Cargo.lock"
# The first Rust block of the README.
awk '/^```rust/{f=1;next} /^```/{if(f){exit}} f' "$repo/README.md" > "$work/readme-user/src/main.rs"
if ! grep -q "fn main" "$work/readme-user/src/main.rs"; then
    echo "the README's first Rust block is not a program (no fn main)" >&2
    exit 1
fi
cd "$work/readme-user"
cargo build -q
echo "a fresh crate depending only on clipkd compiles the README's snippet"
