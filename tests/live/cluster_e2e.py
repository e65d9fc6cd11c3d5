#!/usr/bin/env python3
"""End-to-end test of the cluster view (`meshwatch verdicts|check --prometheus`) with two real
"nodes", two real agents and a real Prometheus (root).

Two nodes are network namespaces, each with its own bridge and pods (network namespaces too),
joined by a VXLAN overlay on an underlay link as flannel does (pcaps/generate.py's
scenario_vxlan). One agent per node captures `-i any` in its node's namespace
(`--node-name node-N`, the workloads file gives each pod's `node:`); one Prometheus (Debian's
package) in node-1 scrapes both every second. Real openssl (Istio's ALPN) and curl make mTLS
and plaintext connections within and across the nodes, some before Prometheus first scrapes
(their counters' first samples already hold them), some after; tcpdump -i any records each
node meanwhile.

Checks: the cluster verdicts from Prometheus equal `meshwatch analyze` on the two captures
merged (every workload's verdict, reason, connections by class, attempts, blockers — a kubelet
probe from node-1 stays a `kubelet_probe` blocker through the metrics' `origin` label; the
namespaces and the mesh); each connection counts once (per edge and in total; the agents' series
summed also count each once: a connection between pods is reported by the destination's agent
only); `check` exits 0/1/3/2 for a ready,
blocked, insufficient namespace and errors, printing the policy or the blockers with their
remedy; an agent restart (counter reset) loses nothing; an agent's dropped packets make the
evidence incomplete; a stopped agent is named in agents_down and what it counted stays.
While the setup is up, tests/browser/cluster_browser.py (run in node-1's namespace) drives
headless Chromium through `meshwatch-dashboard --prometheus` and `--agent` (both agents): every
page's verdicts, blockers and YAML against what this harness generated; screenshots in
target/screenshots/cluster/.

Usage: sudo python3 tests/live/cluster_e2e.py [--record DIR] [MESHWATCH_BINARY]
With --record, the answers of Prometheus' query API to the report's queries are saved in DIR as
they came (agent/tests/fixtures/prometheus/ was recorded so), after the traffic and at the end.
Prints 'cluster e2e: N passed, M failed' and exits non-zero on a failure. Its namespaces are
named mwc-* (MESHWATCH_NETNS_PREFIX) and removed at the end.
"""
import json
import os
import re
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
import urllib.parse

os.environ["MESHWATCH_NETNS_PREFIX"] = "mwc-"  # generate.Lab's namespaces: not the other tests'
HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(ROOT, "pcaps"))
import generate  # noqa: E402

NETNS = generate.NETNS
NODE1 = NETNS + "node"  # generate.Lab's node
NODE2 = NETNS + "node-2"
UNDERLAY = {"node-1": "192.0.2.1", "node-2": "192.0.2.2"}
AGENT_PORT = 19577
PROM_PORT = 19591
PROM = f"http://127.0.0.1:{PROM_PORT}"
WINDOW = "10m"
PORT = generate.APP_PORT
# pod -> (index: 10.244.1.<index>, node, mesh)
PODS = {
    "alpha/client": (11, "node-1", "sidecar"),
    "alpha/web": (12, "node-1", "sidecar"),
    "beta/db": (21, "node-1", "sidecar"),
    "gamma/svc": (31, "node-1", "sidecar"),
    "alpha/api": (41, "node-2", "sidecar"),
    "beta/cache": (42, "node-2", "sidecar"),
    "gamma/batch": (43, "node-2", "sidecar"),
    "legacy/cron": (51, "node-2", "none"),
    "legacy/store": (52, "node-2", "none"),
}
SERVERS = ["alpha/web", "alpha/api", "beta/db", "beta/cache", "gamma/svc", "legacy/store"]
# kubelet's HTTP probes on beta/db's app port (Istio's probe rewrite off), from node-1
KUBE_PROBES = ("beta/db", 2)
KUBE_PROBE_UA = "kube-probe/1.30"
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import check, results, wait_for  # noqa: E402


def in_node(node, *args, **kw):
    return subprocess.run(["ip", "netns", "exec", node, *args], capture_output=True, text=True, **kw)


# ---- the two nodes

