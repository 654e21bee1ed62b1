//! Interactive mode: rooms in, messages out, one current room for what is typed. A message
//! typed goes to the outbox and is pending until the server ACKs it (its own MSG then shows
//! it in the room's order); one typed while disconnected is marked queued, and the link sends
//! every pending message again after reconnecting; a refusal is marked with the server's
//! reason. Pending messages left at the end stay in the outbox for the next run. The last
//! seq seen per room goes to the state file now and then and at the end, so the next run can
//! show what was missed.

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::sync::mpsc::{self, Sender};
use std::time::{Duration, Instant};

use chatd::protocol::name::direct_room;
use chatd::protocol::{ErrorCode, Version};

use crate::config::Settings;
use crate::events::{Driver, Step};
use crate::failure::{Failure, check_room, reason};
use crate::input::{Screen, Terminal, spawn_plain, spawn_tty};
use crate::link::{Link, Mode, Note, Start};
use crate::local::Local;
use crate::render::{chat_line, clean, members_line, presence_line, today, when};
use crate::script::target;
use crate::state::{State, StateFile};

/// After this long without an ACK, a pending message is pointed out.
const SLOW_ACK: Duration = Duration::from_secs(3);
/// How often the state file is rewritten while messages arrive.
const SAVE_EVERY: Duration = Duration::from_secs(2);
/// How long /quit waits for the server to settle what it owes.
const QUIT_GRACE: Duration = Duration::from_secs(5);

const HELP: &[&str] = &[
    "-- /join ROOM      join ROOM and make it the current room",
    "-- /leave [ROOM]   leave ROOM (default: the current room)",
    "-- /room ROOM      make ROOM the current room (/room alone names it)",
    "-- /rooms          list the rooms joined",
    "-- /msg USER TEXT  send TEXT to USER in your direct room with them",
    "-- /who [ROOM]     who is in ROOM (default: the current room)",
    "-- /quit           leave once the server has confirmed what you sent (also Ctrl-D)",
    "-- //text          send `/text`; any other line goes to the current room",
];

struct Pending {
    room: String,
    text: String,
    since: Instant,
    pointed_out: bool,
}

struct Chat {
    d: Driver,
    screen: Screen,
    /// The line editor's prompt queue; `None` when reading a pipe.
    prompts: Option<Sender<Option<String>>>,
    current: Option<String>,
    pending: BTreeMap<u64, Pending>,
    local: Local,
    user: String,
    history: u32,
    /// The state as this run found it, for rooms joined later.
    saved: Option<State>,
    file: Option<StateFile>,
    /// Cursors of rooms left during this run (the link forgets them).
    left: BTreeMap<String, u64>,
    save_at: Option<Instant>,
    save_failed: bool,
    last_day: Option<String>,
    quit_by: Option<Instant>,
}

/// Runs interactive mode until /quit or the end of input.
///
/// # Errors
/// The first connection failed, a room name is invalid, or the server refused us for good.
pub fn run(s: &Settings, rooms: Vec<String>) -> Result<(), Failure> {
    let mut wanted: Vec<String> = Vec::new();
    for room in if rooms.is_empty() { &s.rooms } else { &rooms } {
        check_room(room)?;
        if !wanted.contains(room) {
            wanted.push(room.clone());
        }
    }
    let file = s
        .state_dir
        .as_ref()
        .map(|dir| StateFile::new(dir, &s.server, &s.user));
    let saved = file.as_ref().and_then(|f| match f.load() {
        Ok(state) => state,
        Err(e) => {
            eprintln!("chat: warning: cannot read {}: {e}", f.path().display());
            None
        }
    });
    let local = Local::open(s);
    let leftovers = local.pending();
    // The rooms of messages an earlier run left pending are joined too, so they can go.
    let mut rooms = wanted.clone();
    for (_, e) in &leftovers {
        if !rooms.contains(&e.room) {
            rooms.push(e.room.clone());
        }
    }
    let starts = rooms
        .iter()
        .map(|r| (r.clone(), start_for(saved.as_ref(), None, r, s.history)))
        .collect();
    let (tx, rx) = mpsc::channel();
    let mut link = Link::open(
        target(s, local.client())?,
        tx.clone(),
        Mode::Resilient,
        s.history,
        starts,
    )?;
    link.watch = true;
    let terminal = Terminal::save();
    let tty = std::io::stdin().is_terminal() && std::io::stdout().is_terminal();
    let (screen, prompts) = if tty {
        let (screen, prompts) = spawn_tty(tx).map_err(|e| {
            Failure::new(
                crate::failure::Exit::Other,
                format!("cannot use the terminal: {e}"),
            )
        })?;
        (screen, Some(prompts))
    } else {
        spawn_plain(tx);
        (Screen::Plain, None)
    };
    let mut chat = Chat {
        d: Driver::new(link, rx),
        screen,
        prompts,
        current: wanted.first().cloned(),
        pending: BTreeMap::new(),
        local,
        user: s.user.clone(),
        history: s.history,
        saved,
        file,
        left: BTreeMap::new(),
        save_at: None,
        save_failed: false,
        last_day: None,
        quit_by: None,
    };
    let over = if s.tls.is_some() { " over TLS" } else { "" };
    chat.say(&format!(
        "-- connected to {}{over} as {}; /help lists the commands",
        s.server, s.user
    ));
    if wanted.is_empty() {
        chat.say("-- no rooms joined yet: /join ROOM");
    }
    chat.warnings();
    for (id, e) in leftovers {
        chat.say(&format!(
            "… [{}] left unconfirmed by an earlier run, sending again: {}",
            e.room,
            clean(&e.text, " ")
        ));
        chat.d.link.send(&e.room, id, &e.text);
        chat.pending.insert(id, Pending::new(e.room, e.text));
    }
    chat.prompt();
    let result = chat.run();
    chat.save();
    terminal.restore();
    if tty && result.is_err() {
        println!(); // off the line being edited, so the error starts a line of its own
    }
    result
}

