#!/usr/bin/env bash
# The published crates, as crates.io would get them: `cargo package` for every crate (the
# manifests, the files each package holds), then checks on the packages' contents: both license
# texts in each, and no file that reaches outside its package (`../../tests/fixtures`,
# `../../docs`), which would break `cargo test` on a downloaded crate.
# Without verification builds (each crate alone would rebuild Burn with its own features, minutes
# on 2 cores); `cargo package --workspace --exclude clipkd-doctests` runs them.
# Usage: tools/package_check.sh   (CARGO_TARGET_DIR is honoured)
set -euo pipefail
cd "$(dirname "$0")/.."
target="${CARGO_TARGET_DIR:-target}"
rm -f "$target"/package/*.crate
cargo package --workspace --exclude clipkd-doctests --no-verify --locked ${CLIPKD_PACKAGE_DIRTY:+--allow-dirty} 2>&1 \
    | grep -v "^ *\(Packaging\|Packaged\|Updating\|Locking\|Adding\|Archiving\)" || true
crates=("$target"/package/*.crate)
[ -e "${crates[0]}" ] || { echo "no package was written" >&2; exit 1; }
failed=0
for crate in "${crates[@]}"; do
    name="$(basename "$crate" .crate)"
    files="$(tar tzf "$crate")"
    for license in LICENSE LICENSE-APACHE; do
        grep -qx "$name/$license" <<<"$files" || { echo "$name: no $license" >&2; failed=1; }
    done
    # Sources that name a path outside the package.
    outside="$(tar xzf "$crate" -O --wildcards "$name/*.rs" "$name/**/*.rs" 2>/dev/null \
        | grep -n '\.\./\.\./\(\.\./\)\?\(tests\|docs\|tools\|README\|examples\|benches\)' || true)"
    if [ -n "$outside" ]; then
        echo "$name: files that read outside the package:" >&2
        echo "$outside" >&2
        failed=1
    fi
    echo "$name: $(wc -l <<<"$files") files, $(du -k "$crate" | cut -f1) KiB"
done
exit "$failed"
