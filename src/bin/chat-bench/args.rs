//! The command line of `chat-bench`: words and flags in, a `Command` out. Parsing only; it
//! never connects, spawns or reads a file (the token file is read by `main`).

use std::path::PathBuf;

use lexopt::prelude::*;

pub const USAGE: &str = "\
chat-bench - load generator for chatd

USAGE:
    chat-bench durable (--addr ADDR [--user U] --token-file F | --spawn [SPAWN OPTIONS])
                       [LOAD OPTIONS]
    chat-bench durable-matrix --spawn [SPAWN OPTIONS] [LOAD OPTIONS] [MATRIX OPTIONS]

SCENARIOS:
    durable          N sender connections each send M messages and wait for their ACKs;
                     measures acked msgs/s and ACK latency, checks that every id gets exactly
                     one ACK or ERROR and that no seq of a room is handed out twice
    durable-matrix   `durable` for every fsync policy x sender count, one daemon per run

TARGET:
    --addr ADDR            a running chatd (host:port)
    --user U               user to log in as (default bench)
    --token-file F         file whose first line is U's token
    --spawn                start a chatd of our own for the run instead (temp data dir)

SPAWN OPTIONS:
    --chatd PATH           the chatd binary (default: `chatd` next to this executable)
    --fsync POLICY         always|interval|never (durable only; default always)

LOAD OPTIONS:
    --senders N            sender connections (default 16)
    --messages M           messages per sender (default 400; matrix: 10000, 2000, 400 for
                           1, 16, 256 senders, or M for every run when given)
    --size B               bytes of text per message (default 200)
    --window W             SENDs in flight per connection (default 1: send, wait for the
                           ACK, send the next)
    --room R               room to send to (default bench)
    --rooms K              spread senders over K rooms R-0..R-(K-1) (default 1: all in R)
    --driver poll|threads  one poll loop for all connections (default), or a thread with a
                           blocking socket per connection
    --protocol 1|2         HELLO's version (default 1); 2 gives each connection a client id
                           of its own, so the daemon checks every SEND for a duplicate

PUB/SUB, IDLE AND CONNECT (see docs/benchmarks.md for every flag):
    chat-bench fanout|rooms|idle|connect (--spawn | --addr ADDR ...) [--target chatd|redis|nats]
    --fsync POLICY         a spawned chatd's --fsync: always, interval or never (default
                           never: the peers keep nothing; `always` is what chatd's own
                           default costs)
    --transport LIST       plain, tls or ws, or several (plain,ws): one run each, in that
                           order, each with a server of its own, then how each that is not
                           plain compares with the plain one (default plain)
      tls                  speak TLS to the server: a spawned one (chatd --tls-listen,
                           redis-server --tls-port, nats-server tls {}) presents a throwaway
                           ECDSA P-256 certificate made with the openssl command for the run;
                           every handshake is full (no session resumption)
      ws                   WebSocket: an HTTP upgrade per connection, then protocol bytes in
                           masked binary messages (chatd: one protocol frame per message, as
                           a browser sends; its spawned daemon gets --web-listen 127.0.0.1:0
                           and --addr is its web listener). NATS: nats-server's websocket {}
                           listener (a config file when spawned). Not for Redis
    --tls                  the same as --transport tls
    --tls-ca F             with --transport tls against --addr: the CA certificate to trust

TLS HANDSHAKES ALONE:
    chat-bench handshakes [--count N] [--cpu C]
                           N full TLS 1.3 handshakes (default 2000) between a rustls client
                           and chatd's own server configuration, in memory in this process,
                           timing the server's side only: its handshake CPU per core

