#!/usr/bin/env bash
# What the agent costs on a node (root): for each replay rate, replay a capture with tcpreplay
# onto one end of a veth pair in a scratch namespace and capture on the other end, once with
# `meshwatch agent` (identity map of 10k pods from bench/gen_workloads.py) and once with
# `tcpdump -w /dev/null -B 65536` (the floor). For each run:
#   CPU % of one core = (utime+stime of the capturing process, /proc/PID/stat, delta over the run)
#                       / the seconds tcpreplay spent sending (its "Actual: ... in X seconds");
#                       stat counts in clock ticks (10 ms), so the same is given from the
#                       threads' run time in nanoseconds (/proc/PID/task/*/schedstat);
#   peak RSS          = VmHWM from /proc/PID/status at the end;
#   received, drops   = the agent's /api/v1/status (libpcap's ps_recv/ps_drop), tcpdump's summary.
# Prints a Markdown table. Usage:
#   bench/live_cpu.sh [CAPTURE...]      (default: bench/data/mixed-20k.pcap bench/data/churn-1m.pcap)
# Environment: RATES (default "10000 50000 100000 topspeed"), SECONDS_PER_RATE (default 10: a
# paced run sends rate*seconds packets, at most the whole capture; topspeed sends the whole
# capture), TOOLS (default "agent tcpdump"), MESHWATCH_BIN, WORKLOADS (default: generated).
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" = 0 ] || { echo "bench/live_cpu.sh: needs root (network namespaces, capture)" >&2; exit 1; }
captures=("$@")
[ ${#captures[@]} -gt 0 ] || captures=(bench/data/mixed-20k.pcap bench/data/churn-1m.pcap)
rates=${RATES:-10000 50000 100000 topspeed}
secs=${SECONDS_PER_RATE:-10}
tools=${TOOLS:-agent tcpdump}
bin=${MESHWATCH_BIN:-target/release/meshwatch}
ns=mwb-cpu-$$            # scratch namespaces of this harness are mwb-*; other tests use others
port=19481
tmp=$(mktemp -d /tmp/mwb-cpu.XXXXXX)
workloads=${WORKLOADS:-$tmp/workloads.yaml}
tick=$(getconf CLK_TCK)

cleanup() {
    ip netns pids "$ns" 2>/dev/null | xargs -r kill 2>/dev/null || true
    ip netns del "$ns" 2>/dev/null || true
    rm -rf "$tmp"
}
trap cleanup EXIT
for c in "${captures[@]}"; do
    [ -f "$c" ] && continue
    case $(basename "$c") in
        mixed-20k.pcap) python3 bench/gen_capture.py mixed "$c" 20000 >&2 ;;
        churn-1m.pcap) python3 bench/gen_capture.py churn "$c" 1000000 >&2 ;;
        *) echo "no capture $c" >&2; exit 1 ;;
    esac
done
[ -f "$workloads" ] || python3 bench/gen_workloads.py "$workloads" 10000 >&2
ip netns add "$ns"
ip -n "$ns" link add vb0 type veth peer name vb1
ip -n "$ns" link set vb0 up; ip -n "$ns" link set vb1 up; ip -n "$ns" link set lo up
ip netns exec "$ns" ethtool -K vb1 gro off >/dev/null 2>&1 || true

cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }       # utime + stime, all threads
run_ns() { cat /proc/"$1"/task/*/schedstat | awk '{s += $1} END {printf "%d", s}'; }  # ns on CPU
hwm_kib() { awk '/^VmHWM:/ {print $2}' "/proc/$1/status"; }

replay() { # $1 capture, $2 rate -> "pps seconds" (tcpreplay's own figures)
    local rate=(--topspeed) limit=()
    if [ "$2" != topspeed ]; then
        rate=(--pps "$2")
        limit=(--limit "$(( $2 * secs ))")
    fi
    ip netns exec "$ns" tcpreplay -q -K "${rate[@]}" "${limit[@]}" -i vb0 "$1" 2>&1 |
        awk '/Actual:/ {for (i=1;i<=NF;i++) if ($i == "in") s=$(i+1)}
             /Rated:/  {for (i=1;i<=NF;i++) if ($i ~ /pps/) p=$(i-1)}
             END {gsub(",", "", p); print p, s}'
}

# $1 tool, $2 pid, $3 capture, $4 rate -> "pps seconds cpu_ticks run_ns"
measure() {
    local before after ns_before ns_after pps s
    before=$(cpu_ticks "$2"); ns_before=$(run_ns "$2")
    read -r pps s < <(replay "$3" "$4")
    sleep 2   # the capture drains its buffer (and the agent publishes its counters)
    after=$(cpu_ticks "$2"); ns_after=$(run_ns "$2")
    echo "$pps $s $(( after - before )) $(( ns_after - ns_before ))"
}

row() { # tool capture rate pps seconds ticks run_ns hwm received drops
    python3 - "$@" "$tick" <<'PY'
import sys
tool, cap, rate, pps, s, ticks, ns, hwm, got, drops, tick = sys.argv[1:12]
s = float(s)
cpu = int(ticks) / int(tick) / s * 100 if s else 0
cpu_ns = int(ns) / 1e9 / s * 100 if s else 0
print(f"| {cap} | {rate} | {tool} | {int(float(pps)):,} | {cpu:.1f} | {cpu_ns:.2f} | {int(hwm) / 1024:.0f} | {int(got):,} | {drops} |")
PY
}

agent_run() { # $1 capture, $2 rate
    ip netns exec "$ns" "$bin" agent --interface vb1 --listen 127.0.0.1:$port --window 1h \
        --workloads "$workloads" > "$tmp/agent.log" 2>&1 &
    local pid=$!
    for _ in $(seq 100); do ip netns exec "$ns" curl -sf 127.0.0.1:$port/readyz >/dev/null && break; sleep 0.1; done
    sleep 1   # settle: start-up costs (the workloads file parsed) are not the capture's
    local pps s ticks cpu_ns
    read -r pps s ticks cpu_ns < <(measure agent "$pid" "$1" "$2")
    local hwm; hwm=$(hwm_kib "$pid")
    local st; st=$(ip netns exec "$ns" curl -s 127.0.0.1:$port/api/v1/status)
    kill -TERM "$pid"; wait "$pid" || true
    read -r got drops < <(python3 -c "import json,sys; c=json.loads(sys.argv[1])['capture']; print(c['received'], c['dropped_kernel'])" "$st")
    row "meshwatch agent" "$(basename "$1" .pcap)" "$2" "$pps" "$s" "$ticks" "$cpu_ns" "$hwm" "$got" "$drops"
}

tcpdump_run() { # $1 capture, $2 rate
    ip netns exec "$ns" tcpdump -i vb1 -B 65536 -w /dev/null -q 2> "$tmp/tcpdump.log" &
    local pid=$!
    sleep 1
    local pps s ticks cpu_ns
    read -r pps s ticks cpu_ns < <(measure tcpdump "$pid" "$1" "$2")
    local hwm; hwm=$(hwm_kib "$pid")
    kill -TERM "$pid"; wait "$pid" || true
    local got drops
    got=$(awk '/packets received by filter/ {print $1}' "$tmp/tcpdump.log")
    drops=$(awk '/dropped by kernel/ {print $1}' "$tmp/tcpdump.log")
    row "tcpdump -B 65536" "$(basename "$1" .pcap)" "$2" "$pps" "$s" "$ticks" "$cpu_ns" "$hwm" "$got" "$drops"
}

echo "# $(date -u +%FT%TZ) $(nproc) cores; load before: $(cut -d' ' -f1-3 /proc/loadavg); bin $bin"
echo "| capture | rate (pps asked) | tool | replay pps | CPU % (stat) | CPU % (schedstat) | peak RSS MiB | received | kernel drops |"
echo "|---|---|---|---|---|---|---|---|---|"
for c in "${captures[@]}"; do
    cat "$c" > /dev/null   # page cache warm: tcpreplay -K preloads it
    for rate in $rates; do
        for tool in $tools; do
            case $tool in
                agent) agent_run "$c" "$rate" ;;
                tcpdump) tcpdump_run "$c" "$rate" ;;
            esac
        done
    done
done
echo "# load after: $(cut -d' ' -f1-3 /proc/loadavg)"
