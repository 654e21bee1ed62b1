// The chatd protocol codec for the browser (version 1, and the additions of version 2):
// client frames to bytes, bytes to server frames. Pure: no DOM, no socket, so node tests drive it byte for byte. u64 fields are
// BigInt both ways (seq, ts_ms, ids and epochs may exceed 2^53). It never guesses: a short
// body, trailing bytes, bad UTF-8 or a partial frame throws ProtocolError.

const utf8 = new TextEncoder();
// fatal: bad UTF-8 is an error, not U+FFFD; ignoreBOM: a leading U+FEFF is text, kept.
const text8 = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });

export const ALL = 0xffffffff; // JOIN limit: every retained message
export const V1 = 1;
export const V2 = 2;

export class ProtocolError extends Error {}

// Error codes by number (index = code), as in the spec's Errors table.
export const ERRORS = ['', 'MALFORMED', 'TOO_LARGE', 'UNKNOWN_KIND', 'UNSUPPORTED_VERSION',
  'AUTH_FAILED', 'NOT_AUTHENTICATED', 'INVALID', 'NOT_JOINED', 'RATE_LIMITED', 'TOO_MANY',
  'SLOW_CONSUMER', 'TIMEOUT', 'SHUTTING_DOWN', 'STORAGE', 'INTERNAL', 'FORBIDDEN', 'STALE_ID'];
export const E = { MALFORMED: 1, UNSUPPORTED_VERSION: 4, AUTH_FAILED: 5, INVALID: 7,
  NOT_JOINED: 8, RATE_LIMITED: 9, TOO_MANY: 10, FORBIDDEN: 16, STALE_ID: 17 };
const NOT_FATAL = [7, 8, 9, 14, 16, 17];

export const errorName = (code) => ERRORS[code] || `error ${code}`;

// Whether an ERROR ends the connection. TOO_MANY is fatal only at connect (before WELCOME);
// a code this page does not know is taken as not fatal (the close will tell).
export const isFatal = (code, welcomed) =>
  code === 10 ? !welcomed : code >= 1 && code <= 17 && !NOT_FATAL.includes(code);

// Whether an ERROR to a version 2 HELLO means "ask again in version 1": UNSUPPORTED_VERSION,
// or MALFORMED, which is how a chatd from before version 2 reads a version 2 HELLO.
export const fallsBack = (code, welcomed, version) =>
  version === V2 && !welcomed && (code === E.UNSUPPORTED_VERSION || code === E.MALFORMED);

