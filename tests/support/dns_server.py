#!/usr/bin/env python3
"""A tiny authoritative DNS server for the MX delivery tests (UDP, 127.0.0.1:PORT),
answering from ZONE_JSON: {"name": {"MX": [[pref, "host"]], "A": ["127.0.0.1"]}}.
A name not in the zone gets NXDOMAIN; a known name without the asked type gets an
empty answer (NODATA). Prints "ready" once it listens.

    dns_server.py PORT ZONE_JSON
"""
import json
import socket
import struct
import sys

port, zone = int(sys.argv[1]), json.loads(sys.argv[2])
zone = {k.lower().rstrip('.'): v for k, v in zone.items()}
TYPES = {1: 'A', 15: 'MX', 28: 'AAAA'}


def encode_name(name):
    if name in ('', '.'):
        return b'\0'
    return b''.join(bytes([len(p)]) + p.encode() for p in name.rstrip('.').split('.')) + b'\0'


def parse_question(data):
    pos, labels = 12, []
    while data[pos]:
        n = data[pos]
        labels.append(data[pos + 1:pos + 1 + n].decode())
        pos += 1 + n
    qtype, qclass = struct.unpack('>HH', data[pos + 1:pos + 5])
    return '.'.join(labels).lower(), qtype, data[12:pos + 5]


sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
sock.bind(('127.0.0.1', port))  # port 0: one the kernel picks
print(f'ready {sock.getsockname()[1]}', flush=True)
while True:
    data, peer = sock.recvfrom(512)
    try:
        name, qtype, question = parse_question(data)
    except Exception:
        continue
    qid = struct.unpack('>H', data[:2])[0]
    answers = []
    rcode = 0
    if name not in zone:
        rcode = 3
    else:
        for value in zone[name].get(TYPES.get(qtype, ''), []):
            if qtype == 15:
                rdata = struct.pack('>H', value[0]) + encode_name(value[1])
            elif qtype == 1:
                rdata = socket.inet_aton(value)
            else:
                rdata = socket.inet_pton(socket.AF_INET6, value)
            answers.append(b'\xc0\x0c' + struct.pack('>HHIH', qtype, 1, 60, len(rdata)) + rdata)
    header = struct.pack('>HHHHHH', qid, 0x8400 | rcode, 1, len(answers), 0, 0)
    sock.sendto(header + question + b''.join(answers), peer)
