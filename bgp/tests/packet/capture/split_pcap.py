#!/usr/bin/env python3
"""Print each BGP message of a pcap (Ethernet, IPv4, TCP) as '<sender> <hex>'.

Reassembles each direction's TCP stream by sequence number, then splits it at the BGP
header's length field. Usage: split_pcap.py FILE ADDR=NAME...
"""
import socket
import struct
import sys


def packets(path):
    with open(path, "rb") as f:
        magic, = struct.unpack("<I", f.read(24)[:4])
        endian = "<" if magic in (0xA1B2C3D4, 0xA1B23C4D) else ">"
        while True:
            hdr = f.read(16)
            if len(hdr) < 16:
                return
            _, _, incl, _ = struct.unpack(endian + "IIII", hdr)
            yield f.read(incl)


def main():
    names = dict(a.split("=", 1) for a in sys.argv[2:])
    streams = {}
    for frame in packets(sys.argv[1]):
        if struct.unpack("!H", frame[12:14])[0] != 0x0800:
            continue
        ip = frame[14:]
        ihl = (ip[0] & 0x0F) * 4
        total = struct.unpack("!H", ip[2:4])[0]
        src = socket.inet_ntoa(ip[12:16])
        tcp = ip[ihl:total]
        seq = struct.unpack("!I", tcp[4:8])[0]
        off = (tcp[12] >> 4) * 4
        flags = tcp[13]
        data = tcp[off:]
        s = streams.setdefault(src, {"order": len(streams), "segs": {}, "isn": None})
        if flags & 0x02:  # SYN
            s["isn"] = seq + 1
        if data:
            s["segs"][seq] = data
    out = []
    for src, s in streams.items():
        seq = s["isn"] if s["isn"] is not None else min(s["segs"], default=0)
        buf = b""
        while seq in s["segs"]:
            d = s["segs"].pop(seq)
            buf += d
            seq = (seq + len(d)) & 0xFFFFFFFF
        while len(buf) >= 19:
            n = struct.unpack("!H", buf[16:18])[0]
            if n < 19 or len(buf) < n:
                break
            out.append((names.get(src, src), buf[:n].hex()))
            buf = buf[n:]
    for name, hexs in out:
        print(name, hexs)


if __name__ == "__main__":
    main()
