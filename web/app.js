// The chat page: the login form, the rooms and their messages, who is in them, and the one
// WebSocket to chatd it keeps open, resuming every room after a drop. Text from the server
// reaches the page through textContent only, never as HTML. On protocol version 2 every
// message waits in the outbox until its ACK and is sent again, with its id, after a drop;
// on version 1, which cannot tell a retry from a new message, a SEND the connection took
// down unconfirmed is marked, never sent again by itself.

import * as p from './proto.js';
import { HISTORY, newRoom, backoff, resumePlan, joined, accept, Liveness } from './resume.js';
import { Outbox, verdict, retryDelay } from './outbox.js';

const HANDSHAKE_MS = 10000; // from opening the socket to WELCOME
const KEEP = 1000; // entries kept on screen per room; older ones are dropped
const KEY = 'chatd.login';
// Plain words before the server's code, for the errors a user meets.
const HINTS = { 2: 'too large', 5: 'unknown user or wrong token', 7: 'refused as invalid',
  8: 'you are not in this room', 9: 'sending too fast, wait a moment',
  10: 'too many rooms or connections', 12: 'the connection was idle too long',
  13: 'the server is stopping', 14: 'the server could not store it',
  16: 'you may not use this room' };

const $ = (id) => document.getElementById(id);
function el(tag, cls, text) {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text !== undefined) e.textContent = text;
  return e;
}

let login = null; // { user, token, remember }
let speak = p.V2; // the version HELLO asks for: 1 once a server refused 2, until log-out
let box = null; // the user's Outbox (client id, ids, messages waiting for their ACK)
const rooms = new Map(); // name -> resume.js room + { log, tab, badge, unread, day }
let current = null; // the room shown
let epoch = null; // the WELCOME epoch the cursors belong to
let maxFrame = 65536;
// { ws, version, welcomed, live, handshake, pinger, requests, sent: ids written, ready:
// rooms JOINED on this connection, watch: whether WATCH is asked }
let conn = null;
let attempt = 0;
let retryTimer = null;
let nonce = 0n;
const pending = new Map(); // message id -> { room, text, li, mark, tries } shown as pending
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
// localStorage, or memory where the browser refuses it (the outbox then lasts a page load).
function storage() {
  try {
    localStorage.setItem('chatd.probe', '1');
    localStorage.removeItem('chatd.probe');
    return localStorage;
  } catch {
    const m = new Map();
    return { getItem: (k) => m.get(k) ?? null, setItem: (k, v) => m.set(k, v), removeItem: (k) => m.delete(k) };
  }
}
const random = (b) => crypto.getRandomValues(b);

function forget() {
  try {
    localStorage.removeItem(KEY);
    sessionStorage.removeItem(KEY);
  } catch { /* nothing stored */ }
}

function start(v) {
  login = { user: v.user, token: v.token, remember: !!v.remember };
  speak = p.V2;
  box = new Outbox(storage(), login.user, random);
  for (const name of v.rooms || []) if (p.isValidRoomV2(name) && !rooms.has(name)) addRoom(name);
  // What waits from an earlier page: shown pending, sent once its room is joined.
  for (const e of box.pending()) {
    if (!rooms.has(e.room) && p.isValidRoomV2(e.room)) addRoom(e.room);
    if (rooms.has(e.room)) showPending(e);
    else box.done(e.id);
  }
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
  const c = { ws, version: speak, welcomed: false, live: null, pinger: null, requests: [],
    sent: new Set(), ready: new Set(), watch: speak === p.V2 };
  c.handshake = setTimeout(() => down(c, 'no answer from the server'), HANDSHAKE_MS);
  conn = c;
  const client = speak === p.V2 ? box.client : 0n;
  ws.onopen = () => write(c, p.encodeHello(login.user, login.token, speak, client));
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

// The connection is over: on version 2 what it took down unconfirmed waits in the outbox
// for the next one; on version 1 it is marked unconfirmed. Come back later.
function down(c, why) {
  if (c !== conn) return;
  conn = null;
  hangUp(c);
  for (const [id, q] of pending) {
    if (!c.sent.has(id)) continue;
    if (c.version === p.V1) {
      pending.delete(id);
      fail(q, 'not confirmed (disconnected): it may have been stored, check before sending again');
    } else {
      q.mark.textContent = 'not confirmed yet: sent again after reconnecting';
    }
  }
  for (const r of rooms.values()) r.members = null;
  showMembers();
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
    case 'joined': c.requests.shift(); return onJoined(c, f);
    case 'left': return onLeft(c, f);
    case 'msg': return onMsg(f);
    case 'ack': return onAck(c, f);
    case 'error': return onError(c, f);
    case 'members': return onMembers(c, f);
    case 'presence': return onPresence(f);
  } // pong and kinds added later: hearing them is all that counts
}

