//! The web listener's HTTP side: the upgrade and its refusals, origins, the page's files and
//! their headers, and request limits.

use std::net::{IpAddr, Ipv4Addr};

use super::conn::{Phase, Step};
use super::http::{Decision, MAX_HEAD, Site, decide};
use super::upgrade::accept_key;
use super::{Asset, WsConn};

const ASSETS: [Asset<'static>; 2] = [
    Asset {
        path: "/index.html",
        content_type: "text/html; charset=utf-8",
        bytes: b"<!doctype html><p>fake page",
    },
    Asset {
        path: "/app.js",
        content_type: "text/javascript; charset=utf-8",
        bytes: b"'use strict';",
    },
];

const PEER: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 7));

/// The RFC 6455 §1.3 sample nonce.
const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";

fn site(tls: bool) -> Site<'static> {
    Site {
        assets: &ASSETS,
        allowed_origins: &[],
        tls,
    }
}

/// A request head from a request line and header lines.
fn request(line: &str, headers: &[&str]) -> Vec<u8> {
    let mut text = format!("{line}\r\n");
    for h in headers {
        text.push_str(h);
        text.push_str("\r\n");
    }
    text.push_str("\r\n");
    text.into_bytes()
}

/// A browser's upgrade to 127.0.0.1:8080, plus `extra` headers.
fn upgrade_with(extra: &[&str]) -> Vec<u8> {
    let mut headers = vec![
        "Host: 127.0.0.1:8080",
        "Upgrade: websocket",
        "Connection: keep-alive, Upgrade",
        "Sec-WebSocket-Version: 13",
    ];
    let key = format!("Sec-WebSocket-Key: {KEY}");
    headers.push(&key);
    headers.extend_from_slice(extra);
    request("GET /ws HTTP/1.1", &headers)
}

fn status_of(decision: &Decision) -> u16 {
    match decision {
        Decision::NeedMore => 0,
        Decision::Upgrade { .. } => 101,
        Decision::Respond { .. } => 200,
        Decision::Reject { status, .. } => *status,
    }
}

fn response_text(decision: &Decision) -> String {
    match decision {
        Decision::Upgrade { response, .. }
        | Decision::Respond { response, .. }
        | Decision::Reject { response, .. } => String::from_utf8_lossy(response).into_owned(),
        Decision::NeedMore => String::new(),
    }
}

#[track_caller]
fn status(bytes: &[u8]) -> u16 {
    status_of(&decide(bytes, &site(false), PEER, false))
}

