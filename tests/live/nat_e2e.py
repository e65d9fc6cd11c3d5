#!/usr/bin/env python3
"""End-to-end test of `meshwatch agent` on a routed node with kube-proxy's Service NAT (root).

The topology and traffic are pcaps/generate.py's nat scenario (setup_nat): a routed node
(Calico-style /32 routes, proxy ARP, no bridge) with kube-proxy-like DNAT for the ClusterIP
Service foo/httpbin (10.96.0.50:80 -> 10.244.1.21:8000) and its NodePort 30080 (SNAT to the
node), an outside host, a hostNetwork client, kubelet-like HTTP probes (app port, and pilot-agent's
15020 as Istio's rewrite sends them) and TCP probes, foo/sleep's mTLS through the sidecar
emulation, legacy/sleep's plaintext to the ClusterIP (no sidecar). The agent captures on the
node with `--interface any` (every forwarded packet on two veths, pre- and post-NAT) with the
scenario's workloads file, every pod on `node-1` (the agent's `--node-name`), and its
`services:`; a real Prometheus (Debian package) scrapes it every second.

Checks, through Prometheus' query API, the agent's /metrics and its JSON API:
 1. the sum of meshwatch_connections_total over all series equals the connections with payload
    the traffic made (each counted once: a connection's pre- and post-DNAT views are one), as
    the expected file's summary_connections says for the same traffic;
 2. the sum of meshwatch_connection_attempts_total equals the TCP probes made;
 3. no series (and no API edge) has the ClusterIP or the node as its destination (`unknown`, or
    destination_namespace="node"): every connection is judged at foo/httpbin;
 4. /api/v1/verdicts: foo/httpbin is blocked by exactly the blockers the traffic makes, of kinds
    no_sidecar (legacy/sleep), nodeport (source 192.0.2.10), kubelet_probe and node;
 5. the node's probes of pilot-agent's 15020 are exempted (`exempted` counts them), not blockers.

Namespaces are named mwn-* (MESHWATCH_NETNS_PREFIX), apart from the other live tests' mw-*.
Everything it starts is stopped and its namespaces are removed.

Usage: sudo python3 tests/live/nat_e2e.py [MESHWATCH_BINARY]
Prints 'nat e2e: N passed, M failed' and exits non-zero on a failure.
"""
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.parse

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
# before generate is imported: its namespace names are fixed at import
os.environ["MESHWATCH_NETNS_PREFIX"] = "mwn-"
sys.path.insert(0, os.path.join(ROOT, "pcaps"))
import generate  # noqa: E402

NODE_NETNS = generate.NETNS + "node"
NODE_NAME = "node-1"  # the workloads file's node and the agent's --node-name
AGENT_PORT = 19577
PROM_PORT = 19191
WINDOW = 60  # seconds: the whole run's traffic is inside it
SETTLE = 15  # seconds to wait for the counters to reach what was made
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import check, results, wait_for  # noqa: E402


def in_node(*args, **kw):
    return subprocess.run(["ip", "netns", "exec", NODE_NETNS, *args], capture_output=True, text=True, **kw)


def http_get(port, path):
    r = in_node("curl", "-s", "-m", "5", "-w", "\n%{http_code}", f"http://127.0.0.1:{port}{path}")
    body, _, code = r.stdout.rpartition("\n")
    return (int(code) if code.isdigit() else 0), body


def api(path):
    code, body = http_get(AGENT_PORT, path)
    return json.loads(body) if code == 200 else None


def prom(q):
    """The instant vector of a PromQL query: [(labels, value)], or None if the query failed."""
    code, body = http_get(PROM_PORT, "/api/v1/query?query=" + urllib.parse.quote(q))
    if code != 200:
        return None
    return [(r["metric"], float(r["value"][1])) for r in json.loads(body)["data"]["result"]]


def prom_scalar(q):
    res = prom(q)
    if res is None:
        return None
    return res[0][1] if res else 0.0


def metrics_sum(name):
    """The sum of a counter's series in the agent's own /metrics (OpenMetrics text)."""
    code, text = http_get(AGENT_PORT, "/metrics")
    if code != 200:
        return None
    return sum(float(line.split()[-1]) for line in text.splitlines() if line.startswith(name + "{"))


def workloads_file(lab, path):
    """generate.py's workloads file of the scenario (its `nodes:` and `services:` too), with
    every pod on node-1, so that the agent started as node-1 reports them."""
    generate.workloads_yaml(lab, path)
    lines, section = [], None
    for line in open(path).read().splitlines():
        if not line.startswith(" "):
            section = line.rstrip(":")
        elif section == "workloads":
            if not line.endswith("}"):
                raise RuntimeError(f"unexpected workloads line: {line!r}")
            line = line[:-1] + f", node: {NODE_NAME}}}"
        lines.append(line)
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")
    return path


