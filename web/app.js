// The chat page: the login form, the rooms and their messages, and the one WebSocket to
// chatd it keeps open, resuming every room after a drop. Text from the server reaches the
// page through textContent only, never as HTML. It never resends a message by itself: v1
// has no idempotency, so a SEND the connection took down unconfirmed is marked, not retried.

import * as p from './proto.js';
import { HISTORY, newRoom, backoff, resumePlan, joined, accept, Liveness } from './resume.js';

const HANDSHAKE_MS = 10000; // from opening the socket to WELCOME
const KEEP = 1000; // entries kept on screen per room; older ones are dropped
const KEY = 'chatd.login';
// Plain words before the server's code, for the errors a user meets.
const HINTS = { 2: 'too large', 5: 'unknown user or wrong token', 7: 'refused as invalid',
  8: 'you are not in this room', 9: 'sending too fast, wait a moment',
  10: 'too many rooms or connections', 12: 'the connection was idle too long',
  13: 'the server is stopping', 14: 'the server could not store it' };

const $ = (id) => document.getElementById(id);
function el(tag, cls, text) {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text !== undefined) e.textContent = text;
  return e;
}

let login = null; // { user, token, remember }
const rooms = new Map(); // name -> resume.js room + { log, tab, badge, unread, day }
let current = null; // the room shown
let epoch = null; // the WELCOME epoch the cursors belong to
let maxFrame = 65536;
let conn = null; // { ws, welcomed, live, handshake, pinger, requests }
let attempt = 0;
let retryTimer = null;
let nextId = 1n;
let nonce = 0n;
const pending = new Map(); // SEND id -> { room, text, li, mark }
const acked = new Map(); // `${room}\n${seq}` -> li of an ACKed SEND whose MSG is still due

const reason = (f) => `${HINTS[f.code] ? HINTS[f.code] + ' ' : ''}(${p.errorName(f.code)}${f.message ? ': ' + f.message : ''})`;
const status = (text) => { $('status').textContent = text; };
const notice = (text) => { $('notice').textContent = text; };

// Storage: sessionStorage by default, localStorage only with "remember me".
function stored() {
  for (const s of ['localStorage', 'sessionStorage']) {
    try {
      const v = JSON.parse(window[s].getItem(KEY));
      if (v && v.user && v.token) return v;
    } catch { /* no storage, or not ours: log in by hand */ }
  }
  return null;
}
function save() {
  if (!login) return;
  const v = JSON.stringify({ ...login, rooms: [...rooms.keys()] });
  try {
    (login.remember ? localStorage : sessionStorage).setItem(KEY, v);
    (login.remember ? sessionStorage : localStorage).removeItem(KEY);
  } catch { /* storage refused: the page still works until it is closed */ }
}
function forget() {
  try {
    localStorage.removeItem(KEY);
    sessionStorage.removeItem(KEY);
  } catch { /* nothing stored */ }
}

function start(v) {
  login = { user: v.user, token: v.token, remember: !!v.remember };
  for (const name of v.rooms || []) if (p.isValidRoom(name) && !rooms.has(name)) addRoom(name);
  save();
  $('login-error').textContent = '';
  $('login-view').hidden = true;
  $('chat-view').hidden = false;
  $('logout').hidden = false;
  select(rooms.keys().next().value ?? null);
  connect();
}

function connect() {
  retryTimer = null;
  const url = `${location.protocol === 'https:' ? 'wss' : 'ws'}://${location.host}/ws`;
  status('Connecting…');
  let ws;
  try {
    ws = new WebSocket(url);
  } catch (e) {
    return retryLater(`cannot connect to ${url} (${e.message})`);
  }
  ws.binaryType = 'arraybuffer';
  const c = { ws, welcomed: false, live: null, pinger: null, requests: [] };
  c.handshake = setTimeout(() => down(c, 'no answer from the server'), HANDSHAKE_MS);
  conn = c;
  ws.onopen = () => write(c, p.encodeHello(login.user, login.token));
  ws.onmessage = (e) => receive(c, e.data);
  ws.onclose = () => down(c, c.welcomed ? 'connection lost' : `cannot connect to ${url}`);
}

