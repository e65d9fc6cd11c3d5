#!/usr/bin/env python3
"""An emulated Istio sidecar for pcaps/generate.py: runs inside a pod's network namespace as uid
and gid 1337 (istio-proxy), behind the istio-iptables rules generate.py installs, so the pod's
connections take the same paths through the kernel that Envoy's do.

- Outbound, 0.0.0.0:15001: the app's connections REDIRECTed by ISTIO_OUTPUT. Reads the original
  destination (SO_ORIGINAL_DST) and connects to it: "mtls" (default) with a client certificate,
  ALPN istio-peer-exchange,istio and SNI outbound_.PORT_._.NAME.NS.svc.cluster.local; "disable"
  in plaintext, adding the metadata-exchange headers (x-envoy-peer-metadata-id,
  x-envoy-peer-metadata) after the request line of the first request, as Istio does for HTTP.
- Inbound, 0.0.0.0:15006: connections REDIRECTed by ISTIO_INBOUND. Peeks the first byte (0x16:
  TLS, terminated with the server certificate; else plaintext, i.e. PERMISSIVE) and connects to
  the app at the original destination from 127.0.0.6, as Envoy does.
- pilot-agent and Envoy admin on 127.0.0.1:15020 and 127.0.0.1:15000: a tiny HTTP answer.

Bytes are piped both ways until either side closes; then both are closed. Stdlib only.
Usage: sidecar.py --config FILE --cert PEM --key PEM
  config: {"pod": {"ip": IP, "name": POD, "namespace": NS},
           "destinations": {IP: {"workload": "ns/name", "mode": "mtls"|"disable"}},
           "services": {"CLUSTER_IP:PORT": "ENDPOINT_IP:TARGET_PORT"}}   (services: optional)
  A Service's ClusterIP:port is connected to at its endpoint, as Envoy load-balances to the
  endpoints of a cluster; the SNI keeps the Service port, as Istio's does.
"""
import argparse
import base64
import json
import select
import socket
import socketserver
import ssl
import struct
import threading

OUTBOUND_PORT = 15001
INBOUND_PORT = 15006
AGENT_PORT = 15020
ADMIN_PORT = 15000
SO_ORIGINAL_DST = 80
INBOUND_SOURCE = "127.0.0.6"
CLIENT_ALPN = ["istio-peer-exchange", "istio"]
SERVER_ALPN = ["istio-peer-exchange", "istio", "h2", "http/1.1"]
IDLE_SECONDS = 30


def original_dst(sock):
    """The (ip, port) the connection was sent to before the nat table's REDIRECT."""
    raw = sock.getsockopt(socket.SOL_IP, SO_ORIGINAL_DST, 16)
    port = struct.unpack("!H", raw[2:4])[0]
    return socket.inet_ntoa(raw[4:8]), port


def pb_string(field, value):
    """A length-delimited protobuf field."""
    data = value if isinstance(value, bytes) else value.encode()
    out, n = bytearray([field << 3 | 2]), len(data)
    while n >= 0x80:
        out.append(n & 0x7F | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out) + data


def peer_metadata(pod):
    """x-envoy-peer-metadata: a google.protobuf.Struct of the node's labels, base64."""
    fields = {"NAME": pod["name"], "NAMESPACE": pod["namespace"],
              "WORKLOAD_NAME": pod["name"].rsplit("-", 1)[0], "CLUSTER_ID": "Kubernetes",
              "MESH_ID": "cluster.local", "SERVICE_ACCOUNT": "default"}
    struct_pb = b"".join(pb_string(1, pb_string(1, k) + pb_string(2, pb_string(3, v)))
                         for k, v in fields.items())
    return base64.b64encode(struct_pb).decode()


def metadata_headers(pod):
    node_id = f"sidecar~{pod['ip']}~{pod['name']}.{pod['namespace']}~{pod['namespace']}.svc.cluster.local"
    return (f"x-envoy-peer-metadata-id: {node_id}\r\n"
            f"x-envoy-peer-metadata: {peer_metadata(pod)}\r\n").encode()


def recv_some(sock):
    """What is readable now: b"" at end of stream, None if nothing is (a TLS record not yet
    complete, or only post-handshake messages)."""
    sock.setblocking(False)
    try:
        chunks = [sock.recv(65536)]
        while isinstance(sock, ssl.SSLSocket) and chunks[-1] and sock.pending():
            chunks.append(sock.recv(65536))
        return b"".join(chunks)
    except (ssl.SSLWantReadError, ssl.SSLWantWriteError, BlockingIOError):
        return None
    finally:
        sock.setblocking(True)


