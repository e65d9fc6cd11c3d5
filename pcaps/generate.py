#!/usr/bin/env python3
"""Generate the test captures in pcaps/ with real network stacks.

Pods are network namespaces on a Linux bridge inside a "node" namespace; servers and clients are
real programs (openssl s_server/s_client with Istio's ALPN list, gnutls-cli, curl, and a
PERMISSIVE-style Python server that accepts TLS and plaintext on one port); tcpdump captures
with --immediate-mode and is stopped with SIGTERM. Every client run is one TCP connection, and
each is recorded, so NAME.expected.json states what the capture must yield.

Needs root, iproute2, tcpdump, openssl, gnutls-bin, curl, ethtool, mergecap. Touches only
namespaces it creates (all named mw-*) and removes them.
Usage: sudo python3 pcaps/generate.py [--out DIR] [SCENARIO...]   (DIR defaults to pcaps/)
"""
import json
import os
import signal
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = HERE  # where captures and expected files go (--out)
ISTIO_ALPN = "istio-peer-exchange,istio"
APP_PORT = 8000
HEALTH_PORT = 15021
HBONE_PORT = 15008
SERVER = os.path.join(HERE, "permissive_server.py")  # always beside this script


def sh(*args, check=True, **kw):
    return subprocess.run(list(args), check=check, **kw)


def ns(name, *args, **kw):
    return sh("ip", "netns", "exec", name, *args, **kw)


