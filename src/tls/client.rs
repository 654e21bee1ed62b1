//! The client's TLS configuration (whom to trust, which protocol to ask for) and the
//! explanation of a failed handshake in one readable line.

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::ServerName;
use rustls::{CertificateError, ClientConfig, RootCertStore};

use super::pem::load_certs;
use super::{ALPN, provider};

/// A client configuration that trusts the certificates in `ca_file` (a CA or the server's
/// own self-signed certificate), or the system's roots when there is none.
///
/// # Errors
/// The CA file cannot be read or holds nothing usable, or the system has no roots.
pub fn client_config(ca_file: Option<&Path>) -> Result<Arc<ClientConfig>, String> {
    let mut roots = RootCertStore::empty();
    match ca_file {
        Some(path) => {
            for cert in load_certs(path).map_err(|e| e.to_string())? {
                roots
                    .add(cert)
                    .map_err(|e| format!("{}: not a usable CA certificate: {e}", path.display()))?;
            }
        }
        None => {
            let found = rustls_native_certs::load_native_certs();
            roots.add_parsable_certificates(found.certs);
            if roots.is_empty() {
                return Err(
                    "no trusted root certificates found on this system: pass --ca-file".into(),
                );
            }
        }
    }
    let mut config = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS: {e}"))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![ALPN.to_vec()];
    Ok(Arc::new(config))
}

/// The name to verify the server's certificate against.
///
/// # Errors
/// `name` is neither a DNS name nor an IP address.
pub fn server_name(name: &str) -> Result<ServerName<'static>, String> {
    ServerName::try_from(name.to_string())
        .map_err(|_| format!("'{name}' is not a valid server name for TLS"))
}

/// One line saying why a TLS handshake with `server` failed, for a person.
pub fn explain(e: &rustls::Error, server: &str) -> String {
    use rustls::Error;
    match e {
        Error::InvalidCertificate(cert) => explain_certificate(cert, server),
        Error::NoApplicationProtocol => {
            format!("{server} speaks TLS but not chatd/1 (wrong port?)")
        }
        Error::AlertReceived(alert) => {
            format!("{server} refused the TLS handshake (alert: {alert:?})")
        }
        Error::InvalidMessage(_) | Error::InappropriateMessage { .. } => {
            format!("{server} did not answer with TLS (is it a plain chatd port? drop --tls)")
        }
        Error::PeerIncompatible(why) => {
            format!("{server} has no TLS version or cipher in common with us ({why:?})")
        }
        other => format!("TLS with {server} failed: {other}"),
    }
}

fn explain_certificate(e: &CertificateError, server: &str) -> String {
    match e {
        CertificateError::UnknownIssuer => format!(
            "the certificate of {server} has an unknown issuer: pass --ca-file with the CA \
             (or the server's self-signed certificate)"
        ),
        CertificateError::NotValidForNameContext { presented, .. } => format!(
            "certificate for {} is not valid for {server} (use --server-name to verify \
             another name)",
            presented.join(", ")
        ),
        CertificateError::NotValidForName => {
            format!("the certificate of {server} is not valid for that name")
        }
        CertificateError::Expired | CertificateError::ExpiredContext { .. } => {
            format!("the certificate of {server} has expired")
        }
        CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => {
            format!("the certificate of {server} is not valid yet (check the clocks)")
        }
        other => format!("the certificate of {server} is not acceptable: {other}"),
    }
}