def make_node2(lab):
    """node-2: its own namespace and bridge, a VXLAN tunnel to node-1 over an underlay veth
    (flannel's VNI 1, UDP 4789), both bridges carrying the pods' subnet."""
    generate.sh("ip", "netns", "add", NODE2)
    generate.ns(NODE2, "ip", "link", "set", "lo", "up")
    generate.ns(NODE1, "ip", "link", "add", "ul0", "type", "veth", "peer", "name", "ul0", "netns", NODE2)
    for node, name in ((NODE1, "node-1"), (NODE2, "node-2")):
        generate.ns(node, "ip", "addr", "add", f"{UNDERLAY[name]}/24", "dev", "ul0")
        generate.ns(node, "ip", "link", "set", "ul0", "up")
    for node, local, remote in ((NODE1, UNDERLAY["node-1"], UNDERLAY["node-2"]),
                                (NODE2, UNDERLAY["node-2"], UNDERLAY["node-1"])):
        generate.ns(node, "ip", "link", "add", "vx0", "type", "vxlan", "id", "1", "dstport", "4789",
                    "local", local, "remote", remote, "dev", "ul0")
    generate.ns(NODE2, "ip", "link", "add", "br0", "type", "bridge")
    generate.ns(NODE2, "ip", "link", "set", "br0", "up")
    for node in (NODE1, NODE2):
        generate.ns(node, "ip", "link", "set", "vx0", "master", "br0", "up")


def pod_on_node2(lab, workload, index):
    """A pod on node-2's bridge (Lab.pod attaches to node-1's), MTU 1450 as over VXLAN."""
    netns = NETNS + workload.replace("/", "-")
    ip4 = f"10.244.1.{index}"
    generate.sh("ip", "netns", "add", netns)
    generate.ns(NODE2, "ip", "link", "add", f"v{index}", "type", "veth", "peer", "name", "eth0", "netns", netns)
    generate.ns(NODE2, "ip", "link", "set", f"v{index}", "master", "br0", "up")
    generate.ns(netns, "ip", "link", "set", "lo", "up")
    generate.ns(netns, "ip", "addr", "add", f"{ip4}/24", "dev", "eth0")
    generate.ns(netns, "ip", "link", "set", "eth0", "mtu", "1450")
    generate.ns(netns, "ip", "link", "set", "eth0", "up")
    lab.pods[workload] = (netns, ip4, ip4, "")


def setup(lab, tmp):
    lab.make_certs()
    make_node2(lab)
    for w, (index, node, mesh) in PODS.items():
        if node == "node-1":
            lab.pod(w, index, mtu=1450)
        else:
            pod_on_node2(lab, w, index)
        lab.mesh[w] = mesh
    for w in SERVERS:
        lab.serve(w, PORT)
    for w in SERVERS:
        lab.wait_listening(w, PORT)
    path = os.path.join(tmp, "workloads.yaml")
    lines = ["workloads:"]
    for w, (index, node, mesh) in sorted(PODS.items()):
        ns, name = w.split("/")
        lines.append(f"  - {{namespace: {ns}, workload: {name}, service_account: {name}, "
                     f"ips: [10.244.1.{index}], node: {node}, mesh: {mesh}}}")
    lines += ["nodes:", f"  - {{name: node-1, ips: [{lab.bridge_ip}, {UNDERLAY['node-1']}]}}",
              f"  - {{name: node-2, ips: [{UNDERLAY['node-2']}]}}"]
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")
    return path


# ---- agents and Prometheus

