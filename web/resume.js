// What survives a dropped connection: per room the last seq delivered (the cursor), what the
// next connection asks each room for, the reconnect backoff and the keep-alive clock. Pure,
// no DOM and no socket, so node tests drive it. It never lets a seq of one epoch stand in
// another, and never delivers a seq at or below a room's cursor.

import { ALL } from './proto.js';

export const HISTORY = 100; // messages shown on a room's first join
export const BACKOFF_BASE_MS = 500;
export const BACKOFF_CAP_MS = 30000;

const max = (a, b) => (a > b ? a : b);
const min = (a, b) => (a < b ? a : b);

// A room as the page wants it: `cursor` is the last seq delivered (BigInt), null until the
// first JOINED; `asked` is the (after, limit) of the JOIN in flight.
export const newRoom = (name) => ({ name, cursor: null, asked: { after: 0n, limit: HISTORY } });

// The pause before reconnect attempt `attempt` (0 first): doubling from 0.5 s up to 30 s,
// then up to half of it taken off at random, so clients dropped together do not all return
// together.
export function backoff(attempt, random = Math.random()) {
  const full = Math.min(BACKOFF_BASE_MS * 2 ** attempt, BACKOFF_CAP_MS);
  return full * (0.5 + 0.5 * random);
}

// The JOINs of a fresh connection. Under the epoch the cursors came from, each room resumes
// after its cursor and gets everything it missed; otherwise (first connection, or the
// server's history started over) every room starts from scratch with the last `history`.
export function resumePlan(rooms, oldEpoch, newEpoch, history = HISTORY) {
  const same = oldEpoch === newEpoch; // null (no epoch yet) equals no BigInt
  return {
    epochChanged: oldEpoch !== null && !same,
    joins: rooms.map((r) => (same && r.cursor !== null
      ? { room: r.name, after: r.cursor, limit: ALL }
      : { room: r.name, after: 0n, limit: history })),
  };
}

// The first seq that JOIN(after, limit) replays given JOINED(first, head); as the spec's
// window (max(after, head - limit), head], nothing below `first`.
export function replayStart(after, limit, first, head) {
  const from = limit === ALL ? after : max(after, max(head - BigInt(limit), 0n));
  const retainedFrom = first === 0n ? head + 1n : first;
  return max(min(from, head) + 1n, retainedFrom);
}

// Takes JOINED in: the cursor moves to just before the replay, and a range [a, b] is
// returned when retention deleted messages this room had not seen yet (else null).
export function joined(room, first, head) {
  const next = replayStart(room.asked.after, room.asked.limit, first, head);
  const gap = room.cursor !== null && next > room.cursor + 1n ? [room.cursor + 1n, next - 1n] : null;
  room.cursor = max(room.cursor ?? 0n, next - 1n);
  return gap;
}

// Whether MSG `seq` is new to the room (and moves its cursor); false for one already shown
// or one from before this connection's JOINED.
export function accept(room, seq) {
  if (room.cursor === null || seq <= room.cursor) return false;
  room.cursor = seq;
  return true;
}

// The keep-alive clock of one connection: tick() every `every` ms; it says 'ping', or
// 'dead' when nothing at all (PONG or anything else) has come since the previous PING.
export class Liveness {
  constructor(idleTimeoutMs, now) {
    // A third of the server's idle timeout; 20 s if it announces none; never under 100 ms.
    this.every = idleTimeoutMs > 0 ? Math.max(Math.floor(idleTimeoutMs / 3), 100) : 20000;
    this.heardAt = now;
    this.sentAt = -Infinity;
  }
  heard(now) {
    this.heardAt = now;
  }
  tick(now) {
    if (this.heardAt < this.sentAt) return 'dead';
    this.sentAt = now;
    return 'ping';
  }
}
