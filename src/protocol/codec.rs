//! The codec: an incremental deframer, field parsers for both directions, and encoders.
//!
//! The deframer looks at a byte buffer and answers "here is a frame", "need more bytes", or
//! a protocol error carrying its contract code. It judges a frame by its header as early as the
//! bytes allow: a zero or oversized length after 4 bytes, an unknown kind after 5, so that a
//! hostile peer can never make us buffer a body we are going to refuse. Which kinds it knows
//! depends on the protocol version of the connection: a version 1 connection (and every
//! connection before its HELLO) refuses version 2's kinds from their kind byte, as it always
//! did.

use super::HEADER_LEN;
use super::frame::{ClientFrame, ErrorCode, ServerFrame, UserList, Version, kind};

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

/// Splits a byte stream into frames of one direction and one protocol version.
#[derive(Debug, Clone, Copy)]
pub struct Deframer {
    max_frame: u32,
    version: Version,
    /// Reads what a server receives (client kinds); else what a client receives.
    to_server: bool,
}

impl Deframer {
    /// A deframer for what a server receives on a version 1 connection, and on any
    /// connection before its HELLO: version 1's client kinds only.
    pub fn for_server(max_frame: u32) -> Deframer {
        Deframer::for_server_in(Version::V1, max_frame)
    }

    /// A deframer for what a server receives on a connection speaking `version`.
    pub fn for_server_in(version: Version, max_frame: u32) -> Deframer {
        Deframer {
            max_frame,
            version,
            to_server: true,
        }
    }

    /// A deframer for what a version 1 client receives: version 1's server kinds only.
    pub fn for_client(max_frame: u32) -> Deframer {
        Deframer::for_client_in(Version::V1, max_frame)
    }

    /// A deframer for what a client speaking `version` receives.
    pub fn for_client_in(version: Version, max_frame: u32) -> Deframer {
        Deframer {
            max_frame,
            version,
            to_server: false,
        }
    }

    pub fn max_frame(&self) -> u32 {
        self.max_frame
    }

    pub fn version(&self) -> Version {
        self.version
    }

    fn known_kind(&self, kind_byte: u8) -> bool {
        if self.to_server {
            kind::is_client_in(self.version, kind_byte)
        } else {
            kind::is_server_in(self.version, kind_byte)
        }
    }

    /// Looks at the front of `buf`.
    ///
    /// # Errors
    /// `MALFORMED` for a zero length, `TOO_LARGE` for a length over `max_frame`, and
    /// `UNKNOWN_KIND` for a kind byte of the wrong direction or of a later version, each as
    /// soon as the bytes that show it are present.
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
        if !self.known_kind(kind_byte) {
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

    /// How many bytes are left to read.
    pub fn remaining(&self) -> usize {
        self.rest.len()
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

/// Parses the body of a client frame of any version; whether the connection may send that
/// kind is the deframer's business. `raw.kind` must be a client kind (the deframer made
/// sure); any other kind is reported as `UNKNOWN_KIND`.
///
/// A HELLO is read by its version byte: version 1 is `user, token`, version 2 is `user,
/// token, client` (so a version 1 HELLO with a client id behind its token has bytes left over,
/// MALFORMED), and any other version is [`ClientFrame::HelloUnsupported`] whatever follows.
pub fn parse_client<'a>(raw: &RawFrame<'a>) -> Result<ClientFrame<'a>, FrameError> {
    let mut r = Reader::new(raw.body);
    let frame = match raw.kind {
        kind::HELLO => {
            let version = r.u8()?;
            match Version::from_wire(version) {
                Some(Version::V1) => ClientFrame::Hello {
                    version,
                    user: r.str()?,
                    token: r.str()?,
                    client: 0,
                },
                Some(Version::V2) => ClientFrame::Hello {
                    version,
                    user: r.str()?,
                    token: r.str()?,
                    client: r.u64()?,
                },
                None => ClientFrame::HelloUnsupported {
                    version,
                    rest: r.take(r.remaining()).unwrap_or_default(),
                },
            }
        }
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
        kind::WHO => ClientFrame::Who { room: r.str()? },
        kind::WATCH => ClientFrame::Watch {
            room: r.str()?,
            on: r.u8()?,
        },
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
        kind::MEMBERS => {
            let room = r.str()?;
            let total = r.u32()?;
            let count = r.u16()?;
            let users = UserList::from_wire(count, r.take(r.remaining()).unwrap_or_default())?;
            ServerFrame::Members { room, total, users }
        }
        kind::PRESENCE => ServerFrame::Presence {
            room: r.str()?,
            user: r.str()?,
            here: match r.u8()? {
                0 => false,
                1 => true,
                _ => return Err(FrameError::malformed("PRESENCE here is neither 0 nor 1")),
            },
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

    fn bytes(&mut self, b: &[u8]) -> &mut Self {
        self.out.extend_from_slice(b);
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
            client,
        } => {
            w.u8(version).str(user).str(token);
            match Version::from_wire(version) {
                Some(Version::V2) => w.u64(client),
                _ => &mut w,
            }
        }
        ClientFrame::HelloUnsupported { version, rest } => w.u8(version).bytes(rest),
        ClientFrame::Join { room, after, limit } => w.str(room).u64(after).u32(limit),
        ClientFrame::Leave { room } => w.str(room),
        ClientFrame::Send { room, id, text } => w.str(room).u64(id).text(text),
        ClientFrame::Ping { nonce } => w.u64(nonce),
        ClientFrame::Bye => &mut w,
        ClientFrame::Who { room } => w.str(room),
        ClientFrame::Watch { room, on } => w.str(room).u8(on),
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
        ServerFrame::Members { room, total, users } => w
            .str(room)
            .u32(total)
            .u16(u16::try_from(users.len()).unwrap_or(u16::MAX))
            .bytes(users.wire()),
        ServerFrame::Presence { room, user, here } => w.str(room).str(user).u8(u8::from(here)),
    }
    .finish();
}

/// Appends a MEMBERS frame of `room` listing the longest prefix of `users` that fits in
/// `max_frame` (and in a u16 count), and returns how many it listed. `users` should come
/// sorted, as the contract lists them, so that what is left out is the end of the list;
/// `total` is how many there are in all, listed or not.
///
/// A MEMBERS with no user takes `9 + room` bytes (73 for the longest room name), which every
/// `max_frame` the server accepts holds; with a `max_frame` smaller than that the frame is
/// written with no user, longer than `max_frame`.
pub fn encode_members<'u>(
    room: &str,
    total: u32,
    users: impl IntoIterator<Item = &'u str>,
    max_frame: u32,
    out: &mut Vec<u8>,
) -> u16 {
    let max_frame = usize::try_from(max_frame).unwrap_or(usize::MAX);
    // kind, room, total, count
    let mut length = 1 + 2 + room.len() + 4 + 2;
    let fitting = users.into_iter().take_while(|user| {
        length = length.saturating_add(2 + user.len());
        length <= max_frame
    });
    let mut list = Vec::new();
    let count = UserList::write(fitting, &mut list);
    let users = UserList { count, wire: &list };
    encode_server(&ServerFrame::Members { room, total, users }, out);
    count
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
