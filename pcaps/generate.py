#!/usr/bin/env python3
"""Generate the test captures in pcaps/ with real network stacks.

Pods are network namespaces on a Linux bridge inside a "node" namespace; servers and clients are
real programs (openssl s_server/s_client with Istio's ALPN list, gnutls-cli, curl, and a
PERMISSIVE-style Python server that accepts TLS and plaintext on one port, an emulated Istio
sidecar behind istio-iptables' rules in pcaps/sidecar.py, long-lived connections driven step by
step in pcaps/longconn.py); tcpdump captures with --immediate-mode and is stopped with SIGTERM.
Every client run is one TCP connection, and each is recorded, so NAME.expected.json states what
the capture must yield; a scenario captured at several vantage points writes one expected file
per capture, with the connections that vantage point sees between pods.

The nat scenario wires a routed node instead (Calico-style: a /32 per pod behind its own veth,
proxy ARP, no bridge) with kube-proxy's DNAT for a ClusterIP Service and a NodePort with SNAT, an
outside host, and the node's own clients (hostNetwork, kubelet's HTTP and TCP probes): one
connection shows up in several views, and its expected file counts it once, at its backend.
pcaps/multi/ holds cases of several inputs analyzed together (two vantage points, one file twice,
gzip and zstd copies, a directory of tcpdump -G rotated files): see pcaps/multi/README.md.

Needs root, iproute2, iptables, tcpdump, dumpcap, openssl, gnutls-bin, curl, ethtool, mergecap,
setpriv, gzip, zstd. Touches only namespaces it creates (all named mw-*, or with the prefix in
$MESHWATCH_NETNS_PREFIX) and removes them.
Usage: sudo python3 pcaps/generate.py [--out DIR] [SCENARIO...]   (DIR defaults to pcaps/)
"""
import json
import os
import re
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
PILOT_AGENT_PORT = 15020
HBONE_PORT = 15008
SERVER = os.path.join(HERE, "permissive_server.py")  # always beside this script
SIDECAR = os.path.join(HERE, "sidecar.py")
PEER = os.path.join(HERE, "longconn.py")
PROXY_UID = 1337  # istio-proxy: its own connections are not redirected
CAPTURE_BUFFER_KIB = 32768  # tcpdump -B for the captures of the in-pod and midstream scenarios
MIN_CONNECTIONS = 5  # the analyzer's default: fewer mTLS connections are "insufficient"
# every network namespace made here is named PREFIX...; a run deletes what it finds under its
# prefix first (leftovers of an aborted run). Two runs at once (say, a live test importing this
# module and a regeneration) must use different prefixes: MESHWATCH_NETNS_PREFIX=mw2- ...
NETNS = os.environ.get("MESHWATCH_NETNS_PREFIX", "mw-")
POD_GATEWAY = "169.254.1.1"  # a routed pod's next hop (Calico's): answered by proxy ARP
# istio-iptables' nat rules for a sidecar (iptables-restore input, as istio-iptables applies them;
# without the DNS, tproxy and exclusion options): inbound TCP to 15006 except Istio's own ports,
# outbound TCP of everyone but istio-proxy (uid/gid 1337) to 15001, Envoy's inbound leg from
# 127.0.0.6 and loopback traffic left alone.
ISTIO_IPTABLES = """*nat
:ISTIO_INBOUND - [0:0]
:ISTIO_IN_REDIRECT - [0:0]
:ISTIO_OUTPUT - [0:0]
:ISTIO_REDIRECT - [0:0]
-A PREROUTING -p tcp -j ISTIO_INBOUND
-A OUTPUT -p tcp -j ISTIO_OUTPUT
-A ISTIO_INBOUND -p tcp --dport 15008 -j RETURN
-A ISTIO_INBOUND -p tcp --dport 15090 -j RETURN
-A ISTIO_INBOUND -p tcp --dport 15021 -j RETURN
-A ISTIO_INBOUND -p tcp --dport 15020 -j RETURN
-A ISTIO_INBOUND -p tcp -j ISTIO_IN_REDIRECT
-A ISTIO_IN_REDIRECT -p tcp -j REDIRECT --to-ports 15006
-A ISTIO_OUTPUT -s 127.0.0.6/32 -o lo -j RETURN
-A ISTIO_OUTPUT ! -d 127.0.0.1/32 -o lo -m owner --uid-owner 1337 -j ISTIO_IN_REDIRECT
-A ISTIO_OUTPUT -o lo -m owner ! --uid-owner 1337 -j RETURN
-A ISTIO_OUTPUT -m owner --uid-owner 1337 -j RETURN
-A ISTIO_OUTPUT -m owner --gid-owner 1337 -j RETURN
-A ISTIO_OUTPUT -d 127.0.0.1/32 -j RETURN
-A ISTIO_OUTPUT -j ISTIO_REDIRECT
-A ISTIO_REDIRECT -p tcp -j REDIRECT --to-ports 15001
COMMIT
"""


def sh(*args, check=True, **kw):
    return subprocess.run(list(args), check=check, **kw)


def ns(name, *args, **kw):
    return sh("ip", "netns", "exec", name, *args, **kw)


