// The browser codec against the byte examples of docs/protocol.md (written out by hand here,
// not produced by the encoder), plus the ways a server message can be cut or corrupted.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as p from '../proto.js';

const hex = (s) => Uint8Array.from(s.trim().split(/\s+/), (h) => parseInt(h, 16));
const GENERAL = '00 08 23 67 65 6e 65 72 61 6c';
const cat = (...parts) => {
  const out = new Uint8Array(parts.reduce((n, b) => n + b.length, 0));
  let at = 0;
  for (const b of parts) { out.set(b, at); at += b.length; }
  return out;
};

const WELCOME = hex(`00 00 00 27 81 01 11 22 33 44 55 66 77 88 00 00 00 00 00 00 00 01
  00 01 00 00 00 00 ea 60 00 0b 63 68 61 74 64 2f 30 2e 31 2e 30`);
const JOINED = hex(`00 00 00 1b 82 ${GENERAL} 00 00 00 00 00 00 00 01 00 00 00 00 00 00 00 02`);
const LEFT = hex(`00 00 00 0b 83 ${GENERAL}`);
const MSG = hex(`00 00 00 24 84 ${GENERAL} 00 00 00 00 00 00 00 03 00 00 01 8b cf e5 68 00
  00 05 61 6c 69 63 65 68 69`);
const ACK = hex('00 00 00 11 85 00 00 00 00 00 00 00 07 00 00 00 00 00 00 00 03');
const PONG = hex('00 00 00 09 86 00 00 00 00 00 00 00 2a');
const ERROR = hex(`00 00 00 19 87 00 09 00 00 00 00 00 00 00 07 00 0c
  72 61 74 65 20 6c 69 6d 69 74 65 64`);

test('client frames encode to the bytes of the protocol examples', () => {
  assert.deepEqual(p.encodeHello('alice', 's3cret'),
    hex('00 00 00 11 01 01 00 05 61 6c 69 63 65 00 06 73 33 63 72 65 74'));
  assert.deepEqual(p.encodeJoin('#general', 0n, p.ALL),
    hex(`00 00 00 17 02 ${GENERAL} 00 00 00 00 00 00 00 00 ff ff ff ff`));
  assert.deepEqual(p.encodeLeave('#general'), hex(`00 00 00 0b 03 ${GENERAL}`));
  assert.deepEqual(p.encodeSend('#general', 7n, 'hi'),
    hex(`00 00 00 15 04 ${GENERAL} 00 00 00 00 00 00 00 07 68 69`));
  assert.deepEqual(p.encodePing(42n), hex('00 00 00 09 05 00 00 00 00 00 00 00 2a'));
  assert.deepEqual(p.encodeBye(), hex('00 00 00 01 06'));
});

test('server frames decode from the bytes of the protocol examples', () => {
  assert.deepEqual(p.decodeFrames(WELCOME), [{ type: 'welcome', version: 1,
    epoch: 0x1122334455667788n, session: 1n, maxFrame: 65536, idleTimeoutMs: 60000,
    server: 'chatd/0.1.0' }]);
  assert.deepEqual(p.decodeFrames(JOINED), [{ type: 'joined', room: '#general', first: 1n, head: 2n }]);
  assert.deepEqual(p.decodeFrames(LEFT), [{ type: 'left', room: '#general' }]);
  assert.deepEqual(p.decodeFrames(MSG), [{ type: 'msg', room: '#general', seq: 3n,
    tsMs: 1700000000000n, user: 'alice', text: 'hi' }]);
  assert.deepEqual(p.decodeFrames(ACK), [{ type: 'ack', id: 7n, seq: 3n }]);
  assert.deepEqual(p.decodeFrames(PONG), [{ type: 'pong', nonce: 42n }]);
  assert.deepEqual(p.decodeFrames(ERROR), [{ type: 'error', code: 9, ref: 7n, message: 'rate limited' }]);
});

test('a message holding several frames yields all of them in order', () => {
  const frames = p.decodeFrames(cat(WELCOME, JOINED, MSG, ACK, PONG).buffer);
  assert.deepEqual(frames.map((f) => f.type), ['welcome', 'joined', 'msg', 'ack', 'pong']);
  assert.deepEqual(p.decodeFrames(new Uint8Array(0)), []);
});

test('a message cut anywhere inside a frame is an error, never a shorter frame', () => {
  const two = cat(JOINED, MSG);
  for (let cut = 1; cut < two.length; cut++) {
    if (cut === JOINED.length) continue; // a whole frame: fine
    assert.throws(() => p.decodeFrames(two.subarray(0, cut)), p.ProtocolError, `cut at ${cut}`);
  }
  assert.equal(p.decodeFrames(two.subarray(0, JOINED.length)).length, 1);
});

test('a frame whose body is short, long or zero-length is an error', () => {
  assert.throws(() => p.decodeFrames(hex('00 00 00 00')), /length 0/);
  // ACK with one id byte missing; PONG with a byte left over.
  assert.throws(() => p.decodeFrames(hex('00 00 00 10 85 00 00 00 00 00 00 07 00 00 00 00 00 00 00 03')), /too short/);
  assert.throws(() => p.decodeFrames(hex('00 00 00 0a 86 00 00 00 00 00 00 00 2a 00')), /trailing/);
  // LEFT whose room claims 9 bytes of the 8 present.
  assert.throws(() => p.decodeFrames(hex('00 00 00 0b 83 00 09 23 67 65 6e 65 72 61 6c')), /too short/);
});

