//! One HTTP/1.1 request head on the web listener, and what to do about it: upgrade `GET /ws`
//! to a WebSocket, serve a file of the embedded web client, or refuse.
//!
//! [`decide`] is a pure function of the bytes received so far and the listener's settings,
//! so the reactor, tests and the fuzzer drive it alike. The head is parsed with `httparse`
//! into a fixed array of headers, never more than [`MAX_HEAD`] bytes of it (431 past that),
//! and no request body is ever read: a request announcing one is refused, so the byte
//! stream can never fall out of step. It must never do I/O, never allocate in proportion to
//! input, and never trust a header it has not checked; every refusal closes the connection.

use std::net::IpAddr;

use httparse::Header;

use super::assets::{self, Asset};
use super::origin::{self, Own};
use super::response::{self, Response, content_security_policy};
use super::upgrade::{self, Refusal};

/// The largest request head accepted (request line and headers).
pub const MAX_HEAD: usize = 8 * 1024;

/// The most header lines a request may carry; browsers send about fifteen.
const MAX_HEADERS: usize = 32;

/// The WebSocket endpoint's path.
pub const WS_PATH: &str = "/ws";

/// What a listener serves and whom it lets in.
#[derive(Debug, Clone, Copy)]
pub struct Site<'a> {
    /// The embedded files of the web client.
    pub assets: &'a [Asset<'a>],
    /// Origins, besides the page's own, whose pages may open the WebSocket
    /// (`scheme://host[:port]`).
    pub allowed_origins: &'a [String],
    /// The listener speaks TLS: the page is `https://`, its socket `wss://`.
    pub tls: bool,
}

/// What to do with the bytes received so far.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// The head is not complete yet (and still within [`MAX_HEAD`]).
    NeedMore,
    /// A valid WebSocket upgrade: send `response` (the 101) and speak WebSocket from byte
    /// `consumed` of the input on. `client` is the address to count the connection under.
    Upgrade {
        response: Vec<u8>,
        client: IpAddr,
        consumed: usize,
    },
    /// A file: send `response`; then close if `close`, else the next request starts at byte
    /// `consumed`.
    Respond {
        response: Vec<u8>,
        close: bool,
        consumed: usize,
    },
    /// Refused with `status`: send `response` (which says `Connection: close`), then close.
    Reject { status: u16, response: Vec<u8> },
}

/// Decides what to do with `request`, the bytes a client sent on the web listener so far.
/// `peer` is the socket's remote address; `trusted_proxy` says that peer is a reverse proxy
/// whose `X-Forwarded-*` headers are to be believed.
pub fn decide(request: &[u8], site: &Site<'_>, peer: IpAddr, trusted_proxy: bool) -> Decision {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut parsed = httparse::Request::new(&mut headers);
    let consumed = match parsed.parse(request) {
        Ok(httparse::Status::Complete(n)) if n <= MAX_HEAD => n,
        Ok(httparse::Status::Partial) if request.len() < MAX_HEAD => return Decision::NeedMore,
        Ok(_) | Err(httparse::Error::TooManyHeaders) => return reject(431, &[], false),
        Err(_) => return reject(400, &[], false),
    };
    let head = Head {
        method: parsed.method.unwrap_or_default(),
        target: parsed.path.unwrap_or_default(),
        http11: parsed.version == Some(1),
        headers: parsed.headers,
        consumed,
    };
    route(&head, site, peer, trusted_proxy)
}

/// A parsed request head.
struct Head<'h, 'b> {
    method: &'b str,
    target: &'b str,
    http11: bool,
    headers: &'h [Header<'b>],
    consumed: usize,
}

