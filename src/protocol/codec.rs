//! The codec: an incremental deframer, field parsers for both directions, and encoders.
//!
//! The deframer looks at a byte buffer and answers "here is a frame", "need more bytes", or
//! a protocol error carrying its contract code. It judges a frame by its header as early as the
//! bytes allow: a zero or oversized length after 4 bytes, an unknown kind after 5, so that a
//! hostile peer can never make us buffer a body we are going to refuse.

use super::HEADER_LEN;
use super::frame::{ClientFrame, ErrorCode, ServerFrame, kind};

/// Why a frame was refused: the contract code plus a short human reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameError {
    pub code: ErrorCode,
    pub reason: &'static str,
}

impl FrameError {
    fn malformed(reason: &'static str) -> FrameError {
        FrameError {
            code: ErrorCode::Malformed,
            reason,
        }
    }
}

/// One complete frame found at the front of a buffer, not yet parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RawFrame<'a> {
    pub kind: u8,
    pub body: &'a [u8],
    /// Bytes of the buffer this frame occupies, header included.
    pub wire_len: usize,
}

/// What the deframer found at the front of a buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decoded<'a> {
    Frame(RawFrame<'a>),
    NeedMore,
}

/// Splits a byte stream into frames of one direction.
#[derive(Debug, Clone, Copy)]
pub struct Deframer {
    max_frame: u32,
    known_kind: fn(u8) -> bool,
}

impl Deframer {
    /// A deframer for what a server receives: client kinds only.
    pub fn for_server(max_frame: u32) -> Deframer {
        Deframer {
            max_frame,
            known_kind: kind::is_client,
        }
    }

    /// A deframer for what a client receives: server kinds only.
    pub fn for_client(max_frame: u32) -> Deframer {
        Deframer {
            max_frame,
            known_kind: kind::is_server,
        }
    }

    pub fn max_frame(&self) -> u32 {
        self.max_frame
    }

    /// Looks at the front of `buf`.
    ///
    /// # Errors
    /// `MALFORMED` for a zero length, `TOO_LARGE` for a length over `max_frame`, and
    /// `UNKNOWN_KIND` for a kind byte of the wrong direction, each as soon as the bytes that
    /// show it are present.
    pub fn next<'a>(&self, buf: &'a [u8]) -> Result<Decoded<'a>, FrameError> {
        let Some(header) = buf.first_chunk::<HEADER_LEN>() else {
            return Ok(Decoded::NeedMore);
        };
        let length = u32::from_be_bytes(*header);
        if length == 0 {
            return Err(FrameError::malformed("frame length is zero"));
        }
        if length > self.max_frame {
            return Err(FrameError {
                code: ErrorCode::TooLarge,
                reason: "declared frame length exceeds max_frame",
            });
        }
        let Some(&kind_byte) = buf.get(HEADER_LEN) else {
            return Ok(Decoded::NeedMore);
        };
        if !(self.known_kind)(kind_byte) {
            return Err(FrameError {
                code: ErrorCode::UnknownKind,
                reason: "unknown frame kind",
            });
        }
        // length <= max_frame <= u32::MAX, and usize is at least 32 bits on every target we build.
        let wire_len = HEADER_LEN + length as usize;
        match buf.get(HEADER_LEN + 1..wire_len) {
            Some(body) => Ok(Decoded::Frame(RawFrame {
                kind: kind_byte,
                body,
                wire_len,
            })),
            None => Ok(Decoded::NeedMore),
        }
    }
}

