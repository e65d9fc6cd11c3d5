#!/usr/bin/env python3
"""Live test of the monitoring mixin (grafana/): real traffic, two real agents, a real Prometheus
loading the rules, every dashboard query (root).

Pods are network namespaces on a bridge (pcaps/generate.py's Lab). Two agents capture on the
bridge as if they ran on two nodes (`--node-name node-1|node-2`, and `node:` in the workloads
file): each reports a connection once, with `reporter="destination"` on the destination's node,
so summing their series must count each connection once. Prometheus (Debian's package) scrapes
both every second and evaluates the rules generated for the agents' window (20 s).

Traffic (real openssl with Istio's ALPN, gnutls-cli, curl): Istio's migration task (legacy/sleep
sends plaintext to foo/httpbin; kubelet-like plaintext from the node to the exempt ports 15021
and 15020), plus baz/api with 3 mTLS connections across "nodes" (insufficient: 6 would be ready,
so a double count shows), baz/web with plaintext from the node to its app port (node sources are
evidence), qux/tls with application TLS, qux/legacy outside the mesh, an unknown destination, a
refused connection (an attempt) and a malformed frame (a decode error). Then legacy switches to
mTLS, bar/httpbin (ready) receives plaintext, and the window passes.

Checks: the rules evaluate without error; the windowed edge counts equal the connections made,
each once; the PromQL verdicts (workloads, namespaces, mesh) agree with both agents'
/api/v1/verdicts, before and after the switch; the alert for plaintext to a ready workload fires;
every query of every dashboard panel (collapsed rows included) and every variable parses and
returns series, except those listed in EXPECTED_EMPTY with the reason.

Usage: sudo python3 tests/live/monitoring_e2e.py [MESHWATCH_BINARY]
Prints 'monitoring e2e: N passed, M failed' and exits non-zero on a failure.
"""
import collections
import glob
import json
import os
import re
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(ROOT, "pcaps"))
import generate  # noqa: E402

WINDOW = 20  # seconds: the agents' --window and the rules'
PROM_PORT = 19091
AGENTS = {"node-1": 19477, "node-2": 19487}
# pod -> (index, node, mesh); ext/outside is in no workloads file (an unknown address)
PODS = {
    "foo/httpbin": (11, "node-1", "sidecar"), "foo/sleep": (12, "node-1", "sidecar"),
    "bar/httpbin": (21, "node-2", "sidecar"), "bar/sleep": (22, "node-2", "sidecar"),
    "legacy/sleep": (31, "node-1", "none"),
    "baz/api": (41, "node-2", "sidecar"), "baz/web": (42, "node-2", "sidecar"),
    "qux/tls": (51, "node-1", "sidecar"), "qux/legacy": (52, "node-1", "none"),
    "ext/outside": (61, None, None),
}
SERVERS = ["foo/httpbin", "bar/httpbin", "baz/api", "baz/web", "qux/tls", "qux/legacy", "ext/outside"]
# Grafana's variables for each dashboard, as a user would pick them
VARIABLES = {
    "meshwatch-migration": {"namespace": ".*", "workload": ".*", "source": ".*"},
    "meshwatch-workload": {"namespace": "bar", "workload": "httpbin", "source": ".*"},
    "meshwatch-agent": {"job": "meshwatch", "instance": ".*"},
}
BUILTINS = {"__rate_interval": "5s", "__interval": "1s", "__range": "10m"}
# (dashboard, panel title): why the scenario legitimately leaves it empty. None does: the
# scenario makes a decode error, a refused connection (attempts), a drained source and every
# verdict. (In a cluster, decode errors and attempts have no series until the first one, the
# drained table is empty until a source stops, and ambient series need ambient traffic.)
EXPECTED_EMPTY = {}
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import check, results, wait_for  # noqa: E402


def in_node(*args, **kw):
    return subprocess.run(["ip", "netns", "exec", "mw-node", *args], capture_output=True, text=True, **kw)


def http_get(port, path):
    r = in_node("curl", "-s", "-m", "10", "-w", "\n%{http_code}", f"http://127.0.0.1:{port}{path}")
    body, _, code = r.stdout.rpartition("\n")
    return (int(code) if code.isdigit() else 0), body


def prom(path, **params):
    code, body = http_get(PROM_PORT, path + "?" + urllib.parse.urlencode(params, doseq=True))
    try:
        return json.loads(body)
    except ValueError:
        return {"status": "error", "error": f"HTTP {code}: {body[:200]}"}


def query(expr):
    r = prom("/api/v1/query", query=expr)
    return r.get("data", {}).get("result", []) if r.get("status") == "success" else []


