#!/usr/bin/env bash
# Offline benchmark, side by side on the same files: tcpdump -r (libpcap's read floor),
# ndpiReader (nDPI), tshark (on the small file only: slow), meshwatch analyze (one pipeline with
# and without its helper threads, and 2 workers),
# on a mixed capture, a churn of short connections, a 1M-SYN flood and a small mixed one.
# Wall time is the best of RUNS warm runs; peak RSS from /usr/bin/time -v (mapped file pages
# count). Then the classification counts of the peers against ours. Prints Markdown.
# Usage: bench/run.sh [DATA_DIR]     (captures are generated there if missing)
set -euo pipefail
cd "$(dirname "$0")/.."
data=${1:-bench/data}
runs=${RUNS:-3}
bin=${MESHWATCH_BIN:-target/release/meshwatch}   # another build (e.g. an older commit) to compare
mkdir -p "$data"
[ -f "$data/mixed-20k.pcap" ] || python3 bench/gen_capture.py mixed "$data/mixed-20k.pcap" 20000 >&2
[ -f "$data/churn-1m.pcap" ] || python3 bench/gen_capture.py churn "$data/churn-1m.pcap" 1000000 >&2
[ -f "$data/mixed-2k.pcap" ] || python3 bench/gen_capture.py mixed "$data/mixed-2k.pcap" 2000 >&2
[ -f "$data/synflood-1m.pcap" ] || python3 bench/gen_capture.py synflood "$data/synflood-1m.pcap" 1000000 >&2
[ -n "${MESHWATCH_BIN:-}" ] || cargo build --release --locked -q

best() { # best wall seconds and max RSS (KiB) of RUNS runs: "secs kib"
    local best=999999 rss=0 t
    for _ in $(seq "$runs"); do
        /usr/bin/time -o /tmp/meshwatch-bench.time -f "%e %M" "$@" >/dev/null 2>&1 || true
        t=$(tail -1 /tmp/meshwatch-bench.time)
        best=$(python3 -c "print(min($best, ${t% *}))")
        rss=$(( ${t#* } > rss ? ${t#* } : rss ))
    done
    echo "$best $rss"
}

row() { # name file secs kib packets bytes floor
    python3 - "$@" <<'PY'
import sys
name, f, secs, kib, pkts, size, floor = sys.argv[1:8]
secs, pkts, size, floor = float(secs), int(pkts), int(size), float(floor)
pps = pkts / secs / 1e6 if secs else 0
gbit = size * 8 / secs / 1e9 if secs else 0
print(f"| {f} | {name} | {secs:.3f} | {pps:.2f} | {gbit:.1f} | {int(kib)//1024} | {floor/secs:.2f}x |")
PY
}

echo "| capture | tool | wall s (best of $runs) | Mpackets/s | Gbit/s | peak RSS MiB | vs tcpdump -r |"
echo "|---|---|---|---|---|---|---|"
for f in mixed-20k churn-1m synflood-1m mixed-2k; do
    file="$data/$f.pcap"
    cat "$file" > /dev/null   # warm the page cache for everyone
    pkts=$(capinfos -c -M "$file" | awk '/Number of packets/ {print $NF}')
    size=$(stat -c %s "$file")
    read -r floor rss < <(best tcpdump -r "$file" -w /dev/null)
    row "tcpdump -r -w /dev/null" "$f" "$floor" "$rss" "$pkts" "$size" "$floor"
    read -r t rss < <(best ndpiReader -q -i "$file")
    row "ndpiReader -i" "$f" "$t" "$rss" "$pkts" "$size" "$floor"
    if [ "$f" = mixed-2k ]; then
        read -r t rss < <(RUNS=1 best tshark -r "$file" -T fields -e tcp.stream -e tls.handshake.extensions_alpn_str)
        row "tshark -T fields" "$f" "$t" "$rss" "$pkts" "$size" "$floor"
    fi
    read -r t rss < <(best "$bin" analyze --format json "$file")
    row "meshwatch analyze" "$f" "$t" "$rss" "$pkts" "$size" "$floor"
    read -r t rss < <(best "$bin" analyze --format json --helper-threads never "$file")
    row "meshwatch analyze --helper-threads never" "$f" "$t" "$rss" "$pkts" "$size" "$floor"
    read -r t rss < <(best "$bin" analyze --format json --threads 2 "$file")
    row "meshwatch analyze --threads 2" "$f" "$t" "$rss" "$pkts" "$size" "$floor"
done

echo
echo "Classification counts on the same files (connections):"
echo
echo "| capture | meshwatch istio_mtls / tls / plaintext | nDPI TLS / HTTP flows | tshark Istio-ALPN hellos / other hellos / HTTP requests |"
echo "|---|---|---|---|"
for f in mixed-20k mixed-2k; do
    file="$data/$f.pcap"
    ours=$("$bin" analyze --format json "$file" | python3 -c "import json,sys; s=json.load(sys.stdin)['summary']['security']; print(s['istio_mtls'], '/', s['tls'], '/', s['plaintext'])")
    ndpi=$(ndpiReader -i "$file" 2>/dev/null | awk '$1=="TLS" && /flows:/ {t=$NF} $1=="HTTP" && /flows:/ {h=$NF} END {print t " / " h}')
    ts="(not run: slow)"
    if [ "$f" = mixed-2k ]; then
        ts=$(tshark -r "$file" -d tcp.port==8000,tls -Y 'tls.handshake.type == 1 || http.request' \
               -T fields -e tls.handshake.extensions_alpn_str -e http.request.method 2>/dev/null |
             awk -F'\t' '$1 ~ /istio/ {i++} $1 != "" && $1 !~ /istio/ {o++} $1 == "" && $2 != "" {h++} END {print i+0 " / " o+0 " / " h+0}')
    fi
    echo "| $f | $ours | $ndpi | $ts |"
done
