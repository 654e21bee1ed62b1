//! One web connection's state between its socket and its session: first HTTP requests (files,
//! or the upgrade), then WebSocket frames carrying protocol v1 in both directions.
//!
//! Like the TLS transport, it turns bytes into bytes and never touches the socket: the
//! reactor reads into its scratch buffer, puts any partial frame kept from last time in
//! front, and [`WsConn::receive`] unmasks the whole frames in place and hands their payload to
//! the session; on the way out, [`WsConn::header`] gives the header of the data frame that
//! carries the next chunk of the session's outbox. What it keeps is one protocol buffer for
//! the message state of each direction and, only while they hold something, the session's
//! partial protocol frame (`inbuf`), a partial WebSocket frame received (`rx`) and bytes the
//! socket refused (`tx`): 32 bytes when idle, one small allocation. It must never buffer more than one partial frame of
//! input, never send a data frame after its Close, and never read on once it has failed.

use std::net::IpAddr;

use super::close::{CloseReason, code};
use super::frame::{Header, encode_close, encode_pong, parse};
use super::http::{Decision, Site, decide};
use super::message::{Assembler, Event, Wrapper};

/// Requests answered from one batch of pipelined input; a client that sends more is answered
/// this many and closed, so that one read can never queue an unbounded amount of responses.
const MAX_PIPELINED: usize = 8;

/// Where the connection is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Reading HTTP requests.
    Http,
    /// Done with HTTP without an upgrade: the last response is in `tx`, then close.
    Served,
    /// Speaking WebSocket.
    Open,
    /// The client sent Close, or broke the protocol: input is dropped, our Close follows
    /// once the session has said what it owes.
    Closing,
}

/// What [`WsConn::request`] made of the bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// No whole request yet.
    NeedMore,
    /// Responses are queued in `tx`; close after sending them if `close`, else more requests
    /// may follow.
    Served { close: bool },
    /// Refused with `status`; the response is queued in `tx`, close after sending it.
    Refused { status: u16 },
    /// The 101 is queued in `tx`; count the connection under `client`. Any bytes that came
    /// after the request are WebSocket input, kept in `rx` for [`WsConn::receive`].
    Upgraded { client: IpAddr },
}

/// What one pass of [`WsConn::receive`] found.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Received {
    /// Bytes at the front of the input that are done with; the rest is a partial frame.
    pub consumed: usize,
    /// The client sent Close: it will send nothing more (treat it as its FIN).
    pub peer_closed: bool,
}

/// Buffers a connection holds only while they are not empty.
#[derive(Debug, Default)]
struct Spill {
    /// Protocol bytes the session has not taken yet (a partial frame, usually): the
    /// connection's input buffer, as `Transport::Plain` holds it for TCP.
    inbuf: Vec<u8>,
    /// The start of a frame (or, before the upgrade, of a request head) not yet whole.
    rx: Vec<u8>,
    /// Bytes for the socket it has not taken yet: responses, control frames, the rest of a
    /// data frame; sent before anything newer.
    tx: Vec<u8>,
}

/// A web connection's state.
#[derive(Debug)]
pub struct WsConn {
    spill: Option<Box<Spill>>,
    assembler: Assembler,
    wrapper: Wrapper,
    phase: Phase,
    /// The code our Close will carry, once known (0: not yet).
    close_code: u16,
    close_sent: bool,
}

// An idle WebSocket connection must stay one small allocation (32 bytes take a 48-byte
// malloc chunk): the budget is plain TCP + 64 bytes, and the allocator's page overhead and
// the upgrade's freed buffers come on top. Every buffer lives in the spill, freed when empty.
const _: () = assert!(std::mem::size_of::<WsConn>() <= 32);

impl Default for WsConn {
    fn default() -> WsConn {
        WsConn::new()
    }
}

impl WsConn {
    /// A connection just accepted on a web listener: HTTP first.
    pub fn new() -> WsConn {
        WsConn {
            spill: None,
            assembler: Assembler::default(),
            wrapper: Wrapper::default(),
            phase: Phase::Http,
            close_code: 0,
            close_sent: false,
        }
    }

    /// A connection past its handshake (for tests and fuzzers, which start there).
    pub fn upgraded() -> WsConn {
        WsConn {
            phase: Phase::Open,
            ..WsConn::new()
        }
    }

    pub fn phase(&self) -> Phase {
        self.phase
    }

