#!/usr/bin/env bash
# Time from `xirtam-node name claim` to a record confirmed 3 deep, with its
# proof verified, on one `local` node mining real proof of work (the figure
# in docs/BENCHMARKS.md). Build first: cargo build -p xirtam-node
set -uo pipefail
B="${CARGO_TARGET_DIR:-target}/debug"
D=$(mktemp -d)
"$B/xirtam-node" run --network local --mine --datadir "$D/node" --rpc-addr 127.0.0.1:0 \
  --p2p-addr /ip4/127.0.0.1/tcp/0 --log warn > "$D/node.log" 2>&1 &
NODE=$!
trap 'kill $NODE 2>/dev/null; rm -rf "$D"' EXIT
for _ in $(seq 1 100); do [ -f "$D/node/rpc.addr" ] && break; sleep 0.1; done
RPC="http://$(cat "$D/node/rpc.addr")"
"$B/xirtam-node" key new --out "$D/k.key" > /dev/null
sleep 15 # a few blocks first, so that writers have an anchor under the tip
for n in 1 2 3 4 5; do
  s=$(date +%s.%N)
  "$B/xirtam-node" name claim "@bench$n" --key "$D/k.key" --value "v$n" --confirmations 3 --rpc "$RPC" > "$D/out$n.txt" 2>&1 \
    || { echo "claim $n failed:"; head -5 "$D/out$n.txt"; continue; }
  e=$(date +%s.%N)
  echo "claim $n: $(echo "$e - $s" | bc) s"
done
