//! The `chat` command line client against the real daemon: `send` and `tail` end to end,
//! the errors a user meets, interactive mode driven through piped stdin, and resuming after
//! the connection drops. Each `chat` runs with HOME and the XDG dirs in a temporary
//! directory, and every wait is on an output line or an exit, with a deadline.

#[path = "util/pki.rs"]
mod pki;
mod util;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::SocketAddr;
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::time::{Duration, Instant};

use chatd::client::Reply;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use pki::{Leaf, Pki};
use util::{Daemon, PATIENCE, join, recv, send};

const CHAT: &str = env!("CARGO_BIN_EXE_chat");

/// One user's `chat` setup: a temporary HOME with config and state dirs.
struct Account {
    home: tempfile::TempDir,
    server: String,
    user: String,
    token: String,
}

impl Account {
    #[track_caller]
    fn new(d: &Daemon, user: &str) -> Account {
        let token = d.add_user(user);
        Account::with_token(d.addr, user, &token)
    }

    fn with_token(server: SocketAddr, user: &str, token: &str) -> Account {
        Account {
            home: tempfile::tempdir().expect("temp home"),
            server: server.to_string(),
            user: user.into(),
            token: token.into(),
        }
    }

    /// `chat ARGS` with this account in the environment and nothing else from ours.
    fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(CHAT);
        c.args(args)
            .env_clear()
            .env("HOME", self.home.path())
            .env("XDG_CONFIG_HOME", self.home.path().join("config"))
            .env("XDG_STATE_HOME", self.home.path().join("state"))
            .env("CHAT_SERVER", &self.server)
            .env("CHAT_USER", &self.user)
            .env("CHAT_TOKEN", &self.token);
        c
    }

    /// Runs `chat ARGS` to its end with `input` on stdin.
    #[track_caller]
    fn run(&self, args: &[&str], input: &str) -> Done {
        finish(self.cmd(args), input)
    }

    /// Starts `chat ARGS` with stdin kept open and stdout read line by line.
    #[track_caller]
    fn spawn(&self, args: &[&str]) -> Session {
        Session::start(self.cmd(args))
    }
}

/// How a `chat` run ended: its status, stdout lines and stderr.
struct Done {
    status: ExitStatus,
    lines: Vec<String>,
    stderr: String,
}

/// Runs `cmd` to its end with `input` on stdin.
#[track_caller]
fn finish(cmd: Command, input: &str) -> Done {
    let mut session = Session::start(cmd);
    let stdin = session.stdin.as_mut().expect("stdin");
    stdin.write_all(input.as_bytes()).expect("write to chat");
    session.close()
}

/// A running `chat` whose stdout lines arrive on a channel.
struct Session {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: Receiver<String>,
    stderr: Receiver<String>,
    /// Every stdout line read so far.
    seen: Vec<String>,
}

impl Session {
    fn start(mut cmd: Command) -> Session {
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn chat");
        let (stdout, stderr) = (child.stdout.take(), child.stderr.take());
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout.expect("stdout")).lines() {
                if line.ok().is_none_or(|l| tx.send(l).is_err()) {
                    return;
                }
            }
        });
        let (tx, errors) = mpsc::channel();
        std::thread::spawn(move || {
            let mut text = String::new();
            let _ = stderr.expect("stderr").read_to_string(&mut text);
            let _ = tx.send(text);
        });
        let stdin = child.stdin.take();
        Session {
            child,
            stdin,
            lines,
            stderr: errors,
            seen: Vec::new(),
        }
    }

    fn type_line(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().expect("stdin open");
        writeln!(stdin, "{line}").expect("write to chat");
    }

    /// Reads lines until one contains `needle`; returns it.
    #[track_caller]
    fn expect(&mut self, needle: &str) -> String {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) if line.contains(needle) => {
                    self.seen.push(line.clone());
                    return line;
                }
                Ok(line) => self.seen.push(line),
                Err(_) => panic!("no line with {needle:?}; got:\n{}", self.seen.join("\n")),
            }
        }
    }

    fn signal(&self, signal: Signal) {
        let pid = i32::try_from(self.child.id()).expect("pid");
        kill(Pid::from_raw(pid), signal).expect("signal chat");
    }

    /// Closes stdin (the end of input is /quit), waits for the exit and the last output.
    #[track_caller]
    fn close(mut self) -> Done {
        drop(self.stdin.take());
        let deadline = Instant::now() + PATIENCE;
        let status = loop {
            match self.child.try_wait().expect("try_wait") {
                Some(status) => break status,
                None if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(10)),
                None => panic!("chat did not exit; output:\n{}", self.seen.join("\n")),
            }
        };
        while let Ok(line) = self.lines.recv_timeout(PATIENCE) {
            self.seen.push(line); // until the reader thread hits the end of the pipe
        }
        Done {
            status,
            lines: std::mem::take(&mut self.seen),
            stderr: self.stderr.recv_timeout(PATIENCE).expect("stderr"),
        }
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Stops `d` with `signal`, then starts a daemon on the same data dir and port.
#[track_caller]
fn restart(d: &mut Daemon, signal: Signal) -> Daemon {
    d.signal(signal);
    assert!(d.wait_exit().is_some(), "daemon stops");
    let dir = std::mem::replace(&mut d.dir, tempfile::tempdir().expect("tmp"));
    let listen = format!("127.0.0.1:{}", d.addr.port());
    Daemon::start_in(dir, &["--send-rate", "0", "--listen", &listen])
}

