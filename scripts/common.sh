# Shared by scripts/run.sh and scripts/test.sh: install what is missing, from Debian/Ubuntu packages
# and the npm registry only, and keep slow builds in a cache outside the repository.
# Sourced, not run.

QIAO_CACHE="${QIAO_CACHE:-$HOME/.cache/qiao}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$QIAO_CACHE/target}"

say() { printf '\033[1m[qiao]\033[0m %s\n' "$*" >&2; }

as_root() {
    if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi
}

apt_updated=0
# apt_need PKG... — installs the packages that are not installed yet.
apt_need() {
    local missing=()
    for p in "$@"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    if ! command -v apt-get >/dev/null; then
        say "please install: ${missing[*]} (no apt-get on this machine)"
        return 1
    fi
    if [ "$apt_updated" = 0 ]; then
        say "apt-get update"
        as_root apt-get update -qq -o DPkg::Lock::Timeout=600
        apt_updated=1
    fi
    say "installing ${missing[*]}"
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq -o DPkg::Lock::Timeout=600 "${missing[@]}" >/dev/null
}

# Rust: the toolchain that builds Qiao (rustc >= 1.85; CI uses 1.95).
need_rust() {
    if command -v cargo >/dev/null; then return 0; fi
    [ -x "$HOME/.cargo/bin/cargo" ] && export PATH="$HOME/.cargo/bin:$PATH" && return 0
    # Ubuntu 24.04+ and Debian 13+ package rustup; Debian 12's own rustc (1.63) is too old.
    if apt-cache show rustup >/dev/null 2>&1; then
        apt_need rustup
        rustup toolchain install stable --profile minimal
        return 0
    fi
    say "Rust (cargo, rustc >= 1.85) is required: install it with rustup, then run this again."
    exit 1
}

need_build_tools() {
    # FFmpeg's libraries (the recorder and the composite link them; bindgen needs clang) and a CJK
    # font for the composite's labels.
    apt_need build-essential pkg-config clang libavcodec-dev libavformat-dev libavutil-dev libswscale-dev \
        libswresample-dev libavfilter-dev libavdevice-dev fonts-wqy-microhei
}