export const isValidUser = (s) => /^[A-Za-z0-9._-]{1,32}$/.test(s);
export const isValidRoom = (s) => /^[A-Za-z0-9._#-]{1,64}$/.test(s);
export const byteLength = (s) => utf8.encode(s).length;

// Direct rooms (version 2): `@` + 2 to 8 distinct user names in ascending byte order joined
// by `+`, at most 64 bytes. User names are ASCII, so UTF-16 order is byte order.
const DIRECT_USERS_MAX = 8;
const byBytes = (a, b) => (a < b ? -1 : a > b ? 1 : 0);
export function directMembers(name) {
  if (!name.startsWith('@') || name.length > 64) return null;
  const users = name.slice(1).split('+');
  if (users.length < 2 || users.length > DIRECT_USERS_MAX || !users.every(isValidUser)) return null;
  for (let i = 1; i < users.length; i++) if (byBytes(users[i - 1], users[i]) >= 0) return null;
  return users;
}
export const isDirectRoom = (name) => directMembers(name) !== null;
// A room name as version 2 takes it: a version 1 name or a canonical direct room.
export const isValidRoomV2 = (name) => isValidRoom(name) || isDirectRoom(name);
// The canonical direct room of `users` (any order, repeats allowed), or null if there is none.
export function directRoom(users) {
  const name = `@${[...new Set(users)].sort(byBytes).join('+')}`;
  return isDirectRoom(name) ? name : null;
}
// How a room is shown to `me`: a direct room by the other members' names ("bob" for alice's
// @alice+bob), every other room by its name.
export function roomLabel(name, me) {
  const users = directMembers(name);
  if (!users) return name;
  const others = users.filter((u) => u !== me);
  return others.length === users.length ? name : others.join(', ');
}

// The length field of the MSG a SEND becomes; the server refuses it above max_frame.
export const msgLength = (room, user, text) =>
  21 + byteLength(room) + byteLength(user) + byteLength(text);

function frame(kind, parts) {
  const size = parts.reduce((n, p) => n + p.length, 0);
  const out = new Uint8Array(5 + size);
  new DataView(out.buffer).setUint32(0, 1 + size);
  out[4] = kind;
  let at = 5;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

function fixed(bytes, put) {
  const b = new Uint8Array(bytes);
  put(new DataView(b.buffer));
  return b;
}

const u8 = (v) => Uint8Array.of(v);
const u32 = (v) => fixed(4, (d) => d.setUint32(0, v));
function u64(v) {
  const n = BigInt(v);
  if (BigInt.asUintN(64, n) !== n) throw new RangeError(`${v} is not a u64`);
  return fixed(8, (d) => d.setBigUint64(0, n));
}
function str(s) {
  const b = utf8.encode(s);
  if (b.length > 0xffff) throw new RangeError('string longer than 65535 bytes');
  return concat(fixed(2, (d) => d.setUint16(0, b.length)), b);
}
function concat(a, b) {
  const out = new Uint8Array(a.length + b.length);
  out.set(a);
  out.set(b, a.length);
  return out;
}

// HELLO of version 1, or of version 2 with this installation's client id (0: no dedupe).
export const encodeHello = (user, token, version = V1, client = 0n) => (version === V1
  ? frame(0x01, [u8(V1), str(user), str(token)])
  : frame(0x01, [u8(version), str(user), str(token), u64(client)]));
export const encodeJoin = (room, after, limit) => frame(0x02, [str(room), u64(after), u32(limit)]);
export const encodeLeave = (room) => frame(0x03, [str(room)]);
export const encodeSend = (room, id, text) => frame(0x04, [str(room), u64(id), utf8.encode(text)]);
export const encodePing = (nonce) => frame(0x05, [u64(nonce)]);
export const encodeBye = () => frame(0x06, []);
export const encodeWho = (room) => frame(0x07, [str(room)]);
export const encodeWatch = (room, on) => frame(0x08, [str(room), u8(on ? 1 : 0)]);

class Reader {
  constructor(b) {
    this.b = b;
    this.d = new DataView(b.buffer, b.byteOffset, b.byteLength);
    this.at = 0;
  }
  take(n) {
    if (this.at + n > this.b.length) throw new ProtocolError('frame body too short');
    this.at += n;
    return this.at - n;
  }
  u8() { return this.b[this.take(1)]; }
  u16() { return this.d.getUint16(this.take(2)); }
  u32() { return this.d.getUint32(this.take(4)); }
  u64() { return this.d.getBigUint64(this.take(8)); }
  str() {
    const n = this.u16();
    const at = this.take(n);
    return decodeUtf8(this.b.subarray(at, at + n));
  }
  text() {
    const at = this.take(this.b.length - this.at);
    return decodeUtf8(this.b.subarray(at));
  }
  end(value) {
    if (this.at !== this.b.length) throw new ProtocolError('trailing bytes after the last field');
    return value;
  }
}

function decodeUtf8(b) {
  try {
    return text8.decode(b);
  } catch {
    throw new ProtocolError('invalid UTF-8');
  }
}

// One server frame from its kind and body.
export function decodeFrame(kind, body) {
  const r = new Reader(body);
  switch (kind) {
    case 0x81: return r.end({ type: 'welcome', version: r.u8(), epoch: r.u64(), session: r.u64(),
      maxFrame: r.u32(), idleTimeoutMs: r.u32(), server: r.str() });
    case 0x82: return r.end({ type: 'joined', room: r.str(), first: r.u64(), head: r.u64() });
    case 0x83: return r.end({ type: 'left', room: r.str() });
    case 0x84: return r.end({ type: 'msg', room: r.str(), seq: r.u64(), tsMs: r.u64(),
      user: r.str(), text: r.text() });
    case 0x85: return r.end({ type: 'ack', id: r.u64(), seq: r.u64() });
    case 0x86: return r.end({ type: 'pong', nonce: r.u64() });
    case 0x87: return r.end({ type: 'error', code: r.u16(), ref: r.u64(), message: r.str() });
    case 0x88: {
      const room = r.str();
      const total = r.u32();
      const users = Array.from({ length: r.u16() }, () => r.str());
      return r.end({ type: 'members', room, total, users });
    }
    case 0x89: return r.end({ type: 'presence', room: r.str(), user: r.str(), here: r.u8() === 1 });
  }
  // The spec may add server kinds later; their length still delimits them, so skip them.
  if (kind >= 0x81 && kind <= 0xbf) return { type: 'unknown', kind };
  throw new ProtocolError(`kind 0x${kind.toString(16)} is not a server frame`);
}

// Every frame of one WebSocket message, in order. The server packs whole frames only, so a
// leftover partial frame is an error rather than something to keep for the next message.
export function decodeFrames(data) {
  const b = data instanceof Uint8Array ? data : new Uint8Array(data);
  const d = new DataView(b.buffer, b.byteOffset, b.byteLength);
  const out = [];
  let at = 0;
  while (at < b.length) {
    if (b.length - at < 4) throw new ProtocolError('truncated frame');
    const len = d.getUint32(at);
    if (len === 0) throw new ProtocolError('frame length 0');
    if (b.length - at - 4 < len) throw new ProtocolError('truncated frame');
    out.push(decodeFrame(b[at + 4], b.subarray(at + 5, at + 4 + len)));
    at += 4 + len;
  }
  return out;
}
