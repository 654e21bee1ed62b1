//! `chat-bench`: the load generator for chatd. Each scenario (`durable` so far) loads a
//! daemon in one particular way, measures throughput and latency, and checks the daemon's
//! accounting as it goes; `--spawn` lets the bench start and stop a daemon of its own and
//! report what that daemon spent. See docs/benchmarks.md for how to run it and what it found.
//!
//! It only ever connects to the address it is given or to the daemon it spawned on
//! 127.0.0.1, and every loop in it is bounded by message counts and socket deadlines.

mod args;
mod cluster;
mod compare;
mod daemon;
mod handshakes;
mod lab;
mod ledger;
mod live;
mod login;
mod matrix;
mod net;
mod os;
mod payload;
mod peer_args;
mod pki;
mod plot;
mod presence;
mod presence_nodes;
mod record;
mod report;
mod runner;
mod scenario;
mod server;
mod standard;
mod stats;
mod tls;
mod track;
mod wire;
mod ws;

use std::process::ExitCode;

use args::{Command, Load, Target as TargetArgs, USAGE};
use report::table;
use runner::{against, complain, spawned};
use scenario::durable::Durable;

fn main() -> ExitCode {
    if std::env::args().nth(1).as_deref() == Some("lab-report") {
        return lab_report();
    }
    let cmd = match args::parse(std::env::args().skip(1)) {
        Ok(cmd) => cmd,
        Err(e) => {
            eprintln!("chat-bench: {e}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    match cmd {
        Command::Help => {
            print!(
                "{USAGE}\n{}\n{}\n{}\n{}",
                presence::USAGE,
                cluster::USAGE,
                standard::USAGE,
                lab::report::USAGE
            );
            ExitCode::SUCCESS
        }
        Command::Durable { target, load } => durable(&target, &load),
        Command::Handshakes { count, cpu } => match handshakes::run(count, cpu) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("chat-bench: {e}");
                ExitCode::from(2)
            }
        },
        Command::Live(l) => live(&l),
        Command::Standard(s) => match standard::run_set(&s) {
            Ok(true) => ExitCode::SUCCESS,
            Ok(false) => {
                eprintln!("chat-bench standard: a run failed or did not balance (see its table)");
                ExitCode::from(1)
            }
            Err(e) => {
                eprintln!("chat-bench: {e}");
                ExitCode::from(2)
            }
        },
        Command::Lab(l) => match lab::run(&l) {
            Ok(true) => ExitCode::SUCCESS,
            Ok(false) => {
                eprintln!("chat-bench lab: a run did not balance (see unanswered/errors/failures)");
                ExitCode::from(1)
            }
            Err(e) => {
                eprintln!("chat-bench: {e}");
                ExitCode::from(2)
            }
        },
        Command::Cluster(c) => cluster(&c),
        Command::Presence(p) => match presence::run(&p) {
            Ok(true) => ExitCode::SUCCESS,
            Ok(false) => {
                eprintln!("chat-bench presence: a run did not balance (see its violations)");
                ExitCode::from(1)
            }
            Err(e) => {
                eprintln!("chat-bench: {e}");
                ExitCode::from(2)
            }
        },
        Command::Matrix(m) => match matrix::run(&m) {
            matrix::Verdict::Clean => ExitCode::SUCCESS,
            matrix::Verdict::Violations => ExitCode::from(1),
            matrix::Verdict::Broken => ExitCode::from(2),
        },
    }
}

/// `chat-bench lab-report`: the lab's JSON lines into docs/lab.md and its plots.
fn lab_report() -> ExitCode {
    let mut p = lexopt::Parser::from_args(std::env::args().skip(2));
    let r = match lab::report::parse(&mut p) {
        Ok(r) => r,
        Err(e) if e == "help" => {
            print!("{}", lab::report::USAGE);
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("chat-bench lab-report: {e}\n{}", lab::report::USAGE);
            return ExitCode::from(2);
        }
    };
    match lab::report::run(&r) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("chat-bench lab-report: {e}");
            ExitCode::from(2)
        }
    }
}

fn cluster(c: &cluster::Cluster) -> ExitCode {
    match cluster::run(c) {
        Ok(r) => {
            print!("{}", r.rows());
            println!("{}", r.json());
            if cluster::broken(&r) {
                eprintln!(
                    "chat-bench cluster: the accounting did not balance \
                     (see lost/dups/gaps/unanswered/read_errors)"
                );
                ExitCode::from(1)
            } else {
                ExitCode::SUCCESS
            }
        }
        Err(e) => {
            eprintln!("chat-bench cluster: {e}");
            ExitCode::from(2)
        }
    }
}

fn live(l: &live::Live) -> ExitCode {
    if let Some(cpu) = l.cpu
        && let Err(e) = net::pin(cpu)
    {
        eprintln!("chat-bench: {e}");
        return ExitCode::from(2);
    }
    let mut runs = Vec::new();
    let mut broken = false;
    for &transport in &l.transports {
        let mut one = l.clone();
        one.server.transport = transport;
        match live::run(&one) {
            Ok(r) => {
                print!("{}", r.rows());
                println!("{}", r.json());
                broken |= ["lost", "duplicates", "reordered", "failed", "failures"]
                    .iter()
                    .any(|k| r.f(k).is_some_and(|n| n > 0.0));
                runs.push(r);
            }
            Err(e) => {
                eprintln!(
                    "chat-bench: {} over {}: {e}",
                    l.which.name(),
                    transport.name()
                );
                return ExitCode::from(2);
            }
        }
    }
    for c in compare::against_plain(&runs) {
        print!("{}", c.rows());
        println!("{}", c.json());
    }
    if broken {
        eprintln!(
            "chat-bench: the accounting did not balance (see lost/duplicates/reordered/failed)"
        );
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}

fn durable(target: &TargetArgs, load: &Load) -> ExitCode {
    let scenario = Durable { load: load.clone() };
    let result = match target {
        TargetArgs::Spawn(spawn) => spawned(&scenario, spawn, load),
        TargetArgs::Running {
            addr,
            user,
            token_file,
        } => running(addr, user, token_file).and_then(|t| against(&scenario, &t, load)),
    };
    let done = match result {
        Ok(done) => done,
        Err(e) => {
            eprintln!("chat-bench: {e}");
            return ExitCode::from(2);
        }
    };
    complain(&done);
    print!("{}", table(std::slice::from_ref(&done.run)));
    println!("{}", done.run.json());
    if done.run.violations > 0 {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}

fn running(addr: &str, user: &str, token_file: &std::path::Path) -> Result<login::Target, String> {
    use std::net::ToSocketAddrs;
    let addr = addr
        .to_socket_addrs()
        .map_err(|e| format!("--addr {addr}: {e}"))?
        .next()
        .ok_or_else(|| format!("--addr {addr}: no address"))?;
    let token = login::read_token(token_file).map_err(|e| format!("--token-file: {e}"))?;
    Ok(login::Target {
        addr,
        user: user.to_string(),
        token,
    })
}