/// How a refused message is shown: the server's reason, in words for the refusals of
/// version 2.
fn refused_line(p: &Pending, code: u16, message: &str) -> String {
    let text = clean(&p.text, " ");
    let why = reason(code, message);
    match ErrorCode::from_u16(code) {
        Some(ErrorCode::StaleId) => format!(
            "? [{}] the server can no longer tell whether this was stored, {why}; look in \
             the room's history: {text}",
            p.room
        ),
        Some(ErrorCode::Forbidden) => format!(
            "✗ [{}] not sent: you may not use this room, {why}: {text}",
            p.room
        ),
        _ => format!("✗ [{}] not sent, {why}: {text}", p.room),
    }
}

/// Where a room's first JOIN starts: from the last seq seen in it (this run or an earlier
/// one), else the last `history` messages.
fn start_for(saved: Option<&State>, left: Option<(u64, u64)>, room: &str, history: u32) -> Start {
    if let Some((epoch, seq)) = left {
        return Start::Seen { epoch, seq };
    }
    saved
        .and_then(|st| {
            st.seqs.get(room).map(|&seq| Start::Seen {
                epoch: st.epoch,
                seq,
            })
        })
        .unwrap_or(Start::Window {
            after: 0,
            limit: history,
        })
}

impl Pending {
    fn new(room: String, text: String) -> Pending {
        Pending {
            room,
            text,
            since: Instant::now(),
            pointed_out: false,
        }
    }
}

impl Chat {
    fn run(&mut self) -> Result<(), Failure> {
        loop {
            let until = self.deadline();
            let done = match self.d.step(until)? {
                Step::Note(note) => self.note(note),
                Step::Line(line) => {
                    self.line(&line);
                    self.prompt();
                    false
                }
                Step::InputDone => self.quit(),
                Step::Timeout => self.timers(),
            };
            if done {
                return Ok(());
            }
        }
    }

    fn say(&mut self, text: &str) {
        self.screen.line(text);
    }

    fn prompt(&mut self) {
        if self.quit_by.is_some() {
            return;
        }
        let prompt = match &self.current {
            Some(room) => format!("[{room}]> "),
            None => "> ".to_string(),
        };
        if let Some(prompts) = &self.prompts {
            let _ = prompts.send(Some(prompt));
        }
    }

    fn line(&mut self, line: &str) {
        if line.trim().is_empty() || self.quit_by.is_some() {
            return;
        }
        if let Some(rest) = line.strip_prefix("//") {
            self.post(&format!("/{rest}"));
        } else if let Some(command) = line.strip_prefix('/') {
            self.command(command);
        } else {
            self.post(line);
        }
    }