class Lab:
    """A node namespace with a bridge, pods attached to it, and the connections made. With
    routed=True there is no bridge: each pod has a /32 behind its own veth, a default route via
    a link-local next hop that the node answers by proxy ARP, and the node routes between the
    veths (Calico-style)."""

    def __init__(self, tmp, v6=False, node=NETNS + "node", bridge_ip="10.244.1.1", routed=False):
        self.tmp, self.v6, self.node, self.bridge_ip = tmp, v6, node, bridge_ip
        self.routed = routed
        self.node_ips = None  # the node's addresses in the workloads file (default: the bridge's)
        self.services = []  # the workloads file's services: lines
        self.pods = {}  # "ns/name" -> (netns, ip)
        self.servers = []
        self.connections = []  # (source, destination, port, security)
        self.mesh = {}  # "ns/name" -> "sidecar" | "none", written to the workloads file
        self.sidecar_modes = {}  # client "ns/name" -> {destination "ns/name": "mtls" | "disable"}
        self.cleanup()
        sh("ip", "netns", "add", node)
        if routed:
            ns(node, "ip", "link", "set", "lo", "up")
            ns(node, "sysctl", "-qw", "net.ipv4.ip_forward=1")
            return
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
            if name.startswith(NETNS):
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
        netns = NETNS + workload.replace("/", "-")
        host_if = f"v{index}"
        ip4 = f"10.244.1.{index}"
        ip6 = f"fd00:244::{index:x}"
        if self.routed:
            return self._routed_pod(workload, netns, host_if, ip4)
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

    def _routed_pod(self, workload, netns, host_if, ip4):
        """Calico's pod wiring: the pod's /32 on eth0, a default route via 169.254.1.1 (no
        such address exists: the node's veth answers its ARP by proxy), and a /32 route per
        pod on the node. The node's veth has no address."""
        sh("ip", "netns", "add", netns)
        ns(self.node, "ip", "link", "add", host_if, "type", "veth", "peer", "name", "eth0", "netns", netns)
        ns(self.node, "sysctl", "-qw", f"net.ipv4.conf.{host_if}.proxy_arp=1")
        ns(self.node, "sysctl", "-qw", f"net.ipv4.neigh.{host_if}.proxy_delay=0")
        ns(self.node, "ip", "link", "set", host_if, "up")
        ns(self.node, "ip", "route", "add", f"{ip4}/32", "dev", host_if)
        ns(netns, "ip", "link", "set", "lo", "up")
        ns(netns, "ip", "addr", "add", f"{ip4}/32", "dev", "eth0")
        ns(netns, "ip", "link", "set", "eth0", "up")
        ns(netns, "ip", "route", "add", POD_GATEWAY, "dev", "eth0", "scope", "link")
        ns(netns, "ip", "route", "add", "default", "via", POD_GATEWAY, "dev", "eth0")
        self.pods[workload] = (netns, ip4, ip4, "")
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

    # ---- Istio sidecars (pcaps/sidecar.py behind istio-iptables)

    def sidecar(self, workload, modes=None, services=None):
        """Start an emulated istio-proxy in the pod as uid/gid 1337 and install istio-iptables'
        nat rules; `modes` maps destination workloads to "mtls" (default) or "disable";
        `services` maps "ClusterIP:port" to the endpoint "podIP:targetPort" it connects to
        instead (Envoy load-balances to endpoints: its connections never carry a ClusterIP)."""
        netns, _a, ip4, _ip6 = self.pods[workload]
        ns_name, name = workload.split("/")
        self.sidecar_modes[workload] = modes or {}
        config = {"pod": {"ip": ip4, "name": f"{name}-xxx", "namespace": ns_name},
                  "destinations": {self.pods[d][2]: {"workload": d, "mode": (modes or {}).get(d, "mtls")}
                                   for d in self.pods if d != workload}}
        if services:
            config["services"] = services
        path = os.path.join(self.tmp, f"sidecar-{netns}.json")
        with open(path, "w") as f:
            json.dump(config, f)
        for readable in (path, self.cert, self.key):
            os.chmod(readable, 0o644)  # istio-proxy is not root
        os.chmod(self.tmp, 0o755)
        ns(netns, "iptables-restore", "--noflush", input=ISTIO_IPTABLES.encode())
        p = subprocess.Popen(["ip", "netns", "exec", netns, "setpriv", "--reuid", str(PROXY_UID),
                              "--regid", str(PROXY_UID), "--clear-groups", sys.executable, SIDECAR,
                              "--config", path, "--cert", self.cert, "--key", self.key],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.servers.append(p)
        self.mesh[workload] = "sidecar"
        for port in (15001, 15006, 15020, 15000):
            self.wait_listening(workload, port)

    def app_call(self, source, destination, port=APP_PORT, path="/ip"):
        """The app in `source` calls `destination` in plaintext (curl as root): with a sidecar
        the call is REDIRECTed to it and leaves the pod as mTLS, or plaintext when DISABLEd.
        One TCP connection between the pods either way."""
        r = ns(self.pods[source][0], "curl", "-s", "-m", "10", "-o", "/dev/null", "-w", "%{http_code}",
               f"http://{self._target(destination)}:{port}{path}", check=False, timeout=20,
               capture_output=True, text=True)
        if r.stdout != "200":
            raise RuntimeError(f"{source} -> {destination}:{port}: HTTP {r.stdout!r}")
        modes = self.sidecar_modes.get(source)
        secure = modes is not None and modes.get(destination, "mtls") == "mtls"
        self._record(source, destination, port, "istio_mtls" if secure else "plaintext")

    def local_fetch(self, workload):
        """What runs in a meshed pod besides the app: pilot-agent's merged metrics and Envoy's
        admin, both on 127.0.0.1 (local legs on lo, never pod-to-pod)."""
        for url in ("http://127.0.0.1:15020/stats/prometheus", "http://127.0.0.1:15000/ready"):
            r = ns(self.pods[workload][0], "curl", "-s", "-m", "5", "-o", "/dev/null", "-w", "%{http_code}",
                   url, check=False, timeout=20, capture_output=True, text=True)
            if r.stdout != "200":
                raise RuntimeError(f"{workload}: {url}: HTTP {r.stdout!r}")

    # ---- capture

    def capture(self, path, iface="br0", linktype=None, netns=None, nanos=False, buffer_kib=None,
                rotate_seconds=None):
        args = ["ip", "netns", "exec", netns or self.node, "tcpdump", "-i", iface, "--immediate-mode",
                "-U", "-s", "262144", "-w", path, "tcp or udp port 4789"]
        if rotate_seconds:
            # a new file (path is a strftime pattern) every N seconds; -Z root: tcpdump would
            # otherwise open the later files as its unprivileged user
            args[-1:-1] = ["-G", str(rotate_seconds), "-Z", "root"]
        if buffer_kib:
            # the default 2 MiB ring holds few 256 KiB blocks: "-i any" then drops packets
            args[-1:-1] = ["-B", str(buffer_kib)]
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

    def capture_pcapng(self, path, iface, netns):
        """dumpcap (pcapng, the interface's name in its IDB), run as root."""
        p = subprocess.Popen(["ip", "netns", "exec", netns, "dumpcap", "-q", "-i", iface, "-s", "262144",
                              "-B", "32", "-f", "tcp", "-w", path], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        line = p.stderr.readline()
        if b"Capturing on" not in line:
            raise RuntimeError(f"dumpcap did not start: {line!r}")
        time.sleep(0.2)
        return p

    @staticmethod
    def stop(p, sig=signal.SIGTERM):
        """Stop a capture; returns the packets the kernel dropped, as tcpdump or dumpcap says."""
        time.sleep(0.5)
        p.send_signal(sig)
        err = p.stderr.read().decode(errors="replace") if p.stderr else ""
        p.wait(timeout=10)
        m = (re.search(r"(\d+) packets? dropped by kernel", err)  # tcpdump
             or re.search(r"received/dropped on .*: \d+/(\d+)", err))  # dumpcap
        return int(m.group(1)) if m else 0

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
        mesh = f", mesh: {lab.mesh[w]}" if w in lab.mesh else ""
        lines.append(f"  - {{namespace: {n}, workload: {name}, service_account: {name}, "
                     f"ips: [{', '.join(json.dumps(i) for i in ips)}]{mesh}}}")
    if lab.node_ips is not None:
        lines += ["nodes:", f"  - {{name: node-1, ips: [{', '.join(lab.node_ips)}]}}"]
    else:
        lines += ["nodes:", f"  - {{name: node-1, ips: [{lab.bridge_ip}" + (", \"fd00:244::1\"" if lab.v6 else "") + "]}"]
    if lab.services:
        lines.append("services:")
        for svc in lab.services:
            ports = ", ".join(f"{{port: {p}, target_port: {t}}}" for p, t in svc["ports"])
            lines.append(f"  - {{namespace: {svc['namespace']}, name: {svc['name']}, "
                         f"cluster_ips: [{', '.join(svc['cluster_ips'])}], ports: [{ports}], "
                         f"workload: {svc['workload']}}}")
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")


def setup_migration(lab):
    """The Istio migration task's pods: sleep in foo and bar (sidecars), legacy (none), httpbin
    in foo and bar serving the app port, the health port and pilot-agent's port (15020, where
    Istio's default probe rewrite sends kubelet's HTTP probes)."""
    for w, i in MIGRATION_PODS:
        lab.pod(w, i)
    for w in ("foo/httpbin", "bar/httpbin"):
        for port in (APP_PORT, HEALTH_PORT, PILOT_AGENT_PORT):
            lab.serve(w, port)
    for w in ("foo/httpbin", "bar/httpbin"):
        for port in (APP_PORT, HEALTH_PORT, PILOT_AGENT_PORT):
            lab.wait_listening(w, port)


def migration_traffic(lab, after, rounds=3):
    """Before: legacy -> httpbin.foo in plaintext. After: legacy has a sidecar too. Kubelet
    probes come from the node on the health port and, rewritten by Istio, on 15020."""
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
        lab.plaintext("node:node-1", dst, PILOT_AGENT_PORT, "/app-health/httpbin/readyz")


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
    node_b = NETNS + "node-b"
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
    netns = NETNS + "foo-httpbin"
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


class Peer:
    """A pcaps/longconn.py process in a pod: one long-lived connection, driven step by step."""

    def __init__(self, lab, workload, *args, ready):
        self.p = subprocess.Popen(["ip", "netns", "exec", lab.pods[workload][0], sys.executable, PEER, *args],
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                  text=True, bufsize=1)
        lab.servers.append(self.p)
        self.expect(ready)

    def expect(self, prefix):
        line = self.p.stdout.readline().strip()
        if not line.startswith(prefix):
            raise RuntimeError(f"longconn.py: {line!r}, want {prefix}")
        return line[len(prefix):].strip()

    def do(self, command):
        self.p.stdin.write(command + "\n")
        self.p.stdin.flush()
        return self.expect("ok")

    def send(self, data):
        self.do("send " + data.hex())

    def recv(self, n):
        return bytes.fromhex(self.do(f"recv {n}"))


def expect_view(lab, connections, min_local=None):
    """What one vantage point must yield from the pod-to-pod connections it sees: edges, and
    verdicts derived from them (a plaintext or tls client blocks, with the client's mesh; at
    least MIN_CONNECTIONS mTLS connections and nothing else make a destination ready)."""
    verdicts = {}
    destinations = sorted({d for _s, d, _p, _sec in connections})
    for dest in destinations:
        inbound = [c for c in connections if c[1] == dest and not c[0].startswith("node:")]
        counts = {}
        for s, _d, p, sec in inbound:
            if sec in ("plaintext", "tls"):
                counts[(s, sec, p)] = counts.get((s, sec, p), 0) + 1
        if counts:
            verdicts[dest] = {"verdict": "blocked", "blockers": [
                {"source": s, "security": sec, "port": p, "connections": n, "client_mesh": lab.mesh.get(s, "none")}
                for (s, sec, p), n in sorted(counts.items())]}
        elif len(inbound) >= MIN_CONNECTIONS and all(c[3] == "istio_mtls" for c in inbound):
            verdicts[dest] = {"verdict": "ready"}
    # roll-ups, only where they follow from the above: a blocked workload blocks its namespace
    # and the mesh; all ready makes them ready; anything else is left unstated
    by_ns = {}
    for dest in destinations:
        by_ns.setdefault(dest.split("/")[0], []).append(verdicts.get(dest, {}).get("verdict"))
    namespaces = {n: "blocked" if "blocked" in vs else "ready" for n, vs in by_ns.items()
                  if "blocked" in vs or all(v == "ready" for v in vs)}
    expected = {"edges": edges_of(connections), "verdicts": verdicts, "namespaces": namespaces}
    if "blocked" in namespaces.values():
        expected["mesh"] = "blocked"
    elif by_ns and len(namespaces) == len(by_ns):
        expected["mesh"] = "ready"
    if min_local is not None:
        expected["min_local_connections"] = min_local
    return expected


IN_POD_PODS = [("foo/httpbin", 11), ("foo/sleep", 12), ("bar/httpbin", 21), ("legacy/sleep", 31)]


def scenario_in_pod(lab, out):
    """One run seen from seven vantage points: inside the client pod foo/sleep and the server pod
    foo/httpbin (eth0, lo, any), and the node's bridge. foo/sleep, foo/httpbin and bar/httpbin
    have sidecars (istio-iptables + pcaps/sidecar.py); foo/sleep's sidecar talks plaintext to
    bar/httpbin (DestinationRule DISABLE); legacy/sleep has none. On lo: the app's connections
    REDIRECTed to 15001, Envoy's inbound legs from 127.0.0.6, pilot-agent's 15020, Envoy's 15000;
    none of them pod-to-pod."""
    for w, i in IN_POD_PODS:
        lab.pod(w, i)
    for w in ("foo/httpbin", "bar/httpbin"):
        lab.serve(w, APP_PORT)  # the app: plaintext HTTP behind the sidecar
        lab.wait_listening(w, APP_PORT)
    lab.sidecar("foo/sleep", {"bar/httpbin": "disable"})
    lab.sidecar("foo/httpbin")
    lab.sidecar("bar/httpbin")
    lab.mesh["legacy/sleep"] = "none"
    client, server = lab.pods["foo/sleep"][0], lab.pods["foo/httpbin"][0]
    d = os.path.dirname(out)

    def path(name):
        return os.path.join(d, name)

    def tcpdump(name, netns=None, **kw):
        return lab.capture(path(name), netns=netns, buffer_kib=CAPTURE_BUFFER_KIB, **kw)

    client_sees = lambda c: c[0] == "foo/sleep"  # noqa: E731
    server_sees = lambda c: c[1] == "foo/httpbin"  # noqa: E731
    nothing = lambda c: False  # noqa: E731  on lo: no pod-to-pod connection
    caps = [  # (file, capture process, the recorded connections it sees, whose local legs it has)
        # tcpdump 4.99 writes cooked v2 for "any" unless told: v1 in the client pod, v2 in the server
        ("in-pod-client-any.pcap", tcpdump("in-pod-client-any.pcap", client, iface="any", linktype="LINUX_SLL"),
         client_sees, "client"),
        ("in-pod-client-lo.pcap", tcpdump("in-pod-client-lo.pcap", client, iface="lo"), nothing, "client"),
        ("in-pod-client-eth0.pcap", tcpdump("in-pod-client-eth0.pcap", client, iface="eth0"), client_sees, None),
        ("in-pod-server-any.pcap", tcpdump("in-pod-server-any.pcap", server, iface="any", linktype="LINUX_SLL2"),
         server_sees, "server"),
        ("in-pod-server-lo.pcapng", lab.capture_pcapng(path("in-pod-server-lo.pcapng"), "lo", server),
         nothing, "server"),
        ("in-pod-server-eth0.pcap", tcpdump("in-pod-server-eth0.pcap", server, iface="eth0"), server_sees, None),
        ("in-pod-node.pcap", tcpdump("in-pod-node.pcap"), lambda c: True, None),
    ]
    for i in range(6):
        lab.app_call("foo/sleep", "foo/httpbin")  # REDIRECTed to its sidecar: mTLS
        if i % 2 == 0:
            lab.app_call("legacy/sleep", "foo/httpbin")  # plaintext into httpbin's PERMISSIVE inbound
        if i % 3 == 0:
            lab.app_call("foo/sleep", "bar/httpbin")  # DISABLE: plaintext with metadata headers
        if i % 2 == 1:
            lab.local_fetch("foo/sleep")
            lab.local_fetch("foo/httpbin")
    for name, cap, _sees, _local in caps:
        if lab.stop(cap, signal.SIGINT if name.endswith(".pcapng") else signal.SIGTERM):
            raise RuntimeError(f"{name}: the capture dropped packets")
        os.chmod(path(name), 0o644)  # dumpcap writes 0600
    # every app connection of foo/sleep is REDIRECTed over lo; every connection into foo/httpbin
    # (mTLS or PERMISSIVE plaintext) reaches the app over lo from 127.0.0.6
    local = {"client": sum(c[0] == "foo/sleep" for c in lab.connections),
             "server": sum(c[1] == "foo/httpbin" for c in lab.connections), None: 0}
    return [(path(name), expect_view(lab, [c for c in lab.connections if sees(c)], local[side]))
            for name, _cap, sees, side in caps]


H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"


def h2_frame(kind, stream, payload, flags=0):
    return len(payload).to_bytes(3, "big") + bytes([kind, flags]) + stream.to_bytes(4, "big") + payload


def scenario_midstream(lab, out):
    """Long-lived connections opened before the capture starts (no SYN in the capture): an
    xDS-like TLS stream to istiod where the server pushes first, an HTTP/1.1 keep-alive
    connection that carries one more request, and a raw TCP connection where the server speaks
    first. No sidecars; nothing connects during the capture."""
    for w, i in (("foo/httpbin", 11), ("foo/sleep", 12), ("legacy/sleep", 31), ("istio-system/istiod", 41),
                 ("bar/db", 51)):
        lab.pod(w, i)
    istiod = Peer(lab, "istio-system/istiod", "server", "--port", "15012", "--tls", lab.cert, lab.key,
                  "--alpn", "h2", ready="listening")
    Peer(lab, "foo/httpbin", "http-server", "--port", str(APP_PORT), ready="listening")
    db = Peer(lab, "bar/db", "server", "--port", "5432", ready="listening")
    xds = Peer(lab, "foo/sleep", "client", "--connect", f"{lab.addr('istio-system/istiod')}:15012", "--tls",
               "--alpn", "h2", "--sni", "istiod.istio-system.svc", ready="connected")
    lab._record("foo/sleep", "istio-system/istiod", 15012, "unknown")
    hello = H2_PREFACE + h2_frame(4, 0, b"")
    xds.send(hello)
    istiod.recv(len(hello))
    istiod.send(h2_frame(4, 0, b"") + h2_frame(4, 0, b"", flags=1))
    xds.recv(18)
    web = Peer(lab, "legacy/sleep", "http-client", "--connect", f"{lab.addr('foo/httpbin')}:{APP_PORT}",
               ready="connected")
    web.do("get /ip")
    lab._record("legacy/sleep", "foo/httpbin", APP_PORT, "plaintext")
    psql = Peer(lab, "legacy/sleep", "client", "--connect", f"{lab.addr('bar/db')}:5432", ready="connected")
    psql.send(b"\x00\x00\x00\x08hi")
    db.recv(6)
    db.send(b"\x00\x00ok")
    psql.recv(4)
    lab._record("legacy/sleep", "bar/db", 5432, "unknown")
    time.sleep(0.5)  # delayed ACKs of the exchanges above go out before the capture starts
    cap = lab.capture(out, buffer_kib=CAPTURE_BUFFER_KIB)
    pushes = [h2_frame(0, 1, b"\x00" * 4 + bytes([0x0A, n]) + b"x" * n) for n in (40, 80, 120)]
    for frame in pushes:  # the server first: discovery responses on an open stream
        istiod.send(frame)
    xds.recv(sum(map(len, pushes)))
    acks = [h2_frame(0, 1, b"\x00" * 4 + b"\x0a\x05nonce" + bytes([i])) for i in range(2)]
    for frame in acks:
        xds.send(frame)
    istiod.recv(sum(map(len, acks)))
    if web.do("get /ip") != "200":
        raise RuntimeError("keep-alive GET failed")
    db.send(b"\x00\x01hello")  # the server first, not HTTP
    psql.recv(7)
    psql.send(b"\x00\x02world")
    db.recv(7)
    if lab.stop(cap):
        raise RuntimeError("midstream: the capture dropped packets")
    for peer in (xds, web, psql):
        peer.do("close")
    expected = expect_view(lab, lab.connections)
    expected["mid_stream_flows"] = 3
    return expected


# ---- a routed node with kube-proxy's Service NAT (issue 14)

NODE_IP = "10.0.0.5"  # the node's address on its external link
OUTSIDE_IP = "192.0.2.10"  # a host outside the cluster (not in the workloads file)
CLUSTER_IP, SERVICE_PORT, NODE_PORT = "10.96.0.50", 80, 30080
NAT_BACKEND = "10.244.1.21"  # foo/httpbin's pod: the Service's only endpoint
NAT_PODS = [("foo/httpbin", 21), ("foo/sleep", 12), ("legacy/sleep", 31)]
KUBE_PROBE_UA = "kube-probe/1.30"
# kube-proxy's iptables mode for one Service (foo/httpbin, port 80 -> targetPort 8000, nodePort
# 30080, one endpoint), as iptables-save shows it with readable chain names. Service portals in
# PREROUTING (pods' traffic) and OUTPUT (the node's own); NodePort traffic is marked and
# MASQUERADEd to the node's address, as is ClusterIP traffic from outside the pod CIDR. Unlike
# kube-proxy, no --random-fully: conntrack keeps the client's source port where it can, as NAT
# without port randomisation does.
KUBE_PROXY_IPTABLES = f"""*nat
:KUBE-SERVICES - [0:0]
:KUBE-NODEPORTS - [0:0]
:KUBE-POSTROUTING - [0:0]
:KUBE-MARK-MASQ - [0:0]
:KUBE-SVC-FOO-HTTPBIN-HTTP - [0:0]
:KUBE-EXT-FOO-HTTPBIN-HTTP - [0:0]
:KUBE-SEP-FOO-HTTPBIN-1 - [0:0]
-A PREROUTING -m comment --comment "kubernetes service portals" -j KUBE-SERVICES
-A OUTPUT -m comment --comment "kubernetes service portals" -j KUBE-SERVICES
-A POSTROUTING -m comment --comment "kubernetes postrouting rules" -j KUBE-POSTROUTING
-A KUBE-MARK-MASQ -j MARK --set-xmark 0x4000/0x4000
-A KUBE-POSTROUTING -m mark ! --mark 0x4000/0x4000 -j RETURN
-A KUBE-POSTROUTING -j MARK --set-xmark 0x0/0x4000
-A KUBE-POSTROUTING -m comment --comment "kubernetes service traffic requiring SNAT" -j MASQUERADE
-A KUBE-SERVICES -d {CLUSTER_IP}/32 -p tcp -m comment --comment "foo/httpbin:http cluster IP" -m tcp --dport {SERVICE_PORT} -j KUBE-SVC-FOO-HTTPBIN-HTTP
-A KUBE-SERVICES -m comment --comment "kubernetes service nodeports" -m addrtype --dst-type LOCAL -j KUBE-NODEPORTS
-A KUBE-NODEPORTS -p tcp -m comment --comment "foo/httpbin:http" -m tcp --dport {NODE_PORT} -j KUBE-EXT-FOO-HTTPBIN-HTTP
-A KUBE-EXT-FOO-HTTPBIN-HTTP -m comment --comment "masquerade traffic for foo/httpbin:http external destinations" -j KUBE-MARK-MASQ
-A KUBE-EXT-FOO-HTTPBIN-HTTP -j KUBE-SVC-FOO-HTTPBIN-HTTP
-A KUBE-SVC-FOO-HTTPBIN-HTTP ! -s 10.244.0.0/16 -d {CLUSTER_IP}/32 -p tcp -m comment --comment "foo/httpbin:http cluster IP" -m tcp --dport {SERVICE_PORT} -j KUBE-MARK-MASQ
-A KUBE-SVC-FOO-HTTPBIN-HTTP -m comment --comment "foo/httpbin:http -> {NAT_BACKEND}:{APP_PORT}" -j KUBE-SEP-FOO-HTTPBIN-1
-A KUBE-SEP-FOO-HTTPBIN-1 -s {NAT_BACKEND}/32 -m comment --comment "foo/httpbin:http" -j KUBE-MARK-MASQ
-A KUBE-SEP-FOO-HTTPBIN-1 -p tcp -m comment --comment "foo/httpbin:http" -m tcp -j DNAT --to-destination {NAT_BACKEND}:{APP_PORT}
COMMIT
"""
TCP_PROBE = "import socket, sys; socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=5).close()"


def http_get(netns, url, *headers):
    """curl, one TCP connection; the call must answer 200."""
    args = ["curl", "-s", "-m", "10", "-o", "/dev/null", "-w", "%{http_code}"]
    for h in headers:
        args += ["-H", h]
    r = ns(netns, *args, url, check=False, timeout=20, capture_output=True, text=True)
    if r.stdout != "200":
        raise RuntimeError(f"{netns}: {url}: HTTP {r.stdout!r}")


def expect_nat_view(made, sees, views):
    """What one vantage point of the nat scenario must yield. `made` holds every connection as
    made: the client as the earliest view names it, the backend port, its class, the blocker
    kind (None: no blocker), whether the client sent payload, and in how many distinct views
    (address/port pairs: pre- and post-NAT) each capture holds it (m[views])."""
    seen = [m for m in made if sees(m)]
    payload = [m for m in seen if m["payload"]]
    counts, blockers = {}, {}
    for m in payload:
        k = (m["source"], "foo/httpbin", m["port"], m["security"])
        counts[k] = counts.get(k, 0) + 1
        if m["kind"]:
            b = (m["source"], m["security"], m["port"], m["kind"], m["client_mesh"])
            blockers[b] = blockers.get(b, 0) + 1
    edges = [{"source": s, "destination": d, "port": p, "security": sec, "connections": n}
             for (s, d, p, sec), n in sorted(counts.items())]
    verdict = {"verdict": "blocked", "blockers": [
        {"source": s, "security": sec, "port": p, "connections": n, "client_mesh": mesh, "kind": kind}
        for (s, sec, p, kind, mesh), n in sorted(blockers.items())]}
    return {"edges": edges, "verdicts": {"foo/httpbin": verdict}, "namespaces": {"foo": "blocked"},
            "mesh": "blocked", "summary_connections": len(payload),
            "attempts": sum(not m["payload"] for m in seen),
            "min_views": sum(m[views] > 1 for m in seen)}


def scenario_nat(lab, out):
    """A routed node (Calico-style: /32 per pod, proxy ARP, no bridge) with kube-proxy's DNAT
    for the ClusterIP Service foo/httpbin (10.96.0.50:80 -> 10.244.1.21:8000) and its NodePort
    30080 (SNAT to the node), an outside host on the node's external link, and the node itself
    as a client: a hostNetwork curl, kubelet HTTP probes to the app port (probe rewrite off) and
    to pilot-agent's 15020 (Istio's rewrite), and kubelet TCP probes (connect, close: attempts).
    foo/sleep's sidecar dials the Service and connects to the endpoint as Envoy does (mTLS pod
    to pod); legacy/sleep (no sidecar) dials the ClusterIP in plaintext. Captured at once on the
    node (-i any: every forwarded packet on two veths, pre- and post-NAT) and inside
    legacy/sleep (-i any: only the ClusterIP view exists there)."""
    traffic = setup_nat(lab)
    d = os.path.dirname(out)
    node_cap = os.path.join(d, "nat-node-any.pcap")
    pod_cap = os.path.join(d, "nat-client-pod.pcap")
    caps = [(node_cap, lab.capture(node_cap, iface="any", linktype="LINUX_SLL2", buffer_kib=CAPTURE_BUFFER_KIB)),
            (pod_cap, lab.capture(pod_cap, iface="any", linktype="LINUX_SLL", netns=lab.pods["legacy/sleep"][0],
                                  buffer_kib=CAPTURE_BUFFER_KIB))]
    made = traffic()
    for path, cap in caps:
        if lab.stop(cap):
            raise RuntimeError(f"{path}: the capture dropped packets")
    return [(node_cap, expect_nat_view(made, lambda m: True, "node_views")),
            (pod_cap, expect_nat_view(made, lambda m: m["client_pod"], "pod_views"))]


def setup_nat(lab):
    """The nat scenario's node, pods, outside host, kube-proxy rules, servers and sidecars (see
    scenario_nat). Returns its traffic: a function that makes the connections (one run) and
    returns every connection made so far as expect_nat_view's `made`."""
    lab.node_ips = [NODE_IP]
    lab.services = [{"namespace": "foo", "name": "httpbin", "cluster_ips": [CLUSTER_IP],
                     "ports": [(SERVICE_PORT, APP_PORT)], "workload": "httpbin"}]
    node, outside = lab.node, NETNS + "outside"
    for w, i in NAT_PODS:
        lab.pod(w, i)
    # the node's external link, to a host outside the cluster
    sh("ip", "netns", "add", outside)
    ns(node, "ip", "link", "add", "ext0", "type", "veth", "peer", "name", "eth0", "netns", outside)
    ns(node, "ip", "addr", "add", f"{NODE_IP}/24", "dev", "ext0")
    ns(node, "ip", "link", "set", "ext0", "up")
    ns(outside, "ip", "link", "set", "lo", "up")
    ns(outside, "ip", "addr", "add", f"{OUTSIDE_IP}/24", "dev", "eth0")
    ns(outside, "ip", "link", "set", "eth0", "up")
    ns(outside, "ip", "route", "add", "10.0.0.0/24", "dev", "eth0")
    ns(node, "ip", "route", "add", "192.0.2.0/24", "dev", "ext0")
    # a default route out of another interface is what makes proxy ARP answer for 169.254.1.1
    ns(node, "ip", "route", "add", "default", "via", OUTSIDE_IP, "dev", "ext0")
    ns(node, "iptables-restore", "--noflush", input=KUBE_PROXY_IPTABLES.encode())
    # foo/httpbin: the app on 8000 behind its sidecar (PERMISSIVE inbound); pilot-agent's status
    # port 15020 reachable on the pod IP for kubelet's rewritten probes (istio-iptables leaves
    # 15020 alone; sidecar.py holds 127.0.0.1:15020 for the pod's own merged-metrics scrape)
    httpbin = lab.pods["foo/httpbin"][0]
    lab.serve("foo/httpbin", APP_PORT)
    p = subprocess.Popen(["ip", "netns", "exec", httpbin, sys.executable, SERVER, "--port", str(PILOT_AGENT_PORT),
                          "--cert", lab.cert, "--key", lab.key, "--bind", NAT_BACKEND],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    lab.servers.append(p)
    lab.wait_listening("foo/httpbin", APP_PORT)
    lab.sidecar("foo/httpbin")
    lab.sidecar("foo/sleep", services={f"{CLUSTER_IP}:{SERVICE_PORT}": f"{NAT_BACKEND}:{APP_PORT}"})
    lab.mesh["legacy/sleep"] = "none"
    lab.wait_listening("foo/httpbin", PILOT_AGENT_PORT)
    sleep, legacy = lab.pods["foo/sleep"][0], lab.pods["legacy/sleep"][0]
    made = []

    def record(source, port, security, kind, views, payload=True, client_pod=False):
        # views: on the node (the client pod's capture has one view of what it sees)
        made.append({"source": source, "port": port, "security": security, "kind": kind, "node_views": views,
                     "pod_views": 1, "payload": payload, "client_pod": client_pod, "client_mesh": "none"})
        if payload:
            lab._record(source, "foo/httpbin", port, security)

    service_url = f"http://{CLUSTER_IP}:{SERVICE_PORT}/ip"
    backend = f"http://{NAT_BACKEND}:{APP_PORT}"

    def mtls():  # the app dials the Service; its sidecar connects to the endpoint: one view
        http_get(sleep, service_url)
        record("foo/sleep", APP_PORT, "istio_mtls", None, 1)

    def legacy_plaintext():  # DNAT on the node: the ClusterIP view, then the backend view
        http_get(legacy, service_url)
        record("legacy/sleep", APP_PORT, "plaintext", "no_sidecar", 2, client_pod=True)

    def nodeport():  # outside -> node:30080, then (DNAT + MASQUERADE) node -> pod:8000
        http_get(outside, f"http://{NODE_IP}:{NODE_PORT}/ip")
        record(OUTSIDE_IP, APP_PORT, "plaintext", "nodeport", 2)

    def host_network():  # a hostNetwork pod's curl: from the node's address
        http_get(node, f"{backend}/ip")
        record("node:node-1", APP_PORT, "plaintext", "node", 1)

    def kube_probe():  # kubelet's HTTP probe with the probe rewrite off: the app port
        http_get(node, f"{backend}/healthz", f"User-Agent: {KUBE_PROBE_UA}", "Connection: close")
        record("node:node-1", APP_PORT, "plaintext", "kubelet_probe", 1)

    def rewritten_probe():  # Istio's rewrite: kubelet probes pilot-agent's 15020 (exempt)
        http_get(node, f"http://{NAT_BACKEND}:{PILOT_AGENT_PORT}/app-health/httpbin/readyz",
                 f"User-Agent: {KUBE_PROBE_UA}", "Connection: close")
        record("node:node-1", PILOT_AGENT_PORT, "plaintext", None, 1)

    def tcp_probe():  # kubelet's TCP probe: connect and close, no payload (an attempt)
        ns(node, sys.executable, "-c", TCP_PROBE, NAT_BACKEND, str(APP_PORT), timeout=20)
        record("node:node-1", APP_PORT, "unknown", None, 1, payload=False)

    def traffic():
        for i in range(6):
            mtls()
            if i % 2 == 0:
                legacy_plaintext()
            if i < 2:
                nodeport()
                host_network()
                kube_probe()
                rewritten_probe()
            if i < 3:
                tcp_probe()
        return made

    return traffic


# ---- multi-capture cases (pcaps/multi/): several inputs analyzed together

MULTI = "multi"  # beside the captures: NAME.expected.json with "inputs" relative to the captures' dir


def write_json(path, obj):
    with open(path, "w") as f:
        json.dump(obj, f, indent=2, sort_keys=True)
        f.write("\n")


def next_second(after=0.05):
    """Sleep until just past the next whole second of the wall clock."""
    now = time.time()
    time.sleep(int(now) + 1 + after - now)


def scenario_rotated(lab, out):
    """One run captured on the bridge by tcpdump -G 1 into a directory of time-named files
    (multi/rotated/rotated-YYYYmmdd-HHMMSS.pcap): ten connections in four bursts two seconds
    apart, one of them a keep-alive HTTP connection opened in the first burst and used again in
    the last (its packets lie three files apart), one a connect-and-close attempt. tcpdump opens
    the next file with the first packet of a later wall-clock second than the current file's:
    each burst starts just past a whole second and lasts well under one, so each burst is one
    file, and the file opened at the start holds no packet (header only): five files. Writes
    multi/directory.expected.json (input: the directory) and its workloads file."""
    d = os.path.join(os.path.dirname(out), MULTI)
    rotated = os.path.join(d, "rotated")
    os.makedirs(rotated, exist_ok=True)
    for old in os.listdir(rotated):
        os.unlink(os.path.join(rotated, old))
    for w, i in (("foo/httpbin", 11), ("foo/sleep", 12), ("legacy/sleep", 31)):
        lab.pod(w, i)
    lab.mesh.update({"foo/httpbin": "sidecar", "foo/sleep": "sidecar", "legacy/sleep": "none"})
    lab.serve("foo/httpbin", APP_PORT)
    lab.wait_listening("foo/httpbin", APP_PORT)
    keepalive_port = 8080
    Peer(lab, "foo/httpbin", "http-server", "--port", str(keepalive_port), ready="listening")
    cap = lab.capture(os.path.join(rotated, "rotated-%Y%m%d-%H%M%S.pcap"), rotate_seconds=1)
    next_second()
    web = Peer(lab, "legacy/sleep", "http-client", "--connect", f"{lab.addr('foo/httpbin')}:{keepalive_port}",
               ready="connected")
    if web.do("get /ip") != "200":
        raise RuntimeError("keep-alive GET failed")
    lab._record("legacy/sleep", "foo/httpbin", keepalive_port, "plaintext")
    lab.mtls("foo/sleep", "foo/httpbin")
    lab.plaintext("legacy/sleep", "foo/httpbin")
    next_second()
    next_second()
    lab.mtls("foo/sleep", "foo/httpbin")
    lab.mtls("foo/sleep", "foo/httpbin")
    lab.plaintext("legacy/sleep", "foo/httpbin")
    next_second()
    next_second()
    lab.mtls("foo/sleep", "foo/httpbin")
    lab.mtls("foo/sleep", "foo/httpbin")
    lab.plaintext("legacy/sleep", "foo/httpbin")
    # connect and close: an attempt (to the keep-alive server, which then closes without a
    # word; permissive_server.py would answer even an empty request)
    ns(lab.pods["legacy/sleep"][0], sys.executable, "-c", TCP_PROBE, lab.addr("foo/httpbin"), str(keepalive_port),
       timeout=20)
    next_second()
    next_second()
    if web.do("get /ip") != "200":  # the same connection, files later
        raise RuntimeError("keep-alive GET failed")
    web.do("close")
    if lab.stop(cap):
        raise RuntimeError("rotated: the capture dropped packets")
    files = sorted(os.listdir(rotated))
    if len(files) != 5:  # a burst that outlasted its second (a loaded machine): run it again
        raise RuntimeError(f"rotated: {len(files)} files, want 5")
    for name in files:
        os.chmod(os.path.join(rotated, name), 0o644)
    workloads_yaml(lab, os.path.join(d, "directory.workloads.yaml"))
    expected = expect_view(lab, lab.connections)
    for v in expected["verdicts"].values():
        for b in v.get("blockers", []):
            b["kind"] = blocker_kind(b)
    expected.update({"inputs": [f"{MULTI}/rotated"], "workloads": "directory.workloads.yaml", "files": len(files),
                     "summary_connections": len(lab.connections), "attempts": 1, "min_views": 0})
    write_json(os.path.join(d, "directory.expected.json"), expected)
    print(f"rotated: {len(lab.connections)} connections and 1 attempt in {len(files)} files -> {rotated}")
    return []


def blocker_kind(b):
    """The kind of a blocker from a pod (or an unknown address not behind a NodePort)."""
    if b["security"] == "tls":
        return "app_tls"
    return "sidecar_plaintext" if b.get("client_mesh") == "sidecar" else "no_sidecar"


def load_expected(stem):
    with open(os.path.join(OUT, f"{stem}.expected.json")) as f:
        return json.load(f)


def copy_workloads(stem, name):
    with open(os.path.join(OUT, f"{stem}.workloads.yaml")) as f:
        text = f.read()
    with open(os.path.join(OUT, MULTI, f"{name}.workloads.yaml"), "w") as f:
        f.write(text)
    return f"{name}.workloads.yaml"


def verdicts_of(edges, mesh_of):
    """Workload verdicts from summed pod-to-pod edges (sources are pods; node sources only on
    exempt ports), by the rules of expect_view; blockers with the client's mesh and kind."""
    verdicts, by_ns = {}, {}
    for dest in sorted({e["destination"] for e in edges}):
        inbound = [e for e in edges if e["destination"] == dest and not e["source"].startswith("node:")]
        blockers = [{"source": e["source"], "security": e["security"], "port": e["port"],
                     "connections": e["connections"], "client_mesh": mesh_of(e)}
                    for e in inbound if e["security"] in ("plaintext", "tls")]
        for b in blockers:
            b["kind"] = blocker_kind(b)
        if blockers:
            verdicts[dest] = {"verdict": "blocked", "blockers": blockers}
        elif sum(e["connections"] for e in inbound) >= MIN_CONNECTIONS:
            verdicts[dest] = {"verdict": "ready"}
        by_ns.setdefault(dest.split("/")[0], []).append(verdicts.get(dest, {}).get("verdict"))
    namespaces = {n: "blocked" if "blocked" in vs else "ready" for n, vs in by_ns.items()}
    return verdicts, namespaces, "blocked" if "blocked" in namespaces.values() else "ready"


def sum_edges(*edge_lists, combine=lambda a, b: a + b):
    counts = {}
    for edges in edge_lists:
        for e in edges:
            k = (e["source"], e["destination"], e["port"], e["security"])
            counts[k] = combine(counts[k], e["connections"]) if k in counts else e["connections"]
    return [{"source": s, "destination": d, "port": p, "security": sec, "connections": n}
            for (s, d, p, sec), n in sorted(counts.items())]


def derive_multi():
    """Cases of several inputs, from the captures and expectations generated above:
    two-vantages (the in-pod scenario's client and server eth0: the connections between them
    count once), same-file-twice (nat-node-any.pcap twice: as once), compressed (a gzip and a
    zstd copy of two captures of separate runs: their sum). multi/rotated and its expectation
    come from the rotated scenario."""
    d = os.path.join(OUT, MULTI)
    os.makedirs(d, exist_ok=True)
    # two vantage points of one run: every connection an edge holds is seen by the client pod
    # (source foo/sleep) or the server pod (destination foo/httpbin) or both, whole: the union
    # of two views of one edge is the larger count
    a, b = "in-pod-client-eth0", "in-pod-server-eth0"
    ea, eb = load_expected(a), load_expected(b)
    edges = sum_edges(ea["edges"], eb["edges"], combine=max)
    mesh = {(bl["source"], dest): bl["client_mesh"] for e in (ea, eb)
            for dest, v in e["verdicts"].items() for bl in v.get("blockers", [])}
    verdicts, namespaces, mesh_verdict = verdicts_of(edges, lambda e: mesh[(e["source"], e["destination"])])
    write_json(os.path.join(d, "two-vantages.expected.json"), {
        "inputs": [f"{a}.pcap", f"{b}.pcap"], "workloads": copy_workloads(a, "two-vantages"),
        "edges": edges, "verdicts": verdicts, "namespaces": namespaces, "mesh": mesh_verdict,
        # both pods see the same addresses and ports (no NAT between them): one flow key, the
        # copies are duplicate packets, not views under another key
        "summary_connections": sum(e["connections"] for e in edges), "attempts": 0,
        "min_views": 0})
    # the same file twice: the same connections, counted once
    nat = load_expected("nat-node-any")
    twice = {k: v for k, v in nat.items() if k != "workloads"}
    twice.update({"inputs": ["nat-node-any.pcap", "nat-node-any.pcap"],
                  "workloads": copy_workloads("nat-node-any", "same-file-twice")})
    write_json(os.path.join(d, "same-file-twice.expected.json"), twice)
    # compressed copies of two runs that share their pods' addresses (ipv6's workloads file
    # names the IPv4 ones too): gzip and zstd, read together, count their sum
    a, b = "istio-migration-before", "ipv6"
    gz, zst = f"{MULTI}/{a}.pcap.gz", f"{MULTI}/{b}.pcap.zst"
    with open(os.path.join(OUT, gz), "wb") as f:
        sh("gzip", "-9", "-n", "-c", os.path.join(OUT, f"{a}.pcap"), stdout=f)
    with open(os.path.join(OUT, zst), "wb") as f:
        sh("zstd", "-19", "-q", "-c", os.path.join(OUT, f"{b}.pcap"), stdout=f)
    ea, eb = load_expected(a), load_expected(b)
    edges = sum_edges(ea["edges"], eb["edges"])
    verdicts, namespaces, mesh_verdict = verdicts_of(edges, lambda e: "none")  # no sidecar's headers
    write_json(os.path.join(d, "compressed.expected.json"), {
        "inputs": [gz, zst], "workloads": copy_workloads(b, "compressed"),
        "edges": edges, "verdicts": verdicts, "namespaces": namespaces, "mesh": mesh_verdict,
        "summary_connections": sum(e["connections"] for e in edges), "attempts": 0, "min_views": 0})
    print(f"multi: two-vantages, same-file-twice, compressed -> {d}")


SCENARIOS = {
    "istio-migration-before": (scenario_migration_before, {}),
    "istio-migration-after": (scenario_migration_after, {}),
    "any-cooked-v2": (scenario_any_cooked, {}),
    "ipv6": (scenario_ipv6, {"v6": True}),
    "split-clienthello": (scenario_split_hello, {}),
    "app-tls-h2c-hbone": (scenario_app_tls_h2c, {}),
    "vxlan-overlay": (scenario_vxlan, {}),
    "in-pod": (scenario_in_pod, {}),
    "midstream": (scenario_midstream, {}),
    "nat": (scenario_nat, {"routed": True}),
    "rotated": (scenario_rotated, {}),
}
# derived from the captures of the scenarios above, in this order
DERIVED = {"mixed-interfaces": lambda: derive_mixed_interfaces(), "multi": lambda: derive_multi()}


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
            result = fn(lab, out)
            # a scenario captured at several vantage points returns [(capture, expected)]
            views = result if isinstance(result, list) else [(out, result)]
            for path, expected in views:
                stem = os.path.splitext(os.path.basename(path))[0]
                workloads_yaml(lab, os.path.join(OUT, f"{stem}.workloads.yaml"))
                expected.setdefault("edges", edges_of(lab.connections))
                expected["workloads"] = f"{stem}.workloads.yaml"
                with open(os.path.join(OUT, f"{stem}.expected.json"), "w") as f:
                    json.dump(expected, f, indent=2, sort_keys=True)
                    f.write("\n")
                seen = sum(e["connections"] for e in expected["edges"])
                print(f"{name}: {seen} of {len(lab.connections)} connections -> {path}" if len(views) > 1
                      else f"{name}: {len(lab.connections)} connections -> {path}")
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
    names = args or list(SCENARIOS) + list(DERIVED)
    for n in names:
        if n in DERIVED:
            DERIVED[n]()  # from the captures of scenarios above
        elif n in SCENARIOS:
            run(n)
        else:
            sys.exit(f"unknown scenario {n}; known: {', '.join(list(SCENARIOS) + list(DERIVED))}")


if __name__ == "__main__":
    main()