class Agents:
    def __init__(self, binary, workloads, tmp):
        self.binary, self.workloads, self.tmp = binary, workloads, tmp
        self.procs = {}
        help_text = subprocess.run([binary, "agent", "--help"], capture_output=True, text=True).stdout
        # an agent serving beyond loopback without authentication must say so (when it can)
        self.auth = ["--auth", "none"] if "--auth" in help_text else []

    def start(self, name, *extra):
        node = NODE1 if name == "node-1" else NODE2
        log = open(os.path.join(self.tmp, f"agent-{name}.log"), "a")
        p = subprocess.Popen(["ip", "netns", "exec", node, self.binary, "agent", "--interface", "any",
                              "--workloads", self.workloads, "--node-name", name,
                              "--listen", f"0.0.0.0:{AGENT_PORT}", *self.auth, "--window", WINDOW, *extra],
                             stdout=log, stderr=subprocess.STDOUT)
        self.procs[name] = p
        ready = lambda: in_node(node, "curl", "-sf", "-m", "2", f"127.0.0.1:{AGENT_PORT}/readyz").returncode == 0
        return wait_for(ready, 15)

    def stop(self, name):
        p = self.procs.pop(name)
        p.send_signal(signal.SIGTERM)
        try:
            return p.wait(timeout=15)
        except subprocess.TimeoutExpired:
            p.kill()
            return p.wait()

    def kill_all(self):
        for p in self.procs.values():
            if p.poll() is None:
                p.kill()
                p.wait()


