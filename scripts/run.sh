#!/usr/bin/env bash
# The Xirtam main command (README "Run it"): the chat demo on a local
# testnet - 3 directory nodes, 2 concierge servers, @alice and @bob
# exchanging end-to-end-encrypted messages, @alice moving servers - with a
# transcript of every step. Exits 0 when every message arrived; cleans up.
#
#   bash scripts/run.sh                 # the demo (xirtam-testnet demo)
#   bash scripts/run.sh node [flags]    # one mining directory node instead
#                                       # (= xirtam-node run --network local --mine)
#
# Installs the system packages the build needs when they are missing. The
# first build compiles RocksDB from C++ source: a whole first run on a fresh
# 2-core machine was measured at 12 minutes (29.5 on a slower one); later
# runs start at once.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v cargo >/dev/null 2>&1 && [ -f "$HOME/.cargo/env" ]; then
  # shellcheck disable=SC1091
  . "$HOME/.cargo/env"
fi
missing=()
for p in build-essential pkg-config clang libclang-dev; do
  dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
if ((${#missing[@]})); then
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}"
fi
if [ "${1:-}" = "node" ]; then
  shift
  args=("$@")
  if ((${#args[@]} == 0)); then args=(--network local --mine); fi
  exec cargo run --locked -q -p xirtam-node -- run "${args[@]}"
fi
# The demo starts xirtam-node and xirtam-server processes: build every binary.
cargo build --locked -q --workspace --bins
exec "${CARGO_TARGET_DIR:-target}/debug/xirtam-testnet" demo "$@"