function write(c, bytes) {
  if (!c || c.ws.readyState !== WebSocket.OPEN) return false;
  c.ws.send(bytes);
  return true;
}

function hangUp(c) {
  clearTimeout(c.handshake);
  clearInterval(c.pinger);
  c.ws.onopen = c.ws.onmessage = c.ws.onclose = null;
  c.ws.close();
}

// The connection is over: mark what it took down unconfirmed, and come back later.
function down(c, why) {
  if (c !== conn) return;
  conn = null;
  hangUp(c);
  for (const q of pending.values()) fail(q, 'not confirmed (disconnected): it may have been stored, check before sending again');
  pending.clear();
  retryLater(why);
}

function retryLater(why) {
  const wait = backoff(attempt++);
  retryTimer = setTimeout(connect, wait);
  status(`${why}; reconnecting in ${(wait / 1000).toFixed(1)} s`);
}

function retryNow() {
  if (retryTimer === null || !login) return;
  clearTimeout(retryTimer);
  connect();
}

function receive(c, data) {
  if (c !== conn) return;
  let frames;
  try {
    if (!(data instanceof ArrayBuffer)) throw new p.ProtocolError('a text message');
    frames = p.decodeFrames(data);
  } catch (e) {
    return down(c, `protocol error (${e.message})`);
  }
  c.live?.heard(performance.now());
  for (const f of frames) {
    if (c !== conn) return; // a frame before this one ended the connection
    handle(c, f);
  }
}

function handle(c, f) {
  switch (f.type) {
    case 'welcome': return welcome(c, f);
    case 'joined': c.requests.shift(); return onJoined(f);
    case 'left': c.requests.shift(); return;
    case 'msg': return onMsg(f);
    case 'ack': return onAck(f);
    case 'error': return onError(c, f);
  } // pong and kinds added later: hearing them is all that counts
}

function welcome(c, f) {
  if (f.version !== 1) return logout(`The server speaks protocol version ${f.version}; reload the page.`);
  clearTimeout(c.handshake);
  c.welcomed = true;
  attempt = 0;
  maxFrame = f.maxFrame;
  const plan = resumePlan([...rooms.values()], epoch, f.epoch);
  epoch = f.epoch;
  if (plan.epochChanged) {
    acked.clear();
    for (const r of rooms.values()) {
      r.cursor = null;
      note(r, "The server's message history started over; what follows is its history now.");
    }
  }
  for (const j of plan.joins) sendJoin(c, rooms.get(j.room), j.after, j.limit);
  c.live = new Liveness(f.idleTimeoutMs, performance.now());
  c.pinger = setInterval(() => tick(c), c.live.every);
  status(`Connected as ${login.user}`);
}

function tick(c) {
  if (c !== conn) return;
  if (c.live.tick(performance.now()) === 'dead') {
    return down(c, 'no answer from the server to PING');
  }
  nonce += 1n;
  write(c, p.encodePing(nonce));
}

function sendJoin(c, r, after, limit) {
  r.asked = { after, limit };
  if (write(c, p.encodeJoin(r.name, after, limit))) c.requests.push({ join: r.name });
}

function onJoined(f) {
  const r = rooms.get(f.room);
  if (!r) return; // left meanwhile
  const gap = joined(r, f.first, f.head);
  if (gap) note(r, `Messages ${gap[0]}–${gap[1]} were deleted by the server before you saw them.`);
}

function onMsg(f) {
  const r = rooms.get(f.room);
  if (!r || !accept(r, f.seq)) return;
  const d = new Date(Number(f.tsMs));
  const day = isNaN(d) ? r.day : d.toDateString();
  // A date line where the day changes, except before the first message if that is today.
  if (day !== r.day && (r.day !== null || day !== new Date().toDateString())) {
    show(r, el('li', 'day', d.toLocaleDateString()));
  }
  r.day = day;
  show(r, item(f.user, f.text, d));
  const key = `${r.name}\n${f.seq}`;
  acked.get(key)?.remove();
  acked.delete(key);
  if (r.name !== current) {
    r.unread++;
    r.badge.textContent = ` (${r.unread})`;
  }
}

