#!/usr/bin/env bash
# The Xirtam main command (README "Run it"): start a local mining directory
# node on the embedded RocksDB, with JSON-RPC on 127.0.0.1:8645.
#
#   bash scripts/run.sh        # = xirtam-node run --network local --mine (data in ~/.xirtam/local)
#   bash scripts/run.sh --network regtest --mine --datadir /tmp/x   # your own `xirtam-node run` flags
#
# Installs the system packages the build needs when they are missing. The
# first build compiles RocksDB from C++ source (about 10-15 minutes on two
# cores); later runs start at once. Stop the node with Ctrl-C.
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
args=("$@")
if ((${#args[@]} == 0)); then args=(--network local --mine); fi
exec cargo run --locked -q -p xirtam-node -- run "${args[@]}"
