//! The `ws_frame` fuzz body: a byte stream read by the server as WebSocket frames from a
//! client, fed whole and in reads of the sizes the input chooses, and checked against the
//! promises of `web::frame`, `web::message` and `web::conn`.
//!
//! The first input byte chooses the reads (its low three bits count the read-size bytes that
//! follow, each `byte + 1`, cycled; none means one byte per read) and, in bits 3–4, the
//! payload limit (8, 125, 65540 or 1 MiB). The rest is the stream. Checked: a frame never
//! claims more bytes than were buffered and its payload lies inside it; every refusal is
//! decided from the header alone; a partial frame is never longer than the limit allows;
//! every frame re-encodes (with its own mask and length form) to exactly the bytes it came
//! from; every complete message ends on a protocol frame boundary; a Ping is answered with a
//! Pong carrying its payload; the reactor-shaped driver (`WsConn::receive`) agrees with frame
//! by frame parsing, whole and in reads; and the protocol bytes delivered, wrapped back into
//! server frames in chunks of the same sizes, decode to themselves with FIN exactly at the
//! protocol frame boundaries.

use crate::protocol::HEADER_LEN;
use crate::web::close::MAX_CONTROL_PAYLOAD;
use crate::web::frame::{self, MAX_CLIENT_HEADER, Opcode};
use crate::web::message::{Assembler, Event, Wrapper};
use crate::web::{CloseReason, WsConn};

/// The payload limits bits 3–4 of the first byte choose between.
const LIMITS: [usize; 4] = [8, 125, 65_540, 1 << 20];

/// How a client frame writes its payload length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LengthForm {
    /// The shortest form for the length.
    Shortest,
    /// 126 and a 16-bit length.
    Bits16,
    /// 127 and a 64-bit length.
    Bits64,
}

/// A frame as a client writes it: `first` is the first header byte as given (FIN, RSV,
/// opcode), the payload is masked with `mask` when there is one. For tests and fuzzers.
pub fn client_frame(first: u8, mask: Option<[u8; 4]>, payload: &[u8], form: LengthForm) -> Vec<u8> {
    let mut out = vec![first];
    let mask_bit = if mask.is_some() { 0x80 } else { 0 };
    let len = payload.len();
    match form {
        LengthForm::Shortest if len <= 125 => out.push(mask_bit | len as u8),
        LengthForm::Shortest | LengthForm::Bits16 if u16::try_from(len).is_ok() => {
            out.push(mask_bit | 126);
            out.extend_from_slice(&(len as u16).to_be_bytes());
        }
        _ => {
            out.push(mask_bit | 127);
            out.extend_from_slice(&(len as u64).to_be_bytes());
        }
    }
    let start = out.len();
    out.extend_from_slice(&mask.unwrap_or_default());
    if mask.is_none() {
        out.truncate(start);
    }
    let body = out.len();
    out.extend_from_slice(payload);
    if let Some(mask) = mask {
        frame::unmask(&mut out[body..], mask);
    }
    out
}

/// A masked, final client frame of `opcode` with the shortest length: the usual case.
pub fn masked(opcode: Opcode, payload: &[u8]) -> Vec<u8> {
    client_frame(
        0x80 | opcode.bits(),
        Some([0x37, 0xFA, 0x21, 0x3D]),
        payload,
        LengthForm::Shortest,
    )
}

/// One frame the server sent, as a client reads it: (FIN, opcode bits, payload).
pub type ServerFrame = (bool, u8, Vec<u8>);

/// Reads the unmasked frames a server wrote; panics on anything a server must never send.
pub fn server_frames(mut wire: &[u8]) -> Vec<ServerFrame> {
    let mut frames = Vec::new();
    while let Some((&[first, second], rest)) = wire.split_first_chunk::<2>() {
        assert_eq!(first & 0x70, 0, "server frame with RSV bits");
        assert_eq!(second & 0x80, 0, "server frame masked");
        let (len, rest) = match second & 0x7F {
            126 => {
                let (len, rest) = rest.split_first_chunk::<2>().expect("16-bit length");
                let len = usize::from(u16::from_be_bytes(*len));
                assert!(len > 125, "16-bit length for a short payload");
                (len, rest)
            }
            127 => {
                let (len, rest) = rest.split_first_chunk::<8>().expect("64-bit length");
                let len = u64::from_be_bytes(*len);
                assert!(len > 0xFFFF, "64-bit length for a medium payload");
                (len as usize, rest)
            }
            n => (usize::from(n), rest),
        };
        let (payload, rest) = rest.split_at_checked(len).expect("whole server frame");
        frames.push((first & 0x80 != 0, first & 0x0F, payload.to_vec()));
        wire = rest;
    }
    assert!(
        wire.is_empty(),
        "trailing bytes after the last server frame"
    );
    frames
}

