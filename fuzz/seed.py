#!/usr/bin/env python3
"""Seed the fuzz corpora from pcaps/, the third-party corpus and agent/assets/.
decode: single frames (with a link-type selector byte); client_hello and preface: the client's
first payloads; capture_file: small whole captures. Usage: python3 fuzz/seed.py [CORPUS_DIR]"""
import glob, os, struct, sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
SHARED = os.environ.get("MESHWATCH_CORPUS", os.path.join(ROOT, "..", "shared", "corpus"))
LINKS = [0, 1, 12, 14, 101, 108, 113, 228, 229, 276]


def frames(path, limit=40):
    data = open(path, "rb").read()
    if len(data) < 24 or data[:4] not in (b"\xd4\xc3\xb2\xa1", b"\xa1\xb2\xc3\xd4", b"\x4d\x3c\xb2\xa1", b"\xa1\xb2\x3c\x4d"):
        return []
    endian = "<" if data[:4] in (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1") else ">"
    link = struct.unpack(endian + "I", data[20:24])[0]
    out, pos = [], 24
    while pos + 16 <= len(data) and len(out) < limit:
        caplen = struct.unpack(endian + "I", data[pos + 8:pos + 12])[0]
        out.append((link, data[pos + 16:pos + 16 + caplen]))
        pos += 16 + caplen
    return out


def main():
    base = sys.argv[1] if len(sys.argv) > 1 else os.path.join(HERE, "corpus")
    dirs = {t: os.path.join(base, t) for t in ("decode", "preface", "client_hello", "capture_file")}
    for d in dirs.values():
        os.makedirs(d, exist_ok=True)
    captures = sorted(glob.glob(os.path.join(ROOT, "pcaps", "*.pcap*")) + glob.glob(os.path.join(SHARED, "pcaps", "*.pcap*")))
    n = 0
    for cap in captures:
        if os.path.getsize(cap) <= 64 * 1024:
            open(os.path.join(dirs["capture_file"], os.path.basename(cap)), "wb").write(open(cap, "rb").read())
        for i, (link, frame) in enumerate(frames(cap)):
            sel = LINKS.index(link) if link in LINKS else 1
            open(os.path.join(dirs["decode"], f"{os.path.basename(cap)}-{i}"), "wb").write(bytes([sel]) + frame)
            n += 1
    for asset in glob.glob(os.path.join(ROOT, "agent", "assets", "*.bin")):
        b = open(asset, "rb").read()
        open(os.path.join(dirs["client_hello"], os.path.basename(asset)), "wb").write(b)
        # as three segments for the preface target: offset (2), length (1), bytes
        seeds, off = b"", 0
        for chunk in (b[:200], b[200:255], b[255:300]):
            seeds += struct.pack("<hB", off // 7, len(chunk)) + chunk
            off += len(chunk)
        open(os.path.join(dirs["preface"], os.path.basename(asset)), "wb").write(seeds)
    print(f"seeded {n} frames, {len(os.listdir(dirs['capture_file']))} captures into {base}")


if __name__ == "__main__":
    main()