    fn command(&mut self, command: &str) {
        let mut words = command.split_whitespace();
        let name = words.next().unwrap_or_default();
        let arg = words.next().map(str::to_string);
        match (name, arg) {
            ("join" | "j", Some(room)) => self.join(room),
            ("leave" | "part", room) => match room.or_else(|| self.current.clone()) {
                Some(room) => self.leave(&room),
                None => self.say("!! no current room to leave"),
            },
            ("room" | "r", Some(room)) if self.d.link.has(&room) => {
                self.say(&format!("-- current room: [{room}]"));
                self.current = Some(room);
            }
            ("room" | "r", Some(room)) => {
                self.say(&format!("!! not in [{room}]: /join {room} first"));
            }
            ("room" | "r", None) => match self.current.clone() {
                Some(room) => self.say(&format!("-- current room: [{room}]")),
                None => self.say("-- no current room: /join ROOM"),
            },
            ("rooms", _) => self.list_rooms(),
            ("msg" | "m", Some(user)) => {
                let text = command
                    .trim_start()
                    .split_once(char::is_whitespace)
                    .and_then(|(_, rest)| rest.trim_start().split_once(char::is_whitespace))
                    .map(|(_, text)| text.trim_start());
                match text.filter(|t| !t.is_empty()) {
                    Some(text) => self.direct(&user, text),
                    None => self.say("!! /msg needs a USER and a TEXT"),
                }
            }
            ("msg" | "m", None) => self.say("!! /msg needs a USER and a TEXT"),
            ("who" | "w", room) => match room.or_else(|| self.current.clone()) {
                Some(room) => self.who(&room),
                None => self.say("!! no current room: /who ROOM"),
            },
            ("help" | "h" | "?", _) => {
                for line in HELP {
                    self.say(line);
                }
            }
            ("quit" | "exit" | "q", _) => {
                self.quit();
            }
            ("join" | "j", None) => self.say("!! /join needs a ROOM"),
            (other, _) => self.say(&format!(
                "!! unknown command /{other}: /help lists the commands (//text sends /text)"
            )),
        }
    }

    fn join(&mut self, room: String) {
        if let Err(f) = check_room(&room) {
            return self.say(&format!("!! {}", f.message));
        }
        if !self.d.link.has(&room) {
            let left = self.left.remove(&room).zip(self.d.link.epoch());
            let left = left.map(|(seq, epoch)| (epoch, seq));
            let start = start_for(self.saved.as_ref(), left, &room, self.history);
            self.d.link.join(&room, start);
        }
        self.say(&format!("-- current room: [{room}]"));
        self.current = Some(room);
    }

    /// `/msg USER TEXT`: joins the direct room of us and USER, makes it current, posts TEXT.
    fn direct(&mut self, user: &str, text: &str) {
        let Some(room) = direct_room([self.user.as_str(), user]) else {
            return self.say(&format!(
                "!! no direct room with {user:?}: a user name is 1-32 characters from \
                 A-Z a-z 0-9 . _ - and not yours"
            ));
        };
        if self.d.link.version() == Some(Version::V1) {
            return self.say("!! /msg needs a server that speaks protocol version 2");
        }
        if !self.d.link.has(&room) {
            let start = start_for(self.saved.as_ref(), None, &room, self.history);
            self.d.link.join(&room, start);
        }
        if self.current.as_deref() != Some(room.as_str()) {
            self.say(&format!("-- current room: [{room}]"));
            self.current = Some(room);
        }
        self.post(text);
    }

    fn who(&mut self, room: &str) {
        if !self.d.link.has(room) {
            return self.say(&format!("!! not in [{room}]: /join {room} first"));
        }
        if let Err(why) = self.d.link.who(room) {
            self.say(&format!("!! /who [{room}]: {why}"));
        }
    }

    fn leave(&mut self, room: &str) {
        if !self.d.link.has(room) {
            return self.say(&format!("!! not in [{room}]"));
        }
        if let Some(cursor) = self.d.link.leave(room) {
            self.left.insert(room.to_string(), cursor);
            self.save_soon();
        }
        if self.current.as_deref() == Some(room) {
            self.current = self.d.link.rooms().next().map(str::to_string);
            match self.current.clone() {
                Some(next) => self.say(&format!("-- current room: [{next}]")),
                None => self.say("-- no current room: /join ROOM"),
            }
        }
    }

