#!/usr/bin/env bash
# End-to-end test of `meshwatch agent` with network namespaces, real clients and a real
# Prometheus server (tests/live/agent_e2e.py). Needs root; skipped, with a notice, otherwise.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" != 0 ]; then
    echo "e2e-agent: skipped (needs root for network namespaces and capture)"
    exit 0
fi
cargo build --locked -q -p meshwatch-agent
python3 tests/live/agent_e2e.py target/debug/meshwatch