/// The texts of the `user`'s message lines (`HH:MM [room] user: text`), in order.
fn texts_by(lines: &[String], room: &str, user: &str) -> Vec<String> {
    let marker = format!(" [{room}] {user}: ");
    let texts = lines.iter().filter_map(|l| l.split_once(&marker));
    texts.map(|(_, text)| text.to_string()).collect()
}

/// Field `key` of each JSON line.
fn json_field(lines: &[String], key: &str) -> Vec<serde_json::Value> {
    let objects = lines
        .iter()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).expect("one JSON object per line"));
    objects.map(|o| o[key].clone()).collect()
}

#[track_caller]
fn assert_ok(done: &Done) {
    assert!(done.status.success(), "{}\n{:?}", done.stderr, done.lines);
}

#[track_caller]
fn assert_exit(done: &Done, code: i32, needle: &str) {
    assert_eq!(done.status.code(), Some(code), "{}", done.stderr);
    assert!(
        done.stderr.contains(needle),
        "want {needle:?}: {}",
        done.stderr
    );
    assert_eq!(done.stderr.lines().count(), 1, "one line: {}", done.stderr);
}

/// The next MSG by `author` that `c` receives, as (room, text); skips everything else.
#[track_caller]
fn next_msg_by(c: &mut chatd::client::Client, author: &str) -> (String, String) {
    loop {
        if let Reply::Msg {
            room, user, text, ..
        } = recv(c)
            && user == author
        {
            return (room, text);
        }
    }
}

#[test]
fn send_posts_words_and_stdin_lines_and_tail_prints_them_as_text_and_json() {
    let d = Daemon::start(&[]);
    let alice = Account::new(&d, "alice");
    assert_ok(&alice.run(&["send", "#news", "hello", "world"], ""));
    assert_ok(&alice.run(&["send", "#news"], "one\n\nsay \"two\"\\\r\nthree\n"));

    let done = alice.run(&["tail", "#news"], "");
    let lines = &done.lines;
    assert!(lines.len() == 4 && lines[0].starts_with("1 "), "{lines:?}");
    assert!(
        lines[0].ends_with("[#news] alice: hello world"),
        "{}",
        lines[0]
    );
    assert!(lines[2].ends_with("alice: say \"two\"\\"), "{}", lines[2]);

    let args = ["tail", "#news", "--json", "--after", "1", "--limit", "2"];
    let json = alice.run(&args, "").lines;
    assert_eq!(json_field(&json, "seq"), [3, 4]);
    assert_eq!(json_field(&json, "text"), ["say \"two\"\\", "three"]);
    assert_eq!(json_field(&json, "room"), ["#news", "#news"]);
    assert_eq!(json_field(&json, "user"), ["alice", "alice"]);
    let stamped = |t: &serde_json::Value| t.as_u64().is_some_and(|t| t > 1_600_000_000_000);
    assert!(json_field(&json, "ts_ms").iter().all(stamped));

    let done = alice.run(&["tail", "#quiet"], "");
    assert!(
        done.status.success() && done.lines.is_empty(),
        "an empty room ends at once"
    );
}

#[test]
fn a_config_file_supplies_server_user_token_file_and_rooms() {
    let d = Daemon::start(&[]);
    let token = d.add_user("carol");
    let carol = Account::with_token(d.addr, "ignored", "ignored");
    let config_dir = carol.home.path().join("config").join("chat");
    std::fs::create_dir_all(&config_dir).expect("mkdir");
    std::fs::write(config_dir.join("token"), format!("{token}\n")).expect("token file");
    let config = format!(
        "# carol's\nserver = {}\nuser = carol\ntoken_file = token\nrooms = #from-config\n",
        d.addr
    );
    std::fs::write(config_dir.join("config"), config).expect("config");
    let from_config = |args: &[&str]| {
        let mut cmd = carol.cmd(args);
        cmd.env_remove("CHAT_SERVER")
            .env_remove("CHAT_USER")
            .env_remove("CHAT_TOKEN");
        finish(cmd, "")
    };
    assert_ok(&from_config(&["send", "#from-config", "configured"]));
    let done = from_config(&[]);
    assert_ok(&done);
    assert!(
        done.lines.iter().any(|l| l == "-- joined [#from-config]"),
        "{:?}",
        done.lines
    );
    assert_eq!(
        texts_by(&done.lines, "#from-config", "carol"),
        ["configured"]
    );
}