def source_of(b):
    """A blocker's source as the expected files name it."""
    if b.get("workload"):
        return f"{b.get('namespace')}/{b['workload']}"
    if b.get("node"):
        return f"node:{b['node']}"
    return b.get("ip", "?")


def destination_of(e):
    d = e.get("destination", {})
    if d.get("workload"):
        return f"{d.get('namespace')}/{d['workload']}"
    if d.get("node"):
        return f"node:{d['node']} ({d.get('ip')})"
    return d.get("ip", json.dumps(d))


def run_checks(made):
    expected = generate.expect_nat_view(made, lambda m: True, "node_views")
    connections = expected["summary_connections"]
    probes = expected["attempts"]
    with open(os.path.join(ROOT, "pcaps", "nat-node-any.expected.json")) as f:
        committed = json.load(f)
    check(f"the traffic is the nat scenario's: {connections} connections with payload, {probes} TCP probes "
          f"(pcaps/nat-node-any.expected.json: {committed['summary_connections']}, {committed['attempts']})",
          (connections, probes) == (committed["summary_connections"], committed["attempts"]))

    # -- 1. each connection once: pre- and post-DNAT (and pre-/post-SNAT) views are one
    conn_q, att_q = "sum(meshwatch_connections_total)", "sum(meshwatch_connection_attempts_total)"
    wait_for(lambda: prom_scalar(conn_q) == connections and prom_scalar(att_q) == probes, SETTLE)
    time.sleep(3)  # three more scrapes: a late second count would show
    got = prom_scalar(conn_q)
    print(f"     Prometheus: {conn_q} = {got}")
    check(f"(1) Prometheus: sum(meshwatch_connections_total) = {got:g}, the connections made = {connections}",
          got == connections, f"{got}")
    got_m = metrics_sum("meshwatch_connections_total")
    check(f"(1) /metrics: the meshwatch_connections_total series sum to {got_m:g} = {connections}",
          got_m == connections, f"{got_m}")
    edges = (api("/api/v1/edges") or {}).get("edges", [])
    got_e = sum(e.get("connections", 0) for e in edges)
    check(f"(1) /api/v1/edges: the edges' connections sum to {got_e} = {connections}", got_e == connections,
          json.dumps(edges)[:1500])

    # -- 2. TCP probes are attempts, once each
    got = prom_scalar(att_q)
    check(f"(2) Prometheus: sum(meshwatch_connection_attempts_total) = {got:g}, the TCP probes made = {probes}",
          got == probes, f"{got}")
    got_e = sum(e.get("attempts", 0) for e in edges)
    check(f"(2) /api/v1/edges: the edges' attempts sum to {got_e} = {probes}", got_e == probes)

    # -- 3. judged at the backend: never the ClusterIP (unknown) or the node as a destination
    q = ('count by (destination_namespace, destination_workload, destination_port) '
         '({__name__=~"meshwatch_connections_total|meshwatch_connection_attempts_total"})')
    series = prom(q) or []
    dests = sorted((m.get("destination_namespace"), m.get("destination_workload"), m.get("destination_port"))
                   for m, _v in series)
    print(f"     Prometheus destinations (namespace, workload, port): {dests}")
    stray = [d for d in dests if d[1] == "unknown" or d[0] in ("unknown", "node")]
    check(f"(3) Prometheus: no series has an unknown (ClusterIP) or node destination ({len(stray)} of "
          f"{len(dests)} destinations)", series and not stray, str(stray))
    at_httpbin = prom_scalar('sum(meshwatch_connections_total{destination_namespace="foo",'
                             'destination_workload="httpbin"})')
    check(f"(3) Prometheus: all {connections} connections are judged at foo/httpbin ({at_httpbin:g})",
          at_httpbin == connections, f"{at_httpbin}")
    api_dests = sorted({destination_of(e) for e in edges})
    check(f"(3) /api/v1/edges: every edge's destination is foo/httpbin ({api_dests})",
          api_dests == ["foo/httpbin"], str(api_dests))

    # -- 4. the blockers, by kind
    v = api("/api/v1/verdicts") or {}
    foo = next((x for x in v.get("verdicts", []) if x.get("namespace") == "foo" and x.get("workload") == "httpbin"),
               None) or {}
    others = [destination_of({"destination": x}) for x in v.get("verdicts", [])
              if (x.get("namespace"), x.get("workload")) != ("foo", "httpbin") and x.get("verdict") == "blocked"]
    check("(4) /api/v1/verdicts: foo/httpbin is blocked, and nothing else is", foo.get("verdict") == "blocked"
          and not others, f"{foo.get('verdict')} {others}")
    got_b = sorted((source_of(b), b.get("kind"), b.get("port"), b.get("security"), b.get("connections"))
                   for b in foo.get("blockers", []))
    want_b = sorted((b["source"], b["kind"], b["port"], b["security"], b["connections"])
                    for b in expected["verdicts"]["foo/httpbin"]["blockers"])
    print(f"     blockers (source, kind, port, security, connections): {got_b}")
    kinds = {k for _s, k, *_ in got_b}
    check(f"(4) foo/httpbin's blocker kinds are no_sidecar, nodeport, kubelet_probe, node ({sorted(kinds)})",
          kinds == {"no_sidecar", "nodeport", "kubelet_probe", "node"}, str(sorted(kinds)))
    nodeport = [s for s, k, *_ in got_b if k == "nodeport"]
    check(f"(4) the nodeport blocker is the outside client {generate.OUTSIDE_IP} ({nodeport})",
          nodeport == [generate.OUTSIDE_IP], str(nodeport))
    check("(4) the blockers are exactly the traffic's (source, kind, port, security, connections)",
          got_b == want_b, f"got {got_b}, want {want_b}")

    # -- 5. Istio's rewritten probes (the node to pilot-agent's 15020) are exempt
    rewritten = sum(1 for m in made if m["payload"] and m["port"] == generate.PILOT_AGENT_PORT)
    exempted = foo.get("exempted")
    print(f"     foo/httpbin: exempted {exempted}, connections {foo.get('connections')}, "
          f"attempts {foo.get('attempts')}")
    check(f"(5) foo/httpbin's exempted = {exempted} > 0: the node's {rewritten} probes of :15020",
          isinstance(exempted, int) and exempted > 0 and exempted == rewritten, f"{exempted}")
    on_15020 = [b for b in got_b if b[2] == generate.PILOT_AGENT_PORT]
    check("(5) no blocker on :15020", not on_15020, str(on_15020))

    check("the capture dropped nothing (the verdicts' evidence is complete)",
          v.get("evidence_incomplete") is False, str(v.get("evidence_incomplete")))


