//! WebSocket frames on the client side of `--transport ws`: the masked frames a client sends,
//! and a streaming reader of the unmasked frames a server sends.
//!
//! The [`Reader`] keeps a few bytes of state (a partial header, what is left of the current
//! payload, a control frame's payload of at most 125 bytes) and copies data payloads straight
//! from the bytes read into the protocol buffer, so a WebSocket connection costs the generator
//! no more copies than a plain one; it treats a message as part of one stream of protocol
//! bytes, which is what chatd and NATS promise, and hands control frames to its caller. It
//! must never trust a server's length beyond counting it down, and never panic on any input:
//! anything a server must not send (RSV bits, a masked or text frame, a fragmented or long
//! control frame, a broken fragmentation sequence) is an error that ends the connection.

use chatd::web::frame::{Opcode, unmask};

/// The longest header a server writes: 2 bytes and a 64-bit length, no mask.
const MAX_SERVER_HEADER: usize = 10;

/// Control frames carry at most this much (RFC 6455 §5.5).
const MAX_CONTROL_PAYLOAD: usize = 125;

/// The masks of one connection's frames: xorshift64, seeded per connection. RFC 6455 wants a
/// browser's masks unpredictable to stop cache poisoning through proxies; a bench on loopback
/// crosses none, and a few shifts per frame keep the generator's cost down.
pub struct Masks(u64);

impl Masks {
    pub fn new(seed: u64) -> Masks {
        // Zero is xorshift's one fixed point.
        Masks(seed.max(1))
    }

    fn step(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    pub fn next_mask(&mut self) -> [u8; 4] {
        let [a, b, c, d, ..] = self.step().to_le_bytes();
        [a, b, c, d]
    }

    /// 16 bytes for a `Sec-WebSocket-Key`.
    pub fn nonce(&mut self) -> [u8; 16] {
        let mut n = [0; 16];
        n[..8].copy_from_slice(&self.step().to_le_bytes());
        n[8..].copy_from_slice(&self.step().to_le_bytes());
        n
    }
}

/// Appends one final frame of `opcode` carrying `payload` masked with `mask`, its length in
/// the shortest form.
pub fn encode(out: &mut Vec<u8>, opcode: Opcode, payload: &[u8], mask: [u8; 4]) {
    out.push(0x80 | opcode.bits());
    let len = payload.len();
    if let Ok(short @ 0..=125) = u8::try_from(len) {
        out.push(0x80 | short);
    } else if let Ok(medium) = u16::try_from(len) {
        out.push(0x80 | 126);
        out.extend_from_slice(&medium.to_be_bytes());
    } else {
        out.push(0x80 | 127);
        out.extend_from_slice(&(len as u64).to_be_bytes());
    }
    out.extend_from_slice(&mask);
    let body = out.len();
    out.extend_from_slice(payload);
    if let Some(masked) = out.get_mut(body..) {
        unmask(masked, mask);
    }
}

/// Where a client stands in the stream of frames its server sends.
#[derive(Default)]
pub struct Reader {
    /// The current frame's header, while it arrives.
    head: [u8; MAX_SERVER_HEADER],
    have: usize,
    /// Inside a frame whose header is read: its payload bytes still to come.
    in_frame: bool,
    left: u64,
    /// The current frame is a control frame: its opcode, and its payload so far.
    control: Option<Opcode>,
    payload: Vec<u8>,
    /// A fragmented data message is open.
    in_message: bool,
    /// The server's Close came: nothing after it is read (RFC 6455 §5.5.1).
    closed: bool,
}

impl Reader {
    /// Takes the next `bytes` from the server: data payloads are appended to `data`, each
    /// whole control frame is handed to `on_control` with its payload; after a Close, nothing.
    ///
    /// # Errors
    /// A frame a server must not send; the connection is over.
    pub fn feed(
        &mut self,
        mut bytes: &[u8],
        data: &mut Vec<u8>,
        on_control: &mut dyn FnMut(Opcode, &[u8]),
    ) -> Result<(), String> {
        loop {
            if self.closed {
                return Ok(());
            }
            if self.in_frame {
                let take = usize::try_from(self.left)
                    .unwrap_or(usize::MAX)
                    .min(bytes.len());
                let (now, rest) = bytes.split_at(take);
                match self.control {
                    None => data.extend_from_slice(now),
                    Some(_) => self.payload.extend_from_slice(now),
                }
                self.left -= take as u64;
                bytes = rest;
                if self.left > 0 {
                    return Ok(());
                }
                self.in_frame = false;
                if let Some(opcode) = self.control.take() {
                    on_control(opcode, &self.payload);
                    self.payload.clear();
                    self.closed = opcode == Opcode::Close;
                }
                continue;
            }
            if bytes.is_empty() {
                return Ok(());
            }
            bytes = self.fill_header(bytes);
            if let Some(len) = header_len(self.head_so_far())
                && self.have == len
            {
                self.start_frame()?;
            }
        }
    }

