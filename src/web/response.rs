//! HTTP/1.1 responses of the web listener: the page's files, the WebSocket 101, and errors,
//! each with the headers that keep a browser strict (`X-Content-Type-Options: nosniff`,
//! `Referrer-Policy: no-referrer`, and a Content-Security-Policy that allows only the page's
//! own script and style and exactly one WebSocket endpoint).
//!
//! Responses are built whole into one buffer the connection writes out; nothing here reads
//! input, so every value put into a header must already have been checked by the caller
//! (the Host that names the endpoint is, in `origin`).

use std::fmt::Write;

/// The reason phrase for each status the listener sends.
pub fn reason(status: u16) -> &'static str {
    match status {
        101 => "Switching Protocols",
        200 => "OK",
        400 => "Bad Request",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        426 => "Upgrade Required",
        431 => "Request Header Fields Too Large",
        _ => "Error",
    }
}

/// The policy for the page: its own script, style and images, and `connect-src` naming the
/// one WebSocket URL it may open. Without a URL that a policy can name (an IPv6 host, which
/// CSP source expressions cannot spell), `'self'` stands in.
pub fn content_security_policy(ws_url: Option<&str>) -> String {
    let connect = ws_url.unwrap_or("'self'");
    format!(
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
         connect-src {connect}; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    )
}

/// The policy for responses that are not the page: nothing at all may load.
const LOCKED_DOWN: &str = "default-src 'none'; base-uri 'none'; form-action 'none'; \
                           frame-ancestors 'none'";

/// A response head under construction.
pub struct Response {
    head: String,
}

impl Response {
    /// A status line and the headers every response carries.
    pub fn new(status: u16) -> Response {
        let mut head = String::with_capacity(512);
        let _ = write!(head, "HTTP/1.1 {status} {}\r\n", reason(status));
        let mut response = Response { head };
        if status != 101 {
            response = response
                .header("X-Content-Type-Options", "nosniff")
                .header("Referrer-Policy", "no-referrer");
        }
        response
    }

    /// Adds a header. Names and values come from this crate or were validated by the caller.
    pub fn header(mut self, name: &str, value: &str) -> Response {
        let _ = write!(self.head, "{name}: {value}\r\n");
        self
    }

    /// Ends the head with no body (the 101).
    pub fn finish(mut self) -> Vec<u8> {
        self.head.push_str("\r\n");
        self.head.into_bytes()
    }

    /// Ends the head with `Content-Type` and `Content-Length` for `body`, then the body itself
    /// unless this answers a HEAD request.
    pub fn body(self, content_type: &str, body: &[u8], head_only: bool) -> Vec<u8> {
        let length = body.len().to_string();
        let mut out = self
            .header("Content-Type", content_type)
            .header("Content-Length", &length)
            .finish();
        if !head_only {
            out.extend_from_slice(body);
        }
        out
    }
}

/// An error response: a one-line text body, `Connection: close`, no caching, nothing
/// loadable; `extra` adds headers (`Allow`, `Sec-WebSocket-Version`).
pub fn error(status: u16, extra: &[(&str, &str)], head_only: bool) -> Vec<u8> {
    let mut response = Response::new(status)
        .header("Content-Security-Policy", LOCKED_DOWN)
        .header("Cache-Control", "no-store")
        .header("Connection", "close");
    for (name, value) in extra {
        response = response.header(name, value);
    }
    let body = format!("{status} {}\n", reason(status));
    response.body("text/plain; charset=utf-8", body.as_bytes(), head_only)
}