#[test]
fn errors_a_user_meets_are_one_line_with_their_own_exit_status_and_help_explains_all() {
    let d = Daemon::start(&[]);
    let alice = Account::new(&d, "alice");
    let wrong = Account::with_token(d.addr, "alice", "not-the-token");
    let done = wrong.run(&["send", "#r", "hi"], "");
    assert_exit(&done, 4, "authentication failed for user alice");
    assert!(done.stderr.contains("AUTH_FAILED") && !done.stderr.contains("not-the-token"));

    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
    let port = listener.local_addr().expect("addr");
    drop(listener);
    let done =
        Account::with_token(port, "alice", "t").run(&["send", "--wait", "0", "#r", "hi"], "");
    assert_exit(
        &done,
        3,
        &format!("cannot reach chatd at {port}: connection refused"),
    );

    let done = alice.run(&["send", "no spaces allowed", "hi"], "");
    assert_exit(&done, 5, "invalid room name");
    let mut cmd = alice.cmd(&["send", "#r", "hi"]);
    cmd.env_remove("CHAT_TOKEN");
    assert_exit(&finish(cmd, ""), 2, "no token for alice");
    let done = alice.run(&["--token", "secret", "send", "#r", "hi"], "");
    assert_exit(&done, 2, "there is no --token");

    let help = alice.run(&["--help"], "").lines.join("\n");
    for needle in [
        "tail ROOM",
        "/join ROOM",
        "token_file",
        "XDG_STATE_HOME",
        "EXIT STATUS",
    ] {
        assert!(help.contains(needle), "--help lacks {needle}");
    }
}

#[test]
fn send_paces_itself_through_the_rate_limit_and_keeps_the_order() {
    let d = Daemon::start(&["--send-rate", "20", "--send-burst", "2"]);
    let alice = Account::new(&d, "alice");
    let input: String = (1..=8).map(|i| format!("line {i}\n")).collect();
    assert_ok(&alice.run(&["send", "#busy"], &input));
    let done = alice.run(&["tail", "#busy", "--limit", "all", "--json"], "");
    let want: Vec<String> = (1..=8).map(|i| format!("line {i}")).collect();
    assert_eq!(
        json_field(&done.lines, "text"),
        want,
        "every line once, in order"
    );
}

#[test]
fn interactive_mode_joins_sends_switches_rooms_and_quits() {
    let d = Daemon::start(&[]);
    let alice = Account::new(&d, "alice");
    let mut bob = d.login("bob");
    join(&mut bob, "#a", 0, 0);
    join(&mut bob, "#b", 0, 0);
    let mut chat = alice.spawn(&["#a", "#b"]);
    chat.expect("-- joined [#a]");
    chat.expect("-- joined [#b]");
    chat.type_line("hello a");
    assert_eq!(
        next_msg_by(&mut bob, "alice"),
        ("#a".into(), "hello a".into())
    );
    chat.expect("[#a] alice: hello a");

    send(&mut bob, "#b", 1, "hi from bob");
    chat.expect("[#b] bob: hi from bob");
    chat.type_line("/room #b");
    chat.expect("-- current room: [#b]");
    chat.type_line("/rooms");
    assert_eq!(chat.expect("-- rooms:"), "-- rooms: [#a], [#b] (current)");
    chat.type_line("hello b");
    assert_eq!(
        next_msg_by(&mut bob, "alice"),
        ("#b".into(), "hello b".into())
    );
    chat.type_line("/room #elsewhere");
    chat.expect("!! not in [#elsewhere]");
    chat.type_line("/quit");
    let done = chat.close();
    assert_ok(&done);
    assert_eq!(texts_by(&done.lines, "#b", "alice"), ["hello b"]);
}