test('UTF-8 is decoded exactly and invalid UTF-8 is an error', () => {
  // MSG in room "é" (c3 a9) by "bob": text "€ 👋" then a leading BOM kept as text.
  const text = 'e2 82 ac 20 f0 9f 91 8b';
  const msg = (t) => {
    const body = hex(`00 02 c3 a9 00 00 00 00 00 00 00 01 00 00 00 00 00 00 00 02 00 03 62 6f 62 ${t}`);
    return cat(hex(`00 00 00 ${(body.length + 1).toString(16).padStart(2, '0')} 84`), body);
  };
  const [f] = p.decodeFrames(msg(text));
  assert.equal(f.room, 'é');
  assert.equal(f.text, '€ 👋');
  assert.equal(p.decodeFrames(msg(`ef bb bf ${text}`))[0].text, '\ufeff€ 👋');
  assert.throws(() => p.decodeFrames(msg('c3')), /UTF-8/); // a cut 2-byte sequence
  assert.throws(() => p.decodeFrames(msg('ed a0 80')), /UTF-8/); // a surrogate
  assert.deepEqual(p.encodeSend('é', 1n, '€'),
    hex('00 00 00 10 04 00 02 c3 a9 00 00 00 00 00 00 00 01 e2 82 ac'));
});

test('u64 fields beyond 2^53 keep every bit both ways', () => {
  const big = 2n ** 53n + 1n; // 9007199254740993: a Number would round it to ...992
  const ack = hex('00 00 00 11 85 00 20 00 00 00 00 00 01 ff ff ff ff ff ff ff ff');
  assert.deepEqual(p.decodeFrames(ack), [{ type: 'ack', id: big, seq: 2n ** 64n - 1n }]);
  assert.deepEqual(p.encodePing(big), hex('00 00 00 09 05 00 20 00 00 00 00 00 01'));
  assert.deepEqual(p.encodeJoin('a', 2n ** 64n - 1n, 0),
    hex('00 00 00 10 02 00 01 61 ff ff ff ff ff ff ff ff 00 00 00 00'));
  assert.throws(() => p.encodePing(2n ** 64n), RangeError);
  assert.throws(() => p.encodePing(-1n), RangeError);
});

test('kinds: a later server kind is skipped by its length, a client kind is an error', () => {
  const later = hex('00 00 00 03 90 01 02');
  assert.deepEqual(p.decodeFrames(cat(later, PONG)), [{ type: 'unknown', kind: 0x90 }, { type: 'pong', nonce: 42n }]);
  assert.throws(() => p.decodeFrames(hex('00 00 00 01 06')), /not a server frame/);
});

test('names follow the spec and are checked by bytes', () => {
  assert.ok(p.isValidUser('a.b_c-9') && p.isValidUser('x'.repeat(32)));
  for (const bad of ['', 'x'.repeat(33), 'al ice', 'é', '#a', 'a\n']) assert.ok(!p.isValidUser(bad), bad);
  assert.ok(p.isValidRoom('#general') && p.isValidRoom('#'.repeat(64)) && p.isValidRoom('a.b_c-9'));
  for (const bad of ['', '#'.repeat(65), '#a b', '#é', '#a/', '#a\n']) assert.ok(!p.isValidRoom(bad), bad);
});

test('msgLength is the MSG length field the server compares with max_frame', () => {
  assert.equal(p.msgLength('#general', 'alice', 'hi'), 0x24); // the MSG example above
  assert.equal(p.msgLength('#a', 'bob', '€👋'), 21 + 2 + 3 + 7);
});

test('errors: names by code, and which ones end the connection', () => {
  assert.equal(p.errorName(5), 'AUTH_FAILED');
  assert.equal(p.errorName(15), 'INTERNAL');
  assert.equal(p.errorName(99), 'error 99');
  for (const code of [1, 2, 3, 4, 5, 6, 11, 12, 13, 15]) assert.ok(p.isFatal(code, true), `${code}`);
  for (const code of [7, 8, 9, 14, 99]) assert.ok(!p.isFatal(code, true), `${code}`);
  assert.ok(p.isFatal(10, false), 'TOO_MANY at connect');
  assert.ok(!p.isFatal(10, true), 'TOO_MANY on a JOIN');
});