    /// Takes HTTP input: `data` after any partial head kept from before. Whole requests are
    /// answered into `tx` (see [`decide`] for the arguments); a partial head is kept.
    pub fn request(
        &mut self,
        data: &[u8],
        site: &Site<'_>,
        peer: IpAddr,
        trusted_proxy: bool,
    ) -> Step {
        if self.phase != Phase::Http {
            return Step::NeedMore;
        }
        let mut input = self
            .spill
            .as_mut()
            .map(|s| std::mem::take(&mut s.rx))
            .unwrap_or_default();
        input.extend_from_slice(data);
        let mut at = 0;
        let mut served = 0;
        let step = loop {
            let rest = input.get(at..).unwrap_or_default();
            if rest.is_empty() && served > 0 {
                break Step::Served { close: false };
            }
            match decide(rest, site, peer, trusted_proxy) {
                Decision::NeedMore if served > 0 => break Step::Served { close: false },
                Decision::NeedMore => break Step::NeedMore,
                Decision::Respond {
                    response,
                    close,
                    consumed,
                } => {
                    self.push_tx(&response);
                    at += consumed;
                    served += 1;
                    let more = input.len() > at;
                    if close || (more && served == MAX_PIPELINED) {
                        self.phase = Phase::Served;
                        break Step::Served { close: true };
                    }
                }
                Decision::Upgrade {
                    response,
                    client,
                    consumed,
                } => {
                    self.push_tx(&response);
                    at += consumed;
                    self.phase = Phase::Open;
                    break Step::Upgraded { client };
                }
                Decision::Reject { status, response } => {
                    self.push_tx(&response);
                    self.phase = Phase::Served;
                    break Step::Refused { status };
                }
            }
        };
        if matches!(self.phase, Phase::Http | Phase::Open) {
            self.keep_rx(input.get(at..).unwrap_or_default());
        }
        step
    }

    /// Takes WebSocket input in place: `incoming` is the partial frame kept from last time
    /// ([`rx`](WsConn::rx)) followed by new bytes. Whole frames are unmasked; data payloads go
    /// to `deliver` in order (each the next bytes of the protocol stream), Pings are answered
    /// into `tx`, a Close ends the input. The caller keeps `incoming[consumed..]` with
    /// [`keep_rx`](WsConn::keep_rx). `max_payload` bounds a data frame (`max_frame + 4`).
    /// Before the upgrade or once closing, input is consumed and dropped.
    ///
    /// # Errors
    /// The client broke RFC 6455 or sent what the server does not take
    /// ([`frame::parse`](super::frame::parse), [`Assembler::accept`]). The connection is then
    /// closing: the reactor ends the session, and [`finish`](WsConn::finish) sends a Close with
    /// the error's code.
    pub fn receive(
        &mut self,
        incoming: &mut [u8],
        max_payload: usize,
        mut deliver: impl FnMut(&[u8]),
    ) -> Result<Received, CloseReason> {
        if self.phase != Phase::Open {
            return Ok(Received {
                consumed: incoming.len(),
                peer_closed: false,
            });
        }
        let mut at = 0;
        loop {
            let rest = incoming.get_mut(at..).unwrap_or_default();
            let frame = match parse(rest, max_payload) {
                Ok(Some(frame)) => frame,
                Ok(None) => {
                    return Ok(Received {
                        consumed: at,
                        peer_closed: false,
                    });
                }
                Err(reason) => return Err(self.fail(reason)),
            };
            at += frame.consumed;
            let payload = rest.get(frame.payload.clone()).unwrap_or_default();
            match self.assembler.accept(&frame, payload) {
                Ok(Event::Data(bytes)) if !bytes.is_empty() => deliver(bytes),
                Ok(Event::Data(_) | Event::Pong) => {}
                Ok(Event::Ping(bytes)) => {
                    let tx = &mut self.spill().tx;
                    encode_pong(tx, bytes);
                }
                Ok(Event::Close(code)) => {
                    self.phase = Phase::Closing;
                    // Echo the client's code (RFC 6455 §5.5.1); no code is answered as normal.
                    self.close_code = code.unwrap_or(code::NORMAL);
                    return Ok(Received {
                        consumed: incoming.len(),
                        peer_closed: true,
                    });
                }
                Err(reason) => return Err(self.fail(reason)),
            }
        }
    }

    fn fail(&mut self, reason: CloseReason) -> CloseReason {
        self.phase = Phase::Closing;
        self.close_code = reason.code;
        reason
    }

    /// The header of the data frame that carries `protocol`, the next chunk of the session's
    /// outgoing frames: send it, then `protocol`, keeping with [`keep_tx`](WsConn::keep_tx)
    /// whatever the socket refuses. Call only with `tx` empty. `None` once our Close is sent,
    /// after which no data may follow.
    pub fn header(&mut self, protocol: &[u8]) -> Option<Header> {
        if self.close_sent || protocol.is_empty() {
            return None;
        }
        Some(self.wrapper.header(protocol))
    }