#[test]
fn interactive_mode_marks_a_refused_message_with_the_reason() {
    let d = Daemon::start(&["--send-rate", "1", "--send-burst", "1"]);
    let alice = Account::new(&d, "alice");
    let mut chat = alice.spawn(&["#slow"]);
    chat.expect("-- joined [#slow]");
    chat.type_line("first");
    chat.type_line("second");
    let refused = chat.expect("✗");
    assert_eq!(
        refused,
        "✗ [#slow] not sent, RATE_LIMITED (slow down): second"
    );
    // The refusal and the first message's MSG may come in either order (the MSG waits for
    // the disk, the refusal does not; each line also waits for chat's outbox to sync).
    if !chat.seen.iter().any(|l| l.contains("[#slow] alice: first")) {
        chat.expect("[#slow] alice: first");
    }
    chat.type_line("/leave #slow");
    chat.expect("-- left [#slow]");
    chat.type_line("after leaving");
    chat.expect("!! no current room");
    let done = chat.close();
    assert_ok(&done);
    assert_eq!(texts_by(&done.lines, "#slow", "alice"), ["first"]);
}

#[test]
fn interactive_mode_pings_so_an_idle_connection_stays_open() {
    let d = Daemon::start(&["--idle-timeout", "300ms"]);
    let alice = Account::new(&d, "alice");
    let mut chat = alice.spawn(&["#idle"]);
    chat.expect("-- joined [#idle]");
    // Not a synchronisation: the condition under test is time itself, three idle timeouts.
    std::thread::sleep(Duration::from_millis(900));
    chat.type_line("still here");
    chat.expect("[#idle] alice: still here");
    let done = chat.close();
    assert_ok(&done);
    let dropped = done.lines.iter().any(|l| l.contains("reconnect"));
    assert!(
        !dropped,
        "the server never timed chat out: {:?}",
        done.lines
    );
}

#[test]
fn interactive_mode_shows_history_then_what_was_missed_since_the_last_run() {
    let d = Daemon::start(&["--send-rate", "0"]);
    let alice = Account::new(&d, "alice");
    let mut bob = d.login("bob");
    join(&mut bob, "#log", 0, 0);
    for i in 1..=5 {
        send(&mut bob, "#log", i, &format!("old {i}"));
    }
    // Bob's own copies come after storage: once he has them, alice can miss nothing.
    assert_eq!(util::recv_msgs(&mut bob, 5, &mut Vec::new()).len(), 5);
    let done = alice.run(&["--history", "2", "#log"], "");
    assert_ok(&done);
    assert_eq!(texts_by(&done.lines, "#log", "bob"), ["old 4", "old 5"]);
    let file = format!("alice@{}", d.addr).replace(':', "_");
    let saved = std::fs::read_to_string(alice.home.path().join("state/chat").join(file))
        .expect("a state file per user and server");
    assert!(saved.contains("room #log 5"), "{saved}");

    for i in 6..=8 {
        send(&mut bob, "#log", i, &format!("new {i}"));
    }
    let got = util::recv_msgs(&mut bob, 3, &mut Vec::new());
    assert_eq!(got.last().map(|m| m.1), Some(8));
    let done = alice.run(&["--history", "1", "#log"], "");
    assert_eq!(
        texts_by(&done.lines, "#log", "bob"),
        ["old 5", "new 6", "new 7", "new 8"],
        "one message of context, then everything missed"
    );
}

#[test]
fn interactive_mode_resumes_after_a_restart_with_exactly_the_missed_messages() {
    let mut d1 = Daemon::start(&["--send-rate", "0"]);
    let alice = Account::new(&d1, "alice");
    let bob_token = d1.add_user("bob");
    let mut bob = d1.login_with("bob", &bob_token);
    join(&mut bob, "#r", 0, 0);
    let mut chat = alice.spawn(&["--history", "0", "#r"]);
    chat.expect("-- joined [#r]");
    for i in 1..=2 {
        send(&mut bob, "#r", i, &format!("m{i}"));
    }
    chat.expect("bob: m2");

    // As if the laptop slept: chat is frozen while the daemon restarts and bob carries on.
    chat.signal(Signal::SIGSTOP);
    let d2 = restart(&mut d1, Signal::SIGTERM);
    let mut bob = d2.login_with("bob", &bob_token);
    join(&mut bob, "#r", 0, 0);
    for i in 3..=5 {
        send(&mut bob, "#r", i, &format!("m{i}"));
    }
    let acks = (0..6).filter(|_| matches!(recv(&mut bob), Reply::Ack { .. }));
    assert_eq!(
        acks.count(),
        3,
        "the missed messages are stored before chat wakes"
    );
    chat.signal(Signal::SIGCONT);
    chat.expect("-- reconnected to");
    chat.expect("bob: m5");
    send(&mut bob, "#r", 6, "m6");
    chat.expect("bob: m6");
    let done = chat.close();
    assert_ok(&done);
    assert_eq!(
        texts_by(&done.lines, "#r", "bob"),
        ["m1", "m2", "m3", "m4", "m5", "m6"]
    );
}