def start_prometheus(tmp):
    cfg = os.path.join(tmp, "prometheus.yml")
    with open(cfg, "w") as f:
        f.write("global:\n  scrape_interval: 1s\n  scrape_timeout: 900ms\nscrape_configs:\n"
                "  - job_name: meshwatch\n    static_configs:\n"
                f"      - targets: ['127.0.0.1:{AGENT_PORT}', '{UNDERLAY['node-2']}:{AGENT_PORT}']\n")
    return subprocess.Popen(["ip", "netns", "exec", NODE1, "prometheus", f"--config.file={cfg}",
                             f"--storage.tsdb.path={tmp}/tsdb", f"--web.listen-address=127.0.0.1:{PROM_PORT}"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def prom_query(q):
    r = in_node(NODE1, "curl", "-s", "-m", "10", f"{PROM}/api/v1/query?query=" + urllib.parse.quote(q))
    try:
        return json.loads(r.stdout)["data"]["result"]
    except (ValueError, KeyError):
        return None


# ---- the dashboard in a browser

def browser(binary, lab, tmp):
    """tests/browser/cluster_browser.py in node-1's namespace (where Prometheus and both agents
    are reachable), against what this harness generated; its checks become this run's."""
    dashboard = os.path.join(os.path.dirname(binary), "meshwatch-dashboard")
    if not check("meshwatch-dashboard is built beside meshwatch", os.path.exists(dashboard), dashboard):
        return
    made_edges = made(lab)
    cell = lambda src, dst, pct: (f"{src} → {dst}: "
                                  f"{made_edges.get((src, dst, PORT, 'istio_mtls'), 0) + made_edges.get((src, dst, PORT, 'plaintext'), 0)}"
                                  f" connections, {pct} % plaintext")
    plain = lambda dst: [("legacy/cron", "no_sidecar", made_edges.get(("legacy/cron", dst, PORT, "plaintext"), 0))]
    blockers = {"beta/db": plain("beta/db") + [("node:node-1", "kubelet_probe", KUBE_PROBES[1])],
                "beta/cache": plain("beta/cache")}
    expect = {
        "mesh": "blocked",
        "namespaces": {"alpha": "ready", "beta": "blocked", "gamma": "insufficient", "legacy": "not_in_mesh"},
        "workloads": {"alpha/api": "ready", "alpha/web": "ready", "beta/db": "blocked", "beta/cache": "blocked",
                      "gamma/svc": "insufficient", "legacy/store": "not_in_mesh"},
        "blockers": blockers,
        "ready_namespace": "alpha",
        "ready_workload": "api",
        "insufficient_reason": "2 mTLS connections, 5 needed",
        "matrix": [cell("legacy/cron", "beta/db", 100), cell("legacy/cron", "beta/cache", 100),
                   cell("alpha/client", "alpha/api", 0), cell("alpha/client", "beta/db", 0)],
    }
    path = os.path.join(tmp, "browser-expect.json")
    with open(path, "w") as f:
        json.dump(expect, f, indent=1)
    out = os.path.join(ROOT, "target", "screenshots", "cluster")
    os.makedirs(out, exist_ok=True)
    agents = [f"http://127.0.0.1:{AGENT_PORT}", f"http://{UNDERLAY['node-2']}:{AGENT_PORT}"]
    r = in_node(NODE1, sys.executable, os.path.join(ROOT, "tests", "browser", "cluster_browser.py"),
                "--dashboard", dashboard, "--prometheus", PROM, "--window", WINDOW,
                *[x for a in agents for x in ("--agent", a)], "--expect", path, "--out", out, timeout=600)
    seen = 0
    for line in r.stdout.splitlines():
        m = re.match(r"  (ok  |FAIL) (.*)$", line)
        if m:
            seen += 1
            check(f"browser: {m.group(2)}", m.group(1) == "ok  ")
    check("browser: ran to the end", r.returncode == 0 and seen > 0 and "cluster browser:" in r.stdout,
          (r.stdout[-1500:] + r.stderr[-1500:]))


# ---- the CLI

def meshwatch(binary, *args, env=None):
    e = dict(os.environ)
    e.pop("MESHWATCH_NETNS_PREFIX", None)
    e.update(env or {})
    return subprocess.run(["ip", "netns", "exec", NODE1, binary, *args], capture_output=True, text=True,
                          env=e, timeout=120)


def cluster_report(binary, *extra):
    r = meshwatch(binary, "verdicts", "--prometheus", PROM, "--window", WINDOW, "--format", "json", *extra)
    if r.returncode != 0:
        return None, r
    return json.loads(r.stdout), r


def pod_edges(report):
    """(source, destination, port, security) -> connections, between workloads."""
    out = {}
    for e in report["edges"]:
        s, d = e["source"], e["destination"]
        if "workload" in s and "workload" in d and e["connections"]:
            key = (f"{s['namespace']}/{s['workload']}", f"{d['namespace']}/{d['workload']}", e["port"], e["security"])
            out[key] = out.get(key, 0) + e["connections"]
    return out


def made(lab):
    out = {}
    for c in lab.connections:
        out[c] = out.get(c, 0) + 1
    return out


def fixture_name(query):
    """The fixture a report query's answer is saved as."""
    metric = "attempts" if "meshwatch_connection_attempts_total" in query else "connections"
    if query.startswith("count(last_over_time(meshwatch_build_info"):
        return "agents"
    if "meshwatch_capture_dropped_packets_total" in query:
        return "drops"
    if query.startswith("group by (instance)"):
        return "agents_down"
    if "meshwatch_workload_info" in query:
        return "workloads"
    if query.startswith("min by"):
        return metric + "_first_seen"
    if "max_over_time" in query:
        return metric + "_last_seen"
    return metric


def record(binary, out_dir, prefix=""):
    """Save Prometheus' answers to the queries `verdicts` sends (read from its debug log)."""
    os.makedirs(out_dir, exist_ok=True)
    r = meshwatch(binary, "verdicts", "--prometheus", PROM, "--window", WINDOW, "--format", "json",
                  env={"RUST_LOG": "meshwatch=debug", "NO_COLOR": "1"})
    names = []
    for line in r.stderr.splitlines():
        m = re.search(r"prometheus query query=(.*) time=(\d+)$", line)
        if not m:
            continue
        query, at = m.group(1), m.group(2)
        name = prefix + fixture_name(query)
        body = in_node(NODE1, "curl", "-s", "-m", "30", f"{PROM}/api/v1/query?" +
                       urllib.parse.urlencode({"query": query, "time": at})).stdout
        with open(os.path.join(out_dir, name + ".json"), "w") as f:
            f.write(body + ("" if body.endswith("\n") else "\n"))
        names.append(name)
    if not prefix:
        body = in_node(NODE1, "curl", "-s", "-m", "30", f"{PROM}/api/v1/query?query=" + urllib.parse.quote("sum(")).stdout
        with open(os.path.join(out_dir, "error_bad_data.json"), "w") as f:
            f.write(body + "\n")
    print(f"     recorded {', '.join(sorted(names))} in {out_dir}")


def comparable(verdicts):
    """Named workloads' verdicts without the blockers' last-seen times (the capture's are exact,
    Prometheus' are to a scrape and a step) and without a node's address (the metrics name a
    node, never an address)."""
    out = {}
    for v in verdicts:
        if "workload" not in v:
            continue
        v = dict(v)
        v["blockers"] = sorted((json.dumps({k: x for k, x in b.items()
                                            if k != "last_seen" and not (k == "ip" and "node" in b)},
                                           sort_keys=True)
                                for b in v["blockers"]))
        out[f"{v['namespace']}/{v['workload']}"] = v
    return out


# ---- traffic

def refused(lab, source, destination):
    """A connection to a closed port: SYN, RST, no payload (an attempt)."""
    generate.ns(lab.pods[source][0], "curl", "-s", "-m", "3", "-o", "/dev/null",
                f"http://{lab.addr(destination)}:9999/", check=False)


def kubelet_probes(lab):
    """kubelet's HTTP probe with the probe rewrite off: from the node (its bridge address) to
    the pod's app port, `User-Agent: kube-probe/…` — a blocker of its own kind."""
    target, n = KUBE_PROBES
    for _ in range(n):
        in_node(NODE1, "curl", "-s", "-m", "10", "-o", "/dev/null", "-H", f"User-Agent: {KUBE_PROBE_UA}",
                f"http://{lab.addr(target)}:{PORT}/healthz")


def phase(lab, plan):
    for src, dst, kind, n in plan:
        for _ in range(n):
            (lab.mtls if kind == "mtls" else lab.plaintext)(src, dst)


# before Prometheus runs: counted by the agents, first seen by Prometheus in its first scrape
PHASE_1 = [("alpha/client", "alpha/api", "mtls", 3), ("alpha/client", "alpha/web", "mtls", 3),
           ("alpha/client", "beta/db", "mtls", 3), ("legacy/cron", "beta/db", "plain", 1),
           ("legacy/cron", "beta/cache", "plain", 2), ("alpha/client", "beta/cache", "mtls", 3),
           ("gamma/batch", "gamma/svc", "mtls", 1)]
# while Prometheus scrapes
PHASE_2 = [("alpha/client", "alpha/api", "mtls", 3), ("alpha/client", "alpha/web", "mtls", 3),
           ("alpha/client", "beta/db", "mtls", 2), ("legacy/cron", "beta/db", "plain", 1),
           ("legacy/cron", "beta/cache", "plain", 1), ("alpha/client", "beta/cache", "mtls", 2),
           ("gamma/batch", "gamma/svc", "mtls", 1), ("legacy/cron", "legacy/store", "plain", 2)]


def flood(node, frames):
    """Payload-less TCP segments of no connection (they open no flow) on a veth of the node,
    as fast as Python sends them: a stopped agent's 1 MiB capture buffer overflows."""
    in_node(node, "ip", "link", "add", "fl0", "type", "veth", "peer", "name", "fl1")
    in_node(node, "ip", "link", "set", "fl0", "up")
    in_node(node, "ip", "link", "set", "fl1", "up")
    tcp = struct.pack("!HHIIBBHHH", 40000, 80, 1, 1, 0x50, 0x10, 1024, 0, 0)
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(tcp), 1, 0, 64, 6, 0,
                     socket.inet_aton("198.51.100.1"), socket.inet_aton("198.51.100.2"))
    frame = b"\x02\x00\x00\x00\x00\x02" + b"\x02\x00\x00\x00\x00\x01" + b"\x08\x00" + ip + tcp
    code = ("import socket; s=socket.socket(socket.AF_PACKET, socket.SOCK_RAW); s.bind(('fl0', 0)); "
            f"f=bytes.fromhex('{frame.hex()}')\nfor _ in range({frames}): s.send(f)")
    in_node(node, sys.executable, "-c", code)


def main():
    if os.geteuid() != 0:
        sys.exit("cluster_e2e.py needs root (network namespaces, capture)")
    args = sys.argv[1:]
    record_dir = None
    if args[:1] == ["--record"]:
        record_dir, args = os.path.abspath(args[1]), args[2:]
    binary = os.path.abspath(args[0] if args else os.path.join(ROOT, "target/debug/meshwatch"))
    procs = []
    agents = None
    with tempfile.TemporaryDirectory() as tmp:
        lab = generate.Lab(tmp)
        try:
            workloads = setup(lab, tmp)
            caps = {n: os.path.join(tmp, f"{n}.pcap") for n in ("node-1", "node-2")}
            tcpdumps = [lab.capture(caps["node-1"], iface="any", netns=NODE1, buffer_kib=generate.CAPTURE_BUFFER_KIB),
                        lab.capture(caps["node-2"], iface="any", netns=NODE2, buffer_kib=generate.CAPTURE_BUFFER_KIB)]
            agents = Agents(binary, workloads, tmp)
            check("both agents become ready", agents.start("node-1") and agents.start("node-2"))

            phase(lab, PHASE_1)
            prom = start_prometheus(tmp)
            procs.append(prom)
            ready = lambda: in_node(NODE1, "curl", "-sf", f"{PROM}/-/ready").returncode == 0
            check("prometheus is up", wait_for(ready, 30))
            both_up = lambda: (lambda r: r is not None and len(r) == 2 and all(x["value"][1] == "1" for x in r))(
                prom_query('up{job="meshwatch"}'))
            check("prometheus scrapes both agents", wait_for(both_up, 30), json.dumps(prom_query("up")))
            phase(lab, PHASE_2)
            kubelet_probes(lab)
            refused(lab, "alpha/client", "alpha/api")
            for p in tcpdumps:
                dropped = lab.stop(p)
                check("tcpdump dropped nothing", dropped == 0, f"{dropped} dropped")

            # -- the cluster view against the captures
            expected = made(lab)
            total = sum(expected.values())
            # every connection and the refused one's attempt scraped (it is made last)
            counted = lambda: (lambda r: r[0] if r[0] and sum(pod_edges(r[0]).values()) == total
                               and any(e["attempts"] for e in r[0]["edges"]) else None)(cluster_report(binary))
            report = wait_for(counted, 30, every=1)
            if not report:
                report, r = cluster_report(binary)
                print(r.stderr[-2000:])
            check("the cluster counts every connection made, once", report and sum(pod_edges(report).values()) == total,
                  f"made {total}, counted {sum(pod_edges(report).values()) if report else None}")
            check("each edge's count is the connections made on it", report and pod_edges(report) == expected,
                  f"\n  made    {sorted(expected.items())}\n  counted {sorted(pod_edges(report).items()) if report else None}")
            summed = prom_query("sum(meshwatch_connections_total)")
            by_reporter = {x["metric"].get("reporter"): float(x["value"][1]) for x in prom_query(
                'sum by (reporter) (meshwatch_connections_total{destination_workload="api"})') or []}
            check("summed over every agent's series, each connection counts once (cross-node ones too)",
                  summed and float(summed[0]["value"][1]) == total + KUBE_PROBES[1]
                  and by_reporter == {"destination": 6.0},
                  f"sum {summed}, alpha/api by reporter {by_reporter}")
            naive = prom_query(f"sum(increase(meshwatch_connections_total[{WINDOW}]))")
            print(f"     (for comparison: sum(increase(meshwatch_connections_total[{WINDOW}])) = "
                  f"{naive[0]['value'][1] if naive else None} with {total} connections made)")
            attempts = [e for e in (report or {}).get("edges", []) if e["attempts"]]
            check("the refused connection is one attempt", [(e["destination"].get("workload"), e["port"], e["attempts"])
                                                             for e in attempts] == [("api", 9999, 1)], json.dumps(attempts))

            a = subprocess.run([binary, "analyze", "--workloads", workloads, "--format", "json",
                                caps["node-1"], caps["node-2"]], capture_output=True, text=True)
            offline = json.loads(a.stdout) if a.returncode == 0 else None
            check("analyze reads the two captures", offline, a.stderr[-500:])
            if offline and report:
                off, on = comparable(offline["verdicts"]), comparable(report["verdicts"])
                check("the same workloads are judged", sorted(off) == sorted(on), f"{sorted(off)} vs {sorted(on)}")
                for w in sorted(off):
                    check(f"{w}: {off[w]['verdict']}, verdict and evidence as analyze says",
                          off[w] == on.get(w), f"\n  analyze {json.dumps(off[w])}\n  cluster {json.dumps(on.get(w))}")
                check("namespaces roll up the same", offline["namespaces"] == report["namespaces"],
                      f"\n  analyze {offline['namespaces']}\n  cluster {report['namespaces']}")
                check("the mesh verdict is the same", offline["mesh"] == report["mesh"])
                check("analyze counts the connections made, once", pod_edges(offline) == expected,
                      str(sorted(pod_edges(offline).items())))
            want = {"alpha/api": "ready", "alpha/web": "ready", "beta/db": "blocked", "beta/cache": "blocked",
                    "gamma/svc": "insufficient", "legacy/store": "not_in_mesh"}
            got = {w: v["verdict"] for w, v in comparable((report or {}).get("verdicts", [])).items() if w in want}
            check("the scenario's verdicts", got == want, str(got))
            check("no agent down, no drops", report and report["agents_down"] == [] and not report["evidence_incomplete"],
                  json.dumps({k: (report or {}).get(k) for k in ("agents_down", "evidence_incomplete")}))
            probes = prom_query('sum by (origin) (meshwatch_connections_total{source_namespace="node"})')
            check("the probes' series carry origin=\"kubelet_probe\"",
                  probes and {x["metric"].get("origin"): float(x["value"][1]) for x in probes}
                  == {"kubelet_probe": float(KUBE_PROBES[1])}, json.dumps(probes))
            db = comparable((report or {}).get("verdicts", [])).get(KUBE_PROBES[0], {})
            kinds = sorted(json.loads(b)["kind"] for b in db.get("blockers", []))
            check("through Prometheus a kubelet probe stays a kubelet_probe blocker (not node)",
                  kinds == ["kubelet_probe", "no_sidecar"], kinds)

            # -- the dashboard in a browser, over Prometheus and over both agents
            browser(binary, lab, tmp)
            if record_dir:
                record(binary, record_dir)

            # -- the gate
            gate = lambda *a, env=None: meshwatch(binary, "check", "--prometheus", PROM, "--window", WINDOW, *a, env=env)
            r = gate("--namespace", "alpha")
            check("check: a ready namespace exits 0 and prints its PeerAuthentication",
                  r.returncode == 0 and "kind: PeerAuthentication" in r.stdout and "namespace: alpha" in r.stdout
                  and "mode: STRICT" in r.stdout, f"{r.returncode}\n{r.stdout}\n{r.stderr}")
            r = gate("--namespace", "beta")
            check("check: a blocked namespace exits 1, the blockers and their remedy on stderr",
                  r.returncode == 1 and r.stdout == "" and "legacy/cron" in r.stderr and "beta/cache" in r.stderr
                  and "remedy: the client has no sidecar" in r.stderr, f"{r.returncode}\n{r.stdout}\n{r.stderr}")
            r = gate("--namespace", "gamma")
            check("check: an insufficient namespace exits 3", r.returncode == 3 and "2 mTLS connections, 5 needed" in r.stderr,
                  f"{r.returncode}\n{r.stderr}")
            r = gate("--namespace", "legacy")
            check("check: a namespace outside the mesh exits 0 (STRICT changes nothing there)",
                  r.returncode == 0 and "outside the mesh" in r.stderr, f"{r.returncode}\n{r.stderr}")
            r = gate("--namespace", "alpha", "--workload", "api")
            check("check: a ready workload exits 0 with its policy",
                  r.returncode == 0 and "app: api" in r.stdout, f"{r.returncode}\n{r.stdout}\n{r.stderr}")
            r = gate("--namespace", "alpha", "--workload", "nope")
            check("check: an unknown workload exits 2 naming the known ones",
                  r.returncode == 2 and "api" in r.stderr, f"{r.returncode}\n{r.stderr}")
            r = gate()
            check("check: the mesh (beta blocks it) exits 1", r.returncode == 1, f"{r.returncode}\n{r.stderr}")
            r = gate("--namespace", "delta")
            check("check: a namespace without connections exits 3, saying so",
                  r.returncode == 3 and "saw no connections to namespace delta" in r.stderr, f"{r.returncode}\n{r.stderr}")
            r = meshwatch(binary, "check", "--namespace", "alpha", env={"MESHWATCH_PROMETHEUS": PROM, "MESHWATCH_WINDOW": WINDOW})
            check("check: configured by MESHWATCH_* variables", r.returncode == 0, f"{r.returncode}\n{r.stderr}")
            r = meshwatch(binary, "check", "--prometheus", "http://127.0.0.1:1", "--namespace", "alpha")
            check("check: an unreachable Prometheus exits 2, saying so",
                  r.returncode == 2 and "cannot reach Prometheus at http://127.0.0.1:1" in r.stderr, r.stderr)
            r = meshwatch(binary, "verdicts", "--prometheus", PROM, "--window", WINDOW, "--format", "table", "--color", "never")
            check("verdicts: the table shows the cluster summary, edges and verdicts",
                  r.returncode == 0 and r.stdout.startswith("CLUSTER ") and "SUMMARY" not in r.stdout
                  and "EDGES" in r.stdout and "beta/db is blocked by:" in r.stdout, r.stdout[:1500] + r.stderr)

            # -- an agent restart resets its counters: nothing is lost
            before = pod_edges(report) if report else {}
            agents.stop("node-1")
            check("node-1's agent restarts (1 MiB capture buffer)", agents.start("node-1", "--buffer-size", "1"))
            phase(lab, [("alpha/client", "alpha/web", "mtls", 2)])
            want_web = before.get(("alpha/client", "alpha/web", PORT, "istio_mtls"), 0) + 2
            web = lambda r: (r or {}).get(("alpha/client", "alpha/web", PORT, "istio_mtls"))
            after = wait_for(lambda: (lambda r: r if r and web(pod_edges(r)) == want_web else None)(
                cluster_report(binary)[0]), 30, every=1)
            check("after a restart (counter reset) the window still counts every connection",
                  after and web(pod_edges(after)) == want_web and sum(pod_edges(after).values()) == total + 2,
                  f"alpha/web {web(pod_edges(after)) if after else None}, want {want_web}")

            # -- dropped packets make the evidence incomplete
            agent = agents.procs["node-1"]
            os.kill(agent.pid, signal.SIGSTOP)
            flood(NODE1, 200_000)
            os.kill(agent.pid, signal.SIGCONT)
            drops = lambda: (lambda r: r if r and float(r[0]["value"][1]) > 0 else None)(
                prom_query("sum(meshwatch_capture_dropped_packets_total)"))
            check("the stopped agent dropped packets, and says so", wait_for(drops, 30), str(prom_query(
                "meshwatch_capture_dropped_packets_total")))
            incomplete = wait_for(lambda: (lambda r: r if r and r["evidence_incomplete"] else None)(
                cluster_report(binary)[0]), 20, every=1)
            check("drops in the window: evidence incomplete, nothing ready",
                  incomplete and not any(v["verdict"] == "ready" for v in incomplete["verdicts"]),
                  json.dumps((incomplete or {}).get("evidence_incomplete")))
            r = gate("--namespace", "alpha")
            check("check: with drops in the window a ready namespace exits 3, warning why",
                  r.returncode == 3 and "dropped packets" in r.stderr, f"{r.returncode}\n{r.stderr}")

            # -- a stopped agent is named; what it counted stays
            agents.stop("node-2")
            down = f"{UNDERLAY['node-2']}:{AGENT_PORT}"
            named = wait_for(lambda: (lambda r: r if r and down in r["agents_down"] else None)(
                cluster_report(binary)[0]), 20, every=1)
            check("a stopped agent is named in agents_down", named, json.dumps((named or {}).get("agents_down")))
            cache = lambda r: {k: v for k, v in pod_edges(r).items() if k[1] == "beta/cache"} if r else None
            check("what the stopped agent counted stays in the window", named and cache(named) == cache(after),
                  f"{cache(named)} vs {cache(after)}")
            r = meshwatch(binary, "verdicts", "--prometheus", PROM, "--window", WINDOW)
            check("verdicts warns about the agent that is down", r.returncode == 0 and down in r.stderr, r.stderr)
            if record_dir:
                record(binary, record_dir, prefix="final_")
        finally:
            if agents:
                agents.kill_all()
            for p in procs:
                if p.poll() is None:
                    p.kill()
                    p.wait()
            lab.close()
    failed = sum(1 for _, ok in results if not ok)
    print(f"cluster e2e: {len(results) - failed} passed, {failed} failed")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
