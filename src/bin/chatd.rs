//! The `chatd` binary: parses the command line, then serves or manages users.

use std::ffi::OsString;
use std::io::Write;
use std::process::ExitCode;

use chatd::cli::{self, Command};
use chatd::config::{Config, Driver, Reload};
use chatd::datadir::DataDir;
use chatd::server::{Server, StopHandle};
use chatd::store::{self, RecoveryMode};
use chatd::{access, auth};
use nix::sys::signal::{SigSet, Signal};

fn main() -> ExitCode {
    let env = env_logger::Env::default().default_filter_or("info");
    env_logger::Builder::from_env(env)
        .format_target(false)
        .init();
    let args: Vec<OsString> = std::env::args_os().skip(1).collect();
    let command = match cli::parse(args.iter().cloned()) {
        Ok(c) => c,
        Err(message) => {
            eprintln!("chatd: {message}");
            return ExitCode::from(2);
        }
    };
    let result = match command {
        Command::Help(text) => {
            print!("{text}");
            Ok(())
        }
        Command::Version => {
            println!("chatd {}", env!("CARGO_PKG_VERSION"));
            Ok(())
        }
        // Before anything starts a thread: the fork driver forks (see `chatd::fork`).
        Command::Serve(config) if config.driver == Driver::Fork => chatd::fork::serve(&config),
        Command::Serve(config) => serve(&config, args),
        Command::ConfigCheck { path } => check_config(&path),
        Command::LogVerify { data_dir } => check_log(&data_dir, RecoveryMode::ReadOnly),
        Command::LogRepair { data_dir, force } => {
            let mode = if force {
                RecoveryMode::ForceTruncate
            } else {
                RecoveryMode::TolerateTornTail
            };
            check_log(&data_dir, mode)
        }
        Command::UserAdd { data_dir, name } => DataDir::open(&data_dir)
            .map_err(|e| e.to_string())
            .and_then(|d| auth::add_user(&d.users_path(), &name).map_err(|e| e.to_string()))
            .map(|token| {
                println!("added user '{name}'. Its token (shown only this once):");
                println!("{token}");
            }),
        Command::UserRemove { data_dir, name } => DataDir::open(&data_dir)
            .map_err(|e| e.to_string())
            .and_then(|d| auth::remove_user(&d.users_path(), &name).map_err(|e| e.to_string()))
            .map(|()| println!("removed user '{name}'")),
        Command::UserRotate { data_dir, name } => DataDir::open(&data_dir)
            .map_err(|e| e.to_string())
            .and_then(|d| auth::rotate_user(&d.users_path(), &name).map_err(|e| e.to_string()))
            .map(|token| {
                println!(
                    "rotated the token of user '{name}'; the old one no longer works. \
                     The new token (shown only this once):"
                );
                println!("{token}");
            }),
        Command::UserList { data_dir } => DataDir::open(&data_dir)
            .map_err(|e| e.to_string())
            .and_then(|d| auth::list_users(&d.users_path()).map_err(|e| e.to_string()))
            .map(|names| names.iter().for_each(|n| println!("{n}"))),
        Command::RoomAllow {
            data_dir,
            room,
            users,
        } => DataDir::open(&data_dir)
            .map_err(|e| e.to_string())
            .and_then(|d| access::allow(&d.access_path(), &room, &users).map_err(|e| e.to_string()))
            .map(|now| println!("room '{room}' is private; {}", who_may(&now))),
        Command::RoomDeny {
            data_dir,
            room,
            users,
        } => DataDir::open(&data_dir)
            .map_err(|e| e.to_string())
            .and_then(|d| access::deny(&d.access_path(), &room, &users).map_err(|e| e.to_string()))
            .map(|now| println!("room '{room}' is private; {}", who_may(&now))),
        Command::RoomPublic { data_dir, room } => DataDir::open(&data_dir)
            .map_err(|e| e.to_string())
            .and_then(|d| access::make_public(&d.access_path(), &room).map_err(|e| e.to_string()))
            .map(|was| match was {
                true => println!("room '{room}' is public: everyone may use it"),
                false => println!("room '{room}' was already public"),
            }),
        Command::RoomList { data_dir } => DataDir::open(&data_dir)
            .map_err(|e| e.to_string())
            .and_then(|d| access::list(&d.access_path()).map_err(|e| e.to_string()))
            .map(|rooms| {
                for (room, users) in rooms {
                    match users.is_empty() {
                        true => println!("{room}: nobody"),
                        false => println!("{room}: {}", users.join(" ")),
                    }
                }
            }),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("chatd: {message}");
            ExitCode::FAILURE
        }
    }
}