fn route(head: &Head<'_, '_>, site: &Site<'_>, peer: IpAddr, trusted_proxy: bool) -> Decision {
    let head_only = head.method == "HEAD";
    let headers = head.headers;
    if announces_body(headers) {
        return reject(400, &[], head_only);
    }
    let path = head
        .target
        .split_once('?')
        .map_or(head.target, |(path, _)| path);
    let is_ws = path == WS_PATH;
    if is_ws && head.method != "GET" {
        return reject(405, &[("Allow", "GET")], head_only);
    }
    if !matches!(head.method, "GET" | "HEAD") {
        return reject(405, &[("Allow", "GET, HEAD")], head_only);
    }
    if !path.starts_with('/') {
        return reject(400, &[], head_only);
    }
    let Some(own) = Own::of(headers, site.tls, trusted_proxy) else {
        return reject(400, &[], head_only);
    };
    if is_ws {
        return upgrade(head, &own, site, peer, trusted_proxy);
    }
    let Some(asset) = assets::find(site.assets, path) else {
        return reject(404, &[], head_only);
    };
    let close = !head.http11 || has_token(headers, "connection", b"close");
    let csp = content_security_policy(own.ws_url(WS_PATH).as_deref());
    let mut response = Response::new(200)
        .header("Content-Security-Policy", &csp)
        .header("Cache-Control", "no-cache");
    if close {
        response = response.header("Connection", "close");
    }
    Decision::Respond {
        response: response.body(asset.content_type, asset.bytes, head_only),
        close,
        consumed: head.consumed,
    }
}

/// `GET /ws`: the 101, or why not.
fn upgrade(
    head: &Head<'_, '_>,
    own: &Own<'_>,
    site: &Site<'_>,
    peer: IpAddr,
    trusted_proxy: bool,
) -> Decision {
    // RFC 6455 §4.1: the opening handshake is an HTTP/1.1 request.
    if !head.http11 {
        return reject(400, &[], false);
    }
    let key = match upgrade::check(head.headers) {
        Ok(key) => key,
        Err(Refusal::BadRequest(_)) => return reject(400, &[], false),
        Err(Refusal::Version) => {
            return reject(
                426,
                &[
                    ("Upgrade", "websocket"),
                    ("Sec-WebSocket-Version", upgrade::VERSION),
                ],
                false,
            );
        }
    };
    let mut origins = header_values(head.headers, "origin");
    let origin = origins.next();
    if origins.next().is_some() {
        return reject(400, &[], false);
    }
    if !origin::allowed(origin, own, site.allowed_origins) {
        return reject(403, &[], false);
    }
    Decision::Upgrade {
        response: upgrade::switching_protocols(key),
        client: origin::client_addr(head.headers, peer, trusted_proxy),
        consumed: head.consumed,
    }
}

fn reject(status: u16, extra: &[(&str, &str)], head_only: bool) -> Decision {
    Decision::Reject {
        status,
        response: response::error(status, extra, head_only),
    }
}

/// A body follows the head: it is never read, so such a request is refused.
fn announces_body(headers: &[Header<'_>]) -> bool {
    header_values(headers, "transfer-encoding").next().is_some()
        || header_values(headers, "content-length").any(|v| v.trim_ascii() != b"0")
}

/// The values of every header called `name` (ASCII case-insensitive).
pub fn header_values<'h, 'b>(
    headers: &'h [Header<'b>],
    name: &'h str,
) -> impl Iterator<Item = &'b [u8]> + 'h {
    headers
        .iter()
        .filter(move |h| h.name.eq_ignore_ascii_case(name))
        .map(|h| h.value)
}

/// The value of the only header called `name`, trimmed; `None` if there is none or several.
pub fn single_value<'b>(headers: &[Header<'b>], name: &str) -> Option<&'b [u8]> {
    let mut values = header_values(headers, name);
    let value = values.next()?;
    match values.next() {
        Some(_) => None,
        None => Some(value.trim_ascii()),
    }
}

/// The comma-separated items of every header called `name`, trimmed, empty ones skipped.
fn list_items<'h, 'b>(
    headers: &'h [Header<'b>],
    name: &'h str,
) -> impl Iterator<Item = &'b [u8]> + 'h {
    header_values(headers, name)
        .flat_map(|value| value.split(|&b| b == b','))
        .map(<[u8]>::trim_ascii)
        .filter(|item| !item.is_empty())
}

/// Whether a list header called `name` holds `token` (ASCII case-insensitive).
pub fn has_token(headers: &[Header<'_>], name: &str, token: &[u8]) -> bool {
    list_items(headers, name).any(|item| item.eq_ignore_ascii_case(token))
}

/// The last item of the list headers called `name`: the one the nearest proxy appended.
pub fn last_list_item<'b>(headers: &[Header<'b>], name: &str) -> Option<&'b [u8]> {
    list_items(headers, name).last()
}
