#!/usr/bin/env bash
# Benchmark: join-to-first-remote-frame in the three-browser test (headless Chromium, fake
# camera), release build, over N runs (default 5). Each page measures from its join to the first
# decoded frame of a remote video (requestVideoFrameCallback).
#   scripts/bench-join.sh [RUNS]
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/common.sh
runs="${1:-5}"
out="$(mktemp)"
for _ in $(seq "$runs"); do
    cargo test --release --locked --test browser_three_party -q >/dev/null
    cat target/test-artifacts/browser/first_frame_ms.json >>"$out"
    echo >>"$out"
done
python3 - "$out" <<'PY'
import json, statistics, sys
v = sorted(x for line in open(sys.argv[1]) if line.strip() for x in json.loads(line))
print(f"join-to-first-remote-frame over {len(v)} pages: median {statistics.median(v):.0f} ms, "
      f"p90 {v[int(0.9 * (len(v) - 1))]} ms, min {v[0]} ms, max {v[-1]} ms")
PY
