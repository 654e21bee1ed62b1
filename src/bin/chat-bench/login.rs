//! Getting a connection ready for load, shared by every scenario: connect, HELLO, WELCOME,
//! JOIN. Every wait here has a deadline, so a daemon that stops answering fails the run
//! instead of hanging it.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use chatd::client::{Client, Reply};
use chatd::protocol::ClientFrame;

/// How long the bench waits for any one frame before it gives the connection up. Far longer
/// than an fsync; short enough that a wedged daemon ends the run in reasonable time.
pub const FRAME_DEADLINE: Duration = Duration::from_secs(30);

/// A daemon to load and the account to log in with.
#[derive(Debug, Clone)]
pub struct Target {
    pub addr: SocketAddr,
    pub user: String,
    pub token: String,
}

/// Connects and completes HELLO/WELCOME.
///
/// # Errors
/// The connection failed, timed out, or the server answered something other than WELCOME.
pub fn login(target: &Target) -> io::Result<Client> {
    login_speaking(target, chatd::protocol::VERSION, 0)
}

/// Connects and completes HELLO/WELCOME in protocol `version`, with `client` as the client id
/// of a version 2 HELLO.
///
/// # Errors
/// As [`login`].
pub fn login_speaking(target: &Target, version: u8, client: u64) -> io::Result<Client> {
    let mut c = Client::connect(target.addr)?;
    c.set_timeout(Some(FRAME_DEADLINE))?;
    if version == 2 {
        c.speak(chatd::protocol::Version::V2);
    }
    c.send(&ClientFrame::Hello {
        version,
        user: &target.user,
        token: &target.token,
        client,
    })?;
    match next(&mut c)? {
        Reply::Welcome { .. } => Ok(c),
        other => Err(unexpected("WELCOME", &other)),
    }
}

/// The client id of a version 2 HELLO for connection `i` of this run: non-zero, distinct per
/// connection, and new for every run (the process id and the clock are in it), so that each
/// connection is an active `(user, client)` pair of its own to the daemon.
pub fn client_id(i: usize) -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let run = (u64::from(std::process::id()) << 40) ^ (nanos << 20);
    (run & !0xF_FFFF) | ((i as u64 & 0xF_FFFF) + 1)
}

/// JOINs `room` for live messages only (no replay) and waits for JOINED.
///
/// # Errors
/// The socket failed, or the server answered something other than JOINED.
pub fn join_live(c: &mut Client, room: &str) -> io::Result<()> {
    c.send(&ClientFrame::Join {
        room,
        after: 0,
        limit: 0,
    })?;
    loop {
        match next(c)? {
            Reply::Joined { room: r, .. } if r == room => return Ok(()),
            // Another sender's message may overtake our JOINED only for a room we are already
            // in; skip anything that is not an answer to us.
            Reply::Msg { .. } => {}
            other => return Err(unexpected("JOINED", &other)),
        }
    }
}

/// The next frame; a close is an error here.
///
/// # Errors
/// The socket failed or timed out, or the server closed the connection.
pub fn next(c: &mut Client) -> io::Result<Reply> {
    c.recv()?.ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "the server closed the connection",
        )
    })
}

fn unexpected(wanted: &str, got: &Reply) -> io::Error {
    io::Error::other(format!("expected {wanted}, got {got:?}"))
}

/// Reads the token: the first non-empty line of `path`.
///
/// # Errors
/// The file cannot be read or holds no token.
pub fn read_token(path: &std::path::Path) -> io::Result<String> {
    let text = std::fs::read_to_string(path)?;
    text.lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .map(str::to_string)
        .ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{}: no token in it", path.display()),
            )
        })
}
