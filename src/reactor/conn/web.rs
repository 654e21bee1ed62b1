//! A web listener's connection in the reactor: HTTP requests until the upgrade, then
//! WebSocket messages that carry protocol v1 to and from the very same session a TCP client
//! has. The state machine and the framing are `crate::web`'s, free of I/O; this is where the
//! reactor's scratch buffers and the socket meet them.
//!
//! Input is copied behind the partial frame kept from the last read into the scratch buffer
//! and unmasked there, so an idle connection keeps no buffer. Output is framed in place: the
//! session's frames are gathered behind room for a header, which is written just in front of
//! them. Before the upgrade whatever the session says is dropped (an HTTP client would read
//! it as garbage), and after our Close nothing more is framed. It must never block, never
//! touch the disk, and never let a client make it buffer more than one frame each way.

use std::io;
use std::net::IpAddr;

use super::{Conn, Gather, interrupted, would_block};
use crate::protocol::ErrorCode;
use crate::session::{Env, Session};
use crate::shared::Shared;
use crate::transport::Transport;
use crate::transport::tls::SEAL_CHUNK;
use crate::web::close::code;
use crate::web::conn::{Phase, Step};
use crate::web::frame::MAX_SERVER_HEADER;
use crate::web::http::Site;
use crate::web::{WsConn, client};

/// Whose bytes these are: the server's settings, the socket's peer, and whether the listener
/// speaks TLS (it decides the page's origin and the socket's URL).
pub struct Peer<'a> {
    pub shared: &'a Shared,
    pub addr: IpAddr,
    pub tls: bool,
}

/// Takes bytes a web client sent (after TLS, if any): an HTTP request's, or WebSocket frames
/// whose payloads go on to the session. `unmask` is the scratch buffer the frames are
/// gathered and unmasked in. Returns the address to count the connection under when this
/// input completed an upgrade.
pub fn input(
    ws: &mut WsConn,
    session: &mut Session,
    data: &[u8],
    unmask: &mut Vec<u8>,
    peer: &Peer<'_>,
    env: &mut impl Env,
) -> Option<IpAddr> {
    let now = env.now();
    match ws.phase() {
        Phase::Http => {
            let site = Site {
                assets: client::FILES,
                allowed_origins: &peer.shared.web.allowed_origins,
                tls: peer.tls,
            };
            let trusted = peer.shared.web.trusted_proxies.contains(&peer.addr);
            match ws.request(data, &site, peer.addr, trusted) {
                Step::NeedMore | Step::Served { close: false } => None,
                // The response is queued; the session ends so the connection closes once it
                // is sent.
                Step::Served { close: true } | Step::Refused { .. } => {
                    session.on_eof(now);
                    None
                }
                Step::Upgraded { client } => {
                    // Frames may have come right behind the request.
                    unmask.clear();
                    unmask.extend_from_slice(ws.rx());
                    ws.keep_rx(&[]);
                    frames(ws, session, unmask, env);
                    Some(client)
                }
            }
        }
        Phase::Open => {
            unmask.clear();
            unmask.extend_from_slice(ws.rx());
            unmask.extend_from_slice(data);
            frames(ws, session, unmask, env);
            None
        }
        // Served or closing: the client's bytes are read (to see its FIN) and dropped.
        Phase::Served | Phase::Closing => None,
    }
}

/// Unmasks the whole frames in `buf` and hands their payloads to the session; keeps a
/// partial frame. A client that breaks RFC 6455 ends its session; the Close that follows
/// carries the reason's code.
fn frames(ws: &mut WsConn, session: &mut Session, buf: &mut [u8], env: &mut impl Env) {
    let now = env.now();
    // A message holds whole protocol frames, so its frames are bounded by the frame limit
    // and the 4 length bytes in front.
    let max_payload = env.limits().max_frame as usize + 4;
    let mut inbuf = ws.take_inbuf();
    let received = ws.receive(buf, max_payload, |bytes| {
        super::feed(session, &mut inbuf, bytes, env);
    });
    ws.put_inbuf(inbuf);
    match received {
        Ok(received) => {
            ws.keep_rx(buf.get(received.consumed..).unwrap_or_default());
            if received.peer_closed {
                // The client's Close is its last word, as a FIN would be.
                session.on_eof(now);
            }
        }
        Err(reason) => {
            log::debug!("WebSocket: {} ({})", reason.reason, reason.code);
            ws.keep_rx(&[]);
            session.on_eof(now);
        }
    }
}

/// The code our Close carries when the session ends: going away on shutdown, a policy
/// violation after any other fatal ERROR, normal otherwise (the client's own code, or the
/// code of its protocol error, takes precedence inside `WsConn::finish`).
pub fn close_code(session: &Session) -> u16 {
    match session.ended_by() {
        None => code::NORMAL,
        Some(ErrorCode::ShuttingDown) => code::GOING_AWAY,
        Some(_) => code::POLICY,
    }
}