# ---- the scenario

def setup(lab, tmp):
    lab.make_certs()
    for w, (index, _node, _mesh) in PODS.items():
        lab.pod(w, index)
    for w in SERVERS:
        for port in (generate.APP_PORT, generate.HEALTH_PORT, generate.PILOT_AGENT_PORT):
            lab.serve(w, port)
    for w in SERVERS:
        for port in (generate.APP_PORT, generate.HEALTH_PORT, generate.PILOT_AGENT_PORT):
            lab.wait_listening(w, port)
    path = os.path.join(tmp, "workloads.yaml")
    lines = ["workloads:"]
    for w, (_i, node, mesh) in sorted(PODS.items()):
        if node is None:
            continue
        ns, name = w.split("/")
        lines.append(f"  - {{namespace: {ns}, workload: {name}, service_account: {name}, "
                     f"ips: [{lab.addr(w)}], node: {node}, mesh: {mesh}}}")
    lines += ["nodes:", f"  - {{name: node-1, ips: [{lab.bridge_ip}]}}", "  - {name: node-2, ips: [10.244.9.1]}"]
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")
    return path


def malformed_frame(lab):
    """An Ethernet frame with IPv4 and a TCP header whose data offset is 1 word: a decode error
    for the agents (it is sent from a pod onto the bridge, to the pods' subnet)."""
    tcp = struct.pack("!HHIIBBHHH", 40000, 8000, 1, 0, 0x10, 0x02, 1024, 0, 0)
    ip = bytearray(struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(tcp), 1, 0, 64, 6, 0,
                               socket.inet_aton("10.244.1.31"), socket.inet_aton("10.244.1.11")))
    s = sum(struct.unpack("!10H", bytes(ip)))
    s = (s & 0xFFFF) + (s >> 16)
    ip[10:12] = struct.pack("!H", ~(s + (s >> 16)) & 0xFFFF)
    frame = b"\xff" * 6 + b"\x02\x00\x00\x00\x00\x1f" + b"\x08\x00" + bytes(ip) + tcp
    code = ("import socket,sys; s=socket.socket(socket.AF_PACKET, socket.SOCK_RAW); s.bind(('eth0', 0)); "
            f"s.send(bytes.fromhex('{frame.hex()}'))")
    generate.ns(lab.pods["legacy/sleep"][0], sys.executable, "-c", code)


def refused(lab, source, destination):
    """A connection to a closed port: SYN, RST, no payload (an attempt)."""
    generate.ns(lab.pods[source][0], "curl", "-s", "-m", "3", "-o", "/dev/null",
                f"http://{lab.addr(destination)}:9999/", check=False)


def phase_one(lab):
    generate.migration_traffic(lab, after=False, rounds=3)
    for _ in range(3):
        lab.mtls("foo/sleep", "baz/api")
    for _ in range(6):
        lab.mtls("bar/sleep", "baz/web")
    lab.plaintext("node:node-1", "baz/web")
    for _ in range(5):
        lab.mtls("foo/sleep", "qux/tls")
    lab.app_tls("bar/sleep", "qux/tls")
    for _ in range(2):
        lab.plaintext("legacy/sleep", "qux/legacy")
        lab.plaintext("foo/sleep", "ext/outside")
    refused(lab, "foo/sleep", "bar/httpbin")
    malformed_frame(lab)


def phase_two_round(lab):
    """After the switch: legacy has a sidecar; everything else goes on."""
    generate.migration_traffic(lab, after=True, rounds=1)
    for _ in range(2):
        lab.mtls("foo/sleep", "bar/httpbin")
        lab.mtls("bar/sleep", "baz/web")
        lab.mtls("foo/sleep", "qux/tls")
    lab.plaintext("node:node-1", "baz/web")
    lab.app_tls("bar/sleep", "qux/tls")
    lab.plaintext("legacy/sleep", "qux/legacy")


class Background(threading.Thread):
    """Steady traffic while the checks run, so the window never empties."""

    def __init__(self, lab):
        super().__init__(daemon=True)
        self.lab, self.stopping = lab, threading.Event()

    def run(self):
        while not self.stopping.is_set():
            phase_two_round(self.lab)
            self.stopping.wait(1)

    def stop(self):
        self.stopping.set()
        self.join(timeout=60)


# ---- what to compare

def peer(name):
    if name.startswith("node:"):
        return ("node", name[5:])
    if PODS.get(name, (0, None))[1] is None:
        return ("unknown", "unknown")
    return tuple(name.split("/"))


