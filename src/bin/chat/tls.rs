//! TLS for `chat`: the trust and the name resolved once from the settings, and the handshake
//! on each new connection, with its failures sorted into the exit statuses. A certificate the
//! client refuses, or a server that does not speak TLS, is [`Exit::Tls`], which the link
//! never retries; a server that is away is as unreachable as without TLS. It never prints
//! anything but one readable line per failure.

use std::io;
use std::net::TcpStream;
use std::sync::Arc;

use chatd::client::{TlsStream, handshake_error};
use chatd::tls::client::{client_config, server_name};
use rustls::ClientConfig;
use rustls::pki_types::ServerName;

use crate::config::TlsSettings;
use crate::conn::HANDSHAKE_TIMEOUT;
use crate::failure::{Exit, Failure, describe};

/// What every connection's handshake needs: whom to trust and which name to verify.
#[derive(Debug, Clone)]
pub struct Secure {
    config: Arc<ClientConfig>,
    name: ServerName<'static>,
}

impl Secure {
    /// Loads the CA file (or the system's roots) and settles the name to verify: the one
    /// given, else the host of `server` (`HOST:PORT`).
    ///
    /// # Errors
    /// A usage failure: the CA file is unreadable or empty, the system has no roots, the
    /// name is not a DNS name or IP address.
    pub fn new(settings: &TlsSettings, server: &str) -> Result<Secure, Failure> {
        let config = client_config(settings.ca_file.as_deref()).map_err(Failure::usage)?;
        let name = settings
            .server_name
            .clone()
            .unwrap_or_else(|| host_of(server).to_string());
        let name = server_name(&name).map_err(|e| {
            Failure::usage(format!(
                "{e}: name the certificate's host with --server-name"
            ))
        })?;
        Ok(Secure { config, name })
    }

    /// Runs the handshake on a fresh connection to `addr`, waiting at most
    /// [`HANDSHAKE_TIMEOUT`] for the server.
    ///
    /// # Errors
    /// [`Exit::Tls`] for a refused certificate or a server without TLS, in one line;
    /// [`Exit::Unreachable`] for a server that does not answer; [`Exit::Lost`] for one
    /// that hangs up during the handshake.
    pub fn handshake(&self, tcp: TcpStream, addr: &str) -> Result<TlsStream, Failure> {
        let lost = |e: &io::Error| {
            Failure::new(
                Exit::Lost,
                format!(
                    "lost the connection to chatd at {addr} during the TLS handshake: {}",
                    describe(e)
                ),
            )
        };
        tcp.set_read_timeout(Some(HANDSHAKE_TIMEOUT))
            .map_err(|e| lost(&e))?;
        TlsStream::connect(tcp, Arc::clone(&self.config), self.name.clone()).map_err(|e| {
            if let Some(refused) = handshake_error(&e) {
                Failure::new(Exit::Tls, format!("TLS with chatd at {addr}: {refused}"))
            } else if matches!(
                e.kind(),
                io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
            ) {
                Failure::new(
                    Exit::Unreachable,
                    format!(
                        "cannot reach chatd at {addr}: no answer to the TLS handshake within {} s",
                        HANDSHAKE_TIMEOUT.as_secs()
                    ),
                )
            } else {
                lost(&e)
            }
        })
    }
}

/// The host of `HOST:PORT` or `[V6]:PORT`, without brackets.
pub fn host_of(server: &str) -> &str {
    let host = server.rsplit_once(':').map_or(server, |(host, _)| host);
    host.strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_name_to_verify_is_the_host_of_the_server() {
        assert_eq!(host_of("chat.example.org:7667"), "chat.example.org");
        assert_eq!(host_of("127.0.0.1:7443"), "127.0.0.1");
        assert_eq!(host_of("[::1]:7443"), "::1");
    }

    #[test]
    fn an_unusable_ca_file_is_a_usage_error_naming_it() {
        let dir = tempfile::tempdir().expect("tmp");
        let missing = dir.path().join("nope.pem");
        let settings = TlsSettings {
            ca_file: Some(missing),
            server_name: None,
        };
        let e = Secure::new(&settings, "localhost:7443").expect_err("no such file");
        assert_eq!(e.exit, Exit::Usage);
        assert!(e.message.contains("nope.pem"), "{}", e.message);
    }
}
