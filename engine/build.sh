#!/usr/bin/env bash
# Builds the Rhai engine to wasm32-wasi with Debian's Rust toolchain and installs it
# as picloud/workers/engine.wasm. With --check, fails instead if the fresh build
# differs from the committed file (the build is byte-identical across checkouts:
# paths are remapped, the binary stripped, LTO and one codegen unit).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
artifact="$here/../picloud/workers/engine.wasm"
check=0
[ "${1:-}" = "--check" ] && check=1

# A rustup toolchain earlier on PATH would shadow Debian's: call it by path.
export RUSTC=/usr/bin/rustc
export RUSTFLAGS="--remap-path-prefix=$here=/engine -C link-arg=-zstack-size=8388608 -C panic=abort"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$here/target}"
cd "$here"
echo "building engine (rustc $($RUSTC --version | cut -d' ' -f2), wasm32-wasi, release)..." >&2
/usr/bin/cargo build --offline --release --target wasm32-wasi --lib
built="$CARGO_TARGET_DIR/wasm32-wasi/release/picloud_engine.wasm"

if [ "$check" = 1 ]; then
    if cmp -s "$built" "$artifact"; then
        echo "engine.wasm is up to date ($(sha256sum "$built" | cut -c1-16))" >&2
    else
        echo "engine.wasm differs from a fresh build of engine/: run engine/build.sh and commit" >&2
        echo "  committed: $(sha256sum "$artifact" 2>/dev/null | cut -c1-16 || echo missing)" >&2
        echo "  built:     $(sha256sum "$built" | cut -c1-16)" >&2
        exit 1
    fi
else
    cp "$built" "$artifact"
    echo "wrote $artifact ($(stat -c %s "$artifact") bytes)" >&2
fi
