//! Whose page is asking, and for whom: the listener's own origin (scheme and Host of the
//! request), the `Origin` a browser sends with a WebSocket upgrade, and the client's address.
//!
//! `X-Forwarded-Proto`, `X-Forwarded-Host` and `X-Forwarded-For` are believed only when the
//! caller says the peer is a trusted reverse proxy, and then only their last value, the one
//! that proxy wrote: anything to its left came from the client. A Host is checked
//! character by character before it is used anywhere, since it ends up in a response header
//! (the Content-Security-Policy). Nothing here allocates except the WebSocket URL.

use std::net::{IpAddr, SocketAddr};

use httparse::Header;

use super::http::{last_list_item, single_value};

/// The longest Host (or forwarded host) accepted.
const MAX_AUTHORITY: usize = 255;

/// A web origin: scheme, host and port (the scheme's default when none is written), compared
/// without regard to ASCII case.
#[derive(Debug, Clone, Copy)]
pub struct Origin<'a> {
    scheme: &'a str,
    host: &'a str,
    port: u16,
}

impl<'a> Origin<'a> {
    /// Parses an `Origin` header value or an allowed-origin setting: `scheme://host[:port]`,
    /// a trailing `/` tolerated. `null` and anything else that is not an origin give `None`.
    pub fn parse(text: &'a str) -> Option<Origin<'a>> {
        let (scheme, rest) = text.split_once("://")?;
        let authority = rest.strip_suffix('/').unwrap_or(rest);
        Origin::of(scheme, authority)
    }

    /// The origin of a page served over `scheme` (`http` or `https`) at `authority`.
    pub fn of(scheme: &'a str, authority: &'a str) -> Option<Origin<'a>> {
        let default_port = if scheme.eq_ignore_ascii_case("https") {
            443
        } else if scheme.eq_ignore_ascii_case("http") {
            80
        } else {
            return None;
        };
        let (host, port) = split_authority(authority)?;
        Some(Origin {
            scheme,
            host,
            port: port.unwrap_or(default_port),
        })
    }

    pub fn same(&self, other: &Origin<'_>) -> bool {
        self.scheme.eq_ignore_ascii_case(other.scheme)
            && self.host.eq_ignore_ascii_case(other.host)
            && self.port == other.port
    }
}

/// Splits `host[:port]` after checking every character: a DNS name or IPv4 address
/// (letters, digits, `.`, `-`, `_`) or a bracketed IPv6 address, then an optional port.
pub fn split_authority(authority: &str) -> Option<(&str, Option<u16>)> {
    if authority.is_empty() || authority.len() > MAX_AUTHORITY {
        return None;
    }
    let (host, port) = if authority.starts_with('[') {
        let end = authority.find(']')?;
        let (host, rest) = authority.split_at(end + 1);
        let inner = host.get(1..host.len() - 1)?;
        let ipv6_char = |c: char| c.is_ascii_hexdigit() || c == ':' || c == '.';
        if inner.is_empty() || !inner.chars().all(ipv6_char) {
            return None;
        }
        (host, rest)
    } else {
        let end = authority.find(':').unwrap_or(authority.len());
        let (host, rest) = authority.split_at(end);
        let name_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_');
        if host.is_empty() || !host.chars().all(name_char) {
            return None;
        }
        (host, rest)
    };
    let port = match port.strip_prefix(':') {
        None if port.is_empty() => None,
        None => return None,
        Some(digits) => {
            if digits.is_empty() || digits.len() > 5 || !digits.bytes().all(|b| b.is_ascii_digit())
            {
                return None;
            }
            Some(digits.parse().ok()?)
        }
    };
    Some((host, port))
}

/// Where the page was served from, as the browser saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Own<'a> {
    /// Served over TLS (directly, or to the trusted proxy's client).
    pub tls: bool,
    /// The checked Host (or forwarded host): `host[:port]`.
    pub authority: &'a str,
}

impl<'a> Own<'a> {
    /// The listener's own origin for a request: its Host and whether the listener is TLS, or,
    /// from a trusted proxy, the proxy's `X-Forwarded-Host` and `X-Forwarded-Proto` where it
    /// sent valid ones. `None` if the request has no single valid Host.
    pub fn of(
        headers: &'a [Header<'a>],
        listener_tls: bool,
        trusted_proxy: bool,
    ) -> Option<Own<'a>> {
        let host = single_value(headers, "host")?;
        let mut own = Own {
            tls: listener_tls,
            authority: checked_authority(host)?,
        };
        if trusted_proxy {
            if let Some(host) =
                last_list_item(headers, "x-forwarded-host").and_then(checked_authority)
            {
                own.authority = host;
            }
            match last_list_item(headers, "x-forwarded-proto") {
                Some(proto) if proto.eq_ignore_ascii_case(b"https") => own.tls = true,
                Some(proto) if proto.eq_ignore_ascii_case(b"http") => own.tls = false,
                _ => {}
            }
        }
        Some(own)
    }

    pub fn origin(&self) -> Option<Origin<'a>> {
        Origin::of(if self.tls { "https" } else { "http" }, self.authority)
    }

    /// The WebSocket URL of this listener, for `connect-src`; `None` for an IPv6 host, which
    /// a CSP source expression cannot name.
    pub fn ws_url(&self, path: &str) -> Option<String> {
        if self.authority.starts_with('[') {
            return None;
        }
        let scheme = if self.tls { "wss" } else { "ws" };
        Some(format!("{scheme}://{}{path}", self.authority))
    }
}

fn checked_authority(value: &[u8]) -> Option<&str> {
    let text = std::str::from_utf8(value).ok()?;
    split_authority(text).map(|_| text)
}

/// Whether an upgrade may proceed: no `Origin` (not a browser), the page's own origin, or one
/// of `allowed` (settings that do not parse as origins match nothing).
pub fn allowed(origin: Option<&[u8]>, own: &Own<'_>, allowed: &[String]) -> bool {
    let Some(origin) = origin else {
        return true;
    };
    let Some(origin) = std::str::from_utf8(origin).ok().and_then(Origin::parse) else {
        return false;
    };
    own.origin().is_some_and(|own| own.same(&origin))
        || allowed
            .iter()
            .filter_map(|a| Origin::parse(a))
            .any(|a| a.same(&origin))
}

/// The client's address: the peer's, or from a trusted proxy the last `X-Forwarded-For`
/// entry (an address, optionally with a port), falling back to the peer's when it is missing
/// or unreadable.
pub fn client_addr(headers: &[Header<'_>], peer: IpAddr, trusted_proxy: bool) -> IpAddr {
    if !trusted_proxy {
        return peer;
    }
    let Some(text) =
        last_list_item(headers, "x-forwarded-for").and_then(|v| std::str::from_utf8(v).ok())
    else {
        return peer;
    };
    text.parse::<IpAddr>()
        .or_else(|_| text.parse::<SocketAddr>().map(|s| s.ip()))
        .or_else(|_| {
            text.trim_start_matches('[')
                .trim_end_matches(']')
                .parse::<IpAddr>()
        })
        .unwrap_or(peer)
}