test('version 2: HELLO carries the client id; WHO and WATCH encode byte for byte', () => {
  assert.deepEqual(p.encodeHello('alice', 's3cret', 2, 0x0102030405060708n),
    hex('00 00 00 19 01 02 00 05 61 6c 69 63 65 00 06 73 33 63 72 65 74 01 02 03 04 05 06 07 08'));
  assert.deepEqual(p.encodeHello('alice', 's3cret', 1, 99n), p.encodeHello('alice', 's3cret'),
    'version 1 has no client field');
  assert.deepEqual(p.encodeHello('a', 't', 2, 2n ** 64n - 1n).subarray(-8), hex('ff ff ff ff ff ff ff ff'));
  assert.throws(() => p.encodeHello('a', 't', 2, 2n ** 64n), RangeError);
  assert.deepEqual(p.encodeWho('#general'), hex(`00 00 00 0b 07 ${GENERAL}`));
  assert.deepEqual(p.encodeWatch('#general', true), hex(`00 00 00 0c 08 ${GENERAL} 01`));
  assert.deepEqual(p.encodeWatch('#general', false), hex(`00 00 00 0c 08 ${GENERAL} 00`));
});

test('version 2: MEMBERS and PRESENCE decode, and are cut or padded only as errors', () => {
  const members = hex(`00 00 00 1d 88 ${GENERAL} 00 00 00 05 00 02 00 05 61 6c 69 63 65 00 03 62 6f 62`);
  assert.deepEqual(p.decodeFrames(members), [{ type: 'members', room: '#general', total: 5,
    users: ['alice', 'bob'] }]);
  const none = hex(`00 00 00 11 88 ${GENERAL} 00 00 00 00 00 00`);
  assert.deepEqual(p.decodeFrames(none), [{ type: 'members', room: '#general', total: 0, users: [] }]);
  const joinedBob = hex(`00 00 00 11 89 ${GENERAL} 00 03 62 6f 62 01`);
  const leftBob = hex(`00 00 00 11 89 ${GENERAL} 00 03 62 6f 62 00`);
  assert.deepEqual(p.decodeFrames(cat(joinedBob, leftBob)), [
    { type: 'presence', room: '#general', user: 'bob', here: true },
    { type: 'presence', room: '#general', user: 'bob', here: false }]);
  // MEMBERS whose count says 3 names where 2 are present; PRESENCE with a byte left over.
  const short = hex(`00 00 00 1d 88 ${GENERAL} 00 00 00 05 00 03 00 05 61 6c 69 63 65 00 03 62 6f 62`);
  assert.throws(() => p.decodeFrames(short), /too short/);
  assert.throws(() => p.decodeFrames(hex(`00 00 00 12 89 ${GENERAL} 00 03 62 6f 62 01 00`)), /trailing/);
});

test('version 2: FORBIDDEN and STALE_ID are named and not fatal', () => {
  assert.equal(p.errorName(16), 'FORBIDDEN');
  assert.equal(p.errorName(17), 'STALE_ID');
  assert.ok(!p.isFatal(16, true) && !p.isFatal(17, true));
  assert.ok(!p.isFatal(16, false) && !p.isFatal(17, false));
});

test('direct rooms: the canonical name in byte order, shown by the other names', () => {
  assert.equal(p.directRoom(['bob', 'alice']), '@alice+bob');
  assert.equal(p.directRoom(['bob', 'alice', 'bob']), '@alice+bob');
  assert.equal(p.directRoom(['alice', 'Zed']), '@Zed+alice', 'upper case sorts first');
  assert.equal(p.directRoom(['alice', 'alice']), null);
  assert.equal(p.directRoom(['alice', 'b b']), null);
  assert.equal(p.directRoom(['a', 'b', 'c', 'd', 'e', 'f', 'g', 'h', 'i']), null, 'at most 8');
  assert.equal(p.directRoom(['a'.repeat(31), 'b'.repeat(31)]).length, 64);
  assert.equal(p.directRoom(['a'.repeat(31), 'b'.repeat(32)]), null, 'at most 64 bytes');
  for (const good of ['@alice+bob', '@a+b+c+d+e+f+g+h', '@Zed+alice']) assert.ok(p.isDirectRoom(good), good);
  for (const bad of ['@alice', '@', '@+', 'alice+bob', '@bob+alice', '@alice+alice', '@alice++bob',
    '@alice+bob+', '@+alice+bob', '@alice+b b', '@a+b+c+d+e+f+g+h+i', '@#a+b', '@alice+Zed']) {
    assert.ok(!p.isDirectRoom(bad) && !p.isValidRoomV2(bad), bad);
  }
  assert.ok(p.isValidRoomV2('#general') && !p.isValidRoom('@alice+bob'));
  assert.equal(p.roomLabel('@alice+bob', 'alice'), 'bob');
  assert.equal(p.roomLabel('@alice+bob+carol', 'bob'), 'alice, carol');
  assert.equal(p.roomLabel('@bob+carol', 'alice'), '@bob+carol', 'not a member: the name');
  assert.equal(p.roomLabel('#general', 'alice'), '#general');
});

test('version choice: only UNSUPPORTED_VERSION or MALFORMED to a version 2 HELLO falls back', () => {
  assert.ok(p.fallsBack(4, false, 2) && p.fallsBack(1, false, 2));
  assert.ok(!p.fallsBack(4, false, 1), 'version 1 refused too: nothing older to try');
  assert.ok(!p.fallsBack(1, true, 2), 'MALFORMED after WELCOME is a plain error');
  for (const code of [5, 10, 12, 13, 15]) assert.ok(!p.fallsBack(code, false, 2), `${code}`);
});
