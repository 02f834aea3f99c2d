#!/usr/bin/env bash
# The Xirtam main command (README "Run it").
#
# Today the directory node is not built yet (it is the next issue): this
# builds the `xirtam-node` binary, prints its --help, and prints the
# consensus parameters and genesis of the local network from the pure core.
# When the node lands, this starts a local mining node instead.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v cargo >/dev/null 2>&1 && [ -f "$HOME/.cargo/env" ]; then
  # shellcheck disable=SC1091
  . "$HOME/.cargo/env"
fi
dpkg -s build-essential >/dev/null 2>&1 || {
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq build-essential pkg-config
}
cargo build --release --locked -p xirtam-node
echo "NOTE: the directory node itself is not implemented yet; this shows its CLI and the network parameters."
./target/release/xirtam-node --help
./target/release/xirtam-node params --network "${1:-local}"