/// Gathers up to a chunk of the session's frames into `plain` behind room for a header and
/// frames them in place. Returns where the frame starts in `plain`, or `None` when there was
/// nothing to frame or the bytes were dropped (before the upgrade, after our Close).
pub fn gather_framed(
    ws: &mut WsConn,
    session: &mut Session,
    plain: &mut Vec<u8>,
    env: &mut impl Env,
) -> io::Result<Option<usize>> {
    plain.clear();
    plain.resize(MAX_SERVER_HEADER, 0);
    let mut gather = Gather {
        into: plain,
        cap: MAX_SERVER_HEADER + SEAL_CHUNK,
    };
    session
        .out
        .write_counted(&mut gather, |kind, count| env.frame_out(kind, count))?;
    if ws.phase() != Phase::Open && ws.phase() != Phase::Closing {
        return Ok(None);
    }
    let payload = plain.get(MAX_SERVER_HEADER..).unwrap_or_default();
    let Some(header) = ws.header(payload) else {
        return Ok(None);
    };
    let header = header.as_bytes();
    let start = MAX_SERVER_HEADER.saturating_sub(header.len());
    match plain.get_mut(start..MAX_SERVER_HEADER) {
        Some(room) if room.len() == header.len() => room.copy_from_slice(header),
        _ => return Err(io::Error::other("a WebSocket header longer than its room")),
    }
    Ok(Some(start))
}

impl Conn {
    /// Whether a web connection owes the socket bytes (a response, a Pong, a Close, the rest
    /// of a frame): it reads nothing more until they are sent.
    pub(super) fn web_owes(&mut self) -> bool {
        self.transport.ws().is_some_and(|ws| !ws.tx().is_empty())
    }

    /// One read on a plain web connection.
    pub(super) fn read_web(
        &mut self,
        scratch: &mut super::Scratch,
        shared: &Shared,
        env: &mut impl Env,
    ) -> super::Read1 {
        use super::Read1;
        let n = loop {
            match io::Read::read(&mut self.stream, &mut scratch.read) {
                Ok(0) => return Read1::Eof,
                Ok(n) => break n,
                Err(e) if would_block(&e) => return Read1::Drained,
                Err(e) if interrupted(&e) => {}
                Err(_) => return Read1::Failed,
            }
        };
        env.transferred(n as u64, 0);
        let Transport::Web(ws) = &mut self.transport else {
            return Read1::Failed;
        };
        let peer = Peer {
            shared,
            addr: self.peer,
            tls: false,
        };
        let data = scratch.read.get(..n).unwrap_or_default();
        if let Some(client) = input(ws, &mut self.session, data, &mut scratch.plain, &peer, env) {
            self.upgraded(client, shared, env);
        }
        Read1::Data
    }

    /// The upgrade is done: count the connection under the client's address when a trusted
    /// proxy named another one, if that address is within its limit; else the client is told
    /// TOO_MANY.
    pub(super) fn upgraded(&mut self, client: IpAddr, shared: &Shared, env: &mut impl Env) {
        if client == self.peer {
            return;
        }
        match shared.recount(self.peer, client, env.limits()) {
            Ok(()) => self.peer = client,
            Err(why) => {
                log::debug!("refused {client} (through {}): {why}", self.peer);
                self.session.refuse(ErrorCode::TooMany, why, env.now());
            }
        }
    }

    /// Writes what a plain web connection owes, then the session's frames in WebSocket
    /// frames, until the socket refuses or the budget is spent. Returns whether the budget
    /// ran out with bytes left.
    pub(super) fn flush_web(
        &mut self,
        scratch: &mut super::Scratch,
        env: &mut impl Env,
    ) -> io::Result<bool> {
        let mut budget = super::WRITE_BUDGET;
        let Transport::Web(ws) = &mut self.transport else {
            return Ok(false);
        };
        loop {
            if !ws.tx().is_empty() {
                if self.write_blocked || self.shut_write {
                    return Ok(false);
                }
                if budget == 0 {
                    return Ok(true);
                }
                let n = super::write_some(
                    &mut self.stream,
                    &mut self.session,
                    &mut self.write_blocked,
                    ws.tx(),
                    env,
                )?;
                if n == 0 {
                    return Ok(false);
                }
                budget = budget.saturating_sub(n);
                ws.drain_tx(n);
                continue;
            }
            self.session.fill(env);
            if self.session.out.is_empty() || self.write_blocked || self.shut_write {
                return Ok(false);
            }
            if budget == 0 {
                return Ok(true);
            }
            let Some(start) = gather_framed(ws, &mut self.session, &mut scratch.plain, env)? else {
                continue;
            };
            let framed = scratch.plain.get(start..).unwrap_or_default();
            // Written straight from the scratch buffer; only what the socket refuses is kept.
            let written = super::write_some(
                &mut self.stream,
                &mut self.session,
                &mut self.write_blocked,
                framed,
                env,
            )?;
            budget = budget.saturating_sub(written);
            ws.keep_tx(framed.get(written..).unwrap_or_default());
        }
    }
}
