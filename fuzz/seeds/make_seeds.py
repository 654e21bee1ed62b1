#!/usr/bin/env python3
"""Writes the seed corpora for the decoder fuzz targets; run from anywhere, rerun after edits.

Each seed is laid out as chatd::fuzzing expects: a control byte whose low three bits count
the read-size bytes that follow (each read is byte + 1 long, cycled; none means one byte per
read), then the stream itself. File names say what the stream holds.
"""

import pathlib
import struct

HERE = pathlib.Path(__file__).resolve().parent


def frame(kind, body=b""):
    return struct.pack(">IB", len(body) + 1, kind) + body


def s(text):
    data = text.encode() if isinstance(text, str) else text
    return struct.pack(">H", len(data)) + data


def u64(n):
    return struct.pack(">Q", n)


def u32(n):
    return struct.pack(">I", n)


def reads(*sizes):
    """The control prefix for reads of the given sizes (1..=256 each, at most 7)."""
    return bytes([len(sizes)] + [size - 1 for size in sizes])


ONE_BYTE_READS = reads()

hello = frame(0x01, b"\x01" + s("alice") + s("secret"))
join = frame(0x02, s("#general") + u64(0) + u32(0xFFFFFFFF))
leave = frame(0x03, s("#general"))
send = frame(0x04, s("#general") + u64(1) + "héllo".encode())
ping = frame(0x05, u64(7))
bye = frame(0x06)

welcome = frame(0x81, b"\x01" + u64(9) + u64(3) + u32(65536) + u32(30000) + s("chatd"))
joined = frame(0x82, s("#general") + u64(1) + u64(41))
left = frame(0x83, s("#general"))
msg = frame(0x84, s("#general") + u64(42) + u64(1700000000000) + s("alice") + "héllo".encode())
ack = frame(0x85, u64(1) + u64(42))
pong = frame(0x86, u64(7))
error = frame(0x87, struct.pack(">H", 8) + u64(1) + s("not joined"))

SEEDS = {
    "decode_server": {
        "hello_join_send": ONE_BYTE_READS + hello + join + send,
        "every_client_kind": reads(17) + hello + join + leave + send + ping + bye,
        "split_header": reads(3, 4, 1) + ping + bye + ping,
        "truncated_send": reads(5) + hello + send[:-3],
        "send_over_small_limit": reads(256) + frame(0x04, s("#general") + u64(2) + b"x" * 80),
        "oversize_length": ONE_BYTE_READS + u32(65537) + b"\x05",
        "zero_length": ONE_BYTE_READS + hello + u32(0),
        "wrong_direction_kind": ONE_BYTE_READS + frame(0x85, u64(1) + u64(1)),
        "unknown_kind": ONE_BYTE_READS + frame(0x07),
        "bye_with_body": reads(2) + frame(0x06, b"\x00"),
        "str_past_body": reads(2) + frame(0x03, struct.pack(">H", 5) + b"a"),
        "text_not_utf8": reads(9) + frame(0x04, s("#general") + u64(3) + b"\xc3("),
    },
    "decode_client": {
        "welcome_joined_msg": ONE_BYTE_READS + welcome + joined + msg,
        "every_server_kind": reads(17) + welcome + joined + left + msg + ack + pong + error,
        "split_header": reads(3, 4, 1) + pong + ack + pong,
        "truncated_msg": reads(5) + welcome + msg[:-3],
        "oversize_length": ONE_BYTE_READS + u32(65537) + b"\x84",
        "zero_length": ONE_BYTE_READS + ack + u32(0),
        "wrong_direction_kind": ONE_BYTE_READS + frame(0x05, u64(1)),
        "str_not_utf8": reads(2) + frame(0x83, s(b"\xff\xfe")),
    },
}

for target, seeds in SEEDS.items():
    directory = HERE / target
    directory.mkdir(exist_ok=True)
    for name, data in seeds.items():
        (directory / name).write_bytes(data)