    fn head_so_far(&self) -> &[u8] {
        self.head.get(..self.have).unwrap_or_default()
    }

    /// Moves header bytes from the front of `bytes` into `head`; returns the rest.
    fn fill_header<'b>(&mut self, bytes: &'b [u8]) -> &'b [u8] {
        let want = header_len(self.head_so_far()).unwrap_or(2);
        let take = want.saturating_sub(self.have).min(bytes.len());
        let (now, rest) = bytes.split_at(take);
        if let Some(slot) = self.head.get_mut(self.have..self.have + take) {
            slot.copy_from_slice(now);
        }
        self.have += take;
        rest
    }

    /// Judges the whole header in `head` and enters its frame.
    fn start_frame(&mut self) -> Result<(), String> {
        let (first, second) = match self.head_so_far() {
            [first, second, ..] => (*first, *second),
            _ => return Ok(()),
        };
        let len = match (second & 0x7F, self.head_so_far()) {
            (126, [_, _, a, b]) => u64::from(u16::from_be_bytes([*a, *b])),
            (127, [_, _, rest @ ..]) => {
                u64::from_be_bytes(<[u8; 8]>::try_from(rest).map_err(|_| "short header")?)
            }
            (n, _) => u64::from(n),
        };
        self.have = 0;
        if first & 0x70 != 0 {
            return Err("server frame with reserved bits set (no extension was agreed)".into());
        }
        if second & 0x80 != 0 {
            return Err("masked frame from the server".into());
        }
        if len >> 63 != 0 {
            return Err("server frame with a 64-bit length whose top bit is set".into());
        }
        let fin = first & 0x80 != 0;
        let opcode = Opcode::from_bits(first & 0x0F)
            .ok_or_else(|| format!("server frame with unknown opcode {:#x}", first & 0x0F))?;
        match opcode {
            Opcode::Text => return Err("text message from the server".into()),
            Opcode::Binary if self.in_message => {
                return Err("new binary message inside a fragmented one".into());
            }
            Opcode::Continuation if !self.in_message => {
                return Err("continuation frame with no message started".into());
            }
            Opcode::Binary | Opcode::Continuation => self.in_message = !fin,
            Opcode::Close | Opcode::Ping | Opcode::Pong => {
                if !fin || len > MAX_CONTROL_PAYLOAD as u64 {
                    return Err("fragmented or long control frame from the server".into());
                }
                self.control = Some(opcode);
            }
        }
        self.in_frame = true;
        self.left = len;
        Ok(())
    }
}

