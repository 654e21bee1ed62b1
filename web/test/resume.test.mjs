// Resume, backoff and keep-alive logic of the page, without a browser.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { ALL } from '../proto.js';
import * as r from '../resume.js';

const room = (name, cursor) => Object.assign(r.newRoom(name), { cursor });

test('first connection: every room asks for the last HISTORY messages', () => {
  const plan = r.resumePlan([room('#a', null), room('#b', null)], null, 5n);
  assert.equal(plan.epochChanged, false);
  assert.deepEqual(plan.joins, [
    { room: '#a', after: 0n, limit: r.HISTORY },
    { room: '#b', after: 0n, limit: r.HISTORY },
  ]);
});

test('same epoch: every room resumes after its cursor with everything missed', () => {
  const big = 2n ** 60n;
  const plan = r.resumePlan([room('#a', 42n), room('#b', big), room('#new', null)], 7n, 7n);
  assert.equal(plan.epochChanged, false);
  assert.deepEqual(plan.joins, [
    { room: '#a', after: 42n, limit: ALL },
    { room: '#b', after: big, limit: ALL },
    { room: '#new', after: 0n, limit: r.HISTORY }, // its first JOINED never came
  ]);
});

test('another epoch: cursors mean nothing, every room starts over from 0', () => {
  const plan = r.resumePlan([room('#a', 42n)], 7n, 8n);
  assert.equal(plan.epochChanged, true);
  assert.deepEqual(plan.joins, [{ room: '#a', after: 0n, limit: r.HISTORY }]);
});

test('replayStart follows the window formula of the spec', () => {
  // (after, limit, first, head) -> first seq replayed; the table of the daemon's own test.
  const table = [
    [[0n, 0, 1n, 10n], 11n], [[5n, 0, 1n, 10n], 11n], [[0n, ALL, 1n, 10n], 1n],
    [[3n, ALL, 1n, 10n], 4n], [[0n, ALL - 1, 1n, 10n], 1n], [[0n, 3, 1n, 100n], 98n],
    [[90n, 5, 1n, 100n], 96n], [[97n, 5, 1n, 100n], 98n], [[20n, ALL, 1n, 10n], 11n],
    [[20n, 3, 1n, 10n], 11n], [[0n, ALL, 6n, 10n], 6n], [[2n, 8, 6n, 10n], 6n],
    [[2n, 3, 6n, 10n], 8n], [[0n, ALL, 0n, 0n], 1n], [[7n, ALL, 0n, 0n], 1n],
    [[0n, ALL, 0n, 10n], 11n], [[3n, 5, 0n, 10n], 11n],
  ];
  for (const [args, want] of table) assert.equal(r.replayStart(...args), want, args.join(','));
});

test('JOINED then MSGs: no duplicate, nothing from before the JOINED', () => {
  const a = room('#a', null);
  assert.equal(r.accept(a, 1n), false, 'a MSG before the first JOINED');
  a.asked = { after: 0n, limit: 2 };
  assert.equal(r.joined(a, 1n, 10n), null);
  assert.equal(a.cursor, 8n);
  assert.deepEqual([9n, 10n, 10n, 8n, 11n].map((s) => r.accept(a, s)), [true, true, false, false, true]);
  assert.equal(a.cursor, 11n);
});

test('resuming across a drop continues at cursor + 1, and reports a retention gap', () => {
  const a = room('#a', 11n);
  a.asked = { after: 11n, limit: ALL };
  assert.equal(r.joined(a, 1n, 14n), null);
  assert.deepEqual([11n, 12n, 13n, 14n].map((s) => r.accept(a, s)), [false, true, true, true]);
  const b = room('#b', 5n);
  b.asked = { after: 5n, limit: ALL };
  assert.deepEqual(r.joined(b, 9n, 12n), [6n, 8n], 'retention deleted 6-8 while away');
  assert.equal(b.cursor, 8n);
  assert.equal(r.accept(b, 9n), true);
  for (const [first, gap] of [[6n, null], [7n, [6n, 6n]]]) {
    const c = room('#c', 5n);
    c.asked = { after: 5n, limit: ALL };
    assert.deepEqual(r.joined(c, first, 12n), gap, `first ${first}`);
  }
});

test('a cursor above 2^53 resumes exactly', () => {
  const c = 2n ** 53n + 1n;
  const a = room('#a', c);
  a.asked = { after: c, limit: ALL };
  assert.equal(r.joined(a, 1n, c + 2n), null);
  assert.equal(r.accept(a, c), false);
  assert.equal(r.accept(a, c + 1n), true);
});

test('backoff doubles from 0.5 s to 30 s with at most half taken off at random', () => {
  for (let attempt = 0; attempt < 40; attempt++) {
    const full = Math.min(500 * 2 ** attempt, 30000);
    assert.equal(r.backoff(attempt, 0), full / 2, `attempt ${attempt}, random 0`);
    assert.ok(r.backoff(attempt, 0.999999) <= full, `attempt ${attempt}`);
    const x = r.backoff(attempt);
    assert.ok(x >= full / 2 && x <= full && x <= r.BACKOFF_CAP_MS, `${x} for attempt ${attempt}`);
  }
  assert.equal(r.backoff(0, 0.999999999), 499.99999975);
  assert.equal(r.backoff(6, 0), 15000);
  assert.equal(r.backoff(1000, 0.5), 22500);
});

test('keep-alive: PING every third of the idle timeout, dead after a silent interval', () => {
  const live = new r.Liveness(60000, 0);
  assert.equal(live.every, 20000);
  assert.equal(live.tick(20000), 'ping');
  live.heard(20010); // the PONG
  assert.equal(live.tick(40000), 'ping');
  live.heard(45000); // any frame counts, the PONG may be queued behind a replay
  assert.equal(live.tick(60000), 'ping');
  assert.equal(live.tick(80000), 'dead', 'nothing came since the PING at 60 s');
  assert.equal(new r.Liveness(0, 0).every, 20000, 'no idle timeout announced');
  assert.equal(new r.Liveness(150, 0).every, 100, 'never more often than every 100 ms');
});
