//! The three protocols the pub/sub scenarios speak, behind one I/O-free trait: chatd's binary
//! frames, Redis's RESP (PING, SUBSCRIBE, PUBLISH) and NATS's text protocol (CONNECT, SUB,
//! PUB, PING/PONG). A `Wire` writes requests into a buffer and turns received bytes into
//! `In` events; the drivers own the sockets. Each publish is answered once (chatd ACK, Redis
//! integer reply, NATS `+OK` with `verbose` on publisher connections), which is what the
//! publishers' window counts.

mod chatd;
mod nats;
mod redis;

use std::fmt;

/// Which system the bench talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Chatd,
    Redis,
    Nats,
}

impl Kind {
    pub fn parse(v: &str) -> Result<Kind, String> {
        match v {
            "chatd" => Ok(Kind::Chatd),
            "redis" => Ok(Kind::Redis),
            "nats" => Ok(Kind::Nats),
            _ => Err(format!("--target: '{v}' is not chatd, redis or nats")),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Kind::Chatd => "chatd",
            Kind::Redis => "redis",
            Kind::Nats => "nats",
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// What a connection needs to log in (chatd only; the peers run without auth).
#[derive(Debug, Clone, Default)]
pub struct Creds {
    pub user: String,
    pub token: String,
}

/// Something the server said, as far as the bench cares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum In<'a> {
    /// The answer to `hello`: the connection may be used.
    Ready,
    /// The answer to `subscribe`.
    Subscribed,
    /// A message of a room we subscribed to: its text.
    Message(&'a [u8]),
    /// The answer to one `publish`.
    Ack,
    /// An error the server reported (the connection may close after it).
    Error(String),
    Other,
}

pub trait Wire {
    /// Opens the session: chatd HELLO, Redis PING, NATS CONNECT + PING.
    fn hello(&mut self, out: &mut Vec<u8>);
    /// Subscribes to `room`: chatd JOIN (live only), Redis SUBSCRIBE, NATS SUB + PING.
    fn subscribe(&mut self, room: &str, out: &mut Vec<u8>);
    fn publish(&mut self, room: &str, text: &str, out: &mut Vec<u8>);
    /// Whether a publisher must subscribe before it may publish (chatd: only members SEND).
    fn publisher_subscribes(&self) -> bool;
    /// Handles the whole messages at the front of `buf`, writing any reply the protocol
    /// demands (NATS PONG) into `out`; returns the bytes used.
    ///
    /// # Errors
    /// Bytes that are not the protocol.
    fn parse(
        &mut self,
        buf: &[u8],
        out: &mut Vec<u8>,
        on: &mut dyn FnMut(In<'_>),
    ) -> Result<usize, String>;
}

/// A wire for one connection; `publisher` asks for per-publish answers where they are optional.
pub fn new(kind: Kind, publisher: bool, creds: &Creds) -> Box<dyn Wire> {
    match kind {
        Kind::Chatd => Box::new(chatd::Chatd::new(creds.clone())),
        Kind::Redis => Box::new(redis::Redis),
        Kind::Nats => Box::new(nats::Nats::new(publisher)),
    }
}

/// The line at the front of `buf` without its CRLF, and the bytes it takes with it. Looks for
/// the LF and then the CR before it, so each byte is looked at once (a `\n` alone is part of
/// the line, as in a search for the pair).
fn line(buf: &[u8]) -> Option<(&[u8], usize)> {
    let mut from = 0;
    loop {
        let lf = from + buf.get(from..)?.iter().position(|&b| b == b'\n')?;
        if let Some(cr) = lf.checked_sub(1).filter(|&cr| buf.get(cr) == Some(&b'\r')) {
            return Some((buf.get(..cr)?, lf + 1));
        }
        from = lf + 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_ends_at_the_first_crlf() {
        assert_eq!(line(b"PING\r\nPONG\r\n"), Some((&b"PING"[..], 6)));
        assert_eq!(line(b"\r\n"), Some((&b""[..], 2)));
        assert_eq!(line(b"a\nb\r\n"), Some((&b"a\nb"[..], 5)), "a lone LF");
        assert_eq!(line(b"\na\r\n"), Some((&b"\na"[..], 4)), "an LF first");
        assert_eq!(line(b"a\rb\r\n"), Some((&b"a\rb"[..], 5)), "a lone CR");
        for partial in [&b""[..], b"PING", b"PING\r", b"\n", b"a\nb\r"] {
            assert_eq!(line(partial), None, "{partial:?}");
        }
    }
}
