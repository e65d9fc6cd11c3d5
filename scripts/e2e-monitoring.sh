#!/usr/bin/env bash
# Live test of the monitoring mixin: real traffic, two agents, a real Prometheus loading the
# rules, every dashboard query (tests/live/monitoring_e2e.py). Needs root; skipped, with a
# notice, otherwise.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" != 0 ]; then
    echo "e2e-monitoring: skipped (needs root for network namespaces and capture)"
    exit 0
fi
cargo build --locked -q -p meshwatch-agent
python3 tests/live/monitoring_e2e.py target/debug/meshwatch