/// RFC 6455 §1.3: the sample nonce's accept value is `s3pPLMBiTxaQ9kYGzzhZRbK+xOo=`.
#[test]
fn accept_key_matches_the_rfc_6455_vector() {
    assert_eq!(accept_key(KEY.as_bytes()), "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
}

#[test]
fn valid_upgrade_gets_101_with_the_accept_key() {
    let bytes = upgrade_with(&[]);
    let decision = decide(&bytes, &site(false), PEER, false);
    let Decision::Upgrade {
        response,
        client,
        consumed,
    } = decision
    else {
        panic!("{decision:?}");
    };
    let text = String::from_utf8(response).unwrap();
    assert!(
        text.starts_with("HTTP/1.1 101 Switching Protocols\r\n"),
        "{text}"
    );
    assert!(text.contains("\r\nUpgrade: websocket\r\n"));
    assert!(text.contains("\r\nConnection: Upgrade\r\n"));
    assert!(text.contains("\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"));
    assert!(text.ends_with("\r\n\r\n"));
    assert_eq!((client, consumed), (PEER, bytes.len()));
}

#[test]
fn permessage_deflate_offer_is_ignored() {
    let bytes =
        upgrade_with(&["Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits"]);
    let decision = decide(&bytes, &site(false), PEER, false);
    assert_eq!(status_of(&decision), 101);
    assert!(
        !response_text(&decision)
            .to_ascii_lowercase()
            .contains("extensions")
    );
}

#[test]
fn upgrade_headers_are_matched_as_case_insensitive_tokens() {
    let bytes = request(
        "GET /ws?room=general HTTP/1.1",
        &[
            "host: 127.0.0.1:8080",
            "UPGRADE: WebSocket",
            "connection: UPGRADE",
            "sec-websocket-version: 13",
            &format!("sec-websocket-key: {KEY}"),
        ],
    );
    assert_eq!(status(&bytes), 101);
}

#[test]
fn version_8_gets_426_naming_13() {
    let bytes = upgrade_with(&[]);
    let text = String::from_utf8(bytes)
        .unwrap()
        .replace("Version: 13", "Version: 8");
    let decision = decide(text.as_bytes(), &site(false), PEER, false);
    assert_eq!(status_of(&decision), 426);
    let response = response_text(&decision);
    assert!(
        response.contains("\r\nSec-WebSocket-Version: 13\r\n"),
        "{response}"
    );
    assert!(response.contains("\r\nConnection: close\r\n"));
}

#[test]
fn upgrade_without_a_required_header_is_400() {
    let full = String::from_utf8(upgrade_with(&[])).unwrap();
    for header in [
        "Upgrade: websocket\r\n",
        "Connection: keep-alive, Upgrade\r\n",
        "Sec-WebSocket-Version: 13\r\n",
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n",
        "Host: 127.0.0.1:8080\r\n",
    ] {
        let without = full.replace(header, "");
        assert_eq!(status(without.as_bytes()), 400, "without {header}");
    }
}

#[test]
fn key_that_is_not_16_bytes_of_base64_is_400() {
    let full = String::from_utf8(upgrade_with(&[])).unwrap();
    for key in [
        "dGhlIHNhbXBsZSBub25j",
        "dGhlIHNhbXBsZSBub25jZQ",
        "!!!!IHNhbXBsZSBub25jZQ==",
        "AAAAAAAAAAAAAAAAAAAAAAAA",
    ] {
        let bad = full.replace(KEY, key);
        assert_eq!(status(bad.as_bytes()), 400, "{key}");
    }
    let twice = upgrade_with(&["Sec-WebSocket-Key: AAAAAAAAAAAAAAAAAAAAAA=="]);
    assert_eq!(status(&twice), 400);
}

#[test]
fn upgrade_over_http_1_0_or_by_another_method_is_refused() {
    let full = String::from_utf8(upgrade_with(&[])).unwrap();
    assert_eq!(status(full.replace("HTTP/1.1", "HTTP/1.0").as_bytes()), 400);
    let head = full.replacen("GET", "HEAD", 1);
    let decision = decide(head.as_bytes(), &site(false), PEER, false);
    assert_eq!(status_of(&decision), 405);
    assert!(response_text(&decision).contains("\r\nAllow: GET\r\n"));
}

#[test]
fn same_origin_upgrade_is_allowed() {
    assert_eq!(
        status(&upgrade_with(&["Origin: http://127.0.0.1:8080"])),
        101
    );
    // Case and a trailing slash do not make another origin.
    assert_eq!(
        status(&upgrade_with(&["Origin: HTTP://127.0.0.1:8080/"])),
        101
    );
}

#[test]
fn other_origin_is_refused_403() {
    for origin in [
        "Origin: http://evil.example",
        "Origin: http://127.0.0.1:8081",
        "Origin: https://127.0.0.1:8080",
        "Origin: null",
        "Origin: garbage",
    ] {
        let decision = decide(&upgrade_with(&[origin]), &site(false), PEER, false);
        assert_eq!(status_of(&decision), 403, "{origin}");
        assert!(response_text(&decision).contains("\r\nConnection: close\r\n"));
    }
}

#[test]
fn origin_on_a_tls_listener_is_https() {
    let bytes = upgrade_with(&["Origin: https://127.0.0.1:8080"]);
    assert_eq!(status_of(&decide(&bytes, &site(true), PEER, false)), 101);
    let bytes = upgrade_with(&["Origin: http://127.0.0.1:8080"]);
    assert_eq!(status_of(&decide(&bytes, &site(true), PEER, false)), 403);
}

#[test]
fn default_ports_are_the_same_origin() {
    let bytes = request(
        "GET /ws HTTP/1.1",
        &[
            "Host: chat.example:443",
            "Origin: https://chat.example",
            "Upgrade: websocket",
            "Connection: Upgrade",
            "Sec-WebSocket-Version: 13",
            &format!("Sec-WebSocket-Key: {KEY}"),
        ],
    );
    assert_eq!(status_of(&decide(&bytes, &site(true), PEER, false)), 101);
}

#[test]
fn allowed_list_admits_its_origins() {
    let allowed = vec![
        "https://app.example".to_string(),
        "not an origin".to_string(),
    ];
    let site = Site {
        allowed_origins: &allowed,
        ..site(false)
    };
    let listed = upgrade_with(&["Origin: https://app.example"]);
    assert_eq!(status_of(&decide(&listed, &site, PEER, false)), 101);
    let unlisted = upgrade_with(&["Origin: https://other.example"]);
    assert_eq!(status_of(&decide(&unlisted, &site, PEER, false)), 403);
}

#[test]
fn no_origin_is_allowed() {
    assert_eq!(status(&upgrade_with(&[])), 101);
}

#[test]
fn two_origin_headers_are_400() {
    let bytes = upgrade_with(&[
        "Origin: http://127.0.0.1:8080",
        "Origin: http://127.0.0.1:8080",
    ]);
    assert_eq!(status(&bytes), 400);
}

#[test]
fn forwarded_headers_are_ignored_unless_the_peer_is_a_trusted_proxy() {
    let bytes = upgrade_with(&[
        "Origin: https://chat.example",
        "X-Forwarded-Proto: https",
        "X-Forwarded-Host: chat.example",
        "X-Forwarded-For: 203.0.113.9, 198.51.100.4",
    ]);
    assert_eq!(status_of(&decide(&bytes, &site(false), PEER, false)), 403);
    match decide(&bytes, &site(false), PEER, true) {
        // The proxy's own entry, the last one, names the client.
        Decision::Upgrade { client, .. } => {
            assert_eq!(client, "198.51.100.4".parse::<IpAddr>().unwrap());
        }
        other => panic!("{other:?}"),
    }
    // Without a trusted proxy the client is the peer, whatever the header says.
    let plain = upgrade_with(&["X-Forwarded-For: 203.0.113.9"]);
    match decide(&plain, &site(false), PEER, false) {
        Decision::Upgrade { client, .. } => assert_eq!(client, PEER),
        other => panic!("{other:?}"),
    }
    // An unreadable forwarded address falls back to the peer's.
    let junk = upgrade_with(&["X-Forwarded-For: unknown"]);
    match decide(&junk, &site(false), PEER, true) {
        Decision::Upgrade { client, .. } => assert_eq!(client, PEER),
        other => panic!("{other:?}"),
    }
}

#[test]
fn request_head_over_8_kib_gets_431() {
    let mut big = b"GET / HTTP/1.1\r\nHost: a\r\nX-Pad: ".to_vec();
    big.resize(MAX_HEAD, b'a');
    assert_eq!(status(&big), 431, "a partial head at the limit");
    big.extend_from_slice(b"\r\n\r\n");
    assert_eq!(status(&big), 431, "a complete head past the limit");
    assert_eq!(
        status(&big[..MAX_HEAD - 1]),
        0,
        "just under the limit waits"
    );
    let many: Vec<String> = (0..40).map(|i| format!("X-H{i}: v")).collect();
    let many: Vec<&str> = many.iter().map(String::as_str).collect();
    assert_eq!(status(&request("GET / HTTP/1.1", &many)), 431);
}

#[test]
fn partial_head_needs_more() {
    let bytes = upgrade_with(&[]);
    for cut in 0..bytes.len() {
        assert_eq!(
            decide(&bytes[..cut], &site(false), PEER, false),
            Decision::NeedMore
        );
    }
}

#[test]
fn malformed_requests_get_400() {
    for bytes in [
        &b"GET\r\n\r\n"[..],
        b"GET / HTTP/1.1\r\nHost a\r\n\r\n",
        b"\x00\x01 / HTTP/1.1\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: evil; script-src *\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
        b"GET http://a/ HTTP/1.1\r\nHost: a\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello",
        b"GET / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n",
    ] {
        let decision = decide(bytes, &site(false), PEER, false);
        assert_eq!(
            status_of(&decision),
            400,
            "{}",
            String::from_utf8_lossy(bytes)
        );
        assert!(response_text(&decision).contains("\r\nConnection: close\r\n"));
    }
}

#[test]
fn other_methods_get_405() {
    let decision = decide(
        &request("POST / HTTP/1.1", &["Host: a"]),
        &site(false),
        PEER,
        false,
    );
    assert_eq!(status_of(&decision), 405);
    assert!(response_text(&decision).contains("\r\nAllow: GET, HEAD\r\n"));
    assert_eq!(
        status(&request("DELETE /app.js HTTP/1.1", &["Host: a"])),
        405
    );
}

#[test]
fn unknown_path_gets_404() {
    let decision = decide(
        &request("GET /../etc/passwd HTTP/1.1", &["Host: a"]),
        &site(false),
        PEER,
        false,
    );
    assert_eq!(status_of(&decision), 404);
    assert!(response_text(&decision).contains("\r\nConnection: close\r\n"));
}

#[test]
fn index_is_served_with_strict_headers() {
    let bytes = request("GET / HTTP/1.1", &["Host: 127.0.0.1:8080"]);
    let decision = decide(&bytes, &site(false), PEER, false);
    let Decision::Respond {
        close, consumed, ..
    } = &decision
    else {
        panic!("{decision:?}");
    };
    assert_eq!((*close, *consumed), (false, bytes.len()));
    let text = response_text(&decision);
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("HTTP/1.1 200 OK\r\n"));
    for header in [
        "Content-Type: text/html; charset=utf-8",
        "Content-Length: 27",
        "Cache-Control: no-cache",
        "X-Content-Type-Options: nosniff",
        "Referrer-Policy: no-referrer",
        "Content-Security-Policy: default-src 'none'; script-src 'self'; style-src 'self'; \
         img-src 'self'; connect-src ws://127.0.0.1:8080/ws; base-uri 'none'; \
         form-action 'none'; frame-ancestors 'none'",
    ] {
        assert!(
            head.contains(&format!("\r\n{header}\r\n")) || head.ends_with(&format!("\r\n{header}")),
            "{header} in {head}"
        );
    }
    assert_eq!(body, "<!doctype html><p>fake page");
}

