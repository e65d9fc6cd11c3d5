#!/usr/bin/env python3
"""A workloads file of N pods (default 10,000) for the live benchmark's identity map.

The addresses of bench/gen_capture.py's captures map to some of the pods: the 500 servers of
`mixed` (10.2.x.x) and the 200 of `churn` (10.4.0.x) are all pods, and so are the first 4,000
clients of `mixed` (10.1.x.x) and 2,000 client addresses of `churn` (10.3.x.x); the rest are
filler pods (10.200.x.x) no packet names. Ten pods per workload, in 20 namespaces; half the
workloads in the sidecar mesh. No node: every workload counts as local to the agent.

Usage: python3 bench/gen_workloads.py OUT.yaml [N]
Same arguments, same bytes.
"""
import sys


def ip(a, b, i):
    return f"{a}.{b}.{(i >> 8) & 0xFF}.{i & 0xFF}"


def pod_addresses(n):
    seen = [ip(10, 2, i) for i in range(500)]            # mixed: servers
    seen += [ip(10, 4, i) for i in range(200)]           # churn: servers
    seen += [ip(10, 1, i) for i in range(4000)]          # mixed: clients 0..3999
    seen += [f"10.3.{i >> 8}.{i & 0xFF}" for i in range(2000)]  # churn: client addresses
    seen = seen[:n]
    filler = [ip(10, 200, i) for i in range(n - len(seen))]
    return seen + filler


def main():
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    out = sys.argv[1]
    n = int(sys.argv[2]) if len(sys.argv) > 2 else 10_000
    if not 0 < n <= 65_536:
        sys.exit("N must be between 1 and 65536")
    pods = pod_addresses(n)
    with open(out, "w") as f:
        f.write("workloads:\n")
        for w in range((len(pods) + 9) // 10):
            ips = ", ".join(pods[w * 10:(w + 1) * 10])
            mesh = "sidecar" if w % 2 == 0 else "none"
            f.write(f"  - {{namespace: ns-{w % 20}, workload: wl-{w}, ips: [{ips}], mesh: {mesh}}}\n")
    print(f"{out}: {len(pods)} pods in {(len(pods) + 9) // 10} workloads")


if __name__ == "__main__":
    main()