    /// Appends `protocol` as one data frame to `out` (for a transport that takes whole
    /// buffers, such as TLS underneath); as [`header`](WsConn::header).
    pub fn wrap(&mut self, out: &mut Vec<u8>, protocol: &[u8]) {
        if !self.close_sent {
            self.wrapper.wrap(out, protocol);
        }
    }

    /// Queues our Close, once: the client's code echoed if it closed first, the error's if
    /// the client broke the protocol, else `code` (1000 after a normal end, 1001 on shutdown,
    /// 1008 after a fatal protocol `ERROR`). Only the WebSocket phase sends one; the reactor
    /// closes TCP once `tx` is empty.
    pub fn finish(&mut self, code: u16) {
        if self.close_sent || !matches!(self.phase, Phase::Open | Phase::Closing) {
            return;
        }
        self.close_sent = true;
        self.phase = Phase::Closing;
        let code = if self.close_code == 0 {
            code
        } else {
            self.close_code
        };
        let reason = reason_text(code);
        encode_close(&mut self.spill().tx, code, reason);
    }

    /// Whether to read on: in HTTP or open WebSocket phase, and nothing owed to the socket
    /// (so input can never make `tx` grow past what one read produces).
    pub fn wants_input(&self) -> bool {
        matches!(self.phase, Phase::Http | Phase::Open) && self.tx().is_empty()
    }

    /// Bytes owed to the socket, sent before anything newer.
    pub fn tx(&self) -> &[u8] {
        self.spill.as_ref().map_or(&[], |s| &s.tx)
    }

    /// The socket took the first `n` bytes of `tx`.
    pub fn drain_tx(&mut self, n: usize) {
        if let Some(spill) = &mut self.spill {
            spill.tx.drain(..n.min(spill.tx.len()));
        }
        self.tidy();
    }

    /// Keeps bytes the socket refused, behind what `tx` holds.
    pub fn keep_tx(&mut self, bytes: &[u8]) {
        self.push_tx(bytes);
    }

    fn push_tx(&mut self, bytes: &[u8]) {
        if !bytes.is_empty() {
            self.spill().tx.extend_from_slice(bytes);
        }
    }

    /// Takes the session's input buffer out (empty when there is none), to be given back
    /// with [`put_inbuf`](WsConn::put_inbuf).
    pub fn take_inbuf(&mut self) -> Vec<u8> {
        self.spill
            .as_mut()
            .map(|s| std::mem::take(&mut s.inbuf))
            .unwrap_or_default()
    }

    /// Gives the session's input buffer back; an empty one is dropped, so that an idle
    /// connection keeps no buffer.
    pub fn put_inbuf(&mut self, inbuf: Vec<u8>) {
        if inbuf.is_empty() {
            self.tidy();
        } else {
            self.spill().inbuf = inbuf;
        }
    }

    /// Whether the session has input waiting in the buffer.
    pub fn has_inbuf(&self) -> bool {
        self.spill.as_ref().is_some_and(|s| !s.inbuf.is_empty())
    }

    /// The partial frame (or request head) kept from the last read.
    pub fn rx(&self) -> &[u8] {
        self.spill.as_ref().map_or(&[], |s| &s.rx)
    }

    /// Replaces the kept partial frame with `bytes`.
    pub fn keep_rx(&mut self, bytes: &[u8]) {
        if bytes.is_empty() {
            if let Some(spill) = &mut self.spill {
                spill.rx = Vec::new();
            }
            self.tidy();
        } else {
            let rx = &mut self.spill().rx;
            rx.clear();
            rx.extend_from_slice(bytes);
        }
    }

    /// Heap bytes this connection holds beside itself (for tests of the footprint).
    pub fn queued_bytes(&self) -> usize {
        self.spill.as_ref().map_or(0, |s| {
            std::mem::size_of::<Spill>() + s.inbuf.capacity() + s.rx.capacity() + s.tx.capacity()
        })
    }

    fn spill(&mut self) -> &mut Spill {
        self.spill.get_or_insert_with(Box::default)
    }

    /// Frees the spill buffers once all are empty, so an idle connection holds none.
    fn tidy(&mut self) {
        if self
            .spill
            .as_ref()
            .is_some_and(|s| s.inbuf.is_empty() && s.rx.is_empty() && s.tx.is_empty())
        {
            self.spill = None;
        }
    }
}

/// The reason our Close carries for `code`: a few words for a browser's console.
fn reason_text(code: u16) -> &'static str {
    match code {
        code::GOING_AWAY => "server shutting down",
        code::PROTOCOL_ERROR => "protocol error",
        code::UNSUPPORTED_DATA => "binary messages only",
        code::INVALID_PAYLOAD => "message does not hold whole frames",
        code::POLICY => "session ended",
        code::TOO_BIG => "frame too large",
        _ => "",
    }
}
