#!/usr/bin/env python3
"""Deterministic generator of large benchmark captures (pcap, Ethernet/IPv4/TCP).

  mixed  N connections (default 20,000) interleaved ~256 at a time: 40% Istio mTLS (the real
         openssl ClientHello from agent/assets, with Istio ALPN), 40% plaintext HTTP/1.1,
         20% application TLS (the real gnutls ClientHello); each with a full handshake, a server
         response of ~45 full-size segments with ACKs, and FIN teardown (~50 packets, ~1.2 GB
         for 20k connections).
  churn  N short connections (default 1,000,000): SYN, SYN-ACK, an HTTP GET, RST.
  synflood  N SYNs from distinct addresses and ports (default 1,000,000), never answered.

Usage: python3 bench/gen_capture.py mixed|churn OUT.pcap [N]
Same arguments, same bytes: the random generator is seeded, timestamps are synthetic.
"""
import random
import struct
import sys
import os

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ISTIO_HELLO = open(os.path.join(ROOT, "agent/assets/clienthello-istio-openssl.bin"), "rb").read()
APP_HELLO = open(os.path.join(ROOT, "agent/assets/clienthello-app-gnutls.bin"), "rb").read()
GET = b"GET /api/v1/items?page=1 HTTP/1.1\r\nHost: catalog\r\nUser-Agent: bench\r\nAccept: */*\r\n\r\n"
MSS = 1448
ETH = b"\x02\x00\x00\x00\x00\x02\x02\x00\x00\x00\x00\x01\x08\x00"
SYN, ACK, PSH, FIN, RST = 0x02, 0x10, 0x08, 0x01, 0x04


class Writer:
    def __init__(self, path):
        self.f = open(path, "wb", buffering=8 << 20)
        self.f.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 262144, 1))
        self.t = 1_700_000_000_000_000  # microseconds
        self.n = 0

    def packet(self, src, dst, sport, dport, seq, ack, flags, payload=b""):
        tcp = struct.pack("!HHIIBBHHH", sport, dport, seq & 0xFFFFFFFF, ack & 0xFFFFFFFF, 5 << 4, flags, 65535, 0, 0)
        total = 20 + len(tcp) + len(payload)
        ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, total, self.n & 0xFFFF, 0x4000, 64, 6, 0, src, dst)
        frame = ETH + ip + tcp + payload
        self.t += 7
        self.f.write(struct.pack("<IIII", self.t // 1_000_000, self.t % 1_000_000, len(frame), len(frame)))
        self.f.write(frame)
        self.n += 1


def addr(net, i):
    return bytes([10, net, (i >> 8) & 0xFF, i & 0xFF])


def connection_steps(w, i, rnd):
    """A generator yielding once per packet written, so connections interleave."""
    kind = rnd.random()
    if kind < 0.4:
        hello, dport = ISTIO_HELLO, 8000
    elif kind < 0.8:
        hello, dport = GET, 8080
    else:
        hello, dport = APP_HELLO, 443
    c, s = addr(1, i % 60000), addr(2, i % 500)
    cp = 1024 + (i * 7) % 60000
    cs, ss = rnd.getrandbits(32), rnd.getrandbits(32)
    w.packet(c, s, cp, dport, cs, 0, SYN); yield
    w.packet(s, c, dport, cp, ss, cs + 1, SYN | ACK); yield
    w.packet(c, s, cp, dport, cs + 1, ss + 1, ACK); yield
    w.packet(c, s, cp, dport, cs + 1, ss + 1, PSH | ACK, hello); yield
    cs += 1 + len(hello)
    body = bytes(rnd.getrandbits(8) for _ in range(64)) * (MSS // 64 + 1)
    segs = 30 + rnd.randrange(30)
    for k in range(segs):
        w.packet(s, c, dport, cp, ss + 1 + k * MSS, cs, PSH | ACK, body[:MSS]); yield
        if k % 2:
            w.packet(c, s, cp, dport, cs, ss + 1 + (k + 1) * MSS, ACK); yield
    ss += 1 + segs * MSS
    w.packet(c, s, cp, dport, cs, ss, FIN | ACK); yield
    w.packet(s, c, dport, cp, ss, cs + 1, FIN | ACK); yield
    w.packet(c, s, cp, dport, cs + 1, ss + 1, ACK)


def mixed(path, n):
    rnd = random.Random(42)
    w = Writer(path)
    active, started = [], 0
    while started < n or active:
        while len(active) < 256 and started < n:
            active.append(connection_steps(w, started, rnd))
            started += 1
        i = rnd.randrange(len(active))
        try:
            next(active[i])
        except StopIteration:
            active[i] = active[-1]
            active.pop()
    return w.n


def churn(path, n):
    rnd = random.Random(7)
    w = Writer(path)
    for i in range(n):
        c, s = bytes([10, 3, (i >> 16) & 0xFF, (i >> 8) & 0xFF]), addr(4, i % 200)
        cp = 1024 + i % 60000
        cs, ss = rnd.getrandbits(32), rnd.getrandbits(32)
        w.packet(c, s, cp, 80, cs, 0, SYN)
        w.packet(s, c, 80, cp, ss, cs + 1, SYN | ACK)
        w.packet(c, s, cp, 80, cs + 1, ss + 1, PSH | ACK, GET)
        w.packet(s, c, 80, cp, ss + 1, 0, RST)
    return w.n


def synflood(path, n):
    w = Writer(path)
    for i in range(n):
        w.packet(bytes([10, 5, (i >> 16) & 0xFF, (i >> 8) & 0xFF]), addr(6, 1), 1024 + i % 60000, 8000, i * 7919, 0, SYN)
    return w.n


def main():
    kinds = {"mixed": mixed, "churn": churn, "synflood": synflood}
    if len(sys.argv) < 3 or sys.argv[1] not in kinds:
        sys.exit(__doc__)
    kind, out = sys.argv[1], sys.argv[2]
    n = int(sys.argv[3]) if len(sys.argv) > 3 else (20_000 if kind == "mixed" else 1_000_000)
    packets = kinds[kind](out, n)
    print(f"{out}: {n} connections, {packets} packets, {os.path.getsize(out) / 1e6:.0f} MB")


if __name__ == "__main__":
    main()
