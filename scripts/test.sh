#!/usr/bin/env bash
# Sets up and runs every test: Rust unit and integration tests with real WebRTC peers, and the
# headless-Chromium browser test. Installs what is missing (ffmpeg for fixtures, Chromium, a CJK
# font for readable screenshots, Node.js and playwright-core) from Debian/Ubuntu packages and the
# npm registry, and builds the s3s-fs test S3 server from crates.io; nothing downloads a browser or
# a binary of its own. Builds are cached in $QIAO_CACHE (default ~/.cache/qiao), outside the
# repository. Extra arguments go to `cargo test`.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/common.sh
need_build_tools
need_rust
apt_need ffmpeg chromium fonts-wqy-microhei
# `ip` for tests/netem.rs: network namespaces and addresses of the emulated link.
apt_need iproute2
if ! command -v node >/dev/null; then
    apt_need nodejs npm
fi
if [ ! -d tests/browser/node_modules/playwright-core ] || [ tests/browser/package-lock.json -nt tests/browser/node_modules ]; then
    say "npm ci (tests/browser: playwright-core only; it downloads no browser)"
    npm ci --prefix tests/browser --no-audit --no-fund --loglevel=error
    touch tests/browser/node_modules
fi
# s3s-fs: a small S3 server over a directory that checks SigV4 signatures, started by
# tests/common/s3.rs. Built once (≈ 3 min) into the cache; its own temporary target directory.
export QIAO_CACHE
if [ ! -x "$QIAO_CACHE/s3s/bin/s3s-fs" ]; then
    say "cargo install s3s-fs 0.14.1 (once, ≈ 3 min, into $QIAO_CACHE/s3s)"
    env -u CARGO_TARGET_DIR cargo install s3s-fs --version 0.14.1 --features binary --locked --root "$QIAO_CACHE/s3s"
fi
export CHROMIUM="${CHROMIUM:-$(command -v chromium || echo /usr/bin/chromium)}"
say "cargo test"
cargo test --locked "$@"
