#!/usr/bin/env bash
# The load tool (benches/room_load.rs): R rooms × P publishers × S subscribers against the release
# Qiao server and, in the same run, Janus VideoRoom; prints a markdown report for
# docs/benchmarks.md and the command used. Extra arguments go to the benchmark, e.g.
#   scripts/bench.sh --rooms 2 --publishers 2 --subscribers 3 --seconds 20 --target both
# (--help lists them; those are the defaults). Installs ffmpeg (the video clip is made with it)
# and janus if missing. Builds are cached in $QIAO_CACHE (default ~/.cache/qiao), outside the
# repository, like scripts/test.sh.
#
# The benchmark runs in a network namespace of its own (unshare -n) with a veth pair,
# 10.77.0.1 (the servers' media) and 10.77.0.2 (the clients): Janus gathers no loopback
# candidates, and both servers get the same network. libnice sends out of the veth device, so its
# packets arrive with a local source address: accept_local lets them in (they are dropped as
# martians otherwise). Needs root, or unprivileged user namespaces.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/common.sh
need_build_tools
need_rust
apt_need ffmpeg janus iproute2
say "building the release server and the benchmark (the first build takes a few minutes)"
cargo build --release --locked --bin qiao
cargo bench --locked --bench room_load --no-run
export QIAO_BIN="${QIAO_BIN:-$CARGO_TARGET_DIR/release/qiao}"
say "running the benchmark with $QIAO_BIN in a network namespace"
if [ "$(id -u)" = 0 ]; then unshare_net=(unshare --net); else unshare_net=(unshare --net --map-root-user); fi
"${unshare_net[@]}" bash -euo pipefail -c '
    ip link set lo up
    ip link add v0 type veth peer name v1
    ip addr add 10.77.0.1/24 dev v0
    ip addr add 10.77.0.2/24 dev v1
    ip link set v0 up
    ip link set v1 up
    for c in all v0 v1; do
        echo 1 > /proc/sys/net/ipv4/conf/$c/accept_local
        echo 0 > /proc/sys/net/ipv4/conf/$c/rp_filter
    done
    exec cargo bench --locked --offline --bench room_load -- --server-ip 10.77.0.1 --client-ip 10.77.0.2 "$@"
' bench "$@"
