#!/usr/bin/env python3
"""End-to-end test of `meshwatch agent` with real parts (root).

Pods are network namespaces on a bridge (pcaps/generate.py's Lab); the agent captures on the
bridge; a real Prometheus server (Debian package) scrapes it; real openssl (Istio ALPN) and curl
make the traffic of Istio's migration task. Checks, through Prometheus' query API and the agent's
JSON API: legacy/sleep -> foo/httpbin plaintext is counted, foo/httpbin is blocked by
legacy/sleep and bar/httpbin is ready; after legacy switches to mTLS and the window passes,
foo/httpbin is ready; SIGTERM stops the agent cleanly. Everything it starts is stopped and its
namespaces are removed.

Usage: sudo python3 tests/live/agent_e2e.py [MESHWATCH_BINARY]
Prints 'agent e2e: N passed, M failed' and exits non-zero on a failure.
"""
import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.parse

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(ROOT, "pcaps"))
import generate  # noqa: E402

AGENT_PORT = 19477
PROM_PORT = 19090
WINDOW = 20  # seconds
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import check, results, wait_for  # noqa: E402


def in_node(*args, **kw):
    return subprocess.run(["ip", "netns", "exec", "mw-node", *args], capture_output=True, text=True, **kw)


def http_get(port, path):
    r = in_node("curl", "-s", "-m", "5", "-w", "\n%{http_code}", f"http://127.0.0.1:{port}{path}")
    body, _, code = r.stdout.rpartition("\n")
    return (int(code) if code.isdigit() else 0), body


def api(path):
    code, body = http_get(AGENT_PORT, path)
    return json.loads(body) if code == 200 else None


def prom_query(q):
    code, body = http_get(PROM_PORT, "/api/v1/query?query=" + urllib.parse.quote(q))
    if code != 200:
        return None
    res = json.loads(body)["data"]["result"]
    return float(res[0]["value"][1]) if res else 0.0


def verdict_of(v, ns, wl):
    return next((x for x in v["verdicts"] if x.get("namespace") == ns and x.get("workload") == wl), None)


