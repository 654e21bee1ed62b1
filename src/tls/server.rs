//! The server's TLS configuration: one rustls `ServerConfig` for the life of the process,
//! whose certificate can be replaced while it runs.
//!
//! SIGHUP rereads the certificate and key files (on the signal thread, never a reactor),
//! checks that they belong together, and swaps them in whole: handshakes that start after
//! the swap present the new certificate, open sessions keep what they negotiated, and a bad
//! file leaves the old certificate in place.

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

use rustls::ServerConfig;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

use super::pem::{load_certs, load_key};
use super::{ALPN, provider};
use crate::published::Published;

/// Where the certificate chain and its key are read from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// Reads and checks the certificate chain and key named by `files`.
///
/// # Errors
/// A file cannot be read or parsed, the key is of a kind ring cannot sign with, or the key
/// does not belong to the certificate; the message names the file.
pub fn load_certified_key(files: &CertFiles) -> Result<CertifiedKey, String> {
    let certs = load_certs(&files.cert).map_err(|e| e.to_string())?;
    let key = load_key(&files.key).map_err(|e| e.to_string())?;
    CertifiedKey::from_der(certs, key, &provider()).map_err(|e| match e {
        rustls::Error::InconsistentKeys(_) => format!(
            "{}: this key does not belong to the certificate in {}",
            files.key.display(),
            files.cert.display()
        ),
        other => format!("{}: unusable private key: {other}", files.key.display()),
    })
}

/// Hands every handshake the certificate in force when it starts.
struct Reloadable {
    current: Published<CertifiedKey>,
}

impl fmt::Debug for Reloadable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Reloadable")
            .field("generation", &self.current.generation())
            .finish()
    }
}

impl ResolvesServerCert for Reloadable {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.get())
    }
}

/// The server side of TLS: the configuration reactors hand to new connections, and the
/// files it reloads from.
pub struct ServerTls {
    pub config: Arc<ServerConfig>,
    /// The same certificate for the HTTPS listeners: ALPN `http/1.1`, which is what a browser
    /// offers for a WebSocket (it would be refused by a server that knows only `chatd/1`).
    pub web: Arc<ServerConfig>,
    files: CertFiles,
    certs: Arc<Reloadable>,
}

impl ServerTls {
    /// Loads the certificate and key and builds the configurations: TLS 1.3 and 1.2, ALPN
    /// `chatd/1` offered (`http/1.1` for the web listeners; a client that sends no ALPN is
    /// accepted too), no client certificates. Both follow the same reloadable certificate.
    ///
    /// # Errors
    /// As [`load_certified_key`], in words for the operator.
    pub fn load(files: &CertFiles) -> Result<ServerTls, String> {
        let key = load_certified_key(files)?;
        let certs = Arc::new(Reloadable {
            current: Published::new(key),
        });
        let build = |alpn: &[u8]| -> Result<Arc<ServerConfig>, String> {
            let resolver: Arc<dyn ResolvesServerCert> = Arc::clone(&certs) as _;
            let mut config = ServerConfig::builder_with_provider(provider())
                .with_safe_default_protocol_versions()
                .map_err(|e| format!("TLS: {e}"))?
                .with_no_client_auth()
                .with_cert_resolver(resolver);
            config.alpn_protocols = vec![alpn.to_vec()];
            Ok(Arc::new(config))
        };
        Ok(ServerTls {
            config: build(ALPN)?,
            web: build(b"http/1.1")?,
            files: files.clone(),
            certs,
        })
    }

    /// Rereads the files and, if they are good, makes them the certificate for every
    /// handshake from now on.
    ///
    /// # Errors
    /// Why the files were refused; the certificate in force stays.
    pub fn reload(&self) -> Result<(), String> {
        let key = load_certified_key(&self.files)?;
        self.certs.current.publish(key);
        Ok(())
    }

    /// The files the certificate is read from.
    pub fn files(&self) -> &CertFiles {
        &self.files
    }

    /// The DER of the leaf certificate handshakes present now.
    pub fn leaf(&self) -> Option<Vec<u8>> {
        let key = self.certs.current.get();
        key.end_entity_cert().ok().map(|c| c.as_ref().to_vec())
    }
}