#[test]
fn tail_follow_resumes_after_the_daemon_is_killed() {
    let mut d1 = Daemon::start(&["--send-rate", "0"]);
    let alice = Account::new(&d1, "alice");
    let mut bob = d1.login("bob");
    join(&mut bob, "#t", 0, 0);
    send(&mut bob, "#t", 1, "before");
    let mut tail = alice.spawn(&["tail", "#t", "--follow", "--json"]);
    tail.expect("\"before\"");

    tail.signal(Signal::SIGSTOP);
    let d2 = restart(&mut d1, Signal::SIGKILL);
    let mut carol = d2.login("carol");
    join(&mut carol, "#t", 0, 0);
    send(&mut carol, "#t", 1, "while away");
    while !matches!(recv(&mut carol), Reply::Ack { .. }) {}
    tail.signal(Signal::SIGCONT);
    tail.expect("\"while away\"");
    send(&mut carol, "#t", 2, "live again");
    tail.expect("\"live again\"");
    assert_eq!(
        json_field(&tail.seen, "seq"),
        [1, 2, 3],
        "each message once, in order"
    );
    tail.signal(Signal::SIGTERM);
    let done = tail.close();
    assert!(done.stderr.contains("reconnecting in"), "{}", done.stderr);
}

/// Stops `d` with `signal` and returns what starts it again on the same data dir and port.
#[track_caller]
fn stop(d: &mut Daemon, signal: Signal) -> impl FnOnce() -> Daemon {
    d.signal(signal);
    assert!(d.wait_exit().is_some(), "daemon stops");
    let dir = std::mem::replace(&mut d.dir, tempfile::tempdir().expect("tmp"));
    let listen = format!("127.0.0.1:{}", d.addr.port());
    move || Daemon::start_in(dir, &["--send-rate", "0", "--listen", &listen])
}

impl Account {
    /// The outbox file of this account (see `chat --help`, FILES).
    fn outbox(&self) -> std::path::PathBuf {
        let name = format!("{}@{}.outbox", self.user, self.server).replace(':', "_");
        self.home.path().join("state/chat").join(name)
    }
}