/// A cursor over a frame body whose every read is checked.
#[derive(Debug, Clone)]
pub struct Reader<'a> {
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    pub fn new(body: &'a [u8]) -> Reader<'a> {
        Reader { rest: body }
    }

    /// The next `n` bytes, or `None` if fewer remain.
    pub fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let (head, tail) = self.rest.split_at_checked(n)?;
        self.rest = tail;
        Some(head)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], FrameError> {
        let (head, tail) = self
            .rest
            .split_first_chunk::<N>()
            .ok_or(FrameError::malformed("body too short"))?;
        self.rest = tail;
        Ok(*head)
    }

    pub fn u8(&mut self) -> Result<u8, FrameError> {
        Ok(u8::from_be_bytes(self.array()?))
    }

    pub fn u16(&mut self) -> Result<u16, FrameError> {
        Ok(u16::from_be_bytes(self.array()?))
    }

    pub fn u32(&mut self) -> Result<u32, FrameError> {
        Ok(u32::from_be_bytes(self.array()?))
    }

    pub fn u64(&mut self) -> Result<u64, FrameError> {
        Ok(u64::from_be_bytes(self.array()?))
    }

    /// A `str` field: u16 length, then that many bytes of UTF-8.
    pub fn str(&mut self) -> Result<&'a str, FrameError> {
        let len = usize::from(self.u16()?);
        let bytes = self
            .take(len)
            .ok_or(FrameError::malformed("string runs past the body"))?;
        std::str::from_utf8(bytes).map_err(|_| FrameError::malformed("string is not UTF-8"))
    }

    /// A `text` field: all remaining bytes, as UTF-8.
    pub fn text(&mut self) -> Result<&'a str, FrameError> {
        let bytes = std::mem::take(&mut self.rest);
        std::str::from_utf8(bytes).map_err(|_| FrameError::malformed("text is not UTF-8"))
    }

    /// Succeeds only if every byte was read.
    pub fn finish(&self) -> Result<(), FrameError> {
        if self.rest.is_empty() {
            Ok(())
        } else {
            Err(FrameError::malformed(
                "bytes left over after the last field",
            ))
        }
    }
}

/// Parses the body of a client frame. `raw.kind` must be a client kind (the deframer made
/// sure); any other kind is reported as `UNKNOWN_KIND`.
pub fn parse_client<'a>(raw: &RawFrame<'a>) -> Result<ClientFrame<'a>, FrameError> {
    let mut r = Reader::new(raw.body);
    let frame = match raw.kind {
        kind::HELLO => ClientFrame::Hello {
            version: r.u8()?,
            user: r.str()?,
            token: r.str()?,
        },
        kind::JOIN => ClientFrame::Join {
            room: r.str()?,
            after: r.u64()?,
            limit: r.u32()?,
        },
        kind::LEAVE => ClientFrame::Leave { room: r.str()? },
        kind::SEND => ClientFrame::Send {
            room: r.str()?,
            id: r.u64()?,
            text: r.text()?,
        },
        kind::PING => ClientFrame::Ping { nonce: r.u64()? },
        kind::BYE => ClientFrame::Bye,
        _ => {
            return Err(FrameError {
                code: ErrorCode::UnknownKind,
                reason: "not a client kind",
            });
        }
    };
    r.finish()?;
    Ok(frame)
}

/// Parses the body of a server frame.
pub fn parse_server<'a>(raw: &RawFrame<'a>) -> Result<ServerFrame<'a>, FrameError> {
    let mut r = Reader::new(raw.body);
    let frame = match raw.kind {
        kind::WELCOME => ServerFrame::Welcome {
            version: r.u8()?,
            epoch: r.u64()?,
            session: r.u64()?,
            max_frame: r.u32()?,
            idle_timeout_ms: r.u32()?,
            server: r.str()?,
        },
        kind::JOINED => ServerFrame::Joined {
            room: r.str()?,
            first: r.u64()?,
            head: r.u64()?,
        },
        kind::LEFT => ServerFrame::Left { room: r.str()? },
        kind::MSG => ServerFrame::Msg {
            room: r.str()?,
            seq: r.u64()?,
            ts_ms: r.u64()?,
            user: r.str()?,
            text: r.text()?,
        },
        kind::ACK => ServerFrame::Ack {
            id: r.u64()?,
            seq: r.u64()?,
        },
        kind::PONG => ServerFrame::Pong { nonce: r.u64()? },
        kind::ERROR => ServerFrame::Error {
            code: r.u16()?,
            reference: r.u64()?,
            message: r.str()?,
        },
        _ => {
            return Err(FrameError {
                code: ErrorCode::UnknownKind,
                reason: "not a server kind",
            });
        }
    };
    r.finish()?;
    Ok(frame)
}

/// Builds one frame in place: reserves the length prefix, lets the caller write the kind and
/// body, then fills the prefix in.
struct FrameWriter<'a> {
    out: &'a mut Vec<u8>,
    start: usize,
}