function onAck(f) {
  const q = pending.get(f.id);
  if (!q) return;
  pending.delete(f.id);
  const r = rooms.get(q.room);
  // The own MSG may come before or after the ACK; the pending entry goes when both have.
  if (!r || (r.cursor !== null && r.cursor >= f.seq)) return q.li.remove();
  q.mark.textContent = '✓';
  acked.set(`${q.room}\n${f.seq}`, q.li);
}

function onError(c, f) {
  if (f.ref !== 0n && pending.has(f.ref)) {
    const q = pending.get(f.ref);
    pending.delete(f.ref);
    return fail(q, `not sent: ${reason(f)}`);
  }
  if (p.isFatal(f.code, c.welcomed)) {
    if (f.code === 5) return logout(`Log-in refused: ${reason(f)}`);
    if (f.code === 4) return logout(`The server does not speak this page's protocol; reload the page. ${reason(f)}`);
    return down(c, `the server closed the connection: ${reason(f)}`);
  }
  const req = f.ref === 0n ? c.requests.shift() : null;
  if (req?.join && rooms.has(req.join)) {
    dropRoom(req.join);
    return notice(`Cannot join ${req.join}: ${reason(f)}`);
  }
  notice(`The server says: ${reason(f)}`);
}

// One message line: time, author, text. Author and text go in as textContent only.
function item(user, text, d, cls = '') {
  const li = el('li', `msg ${user === login.user ? 'mine ' : ''}${cls}`);
  const t = el('time');
  if (d && !isNaN(d)) {
    t.dateTime = d.toISOString();
    t.textContent = d.toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' });
    t.title = d.toLocaleString();
  }
  const body = el('span', 'text', text);
  body.dir = 'auto';
  li.append(t, el('b', 'who', user), body);
  return li;
}

function note(r, text) {
  show(r, el('li', 'note', text));
}

function show(r, li) {
  const logs = $('logs');
  const stick = logs.scrollHeight - logs.scrollTop - logs.clientHeight < 48;
  r.log.append(li);
  while (r.log.childElementCount > KEEP) r.log.firstElementChild.remove();
  if (stick && r.name === current) logs.scrollTop = logs.scrollHeight;
}

function fail(q, why) {
  q.li.classList.replace('pending', 'failed');
  q.mark.textContent = `✗ ${why}`;
  const again = el('button', 'again', 'Send again');
  again.type = 'button';
  again.onclick = () => {
    const r = rooms.get(q.room);
    if (r && post(r, q.text)) q.li.remove();
  };
  q.li.append(again);
}

// Sends `text` to room `r`, refusing locally what the server would refuse anyway.
function post(r, text) {
  if (!text) return false;
  const room = r.name;
  const len = p.msgLength(room, login.user, text);
  if (len > maxFrame) {
    const fits = maxFrame - p.msgLength(room, login.user, '');
    notice(`Too long: ${p.byteLength(text)} bytes (UTF-8); at most ${fits} fit. Not sent.`);
    return false;
  }
  if (!conn || !conn.welcomed) {
    notice('Not connected: not sent. Try again once reconnected.');
    return false;
  }
  const id = nextId++;
  const li = item(login.user, text, null, 'pending');
  const mark = el('span', 'mark', 'sending…');
  li.append(mark);
  show(r, li);
  pending.set(id, { room, text, li, mark });
  write(conn, p.encodeSend(room, id, text));
  notice('');
  return true;
}

