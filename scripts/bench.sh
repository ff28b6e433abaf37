#!/usr/bin/env bash
# Room load benchmark: builds the release server, then measures its CPU and memory with 3 and 10
# participants on loopback, each publishing ~1 Mbps VP8 + Opus and receiving all others
# (benches/room_load.rs). Prints markdown tables for docs/benchmarks.md and the command used.
# Extra arguments go to the benchmark, e.g.  scripts/bench.sh --participants 3,10 --seconds 20
# (--help lists them). Installs ffmpeg if missing (the video clip is made with it). Builds are
# cached in $QIAO_CACHE (default ~/.cache/qiao), outside the repository, like scripts/test.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/common.sh
need_build_tools
need_rust
apt_need ffmpeg
say "building the release server (the first build takes a few minutes)"
cargo build --release --locked --bin qiao
export QIAO_BIN="${QIAO_BIN:-$CARGO_TARGET_DIR/release/qiao}"
say "running the benchmark with $QIAO_BIN"
cargo bench --locked --bench room_load -- "$@"
