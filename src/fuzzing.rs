//! Fuzz bodies for the codec, kept in the library so that `cargo test` runs them too.
//!
//! Each body drives a [`Deframer`] exactly as a reactor does — append what a read returned,
//! drain every whole frame, stop at the first error — and asserts the codec's promises rather
//! than only "no panic": a frame never claims more bytes than were buffered, the deframer never
//! waits for more than one frame's worth, every refusal is decided from the header alone, every
//! parsed frame re-encodes to the very bytes it came from, and how the input was split into
//! reads changes nothing. Each stream is decoded as version 1 and as version 2, and the two
//! must agree up to the first frame of a kind only version 2 has, which version 1 refuses as
//! UNKNOWN_KIND from its kind byte. The targets under `fuzz/fuzz_targets/` are one-liners
//! that call in here. A panic in this module means the codec broke a promise; it must never panic for any
//! other reason.
//!
//! The other bodies live in submodules: [`session_ops`] drives a connection's state machine
//! through a script of operations, [`log_record`] and [`recovery`] feed the log format and
//! start-up recovery arbitrary bytes and segment files, [`ws_frame`] and [`http_upgrade`] the
//! web listener's WebSocket frames and HTTP requests, and [`web_session`] a whole web
//! connection, request to Close, through the reactor's web code and a real session. [`fake`]
//! is the fake server that the session fuzzers and the session tests share; [`ws`] also holds
//! the client-side frame encoder and decoder that the WebSocket tests share.

pub mod fake;
mod http;
mod roster;
mod session;
mod store;
mod stream_message;
mod web_session;
pub mod ws;

pub use http::http_upgrade;
pub use roster::roster;
pub use session::session_ops;
pub use store::{log_record, recovery};
pub use stream_message::stream_message;
pub use web_session::web_session;
pub use ws::ws_frame;

use crate::protocol::codec::{FrameError, RawFrame, parse_client, parse_server};
use crate::protocol::{
    DEFAULT_MAX_FRAME, Decoded, Deframer, ErrorCode, HEADER_LEN, Version, encode_client,
    encode_server, kind,
};

/// A limit small enough that short fuzz inputs also reach the TOO_LARGE path.
const SMALL_MAX_FRAME: u32 = 64;

/// At most this many input bytes after the first describe read sizes.
const MAX_READ_SIZES: u8 = 8;