def least_privilege(binary, tmp):
    """Run as nobody with only CAP_NET_RAW (a file capability), as README documents; and
    without it, fail with a clear error."""
    import shutil
    capped = os.path.join(tmp, "meshwatch-capped")
    shutil.copy(binary, capped)
    os.chmod(capped, 0o755)
    os.chmod(tmp, 0o755)
    subprocess.run(["setcap", "cap_net_raw+ep", capped], check=True)
    subprocess.run(["ip", "netns", "add", "mw-caps"], check=True)
    try:
        subprocess.run(["ip", "netns", "exec", "mw-caps", "ip", "link", "set", "lo", "up"], check=True)
        user = ["setpriv", "--reuid", "nobody", "--regid", "nogroup", "--clear-groups"]
        p = subprocess.Popen(["ip", "netns", "exec", "mw-caps", *user, capped, "agent", "--interface", "lo",
                              "--listen", "127.0.0.1:19478"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            def ready():
                r = subprocess.run(["ip", "netns", "exec", "mw-caps", "curl", "-s", "127.0.0.1:19478/readyz"],
                                   capture_output=True, text=True)
                return r.stdout.strip() == "ready"
            check("runs as nobody with only CAP_NET_RAW", wait_for(ready, 10))
            status = open(f"/proc/{p.pid}/status").read()
            eff = next(l.split()[1] for l in status.splitlines() if l.startswith("CapEff:"))
            uid = next(l.split()[1] for l in status.splitlines() if l.startswith("Uid:"))
            check("its effective capabilities are exactly CAP_NET_RAW", int(eff, 16) == 1 << 13 and uid == "65534",
                  f"CapEff {eff} uid {uid}")
        finally:
            p.terminate()
            p.wait(timeout=10)
        plain = os.path.join(tmp, "meshwatch-plain")
        shutil.copy(binary, plain)
        os.chmod(plain, 0o755)
        r = subprocess.run(["ip", "netns", "exec", "mw-caps", *user, plain, "agent", "--interface", "lo",
                            "--listen", "127.0.0.1:19479"], capture_output=True, text=True, timeout=20)
        check("without CAP_NET_RAW it exits 2 naming the capability",
              r.returncode == 2 and "CAP_NET_RAW" in r.stderr, f"{r.returncode} {r.stderr[-300:]}")
    finally:
        subprocess.run(["ip", "netns", "del", "mw-caps"], check=False)


@contextlib.contextmanager
def veth_namespace(ns, a, b):
    """A scratch network namespace `ns` with a veth pair `a`-`b` and lo up; yields `run(*cmd)`,
    which runs a command in it. The namespace is deleted on the way out."""
    subprocess.run(["ip", "netns", "add", ns], check=True)
    try:
        run = lambda *cmd: subprocess.run(["ip", "netns", "exec", ns, *cmd], capture_output=True, text=True)
        run("ip", "link", "add", a, "type", "veth", "peer", "name", b)
        for dev in (a, b, "lo"):
            run("ip", "link", "set", dev, "up")
        yield run
    finally:
        subprocess.run(["ip", "netns", "del", ns], check=False)


def under_load(binary, tmp):
    """Replay at top speed onto a veth the agent captures on; meanwhile /metrics, /healthz and
    the API's edges and verdicts (snapshots of the state the capture thread writes) must answer
    within 1 s every time, and the capture must drop nothing. The agent has no identity source:
    a lab agent counts what it sees."""
    ns = "mw-load"
    procs = []
    with veth_namespace(ns, "vl0", "vl1") as run:
        try:
            agent = subprocess.Popen(["ip", "netns", "exec", ns, binary, "agent", "--interface", "vl1",
                                      "--listen", "127.0.0.1:19481"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            procs.append(agent)
            wait_for(lambda: run("curl", "-sf", "127.0.0.1:19481/readyz").returncode == 0, 10)
            replay = subprocess.Popen(["ip", "netns", "exec", ns, "tcpreplay", "-q", "-K", "--topspeed", "--loop", "4000",
                                       "-i", "vl0", os.path.join(ROOT, "pcaps", "istio-migration-before.pcap")],
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            procs.append(replay)
            worst, answered, seen = 0.0, 0, 0
            while replay.poll() is None:
                for path in ("/metrics", "/healthz", "/api/v1/edges", "/api/v1/verdicts"):
                    r = run("curl", "-s", "-o", "/dev/null", "-m", "5", "-w", "%{http_code} %{time_total}",
                            f"127.0.0.1:19481{path}")
                    code, _, secs = r.stdout.partition(" ")
                    answered += code == "200"
                    seen += 1
                    worst = max(worst, float(secs or 99))
                time.sleep(0.05)
            st = json.loads(run("curl", "-s", "127.0.0.1:19481/api/v1/status").stdout or "{}")
            packets = st.get("capture", {}).get("packets", 0)
            check(f"under a top-speed replay ({packets} packets) /metrics, /healthz, /api/v1/edges and "
                  f"/api/v1/verdicts answer within 1 s ({seen} requests, worst {worst:.3f} s)",
                  seen >= 8 and answered == seen and worst < 1.0, f"{answered}/{seen} worst {worst}")
            dropped = st.get("capture", {}).get("dropped_kernel", -1)
            check("hammering the API during the replay drops no packet", dropped == 0 and packets > 0,
                  json.dumps(st.get("capture")))
            m = run("curl", "-s", "127.0.0.1:19481/metrics").stdout
            counted = sum(float(l.split()[-1]) for l in m.splitlines()
                          if l.startswith("meshwatch_connections_total{") and 'destination_workload="unknown"' in l)
            check("without identities the agent counts the connections it sees", counted > 0, m[-600:])
            # a capture that drops packets: freeze the agent so its kernel buffer (1 MiB) overflows
            agent.kill()
            agent.wait()
            agent = subprocess.Popen(["ip", "netns", "exec", ns, binary, "agent", "--interface", "vl1", "--buffer-size", "1",
                                      "--listen", "127.0.0.1:19482"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            procs.append(agent)
            wait_for(lambda: run("curl", "-sf", "127.0.0.1:19482/readyz").returncode == 0, 10)
            os.kill(agent.pid, signal.SIGSTOP)
            run("tcpreplay", "-q", "-K", "--topspeed", "--loop", "200", "-i", "vl0",
                os.path.join(ROOT, "pcaps", "istio-migration-before.pcap"))
            os.kill(agent.pid, signal.SIGCONT)
            status = lambda: json.loads(run("curl", "-s", "127.0.0.1:19482/api/v1/status").stdout or "{}")
            dropped = wait_for(lambda: status().get("capture", {}).get("dropped_kernel", 0) > 0, 10)
            check("kernel drops are read and reported", dropped, json.dumps(status()))
            v = json.loads(run("curl", "-s", "127.0.0.1:19482/api/v1/verdicts").stdout or "{}")
            m = run("curl", "-s", "127.0.0.1:19482/metrics").stdout
            drop_line = next((l for l in m.splitlines() if l.startswith('meshwatch_capture_dropped_packets_total{point="kernel"}')), "")
            check("drops make the evidence incomplete and are exported",
                  v.get("evidence_incomplete") is True and drop_line and float(drop_line.split()[-1]) > 0, f"{v.get('evidence_incomplete')} {drop_line}")
        finally:
            for p in procs:
                if p.poll() is None:
                    p.kill()
                    p.wait()


# Linux keeps the first 15 characters of a thread's name
CAPTURE_THREAD = "meshwatch-capture"[:15]


def thread_wakeups(pid, name):
    """Voluntary context switches of the process' thread called `name` (each is a wakeup)."""
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/comm") as f:
                if f.read().strip() != name:
                    continue
            with open(f"/proc/{pid}/task/{tid}/status") as f:
                return next(int(line.split()[1]) for line in f if line.startswith("voluntary_ctxt_switches:"))
        except (OSError, StopIteration):
            continue
    return None


def idle_and_stop(binary):
    """An idle agent (no traffic on its interface) wakes its capture thread about once a second
    to publish, not every few milliseconds; and a stop still ends it at once, not at the next
    publish (the capture thread's wait is woken by the stop). Stopped six times, at random
    points of its publishing second: without the wake, each stop would take 0-1 s, and all six
    under 0.3 s would happen 0.07% of the time."""
    ns = "mw-idle"
    procs = []
    with veth_namespace(ns, "vi0", "vi1") as run:
        try:
            stops = []
            for attempt, settle in enumerate((1.0, 1.15, 1.3, 1.45, 1.6, 1.75)):
                agent = subprocess.Popen(["ip", "netns", "exec", ns, binary, "agent", "--interface", "vi1",
                                          "--listen", "127.0.0.1:19484"], stdout=subprocess.DEVNULL,
                                         stderr=subprocess.PIPE, text=True)
                procs.append(agent)
                if not wait_for(lambda: run("curl", "-sf", "127.0.0.1:19484/readyz").returncode == 0, 10):
                    agent.kill()
                    _, err = agent.communicate()
                    check("the idle agent starts", False, err[-400:])
                    return
                time.sleep(settle)
                if attempt == 0:
                    before, t0 = thread_wakeups(agent.pid, CAPTURE_THREAD), time.monotonic()
                    time.sleep(5)
                    after, t1 = thread_wakeups(agent.pid, CAPTURE_THREAD), time.monotonic()
                    rate = (after - before) / (t1 - t0) if None not in (before, after) else None
                    check("an idle agent's capture thread wakes at most 3 times a second",
                          rate is not None and rate <= 3, f"{rate} wakeups/s")
                started = time.monotonic()
                agent.send_signal(signal.SIGTERM)
                try:
                    rc = agent.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    rc = None
                stops.append((rc, round(time.monotonic() - started, 3)))
            check("an idle agent stops within 0.3 s of SIGTERM, six times out of six",
                  all(rc == 0 and secs < 0.3 for rc, secs in stops), str(stops))
        finally:
            for p in procs:
                if p.poll() is None:
                    p.kill()
                    p.wait()


def capture_failure(binary):
    """The interface goes away under the agent: the process must end non-zero, saying why (a
    DaemonSet then shows CrashLoopBackOff instead of a healthy pod that watches nothing)."""
    ns = "mw-fail"
    with veth_namespace(ns, "vf0", "vf1") as run:
        agent = subprocess.Popen(["ip", "netns", "exec", ns, binary, "agent", "--interface", "vf1",
                                  "--listen", "127.0.0.1:19483"], stdout=subprocess.DEVNULL,
                                 stderr=subprocess.PIPE, text=True)
        up = wait_for(lambda: run("curl", "-sf", "127.0.0.1:19483/healthz").returncode == 0, 10)
        run("ip", "link", "del", "vf0")
        try:
            _, err = agent.communicate(timeout=15)
            rc = agent.returncode
        except subprocess.TimeoutExpired:
            agent.kill()
            _, err = agent.communicate()
            rc = None
        check("a capture that fails ends the agent non-zero, saying why",
              up and rc not in (0, None) and "capture" in err, f"exit {rc}: {err[-400:]}")


def main():
    if os.geteuid() != 0:
        sys.exit("agent_e2e.py needs root (network namespaces, capture)")
    binary = sys.argv[1] if len(sys.argv) > 1 else os.path.join(ROOT, "target/debug/meshwatch")
    procs = []
    with tempfile.TemporaryDirectory() as tmp:
        lab = generate.Lab(tmp)
        try:
            lab.make_certs()
            generate.setup_migration(lab)
            workloads = os.path.join(tmp, "workloads.yaml")
            generate.workloads_yaml(lab, workloads)
            log = open(os.path.join(tmp, "agent.log"), "w+")
            agent = subprocess.Popen(
                ["ip", "netns", "exec", "mw-node", binary, "agent", "--interface", "br0", "--promiscuous",
                 "--workloads", workloads, "--listen", f"127.0.0.1:{AGENT_PORT}",
                 "--window", f"{WINDOW}s", "--min-connections", "5"],
                stdout=log, stderr=subprocess.STDOUT)
            procs.append(agent)
            check("agent becomes ready", wait_for(lambda: http_get(AGENT_PORT, "/readyz")[0] == 200, 15))
            # started as root: after opening the capture it keeps CAP_NET_RAW only, in every thread
            caps = {}
            for tid in os.listdir(f"/proc/{agent.pid}/task"):
                for line in open(f"/proc/{agent.pid}/task/{tid}/status"):
                    if line.startswith(("CapEff:", "CapPrm:", "CapBnd:", "CapInh:", "CapAmb:")):
                        k, v = line.split()
                        caps.setdefault(k, set()).add(int(v, 16))
            check("root agent drops to CAP_NET_RAW in every thread",
                  caps.get("CapEff:") == {1 << 13} and caps.get("CapPrm:") == {1 << 13}
                  and caps.get("CapBnd:") == {1 << 13} and caps.get("CapInh:") == {0}, str(caps))
            prom_cfg = os.path.join(tmp, "prometheus.yml")
            with open(prom_cfg, "w") as f:
                f.write("global:\n  scrape_interval: 1s\nscrape_configs:\n"
                        f"  - job_name: meshwatch\n    static_configs:\n      - targets: ['127.0.0.1:{AGENT_PORT}']\n")
            prom = subprocess.Popen(
                ["ip", "netns", "exec", "mw-node", "prometheus", f"--config.file={prom_cfg}",
                 f"--storage.tsdb.path={tmp}/tsdb", f"--web.listen-address=127.0.0.1:{PROM_PORT}"],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            procs.append(prom)
            check("prometheus is up", wait_for(lambda: http_get(PROM_PORT, "/-/ready")[0] == 200, 30))
            check("prometheus scrapes the agent", wait_for(lambda: prom_query('up{job="meshwatch"}') == 1.0, 30))

            # -- before: legacy talks plaintext to foo/httpbin
            generate.migration_traffic(lab, after=False, rounds=3)
            plain = ('sum(meshwatch_connections_total{source_namespace="legacy",source_workload="sleep",'
                     'destination_namespace="foo",destination_workload="httpbin",security="plaintext",'
                     'reporter="destination"})')
            got = wait_for(lambda: prom_query(plain) == 3.0, 20)
            check("prometheus counts 3 plaintext legacy/sleep -> foo/httpbin connections", got, f"{prom_query(plain)}")
            mtls = 'sum(meshwatch_connections_total{destination_workload="httpbin",security="istio_mtls",mesh="sidecar"})'
            check("prometheus counts 12 sidecar mTLS connections", wait_for(lambda: prom_query(mtls) == 12.0, 10),
                  f"{prom_query(mtls)}")
            check("no series carries an IP or client port",
                  prom_query('count(meshwatch_connections_total{source_workload=~".*[0-9]+\\\\.[0-9]+.*"})') == 0.0)
            v = api("/api/v1/verdicts")
            foo = verdict_of(v, "foo", "httpbin")
            bar = verdict_of(v, "bar", "httpbin")
            check("foo/httpbin is blocked", foo and foo["verdict"] == "blocked", json.dumps(foo))
            blockers = [(b.get("namespace"), b.get("workload"), b["security"], b["connections"]) for b in (foo or {}).get("blockers", [])]
            check("foo/httpbin is blocked by legacy/sleep (plaintext, 3)", blockers == [("legacy", "sleep", "plaintext", 3)], str(blockers))
            check("bar/httpbin is ready", bar and bar["verdict"] == "ready", json.dumps(bar))
            # finished flows (and their bytes) are reported after the close linger (10 s)
            flows = wait_for(lambda: (lambda f: f if f and len(f["flows"]) == 5 else None)(api("/api/v1/flows?limit=5")), 20)
            check("flows API answers with the contract's fields",
                  flows and all(k in flows["flows"][0] for k in ("src", "dport", "security", "alpn", "server_hello")))
            status = api("/api/v1/status")
            check("status reports the capture", status and status["capture"]["running"] and status["interface"] == "br0")
            # the workloads file is reloaded when it changes
            text = open(workloads).read().replace(
                "workloads:\n", "workloads:\n  - {namespace: extra, workload: probe, ips: [10.244.1.99]}\n", 1)
            with open(workloads, "w") as f:
                f.write(text)
            entries = lambda: (api("/api/v1/status") or {}).get("identity_entries")
            check("a changed workloads file is reloaded", wait_for(lambda: entries() == 7, 10), f"{entries()}")
            code, _ = (lambda r: (r.stdout.strip(), None))(in_node("curl", "-s", "-o", "/dev/null", "-w", "%{http_code}",
                                                                   "-X", "POST", f"http://127.0.0.1:{AGENT_PORT}/api/v1/verdicts"))
            check("the API is read-only (POST is refused)", code == "405", code)
            # the status API reads the identity map itself; the metrics follow at the next
            # once-a-second publish, so the reloaded count may take that long to show there
            def health_metrics():
                code, metrics = http_get(AGENT_PORT, "/metrics")
                return code == 200 and all(m in metrics for m in (
                    "meshwatch_packets_total", "meshwatch_flows_active", "meshwatch_build_info",
                    "meshwatch_capture_dropped_packets_total", "meshwatch_identity_cache_entries 7"))
            check("agent health metrics are exported", wait_for(health_metrics, 5),
                  http_get(AGENT_PORT, "/metrics")[1][-800:])
            to_server = ('sum(meshwatch_bytes_total{source_namespace="legacy",destination_workload="httpbin",'
                         'direction="to_server"})')
            check("prometheus sums request bytes of finished flows",
                  wait_for(lambda: (prom_query(to_server) or 0) > 0, 20), f"{prom_query(to_server)}")

            # -- after: legacy gets a sidecar; once the window has passed, foo/httpbin is ready
            switched = time.time()
            while time.time() - switched < WINDOW + 3:
                generate.migration_traffic(lab, after=True, rounds=1)
                time.sleep(2)
            v = api("/api/v1/verdicts")
            foo = verdict_of(v, "foo", "httpbin")
            check("after the switch and the window, foo/httpbin is ready", foo and foo["verdict"] == "ready", json.dumps(foo))
            check("bar/httpbin is still ready", (verdict_of(v, "bar", "httpbin") or {}).get("verdict") == "ready")

            # -- clean shutdown
            agent.send_signal(signal.SIGTERM)
            try:
                rc = agent.wait(timeout=10)
            except subprocess.TimeoutExpired:
                rc = None
            log.seek(0)
            text = log.read()
            check("SIGTERM stops the agent cleanly", rc == 0, f"exit {rc}")
            check("final statistics are logged", "final statistics" in text, text[-500:])
            least_privilege(binary, tmp)
            under_load(binary, tmp)
            idle_and_stop(binary)
            capture_failure(binary)
        finally:
            for p in procs:
                if p.poll() is None:
                    p.kill()
                    p.wait()
            lab.close()
    failed = sum(1 for _, ok in results if not ok)
    print(f"agent e2e: {len(results) - failed} passed, {failed} failed")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
