//! The WebSocket opening handshake on the server side (RFC 6455 §4.2): which headers make a
//! request an upgrade, and the 101 that accepts it with `Sec-WebSocket-Accept`.
//!
//! Extensions are never negotiated (permessage-deflate included, whatever the client
//! offers: compression would cost memory per connection) and no subprotocol is chosen. A
//! length or value is never trusted before it is checked; nothing here does I/O.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use httparse::Header;
use sha1::{Digest, Sha1};

use super::http::{has_token, single_value};
use super::response::Response;

/// The GUID RFC 6455 appends to the client's key before hashing it.
const ACCEPT_GUID: &[u8] = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// The one protocol version spoken (RFC 6455).
pub const VERSION: &str = "13";

/// Why a request to the WebSocket path is not an acceptable upgrade.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// A header is missing or malformed: 400.
    BadRequest(&'static str),
    /// `Sec-WebSocket-Version` names another version: 426, naming ours.
    Version,
}

/// Checks the upgrade headers and returns the client's key.
///
/// # Errors
/// [`Refusal::BadRequest`] without `Upgrade: websocket`, without the `upgrade` token in
/// `Connection`, without a version, or without exactly one key that is the base64 of 16
/// bytes; [`Refusal::Version`] for a version other than 13.
pub fn check<'b>(headers: &[Header<'b>]) -> Result<&'b [u8], Refusal> {
    if !has_token(headers, "upgrade", b"websocket") {
        return Err(Refusal::BadRequest("no Upgrade: websocket"));
    }
    if !has_token(headers, "connection", b"upgrade") {
        return Err(Refusal::BadRequest("Connection does not name upgrade"));
    }
    match single_value(headers, "sec-websocket-version") {
        None => return Err(Refusal::BadRequest("no single Sec-WebSocket-Version")),
        Some(version) if version != VERSION.as_bytes() => return Err(Refusal::Version),
        Some(_) => {}
    }
    let key = single_value(headers, "sec-websocket-key")
        .ok_or(Refusal::BadRequest("no single Sec-WebSocket-Key"))?;
    let mut nonce = [0; 24];
    match STANDARD.decode_slice(key, &mut nonce) {
        Ok(16) => Ok(key),
        _ => Err(Refusal::BadRequest(
            "Sec-WebSocket-Key is not the base64 of 16 bytes",
        )),
    }
}

/// `Sec-WebSocket-Accept` for a client's key: the base64 of the SHA-1 of the key and the GUID.
pub fn accept_key(key: &[u8]) -> String {
    let mut sha1 = Sha1::new();
    sha1.update(key);
    sha1.update(ACCEPT_GUID);
    STANDARD.encode(sha1.finalize())
}

/// The 101 that completes the handshake for `key`.
pub fn switching_protocols(key: &[u8]) -> Vec<u8> {
    Response::new(101)
        .header("Upgrade", "websocket")
        .header("Connection", "Upgrade")
        .header("Sec-WebSocket-Accept", &accept_key(key))
        .finish()
}