fn csp_of(bytes: &[u8], site: &Site<'_>, trusted: bool) -> String {
    let text = response_text(&decide(bytes, site, PEER, trusted));
    let line = text
        .lines()
        .find(|l| l.starts_with("Content-Security-Policy:"))
        .unwrap();
    line.to_string()
}

#[test]
fn csp_names_the_exact_ws_or_wss_url() {
    let bytes = request("GET /app.js HTTP/1.1", &["Host: chat.example:8443"]);
    assert!(
        csp_of(&bytes, &site(true), false).contains("; connect-src wss://chat.example:8443/ws;")
    );
    assert!(
        csp_of(&bytes, &site(false), false).contains("; connect-src ws://chat.example:8443/ws;")
    );
    // Behind a trusted proxy that terminated TLS, the browser's URL is wss on its host.
    let proxied = request(
        "GET / HTTP/1.1",
        &[
            "Host: 127.0.0.1:8080",
            "X-Forwarded-Proto: https",
            "X-Forwarded-Host: chat.example",
        ],
    );
    assert!(csp_of(&proxied, &site(false), true).contains("; connect-src wss://chat.example/ws;"));
    assert!(
        csp_of(&proxied, &site(false), false).contains("; connect-src ws://127.0.0.1:8080/ws;")
    );
    // An IPv6 host cannot be spelled in a CSP source: 'self' stands in.
    let v6 = request("GET / HTTP/1.1", &["Host: [::1]:8080"]);
    assert!(csp_of(&v6, &site(false), false).contains("; connect-src 'self';"));
}

