//! The client's half of the WebSocket opening handshake (RFC 6455 §4.1): the `GET` that asks
//! for the upgrade, and the judgement of the server's answer — status 101, `Upgrade:
//! websocket`, `Connection: upgrade`, and the `Sec-WebSocket-Accept` that our key demands,
//! computed here with the same SHA-1 and base64 crates the daemon uses but not with its code,
//! so that a daemon that gets the key wrong fails the run. Bytes in, a verdict out: no I/O,
//! and no extension or subprotocol is ever offered or accepted.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use sha1::{Digest, Sha1};

/// The GUID RFC 6455 appends to the key before hashing it.
const ACCEPT_GUID: &[u8] = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// The longest answer head we wait for; a server that says more is not answering an upgrade.
pub const MAX_RESPONSE: usize = 8 * 1024;

/// Headers in the answer we look through; more is refused as not an upgrade.
const MAX_HEADERS: usize = 32;

/// A `Sec-WebSocket-Key`: the base64 of 16 bytes (here from the connection's mask generator,
/// which is enough: the key only proves that the server read our request).
pub fn key(nonce: [u8; 16]) -> String {
    STANDARD.encode(nonce)
}

/// What the server must answer in `Sec-WebSocket-Accept` for `key`.
pub fn accept_for(key: &str) -> String {
    let mut sha1 = Sha1::new();
    sha1.update(key.as_bytes());
    sha1.update(ACCEPT_GUID);
    STANDARD.encode(sha1.finalize())
}

/// The upgrade request for `path` on `host` (the `Host` header: the address connected to).
/// No `Origin`: the bench is not a browser, and chatd lets such clients in.
pub fn request(host: &str, path: &str, key: &str) -> Vec<u8> {
    format!(
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    .into_bytes()
}

/// Judges the answer at the front of `buf`: `Ok(None)` until its head is whole, then the
/// bytes the head took (WebSocket frames may follow at once).
///
/// # Errors
/// Not HTTP, a status other than 101 (named in the message), a missing or wrong upgrade
/// header or accept key, an extension or subprotocol we did not offer, or a head over
/// `MAX_RESPONSE`.
pub fn response(buf: &[u8], key: &str) -> Result<Option<usize>, String> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut res = httparse::Response::new(&mut headers);
    let used = match res.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) if buf.len() > MAX_RESPONSE => {
            return Err(format!(
                "no end to the upgrade answer in {MAX_RESPONSE} bytes"
            ));
        }
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(e) => return Err(format!("the upgrade answer is not HTTP: {e}")),
    };
    let code = res.code.unwrap_or(0);
    if code != 101 {
        let reason = res.reason.unwrap_or("");
        return Err(format!("the server refused the upgrade: {code} {reason}"));
    }
    let value = |name: &str| {
        res.headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .map(|h| String::from_utf8_lossy(h.value).into_owned())
    };
    let names = |name: &str, token: &str| {
        value(name).is_some_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
    };
    if !names("upgrade", "websocket") {
        return Err("101 without Upgrade: websocket".into());
    }
    if !names("connection", "upgrade") {
        return Err("101 without Connection: upgrade".into());
    }
    match value("sec-websocket-accept") {
        Some(accept) if accept.trim() == accept_for(key) => {}
        Some(accept) => {
            return Err(format!(
                "101 with the wrong Sec-WebSocket-Accept {accept:?}"
            ));
        }
        None => return Err("101 without Sec-WebSocket-Accept".into()),
    }
    for offered_none in ["sec-websocket-extensions", "sec-websocket-protocol"] {
        if let Some(v) = value(offered_none) {
            return Err(format!(
                "101 chose {offered_none}: {v}, which we did not offer"
            ));
        }
    }
    Ok(Some(used))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 6455 §1.3's example key and answer.
    const RFC_KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";
    const RFC_ACCEPT: &str = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=";

    fn answer(accept: &str, extra: &str) -> Vec<u8> {
        format!(
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Accept: {accept}\r\n{extra}\r\n"
        )
        .into_bytes()
    }

    #[test]
    fn the_accept_key_is_the_rfc_example_and_the_daemons() {
        assert_eq!(accept_for(RFC_KEY), RFC_ACCEPT);
        let ours = key([7; 16]);
        let daemon = chatd::web::upgrade::accept_key(ours.as_bytes());
        assert_eq!(accept_for(&ours), daemon);
    }

    #[test]
    fn a_101_with_the_right_accept_is_taken_and_frames_after_it_are_left() {
        let mut wire = answer(RFC_ACCEPT, "");
        let head = wire.len();
        wire.extend_from_slice(&[0x82, 0x00]);
        assert_eq!(response(&wire, RFC_KEY), Ok(Some(head)));
        assert_eq!(response(&wire[..head - 1], RFC_KEY), Ok(None), "waits");
    }

    #[test]
    fn a_wrong_accept_or_a_refusal_fails_the_connection() {
        let wrong = answer("AAAAAAAAAAAAAAAAAAAAAAAAAAA=", "");
        let e = response(&wrong, RFC_KEY).expect_err("wrong accept");
        assert!(e.contains("wrong Sec-WebSocket-Accept"), "{e}");
        let forbidden = b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n";
        let e = response(forbidden, RFC_KEY).expect_err("403");
        assert!(e.contains("403 Forbidden"), "{e}");
        let no_upgrade = b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\n\
                           Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n";
        assert!(response(no_upgrade, RFC_KEY).is_err());
        let deflate = answer(
            RFC_ACCEPT,
            "Sec-WebSocket-Extensions: permessage-deflate\r\n",
        );
        assert!(response(&deflate, RFC_KEY).is_err(), "nothing was offered");
        assert!(response(b"SSH-2.0-OpenSSH\r\n\r\n", RFC_KEY).is_err());
        let endless = vec![b'a'; MAX_RESPONSE + 1];
        assert!(response(&endless, RFC_KEY).is_err());
    }

    #[test]
    fn the_request_asks_for_version_13_with_our_key() {
        let req = request("127.0.0.1:80", "/ws", RFC_KEY);
        let mut headers = [httparse::EMPTY_HEADER; 8];
        let mut parsed = httparse::Request::new(&mut headers);
        assert!(parsed.parse(&req).expect("HTTP").is_complete());
        assert_eq!((parsed.method, parsed.path), (Some("GET"), Some("/ws")));
        let key = parsed
            .headers
            .iter()
            .find(|h| h.name == "Sec-WebSocket-Key")
            .map(|h| h.value);
        assert_eq!(key, Some(RFC_KEY.as_bytes()));
        assert_eq!(
            chatd::web::upgrade::check(parsed.headers),
            Ok(RFC_KEY.as_bytes()),
            "the daemon takes it as an upgrade"
        );
    }
}