/// Waits until `path` exists with `len` bytes, or more than nothing if `len` is `None`.
#[track_caller]
fn wait_for_file(path: &std::path::Path, len: Option<u64>) {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let now = std::fs::metadata(path).map(|m| m.len()).ok();
        let reached = match (now, len) {
            (Some(n), Some(want)) => n == want,
            (Some(n), None) => n > 0,
            (None, _) => false,
        };
        if reached {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{} never reached {len:?}: {now:?}",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn send_keeps_its_message_in_the_outbox_while_the_daemon_is_down_and_posts_it_once() {
    let mut d1 = Daemon::start(&["--send-rate", "0"]);
    let alice = Account::new(&d1, "alice");
    let start_again = stop(&mut d1, Signal::SIGKILL);
    let chat = alice.spawn(&["send", "--wait", "60", "#q", "while", "down"]);
    // In the outbox before the first connection is tried, and kept while none succeeds.
    wait_for_file(&alice.outbox(), None);
    let _d2 = start_again();
    let done = chat.close();
    assert_ok(&done);
    assert!(done.stderr.contains("trying again in"), "{}", done.stderr);
    wait_for_file(&alice.outbox(), Some(0));
    let tail = alice.run(&["tail", "#q", "--json"], "");
    assert_eq!(
        json_field(&tail.lines, "text"),
        ["while down"],
        "exactly once"
    );
}

#[test]
fn send_gives_up_at_its_deadline_and_the_next_run_sends_what_it_left() {
    let mut d1 = Daemon::start(&["--send-rate", "0"]);
    let alice = Account::new(&d1, "alice");
    let start_again = stop(&mut d1, Signal::SIGTERM);
    let done = alice.run(&["send", "--wait", "1", "#q", "first"], "");
    assert_eq!(
        done.status.code(),
        Some(3),
        "never reached: {}",
        done.stderr
    );
    assert!(
        done.stderr.contains("stay in the outbox"),
        "{}",
        done.stderr
    );
    let _d2 = start_again();
    assert_ok(&alice.run(&["send", "#q", "second"], ""));
    let tail = alice.run(&["tail", "#q", "--json"], "");
    assert_eq!(
        json_field(&tail.lines, "text"),
        ["first", "second"],
        "the leftover first, each once"
    );
    wait_for_file(&alice.outbox(), Some(0));
}

#[test]
fn interactive_mode_queues_a_line_typed_while_disconnected_and_sends_it_once_after() {
    let mut d1 = Daemon::start(&["--send-rate", "0"]);
    let alice = Account::new(&d1, "alice");
    let mut chat = alice.spawn(&["#r"]);
    chat.expect("-- joined [#r]");
    let start_again = stop(&mut d1, Signal::SIGKILL);
    chat.expect("reconnecting in");
    chat.type_line("typed while away");
    chat.expect("… [#r] queued (not connected), sent once reconnected: typed while away");
    wait_for_file(&alice.outbox(), None);
    let _d2 = start_again();
    chat.expect("-- reconnected to");
    chat.expect("[#r] alice: typed while away");
    wait_for_file(&alice.outbox(), Some(0));
    chat.type_line("/quit");
    let done = chat.close();
    assert_ok(&done);
    assert_eq!(texts_by(&done.lines, "#r", "alice"), ["typed while away"]);
    let tail = alice.run(&["tail", "#r", "--json"], "");
    assert_eq!(
        json_field(&tail.lines, "text"),
        ["typed while away"],
        "exactly once"
    );
}

#[test]
fn who_and_presence_are_shown_and_msg_opens_a_direct_room() {
    let d = Daemon::start(&[]);
    let alice = Account::new(&d, "alice");
    let mut chat = alice.spawn(&["#w"]);
    chat.expect("-- joined [#w]");
    // chat watches each room it joins: the server answers with who is here, then who comes
    // and goes.
    chat.expect("-- [#w] 1 here: alice");
    let mut bob = d.login("bob");
    join(&mut bob, "#w", 0, 0);
    chat.expect("-- bob joined [#w]");
    chat.type_line("/who");
    chat.expect("-- [#w] 2 here: alice, bob");
    drop(bob);
    chat.expect("-- bob left [#w]");
    // Direct rooms are open: /msg joins alice's and bob's and sends there.
    chat.type_line("/msg bob hello bob");
    chat.expect("-- current room: [@alice+bob]");
    chat.expect("-- joined [@alice+bob]");
    chat.expect("[@alice+bob] alice: hello bob");
    chat.type_line("/room #w");
    chat.type_line("still connected");
    chat.expect("[#w] alice: still connected");
    let done = chat.close();
    assert_ok(&done);
    assert!(
        !done.lines.iter().any(|l| l.contains("reconnect")),
        "{:?}",
        done.lines
    );
}

/// A server of before version 2: it refuses a version 2 HELLO with UNSUPPORTED_VERSION and
/// closes, and on a version 1 connection answers JOIN, SEND and BYE. Returns its address and
/// the (version, client) of each HELLO it got, once `connections` have ended.
fn old_server(connections: usize) -> (SocketAddr, std::thread::JoinHandle<Vec<(u8, u64)>>) {
    use chatd::protocol::codec::parse_client;
    use chatd::protocol::{ClientFrame, Decoded, Deframer, ErrorCode, ServerFrame, encode_server};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    let serve = move || {
        let mut hellos = Vec::new();
        for _ in 0..connections {
            let (mut stream, _) = listener.accept().expect("accept");
            stream.set_read_timeout(Some(PATIENCE)).expect("timeout");
            let deframer = Deframer::for_server(65_536);
            let mut buf = Vec::new();
            let mut out = Vec::new();
            'conn: loop {
                let mut chunk = [0u8; 4096];
                let n = stream.read(&mut chunk).expect("read");
                if n == 0 {
                    break;
                }
                buf.extend_from_slice(&chunk[..n]);
                while let Ok(Decoded::Frame(raw)) = deframer.next(&buf) {
                    let used = raw.wire_len;
                    let mut bye = false;
                    match parse_client(&raw).expect("a frame chat may send") {
                        ClientFrame::Hello {
                            version, client, ..
                        } => {
                            hellos.push((version, client));
                            let reply = if version == 1 {
                                ServerFrame::Welcome {
                                    version: 1,
                                    epoch: 1,
                                    session: 1,
                                    max_frame: 65_536,
                                    idle_timeout_ms: 60_000,
                                    server: "old",
                                }
                            } else {
                                bye = true;
                                ServerFrame::Error {
                                    code: ErrorCode::UnsupportedVersion.as_u16(),
                                    reference: 0,
                                    message: "this server speaks version 1",
                                }
                            };
                            encode_server(&reply, &mut out);
                        }
                        ClientFrame::Join { room, .. } => {
                            let joined = ServerFrame::Joined {
                                room,
                                first: 0,
                                head: 0,
                            };
                            encode_server(&joined, &mut out);
                        }
                        ClientFrame::Send { id, .. } => {
                            encode_server(&ServerFrame::Ack { id, seq: 1 }, &mut out);
                        }
                        _ => bye = true,
                    }
                    buf.drain(..used);
                    stream.write_all(&out).expect("write");
                    out.clear();
                    if bye {
                        break 'conn;
                    }
                }
            }
        }
        hellos
    };
    (addr, std::thread::spawn(serve))
}