/// Whether `stream` ends exactly where a protocol frame ends, by scanning its length prefixes.
fn ends_on_frame(stream: &[u8]) -> bool {
    let mut at = 0usize;
    loop {
        if at == stream.len() {
            return true;
        }
        let Some(prefix) = stream.get(at..at + HEADER_LEN) else {
            return false;
        };
        let len = u32::from_be_bytes(prefix.try_into().expect("4 bytes")) as usize;
        at += HEADER_LEN + len;
        if at > stream.len() {
            return false;
        }
    }
}

/// What reading a stream came to.
#[derive(Debug, Default, PartialEq, Eq)]
struct Outcome {
    /// Protocol bytes handed on, in order.
    delivered: Vec<u8>,
    /// The payload of each Pong the server owes.
    pongs: Vec<Vec<u8>>,
    /// Stream bytes taken by whole frames.
    consumed: usize,
    error: Option<CloseReason>,
    closed: bool,
}

/// Reads `data` as the stream a server gets from a WebSocket client.
///
/// # Panics
/// When the WebSocket layer breaks one of the promises in the module documentation.
pub fn ws_frame(data: &[u8]) {
    let (control, stream) = data.split_first().map_or((0, data), |(&c, r)| (c, r));
    let count = usize::from(control & 7).min(stream.len());
    let (sizes, stream) = stream.split_at(count);
    let mut sizes: Vec<usize> = sizes.iter().map(|&b| usize::from(b) + 1).collect();
    if sizes.is_empty() {
        sizes.push(1);
    }
    let limit = LIMITS[usize::from(control >> 3) & 3];

    let by_frame = frame_by_frame(stream, limit);
    let whole = through_conn(stream, &[stream.len().max(1)], limit);
    let in_reads = through_conn(stream, &sizes, limit);
    assert_eq!(whole, in_reads, "splitting into reads changed the outcome");
    assert_eq!(
        by_frame, whole,
        "WsConn::receive disagrees with parse + Assembler"
    );
    check_wrap(
        &whole.delivered,
        &sizes,
        whole.error.is_none() && !whole.closed,
    );
}

/// Parses the whole stream frame by frame, checking each.
fn frame_by_frame(stream: &[u8], limit: usize) -> Outcome {
    let mut buf = stream.to_vec();
    let mut out = Outcome::default();
    let mut assembler = Assembler::default();
    loop {
        let at = out.consumed;
        let pending = &mut buf[at..];
        let original = stream[at..].to_vec();
        let frame = match frame::parse(pending, limit) {
            Ok(Some(frame)) => frame,
            Ok(None) => {
                // Waiting is only for the rest of one frame within the limit.
                let most = MAX_CLIENT_HEADER + limit.max(MAX_CONTROL_PAYLOAD);
                assert!(pending.len() < most, "waits for more than one frame");
                assert_eq!(pending, &original[..], "touched a frame not yet whole");
                return out;
            }
            Err(reason) => {
                // Decided from the header: the first 10 bytes at most.
                let mut header = original[..original.len().min(10)].to_vec();
                assert_eq!(
                    frame::parse(&mut header, limit),
                    Err(reason),
                    "needed the payload"
                );
                out.error = Some(reason);
                out.consumed = 0;
                return out;
            }
        };
        assert!(
            frame.consumed <= pending.len(),
            "frame longer than the buffer"
        );
        assert_eq!(frame.payload.end, frame.consumed);
        assert!(matches!(frame.payload.start, 6 | 8 | 14), "header length");
        let payload = &pending[frame.payload.clone()];
        let form = match original[1] & 0x7F {
            126 => LengthForm::Bits16,
            127 => LengthForm::Bits64,
            _ => LengthForm::Shortest,
        };
        let start = frame.payload.start;
        let mask: [u8; 4] = original[start - 4..start].try_into().expect("mask");
        let again = client_frame(original[0], Some(mask), payload, form);
        assert_eq!(
            again,
            original[..frame.consumed],
            "re-encoding changed bytes"
        );
        out.consumed += frame.consumed;
        match assembler.accept(&frame, payload) {
            Ok(Event::Data(bytes)) => {
                out.delivered.extend_from_slice(bytes);
                if !assembler.in_message() {
                    assert!(
                        ends_on_frame(&out.delivered),
                        "message ended inside a frame"
                    );
                }
            }
            Ok(Event::Ping(bytes)) => out.pongs.push(bytes.to_vec()),
            Ok(Event::Pong) => {}
            Ok(Event::Close(_)) => {
                out.closed = true;
                out.consumed = stream.len();
                return out;
            }
            Err(reason) => {
                out.error = Some(reason);
                out.consumed = 0;
                return out;
            }
        }
    }
}

