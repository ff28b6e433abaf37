#!/usr/bin/env bash
# Recorder benchmark: CPU per recorded 1 Mbps VP8 track (+ Opus), remux only (benches/record_track.rs).
# Extra arguments go to the benchmark, e.g.  scripts/bench-record.sh --seconds 120
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/common.sh
need_build_tools
need_rust
apt_need ffmpeg
cargo bench --locked --bench record_track -- "$@"