#[test]
fn head_request_has_the_headers_and_no_body() {
    let bytes = request("HEAD /app.js HTTP/1.1", &["Host: a"]);
    let text = response_text(&decide(&bytes, &site(false), PEER, false));
    assert!(text.contains("\r\nContent-Length: 13\r\n"), "{text}");
    assert!(text.ends_with("\r\n\r\n"));
}

#[test]
fn connection_close_and_http_1_0_close_after_the_response() {
    let close = request("GET / HTTP/1.1", &["Host: a", "Connection: close"]);
    let old = request("GET / HTTP/1.0", &["Host: a"]);
    for bytes in [close, old] {
        let decision = decide(&bytes, &site(false), PEER, false);
        assert!(
            matches!(decision, Decision::Respond { close: true, .. }),
            "{decision:?}"
        );
        assert!(response_text(&decision).contains("\r\nConnection: close\r\n"));
    }
}

#[test]
fn pipelined_requests_are_answered_in_order() {
    let mut conn = WsConn::new();
    let two = [
        request("GET /app.js HTTP/1.1", &["Host: a"]),
        request("GET / HTTP/1.1", &["Host: a"]),
    ]
    .concat();
    assert_eq!(
        conn.request(&two, &site(false), PEER, false),
        Step::Served { close: false }
    );
    let tx = String::from_utf8_lossy(conn.tx()).into_owned();
    let js = tx.find("'use strict';").unwrap();
    let html = tx.find("fake page").unwrap();
    assert!(js < html);
    assert!(conn.rx().is_empty());
    assert!(
        !conn.wants_input(),
        "reads on before the responses went out"
    );
    conn.drain_tx(usize::MAX);
    assert_eq!(conn.queued_bytes(), 0);
}

