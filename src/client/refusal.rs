//! Why a TLS handshake was refused, as one line for a person, carried inside an `io::Error`
//! so that code can tell a refused certificate (never worth retrying) from a refused or
//! dropped connection (worth retrying).
//!
//! The words come from [`crate::tls::client::explain`].

use std::fmt;
use std::io;

use rustls::Error;

/// The handshake failed for a reason that trying again will not fix: the certificate is not
/// trusted or not valid for the name, or the server does not speak TLS (or not chatd's ALPN).
/// It travels inside the `io::Error` that the connect functions return; its `Display` is the
/// one line for a person.
#[derive(Debug)]
pub struct HandshakeError {
    /// One line for a person.
    pub line: String,
    /// What rustls said, for code that wants to branch on it.
    pub cause: Error,
}

impl fmt::Display for HandshakeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.line)
    }
}

impl std::error::Error for HandshakeError {}

/// The handshake failure inside `e`, if `e` is one (and not, say, a refused connection).
pub fn handshake_error(e: &io::Error) -> Option<&HandshakeError> {
    e.get_ref()?.downcast_ref::<HandshakeError>()
}