THE CONCURRENCY LAB (see docs/lab.md):
    chat-bench lab [--workload LIST] [--models LIST] [--conns LIST] [--runs K] [--syscalls]
                   [--mbps R] [--secs S] [--sample-ms MS] [--size B] [--fsync POLICY]
                   [--ring-messages N] [--server-cpu C|none] [--cpu C|none] [--chatd PATH]
                           for each workload, model and connection count N: K runs, each
                           with a chatd of its own on CPU C (--server-cpu, default 0; the
                           bench on --cpu, default 1), N connections sending B bytes of text
                           (default 1000, at most 60000) at R Mbit/s each (default 1), open
                           loop, for S seconds (default 60), the server's whole process tree
                           sampled from /proc every MS ms (default 500); one JSON line per
                           (workload, model, N) of medians over the K runs. The daemon runs
                           with --send-rate 0 (no limit)
    --workload LIST        own (each connection in a room of its own: per message an ACK and
                           one MSG back to the sender) and/or shared (all N connections in one
                           room: per message an ACK and N MSGs, one to every member); a comma
                           list, default own. Every member must get every message of its room
    --models LIST          chatd --driver values (default reactor,threads,fork); reactor is
                           started without the flag; a model the daemon refuses is a line
                           with an \"error\" field and the lab goes on
    --conns LIST           connection counts (default 1,2,4,8,16,32,64), climbed in
                           increasing order as a survival ladder: once a model fails at an N
                           (the run cannot be set up, a connection fails, or a SEND goes
                           unanswered, an ERROR comes back or a member misses a message), the
                           larger N of that workload and model are skipped, each a line with
                           a \"skipped\" field. An N whose sockets would not fit in the bench's
                           open-file limit (RLIMIT_NOFILE) is refused with an \"error\" line
    --runs K               runs per (workload, model, N), each with a fresh daemon (default 3,
                           at most 99); the line shows the median of each figure, _min and
                           _max beside the main ones, and sums of the counters
    --syscalls             one more run per (workload, model, N), of at most 5 s, with the
                           server's whole tree under `strace -f -c` (Linux; strace must be
                           installed and ptrace permitted): syscalls_per_msg and the most
                           frequent calls per message, syscalls_top. That run is slowed by
                           strace and none of its other figures are kept. Off by default
    --fsync POLICY         the daemon's --fsync (default never: the lab measures the I/O
                           model, not the disk; every message is still written to the log)
    --ring-messages N      the daemon's --ring-messages (default 100): each room keeps this
                           much history in memory, the same for every model

MATRIX OPTIONS:
    --policies LIST        fsync policies to run (default always,interval,never)
    --sender-counts LIST   sender counts to run (default 1,16,256)
    --repeat K             runs per combination; the table shows medians (default 1)
    --protocols LIST       protocol versions, e.g. 1,2: each combination runs with each,
                           taking turns within every repeat (default 1)

Output: a human summary or table, and one JSON line per run, on stdout. Exit 1 when an
accounting check failed, 2 on a usage or setup error.
";

/// What the load looks like, whichever scenario sends it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Load {
    pub senders: usize,
    pub messages: u64,
    pub size: usize,
    pub window: usize,
    pub room: String,
    pub rooms: usize,
    pub driver: Driver,
    /// HELLO's version: 1, or 2 with a client id of its own per connection, so that the
    /// daemon checks every SEND for a duplicate (exactly-once).
    pub protocol: u8,
}

/// How the bench drives its sender connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Driver {
    /// One thread with one poll loop for every connection: cheap per connection, so the
    /// daemon rather than the bench sets the pace.
    Poll,
    /// A thread and a blocking socket per connection.
    Threads,
}

/// A daemon that the bench starts for itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Spawn {
    pub chatd: PathBuf,
    pub fsync: String,
}

/// Where the load goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Running {
        addr: String,
        user: String,
        token_file: PathBuf,
    },
    Spawn(Spawn),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Matrix {
    pub chatd: PathBuf,
    pub load: Load,
    /// `None`: the per-sender-count defaults.
    pub messages: Option<u64>,
    pub policies: Vec<String>,
    pub sender_counts: Vec<usize>,
    pub repeat: usize,
    /// Protocol versions to run each cell with, taking turns within each repeat so that they
    /// meet the same machine state.
    pub protocols: Vec<u8>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    Durable { target: Target, load: Load },
    Handshakes { count: u32, cpu: Option<usize> },
    Matrix(Matrix),
    Live(Box<crate::live::Live>),
    Standard(crate::standard::Standard),
    Lab(crate::lab::Lab),
    Cluster(crate::cluster::Cluster),
    Presence(crate::presence::Presence),
    Help,
}

/// Messages per sender in the matrix when `--messages` is not given: enough to run a second
/// or more, few enough that `always` with one sender (an fsync per message) stays short.
pub fn matrix_messages(senders: usize) -> u64 {
    match senders {
        0..=1 => 10_000,
        2..=16 => 2000,
        _ => 400,
    }
}

const POLICIES: [&str; 3] = ["always", "interval", "never"];

