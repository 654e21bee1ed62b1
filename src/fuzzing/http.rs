//! The `http_upgrade` fuzz body: arbitrary bytes as the start of a connection to the web
//! listener, decided by `web::http::decide` and by a `WsConn` fed in reads.
//!
//! The first input byte sets the listener (bit 0: TLS; bit 1: the peer is a trusted proxy;
//! bit 2: one extra allowed origin, `https://allowed.example`) and, in bits 3–5, how many of
//! the next bytes are read sizes (`byte + 1`, cycled). The rest is the request. Checked: a
//! 101 only for a request that, read independently line by line, is a `GET /ws` over
//! HTTP/1.1 with `Upgrade: websocket`, `Connection: upgrade`, version 13 and one key of 16
//! bytes, whose accept value it carries; every response is well-formed HTTP/1.1 whose
//! Content-Length matches its body; every refusal says `Connection: close`; nothing is
//! decided before the head is complete; the client address is the peer's unless the peer is
//! a trusted proxy; and feeding the bytes in reads changes nothing.

use std::net::{IpAddr, Ipv4Addr};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;

use crate::web::conn::Step;
use crate::web::http::{MAX_HEAD, WS_PATH};
use crate::web::upgrade::accept_key;
use crate::web::{Asset, Decision, Site, WsConn, decide};

/// The files the fuzzed listener serves.
const ASSETS: [Asset<'static>; 2] = [
    Asset {
        path: "/index.html",
        content_type: "text/html; charset=utf-8",
        bytes: b"<!doctype html><title>chatd</title>",
    },
    Asset {
        path: "/app.js",
        content_type: "text/javascript; charset=utf-8",
        bytes: b"\"use strict\";",
    },
];

const PEER: IpAddr = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1));

/// Decides `data` as a request to the web listener.
///
/// # Panics
/// When the HTTP layer breaks one of the promises in the module documentation.
pub fn http_upgrade(data: &[u8]) {
    let (control, rest) = data.split_first().map_or((0, data), |(&c, r)| (c, r));
    let allowed = vec!["https://allowed.example".to_string()];
    let site = Site {
        assets: &ASSETS,
        allowed_origins: if control & 4 != 0 { &allowed } else { &[] },
        tls: control & 1 != 0,
    };
    let trusted = control & 2 != 0;
    let count = usize::from((control >> 3) & 7).min(rest.len());
    let (sizes, request) = rest.split_at(count);
    let sizes: Vec<usize> = sizes.iter().map(|&b| usize::from(b) + 1).collect();

    let decision = decide(request, &site, PEER, trusted);
    check(&decision, request, trusted);
    agrees_in_reads(request, &[request.len().max(1)], &site, trusted, &decision);
    if !sizes.is_empty() {
        agrees_in_reads(request, &sizes, &site, trusted, &decision);
    }
}

fn check(decision: &Decision, request: &[u8], trusted: bool) {
    match decision {
        Decision::NeedMore => assert!(request.len() < MAX_HEAD, "waits past the head limit"),
        Decision::Upgrade {
            response,
            client,
            consumed,
        } => {
            assert!(*consumed <= request.len());
            let key = independent_upgrade(&request[..*consumed])
                .expect("101 for a request that is not a valid upgrade");
            let accept = format!("Sec-WebSocket-Accept: {}\r\n", accept_key(key));
            let text = std::str::from_utf8(response).expect("ASCII 101");
            assert!(text.starts_with("HTTP/1.1 101 "), "{text}");
            assert!(text.contains(&accept), "wrong accept value: {text}");
            assert!(text.ends_with("\r\n\r\n"));
            assert!(
                !text.to_ascii_lowercase().contains("extensions"),
                "negotiated an extension"
            );
            assert!(
                trusted || *client == PEER,
                "client address from an untrusted header"
            );
            undecided_before(request, *consumed);
        }
        Decision::Respond {
            response,
            consumed,
            close,
        } => {
            assert!(*consumed <= request.len());
            let (status, headers) = well_formed(response);
            assert_eq!(status, 200);
            assert!(headers.contains("x-content-type-options: nosniff"));
            assert!(headers.contains("content-security-policy: default-src 'none';"));
            assert_eq!(*close, headers.contains("connection: close"));
            undecided_before(request, *consumed);
        }
        Decision::Reject { status, response } => {
            let (actual, headers) = well_formed(response);
            assert_eq!(actual, *status);
            assert!(
                matches!(status, 400 | 403 | 404 | 405 | 426 | 431),
                "{status}"
            );
            assert!(headers.contains("connection: close"));
            if *status == 426 {
                assert!(headers.contains("sec-websocket-version: 13"));
            }
        }
    }
}

/// Cut shorter than its head, a request is never answered as if whole.
fn undecided_before(request: &[u8], consumed: usize) {
    for cut in [consumed / 2, consumed.saturating_sub(1)] {
        let site = Site {
            assets: &ASSETS,
            allowed_origins: &[],
            tls: false,
        };
        let early = decide(&request[..cut], &site, PEER, true);
        assert!(
            matches!(early, Decision::NeedMore | Decision::Reject { .. }),
            "decided on {cut} of {consumed} bytes"
        );
    }
}

