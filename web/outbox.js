// The page's client id and outbox for one user in one browser (protocol version 2): the
// client id is a random non-zero u64 made once and kept; message ids only ever increase for
// it, across reloads; every message typed waits here, with its id, until its ACK, so that
// one typed while disconnected, or whose ACK a dropped connection took away, is sent again
// with its original id and the server stores it once; and what an ERROR about one of those
// messages does to it. Pure: the storage (localStorage in the page, a Map in the tests) and
// the random source are passed in; no DOM, no socket. It never hands out an id twice, and
// never changes the id or text of a message it holds.

const U64 = 2n ** 64n;
const RATE_LIMITED = 9;
const STALE_ID = 17;
// RATE_LIMITED on version 2: sent again after 0.5 s, doubling to 8 s.
export const RETRY_BASE_MS = 500;
export const RETRY_CAP_MS = 8000;

// What an ERROR about a message of the outbox does to it: 'retry' (kept, sent again after
// retryDelay: RATE_LIMITED on version 2, where a resend cannot store it twice), 'stale'
// (STALE_ID: dropped, the server cannot tell whether it was stored) or 'failed' (dropped as
// refused; on version 1 RATE_LIMITED too, as the page never resends there by itself).
export function verdict(code, version) {
  if (code === RATE_LIMITED && version === 2) return 'retry';
  return code === STALE_ID ? 'stale' : 'failed';
}

// The pause before the retry after the `tries`-th RATE_LIMITED (0 first).
export const retryDelay = (tries) => Math.min(RETRY_BASE_MS * 2 ** tries, RETRY_CAP_MS);

// A random non-zero u64 from `random(bytes)`, which fills a Uint8Array (crypto.getRandomValues).
export function freshClient(random) {
  for (;;) {
    const b = random(new Uint8Array(8));
    const n = b.reduce((acc, x) => (acc << 8n) | BigInt(x), 0n);
    if (n !== 0n) return n;
  }
}

const parse = (s) => {
  try {
    return JSON.parse(s);
  } catch {
    return null;
  }
};
const u64 = (s) => {
  try {
    const n = BigInt(s);
    return n >= 0n && n < U64 ? n : null;
  } catch {
    return null;
  }
};

export class Outbox {
  // `storage`: getItem/setItem/removeItem as localStorage; `random`: see freshClient.
  constructor(storage, user, random) {
    this.storage = storage;
    this.idsKey = `chatd.client.${user}`;
    this.boxKey = `chatd.outbox.${user}`;
    this.random = random;
    const ids = this.ids();
    if (ids === null) this.write(this.idsKey, { client: String(freshClient(random)), next: '1' });
  }

  // { client, next } as kept, or null when nothing (valid) is kept.
  ids() {
    const v = parse(this.read(this.idsKey));
    const client = u64(v?.client);
    const next = u64(v?.next);
    return client && next ? { client, next } : null;
  }

  // This browser's client id for the user (created in the constructor; made again, with a
  // fresh id space, if the storage lost it meanwhile).
  get client() {
    let ids = this.ids();
    if (ids === null) {
      ids = { client: freshClient(this.random), next: 1n };
      this.write(this.idsKey, { client: String(ids.client), next: '1' });
    }
    return ids.client;
  }

  // Every message waiting, in id order: { room, id (BigInt), text }.
  pending() {
    const v = parse(this.read(this.boxKey));
    if (!Array.isArray(v)) return [];
    const out = [];
    for (const e of v) {
      const id = Array.isArray(e) ? u64(e[1]) : null;
      if (id !== null && typeof e[0] === 'string' && typeof e[2] === 'string') {
        out.push({ room: e[0], id, text: e[2] });
      }
    }
    return out.sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
  }

  // Gives `text` for `room` the next id and keeps it; returns the entry. Read, raise and
  // written back at once, so two tabs of the same user never take the same id.
  add(room, text) {
    const client = this.client;
    const { next } = this.ids();
    this.write(this.idsKey, { client: String(client), next: String(next + 1n) });
    const entry = { room, id: next, text };
    this.save([...this.pending(), entry]);
    return entry;
  }

  // `id` was ACKed or refused: it leaves the outbox. Returns the entry, or null if not held.
  done(id) {
    const all = this.pending();
    const entry = all.find((e) => e.id === id) ?? null;
    if (entry) this.save(all.filter((e) => e !== entry));
    return entry;
  }

  // Logging out: what waits is dropped; the client id and the next id stay, never reused.
  clear() {
    this.storage.removeItem(this.boxKey);
  }

  save(entries) {
    if (entries.length === 0) return this.storage.removeItem(this.boxKey);
    this.write(this.boxKey, entries.map((e) => [e.room, String(e.id), e.text]));
  }

  read(key) {
    return this.storage.getItem(key);
  }

  write(key, value) {
    this.storage.setItem(key, JSON.stringify(value));
  }
}
