#!/usr/bin/env bash
# Live capture benchmark (root): replay a capture with tcpreplay onto one end of a veth pair in a
# scratch namespace, capture on the other end with `meshwatch agent` and, for comparison,
# `tcpdump -w /dev/null` (2 MiB and 64 MiB buffers), and report the rate and the kernel drops.
# Usage: bench/live.sh CAPTURE [PPS...]     (no PPS: --topspeed only)
set -euo pipefail
cd "$(dirname "$0")/.."
capture=$1; shift
bin=${MESHWATCH_BIN:-target/release/meshwatch}
ns=mwb-live            # scratch namespaces of the bench scripts are mwb-*
port=19480

cleanup() { ip netns pids $ns 2>/dev/null | xargs -r kill 2>/dev/null || true; ip netns del $ns 2>/dev/null || true; }
trap cleanup EXIT
cleanup
ip netns add $ns
ip -n $ns link add vb0 type veth peer name vb1
ip -n $ns link set vb0 up; ip -n $ns link set vb1 up; ip -n $ns link set lo up
ip netns exec $ns ethtool -K vb1 gro off >/dev/null 2>&1 || true

replay() { # $1: rate ("topspeed" or pps) -> prints "pps"
    local rate=(--topspeed)
    [ "$1" != topspeed ] && rate=(--pps "$1")
    ip netns exec $ns tcpreplay -q -K "${rate[@]}" -i vb0 "$capture" 2>&1 |
        awk '/Rated:/ {for (i=1;i<=NF;i++) if ($i ~ /pps/) print $(i-1)}' | tr -d ',' | head -1
}

agent_run() { # $1 rate -> "agent pps received dropped"
    ip netns exec $ns "$bin" agent --interface vb1 --listen 127.0.0.1:$port --window 1h > /tmp/mw-bench-agent.log 2>&1 &
    local pid=$!
    for _ in $(seq 50); do ip netns exec $ns curl -sf 127.0.0.1:$port/readyz >/dev/null && break; sleep 0.1; done
    local pps; pps=$(replay "$1")
    sleep 2
    local st; st=$(ip netns exec $ns curl -s 127.0.0.1:$port/api/v1/status)
    kill -TERM $pid; wait $pid || true
    python3 -c "import json,sys; c=json.loads(sys.argv[1])['capture']; print('meshwatch-agent', sys.argv[2], c['packets'], c['dropped_kernel'])" "$st" "$pps"
}

tcpdump_run() { # $1 rate, $2 buffer KiB, [$3 extra flag] -> "tcpdump pps received dropped"
    ip netns exec $ns tcpdump -i vb1 -B "$2" ${3:-} -w /dev/null -q 2> /tmp/mw-bench-tcpdump.log &
    local pid=$!
    sleep 1
    local pps; pps=$(replay "$1")
    sleep 2
    kill -TERM $pid; wait $pid || true
    local got drop
    got=$(awk '/packets captured/ {print $1}' /tmp/mw-bench-tcpdump.log)
    drop=$(awk '/dropped by kernel/ {print $1}' /tmp/mw-bench-tcpdump.log)
    echo "tcpdump-B$2${3:+$3} $pps $got $drop"
}

packets=$(capinfos -c -M "$capture" | awk '/Number of packets/ {print $NF}')
echo "# capture $capture: $packets packets"
echo "# tool replay_pps captured kernel_drops"
for rate in topspeed "$@"; do
    agent_run "$rate"
    tcpdump_run "$rate" 2048 --immediate-mode
    tcpdump_run "$rate" 2048
    tcpdump_run "$rate" 65536
done