/// Runs the server until a stop signal. `args` are the command line it was parsed from,
/// parsed again at SIGHUP so that flags keep winning over the config file.
fn serve(config: &Config, args: Vec<OsString>) -> Result<(), String> {
    // Block the stop signals in every thread (threads inherit the mask) and take them
    // synchronously on one thread of our own: no async-signal-safety puzzles anywhere.
    let mut signals = SigSet::empty();
    signals.add(Signal::SIGINT);
    signals.add(Signal::SIGTERM);
    signals.add(Signal::SIGHUP);
    signals
        .thread_block()
        .map_err(|e| format!("cannot block signals: {e}"))?;
    raise_open_file_limit(config);

    // Privileges drop once every socket is bound and every file open, and before any thread
    // of the server exists: no byte is ever served as root.
    let server = Server::start_with(config, |_| {
        chatd::privilege::drop_privileges(&config.run_as, &config.data_dir)
            .map_err(std::io::Error::other)
    })
    .map_err(|e| e.to_string())?;
    for addr in server.local_addrs() {
        // On stdout rather than in the log: scripts and tests read the bound address (port 0
        // resolved) from here.
        println!("listening on {addr}");
    }
    for addr in server.tls_addrs() {
        println!("listening on {addr} (TLS)");
    }
    for addr in server.web_addrs() {
        println!("listening on {addr} (web)");
    }
    for addr in server.web_tls_addrs() {
        println!("listening on {addr} (web, TLS)");
    }
    let _ = std::io::stdout().flush();
    let serving = match config.driver {
        Driver::Reactor => format!("{} reactors", config.reactor_count()),
        Driver::Threads => "a thread per connection (--driver threads)".to_string(),
        Driver::Fork => "a process pair per connection (--driver fork)".to_string(),
    };
    log::info!(
        "chatd {} serving with {serving}, data in {}",
        env!("CARGO_PKG_VERSION"),
        config.data_dir.display()
    );

    let stop = server.stop_handle();
    let mut running = config.clone();
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            let mut stopping = false;
            loop {
                match signals.wait() {
                    Ok(Signal::SIGHUP) => reload(&stop, &mut running, &args),
                    Ok(sig) if stopping => {
                        log::warn!("{sig} again: stopping now");
                        std::process::exit(1);
                    }
                    Ok(sig) => {
                        log::info!("{sig}: shutting down gracefully");
                        stopping = true;
                        stop.stop();
                    }
                    Err(e) => log::error!("waiting for signals: {e}"),
                }
            }
        })
        .map_err(|e| format!("cannot start the signal thread: {e}"))?;

    server.wait().map_err(|e| e.to_string())?;
    log::info!("stopped");
    Ok(())
}

/// Who may use a private room, in words.
fn who_may(users: &[String]) -> String {
    if users.is_empty() {
        "nobody may use it".to_string()
    } else {
        format!("who may use it: {}", users.join(" "))
    }
}

/// SIGHUP: reread the users file now, and the configuration (the command line again, with the
/// config file it names): apply the limits that can change while running, and log in one line
/// which settings were applied and which need a restart.
fn reload(stop: &StopHandle, running: &mut Config, args: &[OsString]) {
    let (users, private) = stop.reload_users();
    log::info!("SIGHUP: users file checked ({users} users, {private} private rooms)");
    match stop.reload_tls() {
        Some(Ok(())) => log::info!("SIGHUP: TLS certificate reloaded; new handshakes use it"),
        Some(Err(e)) => {
            log::warn!("SIGHUP: TLS certificate not reloaded, keeping the old one: {e}")
        }
        None => {}
    }
    let Some(path) = &running.config_file else {
        log::info!("SIGHUP: no --config file; settings unchanged");
        return;
    };
    match cli::parse(args.iter().cloned()) {
        Ok(Command::Serve(new)) => {
            let reload = Reload::between(running, &new);
            if !reload.applied.is_empty() {
                *running = Reload::apply(running, &new);
                stop.apply_limits(running.limits.clone());
            }
            if reload.needs_restart.is_empty() {
                log::info!("{}", reload.summary());
            } else {
                log::warn!("{}", reload.summary());
            }
        }
        Ok(_) => {}
        Err(e) => log::warn!(
            "SIGHUP: cannot reread {}: {e}; keeping the running settings",
            path.display()
        ),
    }
}

/// `chatd config check FILE`: parse it as `serve --config FILE` would, start nothing.
fn check_config(path: &std::path::Path) -> Result<(), String> {
    let args = [
        "serve".into(),
        "--config".into(),
        path.as_os_str().to_owned(),
    ];
    match cli::parse(args)? {
        Command::Serve(c) => {
            let mut listen: Vec<String> =
                c.listen_addrs().iter().map(ToString::to_string).collect();
            if let Some(files) = c.tls_files() {
                chatd::tls::server::load_certified_key(&files)
                    .map_err(|e| format!("{}: TLS: {e}", path.display()))?;
                listen.extend(c.tls_listen.iter().map(|a| format!("{a} (TLS)")));
            }
            println!(
                "{}: ok (listen {}, data in {}, fsync {:?})",
                path.display(),
                listen.join(" "),
                c.data_dir.display(),
                c.store.fsync
            );
            Ok(())
        }
        _ => Err(format!("{}: not a serve configuration", path.display())),
    }
}