/// Reads the stream in reads of `sizes` (cycled) through a `WsConn`, as the reactor does.
fn through_conn(stream: &[u8], sizes: &[usize], limit: usize) -> Outcome {
    let mut conn = WsConn::upgraded();
    let mut out = Outcome::default();
    let mut rest = stream;
    for &size in sizes.iter().cycle() {
        if rest.is_empty() {
            break;
        }
        let (read, tail) = rest.split_at(size.min(rest.len()));
        rest = tail;
        let mut buf = [conn.rx(), read].concat();
        let result = conn.receive(&mut buf, limit, |bytes| {
            out.delivered.extend_from_slice(bytes)
        });
        for (fin, opcode, payload) in server_frames(conn.tx()) {
            assert!(
                fin && opcode == Opcode::Pong.bits(),
                "only Pongs answer input"
            );
            out.pongs.push(payload);
        }
        conn.drain_tx(usize::MAX);
        match result {
            Ok(received) => {
                assert!(
                    received.consumed <= buf.len(),
                    "consumed more than the input"
                );
                // The kept partial frame counts once its frame is whole, as now.
                out.consumed += received.consumed;
                conn.keep_rx(&buf[received.consumed..]);
                if received.peer_closed {
                    out.closed = true;
                    out.consumed = stream.len();
                    break;
                }
            }
            Err(reason) => {
                // Frames before the bad one may have been taken; only the error is compared.
                out.error = Some(reason);
                out.consumed = 0;
                break;
            }
        }
    }
    if out.error.is_none() && !out.closed {
        // What is left unconsumed is exactly the partial frame kept for the next read.
        assert_eq!(stream.len() - out.consumed, conn.rx().len());
    }
    out
}

/// Wraps `delivered` back into server frames in chunks of `sizes` and reads them back.
fn check_wrap(delivered: &[u8], sizes: &[usize], complete: bool) {
    let mut wrapper = Wrapper::default();
    let mut wire = Vec::new();
    let mut ends = Vec::new();
    let mut at = 0;
    for &size in sizes.iter().cycle() {
        if at == delivered.len() {
            break;
        }
        let end = (at + size).min(delivered.len());
        wrapper.wrap(&mut wire, &delivered[at..end]);
        ends.push(end);
        at = end;
    }
    let frames = server_frames(&wire);
    assert_eq!(frames.len(), ends.len());
    let mut open = false;
    let mut payloads = Vec::new();
    for ((fin, opcode, payload), end) in frames.into_iter().zip(ends) {
        let expected = if open {
            Opcode::Continuation
        } else {
            Opcode::Binary
        };
        assert_eq!(opcode, expected.bits(), "opcode out of sequence");
        payloads.extend_from_slice(&payload);
        assert_eq!(
            fin,
            ends_on_frame(&delivered[..end]),
            "FIN away from a frame boundary"
        );
        open = !fin;
    }
    assert_eq!(payloads, delivered, "wrapping changed the bytes");
    if complete && ends_on_frame(delivered) {
        assert!(!wrapper.in_message(), "message left open at a boundary");
    }
}