#[test]
fn too_many_pipelined_requests_are_answered_in_part_then_closed() {
    let mut conn = WsConn::new();
    let many: Vec<u8> = (0..10)
        .flat_map(|_| request("GET / HTTP/1.1", &["Host: a"]))
        .collect();
    assert_eq!(
        conn.request(&many, &site(false), PEER, false),
        Step::Served { close: true }
    );
    assert_eq!(
        String::from_utf8_lossy(conn.tx())
            .matches("HTTP/1.1 200")
            .count(),
        8
    );
    assert_eq!(conn.phase(), Phase::Served);
}

#[test]
fn a_head_in_pieces_is_kept_until_whole() {
    let bytes = upgrade_with(&[]);
    let mut conn = WsConn::new();
    for piece in bytes[..bytes.len() - 1].chunks(7) {
        assert_eq!(
            conn.request(piece, &site(false), PEER, false),
            Step::NeedMore
        );
    }
    assert_eq!(conn.rx().len(), bytes.len() - 1);
    let step = conn.request(&bytes[bytes.len() - 1..], &site(false), PEER, false);
    assert_eq!(step, Step::Upgraded { client: PEER });
    assert_eq!(conn.phase(), Phase::Open);
    assert!(conn.rx().is_empty());
}

#[test]
fn bytes_after_the_upgrade_wait_as_websocket_input() {
    let frame = crate::fuzzing::ws::masked(super::Opcode::Ping, b"early");
    let bytes = [upgrade_with(&[]), frame.clone()].concat();
    let mut conn = WsConn::new();
    assert_eq!(
        conn.request(&bytes, &site(false), PEER, false),
        Step::Upgraded { client: PEER }
    );
    assert_eq!(conn.rx(), &frame[..]);
}

#[test]
fn a_refusal_ends_http_and_drops_what_follows() {
    let mut conn = WsConn::new();
    let bytes = [
        request("GET /nope HTTP/1.1", &["Host: a"]),
        request("GET / HTTP/1.1", &["Host: a"]),
    ]
    .concat();
    assert_eq!(
        conn.request(&bytes, &site(false), PEER, false),
        Step::Refused { status: 404 }
    );
    assert_eq!(conn.phase(), Phase::Served);
    assert!(conn.rx().is_empty());
    assert!(!conn.wants_input());
    // No WebSocket Close on a connection that never upgraded.
    let before = conn.tx().len();
    conn.finish(1000);
    assert_eq!(conn.tx().len(), before);
}