/// `chatd log verify` (read-only), `chatd log repair` (cuts a torn tail, as start-up would,
/// and nothing more) and `chatd log repair --force` (cuts the log at the first damage,
/// wherever it is). The first two fail on damage before the tail, naming file and offset;
/// verify also fails on a torn tail, since repair would change something.
fn check_log(data_dir: &std::path::Path, mode: RecoveryMode) -> Result<(), String> {
    let log_dir = store::log_dir(data_dir);
    if !log_dir.is_dir() {
        return Err(format!(
            "{} holds no message log (no folder {}); a daemon creates it on its first start",
            data_dir.display(),
            log_dir.display()
        ));
    }
    let data = DataDir::open(data_dir).map_err(|e| e.to_string())?;
    let _lock = match mode {
        RecoveryMode::TolerateTornTail | RecoveryMode::ForceTruncate => {
            Some(data.lock().map_err(|e| e.to_string())?)
        }
        RecoveryMode::ReadOnly => None,
    };
    let legacy = data.legacy_epoch().map_err(|e| e.to_string())?;
    let opened = store::open(&log_dir, legacy, mode).map_err(|e| e.to_string())?;
    let recovered = &opened.recovered;
    println!(
        "{}: {} messages in {} rooms, {} segments",
        log_dir.display(),
        recovered.records,
        recovered.rooms.len(),
        recovered.segments.len()
    );
    let emptied = recovered.emptied_rooms();
    if emptied > 0 {
        println!(
            "{emptied} of those rooms have no message left (retention deleted them all) and \
             keep their newest seq in {}",
            log_dir.join(store::heads::HEADS_FILE).display()
        );
    }
    match (opened.ids, opened.minted) {
        (Some(ids), false) => println!("epoch {:016x}", ids.epoch),
        (Some(ids), true) => println!(
            "epoch {:016x}: new, since the history started over; clients start over too",
            ids.epoch
        ),
        (None, _) => {
            println!("no epoch yet: the log holds no message, and the next start makes one")
        }
    }
    match (&recovered.torn, mode) {
        (None, _) => {
            println!("ok: every record is intact");
            Ok(())
        }
        (Some(t), RecoveryMode::ForceTruncate) => {
            println!(
                "repaired by force: cut the log at {} offset {} ({}), dropping {} bytes: {} \
                 whole records and {} later segments",
                t.path.display(),
                t.offset,
                t.reason,
                t.bytes,
                t.records,
                t.segments
            );
            Ok(())
        }
        (Some(t), RecoveryMode::TolerateTornTail) => {
            println!(
                "repaired: cut {} bytes{} of an unfinished write off {} at offset {} ({})",
                t.bytes,
                t.zeros_note(),
                t.path.display(),
                t.offset,
                t.reason
            );
            Ok(())
        }
        (Some(t), RecoveryMode::ReadOnly) => Err(format!(
            "{} ends in {} bytes{} of an unfinished write at offset {} ({}); start-up or \
             `chatd log repair` will cut them off",
            t.path.display(),
            t.bytes,
            t.zeros_note(),
            t.offset,
            t.reason
        )),
    }
}

/// Raises the soft open-file limit to the hard one: every connection is a descriptor, and
/// the usual soft default (1024) is far below what the connection limit allows.
fn raise_open_file_limit(config: &Config) {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) else {
        return;
    };
    if soft < hard {
        let _ = setrlimit(Resource::RLIMIT_NOFILE, hard, hard);
    }
    // Read back what is in force: FreeBSD quietly clamps the soft limit to
    // kern.maxfilesperproc, so the hard limit asked for is not what we got.
    let Ok((limit, _)) = getrlimit(Resource::RLIMIT_NOFILE) else {
        return;
    };
    // rlim_t is u64 on Linux and i64 on FreeBSD; i128 holds both without a cast.
    let limit = i128::from(limit);
    // A few descriptors for listeners, the poll instances and the log.
    let reserve = 64 + 4 * config.reactor_count() as i128;
    let wanted = config.limits.max_connections as i128 + reserve;
    if wanted > limit {
        log::warn!(
            "--max-connections {} needs about {wanted} open files but the limit is {limit}; \
             connections past it will fail to be accepted",
            config.limits.max_connections
        );
    }
}
