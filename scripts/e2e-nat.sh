#!/usr/bin/env bash
# End-to-end test of `meshwatch agent` on a routed node with kube-proxy's Service NAT (the nat
# scenario of pcaps/generate.py) and a real Prometheus server (tests/live/nat_e2e.py): each
# connection counted once across its pre- and post-NAT views. Needs root; skipped, with a
# notice, otherwise.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" != 0 ]; then
    echo "e2e-nat: skipped (needs root for network namespaces and capture)"
    exit 0
fi
cargo build --locked -q -p meshwatch-agent
python3 tests/live/nat_e2e.py target/debug/meshwatch