/// The length of the header that starts with `head`, once its second byte shows it.
fn header_len(head: &[u8]) -> Option<usize> {
    let second = head.get(1)?;
    Some(match second & 0x7F {
        126 => 4,
        127 => 10,
        _ => 2,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use chatd::protocol::{ClientFrame, ServerFrame, encode_client, encode_server};
    use chatd::web::message::Wrapper;

    /// Control frames as the reader handed them over.
    type Controls = Vec<(Opcode, Vec<u8>)>;

    /// Feeds `wire` to a new reader in pieces of `step` bytes; the data, the controls seen.
    fn read_all(wire: &[u8], step: usize) -> Result<(Vec<u8>, Controls), String> {
        let mut reader = Reader::default();
        let mut data = Vec::new();
        let mut controls = Vec::new();
        for piece in wire.chunks(step.max(1)) {
            reader.feed(piece, &mut data, &mut |op, p| {
                controls.push((op, p.to_vec()))
            })?;
        }
        Ok((data, controls))
    }

    fn msg(seq: u64, text: &str) -> Vec<u8> {
        let mut out = Vec::new();
        encode_server(
            &ServerFrame::Msg {
                room: "r",
                seq,
                ts_ms: 1,
                user: "u",
                text,
            },
            &mut out,
        );
        out
    }

    #[test]
    fn masking_follows_the_rfc_example_and_the_daemon_unmasks_what_we_send() {
        // RFC 6455 §5.7: "Hello" masked with 37 fa 21 3d.
        let mut out = Vec::new();
        encode(&mut out, Opcode::Binary, b"Hello", [0x37, 0xfa, 0x21, 0x3d]);
        assert_eq!(
            out,
            [
                0x82, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58
            ]
        );
        let mut masks = Masks::new(42);
        for len in [0, 1, 125, 126, 65_535, 65_536, 70_000] {
            let mut proto = Vec::new();
            let text = "x".repeat(len);
            encode_client(
                &ClientFrame::Send {
                    room: "r",
                    id: 1,
                    text: &text,
                },
                &mut proto,
            );
            let mut wire = Vec::new();
            let mask = masks.next_mask();
            encode(&mut wire, Opcode::Binary, &proto, mask);
            let frame = chatd::web::frame::parse(&mut wire, usize::MAX)
                .expect("the daemon takes it")
                .expect("whole");
            assert!(frame.fin && frame.opcode == Opcode::Binary);
            assert_eq!(frame.consumed, wire.len());
            assert_eq!(
                wire.get(frame.payload),
                Some(&proto[..]),
                "round trip at {len}"
            );
        }
        assert_ne!(masks.next_mask(), masks.next_mask(), "a new mask per frame");
    }

    #[test]
    fn several_protocol_frames_in_one_message_and_a_frame_across_continuations() {
        let mut stream = msg(1, "one");
        stream.extend(msg(2, &"two".repeat(100)));
        stream.extend(msg(3, "three"));
        // The daemon's own wrapper, handed the stream in chunks that end inside frames: the
        // first message holds frame 1 and part of 2, continuations finish 2, then 3 follows.
        let mut wire = Vec::new();
        let mut wrapper = Wrapper::default();
        let cut = [0, 20, 200, stream.len()];
        for pair in cut.windows(2) {
            wrapper.wrap(&mut wire, &stream[pair[0]..pair[1]]);
        }
        let frames = chatd::fuzzing::ws::server_frames(&wire);
        assert!(
            frames.iter().any(|(fin, op, _)| !fin && *op == 0x2),
            "a fragmented message"
        );
        assert!(frames.iter().any(|(_, op, _)| *op == 0x0), "continuations");
        for step in [1, 2, 3, 7, wire.len()] {
            let (data, controls) = read_all(&wire, step).expect("valid");
            assert_eq!(data, stream, "in pieces of {step}");
            assert!(controls.is_empty());
        }
    }

    #[test]
    fn control_frames_in_a_fragmented_message_are_handed_over_whole() {
        let mut wire = Vec::new();
        chatd::web::frame::encode(&mut wire, false, Opcode::Binary, b"ab");
        chatd::web::frame::encode(&mut wire, true, Opcode::Ping, b"");
        chatd::web::frame::encode(&mut wire, true, Opcode::Ping, b"are you there");
        chatd::web::frame::encode(&mut wire, true, Opcode::Continuation, b"cd");
        chatd::web::frame::encode_close(&mut wire, 1001, "bye");
        chatd::web::frame::encode(&mut wire, true, Opcode::Binary, b"late");
        for step in [1, 4, wire.len()] {
            let (data, controls) = read_all(&wire, step).expect("valid");
            assert_eq!(data, b"abcd");
            let ops: Vec<Opcode> = controls.iter().map(|(op, _)| *op).collect();
            assert_eq!(ops, [Opcode::Ping, Opcode::Ping, Opcode::Close]);
            assert_eq!(controls[1].1, b"are you there");
            assert_eq!(controls[2].1.get(..2), Some(&1001u16.to_be_bytes()[..]));
        }
    }

    #[test]
    fn what_a_server_must_not_send_is_refused() {
        let refused = |wire: &[u8]| read_all(wire, wire.len()).is_err();
        assert!(refused(&[0x81, 0x01, b'a']), "text");
        assert!(refused(&[0xC2, 0x00]), "RSV1");
        assert!(refused(&[0x82, 0x81, 1, 2, 3, 4, 0]), "masked");
        assert!(refused(&[0x83, 0x00]), "reserved opcode");
        assert!(refused(&[0x80, 0x00]), "continuation with no message");
        assert!(
            refused(&[0x02, 0x00, 0x82, 0x00]),
            "binary inside a fragmented message"
        );
        assert!(refused(&[0x09, 0x00]), "fragmented ping");
        assert!(refused(&[0x89, 126, 0, 126]), "long ping");
        let mut huge = vec![0x82, 127];
        huge.extend_from_slice(&u64::MAX.to_be_bytes());
        assert!(refused(&huge), "64-bit length with the top bit set");
        assert!(
            !refused(&[0x82, 0x00, 0x8A, 0x00]),
            "empty message and a pong are fine"
        );
    }
}