/// Parses the arguments after the program name.
///
/// # Errors
/// A message naming the bad word or flag.
pub fn parse(args: impl IntoIterator<Item = String>) -> Result<Command, String> {
    let mut p = lexopt::Parser::from_args(args);
    let word = match p.next().map_err(|e| e.to_string())? {
        Some(Value(w)) => w.string().map_err(|e| e.to_string())?,
        Some(Long("help") | Short('h')) | None => return Ok(Command::Help),
        Some(other) => return Err(other.unexpected().to_string()),
    };
    let live = match word.as_str() {
        "fanout" => Some(crate::live::Which::Fanout),
        "rooms" => Some(crate::live::Which::Rooms),
        "idle" => Some(crate::live::Which::Idle),
        "connect" => Some(crate::live::Which::Connect),
        "idle-hold" => Some(crate::live::Which::Hold),
        _ => None,
    };
    if let Some(which) = live {
        return match crate::live::parse(which, &mut p) {
            Err(e) if e == "help" => Ok(Command::Help),
            other => other.map(|l| Command::Live(Box::new(l))),
        };
    }
    if word == "standard" {
        return match crate::standard::parse(&mut p) {
            Err(e) if e == "help" => Ok(Command::Help),
            other => other.map(Command::Standard),
        };
    }
    if word == "cluster" {
        return match crate::cluster::parse(&mut p) {
            Err(e) if e == "help" => Ok(Command::Help),
            other => other.map(Command::Cluster),
        };
    }
    if word == "presence" {
        return match crate::presence::parse(&mut p) {
            Err(e) if e == "help" => Ok(Command::Help),
            other => other.map(Command::Presence),
        };
    }
    if word == "handshakes" {
        return parse_handshakes(&mut p);
    }
    if word == "lab" {
        return match crate::lab::parse(&mut p) {
            Err(e) if e == "help" => Ok(Command::Help),
            other => other.map(Command::Lab),
        };
    }
    let matrix = match word.as_str() {
        "durable" => false,
        "durable-matrix" => true,
        "help" => return Ok(Command::Help),
        _ => return Err(format!("unknown scenario '{word}'")),
    };
    let mut load = Load {
        senders: 16,
        messages: 400,
        size: 200,
        window: 1,
        room: "bench".into(),
        rooms: 1,
        driver: Driver::Poll,
        protocol: 1,
    };
    let (mut addr, mut user, mut token_file) = (None, "bench".to_string(), None);
    let (mut spawn, mut chatd, mut fsync) = (false, None, "always".to_string());
    let mut messages = None;
    let mut policies: Vec<String> = POLICIES.iter().map(|s| s.to_string()).collect();
    let (mut sender_counts, mut repeat) = (vec![1, 16, 256], 1);
    let mut protocols = vec![1];
    while let Some(arg) = p.next().map_err(|e| e.to_string())? {
        match arg {
            Long("addr") => addr = Some(text(&mut p)?),
            Long("user") => user = text(&mut p)?,
            Long("token-file") => token_file = Some(PathBuf::from(text(&mut p)?)),
            Long("spawn") => spawn = true,
            Long("chatd") => chatd = Some(PathBuf::from(text(&mut p)?)),
            Long("fsync") => fsync = policy(&text(&mut p)?)?,
            Long("senders") => load.senders = number(&mut p, "--senders", 1)?,
            Long("messages") => messages = Some(number(&mut p, "--messages", 1)?),
            Long("size") => load.size = number(&mut p, "--size", 1)?,
            Long("window") => load.window = number(&mut p, "--window", 1)?,
            Long("room") => load.room = text(&mut p)?,
            Long("rooms") => load.rooms = number(&mut p, "--rooms", 1)?,
            Long("driver") => load.driver = driver(&text(&mut p)?)?,
            Long("policies") => policies = list(&text(&mut p)?, policy)?,
            Long("sender-counts") => sender_counts = list(&text(&mut p)?, count)?,
            Long("repeat") => repeat = number(&mut p, "--repeat", 1)?,
            Long("protocol") => load.protocol = protocol(&text(&mut p)?)?,
            Long("protocols") if matrix => protocols = list(&text(&mut p)?, protocol)?,
            Long("help") | Short('h') => return Ok(Command::Help),
            other => return Err(other.unexpected().to_string()),
        }
    }
    let chatd = chatd.unwrap_or_else(default_chatd);
    if matrix {
        if !spawn {
            return Err("durable-matrix starts its own daemons: pass --spawn".into());
        }
        return Ok(Command::Matrix(Matrix {
            chatd,
            load,
            messages,
            policies,
            sender_counts,
            repeat,
            protocols,
        }));
    }
    if let Some(m) = messages {
        load.messages = m;
    }
    let target = match (spawn, addr, token_file) {
        (true, None, None) => Target::Spawn(Spawn { chatd, fsync }),
        (true, _, _) => return Err("--spawn runs its own daemon: drop --addr/--token-file".into()),
        (false, Some(addr), Some(token_file)) => Target::Running {
            addr,
            user,
            token_file,
        },
        (false, _, _) => return Err("give --addr and --token-file, or --spawn".into()),
    };
    Ok(Command::Durable { target, load })
}