class Lab:
    """A node namespace with a bridge, pods attached to it, and the connections made."""

    def __init__(self, tmp, v6=False, node="mw-node", bridge_ip="10.244.1.1"):
        self.tmp, self.v6, self.node, self.bridge_ip = tmp, v6, node, bridge_ip
        self.pods = {}  # "ns/name" -> (netns, ip)
        self.servers = []
        self.connections = []  # (source, destination, port, security)
        self.cleanup()
        sh("ip", "netns", "add", node)
        ns(node, "ip", "link", "add", "br0", "type", "bridge")
        ns(node, "ip", "addr", "add", f"{bridge_ip}/24", "dev", "br0")
        if v6:
            ns(node, "sysctl", "-qw", "net.ipv6.conf.br0.disable_ipv6=0")
            ns(node, "ip", "addr", "add", "fd00:244::1/64", "dev", "br0", "nodad")
        ns(node, "ip", "link", "set", "br0", "up")
        ns(node, "ip", "link", "set", "lo", "up")

    def cleanup(self):
        out = sh("ip", "netns", "list", capture_output=True, text=True).stdout
        for line in out.splitlines():
            name = line.split()[0] if line.split() else ""
            if name.startswith("mw-"):
                sh("ip", "netns", "pids", name, check=False, capture_output=True)
                pids = sh("ip", "netns", "pids", name, check=False, capture_output=True, text=True).stdout.split()
                for p in pids:
                    try:
                        os.kill(int(p), signal.SIGKILL)
                    except ProcessLookupError:
                        pass
                sh("ip", "netns", "del", name, check=False)

    def pod(self, workload, index, mtu=None):
        """Add a pod ("ns/name") with IPv4 10.244.1.<index> (and fd00:244::<index>)."""
        netns = "mw-" + workload.replace("/", "-")
        host_if = f"v{index}"
        ip4 = f"10.244.1.{index}"
        ip6 = f"fd00:244::{index:x}"
        sh("ip", "netns", "add", netns)
        ns(self.node, "ip", "link", "add", host_if, "type", "veth", "peer", "name", "eth0", "netns", netns)
        ns(self.node, "ip", "link", "set", host_if, "master", "br0", "up")
        ns(netns, "ip", "link", "set", "lo", "up")
        ns(netns, "ip", "addr", "add", f"{ip4}/24", "dev", "eth0")
        if self.v6:
            ns(netns, "sysctl", "-qw", "net.ipv6.conf.eth0.disable_ipv6=0")
            ns(netns, "ip", "addr", "add", f"{ip6}/64", "dev", "eth0", "nodad")
        if mtu:
            ns(netns, "ip", "link", "set", "eth0", "mtu", str(mtu))
            ns(self.node, "ip", "link", "set", host_if, "mtu", str(mtu))
            ns(netns, "ethtool", "-K", "eth0", "tso", "off", "gso", "off", "gro", "off", capture_output=True)
            ns(self.node, "ethtool", "-K", host_if, "tso", "off", "gso", "off", "gro", "off", capture_output=True)
        ns(netns, "ip", "link", "set", "eth0", "up")
        self.pods[workload] = (netns, ip6 if self.v6 else ip4, ip4, ip6)
        return netns

    def addr(self, workload):
        return self.pods[workload][1]

    def serve(self, workload, port, alpn="istio-peer-exchange,istio,h2,http/1.1"):
        netns = self.pods[workload][0]
        p = subprocess.Popen(["ip", "netns", "exec", netns, sys.executable, SERVER, "--port", str(port),
                              "--cert", self.cert, "--key", self.key, "--alpn", alpn,
                              "--bind", "::" if self.v6 else "0.0.0.0"],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.servers.append(p)
        return p

    def wait_listening(self, workload, port):
        netns = self.pods[workload][0]
        for _ in range(100):
            out = ns(netns, "ss", "-ltnH", capture_output=True, text=True).stdout
            if f":{port} " in out:
                return
            time.sleep(0.05)
        raise RuntimeError(f"{workload} is not listening on {port}")

    def make_certs(self):
        self.cert = os.path.join(self.tmp, "cert.pem")
        self.key = os.path.join(self.tmp, "key.pem")
        sh("openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
           "-nodes", "-days", "3650", "-subj", "/O=cluster.local",
           "-addext", "subjectAltName=URI:spiffe://cluster.local/ns/foo/sa/default",
           "-keyout", self.key, "-out", self.cert, capture_output=True)

    # ---- clients: each call is exactly one TCP connection, recorded with its expected class

    def _client_netns(self, source):
        return self.node if source.startswith("node:") else self.pods[source][0]

    def _target(self, destination):
        a = self.addr(destination)
        return f"[{a}]" if ":" in a else a

    def _record(self, source, destination, port, security):
        self.connections.append((source, destination, port, security))

    def mtls(self, source, destination, port=APP_PORT, extra=()):
        """What an Istio sidecar does: TLS with Istio's ALPN and an outbound_ SNI, client cert."""
        host = destination.split("/")[1] + "." + destination.split("/")[0] + ".svc.cluster.local"
        ns(self._client_netns(source), "openssl", "s_client", "-connect", f"{self._target(destination)}:{port}",
           "-alpn", ISTIO_ALPN, "-servername", f"outbound_.{port}_._.{host}",
           "-cert", self.cert, "-key", self.key, "-quiet", *extra,
           input=b"GET /headers HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
           capture_output=True, check=False, timeout=20)
        self._record(source, destination, port, "istio_mtls")

    def hbone(self, source, destination):
        """ambient: TLS to 15008, ALPN exactly h2, no SNI."""
        ns(self._client_netns(source), "openssl", "s_client", "-connect", f"{self._target(destination)}:{HBONE_PORT}",
           "-alpn", "h2", "-noservername", "-cert", self.cert, "-key", self.key, "-quiet",
           input=b"", capture_output=True, check=False, timeout=20)
        self._record(source, destination, HBONE_PORT, "istio_mtls")

    def plaintext(self, source, destination, port=APP_PORT, path="/ip"):
        ns(self._client_netns(source), "curl", "-s", "-m", "10", "-o", "/dev/null",
           f"http://{self._target(destination)}:{port}{path}", check=False, timeout=20)
        self._record(source, destination, port, "plaintext")

    def h2c(self, source, destination, port=APP_PORT):
        ns(self._client_netns(source), "curl", "-s", "-m", "5", "-o", "/dev/null", "--http2-prior-knowledge",
           f"http://{self._target(destination)}:{port}/", check=False, timeout=20)
        self._record(source, destination, port, "plaintext")

    def app_tls(self, source, destination, port=APP_PORT):
        """Application TLS (gnutls-cli, ALPN http/1.1): not Istio's, blocks under STRICT."""
        ns(self._client_netns(source), "gnutls-cli", "--insecure", "--alpn=http/1.1", "-p", str(port),
           self.addr(destination), input=b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
           capture_output=True, check=False, timeout=20)
        self._record(source, destination, port, "tls")

    # ---- capture

    def capture(self, path, iface="br0", linktype=None, netns=None, nanos=False):
        args = ["ip", "netns", "exec", netns or self.node, "tcpdump", "-i", iface, "--immediate-mode",
                "-U", "-s", "262144", "-w", path, "tcp or udp port 4789"]
        if nanos:
            args[-1:-1] = ["--time-stamp-precision", "nano"]
        if linktype:
            args[-1:-1] = ["-y", linktype]
        p = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        # tcpdump prints "listening on" once the capture is open
        for _ in range(5):
            line = p.stderr.readline()
            if b"listening" in line:
                break
        else:
            raise RuntimeError(f"tcpdump did not start: {line!r}")
        time.sleep(0.2)
        return p

    @staticmethod
    def stop(p):
        time.sleep(0.5)
        p.send_signal(signal.SIGTERM)
        p.wait(timeout=10)

    def close(self):
        for s in self.servers:
            s.kill()
        self.cleanup()


MIGRATION_PODS = [("foo/httpbin", 11), ("foo/sleep", 12), ("bar/httpbin", 21), ("bar/sleep", 22),
                  ("legacy/sleep", 31)]


def workloads_yaml(lab, path):
    lines = ["workloads:"]
    for w, (_netns, _a, ip4, ip6) in sorted(lab.pods.items()):
        n, name = w.split("/")
        ips = [ip4] + ([ip6] if lab.v6 else [])
        lines.append(f"  - {{namespace: {n}, workload: {name}, service_account: {name}, "
                     f"ips: [{', '.join(json.dumps(i) for i in ips)}]}}")
    lines += ["nodes:", f"  - {{name: node-1, ips: [{lab.bridge_ip}" + (", \"fd00:244::1\"" if lab.v6 else "") + "]}"]
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")


def setup_migration(lab):
    """The Istio migration task's pods: sleep in foo and bar (sidecars), legacy (none), httpbin
    in foo and bar serving the app port and the health port."""
    for w, i in MIGRATION_PODS:
        lab.pod(w, i)
    for w in ("foo/httpbin", "bar/httpbin"):
        lab.serve(w, APP_PORT)
        lab.serve(w, HEALTH_PORT)
    for w in ("foo/httpbin", "bar/httpbin"):
        lab.wait_listening(w, APP_PORT)
        lab.wait_listening(w, HEALTH_PORT)


def migration_traffic(lab, after, rounds=3):
    """Before: legacy -> httpbin.foo in plaintext. After: legacy has a sidecar too. Kubelet
    probes come from the node on the health port and the app port."""
    for _ in range(rounds):
        for src in ("foo/sleep", "bar/sleep"):
            for dst in ("foo/httpbin", "bar/httpbin"):
                lab.mtls(src, dst)
        if after:
            lab.mtls("legacy/sleep", "foo/httpbin")
        else:
            lab.plaintext("legacy/sleep", "foo/httpbin")
    for dst in ("foo/httpbin", "bar/httpbin"):
        lab.plaintext("node:node-1", dst, HEALTH_PORT, "/healthz/ready")
        lab.plaintext("node:node-1", dst, APP_PORT, "/app-health/httpbin/readyz")


def migration(lab, after):
    setup_migration(lab)
    migration_traffic(lab, after)


def expect_migration(after):
    foo = {"verdict": "ready"} if after else {"verdict": "blocked", "blockers": [
        {"source": "legacy/sleep", "security": "plaintext", "port": APP_PORT, "connections": 3}]}
    return {"foo/httpbin": foo, "bar/httpbin": {"verdict": "ready"}}


def scenario_migration_before(lab, out):
    cap = lab.capture(out)
    migration(lab, after=False)
    lab.stop(cap)
    return {"verdicts": expect_migration(False), "namespaces": {"foo": "blocked", "bar": "ready"}}


def scenario_migration_after(lab, out):
    cap = lab.capture(out)
    migration(lab, after=True)
    lab.stop(cap)
    return {"verdicts": expect_migration(True), "namespaces": {"foo": "ready", "bar": "ready"}, "mesh": "ready"}


def scenario_any_cooked(lab, out):
    """tcpdump -i any (Linux cooked v2): every packet is seen twice, on the pod's veth and on
    the bridge; counts must not double."""
    cap = lab.capture(out, iface="any", linktype="LINUX_SLL2")
    migration(lab, after=False)
    lab.stop(cap)
    return {"verdicts": expect_migration(False), "min_duplicates": 1}


def scenario_ipv6(lab, out):
    """IPv6 only, written with nanosecond timestamps."""
    cap = lab.capture(out, nanos=True)
    migration(lab, after=False)
    lab.stop(cap)
    return {"verdicts": expect_migration(False)}


def scenario_split_hello(lab, out):
    """A ClientHello larger than one segment and than one TLS record: MTU 400 with TSO/GSO off,
    records of at most 512 bytes, a long ALPN list (Istio's first)."""
    lab.pod("foo/httpbin", 11)
    lab.pod("foo/sleep", 12, mtu=400)
    lab.serve("foo/httpbin", APP_PORT)
    lab.wait_listening("foo/httpbin", APP_PORT)
    cap = lab.capture(out)
    padding = ",".join(f"x-padding-protocol-{i:03}" for i in range(40))
    for _ in range(5):
        # -alpn is given once: the padding names follow Istio's in the same list
        lab.connections_before = len(lab.connections)
        host = "httpbin.foo.svc.cluster.local"
        ns(lab.pods["foo/sleep"][0], "openssl", "s_client", "-connect", f"{lab.addr('foo/httpbin')}:{APP_PORT}",
           "-alpn", f"{ISTIO_ALPN},{padding}", "-servername", f"outbound_.{APP_PORT}_._.{host}",
           "-max_send_frag", "512", "-cert", lab.cert, "-key", lab.key, "-quiet",
           input=b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
           capture_output=True, check=False, timeout=20)
        lab._record("foo/sleep", "foo/httpbin", APP_PORT, "istio_mtls")
    lab.stop(cap)
    return {"verdicts": {"foo/httpbin": {"verdict": "ready"}}, "min_alpn_names": 42}


def scenario_app_tls_h2c(lab, out):
    """Application TLS without Istio ALPN (gnutls-cli), h2c with prior knowledge (curl),
    ambient HBONE (TLS to 15008, ALPN h2, no SNI)."""
    lab.pod("foo/web", 11)
    lab.pod("foo/client", 12)
    lab.pod("bar/api", 21)
    lab.pod("bar/client", 22)
    lab.serve("foo/web", APP_PORT, alpn="http/1.1,h2")
    lab.serve("bar/api", HBONE_PORT, alpn="h2")
    lab.serve("bar/api", APP_PORT)
    lab.wait_listening("foo/web", APP_PORT)
    lab.wait_listening("bar/api", HBONE_PORT)
    lab.wait_listening("bar/api", APP_PORT)
    cap = lab.capture(out)
    for _ in range(2):
        lab.app_tls("foo/client", "foo/web")
        lab.h2c("bar/client", "foo/web")
    for _ in range(5):
        lab.hbone("bar/client", "bar/api")
    lab.stop(cap)
    return {"verdicts": {
        "foo/web": {"verdict": "blocked", "blockers": [
            {"source": "bar/client", "security": "plaintext", "port": APP_PORT, "connections": 2},
            {"source": "foo/client", "security": "tls", "port": APP_PORT, "connections": 2}]},
        "bar/api": {"verdict": "ready"}}}


def scenario_vxlan(lab, out):
    """A VXLAN overlay between two nodes (flannel-style, VNI 1, UDP 4789): the client pod on
    node A, the server pod on node B; captured on node A's underlay link."""
    lab.pod("foo/sleep", 12)
    node_b = "mw-node-b"
    sh("ip", "netns", "add", node_b)
    ns(node_b, "ip", "link", "set", "lo", "up")
    ns(lab.node, "ip", "link", "add", "ul0", "type", "veth", "peer", "name", "ul0", "netns", node_b)
    ns(lab.node, "ip", "addr", "add", "192.0.2.1/24", "dev", "ul0")
    ns(node_b, "ip", "addr", "add", "192.0.2.2/24", "dev", "ul0")
    ns(lab.node, "ip", "link", "set", "ul0", "up")
    ns(node_b, "ip", "link", "set", "ul0", "up")
    for node, local, remote in ((lab.node, "192.0.2.1", "192.0.2.2"), (node_b, "192.0.2.2", "192.0.2.1")):
        ns(node, "ip", "link", "add", "vx0", "type", "vxlan", "id", "1", "dstport", "4789",
           "local", local, "remote", remote, "dev", "ul0")
    ns(lab.node, "ip", "link", "set", "vx0", "master", "br0", "up")
    ns(node_b, "ip", "link", "add", "br0", "type", "bridge")
    ns(node_b, "ip", "link", "set", "br0", "up")
    ns(node_b, "ip", "link", "set", "vx0", "master", "br0", "up")
    # the server pod hangs off node B's bridge
    netns = "mw-foo-httpbin"
    sh("ip", "netns", "add", netns)
    ns(node_b, "ip", "link", "add", "v11", "type", "veth", "peer", "name", "eth0", "netns", netns)
    ns(node_b, "ip", "link", "set", "v11", "master", "br0", "up")
    ns(netns, "ip", "link", "set", "lo", "up")
    ns(netns, "ip", "addr", "add", "10.244.1.11/24", "dev", "eth0")
    ns(netns, "ip", "link", "set", "eth0", "mtu", "1450")
    ns(lab.pods["foo/sleep"][0], "ip", "link", "set", "eth0", "mtu", "1450")
    ns(netns, "ip", "link", "set", "eth0", "up")
    lab.pods["foo/httpbin"] = (netns, "10.244.1.11", "10.244.1.11", "")
    lab.serve("foo/httpbin", APP_PORT)
    lab.wait_listening("foo/httpbin", APP_PORT)
    cap = lab.capture(out, iface="ul0")
    for _ in range(5):
        lab.mtls("foo/sleep", "foo/httpbin")
    for _ in range(2):
        lab.plaintext("foo/sleep", "foo/httpbin")
    lab.stop(cap)
    return {"verdicts": {"foo/httpbin": {"verdict": "blocked", "blockers": [
        {"source": "foo/sleep", "security": "plaintext", "port": APP_PORT, "connections": 2}]}},
        "tunnel": "vxlan"}


SCENARIOS = {
    "istio-migration-before": (scenario_migration_before, {}),
    "istio-migration-after": (scenario_migration_after, {}),
    "any-cooked-v2": (scenario_any_cooked, {}),
    "ipv6": (scenario_ipv6, {"v6": True}),
    "split-clienthello": (scenario_split_hello, {}),
    "app-tls-h2c-hbone": (scenario_app_tls_h2c, {}),
    "vxlan-overlay": (scenario_vxlan, {}),
}


def edges_of(connections):
    counts = {}
    for c in connections:
        counts[c] = counts.get(c, 0) + 1
    return [{"source": s, "destination": d, "port": p, "security": sec, "connections": n}
            for (s, d, p, sec), n in sorted(counts.items())]


def run(name):
    fn, opts = SCENARIOS[name]
    with tempfile.TemporaryDirectory() as tmp:
        lab = Lab(tmp, **opts)
        try:
            lab.make_certs()
            out = os.path.join(OUT, f"{name}.pcap")
            expected = fn(lab, out)
            workloads_yaml(lab, os.path.join(OUT, f"{name}.workloads.yaml"))
            expected["edges"] = edges_of(lab.connections)
            expected["workloads"] = f"{name}.workloads.yaml"
            with open(os.path.join(OUT, f"{name}.expected.json"), "w") as f:
                json.dump(expected, f, indent=2, sort_keys=True)
                f.write("\n")
            print(f"{name}: {len(lab.connections)} connections -> {out}")
        finally:
            lab.close()


def derive_mixed_interfaces():
    """A pcapng with two interfaces of different link types (Linux cooked v2 and Ethernet), made
    by merging two captures generated above; its expectation is the sum of theirs."""
    a, b = "any-cooked-v2", "vxlan-overlay"
    out = os.path.join(OUT, "mixed-interfaces.pcapng")
    sh("mergecap", "-F", "pcapng", "-w", out, os.path.join(OUT, f"{a}.pcap"), os.path.join(OUT, f"{b}.pcap"))
    ea = json.load(open(os.path.join(OUT, f"{a}.expected.json")))
    eb = json.load(open(os.path.join(OUT, f"{b}.expected.json")))
    counts = {}
    for e in ea["edges"] + eb["edges"]:
        k = (e["source"], e["destination"], e["port"], e["security"])
        counts[k] = counts.get(k, 0) + e["connections"]
    edges = [{"source": s, "destination": d, "port": p, "security": sec, "connections": n}
             for (s, d, p, sec), n in sorted(counts.items())]
    blockers = {}
    for e in edges:
        if e["destination"] == "foo/httpbin" and e["security"] == "plaintext" and not e["source"].startswith("node:"):
            blockers[e["source"]] = e
    expected = {
        "edges": edges,
        "workloads": f"{a}.workloads.yaml",
        "verdicts": {
            "foo/httpbin": {"verdict": "blocked", "blockers": [
                {"source": s, "security": "plaintext", "port": e["port"], "connections": e["connections"]}
                for s, e in sorted(blockers.items())]},
            "bar/httpbin": {"verdict": "ready"},
        },
        "min_duplicates": 1,
    }
    with open(os.path.join(OUT, "mixed-interfaces.expected.json"), "w") as f:
        json.dump(expected, f, indent=2, sort_keys=True)
        f.write("\n")
    print(f"mixed-interfaces: merged {a} and {b} -> {out}")


def main():
    global OUT
    if os.geteuid() != 0:
        sys.exit("generate.py needs root (network namespaces)")
    args = sys.argv[1:]
    if args[:1] == ["--out"]:
        if len(args) < 2:
            sys.exit("--out needs a directory")
        OUT = os.path.abspath(args[1])
        os.makedirs(OUT, exist_ok=True)
        args = args[2:]
    names = args or list(SCENARIOS) + ["mixed-interfaces"]
    for n in names:
        if n == "mixed-interfaces":
            derive_mixed_interfaces()  # from the captures of two scenarios above
        elif n in SCENARIOS:
            run(n)
        else:
            sys.exit(f"unknown scenario {n}; known: {', '.join(SCENARIOS)}, mixed-interfaces")


if __name__ == "__main__":
    main()
