#!/usr/bin/env bash
# Regenerate every capture with real stacks into a scratch directory and check the fresh
# captures against the same expectations as the committed ones: proves pcaps/generate.py still
# works on this machine. Needs root (network namespaces); skipped, with a notice, otherwise.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" != 0 ]; then
    echo "check-generator: skipped (needs root for network namespaces)"
    exit 0
fi
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
python3 pcaps/generate.py --out "$out" >/dev/null
MESHWATCH_PCAPS="$out" cargo test --locked -q -p meshwatch-tests --test pcaps
