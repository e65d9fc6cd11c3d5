#!/usr/bin/env bash
# End-to-end test of the cluster view (tests/live/cluster_e2e.py): two "nodes" joined by a VXLAN
# overlay, an agent on each, a real Prometheus scraping both, `meshwatch verdicts|check
# --prometheus` against `meshwatch analyze` of the nodes' captures, and the dashboard over both in
# headless Chromium (tests/browser/cluster_browser.py). Needs root; skipped, with a notice, otherwise.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" != 0 ]; then
    echo "e2e-cluster: skipped (needs root for network namespaces and capture)"
    exit 0
fi
cargo build --locked -q -p meshwatch-agent
cargo build --locked -q -p meshwatch-dashboard --bin meshwatch-dashboard  # the browser step
python3 tests/live/cluster_e2e.py target/debug/meshwatch