#[test]
fn send_says_so_and_speaks_version_1_to_a_server_that_refuses_version_2() {
    let (addr, server) = old_server(2);
    let alice = Account::with_token(addr, "alice", "t");
    let done = alice.run(&["send", "--wait", "0", "#r", "hi"], "");
    assert_ok(&done);
    assert!(
        done.stderr
            .contains("does not speak protocol version 2 (UNSUPPORTED_VERSION): using version 1"),
        "{}",
        done.stderr
    );
    let hellos = server.join().expect("the old server");
    assert_eq!(hellos.len(), 2, "{hellos:?}");
    assert_eq!(hellos[0].0, 2, "version 2 first");
    assert_ne!(hellos[0].1, 0, "with a client id");
    assert_eq!(hellos[1], (1, 0), "then version 1, once");
    let client_file = alice.outbox().with_extension("client");
    let kept = std::fs::read_to_string(&client_file).expect("the client id is kept");
    assert!(
        kept.contains(&format!("client {:016x}", hellos[0].1)),
        "{kept}"
    );
}

/// A daemon with a plain listener and a TLS one whose certificate (for localhost and
/// 127.0.0.1) is signed by a fresh test CA.
struct TlsDaemon {
    d: Daemon,
    pki: Pki,
    leaf: Leaf,
    _certs: tempfile::TempDir,
}

impl TlsDaemon {
    #[track_caller]
    fn start() -> TlsDaemon {
        let certs = tempfile::tempdir().expect("temp dir");
        let pki = Pki::new(certs.path());
        let leaf = pki.leaf("server", &["localhost", "127.0.0.1"]);
        let d = start_tls(tempfile::tempdir().expect("tmp"), &leaf, 0, 0);
        TlsDaemon {
            d,
            pki,
            leaf,
            _certs: certs,
        }
    }

    fn tls_addr(&self) -> SocketAddr {
        self.d.tls_addrs[0]
    }

    fn ca(&self) -> String {
        self.pki.ca_pem.display().to_string()
    }

    #[track_caller]
    fn stop(&mut self, signal: Signal) {
        self.d.signal(signal);
        assert!(self.d.wait_exit().is_some(), "daemon stops");
    }

    /// Starts the stopped daemon again on the same data dir and ports, presenting `leaf`.
    #[track_caller]
    fn start_again(&mut self, leaf: &Leaf) {
        let dir = std::mem::replace(&mut self.d.dir, tempfile::tempdir().expect("tmp"));
        let (plain, tls) = (self.d.addr.port(), self.tls_addr().port());
        self.d = start_tls(dir, leaf, plain, tls);
    }
}

/// `chatd serve` in `dir` with a plain and a TLS listener on those ports (0: any).
#[track_caller]
fn start_tls(dir: tempfile::TempDir, leaf: &Leaf, plain: u16, tls: u16) -> Daemon {
    let flags = [
        "--send-rate".to_string(),
        "0".into(),
        "--listen".into(),
        format!("127.0.0.1:{plain}"),
        "--tls-listen".into(),
        format!("127.0.0.1:{tls}"),
        "--tls-cert".into(),
        leaf.cert.display().to_string(),
        "--tls-key".into(),
        leaf.key.display().to_string(),
    ];
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    Daemon::start_in(dir, &flags)
}