/// One direction of the protocol: the deframer that reads it and how its frames round-trip.
struct Direction {
    deframer: fn(u32) -> Deframer,
    reencode: fn(&RawFrame<'_>) -> Result<Vec<u8>, FrameError>,
}

const TO_SERVER: Direction = Direction {
    deframer: Deframer::for_server,
    reencode: client_again,
};
const TO_CLIENT: Direction = Direction {
    deframer: Deframer::for_client,
    reencode: server_again,
};
const TO_SERVER_V2: Direction = Direction {
    deframer: |max_frame| Deframer::for_server_in(Version::V2, max_frame),
    reencode: client_again,
};
const TO_CLIENT_V2: Direction = Direction {
    deframer: |max_frame| Deframer::for_client_in(Version::V2, max_frame),
    reencode: server_again,
};

fn client_again(raw: &RawFrame<'_>) -> Result<Vec<u8>, FrameError> {
    let mut out = Vec::with_capacity(raw.wire_len);
    encode_client(&parse_client(raw)?, &mut out);
    Ok(out)
}

fn server_again(raw: &RawFrame<'_>) -> Result<Vec<u8>, FrameError> {
    let mut out = Vec::with_capacity(raw.wire_len);
    encode_server(&parse_server(raw)?, &mut out);
    Ok(out)
}

/// Decodes `data` as the bytes a server reads from a client.
///
/// The first byte's low three bits say how many of the next bytes are read sizes (`byte + 1`,
/// used in turn, cycling); none means one byte per read. The rest is the stream, decoded with
/// `max_frame` 65536 and 64, each fed whole and in those reads.
///
/// # Panics
/// When the codec breaks one of the promises listed in the module documentation.
pub fn decode_stream(data: &[u8]) {
    check_versions(&TO_SERVER, &TO_SERVER_V2, data);
}

/// Decodes `data` as the bytes a client reads from a server; otherwise as [`decode_stream`].
///
/// # Panics
/// When the codec breaks one of the promises listed in the module documentation.
pub fn decode_client_stream(data: &[u8]) {
    check_versions(&TO_CLIENT, &TO_CLIENT_V2, data);
}

/// Decodes one fuzz input as version 1 (`v1`) and as version 2 (`v2`) of one direction, and
/// relates the two: version 2 only knows more kinds, so it finds the same frames and the same
/// first error, unless version 1 stopped at a kind only version 2 has, as UNKNOWN_KIND.
fn check_versions(v1: &Direction, v2: &Direction, data: &[u8]) {
    let old = check(v1, data);
    let new = check(v2, data);
    let n = old.frames.len();
    assert_eq!(
        new.frames.get(..n),
        Some(&old.frames[..]),
        "version 2 decoded a version 1 stream differently"
    );
    if n < new.frames.len() || old.error != new.error {
        let (_, stream) = read_plan(data);
        let stopped_at = stream.get(old.consumed + HEADER_LEN).copied();
        assert_eq!(old.error.map(|e| e.code), Some(ErrorCode::UnknownKind));
        assert!(
            stopped_at.and_then(kind::introduced_in) == Some(Version::V2),
            "version 1 stopped at kind {stopped_at:02x?}, which is not version 2's"
        );
    }
}

/// What feeding a stream produced: the wire bytes of each frame, in order, and the first error.
#[derive(Debug, Default, PartialEq, Eq)]
struct Outcome {
    frames: Vec<Vec<u8>>,
    error: Option<FrameError>,
    consumed: usize,
}

/// Decodes one fuzz input under both limits, whole and in reads, and relates the outcomes;
/// returns the outcome under the larger limit.
fn check(dir: &Direction, data: &[u8]) -> Outcome {
    let (sizes, stream) = read_plan(data);
    let large = check_limit(dir, DEFAULT_MAX_FRAME, stream, &sizes);
    let small = check_limit(dir, SMALL_MAX_FRAME, stream, &sizes);
    // A smaller limit can only cut the same frames short, and only by refusing one as too large.
    let n = small.frames.len();
    assert_eq!(
        large.frames.get(..n),
        Some(&small.frames[..]),
        "small limit changed frames"
    );
    if n < large.frames.len() || small.error != large.error {
        assert_eq!(small.error.map(|e| e.code), Some(ErrorCode::TooLarge));
    }
    large
}

/// Splits the input into read sizes and the stream they cut up.
fn read_plan(data: &[u8]) -> (Vec<usize>, &[u8]) {
    let Some((&control, rest)) = data.split_first() else {
        return (vec![1], data);
    };
    let count = usize::from(control % MAX_READ_SIZES).min(rest.len());
    let (sizes, stream) = rest.split_at(count);
    let mut sizes: Vec<usize> = sizes.iter().map(|&b| usize::from(b) + 1).collect();
    if sizes.is_empty() {
        sizes.push(1);
    }
    (sizes, stream)
}

/// Feeds `stream` whole and in `sizes` reads to one deframer and checks both agree.
fn check_limit(dir: &Direction, max_frame: u32, stream: &[u8], sizes: &[usize]) -> Outcome {
    let deframer = (dir.deframer)(max_frame);
    let whole = feed(dir, deframer, stream, &[stream.len().max(1)]);
    let in_reads = feed(dir, deframer, stream, sizes);
    assert_eq!(
        whole, in_reads,
        "splitting the stream into reads changed the outcome"
    );
    whole
}

/// Feeds `stream` as reads of `sizes` (cycled) the way a reactor does and stops at the first
/// error.
fn feed(dir: &Direction, deframer: Deframer, stream: &[u8], sizes: &[usize]) -> Outcome {
    let mut out = Outcome::default();
    let mut buf = Vec::new();
    let mut rest = stream;
    for size in sizes.iter().cycle() {
        if rest.is_empty() || out.error.is_some() {
            break;
        }
        let (read, tail) = rest.split_at((*size).min(rest.len()));
        rest = tail;
        buf.extend_from_slice(read);
        let drained = drain(dir, deframer, &buf, &mut out);
        buf.drain(..drained);
    }
    assert!(out.consumed <= stream.len(), "consumed more than the input");
    assert_eq!(
        out.frames.concat(),
        stream.get(..out.consumed).unwrap_or_default()
    );
    out
}

/// Takes every whole frame off the front of `buf`; returns how many bytes they occupied.
fn drain(dir: &Direction, deframer: Deframer, buf: &[u8], out: &mut Outcome) -> usize {
    let mut at = 0;
    loop {
        let pending = buf.get(at..).expect("frames stay inside the buffer");
        match deframer.next(pending) {
            Ok(Decoded::NeedMore) => {
                // Waiting is only for the rest of one frame no longer than max_frame.
                assert!(pending.len() < HEADER_LEN + deframer.max_frame() as usize);
                return at;
            }
            Ok(Decoded::Frame(raw)) => {
                check_raw(deframer, &raw, pending);
                match (dir.reencode)(&raw) {
                    Ok(again) => {
                        assert_eq!(again, pending[..raw.wire_len], "re-encoding changed bytes");
                        out.frames.push(again);
                        out.consumed += raw.wire_len;
                        at += raw.wire_len;
                    }
                    Err(e) => {
                        // The deframer already refused unknown kinds; only bodies remain.
                        assert_eq!(e.code, ErrorCode::Malformed, "{e:?}");
                        out.error = Some(e);
                        return at;
                    }
                }
            }
            Err(e) => {
                // Refused from the header: 4 bytes for the length, a fifth for the kind.
                let seen = match e.code {
                    ErrorCode::UnknownKind => HEADER_LEN + 1,
                    _ => HEADER_LEN,
                };
                let header = pending
                    .get(..seen)
                    .expect("refused before the header was in");
                assert_eq!(deframer.next(header), Err(e), "needed more than the header");
                out.error = Some(e);
                return at;
            }
        }
    }
}

/// A frame the deframer found in `pending` describes exactly bytes that are there.
fn check_raw(deframer: Deframer, raw: &RawFrame<'_>, pending: &[u8]) {
    assert!(
        raw.wire_len <= pending.len(),
        "frame longer than the buffer"
    );
    assert!(raw.wire_len > HEADER_LEN, "frame without a kind");
    assert!(
        raw.wire_len - HEADER_LEN <= deframer.max_frame() as usize,
        "frame over max_frame"
    );
    let header = pending.first_chunk::<HEADER_LEN>().expect("header present");
    assert_eq!(
        u32::from_be_bytes(*header) as usize,
        raw.wire_len - HEADER_LEN
    );
    assert_eq!(pending.get(HEADER_LEN), Some(&raw.kind));
    assert_eq!(pending.get(HEADER_LEN + 1..raw.wire_len), Some(raw.body));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{ClientFrame, ServerFrame};

    /// HELLO, JOIN, SEND, PING, BYE as a client pipelines them.
    fn client_stream() -> Vec<u8> {
        let mut wire = Vec::new();
        for frame in [
            ClientFrame::Hello {
                version: 1,
                user: "alice",
                token: "secret",
                client: 0,
            },
            ClientFrame::Join {
                room: "#general",
                after: 0,
                limit: u32::MAX,
            },
            ClientFrame::Send {
                room: "#general",
                id: 1,
                text: "héllo",
            },
            ClientFrame::Ping { nonce: 7 },
            ClientFrame::Bye,
        ] {
            encode_client(&frame, &mut wire);
        }
        wire
    }

    /// WELCOME, JOINED, MSG, ACK, ERROR as a server answers them.
    fn server_stream() -> Vec<u8> {
        let mut wire = Vec::new();
        for frame in [
            ServerFrame::Welcome {
                version: 1,
                epoch: 9,
                session: 3,
                max_frame: DEFAULT_MAX_FRAME,
                idle_timeout_ms: 30_000,
                server: "chatd",
            },
            ServerFrame::Joined {
                room: "#general",
                first: 0,
                head: 0,
            },
            ServerFrame::Msg {
                room: "#general",
                seq: 1,
                ts_ms: 2,
                user: "alice",
                text: "héllo",
            },
            ServerFrame::Ack { id: 1, seq: 1 },
            ServerFrame::Error {
                code: 8,
                reference: 1,
                message: "not joined",
            },
        ] {
            encode_server(&frame, &mut wire);
        }
        wire
    }

    /// HELLO of version 2, JOIN, WHO, WATCH, PING as a version 2 client pipelines them.
    fn client_stream_v2() -> Vec<u8> {
        let mut wire = Vec::new();
        for frame in [
            ClientFrame::Hello {
                version: 2,
                user: "alice",
                token: "secret",
                client: 0x0102_0304_0506_0708,
            },
            ClientFrame::Join {
                room: "#general",
                after: 0,
                limit: 0,
            },
            ClientFrame::Who { room: "#general" },
            ClientFrame::Watch {
                room: "#general",
                on: 1,
            },
            ClientFrame::Ping { nonce: 7 },
        ] {
            encode_client(&frame, &mut wire);
        }
        wire
    }

    /// WELCOME, MEMBERS, PRESENCE, ERROR FORBIDDEN as a server answers a version 2 client.
    fn server_stream_v2() -> Vec<u8> {
        let mut wire = Vec::new();
        let welcome = ServerFrame::Welcome {
            version: 2,
            epoch: 9,
            session: 3,
            max_frame: DEFAULT_MAX_FRAME,
            idle_timeout_ms: 30_000,
            server: "chatd",
        };
        encode_server(&welcome, &mut wire);
        let users = ["alice", "bob"];
        crate::protocol::codec::encode_members("#general", 2, users, 64, &mut wire);
        for frame in [
            ServerFrame::Presence {
                room: "#general",
                user: "carol",
                here: true,
            },
            ServerFrame::Error {
                code: ErrorCode::Forbidden.as_u16(),
                reference: 0,
                message: "no",
            },
        ] {
            encode_server(&frame, &mut wire);
        }
        wire
    }

    /// Read plans: one byte per read, reads of 2 and 5, one read of up to 256.
    const PLANS: [&[u8]; 3] = [&[0x00], &[0x02, 1, 4], &[0x01, 0xff]];

    fn with_plan(plan: &[u8], stream: &[u8]) -> Vec<u8> {
        [plan, stream].concat()
    }

    #[test]
    fn valid_streams_decode_whole_and_in_reads() {
        for plan in PLANS {
            decode_stream(&with_plan(plan, &client_stream()));
            decode_client_stream(&with_plan(plan, &server_stream()));
        }
        let outcome = feed(&TO_SERVER, Deframer::for_server(64), &client_stream(), &[3]);
        assert_eq!((outcome.frames.len(), outcome.error), (5, None));
        let outcome = feed(&TO_CLIENT, Deframer::for_client(64), &server_stream(), &[3]);
        assert_eq!(outcome.frames.len(), 5);
    }

    #[test]
    fn version_2_streams_decode_in_version_2_and_stop_in_version_1_at_the_first_new_kind() {
        for plan in PLANS {
            decode_stream(&with_plan(plan, &client_stream_v2()));
            decode_client_stream(&with_plan(plan, &server_stream_v2()));
        }
        let v2 = Deframer::for_server_in(Version::V2, 64);
        let outcome = feed(&TO_SERVER_V2, v2, &client_stream_v2(), &[3]);
        assert_eq!((outcome.frames.len(), outcome.error), (5, None));
        // HELLO and JOIN, then WHO's kind byte.
        let outcome = feed(
            &TO_SERVER,
            Deframer::for_server(64),
            &client_stream_v2(),
            &[3],
        );
        let code = outcome.error.map(|e| e.code);
        assert_eq!(
            (outcome.frames.len(), code),
            (2, Some(ErrorCode::UnknownKind))
        );

        let v2 = Deframer::for_client_in(Version::V2, 64);
        let outcome = feed(&TO_CLIENT_V2, v2, &server_stream_v2(), &[3]);
        assert_eq!((outcome.frames.len(), outcome.error), (4, None));
        let outcome = feed(
            &TO_CLIENT,
            Deframer::for_client(64),
            &server_stream_v2(),
            &[3],
        );
        let code = outcome.error.map(|e| e.code);
        assert_eq!(
            (outcome.frames.len(), code),
            (1, Some(ErrorCode::UnknownKind))
        );
        for cut in 0..client_stream_v2().len() {
            decode_stream(&with_plan(&[0x02, 0, 6], &client_stream_v2()[..cut]));
        }
        for cut in 0..server_stream_v2().len() {
            decode_client_stream(&with_plan(&[0x02, 0, 6], &server_stream_v2()[..cut]));
        }
    }

    #[test]
    fn truncated_streams_keep_the_whole_frames() {
        let client = client_stream();
        let server = server_stream();
        for cut in 0..client.len() {
            decode_stream(&with_plan(&[0x02, 0, 6], &client[..cut]));
        }
        for cut in 0..server.len() {
            decode_client_stream(&with_plan(&[0x02, 0, 6], &server[..cut]));
        }
        // HELLO is 21 bytes: 22 bytes hold it and one byte of JOIN, which waits.
        let outcome = feed(&TO_SERVER, Deframer::for_server(64), &client[..22], &[1]);
        assert_eq!(
            (outcome.frames.len(), outcome.consumed, outcome.error),
            (1, 21, None)
        );
    }

    /// A fuzz body.
    type Body = fn(&[u8]);

    /// Every target's body and the folder names its inputs live under.
    const TARGETS: [(&str, Body); 10] = [
        ("decode_server", decode_stream),
        ("decode_client", decode_client_stream),
        ("session", session_ops),
        ("log_record", log_record),
        ("recovery", recovery),
        ("ws_frame", ws_frame),
        ("http_upgrade", http_upgrade),
        ("web_session", web_session),
        ("stream_message", stream_message),
        ("roster", roster),
    ];

    /// Runs every file of `fuzz/<kind>/<target>/` through the target's body; returns the count.
    fn run_inputs(kind: &str, target: &str, body: Body) -> usize {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("fuzz")
            .join(kind)
            .join(target);
        let Ok(entries) = std::fs::read_dir(&dir) else {
            return 0;
        };
        let mut count = 0;
        for entry in entries {
            let path = entry.expect("input entry").path();
            eprintln!("{}", path.display());
            body(&std::fs::read(&path).expect("input file"));
            count += 1;
        }
        count
    }

    #[test]
    fn seed_corpora_pass() {
        for (target, body) in TARGETS {
            let count = run_inputs("seeds", target, body);
            assert!(count >= 4, "{target} has only {count} seeds");
        }
    }

    /// Inputs that once crashed a target stay fixed (`fuzz/regressions/<target>/`).
    #[test]
    fn regression_inputs_pass() {
        for (target, body) in TARGETS {
            run_inputs("regressions", target, body);
        }
    }

    #[test]
    fn garbage_stops_at_the_first_error() {
        let cases: [(&[u8], ErrorCode); 5] = [
            (&[0, 0, 0, 0], ErrorCode::Malformed),
            (&[0, 0, 0, 0x41], ErrorCode::TooLarge),
            (&[0, 0, 0, 1, 0x81], ErrorCode::UnknownKind),
            (&[0, 0, 0, 2, 0x06, 0], ErrorCode::Malformed),
            (
                &[0, 0, 0, 1, 0x06, 0xff, 0xff, 0xff, 0xff],
                ErrorCode::TooLarge,
            ),
        ];
        for (stream, code) in cases {
            let outcome = feed(&TO_SERVER, Deframer::for_server(64), stream, &[1]);
            assert_eq!(outcome.error.map(|e| e.code), Some(code), "{stream:02x?}");
            for plan in PLANS {
                decode_stream(&with_plan(plan, stream));
                decode_client_stream(&with_plan(plan, stream));
            }
        }
        for junk in [&[][..], &[0xff; 40], b"GET / HTTP/1.1\r\n\r\n"] {
            decode_stream(junk);
            decode_client_stream(junk);
        }
    }
}