function addRoom(name) {
  const r = Object.assign(newRoom(name), { unread: 0, day: null });
  r.log = el('ol', 'log');
  r.log.setAttribute('role', 'log');
  r.log.setAttribute('aria-label', `Messages in ${name}`);
  r.log.hidden = true;
  $('logs').append(r.log);
  r.tab = el('li');
  const b = el('button', null, name);
  b.type = 'button';
  b.onclick = () => { select(name); $('text').focus(); };
  r.badge = el('span', 'badge');
  b.append(r.badge);
  r.tab.append(b);
  $('tabs').append(r.tab);
  rooms.set(name, r);
  return r;
}

function dropRoom(name) {
  const r = rooms.get(name);
  r.log.remove();
  r.tab.remove();
  rooms.delete(name);
  save();
  if (current === name) select(rooms.keys().next().value ?? null);
}

function select(name) {
  current = name;
  for (const r of rooms.values()) {
    r.log.hidden = r.name !== name;
    const b = r.tab.firstChild;
    if (r.name === name) b.setAttribute('aria-current', 'true');
    else b.removeAttribute('aria-current');
  }
  $('room-name').textContent = name ?? 'No room: join one';
  $('leave').hidden = name === null;
  const r = rooms.get(name);
  if (!r) return;
  r.unread = 0;
  r.badge.textContent = '';
  $('logs').scrollTop = $('logs').scrollHeight;
}

function logout(why) {
  const c = conn;
  conn = null;
  if (c) {
    if (!why) write(c, p.encodeBye());
    hangUp(c);
  }
  clearTimeout(retryTimer);
  retryTimer = null;
  login = null; // first, so that dropping the rooms below stores nothing
  forget();
  for (const name of [...rooms.keys()]) dropRoom(name);
  pending.clear();
  acked.clear();
  epoch = null;
  attempt = 0;
  status('');
  notice('');
  $('token').value = '';
  $('login-error').textContent = why || '';
  $('chat-view').hidden = true;
  $('logout').hidden = true;
  $('login-view').hidden = false;
  $(why ? 'token' : 'user').focus();
}

$('login').addEventListener('submit', (e) => {
  e.preventDefault();
  const user = $('user').value.trim();
  const token = $('token').value;
  const err = !p.isValidUser(user) ? ['user', 'A user name is 1–32 characters from A–Z a–z 0–9 . _ -']
    : !token ? ['token', 'Enter your token.']
      : p.byteLength(token) > 0xffff ? ['token', 'That token is too long.'] : null;
  if (err) {
    $('login-error').textContent = err[1];
    return $(err[0]).focus();
  }
  start({ user, token, remember: $('remember').checked });
  (rooms.size ? $('text') : $('room')).focus();
});

$('join').addEventListener('submit', (e) => {
  e.preventDefault();
  const name = $('room').value.trim();
  if (!p.isValidRoom(name)) return notice('A room name is 1–64 characters from A–Z a–z 0–9 . _ # -');
  if (!rooms.has(name)) {
    const r = addRoom(name);
    save();
    if (conn?.welcomed) sendJoin(conn, r, 0n, HISTORY);
  }
  $('room').value = '';
  notice('');
  select(name);
  $('text').focus();
});

$('leave').addEventListener('click', () => {
  const name = current;
  if (name === null) return;
  if (conn?.welcomed && write(conn, p.encodeLeave(name))) conn.requests.push({ leave: name });
  dropRoom(name);
  $('room').focus();
});

$('send').addEventListener('submit', (e) => {
  e.preventDefault();
  const r = rooms.get(current);
  if (!r) return notice('Join a room first.');
  if (post(r, $('text').value)) $('text').value = '';
  $('text').focus();
});

$('text').addEventListener('keydown', (e) => {
  if (e.key === 'Enter' && !e.shiftKey && !e.isComposing) {
    e.preventDefault();
    $('send').requestSubmit();
  }
});

$('logout').addEventListener('click', () => logout());
addEventListener('online', retryNow);
addEventListener('visibilitychange', () => document.visibilityState === 'visible' && retryNow());

const saved = stored();
if (saved) {
  $('user').value = saved.user;
  $('remember').checked = !!saved.remember;
  start(saved);
} else {
  $('user').focus();
}