pub(crate) fn text(p: &mut lexopt::Parser) -> Result<String, String> {
    p.value()
        .map_err(|e| e.to_string())?
        .string()
        .map_err(|e| e.to_string())
}

pub(crate) fn number<T: std::str::FromStr + PartialOrd + From<u8>>(
    p: &mut lexopt::Parser,
    flag: &str,
    min: u8,
) -> Result<T, String> {
    let v = text(p)?;
    match v.parse::<T>() {
        Ok(n) if n >= T::from(min) => Ok(n),
        _ => Err(format!("{flag}: '{v}' is not a number >= {min}")),
    }
}

pub(crate) fn policy(v: &str) -> Result<String, String> {
    if POLICIES.contains(&v) {
        Ok(v.to_string())
    } else {
        Err(format!(
            "fsync policy '{v}' is not one of always, interval, never"
        ))
    }
}

fn driver(v: &str) -> Result<Driver, String> {
    match v {
        "poll" => Ok(Driver::Poll),
        "threads" => Ok(Driver::Threads),
        _ => Err(format!("--driver: '{v}' is not poll or threads")),
    }
}

fn count(v: &str) -> Result<usize, String> {
    match v.parse::<usize>() {
        Ok(n) if n >= 1 => Ok(n),
        _ => Err(format!("'{v}' is not a sender count >= 1")),
    }
}

fn protocol(v: &str) -> Result<u8, String> {
    match v {
        "1" => Ok(1),
        "2" => Ok(2),
        _ => Err(format!("'{v}' is not a protocol version: 1 or 2")),
    }
}

fn list<T>(v: &str, one: impl Fn(&str) -> Result<T, String>) -> Result<Vec<T>, String> {
    v.split(',').map(|s| one(s.trim())).collect()
}

/// `chatd` in the directory of this executable: where cargo puts both.
pub(crate) fn default_chatd() -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(|d| d.join("chatd")))
        .unwrap_or_else(|| PathBuf::from("chatd"))
}

