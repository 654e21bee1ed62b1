//! Why a WebSocket connection ends: the status codes of RFC 6455 §7.4, the Close frame's
//! payload (a code and a UTF-8 reason), and which codes a peer may send.
//!
//! A Close frame is the last word on a connection, so its payload is judged strictly: a
//! one-byte payload, a code a peer must never send, or a reason that is not UTF-8 each fail
//! the connection. Nothing here allocates or trusts a length it did not check.

/// Status codes the server sends (RFC 6455 §7.4.1).
pub mod code {
    /// The purpose of the connection was fulfilled (and the answer to a Close without a code).
    pub const NORMAL: u16 = 1000;
    /// The server is going away (shutdown).
    pub const GOING_AWAY: u16 = 1001;
    /// The peer broke the WebSocket protocol.
    pub const PROTOCOL_ERROR: u16 = 1002;
    /// A message of a type the server does not take: text, here.
    pub const UNSUPPORTED_DATA: u16 = 1003;
    /// A message whose content does not fit its type: here, a binary message that ends inside
    /// a protocol frame, or a Close reason that is not UTF-8.
    pub const INVALID_PAYLOAD: u16 = 1007;
    /// The connection broke a rule of the application (an `ERROR` ended the session).
    pub const POLICY: u16 = 1008;
    /// A frame longer than the server takes.
    pub const TOO_BIG: u16 = 1009;
}

/// The longest payload of a control frame (RFC 6455 §5.5).
pub const MAX_CONTROL_PAYLOAD: usize = 125;

/// The longest reason that fits in a Close frame beside its 2-byte code.
pub const MAX_REASON: usize = MAX_CONTROL_PAYLOAD - 2;

/// Why the server fails a connection: the code for the Close frame and a short reason, for the
/// Close frame and the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CloseReason {
    pub code: u16,
    pub reason: &'static str,
}

impl CloseReason {
    /// A breach of RFC 6455 (1002).
    pub const fn protocol(reason: &'static str) -> CloseReason {
        CloseReason {
            code: code::PROTOCOL_ERROR,
            reason,
        }
    }
}

/// Whether a peer may put `code` in a Close frame: the codes RFC 6455 defines for use on the
/// wire, and the ranges for libraries and applications (3000–4999). 1004–1006 and 1015 must
/// never be sent; other codes below 3000 are unassigned (the Autobahn testsuite's case 7.9
/// list, which also counts 1012–1014 as unassigned).
pub fn is_valid_code(code: u16) -> bool {
    matches!(code, 1000..=1003 | 1007..=1011 | 3000..=4999)
}

/// Reads the payload of a Close frame the peer sent: `None` if it holds no code.
///
/// # Errors
/// 1002 for a one-byte payload or a code a peer may not send; 1007 for a reason that is not
/// UTF-8.
pub fn parse_close(payload: &[u8]) -> Result<Option<u16>, CloseReason> {
    let Some((code, reason)) = payload.split_first_chunk::<2>() else {
        return if payload.is_empty() {
            Ok(None)
        } else {
            Err(CloseReason::protocol("close frame with a one-byte payload"))
        };
    };
    let code = u16::from_be_bytes(*code);
    if !is_valid_code(code) {
        return Err(CloseReason::protocol("close frame with an invalid code"));
    }
    if std::str::from_utf8(reason).is_err() {
        return Err(CloseReason {
            code: code::INVALID_PAYLOAD,
            reason: "close reason is not UTF-8",
        });
    }
    Ok(Some(code))
}

/// The payload of a Close frame: `code`, then `reason` cut at a character boundary to fit.
/// Returns the buffer and how many of its bytes are used.
pub fn close_payload(code: u16, reason: &str) -> ([u8; MAX_CONTROL_PAYLOAD], usize) {
    let reason = crate::protocol::codec::clamp_str(reason, MAX_REASON);
    let mut payload = [0; MAX_CONTROL_PAYLOAD];
    let (head, tail) = payload.split_at_mut(2);
    head.copy_from_slice(&code.to_be_bytes());
    if let Some(slot) = tail.get_mut(..reason.len()) {
        slot.copy_from_slice(reason.as_bytes());
    }
    (payload, 2 + reason.len())
}
