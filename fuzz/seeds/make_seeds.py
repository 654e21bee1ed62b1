#!/usr/bin/env python3
"""Writes the seed corpora for every fuzz target; run from anywhere, rerun after edits.

decode_server, decode_client: a control byte whose low three bits count the read-size bytes
that follow (each read is byte + 1 long, cycled; none means one byte per read), then the
stream itself. ws_frame, http_upgrade: see their sections below. session: a script of
operations (see src/fuzzing/session.rs). log_record: the bytes of one record or segment header.
recovery: a script that builds segment files (see src/fuzzing/store.rs). web_session: see its
section below. File names say what the input holds.
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

# Version 2 (protocol-v2.md): HELLO with a client id, WHO, WATCH, MEMBERS, PRESENCE, and the
# two new error codes.
hello_v2 = frame(0x01, b"\x02" + s("alice") + s("secret") + u64(0x0102030405060708))
hello_v1_with_client = frame(0x01, b"\x01" + s("alice") + s("secret") + u64(1))
hello_v9_garbage = frame(0x01, b"\x09\xff\xff\x00")
who = frame(0x07, s("#general"))
watch_on = frame(0x08, s("#general") + b"\x01")
watch_2 = frame(0x08, s("#general") + b"\x02")
members = frame(0x88, s("#general") + u32(3) + struct.pack(">H", 2) + s("alice") + s("bob"))
presence = frame(0x89, s("#general") + s("carol") + b"\x01")
forbidden = frame(0x87, struct.pack(">H", 16) + u64(0) + s("forbidden"))
stale_id = frame(0x87, struct.pack(">H", 17) + u64(5) + s("stale id"))

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
        "v2_hello_join_who_watch": ONE_BYTE_READS + hello_v2 + join + who + watch_on + ping,
        "v2_every_new_kind": reads(13) + who + watch_on + watch_2 + hello_v2,
        "v1_hello_with_client_id": reads(4) + hello_v1_with_client + ping,
        "hello_of_another_version": reads(2) + hello_v9_garbage + who,
        "who_cut_short": reads(3) + hello_v2 + who[:-2],
        "watch_without_on": reads(5) + frame(0x08, s("#general")),
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
        "v2_members_presence_errors": reads(11) + welcome + members + presence + forbidden
        + stale_id,
        "members_count_lies": reads(7) + frame(0x88, s("#a") + u32(3) + struct.pack(">H", 3)
                                               + s("alice") + s("bob")),
        "presence_here_2": ONE_BYTE_READS + frame(0x89, s("#a") + s("bob") + b"\x02"),
        "members_then_v1_kinds": reads(31) + members + joined + msg,
    },
}


# --- session: operations of chatd::fuzzing::session_ops -------------------------------------
# Indices into its tables: NAMES alice bob eve "", TOKENS s3cret hunter2 "",
# ROOMS #a #b #c #d nohash "", TEXTS hi "" héllo... longer.
def s_hello(user=0, token=0):
    return bytes([1, 0, 0, user, token])


def s_join(room=0, after=0, limit=0x80):
    return bytes([1, 1, room, after, limit])


def s_leave(room=0):
    return bytes([1, 2, room])


def s_ping(nonce):
    return bytes([1, 3, 0, nonce])


S_BYE = bytes([1, 4, 0])


def s_send(room=0, id=1, text=0):
    return bytes([1, 6, room, id, text])


def s_send_long(room=0, id=1, extra=0):
    return bytes([1, 5, room, id, extra])


def s_hello2(user=0, token=0, client=1):
    return bytes([1, 0, 0x80, user, token, client])


def s_hello_version(version=0xf3, user=0, token=0):
    return bytes([1, 0, version, user, token])


def s_who(room=0):
    return bytes([1, 8, room])


def s_watch(room=0, on=1):
    return bytes([1, 9, room, on])


def s_raw(data):
    return bytes([0, len(data)]) + data


def s_store(fail=0):
    return bytes([3, fail])


def s_advance(tenths):
    return bytes([4, tenths])


def s_write(cap):
    return bytes([5, cap])


def s_post(room=0):
    return bytes([6, room])


def s_archive(gone=0):
    return bytes([9, gone])


S_EOF = bytes([7])
S_SHUTDOWN = bytes([8])
DRAIN = s_write(255) * 4

SEEDS["session"] = {
    "hello_join_send_ack": s_hello() + s_join() + s_send() + s_store() + DRAIN,
    "one_byte_writes": s_hello() + s_join() + s_send() + s_ping(9) + s_store()
    + s_write(0) + s_write(1) * 40,
    "wrong_token": s_hello(0, 1) + s_ping(1) + DRAIN,
    "frame_before_hello": s_ping(1) + s_hello() + DRAIN,
    "garbage_after_hello": s_hello() + s_raw(b"\xff\xff\xff\xff\x01junk") + DRAIN,
    "split_frame_in_raw_chunks": s_raw(hello[:3]) + s_raw(hello[3:]) + s_ping(2) + DRAIN,
    "busy_room_reader_stalls": s_hello() + s_join() + s_post() * 12 + s_write(0)
    + s_advance(255) * 2 + s_write(0) + s_advance(100) + DRAIN,
    "bye_with_sends_in_flight": s_hello() + s_join() + s_send(0, 1) + s_send(0, 2) + S_BYE
    + s_post() + s_store() + DRAIN,
    "shutdown_with_sends_in_flight": s_hello() + s_join() + s_send() + S_SHUTDOWN
    + s_store() + DRAIN,
    "eof_after_send": s_hello() + s_join() + s_send() + S_EOF + s_store() + DRAIN,
    "idle_timeout": s_hello() + s_advance(255) * 3 + DRAIN,
    "handshake_timeout": s_advance(60) + DRAIN,
    "storage_failure": s_hello() + s_join() + s_send(0, 1) + s_send(0, 2) + s_store(0x01)
    + DRAIN,
    "too_many_rooms": s_hello() + s_join(0) + s_join(1) + s_join(2) + s_join(3) + DRAIN,
    "rate_limited": s_hello() + s_join() + b"".join(s_send(0, i) for i in range(1, 8))
    + s_store() + DRAIN,
    "rejoin_replays": s_hello() + s_join() + s_send(0, 1) + s_send(0, 2) + s_store()
    + DRAIN + s_join(0, 0, 0x80) + s_leave(0) + s_join(0, 1, 0x80) + DRAIN,
    "send_longer_than_max_frame": s_hello() + s_join() + s_send_long() + DRAIN,
    "behind_window_caught_up_from_log": s_hello() + s_join() + s_post() * 12 + s_write(255)
    + s_archive() + DRAIN,
    "history_gone_while_behind": s_hello() + s_join() + s_post() * 12 + s_write(255)
    + s_archive(1) + DRAIN,
    # A member behind the window asks the archive while its own SEND is written but not yet
    # synced; the sync fails and the seq goes to another message.
    "archive_during_a_batch_that_fails": s_hello() + s_join() + s_post() * 12 + s_write(255)
    + s_send(0, 1) + s_archive(2) + s_store(1) + s_post() + DRAIN,
    "send_to_room_not_joined": s_hello() + s_send(1, 5) + s_leave(1) + s_join(4) + DRAIN,
    # Version 2 and mixed versions.
    "v2_hello_join_who_watch": s_hello2() + s_join() + s_who() + s_watch(0, 1) + s_watch(0, 2)
    + s_ping(1) + DRAIN,
    "v2_client_0_send_ack": s_hello2(0, 0, 0) + s_join() + s_send() + s_store() + DRAIN,
    "v1_hello_then_who": s_hello() + s_join() + s_who() + s_ping(1) + DRAIN,
    "who_before_hello": s_who() + s_hello() + DRAIN,
    "hello_of_another_version": s_hello_version() + s_ping(1) + DRAIN,
    "v1_hello_with_client_id": s_raw(hello_v1_with_client[:29]) + DRAIN,
    "v2_then_v1_hello": s_hello2() + s_hello() + DRAIN,
    "v2_who_not_joined_then_watch_bad_room": s_hello2() + s_who(1) + s_watch(5, 1) + DRAIN,
}


# --- log_record and recovery ----------------------------------------------------------------
def crc32c(data, crc=0):
    crc ^= 0xFFFFFFFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ (0x82F63B78 if crc & 1 else 0)
    return crc ^ 0xFFFFFFFF


def record(payload):
    length = u32(len(payload))
    return length + u32(crc32c(length + payload)) + payload


def segment_header(epoch, id, version=2):
    head = b"CHATDLOG" + u32(version) + u32(0) + u64(epoch) + u64(id)
    return head[:12] + u32(crc32c(head)) + head[16:]


def stored_msg(room, seq, text="hi"):
    return frame(0x84, s(room) + u64(seq) + u64(1000 + seq) + s("alice") + text.encode())


SEEDS["log_record"] = {
    "msg_record": record(stored_msg("#general", 1)),
    "msg_record_then_more": record(stored_msg("#a", 7)) + b"\x00\x00",
    "record_cut_short": record(stored_msg("#a", 1))[:-2],
    "bad_checksum": record(stored_msg("#a", 1))[:4] + b"\0\0\0\0" + stored_msg("#a", 1),
    "pong_payload": record(frame(0x86, u64(1))),
    "seq_zero": record(stored_msg("#a", 0)),
    "length_huge": b"\xff\xff\xff\xff\0\0\0\0",
    "length_inside_payload_lies": record(u32(99) + b"\x84" + b"x" * 8),
    "segment_header": segment_header(0x00C0FFEE00000001, 1),
    "segment_header_format_1": segment_header(0x00C0FFEE00000001, 1, 1),
    # Format 2: the frame, then the key it was sent with (client u64, id u64).
    "keyed_msg_record": record(stored_msg("#a", 3) + u64(0x5EED) + u64(42)),
    "keyed_record_client_zero": record(stored_msg("#a", 3) + u64(0) + u64(42)),
    "keyed_record_short_key": record(stored_msg("#a", 3) + u64(0x5EED) + b"\0" * 7),
    "segment_header_bad_magic": b"CHATDLOX" + segment_header(1, 1)[8:],
}

# recovery: build mode (first byte even), operations of two bytes (some take a third).
def r_msg(room=0, length=1):
    return bytes([0, room | (length << 2)])


def r_keyed(room=0, length=1):
    return bytes([2, room | (length << 2)])


def r_segment(kind=3):
    return bytes([7, kind])


R_OUT_OF_ORDER = bytes([3, 0x04])
R_PONG = bytes([3, 0x80])
R_CUT = bytes([6, 5])
R_FLIP = bytes([5, 3, 2])

SEEDS["recovery"] = {
    "three_rooms_in_order": b"\x00" + r_msg(0) + r_msg(1) + r_msg(2) + r_msg(0, 20),
    "two_segments_in_order": b"\x00" + r_msg(0) * 3 + r_segment() + r_msg(0) * 2 + r_msg(1),
    "torn_tail": b"\x00" + r_msg(0) * 3 + R_CUT,
    "bit_flip_in_tail": b"\x00" + r_msg(0) * 3 + R_FLIP,
    "bit_flip_before_tail": b"\x00" + r_msg(0) * 3 + R_FLIP + r_segment() + r_msg(0),
    "skipped_segment_id": b"\x00" + r_msg(0) + r_segment(0) + r_msg(0),
    "other_epoch": b"\x00" + r_msg(0) + r_segment(1) + r_msg(0),
    "short_header_newest": b"\x00" + r_msg(0) + bytes([7, 2 | (9 << 3)]),
    "seq_out_of_order": b"\x00" + r_msg(0) + R_OUT_OF_ORDER + r_msg(0),
    "pong_record": b"\x00" + r_msg(1) + R_PONG,
    "raw_garbage_after_header": b"\x01\x80" + b"\x00\x00\x00\x20garbage",
    "raw_two_files_no_header": b"\x03\x05hello" + b"world",
    "keyed_two_clients": b"\x00" + r_keyed(0) + r_keyed(1) + r_msg(0) + r_keyed(2, 9) + r_keyed(1),
    "keyed_across_segments": b"\x00" + r_keyed(0) * 3 + r_segment() + r_keyed(0) * 2 + R_CUT,
}

# ws_frame: a control byte (low three bits: how many read sizes follow; bits 3-4: the payload
# limit, 0 = 8, 1 = 125, 2 = 65540, 3 = 1 MiB), the read sizes, then frames a client sends.
WS_MASK = b"\x37\xfa\x21\x3d"


def ws(first, payload=b"", mask=WS_MASK):
    """One client frame: `first` is FIN|RSV|opcode; masked unless mask is None."""
    n = len(payload)
    mask_bit = 0x80 if mask is not None else 0
    if n <= 125:
        head = bytes([first, mask_bit | n])
    elif n <= 0xFFFF:
        head = bytes([first, mask_bit | 126]) + struct.pack(">H", n)
    else:
        head = bytes([first, mask_bit | 127]) + struct.pack(">Q", n)
    if mask is None:
        return head + payload
    return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


def ws_control(limit, *sizes):
    return bytes([limit << 3 | len(sizes)] + [size - 1 for size in sizes])


LIMIT_65540 = 2

SEEDS["ws_frame"] = {
    "one_message_two_frames": ws_control(LIMIT_65540) + ws(0x82, ping + bye),
    "fragmented_with_ping_in_reads": ws_control(LIMIT_65540, 3, 7)
    + ws(0x02, hello[:9]) + ws(0x89, b"mid") + ws(0x80, hello[9:]),
    "pings_pongs_close": ws_control(1, 2) + ws(0x89) + ws(0x8A, b"late") + ws(0x89, b"x" * 125)
    + ws(0x88, struct.pack(">H", 1000) + b"bye"),
    "medium_and_long_lengths": ws_control(LIMIT_65540, 200)
    + ws(0x82, frame(0x04, s("#general") + u64(1) + b"x" * 300))
    + ws(0x82, frame(0x04, s("#general") + u64(2) + b"y" * 70000)),
    "over_small_limit": ws_control(0) + ws(0x82, ping),
    "text_refused": ws_control(LIMIT_65540) + ws(0x81, b"hello"),
    "unmasked": ws_control(LIMIT_65540) + ws(0x82, ping, mask=None),
    "reserved_bits": ws_control(LIMIT_65540) + ws(0xC2, ping),
    "message_ends_inside_frame": ws_control(LIMIT_65540) + ws(0x82, ping[:7]),
    "continuation_without_message": ws_control(LIMIT_65540) + ws(0x80, ping),
    "close_invalid_code": ws_control(LIMIT_65540) + ws(0x88, struct.pack(">H", 1005)),
}

# http_upgrade: a control byte (bit 0: TLS listener; bit 1: the peer is a trusted proxy; bit 2:
# https://allowed.example is allowed; bits 3-5: how many read sizes follow), the read sizes,
# then the request.


def http(line, *headers):
    return (line + "\r\n" + "".join(h + "\r\n" for h in headers) + "\r\n").encode()


UPGRADE = (
    "Host: 127.0.0.1:8080",
    "Upgrade: websocket",
    "Connection: keep-alive, Upgrade",
    "Sec-WebSocket-Version: 13",
    "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
)


def http_control(tls=0, trusted=0, allowed=0, *sizes):
    return bytes([tls | trusted << 1 | allowed << 2 | len(sizes) << 3] + [n - 1 for n in sizes])


SEEDS["http_upgrade"] = {
    "upgrade": http_control() + http("GET /ws HTTP/1.1", *UPGRADE),
    "upgrade_same_origin_tls_in_reads": http_control(1, 0, 0, 5, 17)
    + http("GET /ws HTTP/1.1", *UPGRADE, "Origin: https://127.0.0.1:8080"),
    "upgrade_allowed_origin": http_control(0, 0, 1)
    + http("GET /ws HTTP/1.1", *UPGRADE, "Origin: https://allowed.example"),
    "upgrade_other_origin": http_control() + http("GET /ws HTTP/1.1", *UPGRADE, "Origin: http://x.example"),
    "upgrade_deflate_offered": http_control()
    + http("GET /ws HTTP/1.1", *UPGRADE, "Sec-WebSocket-Extensions: permessage-deflate"),
    "upgrade_then_frames": http_control() + http("GET /ws HTTP/1.1", *UPGRADE) + ws(0x82, ping),
    "version_8": http_control() + http("GET /ws HTTP/1.1", *UPGRADE[:3], "Sec-WebSocket-Version: 8", UPGRADE[4]),
    "bad_key": http_control() + http("GET /ws HTTP/1.1", *UPGRADE[:4], "Sec-WebSocket-Key: AAAA"),
    "forwarded_by_trusted_proxy": http_control(0, 1)
    + http("GET /ws HTTP/1.1", *UPGRADE, "Origin: https://chat.example", "X-Forwarded-Proto: https",
           "X-Forwarded-Host: chat.example", "X-Forwarded-For: 203.0.113.9, 198.51.100.4"),
    "get_index": http_control() + http("GET / HTTP/1.1", "Host: 127.0.0.1:8080"),
    "head_app_js_close": http_control() + http("HEAD /app.js HTTP/1.1", "Host: a", "Connection: close"),
    "pipelined_in_reads": http_control(0, 0, 0, 9) + http("GET /app.js HTTP/1.1", "Host: a")
    + http("GET / HTTP/1.0", "Host: a"),
    "post_with_body": http_control() + http("POST / HTTP/1.1", "Host: a", "Content-Length: 2") + b"hi",
    "not_found": http_control() + http("GET /favicon.ico HTTP/1.1", "Host: a"),
}

# web_session: a control byte (bits 0-2: how many read sizes follow; bit 3: an HTTP request
# first; bit 4: output framed with wrap in pieces, and a TLS listener; bits 5-6: how the input
# ends, 0 FIN, 1 shutdown, 2 deadlines, 3 nothing; bit 7: a socket taking 7 bytes per write),
# with bit 4 a byte whose low two bits pick the piece (5, 5, 64, 700 bytes), the read sizes,
# then what the client sends. Users are those of src/fuzzing/fake.rs.
W_FIN, W_SHUTDOWN, W_DEADLINES, W_NOTHING = 0, 1, 2, 3


def web_control(http=0, wrap=None, ending=W_FIN, small=0, *sizes):
    first = len(sizes) | http << 3 | (wrap is not None) << 4 | ending << 5 | small << 7
    piece = bytes([wrap]) if wrap is not None else b""
    return bytes([first]) + piece + bytes(size - 1 for size in sizes)


def wmsg(*frames):
    """One masked binary message holding the protocol frames given."""
    return ws(0x82, b"".join(frames))


w_hello = frame(0x01, b"\x01" + s("alice") + s("s3cret"))
w_join = frame(0x02, s("#a") + u64(0) + u32(0xFFFFFFFF))
w_send = frame(0x04, s("#a") + u64(1) + b"hi")
w_long_send = frame(0x04, s("#a") + u64(2) + b"x" * 600)
w_chat = wmsg(w_hello) + wmsg(w_join) + wmsg(w_send) + wmsg(ping)
WS_UPGRADE = http("GET /ws HTTP/1.1", *UPGRADE)

SEEDS["web_session"] = {
    "upgrade_chat_fin": web_control(1) + WS_UPGRADE + w_chat,
    "upgrade_chat_wrapped_small_socket_in_reads": web_control(1, 1, W_FIN, 1, 3, 11, 40)
    + WS_UPGRADE + w_chat,
    "chat_wrapped_in_64_byte_pieces": web_control(0, 2) + w_chat + wmsg(w_send),
    "chat_then_shutdown": web_control(0, None, W_SHUTDOWN) + w_chat,
    "hello_then_idle_timeout": web_control(0, None, W_DEADLINES) + wmsg(w_hello),
    "join_before_hello": web_control(0, None, W_NOTHING) + wmsg(w_join),
    "chat_then_client_close": web_control() + w_chat + ws(0x88, struct.pack(">H", 1000)),
    "chat_then_bye": web_control(0, None, W_NOTHING) + w_chat + wmsg(bye),
    "fragmented_hello_with_ping_inside": web_control(0, None, W_FIN, 0, 5)
    + ws(0x02, w_hello[:9]) + ws(0x89, b"mid") + ws(0x80, w_hello[9:]) + wmsg(w_join),
    "two_frames_in_one_message": web_control() + wmsg(w_hello, w_join) + wmsg(w_send, ping),
    "unmasked_after_hello": web_control() + wmsg(w_hello) + ws(0x82, ping, mask=None),
    "declared_too_big": web_control() + wmsg(w_hello) + bytes([0x82, 0xFE, 0x02, 0x05]) + WS_MASK,
    "message_ends_inside_a_frame": web_control() + wmsg(w_hello) + ws(0x82, w_join[:6]),
    "text_message": web_control() + ws(0x81, b"hello"),
    # Each fragment is within max_frame + 4; the protocol frame they carry is not.
    "send_over_max_frame_in_fragments": web_control() + wmsg(w_hello) + wmsg(w_join)
    + ws(0x02, w_long_send[:300]) + ws(0x80, w_long_send[300:]),
    "file_then_upgrade_pipelined": web_control(1, None, W_FIN, 0, 50)
    + http("GET /app.js HTTP/1.1", "Host: a") + WS_UPGRADE + w_chat,
    "version_8": web_control(1) + http("GET /ws HTTP/1.1", *UPGRADE[:3], "Sec-WebSocket-Version: 8",
                                       UPGRADE[4]) + w_chat,
}

# stream_message: a control byte (bit 0: an author header; bit 1: max_frame 64), the author up
# to a zero byte, then the payload.
SEEDS["stream_message"] = {
    "plain": b"\x01alice\x00hello",
    "no_author": b"\x00hello",
    "bad_author": b"\x01al ice\x00hello",
    "empty_text": b"\x01alice\x00",
    "not_utf8": b"\x01alice\x00\xff\xfe",
    "too_long_for_64": b"\x03alice\x00" + b"x" * 80,
    "a_whole_msg_frame": b"\x00" + frame(0x84, s("#r") + u64(0) + u64(0) + s("bob") + b"hi"),
}

# roster: a presence roster as another node sends it (src/jetstream/roster.rs).
SEEDS["roster"] = {
    "set": b"chatd-roster 1 00abcdef01234567 set\nalice\nbob\n",
    "ask_empty": b"chatd-roster 1 0000000000000001 ask\n",
    "unsorted": b"chatd-roster 1 ffffffffffffffff set\nzed\nalice\n",
    "twice": b"chatd-roster 1 00abcdef01234567 set\nalice\nalice\n",
    "bad_name": b"chatd-roster 1 00abcdef01234567 set\nal ice\n",
    "no_newline": b"chatd-roster 1 00abcdef01234567 set",
    "bye": b"chatd-roster 1 00abcdef01234567 bye\n",
    "arrivals": b"chatd-roster 1 00abcdef01234567 set\nalice\n+alice\n+bob\n",
}

# Inputs that show daemon bugs not fixed yet; run strictly by ignored tests in src/fuzzing.
KNOWN_BUGS = {
    "session": {
        # After FIN the member is behind the window; the log read answers Gone: the session
        # drops the WELCOME, JOINED and ACK it still owes and sends no ERROR.
        "gone_after_eof_drops_owed_frames": s_hello() + s_join() + s_send() + s_post() * 12
        + s_store() + S_EOF + s_write(0) + s_archive(1) + DRAIN,
    },
    "recovery": {
        "empty_newest_segment_stays_torn": SEEDS["recovery"]["short_header_newest"],
    },
}

for target, seeds in KNOWN_BUGS.items():
    directory = HERE.parent / "known_bugs" / target
    directory.mkdir(parents=True, exist_ok=True)
    for name, data in seeds.items():
        (directory / name).write_bytes(data)

for target, seeds in SEEDS.items():
    directory = HERE / target
    directory.mkdir(exist_ok=True)
    for name, data in seeds.items():
        (directory / name).write_bytes(data)
