//! `chat`: the command-line client of chatd. Interactive mode for people (rooms, a current
//! room, a line editor that incoming messages never garble, reconnect and resume), `send`
//! and `tail` for scripts. Settings come from the config file, the environment and flags;
//! the token never from the command line. `chat --help` is the manual; docs/chat.md the
//! guide.

mod args;
mod config;
mod conn;
mod events;
mod failure;
mod ids;
mod input;
mod interactive;
mod link;
mod local;
mod outbox;
mod render;
mod script;
mod state;
mod tls;

use std::io::Write;
use std::process::ExitCode;

use args::Command;

/// How long `chat send` keeps reconnecting to an unreachable server, in seconds.
const DEFAULT_WAIT: u64 = 30;
use failure::Failure;

fn main() -> ExitCode {
    let (opts, command) = match args::parse(std::env::args_os().skip(1)) {
        Ok(parsed) => parsed,
        Err(e) => {
            eprintln!("chat: {e} (see `chat --help`)");
            return ExitCode::from(failure::Exit::Usage as u8);
        }
    };
    match run(&opts, command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(f) => {
            eprintln!("chat: {}", f.message);
            ExitCode::from(f.exit as u8)
        }
    }
}

fn run(opts: &args::Options, command: Command) -> Result<(), Failure> {
    if let Command::Help | Command::Version = command {
        let text = match command {
            Command::Help => args::USAGE.to_string(),
            _ => format!("chat {}\n", env!("CARGO_PKG_VERSION")),
        };
        let _ = std::io::stdout().write_all(text.as_bytes());
        return Ok(());
    }
    let settings = config::resolve(opts, &|key| std::env::var(key).ok())?;
    match command {
        Command::Chat { rooms } => interactive::run(&settings, rooms),
        Command::Send { room, text } => {
            let wait = std::time::Duration::from_secs(opts.wait.unwrap_or(DEFAULT_WAIT));
            script::send(&settings, &room, text, wait)
        }
        Command::Tail {
            room,
            after,
            limit,
            follow,
            json,
        } => script::tail(
            &settings,
            &room,
            &script::Tail {
                after,
                limit,
                follow,
                json,
            },
        ),
        Command::Help | Command::Version => Ok(()),
    }
}
