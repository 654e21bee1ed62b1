//! TLS configuration: the server's certificate (loaded from PEM files, swapped whole on
//! SIGHUP) and the client's trust anchors, with errors an operator can read.
//!
//! This module only builds rustls configurations and explains rustls errors; it moves no
//! bytes. The TLS transport that runs on the reactors lives in `crate::transport`. Loading
//! reads files and must therefore never run on a reactor thread.

pub mod client;
pub mod explain;
pub mod pem;
pub mod server;

/// The ALPN protocol name chatd advertises: protocol v1 inside TLS.
pub const ALPN: &[u8] = b"chatd/1";

/// The crypto provider every chatd configuration uses: ring, which builds with a C compiler
/// alone and is known to work on FreeBSD.
pub fn provider() -> std::sync::Arc<rustls::crypto::CryptoProvider> {
    std::sync::Arc::new(rustls::crypto::ring::default_provider())
}