def main():
    if os.geteuid() != 0:
        sys.exit("nat_e2e.py needs root (network namespaces, capture)")
    binary = os.path.abspath(sys.argv[1] if len(sys.argv) > 1 else os.path.join(ROOT, "target/debug/meshwatch"))
    started = time.time()
    procs = []
    with tempfile.TemporaryDirectory() as tmp:
        lab = generate.Lab(tmp, routed=True)
        try:
            lab.make_certs()
            traffic = generate.setup_nat(lab)
            workloads = workloads_file(lab, os.path.join(tmp, "workloads.yaml"))
            log = open(os.path.join(tmp, "agent.log"), "w+")
            agent = subprocess.Popen(
                ["ip", "netns", "exec", NODE_NETNS, binary, "agent", "--interface", "any",
                 "--workloads", workloads, "--node-name", NODE_NAME, "--listen", f"127.0.0.1:{AGENT_PORT}",
                 "--window", f"{WINDOW}s"], stdout=log, stderr=subprocess.STDOUT)
            procs.append(agent)
            ready = check("agent becomes ready", wait_for(lambda: http_get(AGENT_PORT, "/readyz")[0] == 200, 15))
            entries = (api("/api/v1/status") or {}).get("identity_entries")
            print(f"     workloads file: {workloads} ({entries} identity entries)")
            cfg = os.path.join(tmp, "prometheus.yml")
            with open(cfg, "w") as f:
                f.write("global:\n  scrape_interval: 1s\nscrape_configs:\n"
                        f"  - job_name: meshwatch\n    static_configs:\n      - targets: ['127.0.0.1:{AGENT_PORT}']\n")
            procs.append(subprocess.Popen(
                ["ip", "netns", "exec", NODE_NETNS, "prometheus", f"--config.file={cfg}",
                 f"--storage.tsdb.path={tmp}/tsdb", f"--web.listen-address=127.0.0.1:{PROM_PORT}"],
                stdout=subprocess.DEVNULL, stderr=open(os.path.join(tmp, "prometheus.log"), "w")))
            up = check("prometheus is up", wait_for(lambda: http_get(PROM_PORT, "/-/ready")[0] == 200, 30))
            up = up and check("prometheus scrapes the agent",
                              wait_for(lambda: prom_scalar('up{job="meshwatch"}') == 1.0, 30))
            if ready and up:
                t0 = time.time()
                made = traffic()
                took = time.time() - t0
                check(f"the traffic ran well inside the window ({took:.1f} s < {WINDOW / 2:.0f} s)", took < WINDOW / 2)
                run_checks(made)
            if agent.poll() is not None:
                log.seek(0)
                check("the agent is still running", False, f"exit {agent.returncode}: {log.read()[-800:]}")
        finally:
            for p in procs:
                if p.poll() is None:
                    p.terminate()
                    try:
                        p.wait(timeout=10)
                    except subprocess.TimeoutExpired:
                        p.kill()
                        p.wait()
            lab.close()
    failed = sum(1 for _, ok in results if not ok)
    print(f"nat e2e: {len(results) - failed} passed, {failed} failed ({time.time() - started:.0f} s)")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