def lab_edges(connections):
    c = collections.Counter()
    for source, destination, port, security in connections:
        (sns, swl), (dns, dwl) = peer(source), peer(destination)
        c[(sns, swl, dns, dwl, str(port), security)] += 1
    return dict(c)


def prom_edges():
    out = {}
    for r in query("sum without (mesh, origin) (meshwatch:edge_connections:window)"):
        m = r["metric"]
        v = float(r["value"][1])
        if v > 0:
            out[(m["source_namespace"], m["source_workload"], m["destination_namespace"],
                 m["destination_workload"], m["destination_port"], m["security"])] = v
    return out


def agent_verdicts(port):
    code, body = http_get(port, "/api/v1/verdicts")
    if code != 200:
        return None
    v = json.loads(body)
    workloads = {(x["namespace"], x["workload"]): x for x in v["verdicts"] if x.get("namespace") and x.get("workload")}
    namespaces = {x["namespace"]: x["verdict"] for x in v["namespaces"]}
    return workloads, namespaces, v.get("evidence_incomplete")


def prom_verdicts():
    workloads = {}
    for r in query("meshwatch:workload_readiness:window"):
        m = r["metric"]
        key = (m["destination_namespace"], m["destination_workload"])
        workloads[key] = m["verdict"] if key not in workloads else "DUPLICATE"
    namespaces = {}
    for r in query("meshwatch:namespace_readiness:window"):
        m = r["metric"]
        ns = m["destination_namespace"]
        namespaces[ns] = m["verdict"] if ns not in namespaces else "DUPLICATE"
    mesh = [r["metric"]["verdict"] for r in query("meshwatch:mesh_readiness:window")]
    return workloads, namespaces, mesh[0] if len(mesh) == 1 else mesh


def mesh_roll_up(verdicts):
    """agent/src/verdict.rs roll_up_mesh over the workloads' verdicts: blocked if one is; else
    insufficient if one that received connections is; else ready if one is."""
    def idle(v):
        return v["verdict"] == "insufficient" and sum(v["connections"].values()) == 0 and v["exempted"] == 0
    kinds = {v["verdict"] for v in verdicts}
    if "blocked" in kinds:
        return "blocked"
    if any(v["verdict"] == "insufficient" and not idle(v) for v in verdicts):
        return "insufficient"
    return "ready" if "ready" in kinds else "insufficient"


def expected_verdicts():
    """What the agents say, each about the workloads of its own node (the destination's agent
    sees every connection to them; the other agent only those its pods make)."""
    agents = {node: agent_verdicts(port) for node, port in AGENTS.items()}
    if any(a is None for a in agents.values()):
        return None
    workloads, details, namespaces = {}, [], {}
    for w, (_i, node, _m) in PODS.items():
        if node is None:
            continue
        key = tuple(w.split("/"))
        v = agents[node][0].get(key)
        workloads[key] = v and v["verdict"]
        details.append(v or {"verdict": None, "connections": {}, "exempted": 0})
        namespaces[key[0]] = agents[node][1].get(key[0])
    incomplete = {node: a[2] for node, a in agents.items()}
    return workloads, namespaces, mesh_roll_up(details), incomplete


def compare_verdicts(label):
    """The PromQL verdicts agree with the agents' for every workload (the agent of its node), every
    namespace and the mesh; retried for a few seconds: the rules lag the agents by a scrape and
    an evaluation."""
    def agree():
        e, p = expected_verdicts(), prom_verdicts()
        return (e is not None and e[:3] == p), e, p
    ok, e, p = agree()
    deadline = time.time() + 8
    while not ok and time.time() < deadline:
        time.sleep(1)
        ok, e, p = agree()
    if e is None:
        check(f"{label}: the agents' /api/v1/verdicts answer", False)
        return {}
    check(f"{label}: both agents report complete evidence", not any(e[3].values()), str(e[3]))
    for key in sorted(set(e[0]) | set(p[0])):
        check(f"{label}: {key[0]}/{key[1]}: PromQL {p[0].get(key)} = agent {e[0].get(key)}", p[0].get(key) == e[0].get(key))
    for ns in sorted(set(e[1]) | set(p[1])):
        check(f"{label}: namespace {ns}: PromQL {p[1].get(ns)} = agent {e[1].get(ns)}", p[1].get(ns) == e[1].get(ns))
    check(f"{label}: mesh: PromQL {p[2]} = agents {e[2]}", p[2] == e[2])
    return p[0]


# ---- every dashboard query

def substitute(expr, values):
    def one(m):
        name = next(g for g in m.groups() if g)
        return values.get(name, BUILTINS.get(name, m.group(0)))
    return re.sub(r"\$\{(\w+)(?::[^}]*)?\}|\$(\w+)|\[\[(\w+)\]\]", one, expr)