    fn list_rooms(&mut self) {
        let rooms: Vec<String> = self
            .d
            .link
            .rooms()
            .map(|r| {
                if self.current.as_deref() == Some(r) {
                    format!("[{r}] (current)")
                } else {
                    format!("[{r}]")
                }
            })
            .collect();
        if rooms.is_empty() {
            self.say("-- no rooms joined: /join ROOM");
        } else {
            self.say(&format!("-- rooms: {}", rooms.join(", ")));
        }
    }

    /// Sends a message to the current room; it is pending until its ACK.
    fn post(&mut self, text: &str) {
        let Some(room) = self.current.clone() else {
            return self.say("!! no current room: /join ROOM first");
        };
        if self.prompts.is_none() {
            // What a terminal would show after the prompt, so a piped session reads alike.
            self.say(&format!("[{room}]> {}", clean(text, " ")));
        }
        let id = match self.local.queue(&room, text) {
            Ok(id) => id,
            Err(why) => {
                return self.say(&format!(
                    "✗ [{room}] not sent ({why}): {}",
                    clean(text, " ")
                ));
            }
        };
        self.d.link.send(&room, id, text);
        if !self.d.link.is_connected() {
            self.say(&format!(
                "… [{room}] queued (not connected), sent once reconnected: {}",
                clean(text, " ")
            ));
        }
        self.pending
            .insert(id, Pending::new(room, text.to_string()));
        self.warnings();
    }

    /// Shows what went wrong with the files kept on this machine, once each.
    fn warnings(&mut self) {
        for w in std::mem::take(&mut self.local.warnings) {
            self.say(&format!("!! {w}"));
        }
    }

    /// Shows what the link reports; true once the session is over.
    fn note(&mut self, note: Note) -> bool {
        match note {
            Note::Connected {
                again,
                epoch_changed,
                fell_back,
                ..
            } => {
                if fell_back {
                    let addr = self.d.link.addr().to_string();
                    self.say(&format!(
                        "-- chatd at {addr} does not speak protocol version 2 \
                         (UNSUPPORTED_VERSION): using version 1, without /who, /msg or \
                         presence, and a message sent again may be stored twice"
                    ));
                }
                if again {
                    let addr = self.d.link.addr().to_string();
                    self.say(&format!("-- reconnected to {addr}"));
                }
                if epoch_changed {
                    self.left.clear();
                    self.say("-- the server's message store was replaced: every room starts over");
                }
            }
            Note::Joined {
                room, resumed, gap, ..
            } => {
                if !resumed {
                    self.say(&format!("-- joined [{room}]"));
                }
                if let Some((a, b)) = gap {
                    self.say(&format!(
                        "-- [{room}]: messages {a}-{b} were deleted by the server before you saw them"
                    ));
                }
            }
            Note::Left { room } => self.say(&format!("-- left [{room}]")),
            Note::Removed { room } => {
                self.say(&format!("!! the server took you out of [{room}]"));
                if self.current.as_deref() == Some(room.as_str()) {
                    self.current = self.d.link.rooms().next().map(str::to_string);
                }
            }
            Note::Members { room, total, users } => {
                self.say(&members_line(&room, total, &users));
            }
            Note::Presence { room, user, here } => self.say(&presence_line(&room, &user, here)),
            Note::WhoFailed {
                room,
                code,
                message,
            } => self.say(&format!("!! /who [{room}]: {}", reason(code, &message))),
            Note::Msg {
                room,
                ts_ms,
                user,
                text,
                ..
            } => {
                let w = when(ts_ms);
                if self.last_day.as_deref() != Some(w.day.as_str()) {
                    if self.last_day.is_some() || w.day != today() {
                        self.say(&format!("-- {} --", w.day));
                    }
                    self.last_day = Some(w.day);
                }
                self.say(&chat_line(&w.hhmm, &room, &user, &text));
                self.save_soon();
            }
            Note::Ack { id, .. } => {
                self.pending.remove(&id);
                self.local.done(id);
                self.warnings();
            }
            Note::Refused { id, code, message } => {
                self.local.done(id);
                match self.pending.remove(&id) {
                    Some(p) => self.say(&refused_line(&p, code, &message)),
                    None => self.say(&format!("!! {}", reason(code, &message))),
                }
            }
            Note::JoinFailed {
                room,
                code,
                message,
            } => {
                self.say(&format!(
                    "!! cannot join [{room}]: {}",
                    reason(code, &message)
                ));
                if self.current.as_deref() == Some(room.as_str()) {
                    self.current = self.d.link.rooms().next().map(str::to_string);
                }
            }
            Note::Error { code, message } => self.say(&format!("!! {}", reason(code, &message))),
            Note::Down { why, retry_in } => {
                self.say(&format!(
                    "-- {why}; reconnecting in {:.1} s",
                    retry_in.as_secs_f64()
                ));
                if !self.pending.is_empty() {
                    let n = self.pending.len();
                    self.say(&format!(
                        "… {n} unconfirmed message(s) kept, sent again after reconnecting"
                    ));
                }
            }
            Note::Retrying { why, retry_in } => self.say(&format!(
                "-- {why}; trying again in {:.1} s",
                retry_in.as_secs_f64()
            )),
            Note::Closed => {
                self.unconfirmed("the connection closed");
                return true;
            }
        }
        false
    }