/// Checks a response's head and body; returns its status and its head in lower case.
fn well_formed(response: &[u8]) -> (u16, String) {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut parsed = httparse::Response::new(&mut headers);
    let head_len = match parsed.parse(response) {
        Ok(httparse::Status::Complete(n)) => n,
        other => panic!("response does not parse: {other:?}"),
    };
    assert_eq!(parsed.version, Some(1));
    let status = parsed.code.expect("status");
    let length: usize = parsed
        .headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case("content-length"))
        .map(|h| {
            std::str::from_utf8(h.value)
                .expect("ASCII")
                .parse()
                .expect("number")
        })
        .expect("Content-Length");
    let body = response.len() - head_len;
    // A HEAD answer announces the body it leaves out.
    assert!(
        body == length || body == 0,
        "Content-Length {length}, body {body}"
    );
    let head = String::from_utf8_lossy(&response[..head_len]).to_ascii_lowercase();
    (status, head)
}

/// Reads a request head line by line, without httparse, and returns the WebSocket key if it
/// is a complete upgrade request.
fn independent_upgrade(head: &[u8]) -> Option<&[u8]> {
    // RFC 9112 section 2.2: a server ignores empty lines before the request line (httparse
    // does, and so may `decide`).
    let mut lines = head
        .split(|&b| b == b'\n')
        .map(|l| l.strip_suffix(b"\r").unwrap_or(l))
        .skip_while(|l| l.is_empty());
    let request_line = lines.next()?;
    let mut words = request_line.split(|&b| b == b' ');
    let (method, target, version) = (words.next()?, words.next()?, words.next()?);
    let path = target.split(|&b| b == b'?').next()?;
    if method != b"GET" || path != WS_PATH.as_bytes() || version != b"HTTP/1.1" {
        return None;
    }
    let (mut upgrade, mut connection, mut versions, mut keys) =
        (false, false, Vec::new(), Vec::new());
    for line in lines.take_while(|l| !l.is_empty()) {
        let colon = line.iter().position(|&b| b == b':')?;
        let (name, value) = (&line[..colon], line[colon + 1..].trim_ascii());
        let tokens = || value.split(|&b| b == b',').map(<[u8]>::trim_ascii);
        if name.eq_ignore_ascii_case(b"upgrade") {
            upgrade |= tokens().any(|t| t.eq_ignore_ascii_case(b"websocket"));
        } else if name.eq_ignore_ascii_case(b"connection") {
            connection |= tokens().any(|t| t.eq_ignore_ascii_case(b"upgrade"));
        } else if name.eq_ignore_ascii_case(b"sec-websocket-version") {
            versions.push(value);
        } else if name.eq_ignore_ascii_case(b"sec-websocket-key") {
            keys.push(value);
        }
    }
    let key = match (versions.as_slice(), keys.as_slice()) {
        ([b"13"], [key]) => *key,
        _ => return None,
    };
    let decoded = STANDARD.decode(key).ok()?;
    (upgrade && connection && decoded.len() == 16).then_some(key)
}

/// Feeds `request` to a `WsConn` in reads of `sizes` (cycled) until it answers, and checks
/// that the answer to the first request is the one `decide` gave for all the bytes at once.
fn agrees_in_reads(
    request: &[u8],
    sizes: &[usize],
    site: &Site<'_>,
    trusted: bool,
    decision: &Decision,
) {
    let mut conn = WsConn::new();
    let mut rest = request;
    let mut step = Step::NeedMore;
    for &size in sizes.iter().cycle() {
        if rest.is_empty() || step != Step::NeedMore {
            break;
        }
        let (read, tail) = rest.split_at(size.min(rest.len()));
        rest = tail;
        step = conn.request(read, site, PEER, trusted);
    }
    let tx = conn.tx();
    match (decision, step) {
        (Decision::NeedMore, Step::NeedMore) => {}
        (
            Decision::Upgrade {
                response,
                client,
                consumed,
            },
            Step::Upgraded { client: c },
        ) => {
            assert_eq!((tx, *client), (&response[..], c));
            // What followed the head waits as WebSocket input.
            let after = [conn.rx(), rest].concat();
            assert_eq!(after, request[*consumed..]);
        }
        // Requests pipelined behind the first may be answered in the same call, whatever
        // they get; the first answer comes first.
        (
            Decision::Respond {
                response, close, ..
            },
            step,
        ) if step != Step::NeedMore => {
            assert!(tx.starts_with(response), "first response differs");
            if *close {
                assert_eq!((step, tx), (Step::Served { close: true }, &response[..]));
            }
        }
        (Decision::Reject { status, response }, Step::Refused { status: s }) => {
            assert_eq!((tx, *status), (&response[..], s));
        }
        (decision, step) => panic!("in reads {step:?}, at once {decision:?}"),
    }
}