function welcome(c, f) {
  if (f.version !== p.V1 && f.version !== p.V2) {
    return logout(`The server speaks protocol version ${f.version}; reload the page.`);
  }
  clearTimeout(c.handshake);
  c.welcomed = true;
  c.version = f.version; // the version in force
  c.watch = c.version === p.V2;
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
  status(`Connected as ${login.user}${c.version === p.V1
    ? ' (protocol version 1: no direct messages, no list of who is here, no sending again after a drop)' : ''}`);
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

function onJoined(c, f) {
  const r = rooms.get(f.room);
  if (!r) return; // left meanwhile
  const gap = joined(r, f.first, f.head);
  if (gap) note(r, `Messages ${gap[0]}–${gap[1]} were deleted by the server before you saw them.`);
  c.ready.add(r.name);
  if (c.watch && write(c, p.encodeWatch(r.name, true))) c.requests.push({ watch: r.name });
  flush(c, r.name);
}

// A LEFT we asked for, or one the server sent by itself because access to the room was lost.
function onLeft(c, f) {
  if (c.requests[0]?.leave === f.room) return void c.requests.shift();
  c.ready.delete(f.room);
  if (!rooms.has(f.room)) return;
  notice(`You are no longer in ${p.roomLabel(f.room, login.user)}: you may not use this room.`);
  dropRoom(f.room);
}

// Writes every message of the outbox for `room` not yet written on this connection, in id
// order. On version 1 a message leaves the outbox as it is written: it is never sent twice.
function flush(c, room) {
  if (c !== conn || !c.welcomed || !c.ready.has(room)) return;
  for (const e of box.pending()) {
    if (e.room !== room || c.sent.has(e.id)) continue;
    const q = pending.get(e.id) ?? showPending(e);
    if (!write(c, p.encodeSend(room, e.id, e.text))) return;
    c.sent.add(e.id);
    q.mark.textContent = 'sending…';
    if (c.version === p.V1) box.done(e.id);
  }
}

function onMembers(c, f) {
  if (c.requests[0]?.watch === f.room) c.requests.shift();
  const r = rooms.get(f.room);
  if (!r) return;
  r.members = { users: new Set(f.users), more: Math.max(f.total - f.users.length, 0) };
  showMembers();
}

function onPresence(f) {
  const r = rooms.get(f.room);
  if (!r || !r.members) return;
  const m = r.members;
  if (f.here) m.users.add(f.user);
  else if (!m.users.delete(f.user) && m.more > 0) m.more--; // one of those not listed
  note(r, `${f.user} ${f.here ? 'joined' : 'left'}`);
  if (r.name === current) showMembers();
}

// The member list of the room shown; hidden where the server sends none.
function showMembers() {
  const m = rooms.get(current)?.members;
  const list = $('members');
  list.hidden = !m;
  if (!m) return;
  const names = [...m.users].sort();
  list.textContent = `Here: ${names.join(', ') || 'nobody'}${m.more ? ` and ${m.more} more` : ''}`;
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
  // Messages still waiting stay below what the room has stored.
  for (const q of pending.values()) if (q.room === r.name) r.log.append(q.li);
  const key = `${r.name}\n${f.seq}`;
  acked.get(key)?.remove();
  acked.delete(key);
  if (r.name !== current) {
    r.unread++;
    r.badge.textContent = ` (${r.unread})`;
  }
}

function onAck(c, f) {
  box.done(f.id);
  c.sent.delete(f.id);
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
  if (f.ref !== 0n && pending.has(f.ref)) return refused(c, f, pending.get(f.ref));
  if (p.fallsBack(f.code, c.welcomed, c.version)) {
    speak = p.V1;
    conn = null;
    hangUp(c);
    return connect();
  }
  if (p.isFatal(f.code, c.welcomed)) {
    if (f.code === 5) return logout(`Log-in refused: ${reason(f)}`);
    if (f.code === 4) return logout(`The server does not speak this page's protocol; reload the page. ${reason(f)}`);
    return down(c, `the server closed the connection: ${reason(f)}`);
  }
  // Access to a joined room taken away: a FORBIDDEN nobody asked for, naming the room, then
  // an unasked LEFT (onLeft). It answers no request, so the queue is left alone.
  if (f.code === p.E.FORBIDDEN && f.ref === 0n && [...c.ready].some((n) => f.message.endsWith(` ${n}`))) {
    return notice(`The server says: ${reason(f)}`);
  }
  const req = f.ref === 0n ? c.requests.shift() : null;
  if (req?.join && rooms.has(req.join)) {
    dropRoom(req.join);
    return notice(`Cannot join ${p.roomLabel(req.join, login.user)}: ${reason(f)}`);
  }
  if (req?.watch) {
    // A server without WHO/WATCH yet: no member lists on this connection, nothing else
    // lost. (NOT_JOINED or FORBIDDEN: that room was lost meanwhile, the others still watch.)
    if (f.code !== p.E.NOT_JOINED && f.code !== p.E.FORBIDDEN) c.watch = false;
    return showMembers();
  }
  notice(`The server says: ${reason(f)}`);
}

// An ERROR about message `q`. RATE_LIMITED on version 2: it stays in the outbox and goes
// again later; STALE_ID: the server cannot tell whether it was stored; otherwise refused.
function refused(c, f, q) {
  const id = f.ref;
  c.sent.delete(id);
  const what = verdict(f.code, c.version);
  if (what === 'retry') {
    const wait = retryDelay(q.tries++);
    q.mark.textContent = `${HINTS[9]}: sending again in ${(wait / 1000).toFixed(1)} s`;
    return void setTimeout(() => flush(c, q.room), wait);
  }
  box.done(id);
  pending.delete(id);
  if (what === 'stale') {
    return fail(q, "may or may not have been sent; check the room's history");
  }
  fail(q, `not sent: ${reason(f)}`);
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

// A message of the outbox on screen, pending until its ACK.
function showPending(e) {
  const li = item(login.user, e.text, null, 'pending');
  const mark = el('span', 'mark', 'waiting for the connection…');
  li.append(mark);
  const q = { room: e.room, text: e.text, li, mark, tries: 0 };
  pending.set(e.id, q);
  show(rooms.get(e.room), li);
  return q;
}

// Puts `text` for room `r` in the outbox, refusing locally what the server would refuse
// anyway, and sends it at once if the room is joined (else once it is).
function post(r, text) {
  if (!text) return false;
  const room = r.name;
  const len = p.msgLength(room, login.user, text);
  if (len > maxFrame) {
    const fits = maxFrame - p.msgLength(room, login.user, '');
    notice(`Too long: ${p.byteLength(text)} bytes (UTF-8); at most ${fits} fit. Not sent.`);
    return false;
  }
  let e;
  try {
    e = box.add(room, text);
  } catch (err) {
    notice(`Cannot keep the message in this browser's storage (${err.message}): not sent.`);
    return false;
  }
  showPending(e);
  if (conn) flush(conn, room);
  notice('');
  return true;
}

// Shows room `name` (a direct room by the other names), joining it first if need be.
function openRoom(name) {
  if (!rooms.has(name)) {
    const r = addRoom(name);
    save();
    if (conn?.welcomed) sendJoin(conn, r, 0n, HISTORY);
  }
  notice('');
  select(name);
}

// The direct room of the user and `other`, or null with the reason shown.
function direct(other) {
  if (speak === p.V1 || (conn?.welcomed && conn.version === p.V1)) {
    notice('Direct messages need protocol version 2; this server speaks version 1.');
    return null;
  }
  const name = p.isValidUser(other) ? p.directRoom([login.user, other]) : null;
  if (!name) notice(other === login.user ? 'A direct room needs another user.' : `No such user name: ${other}`);
  return name;
}

function addRoom(name) {
  const r = Object.assign(newRoom(name), { unread: 0, day: null });
  r.log = el('ol', 'log');
  r.log.setAttribute('role', 'log');
  r.log.setAttribute('aria-label', `Messages in ${name}`);
  r.log.hidden = true;
  $('logs').append(r.log);
  r.tab = el('li');
  const b = el('button', null, p.roomLabel(name, login.user));
  b.title = name;
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
  // Messages waiting for a room left go with it: they would wait for ever.
  for (const [id, q] of pending) {
    if (q.room !== name) continue;
    pending.delete(id);
    box?.done(id);
  }
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
  $('room-name').textContent = name === null ? 'No room: join one' : p.roomLabel(name, login?.user);
  $('room-name').title = name ?? '';
  $('leave').hidden = name === null;
  showMembers();
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
  box?.clear();
  box = null;
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
  let name = $('room').value.trim();
  // "@bob": the direct room with bob; "@alice+bob" as it is.
  if (/^@[^+]*$/.test(name)) name = direct(name.slice(1));
  else if (!p.isValidRoomV2(name)) {
    notice('A room name is 1–64 characters from A–Z a–z 0–9 . _ # -, or @user');
    name = null;
  }
  if (!name) return;
  $('room').value = '';
  openRoom(name);
  $('text').focus();
});

$('leave').addEventListener('click', () => {
  const name = current;
  if (name === null) return;
  if (conn?.welcomed && write(conn, p.encodeLeave(name))) conn.requests.push({ leave: name });
  conn?.ready.delete(name);
  dropRoom(name);
  $('room').focus();
});

$('send').addEventListener('submit', (e) => {
  e.preventDefault();
  const text = $('text').value;
  // "/msg USER [TEXT]": to the direct room with USER.
  const cmd = /^\/msg\s+(\S+)\s*([\s\S]*)$/.exec(text);
  const name = cmd ? direct(cmd[1]) : current;
  if (cmd && !name) return;
  if (cmd) openRoom(name);
  const r = rooms.get(name);
  if (!r) return notice('Join a room first.');
  if (cmd && !cmd[2]) $('text').value = '';
  else if (post(r, cmd ? cmd[2] : text)) $('text').value = '';
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
