#!/usr/bin/env python3
"""A PERMISSIVE-style test server: on one port it accepts TLS (what a sidecar's mTLS looks like
from the wire, ALPN negotiated from --alpn) and plaintext HTTP, telling them apart by the first
byte the client sends, as Envoy's tls_inspector does. Answers every request with a short HTTP/1.1
response and closes."""
import argparse
import socket
import socketserver
import ssl

RESPONSE = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 3\r\nConnection: close\r\n\r\nok\n"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--bind", default="0.0.0.0")
    ap.add_argument("--cert", required=True)
    ap.add_argument("--key", required=True)
    ap.add_argument("--alpn", default="istio-peer-exchange,istio,h2,http/1.1")
    a = ap.parse_args()
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(a.cert, a.key)
    ctx.set_alpn_protocols(a.alpn.split(","))
    ctx.verify_mode = ssl.CERT_OPTIONAL
    ctx.load_verify_locations(a.cert)

    class Handler(socketserver.BaseRequestHandler):
        def handle(self):
            s = self.request
            s.settimeout(5)
            try:
                first = s.recv(1, socket.MSG_PEEK)
                if first == b"\x16":
                    s = ctx.wrap_socket(s, server_side=True)
                s.recv(65536)
                s.sendall(RESPONSE)
            except (OSError, ssl.SSLError):
                pass
            finally:
                try:
                    s.close()
                except OSError:
                    pass

    family = socket.AF_INET6 if ":" in a.bind else socket.AF_INET

    class Server(socketserver.ThreadingTCPServer):
        address_family = family
        allow_reuse_address = True
        daemon_threads = True

    with Server((a.bind, a.port), Handler) as srv:
        srv.serve_forever()


if __name__ == "__main__":
    main()
