//! RFC 6455 frames on the server side: the header of a frame a client sent, judged as early as
//! its bytes allow and unmasked in place, and the unmasked frames the server sends back.
//!
//! [`parse`] works in the caller's buffer (the reactor's scratch space): it reads nothing
//! beyond the bytes given, answers "need more" until a whole frame is there, refuses a frame
//! from its header alone (an unmasked frame, RSV bits, an unknown opcode, a text frame, a
//! fragmented or oversized control frame, a payload over the limit) and otherwise unmasks the
//! payload where it lies. It must never allocate, never trust a length before checking it
//! against the limit, and never panic on any input. What a sequence of frames means
//! (fragmented messages, where protocol frames end) is `message`'s business.

use std::ops::Range;

use super::close::{CloseReason, MAX_CONTROL_PAYLOAD, close_payload, code};

/// The longest header the server writes: 2 bytes and a 64-bit length, no mask.
pub const MAX_SERVER_HEADER: usize = 10;

/// The longest header a client writes: 2 bytes, a 64-bit length and the mask.
pub const MAX_CLIENT_HEADER: usize = 14;

/// What a frame carries (RFC 6455 §5.2); the reserved opcodes are refused by [`parse`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Opcode {
    Continuation,
    Text,
    Binary,
    Close,
    Ping,
    Pong,
}

impl Opcode {
    /// The opcode for the low four bits of a frame's first byte, if it is defined.
    pub fn from_bits(bits: u8) -> Option<Opcode> {
        match bits {
            0x0 => Some(Opcode::Continuation),
            0x1 => Some(Opcode::Text),
            0x2 => Some(Opcode::Binary),
            0x8 => Some(Opcode::Close),
            0x9 => Some(Opcode::Ping),
            0xA => Some(Opcode::Pong),
            _ => None,
        }
    }

    pub fn bits(self) -> u8 {
        match self {
            Opcode::Continuation => 0x0,
            Opcode::Text => 0x1,
            Opcode::Binary => 0x2,
            Opcode::Close => 0x8,
            Opcode::Ping => 0x9,
            Opcode::Pong => 0xA,
        }
    }

    /// Close, Ping and Pong: at most 125 bytes, never fragmented, allowed inside a message.
    pub fn is_control(self) -> bool {
        matches!(self, Opcode::Close | Opcode::Ping | Opcode::Pong)
    }
}

/// One whole frame at the front of a buffer, its payload already unmasked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// The last frame of its message.
    pub fin: bool,
    pub opcode: Opcode,
    /// Where the (unmasked) payload lies in the buffer given to [`parse`].
    pub payload: Range<usize>,
    /// Bytes of the buffer the frame occupies, header included: the next frame starts here.
    pub consumed: usize,
}

/// Looks at the front of `buf` for one frame a client sent. When a whole frame is there, its
/// payload is unmasked in place (so a frame must be taken only once) and described; `None`
/// means more bytes are needed.
///
/// `max_payload` bounds a data frame's declared payload (the reactor passes
/// `max_frame + 4`: one protocol frame with its length prefix); control frames are bounded
/// by 125 bytes whatever it says.
///
/// # Errors
/// From the header alone, as soon as the bytes that show it are in: 1002 for RSV bits, an
/// unknown opcode, a fragmented or oversized control frame, an unmasked frame or a 64-bit
/// length with its top bit set; 1003 for a text frame; 1009 for a data frame longer than
/// `max_payload`.
pub fn parse(buf: &mut [u8], max_payload: usize) -> Result<Option<Frame>, CloseReason> {
    let Some(&[first, second]) = buf.first_chunk::<2>() else {
        return Ok(None);
    };
    if first & 0x70 != 0 {
        return Err(CloseReason::protocol("reserved bits set"));
    }
    let fin = first & 0x80 != 0;
    let opcode = Opcode::from_bits(first & 0x0F).ok_or(CloseReason::protocol("unknown opcode"))?;
    if opcode == Opcode::Text {
        return Err(CloseReason {
            code: code::UNSUPPORTED_DATA,
            reason: "text messages are not accepted: send binary protocol frames",
        });
    }
    if opcode.is_control() && !fin {
        return Err(CloseReason::protocol("fragmented control frame"));
    }
    if second & 0x80 == 0 {
        return Err(CloseReason::protocol("client frame is not masked"));
    }
    let short = second & 0x7F;
    if opcode.is_control() && usize::from(short) > MAX_CONTROL_PAYLOAD {
        return Err(CloseReason::protocol("control frame longer than 125 bytes"));
    }
    let (declared, mask_at) = match short {
        126 => match buf.get(2..4).and_then(|b| <[u8; 2]>::try_from(b).ok()) {
            Some(len) => (u64::from(u16::from_be_bytes(len)), 4),
            None => return Ok(None),
        },
        127 => match buf.get(2..10).and_then(|b| <[u8; 8]>::try_from(b).ok()) {
            Some(len) => (u64::from_be_bytes(len), 10),
            None => return Ok(None),
        },
        n => (u64::from(n), 2),
    };
    if declared >> 63 != 0 {
        return Err(CloseReason::protocol("64-bit length with its top bit set"));
    }
    let len = match usize::try_from(declared) {
        Ok(len) if len <= max_payload || opcode.is_control() => len,
        _ => {
            return Err(CloseReason {
                code: code::TOO_BIG,
                reason: "frame longer than the server accepts",
            });
        }
    };
    let start = mask_at + 4;
    let Some(mask) = buf
        .get(mask_at..start)
        .and_then(|b| <[u8; 4]>::try_from(b).ok())
    else {
        return Ok(None);
    };
    // Only a 32-bit target with a limit near usize::MAX gets here: no buffer holds the frame.
    let Some(end) = start.checked_add(len) else {
        return Err(CloseReason {
            code: code::TOO_BIG,
            reason: "frame longer than the server accepts",
        });
    };
    let Some(payload) = buf.get_mut(start..end) else {
        return Ok(None);
    };
    unmask(payload, mask);
    Ok(Some(Frame {
        fin,
        opcode,
        payload: start..end,
        consumed: end,
    }))
}