/// `handshakes [--count N] [--cpu C]`.
fn parse_handshakes(p: &mut lexopt::Parser) -> Result<Command, String> {
    let (mut count, mut cpu) = (2000u32, None);
    while let Some(arg) = p.next().map_err(|e| e.to_string())? {
        match arg {
            Long("count") => count = number(p, "--count", 1)?,
            Long("cpu") => cpu = Some(number(p, "--cpu", 0)?),
            Long("help") | Short('h') => return Ok(Command::Help),
            other => return Err(other.unexpected().to_string()),
        }
    }
    Ok(Command::Handshakes { count, cpu })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::Transport;

    fn run(words: &[&str]) -> Result<Command, String> {
        parse(words.iter().map(|s| s.to_string()))
    }

    #[test]
    fn durable_against_a_running_daemon_needs_a_token_file() {
        assert!(run(&["durable", "--addr", "127.0.0.1:7667"]).is_err());
        let cmd = run(&[
            "durable",
            "--addr",
            "127.0.0.1:7667",
            "--token-file",
            "t",
            "--window",
            "8",
            "--driver",
            "threads",
        ])
        .expect("parses");
        let Command::Durable { target, load } = cmd else {
            panic!("expected durable, got {cmd:?}");
        };
        assert!(matches!(target, Target::Running { .. }));
        assert_eq!((load.window, load.driver), (8, Driver::Threads));
    }

    #[test]
    fn matrix_requires_spawn_and_takes_lists() {
        assert!(run(&["durable-matrix"]).is_err());
        let cmd = run(&[
            "durable-matrix",
            "--spawn",
            "--policies",
            "never,always",
            "--sender-counts",
            "2,4",
        ])
        .expect("parses");
        let Command::Matrix(m) = cmd else {
            panic!("expected matrix, got {cmd:?}");
        };
        assert_eq!(m.policies, ["never", "always"]);
        assert_eq!(m.sender_counts, [2, 4]);
        assert_eq!(m.messages, None);
    }

    #[test]
    fn protocols_are_one_or_two_and_take_turns_in_the_matrix() {
        let cmd = run(&["durable", "--spawn", "--protocol", "2"]).expect("parses");
        assert!(matches!(cmd, Command::Durable { load, .. } if load.protocol == 2));
        let cmd = run(&["durable-matrix", "--spawn", "--protocols", "1,2"]).expect("parses");
        assert!(matches!(cmd, Command::Matrix(m) if m.protocols == [1, 2] && m.load.protocol == 1));
        assert!(run(&["durable", "--spawn", "--protocol", "3"]).is_err());
        assert!(
            run(&["durable", "--spawn", "--protocols", "1,2"]).is_err(),
            "matrix only"
        );
    }

    #[test]
    fn bad_values_are_refused() {
        assert!(run(&["durable", "--spawn", "--fsync", "sometimes"]).is_err());
        assert!(run(&["durable", "--spawn", "--window", "0"]).is_err());
        assert!(run(&["fanout"]).is_err());
        assert!(run(&["fanout", "--spawn", "--tls-ca", "ca.pem"]).is_err());
        assert!(run(&["fanout", "--spawn", "--tls", "--tls-ca", "ca.pem"]).is_err());
    }

    #[test]
    fn tls_is_asked_for_per_run_and_a_running_server_brings_its_ca() {
        let live = |words: &[&str]| match run(words) {
            Ok(Command::Live(l)) => l,
            other => panic!("expected a live scenario, got {other:?}"),
        };
        let l = live(&["idle", "--spawn", "--target", "nats", "--tls"]);
        assert_eq!(l.server.transport, Transport::Tls);
        assert_eq!(l.server.tls_ca, None);
        let l = live(&[
            "connect",
            "--addr",
            "127.0.0.1:1",
            "--tls",
            "--tls-ca",
            "ca.pem",
        ]);
        assert_eq!(l.server.tls_ca, Some(PathBuf::from("ca.pem")));
        assert_eq!(live(&["fanout", "--spawn"]).transports, [Transport::Plain]);
    }

    #[test]
    fn publishers_keep_a_thousand_in_flight_unless_told_otherwise() {
        let live = |words: &[&str]| match run(words) {
            Ok(Command::Live(l)) => l,
            other => panic!("expected a live scenario, got {other:?}"),
        };
        assert_eq!(live(&["fanout", "--spawn"]).ps.window, 1000);
        assert_eq!(live(&["rooms", "--spawn"]).ps.window, 1000);
        assert_eq!(live(&["fanout", "--spawn", "--window", "16"]).ps.window, 16);
    }

    #[test]
    fn transports_are_a_list_and_tls_is_an_alias() {
        let live = |words: &[&str]| match run(words) {
            Ok(Command::Live(l)) => Ok(l),
            Ok(other) => panic!("expected a live scenario, got {other:?}"),
            Err(e) => Err(e),
        };
        let l = live(&["fanout", "--spawn", "--transport", "plain,ws"]).expect("parses");
        assert_eq!(l.transports, [Transport::Plain, Transport::Ws]);
        let l = live(&["idle", "--spawn", "--transport", "tls", "--tls"]).expect("agrees");
        assert_eq!(l.transports, [Transport::Tls]);
        assert!(live(&["idle", "--spawn", "--transport", "ws", "--tls"]).is_err());
        assert!(live(&["idle", "--spawn", "--transport", "quic"]).is_err());
        let redis = [
            "fanout",
            "--spawn",
            "--target",
            "redis",
            "--transport",
            "ws",
        ];
        assert!(live(&redis).is_err(), "Redis has no WebSocket");
        let two = ["fanout", "--addr", "127.0.0.1:1", "--transport", "plain,ws"];
        assert!(live(&two).is_err(), "one address is one listener");
        let hold = ["idle-hold", "--addr", "127.0.0.1:1", "--transport", "ws"];
        assert_eq!(live(&hold).expect("parses").server.transport, Transport::Ws);
    }
}
