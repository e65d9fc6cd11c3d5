#!/usr/bin/env python3
"""One long-lived TCP connection for pcaps/generate.py, driven step by step from stdin so that
the capture can start while it is already open (mid-stream flows). Stdlib only.

  longconn.py server --port P [--tls CERT KEY --alpn A,B]    accept one connection
  longconn.py client --connect IP:PORT [--tls --alpn A,B --sni NAME]
  longconn.py http-server --port P       HTTP/1.1 with keep-alive, until killed
  longconn.py http-client --connect IP:PORT   one keep-alive connection (http.client)

Commands, one a line; each is answered with one line on stdout ("ok ..." or "error ..."):
  send HEX     send these bytes (one write: one TLS record)
  recv N       read until N bytes have arrived
  get PATH     (http-client) a GET on the same connection; answers with the status
  close        close the connection and exit
The servers print "listening", the clients "connected" once ready.
"""
import argparse
import http.client
import http.server
import socket
import socketserver
import ssl
import sys

TIMEOUT = 20


def say(line):
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def recv_exactly(sock, n):
    got = b""
    while len(got) < n:
        data = sock.recv(n - len(got))
        if not data:
            raise ConnectionError(f"closed after {len(got)} of {n} bytes")
        got += data
    return got


def drive(sock=None, http_conn=None):
    for line in sys.stdin:
        cmd, _, arg = line.strip().partition(" ")
        try:
            if cmd == "send":
                sock.sendall(bytes.fromhex(arg))
                say("ok")
            elif cmd == "recv":
                say("ok " + recv_exactly(sock, int(arg)).hex())
            elif cmd == "get":
                http_conn.request("GET", arg)
                r = http_conn.getresponse()
                r.read()
                say(f"ok {r.status}")
            elif cmd == "close":
                (sock or http_conn).close()
                say("ok")
                return
            else:
                say(f"error unknown command {cmd}")
        except (OSError, ssl.SSLError, http.client.HTTPException) as e:
            say(f"error {e}")
            return


class KeepAlive(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive unless the client says otherwise

    def do_GET(self):
        body = b'{"origin": "%s"}\n' % self.client_address[0].encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("mode", choices=["server", "client", "http-server", "http-client"])
    ap.add_argument("--port", type=int)
    ap.add_argument("--connect")
    ap.add_argument("--tls", nargs="*")
    ap.add_argument("--alpn", default="")
    ap.add_argument("--sni")
    a = ap.parse_args()
    alpn = [p for p in a.alpn.split(",") if p]
    if a.mode == "http-server":
        class Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
            allow_reuse_address = True
            daemon_threads = True
        srv = Server(("0.0.0.0", a.port), KeepAlive)
        say("listening")
        srv.serve_forever()
        return
    if a.mode == "http-client":
        host, port = a.connect.rsplit(":", 1)
        conn = http.client.HTTPConnection(host, int(port), timeout=TIMEOUT)
        conn.connect()
        say("connected")
        drive(http_conn=conn)
        return
    if a.mode == "server":
        lsock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        lsock.bind(("0.0.0.0", a.port))
        lsock.listen(1)
        say("listening")
        sock, _ = lsock.accept()
        lsock.close()
        sock.settimeout(TIMEOUT)
        if a.tls is not None:
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.load_cert_chain(a.tls[0], a.tls[1])
            if alpn:
                ctx.set_alpn_protocols(alpn)
            sock = ctx.wrap_socket(sock, server_side=True)
    else:
        host, port = a.connect.rsplit(":", 1)
        sock = socket.create_connection((host, int(port)), timeout=TIMEOUT)
        if a.tls is not None:
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
            if alpn:
                ctx.set_alpn_protocols(alpn)
            sock = ctx.wrap_socket(sock, server_hostname=a.sni)
        say("connected")
    drive(sock=sock)


if __name__ == "__main__":
    main()