#[test]
fn send_tail_and_interactive_mode_work_over_tls_from_flags_or_the_config_file() {
    let t = TlsDaemon::start();
    let token = t.d.add_user("alice");
    let alice = Account::with_token(t.tls_addr(), "alice", &token);
    let ca = t.ca();
    assert_ok(&alice.run(&["--ca-file", &ca, "send", "#s", "over", "tls"], ""));
    let by_name = ["--tls", "--ca-file", &ca, "--server-name", "localhost"];
    let done = alice.run(&[&by_name[..], &["tail", "#s"]].concat(), "");
    assert_ok(&done);
    assert!(
        done.lines.len() == 1 && done.lines[0].ends_with("[#s] alice: over tls"),
        "{:?}",
        done.lines
    );

    let done = alice.run(&["--ca-file", &ca, "#s"], "typed over tls\n");
    assert_ok(&done);
    assert!(
        done.lines
            .iter()
            .any(|l| l.starts_with(&format!("-- connected to {} over TLS", t.tls_addr()))),
        "{:?}",
        done.lines
    );
    assert_eq!(
        texts_by(&done.lines, "#s", "alice"),
        ["over tls", "typed over tls"]
    );

    let config_dir = alice.home.path().join("config").join("chat");
    std::fs::create_dir_all(&config_dir).expect("mkdir");
    let config = format!("tls = yes\nca_file = {ca}\nserver_name = localhost\n");
    std::fs::write(config_dir.join("config"), config).expect("config");
    let done = alice.run(&["tail", "#s", "--json"], "");
    assert_ok(&done);
    assert_eq!(
        json_field(&done.lines, "text"),
        ["over tls", "typed over tls"]
    );
    let done = alice.run(&["--no-tls", "tail", "#s"], "");
    assert_exit(&done, 8, "if that is a TLS port, use --tls");
}

#[test]
fn a_refused_certificate_or_a_server_without_tls_is_one_line_and_exit_9() {
    let t = TlsDaemon::start();
    let token = t.d.add_user("alice");
    let alice = Account::with_token(t.tls_addr(), "alice", &token);
    let ca = t.ca();

    let done = alice.run(
        &[
            "--ca-file",
            &ca,
            "--server-name",
            "10.0.0.5",
            "send",
            "#r",
            "x",
        ],
        "",
    );
    assert_exit(
        &done,
        9,
        "certificate for localhost, 127.0.0.1 is not valid for 10.0.0.5",
    );

    let other = tempfile::tempdir().expect("tmp");
    let stranger = Pki::new(other.path());
    let stranger_ca = stranger.ca_pem.display().to_string();
    let done = alice.run(&["--ca-file", &stranger_ca, "tail", "#r"], "");
    assert_exit(&done, 9, "unknown issuer: pass --ca-file");
    // Interactive mode gives up at once too, instead of retrying.
    let done = alice.run(&["--ca-file", &stranger_ca, "#r"], "");
    assert_exit(&done, 9, "unknown issuer");

    let plain = Account::with_token(t.d.addr, "alice", &token);
    let done = plain.run(&["--tls", "--ca-file", &ca, "send", "#r", "x"], "");
    assert_exit(&done, 9, "did not answer with TLS");

    let done = alice.run(&["--ca-file", "/nonexistent/ca.pem", "send", "#r", "x"], "");
    assert_exit(&done, 2, "/nonexistent/ca.pem");
    assert!(!done.stderr.contains('{'), "{}", done.stderr);
}

#[test]
fn tail_follow_over_tls_resumes_after_a_restart_retries_a_dead_port_and_stops_at_a_bad_certificate()
{
    let mut t = TlsDaemon::start();
    let token = t.d.add_user("alice");
    let alice = Account::with_token(t.tls_addr(), "alice", &token);
    let mut bob = t.d.login("bob");
    join(&mut bob, "#t", 0, 0);
    send(&mut bob, "#t", 1, "before");
    let ca = t.ca();
    let mut tail = alice.spawn(&["--ca-file", &ca, "tail", "#t", "--follow", "--json"]);
    tail.expect("\"before\"");

    let leaf = Leaf {
        cert: t.leaf.cert.clone(),
        key: t.leaf.key.clone(),
    };
    t.stop(Signal::SIGKILL);
    t.start_again(&leaf);
    let mut carol = t.d.login("carol");
    join(&mut carol, "#t", 0, 0);
    send(&mut carol, "#t", 1, "after the restart");
    tail.expect("\"after the restart\"");

    // The TLS port now hangs up on every connection: chat keeps trying, as for any server
    // that is away.
    let port = t.tls_addr();
    t.stop(Signal::SIGKILL);
    let hangs_up = std::net::TcpListener::bind(port).expect("the TLS port again");
    for _ in 0..2 {
        let (conn, _) = hangs_up.accept().expect("chat tries again");
        drop(conn);
    }
    drop(hangs_up);

    // Back with a certificate from a CA chat does not trust: that is not worth retrying.
    let other = tempfile::tempdir().expect("tmp");
    let stranger = Pki::new(other.path()).leaf("server", &["localhost", "127.0.0.1"]);
    t.start_again(&stranger);
    let done = tail.close();
    assert_eq!(done.status.code(), Some(9), "{}", done.stderr);
    let last = done.stderr.lines().last().unwrap_or_default();
    assert!(last.contains("unknown issuer"), "{}", done.stderr);
    assert_eq!(json_field(&done.lines, "seq"), [1, 2], "each message once");
}
