#!/usr/bin/env bash
# The Xirtam test command (README "Run the tests"; .ci/run calls it).
#
# Works on a fresh Debian machine with a Rust toolchain: installs the system
# packages the build needs when they are missing, then runs formatting,
# clippy (warnings are errors) and every test in the workspace.
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '\n==> %s\n' "$*"; }

# --- system packages -------------------------------------------------------
# A C/C++ toolchain (blake3's SIMD code, RocksDB), libclang for
# RocksDB's bindgen-generated bindings, and tmux (the terminal client's
# tests drive it in tmux).
PKGS=(build-essential pkg-config clang libclang-dev tmux)
missing=()
for p in "${PKGS[@]}"; do
  dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
if ((${#missing[@]})); then
  log "installing missing packages: ${missing[*]}"
  SUDO=""
  if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}"
fi

# --- Rust toolchain components ---------------------------------------------
if ! command -v cargo >/dev/null 2>&1 && [ -f "$HOME/.cargo/env" ]; then
  # shellcheck disable=SC1091
  . "$HOME/.cargo/env"
fi
command -v cargo >/dev/null 2>&1 || { echo "cargo not found: install Rust (rustup) first" >&2; exit 1; }
for comp in rustfmt clippy; do
  if ! cargo "${comp/rustfmt/fmt}" --version >/dev/null 2>&1; then
    log "adding rustup component $comp"
    rustup component add "$comp"
  fi
done

# --- checks ------------------------------------------------------------------
log "cargo fmt --check"
cargo fmt --all -- --check

log "cargo clippy (warnings are errors)"
cargo clippy --workspace --all-targets --locked -- -D warnings

log "cargo test"
cargo test --workspace --locked