def panels_of(board):
    for p in board["panels"]:
        yield p
        yield from p.get("panels", [])


def check_dashboards():
    end = time.time()
    for path in sorted(glob.glob(os.path.join(ROOT, "grafana/dashboards/*.json"))):
        name = os.path.basename(path)[:-5]
        board = json.load(open(path))
        values = VARIABLES[name]
        for v in board["templating"]["list"]:
            if v["type"] != "query":
                continue
            q = v["query"]["query"] if isinstance(v["query"], dict) else v["query"]
            m = re.fullmatch(r"label_values\((.*),\s*(\w+)\)", q, re.S)
            selector, label = substitute(m.group(1), values), m.group(2)
            r = prom(f"/api/v1/label/{label}/values", **{"match[]": selector})
            got = r.get("data") or []
            want = values.get(v["name"])
            ok = r.get("status") == "success" and got and (want in (".*", None) or want in got)
            check(f"{name}: variable ${v['name']} lists values ({', '.join(got[:6])})", ok, r.get("error", got))
        for p in panels_of(board):
            for t in p.get("targets", []):
                expr = substitute(t["expr"], values)
                what = f"{name}: {p['title']!r} {t['refId']}"
                if t.get("instant"):
                    r = prom("/api/v1/query", query=expr)
                else:
                    r = prom("/api/v1/query_range", query=expr, start=f"{end - 60:.3f}", end=f"{end:.3f}", step="1")
                if r.get("status") != "success":
                    check(f"{what} parses and runs", False, f"{r.get('error')}\n    {expr}")
                    continue
                n = len(r["data"]["result"])
                reason = EXPECTED_EMPTY.get((name, p["title"]))
                if reason:
                    check(f"{what} is empty ({reason})", n == 0, f"{n} series")
                else:
                    check(f"{what} returns series ({n})", n > 0, f"\n    {expr}")


def rules_healthy():
    r = prom("/api/v1/rules")
    groups = r.get("data", {}).get("groups", [])
    rules = [x for g in groups for x in g["rules"]]
    bad = [(x.get("name"), x.get("lastError")) for x in rules if x.get("health") not in ("ok", "unknown")]
    check(f"Prometheus loaded {len(rules)} rules, all evaluate without error", len(rules) >= 30 and not bad, str(bad))


def alerts():
    r = prom("/api/v1/alerts")
    return [a for a in r.get("data", {}).get("alerts", []) if a["state"] == "firing"]


