//! The command line of `chat`: words and flags in, [`Options`] and a [`Command`] out, and the
//! help text. Parsing only: it never reads a file, the environment or the network. There is
//! deliberately no flag for the token: `ps` would show it to every user of the machine.

use std::ffi::OsString;
use std::path::PathBuf;

use lexopt::prelude::*;

pub const USAGE: &str = "\
chat - the command-line client of chatd

USAGE:
    chat [OPTIONS] [ROOM...]                  chat interactively in ROOMs
    chat [OPTIONS] send ROOM [TEXT...]        post TEXT, or each line of stdin, to ROOM
    chat [OPTIONS] tail ROOM [--after N] [--limit N|all] [--follow] [--json]
                                              print ROOM's history (and live messages)

OPTIONS:
    --server HOST:PORT   the chatd to talk to (default 127.0.0.1:7667; the port defaults
                         to 7667)
    --user NAME          who you are (default: the config file, then $USER)
    --token-file FILE    a file whose first line is your token
    --config FILE        the config file to read (default: see FILES)
    --history N          messages of each room to show on joining (default 20)
    --tls                talk to the server over TLS (the server's TLS port), verifying
                         its certificate against the system's trusted roots
    --ca-file FILE       trust the CA certificate (or the server's self-signed certificate)
                         in FILE, PEM, instead of the system's roots; implies --tls
    --server-name NAME   the name the server's certificate must be valid for, when it is
                         not the host of --server (e.g. connecting by IP address to a
                         certificate for chat.example.org); implies --tls
    --no-tls             plain TCP even if the config file asks for TLS
    --state-dir DIR      where the state files, client id and outbox live (default: see
                         FILES)
    -h, --help           this text
    -V, --version        the version

There is no flag for the token itself, since `ps` shows command lines to everyone. The
token comes from, first match wins: --token-file, $CHAT_TOKEN, $CHAT_TOKEN_FILE, token_file
in the config file. `chatd user add NAME` prints a new user's token.

INTERACTIVE MODE:
    `chat ROOM...` joins the ROOMs (or the config file's `rooms`), shows the last N messages
    of each (--history), then every new message as `HH:MM [room] user: text` in local time.
    A line you type goes to the current room: the first one joined, or the one chosen with
    /room. What you typed stays on screen as `[room]> text` until the server confirms it;
    the confirmed message then appears with its time like everyone else's. A message the
    server refuses is marked `✗` with the reason (e.g. RATE_LIMITED, NOT_JOINED, FORBIDDEN).
    A line typed while disconnected is kept in the outbox (see FILES), shown as `… [room]
    queued`, and sent after reconnecting, as is one whose confirmation the drop took away;
    one still pending at /quit is sent by the next chat of that user and server.

    /join ROOM      join ROOM and make it the current room
    /leave [ROOM]   leave ROOM (default: the current room)
    /room ROOM      make ROOM (already joined) the current room; /room alone names it
    /rooms          list the rooms joined
    /msg USER TEXT  send TEXT to USER in your direct room with them (`@alice+bob`)
    /who [ROOM]     list who is in ROOM (default: the current room)
    /help           list these commands
    /quit           wait for the server to confirm what you sent, then leave (also Ctrl-D)
    //text          send `/text` as a message

    If the connection drops, chat reconnects with growing pauses (up to 30 s) and fetches
    every room from the last message seen, so what was missed appears once and in order.
    When stdin is not a terminal, lines are read as they come, without a line editor, and
    the end of input is /quit.

    chat speaks version 2 of the protocol: with the client id kept in the state directory,
    the server stores a message sent again after a lost confirmation only once. With a
    server that answers UNSUPPORTED_VERSION it says so and speaks version 1: /who, /msg
    and presence lines (`bob joined [#general]`, shown for the rooms joined) need version 2,
    and a message resent there after a lost confirmation may be stored twice.

SCRIPTS:
    send ROOM TEXT...   post the words of TEXT, joined by spaces, as one message. With no
                        TEXT, post each non-empty line of stdin as a message, in order.
                        Exits 0 once the server has confirmed (ACKed) every message. Sends
                        are paced to the server's rate limit: a RATE_LIMITED message is
                        retried after a pause, up to 12 times. Each message waits in the
                        outbox until confirmed: while the server is unreachable or the
                        connection drops, send reconnects with growing pauses and sends it
                        again with the same id, for up to --wait seconds. Messages left in
                        the outbox by an earlier run (of send or interactive mode) go first.
        --wait N        give up reconnecting after N seconds (default 30; 0: fail at once)
    tail ROOM           print the last --history messages of ROOM, one per line as
                        `SEQ YYYY-MM-DD HH:MM [room] user: text`, then exit.
        --after N       only messages after seq N (all of them, unless --limit)
        --limit N|all   at most the last N of those (all = everything retained)
        --follow        keep printing new messages as they come; reconnects like
                        interactive mode
        --json          one JSON object per line:
                        {\"room\":..,\"seq\":..,\"ts_ms\":..,\"user\":..,\"text\":..}
    Put `--` before a TEXT that starts with `-`. Control characters in plain output are
    replaced (a newline by ↵); --json keeps every message exactly.

ENVIRONMENT:
    CHAT_SERVER, CHAT_USER, CHAT_TOKEN, CHAT_TOKEN_FILE override the config file; flags
    override the environment.

FILES:
    $XDG_CONFIG_HOME/chat/config (default ~/.config/chat/config)
        `key = value` lines; lines starting with `#` are comments. Keys:
            server = chat.example.org:7667
            user = alice
            token_file = ~/.config/chat/token     (relative to the config file's folder)
            rooms = #general #dev                 (joined when no ROOM is given)
            history = 20
            tls = yes                             (yes/no, true/false, on/off)
            ca_file = ~/.config/chat/ca.pem       (relative to the config file's folder)
            server_name = chat.example.org
        A ca_file or server_name in the file turns TLS on too, unless `tls = no`.
    $XDG_STATE_HOME/chat/ (default ~/.local/state/chat/)
        one file per user and server (e.g. alice@127.0.0.1_7667): the server's epoch and
        the last message seen in each room. Interactive mode reads it on start to show what
        you missed since last time (after --history messages you had already seen), and
        rewrites it atomically as messages arrive. Safe to delete.
        alice@127.0.0.1_7667.client: this installation's client id and the last message id
        reserved (ids only increase, across runs). Deleting it makes a new client id.
        alice@127.0.0.1_7667.outbox: the messages not yet confirmed by the server, kept
        until they are; one chat at a time uses it (another runs without one and says so).

EXIT STATUS:
    0 success; 1 any other error; 2 bad usage, config or missing token; 3 cannot reach the
    server; 4 authentication failed (AUTH_FAILED); 5 invalid room name or message (INVALID);
    6 rate limited (RATE_LIMITED, after retrying); 7 the server is shutting down
    (SHUTTING_DOWN); 8 the connection dropped before the work was done; 9 the TLS
    handshake failed: the server's certificate is not trusted (--ca-file) or not valid for
    its name (--server-name), or the server does not speak TLS. Exit 9 is never retried.
";

/// Options that apply to every command.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Options {
    pub server: Option<String>,
    pub user: Option<String>,
    pub token_file: Option<PathBuf>,
    pub config: Option<PathBuf>,
    pub history: Option<u32>,
    /// `--tls` (true) or `--no-tls` (false); `None` leaves it to the config file.
    pub tls: Option<bool>,
    pub ca_file: Option<PathBuf>,
    pub server_name: Option<String>,
    pub state_dir: Option<PathBuf>,
    /// `chat send --wait`: seconds to keep reconnecting.
    pub wait: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Help,
    Version,
    Chat {
        rooms: Vec<String>,
    },
    Send {
        room: String,
        /// `None`: one message per line of stdin.
        text: Option<String>,
    },
    Tail {
        room: String,
        after: Option<u64>,
        limit: Option<u32>,
        follow: bool,
        json: bool,
    },
}

/// Parses the arguments after the program name.
///
/// # Errors
/// A message naming the flag or word that is wrong.
pub fn parse(args: impl IntoIterator<Item = OsString>) -> Result<(Options, Command), String> {
    let mut p = lexopt::Parser::from_args(args);
    let mut opts = Options::default();
    let mut words: Vec<String> = Vec::new();
    let (mut after, mut limit, mut follow, mut json) = (None, None, false, false);
    while let Some(arg) = p.next().map_err(|e| e.to_string())? {
        match arg {
            Short('h') | Long("help") => return Ok((opts, Command::Help)),
            Short('V') | Long("version") => return Ok((opts, Command::Version)),
            Long("server") => opts.server = Some(string(&mut p, "--server")?),
            Long("user") => opts.user = Some(string(&mut p, "--user")?),
            Long("token-file") => opts.token_file = Some(p.value().map_err(err)?.into()),
            Long("config") => opts.config = Some(p.value().map_err(err)?.into()),
            Long("history") => opts.history = Some(number(&mut p, "--history")?),
            Long("tls") => opts.tls = Some(true),
            Long("no-tls") => opts.tls = Some(false),
            Long("ca-file") => opts.ca_file = Some(p.value().map_err(err)?.into()),
            Long("server-name") => opts.server_name = Some(string(&mut p, "--server-name")?),
            Long("state-dir") => opts.state_dir = Some(p.value().map_err(err)?.into()),
            Long("wait") => opts.wait = Some(number(&mut p, "--wait")?),
            Long("after") => after = Some(number(&mut p, "--after")?),
            Long("limit") => {
                let v = string(&mut p, "--limit")?;
                limit = Some(if v == "all" {
                    u32::MAX
                } else {
                    v.parse()
                        .map_err(|_| format!("--limit wants a number or `all`, not {v:?}"))?
                });
            }
            Long("follow") | Short('f') => follow = true,
            Long("json") => json = true,
            Long("token") => {
                return Err(
                    "there is no --token: a command line is visible to every user \
                            (ps). Use CHAT_TOKEN, CHAT_TOKEN_FILE, --token-file or token_file \
                            in the config file"
                        .into(),
                );
            }
            Value(v) => words.push(
                v.into_string()
                    .map_err(|v| format!("not valid UTF-8: {v:?}"))?,
            ),
            other => return Err(other.unexpected().to_string()),
        }
    }
    let tls_only = [
        (opts.ca_file.is_some(), "--ca-file"),
        (opts.server_name.is_some(), "--server-name"),
    ];
    if opts.tls == Some(false)
        && let Some((_, flag)) = tls_only.iter().find(|(set, _)| *set)
    {
        return Err(format!("{flag} is for TLS and cannot go with --no-tls"));
    }
    let tail_only = [
        (after.is_some(), "--after"),
        (limit.is_some(), "--limit"),
        (follow, "--follow"),
        (json, "--json"),
    ];
    let is_tail = words.first().is_some_and(|w| w == "tail");
    if opts.wait.is_some() && words.first().is_none_or(|w| w != "send") {
        return Err("--wait goes with `chat send`".into());
    }
    if let Some((_, flag)) = tail_only.iter().find(|(set, _)| *set && !is_tail) {
        return Err(format!("{flag} goes with `chat tail`"));
    }
    let mut words = words.into_iter();
    let command = match words.next().as_deref() {
        Some("help") => Command::Help,
        Some("send") => {
            let room = words.next().ok_or("`chat send` needs a ROOM")?;
            let text: Vec<String> = words.collect();
            Command::Send {
                room,
                text: (!text.is_empty()).then(|| text.join(" ")),
            }
        }
        Some("tail") => {
            let room = words.next().ok_or("`chat tail` needs a ROOM")?;
            if let Some(extra) = words.next() {
                return Err(format!("`chat tail` takes one ROOM; what is {extra:?}?"));
            }
            Command::Tail {
                room,
                after,
                limit,
                follow,
                json,
            }
        }
        Some(first) => Command::Chat {
            rooms: std::iter::once(first.to_string()).chain(words).collect(),
        },
        None => Command::Chat { rooms: Vec::new() },
    };
    Ok((opts, command))
}

fn err(e: lexopt::Error) -> String {
    e.to_string()
}

fn string(p: &mut lexopt::Parser, flag: &str) -> Result<String, String> {
    p.value()
        .map_err(err)?
        .into_string()
        .map_err(|v| format!("{flag}: not valid UTF-8: {v:?}"))
}

fn number<T: std::str::FromStr>(p: &mut lexopt::Parser, flag: &str) -> Result<T, String> {
    let v = string(p, flag)?;
    v.parse()
        .map_err(|_| format!("{flag} wants a whole number, not {v:?}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(args: &[&str]) -> Result<(Options, Command), String> {
        parse(args.iter().map(OsString::from))
    }

    #[test]
    fn rooms_and_options_mix_in_any_order() {
        let (o, c) = run(&["#a", "--server", "h:1", "#b", "--history", "5"]).expect("ok");
        assert_eq!(o.server.as_deref(), Some("h:1"));
        assert_eq!(o.history, Some(5));
        assert_eq!(
            c,
            Command::Chat {
                rooms: vec!["#a".into(), "#b".into()]
            }
        );
    }

    #[test]
    fn send_joins_its_words_and_reads_stdin_without_them() {
        let (_, c) = run(&["send", "#a", "hello", "world"]).expect("ok");
        assert_eq!(
            c,
            Command::Send {
                room: "#a".into(),
                text: Some("hello world".into())
            }
        );
        let (_, c) = run(&["send", "#a", "--", "-1 is a number"]).expect("ok");
        assert!(matches!(c, Command::Send { text: Some(t), .. } if t == "-1 is a number"));
        let (_, c) = run(&["send", "#a"]).expect("ok");
        assert!(matches!(c, Command::Send { text: None, .. }));
        assert!(run(&["send"]).is_err());
    }

    #[test]
    fn tail_takes_its_flags_and_others_refuse_them() {
        let (_, c) = run(&[
            "tail", "#a", "--after", "3", "--limit", "all", "-f", "--json",
        ])
        .expect("ok");
        assert_eq!(
            c,
            Command::Tail {
                room: "#a".into(),
                after: Some(3),
                limit: Some(u32::MAX),
                follow: true,
                json: true
            }
        );
        let e = run(&["#a", "--follow"]).expect_err("not tail");
        assert!(e.contains("--follow"), "{e}");
        assert!(run(&["tail", "#a", "#b"]).is_err());
        assert!(run(&["tail", "#a", "--limit", "many"]).is_err());
    }

    #[test]
    fn tls_flags_parse_and_contradictions_are_refused() {
        let (o, _) = run(&[
            "--tls",
            "--ca-file",
            "ca.pem",
            "--server-name",
            "chat.example.org",
        ])
        .expect("ok");
        assert_eq!(o.tls, Some(true));
        assert_eq!(o.ca_file, Some(PathBuf::from("ca.pem")));
        assert_eq!(o.server_name.as_deref(), Some("chat.example.org"));
        let (o, _) = run(&["--no-tls"]).expect("ok");
        assert_eq!(o.tls, Some(false));
        let (o, _) = run(&["send", "#a", "hi"]).expect("ok");
        assert_eq!(o.tls, None);
        let e = run(&["--no-tls", "--ca-file", "ca.pem"]).expect_err("contradiction");
        assert!(e.contains("--ca-file") && e.contains("--no-tls"), "{e}");
        for flag in ["--tls", "--ca-file", "--server-name", "--no-tls"] {
            assert!(USAGE.contains(flag), "{flag} is explained");
        }
    }

    #[test]
    fn state_dir_is_for_all_and_wait_for_send_only() {
        let (o, _) = run(&["--state-dir", "/s", "send", "#a", "--wait", "5", "x"]).expect("ok");
        assert_eq!(o.state_dir, Some(PathBuf::from("/s")));
        assert_eq!(o.wait, Some(5));
        assert!(run(&["#a", "--wait", "5"]).is_err());
        for needle in ["--state-dir", "--wait", "/msg USER TEXT", "/who", "outbox"] {
            assert!(USAGE.contains(needle), "{needle}");
        }
    }

    #[test]
    fn a_token_flag_is_refused_with_the_alternatives() {
        let e = run(&["--token", "s3cret"]).expect_err("no token flag");
        assert!(e.contains("CHAT_TOKEN"), "{e}");
    }

    #[test]
    fn help_names_the_files_and_the_exit_statuses() {
        for needle in [
            "XDG_CONFIG_HOME",
            "XDG_STATE_HOME",
            "token_file",
            "EXIT STATUS",
        ] {
            assert!(USAGE.contains(needle), "{needle}");
        }
        assert_eq!(run(&["--help"]).expect("ok").1, Command::Help);
    }
}
