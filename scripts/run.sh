#!/usr/bin/env bash
# Sets up and runs the Qiao server on embedded defaults: SQLite and recordings under ./data,
# HTTP on 127.0.0.1:8080, media on UDP 127.0.0.1:50000. Extra arguments go to `qiao serve`
# (see `qiao serve --help`), e.g.  scripts/run.sh --listen 0.0.0.0:8443 --tls self-signed \
#   --rtc-udp 0.0.0.0:50000 --public-ip 192.0.2.10
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/common.sh
need_build_tools
need_rust
say "building (release; the first build takes a few minutes, later ones are quick)"
cargo build --release --locked --bin qiao
exec "$CARGO_TARGET_DIR/release/qiao" serve "$@"
