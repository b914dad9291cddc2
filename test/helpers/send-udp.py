#!/usr/bin/env python3
"""Test hosts' raw sender, run inside a test namespace: IPv4 UDP datagrams with any source address.

usage: send-udp.py SRC SPORT DST DPORT HEX_PAYLOAD [COUNT]
The source may be forged: that is the point (an off-path sender claiming to be someone else).
"""
import socket
import struct
import sys

src, sport, dst, dport, payload_hex = sys.argv[1:6]
count = int(sys.argv[6]) if len(sys.argv) > 6 else 1
payload = bytes.fromhex(payload_hex)
datagram = struct.pack('!HHHH', int(sport), int(dport), 8 + len(payload), 0) + payload
# The kernel fills in the IP checksum of a raw IPPROTO_RAW packet; a UDP checksum of 0 means none.
header = struct.pack('!BBHHHBBH4s4s', 0x45, 0, 20 + len(datagram), 0, 0x4000, 64, socket.IPPROTO_UDP, 0, socket.inet_aton(src), socket.inet_aton(dst))
sender = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
for _ in range(count):
    sender.sendto(header + datagram, (dst, 0))
print(count)
