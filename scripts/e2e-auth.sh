#!/usr/bin/env bash
# End-to-end test of who may read the agent (tests/live/auth_e2e.py): HTTPS with a certificate
# from a test CA, bearer tokens reviewed by a local API server (TokenReview,
# SubjectAccessReview) through KUBECONFIG, a real Prometheus scraping with a token file and
# the CA, certificate rotation, a token flood and 1000 slow clients — all on loopback, no
# network namespaces. Needs root (the agent captures on lo); skipped, with a notice, otherwise.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" != 0 ]; then
    echo "e2e-auth: skipped (needs root for the capture)"
    exit 0
fi
cargo build --locked -q -p meshwatch-agent
python3 tests/live/auth_e2e.py target/debug/meshwatch
