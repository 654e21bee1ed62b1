// The outbox and client id of the page, over a storage that stands in for localStorage.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Outbox, freshClient, verdict, retryDelay } from '../outbox.js';

class Memory {
  constructor() { this.m = new Map(); }
  getItem(k) { return this.m.has(k) ? this.m.get(k) : null; }
  setItem(k, v) { this.m.set(k, String(v)); }
  removeItem(k) { this.m.delete(k); }
}
const bytes = (...xs) => (b) => { b.set(xs.shift() ?? [0, 0, 0, 0, 0, 0, 0, 7]); return b; };

test('the client id is random, non-zero, made once per user and kept across reloads', () => {
  const s = new Memory();
  const random = bytes([0, 0, 0, 0, 0, 0, 0, 0], [0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff]);
  const a = new Outbox(s, 'alice', random);
  assert.equal(a.client, 2n ** 64n - 1n, 'zero is drawn again; every bit of a u64 kept');
  assert.equal(new Outbox(s, 'alice', bytes([1, 2, 3, 4, 5, 6, 7, 8])).client, 2n ** 64n - 1n, 'a reload keeps it');
  assert.equal(new Outbox(s, 'bob', bytes([0, 0, 0, 0, 0, 0, 1, 0])).client, 256n, 'another user, another id');
  assert.equal(freshClient(bytes([0, 0, 0, 0, 0, 0, 0, 0], [0, 0, 0, 0, 0, 0, 0, 2])), 2n);
});

test('ids increase across reloads and entries wait in id order until done', () => {
  const s = new Memory();
  const o = new Outbox(s, 'alice', bytes());
  assert.deepEqual(o.add('#a', 'one'), { room: '#a', id: 1n, text: 'one' });
  o.add('@alice+bob', 'two\nlines');
  o.add('#a', '€ 👋');
  assert.deepEqual(o.done(1n), { room: '#a', id: 1n, text: 'one' });
  assert.equal(o.done(1n), null, 'done twice is nothing');
  const again = new Outbox(s, 'alice', bytes());
  assert.deepEqual(again.pending(), [
    { room: '@alice+bob', id: 2n, text: 'two\nlines' },
    { room: '#a', id: 3n, text: '€ 👋' },
  ]);
  assert.equal(again.add('#a', 'four').id, 4n, 'a reload never reuses an id');
  again.done(2n); again.done(3n); again.done(4n);
  assert.deepEqual(again.pending(), []);
  assert.equal(s.getItem('chatd.outbox.alice'), null, 'an empty outbox leaves nothing stored');
  assert.equal(new Outbox(s, 'alice', bytes()).add('#a', 'x').id, 5n);
});

test('two tabs of one user share the id space and never take the same id', () => {
  const s = new Memory();
  const a = new Outbox(s, 'alice', bytes());
  const b = new Outbox(s, 'alice', bytes());
  assert.equal(a.client, b.client);
  const ids = [a.add('#a', '1').id, b.add('#a', '2').id, a.add('#a', '3').id];
  assert.deepEqual(ids, [1n, 2n, 3n]);
  assert.deepEqual(b.pending().map((e) => e.text), ['1', '2', '3']);
});

test('ids beyond 2^53 keep every bit', () => {
  const s = new Memory();
  const o = new Outbox(s, 'alice', bytes());
  s.setItem('chatd.client.alice', JSON.stringify({ client: '7', next: String(2n ** 53n + 1n) }));
  assert.equal(o.add('#a', 'x').id, 2n ** 53n + 1n);
  assert.equal(o.add('#a', 'y').id, 2n ** 53n + 2n);
  assert.deepEqual(o.pending().map((e) => e.id), [2n ** 53n + 1n, 2n ** 53n + 2n]);
});

test('storage that is not ours: a fresh client id, and unreadable entries skipped', () => {
  const s = new Memory();
  s.setItem('chatd.client.alice', 'not json');
  s.setItem('chatd.outbox.alice', JSON.stringify([['#a', '3', 'ok'], ['#a', 'x', 'bad id'],
    ['#a', '-1', 'negative'], [1, '4', 'bad room'], 'junk', ['#a', String(2n ** 64n), 'too big']]));
  const o = new Outbox(s, 'alice', bytes([0, 0, 0, 0, 0, 0, 0, 9]));
  assert.equal(o.client, 9n);
  assert.deepEqual(o.pending(), [{ room: '#a', id: 3n, text: 'ok' }]);
  s.setItem('chatd.outbox.alice', '{');
  assert.deepEqual(o.pending(), []);
});

test('clear drops what waits but keeps the client id and the next id', () => {
  const s = new Memory();
  const o = new Outbox(s, 'alice', bytes());
  o.add('#a', 'x');
  o.clear();
  assert.deepEqual(o.pending(), []);
  assert.equal(o.client, 7n);
  assert.equal(o.add('#a', 'y').id, 2n);
});

test('an ERROR about a waiting message: retry, stale or failed, by code and version', () => {
  assert.equal(verdict(9, 2), 'retry', 'RATE_LIMITED on version 2 is kept and sent again');
  assert.equal(verdict(9, 1), 'failed', 'version 1 never resends by itself');
  assert.equal(verdict(17, 2), 'stale');
  for (const code of [7, 8, 14, 16, 99]) assert.equal(verdict(code, 2), 'failed', `${code}`);
  assert.deepEqual([0, 1, 2, 3, 4, 5, 40].map(retryDelay), [500, 1000, 2000, 4000, 8000, 8000, 8000]);
});
