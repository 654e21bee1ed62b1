//! The `chatd` command line: parsing and help. Parsing is kept apart from running so that
//! every flag can be tested without starting anything.

use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use lexopt::{Arg, Parser, ValueExt};

use crate::config::{
    Backend, Config, DEFAULT_DATA_DIR, DEFAULT_LISTEN, DEFAULT_STORE, DEFAULT_TLS_HANDSHAKES,
    Driver, Limits, NatsSettings,
};
use crate::protocol::MAX_FRAME_CEILING;
use crate::store::{FsyncPolicy, Retention};

pub const USAGE: &str = "\
chatd - a small chat server

USAGE:
    chatd serve [OPTIONS]            run the server
    chatd user add NAME [--data-dir DIR]
                                     create a user; prints its new token as the last line
    chatd user remove NAME [--data-dir DIR]
                                     delete a user; a running server ends their sessions
    chatd user rotate NAME [--data-dir DIR]
                                     give a user a new token, printed as the last line; the
                                     old one stops working and its sessions are ended
    chatd user list [--data-dir DIR]
    chatd room allow ROOM [USER...] [--data-dir DIR]
                                     make ROOM private (if it is not) and let USERs use it
    chatd room deny ROOM USER... [--data-dir DIR]
                                     take USERs off private ROOM's list; joined, they get
                                     ERROR FORBIDDEN and LEFT
    chatd room public ROOM [--data-dir DIR]
                                     let everyone use ROOM again
    chatd room list [--data-dir DIR] the private rooms and who may use each
    chatd log verify [DIR]           check a data directory's message log, changing nothing
    chatd log repair [--force] [DIR] cut off a torn tail as start-up would (daemon stopped);
                                     --force also cuts the log at damage before its tail,
                                     dropping every record after it (says how many)
    chatd config check FILE          validate a configuration file without starting
    chatd --help | --version

A running server notices user changes within a second: new users may log in, and removed or
rotated users get ERROR AUTH_FAILED and are disconnected. Room changes too: a user who may no
longer use a room gets ERROR FORBIDDEN and LEFT for it. Direct rooms (@alice+bob, protocol
version 2) are for the users their name lists and need no command. Run `chatd serve --help`
for the server's options and limits. Logging: RUST_LOG=debug|info|warn (default info).
";