impl<'a> FrameWriter<'a> {
    fn begin(out: &'a mut Vec<u8>, kind: u8) -> FrameWriter<'a> {
        let start = out.len();
        out.extend_from_slice(&[0, 0, 0, 0, kind]);
        FrameWriter { out, start }
    }

    fn u8(&mut self, v: u8) -> &mut Self {
        self.out.push(v);
        self
    }
    fn u16(&mut self, v: u16) -> &mut Self {
        self.out.extend_from_slice(&v.to_be_bytes());
        self
    }
    fn u32(&mut self, v: u32) -> &mut Self {
        self.out.extend_from_slice(&v.to_be_bytes());
        self
    }
    fn u64(&mut self, v: u64) -> &mut Self {
        self.out.extend_from_slice(&v.to_be_bytes());
        self
    }

    /// A `str` field. Strings longer than a u16 can say are cut at the last character boundary
    /// that fits, so the encoder can never produce a frame that lies about its own lengths.
    fn str(&mut self, s: &str) -> &mut Self {
        let s = clamp_str(s, usize::from(u16::MAX));
        // clamp_str guarantees the length fits in a u16.
        self.u16(u16::try_from(s.len()).unwrap_or(u16::MAX));
        self.out.extend_from_slice(s.as_bytes());
        self
    }

    fn text(&mut self, s: &str) -> &mut Self {
        self.out.extend_from_slice(s.as_bytes());
        self
    }

    fn finish(&mut self) {
        let length = self.out.len() - self.start - HEADER_LEN;
        let length = u32::try_from(length).unwrap_or(u32::MAX);
        if let Some(prefix) = self.out.get_mut(self.start..self.start + HEADER_LEN) {
            prefix.copy_from_slice(&length.to_be_bytes());
        }
    }
}

/// The longest prefix of `s` of at most `max` bytes that ends on a character boundary.
pub fn clamp_str(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s.get(..end).unwrap_or("")
}

/// Appends the encoding of a client frame to `out`.
pub fn encode_client(frame: &ClientFrame<'_>, out: &mut Vec<u8>) {
    let mut w = FrameWriter::begin(out, frame.kind());
    match *frame {
        ClientFrame::Hello {
            version,
            user,
            token,
        } => w.u8(version).str(user).str(token),
        ClientFrame::Join { room, after, limit } => w.str(room).u64(after).u32(limit),
        ClientFrame::Leave { room } => w.str(room),
        ClientFrame::Send { room, id, text } => w.str(room).u64(id).text(text),
        ClientFrame::Ping { nonce } => w.u64(nonce),
        ClientFrame::Bye => &mut w,
    }
    .finish();
}

/// Appends the encoding of a server frame to `out`.
pub fn encode_server(frame: &ServerFrame<'_>, out: &mut Vec<u8>) {
    let mut w = FrameWriter::begin(out, frame.kind());
    match *frame {
        ServerFrame::Welcome {
            version,
            epoch,
            session,
            max_frame,
            idle_timeout_ms,
            server,
        } => w
            .u8(version)
            .u64(epoch)
            .u64(session)
            .u32(max_frame)
            .u32(idle_timeout_ms)
            .str(server),
        ServerFrame::Joined { room, first, head } => w.str(room).u64(first).u64(head),
        ServerFrame::Left { room } => w.str(room),
        ServerFrame::Msg {
            room,
            seq,
            ts_ms,
            user,
            text,
        } => w.str(room).u64(seq).u64(ts_ms).str(user).text(text),
        ServerFrame::Ack { id, seq } => w.u64(id).u64(seq),
        ServerFrame::Pong { nonce } => w.u64(nonce),
        ServerFrame::Error {
            code,
            reference,
            message,
        } => w.u16(code).u64(reference).str(message),
    }
    .finish();
}

/// The `length` field of the MSG frame that would carry this message: the kind byte, the
/// room and user strings with their prefixes, seq, ts_ms and the text.
pub fn msg_length(room: &str, user: &str, text: &str) -> usize {
    1 + 2 + room.len() + 8 + 8 + 2 + user.len() + text.len()
}

/// Writes seq and ts_ms into an encoded MSG frame whose room name is `room_len` bytes long.
/// Returns false, touching nothing, if the frame is too short to be such a MSG.
pub fn stamp_msg(frame: &mut [u8], room_len: usize, seq: u64, ts_ms: u64) -> bool {
    let Some(at) = room_len.checked_add(HEADER_LEN + 1 + 2) else {
        return false;
    };
    let Some(slot) = at.checked_add(16).and_then(|end| frame.get_mut(at..end)) else {
        return false;
    };
    let (seq_slot, ts_slot) = slot.split_at_mut(8);
    seq_slot.copy_from_slice(&seq.to_be_bytes());
    ts_slot.copy_from_slice(&ts_ms.to_be_bytes());
    true
}
