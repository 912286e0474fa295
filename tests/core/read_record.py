#!/usr/bin/env python3
"""Reads a slimta stored record (doc/format.md) with the Python standard library only,
and prints it as JSON. Used by format_python_test.cc to show the format is
language-neutral; also handy for an operator looking at a spool file."""
import json, struct, sys, zlib

NAMES = {0x01: 'next_attempt', 0x02: 'attempts', 0x03: 'recipient_count',
         0x04: 'delivered', 0x05: 'lease', 0x06: 'hold', 0x07: 'last_reply', 0x10: 'sender', 0x11: 'recipient', 0x12: 'client_ip',
         0x13: 'client_host', 0x14: 'client_name', 0x15: 'client_protocol',
         0x16: 'client_auth', 0x17: 'receiver', 0x18: 'received_at', 0x1F: 'message'}


def read_record(data):
    if data[:6] != b'SLMTAQ' or data[6] != 1:
        raise ValueError('not a version 1 slimta record')
    (total,) = struct.unpack_from('>Q', data, 8)
    if total != len(data):
        raise ValueError('truncated record')
    pos, out = 16, {'recipients': []}
    while True:
        tag, length = struct.unpack_from('>BI', data, pos)
        value = data[pos + 5:pos + 5 + length]
        if tag == 0xFF:
            if struct.unpack('>I', value)[0] != zlib.crc32(data[:pos]):
                raise ValueError('checksum mismatch')
            return out
        pos += 5 + length
        name = NAMES.get(tag)
        if name in ('next_attempt', 'received_at'):
            out[name] = struct.unpack('>d', value)[0]
        elif name in ('attempts', 'recipient_count'):
            out[name] = struct.unpack('>I', value)[0]
        elif name == 'delivered':
            out[name] = list(struct.unpack('>%dI' % (length // 4), value))
        elif name == 'lease':
            out['lease_token'], out['lease_expires'] = struct.unpack('>Qd', value)
        elif name == 'hold':
            out['hold_since'] = struct.unpack_from('>d', value)[0]
            out['hold_reason'] = value[8:].decode('utf-8', 'surrogateescape')
        elif name == 'recipient':
            out['recipients'].append(value.decode('utf-8', 'surrogateescape'))
        elif name == 'message':
            out[name] = value.hex()
        elif name:
            out[name] = value.decode('utf-8', 'surrogateescape')


if __name__ == '__main__':
    with open(sys.argv[1], 'rb') as f:
        print(json.dumps(read_record(f.read())))