/// `chatd serve --help`, built from the defaults so that it can never disagree with them.
pub fn serve_help() -> String {
    let d = Limits::default();
    format!(
        "\
chatd serve - run the server

USAGE:
    chatd serve [OPTIONS]

OPTIONS:
    --config FILE                  read options from a TOML file whose keys are these flags
                                   without dashes (max-frame = 4096, listen = [\"...\"]);
                                   flags on the command line win over the file
    --user NAME, --group NAME      after binding and opening the data directory, and before
                                   serving anyone, drop to this account (the data directory
                                   is handed to it; --config FILE must stay readable by it
                                   for SIGHUP)
    --metrics ADDR                 serve Prometheus metrics at http://ADDR/metrics and a
                                   health check at /healthz (default: off)
    --listen ADDR                  address to listen on; repeat for more; IPv4 or [IPv6]:port
                                   (default {DEFAULT_LISTEN}; port 0 picks a free port)
    --tls-listen ADDR              address to speak protocol v1 inside TLS on (ALPN chatd/1);
                                   repeat for more; beside --listen or instead of it
    --tls-cert FILE                PEM certificate chain for --tls-listen, leaf first; reread
                                   on SIGHUP (a bad file keeps the certificate in force)
    --tls-key FILE                 PEM private key of that certificate (PKCS#8, SEC1 or RSA)
    --tls-handshakes N             TLS handshakes each reactor works on at once; past it the
                                   reactor stops accepting TLS until one finishes (default {tls_hs})
    --web-listen ADDR              serve the browser client (GET /) and its WebSocket (GET /ws)
                                   in plain HTTP; for loopback or behind a proxy; repeatable
    --web-tls-listen ADDR          the same in HTTPS with --tls-cert/--tls-key: the one to
                                   expose; repeatable
    --web-allowed-origin ORIGIN    a page origin (scheme://host[:port]) besides the client's
                                   own that may open the WebSocket; repeatable. Others get 403;
                                   a request with no Origin (not a browser) is let in
    --web-trusted-proxy IP         a proxy whose X-Forwarded-Proto/-Host/-For headers are
                                   believed; repeatable (default: none, they are ignored)
    --data-dir DIR                 where users and the message log live; created on first run
                                   (default ./{DEFAULT_DATA_DIR})
    --threads N                    reactor threads (default: one per core)
    --driver reactor|threads|fork  what serves connections (default reactor). reactor: the
                                   reactor threads above; it is what to run. threads: one OS
                                   thread per connection, for study; --threads does not
                                   apply to it. fork: papayaChat's fork-per-client server,
                                   for study only, not for use: two processes per client,
                                   every client's sender woken (SIGUSR1) by every message,
                                   its own history in DIR/fork, users read at each HELLO
                                   (SIGHUP changes nothing); it refuses --tls-listen,
                                   --metrics, --threads, --user, --group, --segment-bytes
                                   and the retention flags, takes --fsync interval as never,
                                   and has no ring (see \"Drivers\" in docs/architecture.md)

LIMITS (a client that hits one gets the ERROR named):
    --max-frame BYTES              longest frame either way (default {max_frame}) [TOO_LARGE]
    --max-connections N            connections at once, in all (default {max_conn}) [TOO_MANY]
    --max-connections-per-ip N     connections at once from one address (default {per_ip}) [TOO_MANY]
    --max-rooms-per-connection N   rooms one connection may join (default {rooms_conn}) [TOO_MANY]
    --max-rooms N                  rooms the server will create (default {rooms}) [TOO_MANY]
    --send-rate N                  SENDs per second per connection, 0 = unlimited (default {rate}) [RATE_LIMITED]
    --send-burst N                 SENDs allowed in a burst above the rate (default {burst})
    --handshake-timeout DUR        time to send HELLO after connecting (default {hs}) [TIMEOUT]
    --idle-timeout DUR             time without a frame before closing (default {idle}) [TIMEOUT]
    --write-stall-timeout DUR      time a client may read nothing we owe it (default {stall}) [SLOW_CONSUMER]
    --shutdown-timeout DUR         time a graceful stop (drain) may take (default {stop});
                                   --drain-timeout is the same
    --ring-messages N              messages of history kept in memory per room (default {ring_n})
    --ring-bytes BYTES             bytes of history kept in memory per room (default {ring_b})

STORAGE (every message is written to a log in DIR/log before it is acknowledged):
    --fsync always|interval|never  when the log is synced to disk (default always: an ACKed
                                   message survives power loss; interval: up to
                                   --fsync-interval of ACKed messages may be lost if the
                                   machine crashes; never: the kernel decides)
    --fsync-interval DUR           sync period for --fsync interval (default 1s)
    --segment-bytes BYTES          log segment size (default {seg})
    --retention-bytes BYTES        delete the oldest segments past this total, 0 = keep all
                                   (default {ret})
    --retention-age DUR            delete segments whose newest message is older than this
                                   (default: no age limit)
    --store local|jetstream        local (default): the log above. jetstream: every room is a
                                   stream on a NATS JetStream cluster that any number of chatd
                                   nodes share (docs/cluster.md); the log flags do not apply;
                                   the retention flags, if given, become each room's stream
                                   limits (none by default: the 4 GiB above is the log's)
    --nats URL                     a seed server of the NATS cluster, nats://HOST:PORT or
                                   tls://HOST:PORT; repeat for each (needed by --store jetstream)
    --nats-creds FILE              a NATS credentials file (JWT and NKey seed) to connect with
    --nats-token-file FILE         a file holding the NATS token to connect with
    --nats-ca FILE                 trust this PEM CA certificate for tls:// NATS servers, as
                                   well as the system's roots
    --jetstream-replicas N         copies JetStream keeps of each stream (default {replicas};
                                   1 for a single NATS server)
    --nats-ack-timeout DUR         how long a SEND waits for JetStream to confirm it, retries
                                   included, before the answer is ERROR STORAGE (default {ack})

DUR is a number with a unit: 500ms, 5s, 2m (a bare number means seconds).
The users file is watched: added users may log in, and removed or rotated users are
disconnected, within a second.
SIGHUP rereads the users file and the config file (with the flags given here still winning)
and applies at once: --max-connections, --max-connections-per-ip, --max-rooms-per-connection,
--max-rooms, --send-rate, --send-burst and the four timeouts (a lower cap closes nobody; the
handshake timeout applies to new connections). Everything else needs a restart; one log
line names what was applied and what needs a restart.
SIGINT or SIGTERM stops the server gracefully: clients get the ACKs they are owed, then
SHUTTING_DOWN. A second signal stops it at once.
",
        tls_hs = DEFAULT_TLS_HANDSHAKES,
        max_frame = d.max_frame,
        max_conn = d.max_connections,
        per_ip = d.max_connections_per_ip,
        rooms_conn = d.max_rooms_per_connection,
        rooms = d.max_rooms,
        rate = d.send_rate,
        burst = d.send_burst,
        hs = show(d.handshake_timeout),
        idle = show(d.idle_timeout),
        stall = show(d.write_stall_timeout),
        stop = show(d.shutdown_timeout),
        ring_n = d.ring.messages,
        ring_b = d.ring.bytes,
        seg = DEFAULT_STORE.segment_bytes,
        ret = DEFAULT_STORE.retention.max_bytes.unwrap_or(0),
        replicas = crate::config::DEFAULT_REPLICAS,
        ack = show(crate::config::DEFAULT_ACK_TIMEOUT),
    )
}

fn show(d: Duration) -> String {
    if d.subsec_millis() == 0 {
        format!("{}s", d.as_secs())
    } else {
        format!("{}ms", d.as_millis())
    }
}

/// What the command line asks for.
#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    Serve(Box<Config>),
    UserAdd {
        data_dir: PathBuf,
        name: String,
    },
    UserRemove {
        data_dir: PathBuf,
        name: String,
    },
    UserRotate {
        data_dir: PathBuf,
        name: String,
    },
    UserList {
        data_dir: PathBuf,
    },
    RoomAllow {
        data_dir: PathBuf,
        room: String,
        users: Vec<String>,
    },
    RoomDeny {
        data_dir: PathBuf,
        room: String,
        users: Vec<String>,
    },
    RoomPublic {
        data_dir: PathBuf,
        room: String,
    },
    RoomList {
        data_dir: PathBuf,
    },
    LogVerify {
        data_dir: PathBuf,
    },
    LogRepair {
        data_dir: PathBuf,
        force: bool,
    },
    ConfigCheck {
        path: PathBuf,
    },
    Help(String),
    Version,
}

/// Parses the arguments after the program name.
///
/// # Errors
/// A message for the user: what was wrong and where to look.
pub fn parse(args: impl IntoIterator<Item = OsString>) -> Result<Command, String> {
    let args = with_config_file(args.into_iter().collect())?;
    let mut p = Parser::from_iter(std::iter::once(OsString::from("chatd")).chain(args));
    match p.next().map_err(err)? {
        None => Ok(Command::Help(USAGE.to_string())),
        Some(Arg::Short('h') | Arg::Long("help")) => Ok(Command::Help(USAGE.to_string())),
        Some(Arg::Short('V') | Arg::Long("version")) => Ok(Command::Version),
        Some(Arg::Value(v)) => match v.string().map_err(err)?.as_str() {
            "serve" => parse_serve(&mut p),
            "user" => parse_user(&mut p),
            "room" => parse_room(&mut p),
            "log" => parse_log(&mut p),
            "config" => parse_config(&mut p),
            other => Err(format!("unknown command '{other}'\n\n{USAGE}")),
        },
        Some(other) => Err(format!("{}\n\n{USAGE}", other.unexpected())),
    }
}

fn err(e: lexopt::Error) -> String {
    e.to_string()
}

fn parse_serve(p: &mut Parser) -> Result<Command, String> {
    let mut c = Config::default();
    let mut fsync_word: Option<String> = None;
    let mut store_word: Option<String> = None;
    let mut nats = NatsSettings {
        servers: Vec::new(),
        creds: None,
        token_file: None,
        ca: None,
        replicas: crate::config::DEFAULT_REPLICAS,
        ack_timeout: crate::config::DEFAULT_ACK_TIMEOUT,
        retention: Retention {
            max_bytes: None,
            max_age: None,
        },
    };
    let mut fsync_interval = Duration::from_secs(1);
    let l = &mut c.limits;
    while let Some(arg) = p.next().map_err(err)? {
        match arg {
            Arg::Short('h') | Arg::Long("help") => return Ok(Command::Help(serve_help())),
            Arg::Long("listen") => c.listen.push(addr(p)?),
            Arg::Long("tls-listen") => c.tls_listen.push(addr(p)?),
            Arg::Long("tls-cert") => c.tls_cert = Some(p.value().map_err(err)?.into()),
            Arg::Long("tls-key") => c.tls_key = Some(p.value().map_err(err)?.into()),
            Arg::Long("tls-handshakes") => {
                c.tls_handshakes = number(p, "--tls-handshakes", 1, 1 << 20)?;
            }
            Arg::Long("web-listen") => c.web_listen.push(addr(p)?),
            Arg::Long("web-tls-listen") => c.web_tls_listen.push(addr(p)?),
            Arg::Long("web-allowed-origin") => {
                let v = p.value().map_err(err)?.string().map_err(err)?;
                c.web_allowed_origins.push(origin(&v)?);
            }
            Arg::Long("web-trusted-proxy") => {
                let v = p.value().map_err(err)?.string().map_err(err)?;
                let ip = v
                    .parse()
                    .map_err(|_| format!("--web-trusted-proxy: '{v}' is not an IP address"))?;
                c.web_trusted_proxies.push(ip);
            }
            Arg::Long("metrics") => c.metrics = Some(addr(p)?),
            Arg::Long("config") => c.config_file = Some(p.value().map_err(err)?.into()),
            Arg::Long("user") => {
                c.run_as.user = Some(p.value().map_err(err)?.string().map_err(err)?)
            }
            Arg::Long("group") => {
                c.run_as.group = Some(p.value().map_err(err)?.string().map_err(err)?);
            }
            Arg::Long("data-dir") => c.data_dir = p.value().map_err(err)?.into(),
            Arg::Long("threads") => c.threads = number(p, "--threads", 1, 1024)?,
            Arg::Long("driver") => {
                c.driver = match p.value().map_err(err)?.string().map_err(err)?.as_str() {
                    "reactor" => Driver::Reactor,
                    "threads" => Driver::Threads,
                    "fork" => Driver::Fork,
                    other => {
                        return Err(format!(
                            "--driver: '{other}' is not one of reactor, threads, fork"
                        ));
                    }
                };
            }
            Arg::Long("max-frame") => {
                l.max_frame = number(p, "--max-frame", 256, MAX_FRAME_CEILING)?
            }
            Arg::Long("max-connections") => {
                l.max_connections = number(p, "--max-connections", 1, 1 << 24)?;
            }
            Arg::Long("max-connections-per-ip") => {
                l.max_connections_per_ip = number(p, "--max-connections-per-ip", 1, 1 << 24)?;
            }
            Arg::Long("max-rooms-per-connection") => {
                l.max_rooms_per_connection = number(p, "--max-rooms-per-connection", 1, 1 << 16)?;
            }
            Arg::Long("max-rooms") => l.max_rooms = number(p, "--max-rooms", 1, 1 << 24)?,
            Arg::Long("send-rate") => l.send_rate = number(p, "--send-rate", 0, 1 << 24)?,
            Arg::Long("send-burst") => l.send_burst = number(p, "--send-burst", 1, 1 << 24)?,
            Arg::Long("handshake-timeout") => {
                l.handshake_timeout = duration(p, "--handshake-timeout")?
            }
            Arg::Long("idle-timeout") => l.idle_timeout = duration(p, "--idle-timeout")?,
            Arg::Long("write-stall-timeout") => {
                l.write_stall_timeout = duration(p, "--write-stall-timeout")?;
            }
            Arg::Long("shutdown-timeout") | Arg::Long("drain-timeout") => {
                l.shutdown_timeout = duration(p, "--shutdown-timeout")?
            }
            Arg::Long("ring-messages") => {
                l.ring.messages = number(p, "--ring-messages", 1, 1 << 24)?
            }
            Arg::Long("ring-bytes") => l.ring.bytes = number(p, "--ring-bytes", 1, 1 << 40)?,
            Arg::Long("fsync") => {
                let v = p.value().map_err(err)?.string().map_err(err)?;
                fsync_word = Some(v);
            }
            Arg::Long("fsync-interval") => fsync_interval = duration(p, "--fsync-interval")?,
            Arg::Long("segment-bytes") => {
                c.store.segment_bytes = number(p, "--segment-bytes", 4096, 1 << 40)?;
            }
            Arg::Long("retention-bytes") => {
                let n: u64 = number(p, "--retention-bytes", 0, u64::MAX)?;
                c.store.retention.max_bytes = (n > 0).then_some(n);
                nats.retention.max_bytes = (n > 0).then_some(n);
            }
            Arg::Long("retention-age") => {
                c.store.retention.max_age = Some(duration(p, "--retention-age")?);
                nats.retention.max_age = c.store.retention.max_age;
            }
            Arg::Long("store") => store_word = Some(p.value().map_err(err)?.string().map_err(err)?),
            Arg::Long("nats") => nats.servers.push(nats_url(p)?),
            Arg::Long("nats-creds") => nats.creds = Some(p.value().map_err(err)?.into()),
            Arg::Long("nats-token-file") => nats.token_file = Some(p.value().map_err(err)?.into()),
            Arg::Long("nats-ca") => nats.ca = Some(p.value().map_err(err)?.into()),
            Arg::Long("jetstream-replicas") => {
                nats.replicas = number(p, "--jetstream-replicas", 1, 5)?;
            }
            Arg::Long("nats-ack-timeout") => nats.ack_timeout = duration(p, "--nats-ack-timeout")?,
            other => {
                return Err(format!(
                    "{}\n(see `chatd serve --help`)",
                    other.unexpected()
                ));
            }
        }
    }
    c.store.fsync = match fsync_word.as_deref() {
        None | Some("always") => FsyncPolicy::Always,
        Some("interval") => FsyncPolicy::Interval(fsync_interval),
        Some("never") => FsyncPolicy::Never,
        Some(other) => {
            return Err(format!(
                "--fsync: '{other}' is not one of always, interval, never"
            ));
        }
    };
    c.backend = backend(store_word.as_deref(), nats, c.driver)?;
    check_tls(&c)?;
    Ok(Command::Serve(Box::new(c)))
}

/// `--store` and the NATS flags that go with it: `jetstream` needs a server to reach, and NATS
/// flags without it are surely a mistake.
fn backend(word: Option<&str>, nats: NatsSettings, driver: Driver) -> Result<Backend, String> {
    let told = !nats.servers.is_empty()
        || nats.creds.is_some()
        || nats.token_file.is_some()
        || nats.ca.is_some();
    match word {
        None | Some("local") if told => Err(
            "--nats, --nats-creds, --nats-token-file and --nats-ca are for --store jetstream"
                .into(),
        ),
        None | Some("local") => Ok(Backend::Local),
        Some("jetstream") if nats.servers.is_empty() => {
            Err("--store jetstream needs at least one --nats URL".into())
        }
        Some("jetstream") if driver != Driver::Reactor => {
            Err("--store jetstream runs on the reactor driver only".into())
        }
        Some("jetstream") if nats.creds.is_some() && nats.token_file.is_some() => {
            Err("--nats-creds and --nats-token-file: give one or the other".into())
        }
        Some("jetstream") => Ok(Backend::JetStream(nats)),
        Some(other) => Err(format!("--store: '{other}' is not one of local, jetstream")),
    }
}

/// A `--nats` URL: `nats://` or `tls://`, with a host and a port.
fn nats_url(p: &mut lexopt::Parser) -> Result<String, String> {
    let url = p.value().map_err(err)?.string().map_err(err)?;
    let rest = url
        .strip_prefix("nats://")
        .or_else(|| url.strip_prefix("tls://"))
        .ok_or_else(|| {
            format!("--nats: '{url}' is not a nats://HOST:PORT or tls://HOST:PORT URL")
        })?;
    let host_port = rest.rsplit('@').next().unwrap_or(rest);
    match host_port.rsplit_once(':') {
        Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok() => Ok(url),
        _ => Err(format!(
            "--nats: '{url}' needs a host and a port (nats://HOST:PORT)"
        )),
    }
}

/// TLS flags come as a set: listeners need a certificate and key, and a certificate with no
/// TLS listener is surely a mistake in the configuration.
fn check_tls(c: &Config) -> Result<(), String> {
    match (&c.tls_cert, &c.tls_key, !c.wants_tls()) {
        (Some(_), Some(_), false) | (None, None, true) => Ok(()),
        (_, _, false) => Err(
            "--tls-listen and --web-tls-listen need both --tls-cert FILE and --tls-key FILE".into(),
        ),
        (Some(_), None, true) | (None, Some(_), true) | (Some(_), Some(_), true) => Err(
            "--tls-cert and --tls-key are for --tls-listen or --web-tls-listen, neither is given"
                .into(),
        ),
    }
}

/// A `--web-allowed-origin`: `http://` or `https://`, a host, perhaps a port, nothing after;
/// kept in lower case, the form browsers send in `Origin`.
fn origin(v: &str) -> Result<String, String> {
    let bad = || {
        format!(
            "--web-allowed-origin: '{v}' is not an origin like https://chat.example.org or \
             http://127.0.0.1:8080 (scheme, host and optional port, no path)"
        )
    };
    let rest = v
        .strip_prefix("https://")
        .or_else(|| v.strip_prefix("http://"))
        .ok_or_else(bad)?;
    let fine = |ch: char| ch.is_ascii_alphanumeric() || ".-:[]".contains(ch);
    if rest.is_empty() || !rest.chars().all(fine) {
        return Err(bad());
    }
    Ok(v.to_ascii_lowercase())
}

/// The words and `--data-dir` of a `user` or `log` command; `None` if help was asked for.
fn words_and_dir(p: &mut Parser) -> Result<Option<(PathBuf, Vec<String>)>, String> {
    words_dir_force(p, None)
}

/// As [`words_and_dir`], also taking `--force` into `force` when one is given.
fn words_dir_force(
    p: &mut Parser,
    mut force: Option<&mut bool>,
) -> Result<Option<(PathBuf, Vec<String>)>, String> {
    let mut data_dir = PathBuf::from(DEFAULT_DATA_DIR);
    let mut words: Vec<String> = Vec::new();
    while let Some(arg) = p.next().map_err(err)? {
        match arg {
            Arg::Short('h') | Arg::Long("help") => return Ok(None),
            Arg::Long("data-dir") => data_dir = p.value().map_err(err)?.into(),
            Arg::Long("force") if force.is_some() => {
                if let Some(f) = force.as_deref_mut() {
                    *f = true;
                }
            }
            Arg::Value(v) => words.push(v.string().map_err(err)?),
            other => return Err(format!("{}\n\n{USAGE}", other.unexpected())),
        }
    }
    Ok(Some((data_dir, words)))
}

fn parse_user(p: &mut Parser) -> Result<Command, String> {
    let Some((data_dir, words)) = words_and_dir(p)? else {
        return Ok(Command::Help(USAGE.to_string()));
    };
    let words: Vec<&str> = words.iter().map(String::as_str).collect();
    match words.as_slice() {
        ["add", name] => Ok(Command::UserAdd {
            data_dir,
            name: (*name).to_string(),
        }),
        ["remove", name] => Ok(Command::UserRemove {
            data_dir,
            name: (*name).to_string(),
        }),
        ["rotate", name] => Ok(Command::UserRotate {
            data_dir,
            name: (*name).to_string(),
        }),
        ["list"] => Ok(Command::UserList { data_dir }),
        _ => Err(format!(
            "expected `user add NAME`, `user remove NAME`, `user rotate NAME` or `user list`\n\n{USAGE}"
        )),
    }
}

fn parse_room(p: &mut Parser) -> Result<Command, String> {
    let Some((data_dir, words)) = words_and_dir(p)? else {
        return Ok(Command::Help(USAGE.to_string()));
    };
    let owned = |list: &[String]| list.to_vec();
    match words.as_slice() {
        [verb, room, users @ ..] if verb == "allow" => Ok(Command::RoomAllow {
            data_dir,
            room: room.clone(),
            users: owned(users),
        }),
        [verb, room, users @ ..] if verb == "deny" && !users.is_empty() => Ok(Command::RoomDeny {
            data_dir,
            room: room.clone(),
            users: owned(users),
        }),
        [verb, room] if verb == "public" => Ok(Command::RoomPublic {
            data_dir,
            room: room.clone(),
        }),
        [verb] if verb == "list" => Ok(Command::RoomList { data_dir }),
        _ => Err(format!(
            "expected `room allow ROOM [USER...]`, `room deny ROOM USER...`, `room public ROOM` \
             or `room list`\n\n{USAGE}"
        )),
    }
}

fn parse_log(p: &mut Parser) -> Result<Command, String> {
    let mut force = false;
    let Some((data_dir, words)) = words_dir_force(p, Some(&mut force))? else {
        return Ok(Command::Help(USAGE.to_string()));
    };
    let words: Vec<&str> = words.iter().map(String::as_str).collect();
    let (verb, dir) = match words.as_slice() {
        [verb] => (*verb, data_dir),
        [verb, dir] => (*verb, PathBuf::from(dir)),
        _ => {
            return Err(format!(
                "expected `log verify [DIR]` or `log repair [--force] [DIR]`\n\n{USAGE}"
            ));
        }
    };
    match verb {
        "verify" if force => {
            Err("`log verify` changes nothing; --force is for `log repair`".into())
        }
        "verify" => Ok(Command::LogVerify { data_dir: dir }),
        "repair" => Ok(Command::LogRepair {
            data_dir: dir,
            force,
        }),
        other => Err(format!(
            "unknown log command '{other}': use verify or repair"
        )),
    }
}

fn parse_config(p: &mut Parser) -> Result<Command, String> {
    let Some((_, words)) = words_and_dir(p)? else {
        return Ok(Command::Help(USAGE.to_string()));
    };
    match words.as_slice() {
        [verb, file] if verb == "check" => Ok(Command::ConfigCheck { path: file.into() }),
        _ => Err(format!("expected `config check FILE`\n\n{USAGE}")),
    }
}

/// For `serve --config FILE`: puts the file's flags in front of the command line's, so that
/// flags given on the command line win. A list flag (`--listen`, `--tls-listen`, the `--web-`
/// lists) on the command line replaces the file's values of that kind instead of adding to them.
fn with_config_file(args: Vec<OsString>) -> Result<Vec<OsString>, String> {
    if args.first().and_then(|a| a.to_str()) != Some("serve") {
        return Ok(args);
    }
    let mut path = None;
    let mut given: Vec<String> = Vec::new();
    let mut iter = args.iter().skip(1);
    while let Some(arg) = iter.next() {
        match arg.to_str() {
            Some("--config") => path = iter.next().cloned(),
            Some(a) if a.starts_with("--config=") => path = a.get(9..).map(OsString::from),
            Some(a) if a.starts_with("--") => {
                let name = a.split('=').next().unwrap_or(a);
                given.push(name.to_string());
            }
            _ => {}
        }
    }
    let Some(path) = path else { return Ok(args) };
    let text = std::fs::read_to_string(&path)
        .map_err(|e| format!("cannot read config file {}: {e}", path.to_string_lossy()))?;
    let flags = crate::config_file::to_flags(&text)
        .map_err(|e| format!("config file {}: {e}", path.to_string_lossy()))?;
    let mut out = vec![OsString::from("serve")];
    for pair in flags.chunks(2) {
        let replaced = pair.first().is_some_and(|f| {
            crate::config_file::REPEATABLE.contains(&f.trim_start_matches('-')) && given.contains(f)
        });
        if !replaced {
            out.extend(pair.iter().map(OsString::from));
        }
    }
    out.extend(args.into_iter().skip(1));
    Ok(out)
}

fn addr(p: &mut Parser) -> Result<SocketAddr, String> {
    let v = p.value().map_err(err)?.string().map_err(err)?;
    v.parse()
        .map_err(|_| format!("'{v}' is not an address like 127.0.0.1:7667 or [::1]:7667"))
}

fn number<T>(p: &mut Parser, flag: &str, min: T, max: T) -> Result<T, String>
where
    T: std::str::FromStr + PartialOrd + std::fmt::Display + Copy,
{
    let v = p.value().map_err(err)?.string().map_err(err)?;
    match v.parse::<T>() {
        Ok(n) if n >= min && n <= max => Ok(n),
        _ => Err(format!("{flag}: '{v}' is not a number from {min} to {max}")),
    }
}

fn duration(p: &mut Parser, flag: &str) -> Result<Duration, String> {
    let v = p.value().map_err(err)?.string().map_err(err)?;
    parse_duration(&v)
        .ok_or_else(|| format!("{flag}: '{v}' is not a duration like 500ms, 5s or 2m"))
}

/// `500ms`, `5s`, `2m`, or a bare number of seconds. Zero is refused: a deadline of nothing
/// would close every connection at once.
pub fn parse_duration(s: &str) -> Option<Duration> {
    let (digits, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: u64 = digits.parse().ok()?;
    let d = match unit {
        "ms" => Duration::from_millis(n),
        "" | "s" => Duration::from_secs(n),
        "m" => Duration::from_secs(n.checked_mul(60)?),
        _ => return None,
    };
    (!d.is_zero() && d <= Duration::from_secs(365 * 24 * 3600)).then_some(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(args: &[&str]) -> Result<Command, String> {
        parse(args.iter().map(OsString::from))
    }

    #[test]
    fn serve_defaults_match_the_config_defaults() {
        assert_eq!(run(&["serve"]), Ok(Command::Serve(Box::default())));
    }

    #[test]
    fn tls_flags_come_as_a_set() {
        let Ok(Command::Serve(c)) = run(&[
            "serve",
            "--tls-listen",
            "127.0.0.1:7668",
            "--tls-listen",
            "[::1]:7668",
            "--tls-cert",
            "c.pem",
            "--tls-key",
            "k.pem",
            "--tls-handshakes",
            "8",
        ]) else {
            panic!("TLS flags parse");
        };
        assert_eq!(c.tls_listen.len(), 2);
        assert!(
            c.listen_addrs().is_empty(),
            "TLS alone: no default plain listener"
        );
        assert_eq!(c.tls_handshakes, 8);
        assert!(c.tls_files().is_some());
        let no_key = run(&[
            "serve",
            "--tls-listen",
            "127.0.0.1:1",
            "--tls-cert",
            "c.pem",
        ]);
        assert!(no_key.is_err_and(|e| e.contains("--tls-key")));
        let no_listener = run(&["serve", "--tls-cert", "c.pem", "--tls-key", "k.pem"]);
        assert!(no_listener.is_err_and(|e| e.contains("--tls-listen")));
        let bad = run(&["serve", "--tls-handshakes", "0"]);
        assert!(bad.is_err_and(|e| e.contains("--tls-handshakes")));
    }

    #[test]
    fn serve_flags_set_limits() {
        let Ok(Command::Serve(c)) = run(&[
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--listen",
            "[::1]:0",
            "--threads",
            "3",
            "--send-rate",
            "0",
            "--idle-timeout",
            "250ms",
            "--max-frame",
            "1024",
        ]) else {
            panic!("flags should parse");
        };
        assert_eq!(c.listen.len(), 2);
        assert_eq!(c.threads, 3);
        assert_eq!(c.limits.send_rate, 0);
        assert_eq!(c.limits.idle_timeout, Duration::from_millis(250));
        assert_eq!(c.limits.max_frame, 1024);
    }

    #[test]
    fn bad_values_say_which_flag() {
        let e = run(&["serve", "--threads", "many"]).expect_err("not a number");
        assert!(e.contains("--threads"), "{e}");
        let e = run(&["serve", "--idle-timeout", "0"]).expect_err("zero");
        assert!(e.contains("--idle-timeout"), "{e}");
        let e = run(&["serve", "--driver", "fibers"]).expect_err("no such driver");
        assert!(
            e.contains("--driver") && e.contains("reactor, threads, fork"),
            "{e}"
        );
        let e = run(&["serve", "--bogus"]).expect_err("unknown flag");
        assert!(e.contains("--bogus"), "{e}");
        let e = run(&["serve", "--max-frame", "10"]).expect_err("too small for WELCOME");
        assert!(e.contains("256"), "{e}");
    }

    #[test]
    fn room_commands() {
        assert_eq!(
            run(&["room", "allow", "staff", "alice", "bob", "--data-dir", "d"]),
            Ok(Command::RoomAllow {
                data_dir: "d".into(),
                room: "staff".into(),
                users: vec!["alice".into(), "bob".into()],
            })
        );
        assert!(matches!(
            run(&["room", "allow", "vault"]),
            Ok(Command::RoomAllow { users, .. }) if users.is_empty()
        ));
        assert!(matches!(
            run(&["room", "deny", "staff", "bob"]),
            Ok(Command::RoomDeny { users, .. }) if users == ["bob"]
        ));
        assert!(matches!(
            run(&["room", "public", "staff"]),
            Ok(Command::RoomPublic { room, .. }) if room == "staff"
        ));
        assert!(matches!(
            run(&["room", "list"]),
            Ok(Command::RoomList { .. })
        ));
        assert!(run(&["room", "deny", "staff"]).is_err(), "deny needs users");
        assert!(run(&["room", "public"]).is_err());
        assert!(run(&["room", "list", "x"]).is_err());
        assert!(run(&["room"]).is_err());
    }

    #[test]
    fn user_commands() {
        assert_eq!(
            run(&["user", "add", "alice", "--data-dir", "d"]),
            Ok(Command::UserAdd {
                data_dir: "d".into(),
                name: "alice".into()
            })
        );
        assert!(matches!(
            run(&["user", "list"]),
            Ok(Command::UserList { .. })
        ));
        assert_eq!(
            run(&["user", "rotate", "bob", "--data-dir", "d"]),
            Ok(Command::UserRotate {
                data_dir: "d".into(),
                name: "bob".into()
            })
        );
        assert!(run(&["user", "add"]).is_err());
        assert!(run(&["user", "rotate"]).is_err());
    }

    #[test]
    fn store_flags() {
        let Ok(Command::Serve(c)) = run(&[
            "serve",
            "--fsync",
            "interval",
            "--fsync-interval",
            "250ms",
            "--segment-bytes",
            "8192",
            "--retention-bytes",
            "0",
            "--retention-age",
            "2m",
        ]) else {
            panic!("store flags should parse");
        };
        assert_eq!(
            c.store.fsync,
            FsyncPolicy::Interval(Duration::from_millis(250))
        );
        assert_eq!(c.store.segment_bytes, 8192);
        assert_eq!(c.store.retention.max_bytes, None);
        assert_eq!(c.store.retention.max_age, Some(Duration::from_secs(120)));
        let e = run(&["serve", "--fsync", "sometimes"]).expect_err("bad policy");
        assert!(e.contains("--fsync"), "{e}");
    }

    #[test]
    fn jetstream_flags() {
        let Ok(Command::Serve(c)) = run(&[
            "serve",
            "--store",
            "jetstream",
            "--nats",
            "nats://127.0.0.1:4222",
            "--nats",
            "tls://user:pw@nats.example:4443",
            "--jetstream-replicas",
            "1",
            "--nats-ack-timeout",
            "500ms",
            "--retention-age",
            "60m",
        ]) else {
            panic!("jetstream flags should parse");
        };
        let Backend::JetStream(nats) = &c.backend else {
            panic!("--store jetstream: {:?}", c.backend);
        };
        assert_eq!(nats.servers.len(), 2);
        assert_eq!(nats.replicas, 1);
        assert_eq!(nats.ack_timeout, Duration::from_millis(500));
        // Only what was given reaches the streams, not the log's 4 GiB default.
        assert_eq!(nats.retention.max_bytes, None);
        assert_eq!(nats.retention.max_age, Some(Duration::from_secs(3600)));
        let Ok(Command::Serve(c)) = run(&["serve"]) else {
            panic!("no flags should parse");
        };
        assert_eq!(c.backend, Backend::Local);
        for (args, needle) in [
            (&["serve", "--store", "jetstream"][..], "--nats URL"),
            (
                &["serve", "--nats", "nats://127.0.0.1:4222"],
                "--store jetstream",
            ),
            (&["serve", "--store", "cloud"], "local, jetstream"),
            (
                &["serve", "--store", "jetstream", "--nats", "127.0.0.1:4222"],
                "nats://",
            ),
            (
                &["serve", "--store", "jetstream", "--nats", "nats://host"],
                "port",
            ),
            (
                &[
                    "serve",
                    "--store",
                    "jetstream",
                    "--nats",
                    "nats://h:1",
                    "--driver",
                    "threads",
                ],
                "reactor",
            ),
        ] {
            let e = run(args).expect_err("should be refused");
            assert!(e.contains(needle), "{args:?}: {e}");
        }
    }

    #[test]
    fn log_commands() {
        assert_eq!(
            run(&["log", "verify", "d"]),
            Ok(Command::LogVerify {
                data_dir: "d".into()
            })
        );
        assert_eq!(
            run(&["log", "repair"]),
            Ok(Command::LogRepair {
                data_dir: DEFAULT_DATA_DIR.into(),
                force: false
            })
        );
        assert_eq!(
            run(&["log", "repair", "--force", "d"]),
            Ok(Command::LogRepair {
                data_dir: "d".into(),
                force: true
            })
        );
        assert!(run(&["log", "verify", "--force"]).is_err());
        assert!(run(&["user", "list", "--force"]).is_err());
        assert!(run(&["log", "burn"]).is_err());
    }

    #[test]
    fn config_file_flags_come_first_and_the_command_line_wins() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("chatd.toml");
        std::fs::write(
            &path,
            "listen = \"127.0.0.1:1\"\nthreads = 3\nsend_rate = 5\n",
        )
        .expect("write");
        let file = path.to_str().expect("utf8 path");
        let Ok(Command::Serve(c)) = run(&["serve", "--config", file, "--send-rate", "9"]) else {
            panic!("config should parse");
        };
        assert_eq!(c.threads, 3);
        assert_eq!(c.limits.send_rate, 9, "the command line wins");
        assert_eq!(c.listen, vec!["127.0.0.1:1".parse().expect("addr")]);
        assert_eq!(c.config_file.as_deref(), Some(path.as_path()));
        let Ok(Command::Serve(c)) = run(&["serve", "--config", file, "--listen", "127.0.0.1:2"])
        else {
            panic!("config should parse");
        };
        assert_eq!(
            c.listen,
            vec!["127.0.0.1:2".parse().expect("addr")],
            "listen replaces"
        );
        std::fs::write(&path, "threads = \"many\"\n").expect("write");
        let e = run(&["serve", "--config", file]).expect_err("bad value");
        assert!(e.contains("--threads"), "{e}");
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("500ms"), Some(Duration::from_millis(500)));
        assert_eq!(parse_duration("5"), Some(Duration::from_secs(5)));
        assert_eq!(parse_duration("2m"), Some(Duration::from_secs(120)));
        assert_eq!(parse_duration("5h"), None);
        assert_eq!(parse_duration("ms"), None);
        assert_eq!(parse_duration("0s"), None);
    }

    #[test]
    fn every_driver_has_its_word() {
        for driver in [Driver::Reactor, Driver::Threads, Driver::Fork] {
            let Ok(Command::Serve(c)) = run(&["serve", "--driver", driver.name()]) else {
                panic!("--driver {} should parse", driver.name());
            };
            assert_eq!(c.driver, driver);
            assert!(serve_help().contains(driver.name()));
        }
    }

    #[test]
    fn help_lists_every_limit_flag() {
        let help = serve_help();
        for flag in [
            "--max-frame",
            "--max-connections-per-ip",
            "--send-rate",
            "--write-stall-timeout",
        ] {
            assert!(help.contains(flag), "{flag} missing from help");
        }
    }
}
