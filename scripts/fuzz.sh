#!/usr/bin/env bash
# Run every fuzz target (cargo-fuzz / libFuzzer with ASan), seeded from pcaps/, the third-party
# corpus and agent/assets/. The toolchain is stable: RUSTC_BOOTSTRAP lets it take the sanitizer
# flags cargo-fuzz passes. A crash fails the run and leaves its input in fuzz/artifacts/TARGET/;
# turn it into a regression test. Usage: scripts/fuzz.sh [SECONDS_PER_TARGET] (default 15)
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-15}
command -v cargo-fuzz >/dev/null 2>&1 || cargo install cargo-fuzz --locked
export RUSTC_BOOTSTRAP=1
corpus=fuzz/corpus
python3 fuzz/seed.py "$corpus" >/dev/null
cargo fuzz build -O
for target in decode preface client_hello capture_file; do
    echo "fuzz: $target for ${seconds}s"
    cargo fuzz run -O "$target" "$corpus/$target" -- \
        -max_total_time="$seconds" -max_len=65536 -rss_limit_mb=1024 -print_final_stats=0 2>&1 |
        grep -E "^#[0-9]+ +DONE|ERROR|panicked|SUMMARY" || true
    test "${PIPESTATUS[0]}" -eq 0
done
echo "fuzz: 4 passed, 0 failed"