/// XORs `payload` with the 4-byte `mask`, starting at its first byte: masking and unmasking
/// are the same operation.
pub fn unmask(payload: &mut [u8], mask: [u8; 4]) {
    let wide = u64::from_ne_bytes([
        mask[0], mask[1], mask[2], mask[3], mask[0], mask[1], mask[2], mask[3],
    ]);
    let (words, tail) = payload.as_chunks_mut::<8>();
    for word in words {
        *word = (u64::from_ne_bytes(*word) ^ wide).to_ne_bytes();
    }
    for (byte, m) in tail.iter_mut().zip(mask.iter().cycle()) {
        *byte ^= m;
    }
}

/// The header of a frame the server sends (never masked), kept in a small array so that the
/// reactor can write it beside a payload it does not copy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    bytes: [u8; MAX_SERVER_HEADER],
    len: u8,
}

impl Header {
    /// The header of a frame of `opcode` carrying `payload_len` bytes, in the shortest length
    /// encoding.
    pub fn new(fin: bool, opcode: Opcode, payload_len: usize) -> Header {
        let mut bytes = [0; MAX_SERVER_HEADER];
        bytes[0] = if fin { 0x80 } else { 0 } | opcode.bits();
        let len = if let Ok(short @ 0..=125) = u8::try_from(payload_len) {
            bytes[1] = short;
            2
        } else if let Ok(medium) = u16::try_from(payload_len) {
            bytes[1] = 126;
            bytes[2..4].copy_from_slice(&medium.to_be_bytes());
            4
        } else {
            bytes[1] = 127;
            // usize is at most 64 bits on every target we build.
            let long = u64::try_from(payload_len).unwrap_or(u64::MAX >> 1);
            bytes[2..10].copy_from_slice(&long.to_be_bytes());
            10
        };
        Header { bytes, len }
    }

    pub fn as_bytes(&self) -> &[u8] {
        self.bytes.get(..usize::from(self.len)).unwrap_or_default()
    }
}

/// Appends a whole frame (header and payload) to `out`.
pub fn encode(out: &mut Vec<u8>, fin: bool, opcode: Opcode, payload: &[u8]) {
    out.extend_from_slice(Header::new(fin, opcode, payload.len()).as_bytes());
    out.extend_from_slice(payload);
}

/// Appends the Pong that answers a Ping carrying `ping_payload` (which [`parse`] has bounded
/// by 125 bytes; anything longer is cut there rather than sent as an invalid frame).
pub fn encode_pong(out: &mut Vec<u8>, ping_payload: &[u8]) {
    let payload = ping_payload
        .get(..MAX_CONTROL_PAYLOAD)
        .unwrap_or(ping_payload);
    encode(out, true, Opcode::Pong, payload);
}

/// Appends a Close frame with `code` and as much of `reason` as fits.
pub fn encode_close(out: &mut Vec<u8>, code: u16, reason: &str) {
    let (payload, len) = close_payload(code, reason);
    encode(
        out,
        true,
        Opcode::Close,
        payload.get(..len).unwrap_or_default(),
    );
}
