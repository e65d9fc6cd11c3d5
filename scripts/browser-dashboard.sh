#!/usr/bin/env bash
# The dashboard in a real browser: builds meshwatch and meshwatch-dashboard (debug), then
# tests/browser/dashboard_browser.py drives headless Chromium over the DevTools protocol through
# every page of reports made from pcaps/ and of a live --agent source; screenshots go to
# target/screenshots/. Needs chromium and python3-websocket (scripts/install-deps.sh).
# Prints `dashboard browser: N passed, M failed`; exits non-zero on any failure.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --locked -q -p meshwatch-agent --bin meshwatch
cargo build --locked -q -p meshwatch-dashboard --bin meshwatch-dashboard
exec python3 tests/browser/dashboard_browser.py \
    --dashboard target/debug/meshwatch-dashboard \
    --meshwatch target/debug/meshwatch \
    --out target/screenshots "$@"
