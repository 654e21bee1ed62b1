//! The client's TLS configuration: whom to trust, which protocol to ask for, and which name
//! to verify. Why a handshake failed is put in words by `super::explain`.

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::ServerName;
use rustls::{ClientConfig, RootCertStore};

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

pub use super::explain::explain;