def pipe(a, b, rewrite=None):
    """Copy a<->b until either side ends; `rewrite` may transform the first bytes from a."""
    pending = b""
    try:
        while True:
            ready, _, _ = select.select([a, b], [], [], IDLE_SECONDS)
            if not ready:
                return
            for src in ready:
                dst = b if src is a else a
                data = recv_some(src)
                if data is None:
                    continue
                if not data:
                    if pending:
                        dst.sendall(pending)
                    return
                if src is a and rewrite is not None:
                    pending += data
                    out = rewrite(pending)
                    if out is None:
                        continue  # the request line is not complete yet
                    data, pending, rewrite = out, b"", None
                dst.sendall(data)
    except (OSError, ssl.SSLError):
        return
    finally:
        for s in (a, b):
            try:
                s.close()
            except OSError:
                pass


def insert_after_request_line(headers):
    def rewrite(buf):
        end = buf.find(b"\r\n")
        if end < 0:
            return None if len(buf) < 8192 else buf
        return buf[:end + 2] + headers + buf[end + 2:]
    return rewrite


class Sidecar:
    def __init__(self, config, cert, key):
        self.pod = config["pod"]
        self.destinations = config.get("destinations", {})
        self.services = config.get("services", {})
        self.client_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        self.client_ctx.check_hostname = False
        self.client_ctx.verify_mode = ssl.CERT_NONE
        self.client_ctx.load_cert_chain(cert, key)
        self.client_ctx.set_alpn_protocols(CLIENT_ALPN)
        self.server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.server_ctx.load_cert_chain(cert, key)
        self.server_ctx.set_alpn_protocols(SERVER_ALPN)
        self.server_ctx.verify_mode = ssl.CERT_OPTIONAL
        self.server_ctx.load_verify_locations(cert)

    def outbound(self, app):
        ip, port = original_dst(app)
        service_port = port
        endpoint = self.services.get(f"{ip}:{port}")
        if endpoint:
            ip, port = endpoint.rsplit(":", 1)[0], int(endpoint.rsplit(":", 1)[1])
        dest = self.destinations.get(ip, {})
        up = socket.create_connection((ip, port), timeout=10)
        if dest.get("mode", "mtls") == "disable":
            pipe(app, up, insert_after_request_line(metadata_headers(self.pod)))
            return
        ns, name = dest.get("workload", "default/unknown").split("/")
        sni = f"outbound_.{service_port}_._.{name}.{ns}.svc.cluster.local"
        up = self.client_ctx.wrap_socket(up, server_hostname=sni)
        pipe(app, up)

    def inbound(self, peer):
        ip, port = original_dst(peer)
        peer.settimeout(10)
        first = peer.recv(1, socket.MSG_PEEK)
        if first == b"\x16":
            peer = self.server_ctx.wrap_socket(peer, server_side=True)
        app = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        app.settimeout(10)
        app.bind((INBOUND_SOURCE, 0))
        app.connect((ip, port))
        pipe(peer, app)

    @staticmethod
    def local(conn, port):
        """pilot-agent's merged metrics (15020) and Envoy's admin (15000)."""
        conn.settimeout(5)
        buf = b""
        while b"\r\n\r\n" not in buf:
            data = conn.recv(4096)
            if not data:
                return
            buf += data
        body = (b"# TYPE istio_agent_go_goroutines gauge\nistio_agent_go_goroutines 42\n"
                if port == AGENT_PORT else b"LIVE\n")
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: "
                     + str(len(body)).encode() + b"\r\nConnection: close\r\n\r\n" + body)


def serve(bind, port, handle):
    class Handler(socketserver.BaseRequestHandler):
        def handle(self):
            try:
                handle(self.request)
            except (OSError, ssl.SSLError):
                pass

    class Server(socketserver.ThreadingTCPServer):
        allow_reuse_address = True
        daemon_threads = True

    srv = Server((bind, port), Handler)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    return t


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", required=True)
    ap.add_argument("--cert", required=True)
    ap.add_argument("--key", required=True)
    a = ap.parse_args()
    with open(a.config) as f:
        config = json.load(f)
    car = Sidecar(config, a.cert, a.key)
    threads = [serve("0.0.0.0", OUTBOUND_PORT, car.outbound),
               serve("0.0.0.0", INBOUND_PORT, car.inbound),
               serve("127.0.0.1", AGENT_PORT, lambda c: car.local(c, AGENT_PORT)),
               serve("127.0.0.1", ADMIN_PORT, lambda c: car.local(c, ADMIN_PORT))]
    for t in threads:
        t.join()


if __name__ == "__main__":
    main()
