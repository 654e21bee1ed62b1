//! WebSocket messages that carry protocol v1 frames, in both directions.
//!
//! A binary message holds whole protocol frames: one or more from a browser, any number
//! packed together from the server, and a protocol frame never spans two messages. The
//! [`Assembler`] follows a client's messages across frames (control frames may come in the
//! middle of a fragmented one) and passes each data payload straight on, so that the
//! protocol's own deframer does the buffering it already does for TCP; it only checks, with a
//! [`Boundary`], that every message ends exactly where a protocol frame ends (else 1007: the
//! framing was valid, the content does not fit the message's type). An empty message holds no
//! frame, which breaks nothing, and is accepted. The [`Wrapper`] does the reverse for what
//! the server sends: it may be handed any slice of the outgoing frame stream (a write chunk
//! can end inside a large frame), and marks a data frame final only when it ends on a
//! protocol frame boundary, continuing the message in the next one otherwise, so nothing is
//! ever held back and no frame is split across messages.
//!
//! Both are a few bytes of plain state: an idle connection holds no buffer here, and nothing
//! here allocates or reads a length it has not counted.

use super::close::{CloseReason, code, parse_close};
use super::frame::{Frame, Header, Opcode};
use crate::protocol::HEADER_LEN;

/// Where a stream of protocol frames stands: between frames, inside a 4-byte length prefix,
/// or inside a frame's kind and body. Eight bytes, aligned to one so that the structs holding
/// it pack tight; it judges no length, only counts (the protocol deframer refuses a bad one).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Boundary {
    /// Bytes of the current frame's kind and body still to come (a u32, native order).
    left: [u8; 4],
    /// The part of a length prefix seen so far.
    prefix: [u8; HEADER_LEN - 1],
    /// How many bytes of `prefix` are filled.
    have: u8,
}

impl Boundary {
    /// Moves over `bytes`, the next part of the stream.
    pub fn advance(&mut self, mut bytes: &[u8]) {
        let mut left = u32::from_ne_bytes(self.left);
        while !bytes.is_empty() {
            if left > 0 {
                // usize is at least 32 bits on every target we build, so skip fits a u32.
                let skip = usize::try_from(left).unwrap_or(usize::MAX).min(bytes.len());
                left -= u32::try_from(skip).unwrap_or(left);
                bytes = bytes.get(skip..).unwrap_or_default();
            } else if self.have == 0
                && let Some((prefix, rest)) = bytes.split_first_chunk::<HEADER_LEN>()
            {
                left = u32::from_be_bytes(*prefix);
                bytes = rest;
            } else if let Some((&byte, rest)) = bytes.split_first() {
                if let Some(len) = self.push_prefix_byte(byte) {
                    left = len;
                }
                bytes = rest;
            }
        }
        self.left = left.to_ne_bytes();
    }

    /// One byte of a length prefix that arrives in pieces; the length once it is whole.
    fn push_prefix_byte(&mut self, byte: u8) -> Option<u32> {
        match self.prefix.get_mut(usize::from(self.have)) {
            Some(slot) => {
                *slot = byte;
                self.have += 1;
                None
            }
            None => {
                let [a, b, c] = self.prefix;
                self.have = 0;
                Some(u32::from_be_bytes([a, b, c, byte]))
            }
        }
    }

    /// The stream so far ends exactly where a protocol frame ends (or is empty).
    pub fn at_boundary(&self) -> bool {
        self.left == [0; 4] && self.have == 0
    }
}

/// What a client's frame asks of the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event<'a> {
    /// Protocol bytes for the session, in order (a whole message or the next part of one).
    Data(&'a [u8]),
    /// Answer with a Pong carrying this payload.
    Ping(&'a [u8]),
    /// An unsolicited or late Pong: nothing to do.
    Pong,
    /// The client closes, with this code if it gave one: answer Close, then close TCP.
    Close(Option<u16>),
}

/// A client's message state across frames: whether a fragmented binary message is under way,
/// and where its protocol frames stand. Nine bytes, no buffer.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Assembler {
    in_message: bool,
    boundary: Boundary,
}

impl Assembler {
    /// Takes the next frame of the client's, whose unmasked payload is `payload`.
    ///
    /// # Errors
    /// 1002 for a continuation with no message started or a new data frame inside a
    /// fragmented message; 1003 for text; 1007 for a message that ends inside a protocol
    /// frame; the Close payload's own errors (`close::parse_close`).
    pub fn accept<'a>(
        &mut self,
        frame: &Frame,
        payload: &'a [u8],
    ) -> Result<Event<'a>, CloseReason> {
        match frame.opcode {
            Opcode::Binary if self.in_message => Err(CloseReason::protocol(
                "new data frame inside a fragmented message",
            )),
            Opcode::Continuation if !self.in_message => Err(CloseReason::protocol(
                "continuation frame with no message started",
            )),
            Opcode::Binary | Opcode::Continuation => {
                self.boundary.advance(payload);
                self.in_message = !frame.fin;
                if frame.fin && !self.boundary.at_boundary() {
                    return Err(CloseReason {
                        code: code::INVALID_PAYLOAD,
                        reason: "message ends inside a protocol frame",
                    });
                }
                Ok(Event::Data(payload))
            }
            Opcode::Text => Err(CloseReason {
                code: code::UNSUPPORTED_DATA,
                reason: "text messages are not accepted: send binary protocol frames",
            }),
            Opcode::Ping => Ok(Event::Ping(payload)),
            Opcode::Pong => Ok(Event::Pong),
            Opcode::Close => Ok(Event::Close(parse_close(payload)?)),
        }
    }

    /// A fragmented message is under way.
    pub fn in_message(&self) -> bool {
        self.in_message
    }
}

/// The server's message state: whether the last data frame left a message open because it
/// ended inside a protocol frame. Nine bytes, no buffer.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Wrapper {
    in_message: bool,
    boundary: Boundary,
}

impl Wrapper {
    /// The header of the data frame that carries `bytes`, the next part of the outgoing
    /// protocol stream: Binary to start a message, Continuation inside one, final exactly when
    /// `bytes` ends on a protocol frame boundary. The caller sends the header, then `bytes`,
    /// and nothing of another data frame in between.
    pub fn header(&mut self, bytes: &[u8]) -> Header {
        let opcode = if self.in_message {
            Opcode::Continuation
        } else {
            Opcode::Binary
        };
        self.boundary.advance(bytes);
        let fin = self.boundary.at_boundary();
        self.in_message = !fin;
        Header::new(fin, opcode, bytes.len())
    }

    /// Appends `bytes` to `out` as one data frame (see [`header`](Wrapper::header)); nothing
    /// for no bytes.
    pub fn wrap(&mut self, out: &mut Vec<u8>, bytes: &[u8]) {
        if bytes.is_empty() {
            return;
        }
        out.extend_from_slice(self.header(bytes).as_bytes());
        out.extend_from_slice(bytes);
    }

    /// A message is open: the last data frame ended inside a protocol frame.
    pub fn in_message(&self) -> bool {
        self.in_message
    }
}