def main():
    if os.geteuid() != 0:
        sys.exit("monitoring_e2e.py needs root (network namespaces, capture)")
    binary = sys.argv[1] if len(sys.argv) > 1 else os.path.join(ROOT, "target/debug/meshwatch")
    started = time.time()
    procs, background = [], None
    with tempfile.TemporaryDirectory() as tmp:
        lab = generate.Lab(tmp)
        try:
            workloads = setup(lab, tmp)
            subprocess.run([sys.executable, os.path.join(ROOT, "grafana/generate.py"), "--out", tmp, "--rules-only",
                            "--window", f"{WINDOW}s", "--resolution", "1s"], check=True)
            for node, port in AGENTS.items():
                log = open(os.path.join(tmp, f"agent-{node}.log"), "w")
                procs.append(subprocess.Popen(
                    ["ip", "netns", "exec", "mw-node", binary, "agent", "--interface", "br0", "--promiscuous",
                     "--workloads", workloads, "--node-name", node, "--listen", f"127.0.0.1:{port}",
                     "--window", f"{WINDOW}s"], stdout=log, stderr=subprocess.STDOUT))
            for node, port in AGENTS.items():
                check(f"agent {node} becomes ready", wait_for(lambda: http_get(port, "/readyz")[0] == 200, 15))
            cfg = os.path.join(tmp, "prometheus.yml")
            with open(cfg, "w") as f:
                f.write("global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
                        f"rule_files: ['{tmp}/grafana/rules/meshwatch.rules.yaml']\n"
                        "scrape_configs:\n  - job_name: meshwatch\n    honor_labels: true\n    static_configs:\n")
                for node, port in AGENTS.items():
                    f.write(f"      - targets: ['127.0.0.1:{port}']\n        labels: {{instance: {node}}}\n")
            procs.append(subprocess.Popen(
                ["ip", "netns", "exec", "mw-node", "prometheus", f"--config.file={cfg}",
                 f"--storage.tsdb.path={tmp}/tsdb", f"--web.listen-address=127.0.0.1:{PROM_PORT}"],
                stdout=subprocess.DEVNULL, stderr=open(os.path.join(tmp, "prometheus.log"), "w")))
            check("prometheus is up", wait_for(lambda: http_get(PROM_PORT, "/-/ready")[0] == 200, 30))
            check("prometheus scrapes both agents",
                  wait_for(lambda: len([r for r in query('up{job="meshwatch"} == 1')]) == 2, 30))

            # -- phase one: the migration's "before", and the other verdicts
            t0 = time.time()
            mark = len(lab.connections)
            phase_one(lab)
            expected = lab_edges(lab.connections[mark:])
            took = time.time() - t0
            check(f"phase one's traffic fits well inside the window ({took:.1f} s < {WINDOW / 2} s)", took < WINDOW / 2)
            got = wait_for(lambda: (lambda e: e if e == expected else None)(prom_edges()), 8)
            edges = prom_edges()
            for key in sorted(set(expected) | set(edges)):
                check(f"edge {key[0]}/{key[1]} -> {key[2]}/{key[3]}:{key[4]} {key[5]}: "
                      f"{edges.get(key, 0):g} in the window = {expected.get(key, 0)} made",
                      edges.get(key, 0) == expected.get(key, 0))
            del got
            # An attempt is announced once its retry linger (10 s) has passed, then scraped and
            # recorded: wait for it rather than read it once.
            attempts_query = 'sum(meshwatch:edge_attempts:window{destination_workload="httpbin",destination_namespace="bar"})'
            wait_for(lambda: query(attempts_query), 20)
            attempts = query(attempts_query)
            check("the refused connection is an attempt, once", attempts and float(attempts[0]["value"][1]) == 1,
                  str(attempts))
            rules_healthy()
            before = compare_verdicts("before")
            check("before: the verdicts cover every kind (blocked, insufficient, ready, not_in_mesh)",
                  {"blocked", "insufficient", "ready", "not_in_mesh"} <= set(before.values()), str(before))

            # -- phase two: legacy gets a sidecar, bar/httpbin regresses, the window passes
            switched = time.time()
            while time.time() - switched < WINDOW + 3:
                phase_two_round(lab)
                time.sleep(1)
            lab.plaintext("legacy/sleep", "bar/httpbin")
            refused(lab, "foo/sleep", "bar/httpbin")
            regressed = time.time()
            background = Background(lab)
            background.start()

            def bar_httpbin_blocked():
                v = agent_verdicts(AGENTS["node-2"])
                return v and (v[0].get(("bar", "httpbin")) or {}).get("verdict") == "blocked"
            check("node-2's agent reports bar/httpbin blocked", wait_for(bar_httpbin_blocked, 20),
                  f"after {time.time() - regressed:.1f} s")
            print(f"     (the agent counted the connection {time.time() - regressed:.1f} s after it was made)")
            after = compare_verdicts("after")
            check("after: foo/httpbin is ready (legacy's plaintext drained)",
                  after.get(("foo", "httpbin")) == "ready", str(after.get(("foo", "httpbin"))))
            check("after: bar/httpbin is blocked (plaintext arrived once it was ready)",
                  after.get(("bar", "httpbin")) == "blocked", str(after.get(("bar", "httpbin"))))
            firing = wait_for(lambda: [a for a in alerts() if a["labels"]["alertname"] == "MeshwatchPlaintextToReadyWorkload"], 5)
            names = sorted(f"{a['labels'].get('destination_namespace')}/{a['labels'].get('destination_workload')}" for a in firing)
            check(f"MeshwatchPlaintextToReadyWorkload fires for bar/httpbin ({names})", "bar/httpbin" in names, str(names))
            others = sorted({a["labels"]["alertname"] for a in alerts()} - {"MeshwatchPlaintextToReadyWorkload"})
            check("no other alert fires", not others, str(others))
            drained = query("max_over_time(meshwatch:edge_blocking_last_seen:timestamp[5m]) unless on "
                            "(source_namespace, source_workload, destination_namespace, destination_workload, "
                            "destination_port, security, mesh) (meshwatch:edge_connections:window > 0)")
            pairs = sorted((d["metric"]["source_namespace"], d["metric"]["destination_namespace"]) for d in drained)
            check(f"legacy -> foo is drained ({pairs})", ("legacy", "foo") in pairs)
            check_dashboards()
            rules_healthy()
            background.stop()
            check(f"the run took {time.time() - started:.0f} s (< 180 s)", time.time() - started < 180)
        finally:
            if background is not None:
                background.stop()
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
    print(f"monitoring e2e: {len(results) - failed} passed, {failed} failed")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
