#!/usr/bin/env bash
# Run every fuzz target (cargo-fuzz / libFuzzer with ASan), seeded from pcaps/, the third-party
# corpus and agent/assets/. The toolchain is stable: RUSTC_BOOTSTRAP lets it take the sanitizer
# flags cargo-fuzz passes. A crash fails the run and leaves its input in fuzz/artifacts/TARGET/;
# turn it into a regression test. Usage: scripts/fuzz.sh [SECONDS_PER_TARGET] (default 15)
#
# Each target's status is cargo-fuzz's own exit code, read before anything filters its output
# (a status read through a pipe would be the filter's).
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-15}
command -v cargo-fuzz >/dev/null 2>&1 || cargo install cargo-fuzz --locked
export RUSTC_BOOTSTRAP=1
corpus=fuzz/corpus
python3 fuzz/seed.py "$corpus" >/dev/null
cargo fuzz build -O
logs=$(mktemp -d)
trap 'rm -rf "$logs"' EXIT
passed=0
failed=0
for target in decode preface client_hello capture_file; do
    echo "fuzz: $target for ${seconds}s"
    status=0
    cargo fuzz run -O "$target" "$corpus/$target" -- \
        -max_total_time="$seconds" -max_len=65536 -rss_limit_mb=1024 -print_final_stats=0 \
        >"$logs/$target.log" 2>&1 || status=$?
    grep -E "^#[0-9]+ +DONE|ERROR|panicked|SUMMARY" "$logs/$target.log" || true
    if [ "$status" -eq 0 ]; then
        passed=$((passed + 1))
    else
        failed=$((failed + 1))
        echo "fuzz: $target FAILED (exit $status); last lines:"
        tail -n 20 "$logs/$target.log"
    fi
done
echo "fuzz: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