    /// Says which pending messages this run will not see confirmed.
    fn unconfirmed(&mut self, why: &str) {
        if self.local.keeps() {
            for p in std::mem::take(&mut self.pending).into_values() {
                self.say(&format!(
                    "… [{}] not confirmed before {why}; kept in the outbox for the next run: {}",
                    p.room,
                    clean(&p.text, " ")
                ));
            }
            return;
        }
        for p in std::mem::take(&mut self.pending).into_values() {
            self.say(&format!(
                "? [{}] not confirmed before {why}; it may not have been stored: {}",
                p.room,
                clean(&p.text, " ")
            ));
        }
    }

    /// Starts leaving: BYE, then wait (briefly) for the ACKs owed. True if already done.
    fn quit(&mut self) -> bool {
        if self.quit_by.is_some() {
            return false;
        }
        self.quit_by = Some(Instant::now() + QUIT_GRACE);
        if let Some(prompts) = self.prompts.take() {
            let _ = prompts.send(None);
        }
        if self.d.link.bye() {
            false
        } else {
            self.unconfirmed("leaving while not connected");
            true
        }
    }

    fn deadline(&self) -> Option<Instant> {
        let slow = self
            .pending
            .values()
            .filter(|p| !p.pointed_out)
            .map(|p| p.since + SLOW_ACK)
            .min();
        [slow, self.save_at, self.quit_by]
            .into_iter()
            .flatten()
            .min()
    }

    /// Runs what is due; true once the session is over.
    fn timers(&mut self) -> bool {
        let now = Instant::now();
        if self.quit_by.is_some_and(|t| t <= now) {
            self.unconfirmed("leaving");
            return true;
        }
        let mut slow = Vec::new();
        for p in self.pending.values_mut() {
            if !p.pointed_out && p.since + SLOW_ACK <= now {
                p.pointed_out = true;
                slow.push(format!(
                    "… [{}] still waiting for the server to confirm: {}",
                    p.room,
                    clean(&p.text, " ")
                ));
            }
        }
        for line in slow {
            self.say(&line);
        }
        if self.save_at.is_some_and(|t| t <= now) {
            self.save();
        }
        false
    }

    fn save_soon(&mut self) {
        if self.save_at.is_none() {
            self.save_at = Some(Instant::now() + SAVE_EVERY);
        }
    }

    /// Writes the last seq seen per room to the state file.
    fn save(&mut self) {
        self.save_at = None;
        let (Some(file), Some(epoch)) = (&self.file, self.d.link.epoch()) else {
            return;
        };
        let mut state = State {
            epoch,
            seqs: self.left.clone(),
        };
        for (room, seq) in self.d.link.cursors() {
            state.seqs.insert(room.to_string(), seq);
        }
        if let Err(e) = file.save(&state)
            && !self.save_failed
        {
            self.save_failed = true;
            let path = file.path().display().to_string();
            self.say(&format!("!! cannot save the state file {path}: {e}"));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forbidden_and_stale_id_refusals_read_as_sentences() {
        let p = Pending::new("#team".into(), "hello".into());
        assert_eq!(
            refused_line(&p, ErrorCode::Forbidden.as_u16(), "no access"),
            "✗ [#team] not sent: you may not use this room, FORBIDDEN (no access): hello"
        );
        let stale = refused_line(&p, ErrorCode::StaleId.as_u16(), "");
        assert_eq!(
            stale,
            "? [#team] the server can no longer tell whether this was stored, STALE_ID; look \
             in the room's history: hello"
        );
        assert_eq!(
            refused_line(&p, ErrorCode::RateLimited.as_u16(), "slow down"),
            "✗ [#team] not sent, RATE_LIMITED (slow down): hello"
        );
    }
}
