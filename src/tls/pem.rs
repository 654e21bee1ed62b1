//! Reading a certificate chain and its private key from PEM files, with errors that name the
//! file and say what is wrong with it.

use std::fmt;
use std::path::{Path, PathBuf};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// A certificate or key file that cannot be used, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PemError {
    pub path: PathBuf,
    pub reason: String,
}

impl fmt::Display for PemError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path.display(), self.reason)
    }
}

impl std::error::Error for PemError {}

fn error(path: &Path, reason: impl Into<String>) -> PemError {
    PemError {
        path: path.to_path_buf(),
        reason: reason.into(),
    }
}

/// Explains a PEM reading error in words for an operator.
fn describe(e: &rustls::pki_types::pem::Error, what: &str) -> String {
    use rustls::pki_types::pem::Error;
    match e {
        Error::Io(io) => format!("cannot read it: {io}"),
        Error::NoItemsFound => format!("no {what} in it (expected a PEM file)"),
        other => format!("not a valid PEM file: {other}"),
    }
}

/// The certificate chain in `path`, leaf first.
///
/// # Errors
/// The file cannot be read, is not PEM, or holds no certificate.
pub fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, PemError> {
    let iter = CertificateDer::pem_file_iter(path)
        .map_err(|e| error(path, describe(&e, "certificate")))?;
    let certs = iter
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| error(path, describe(&e, "certificate")))?;
    if certs.is_empty() {
        return Err(error(
            path,
            "no certificate in it (expected -----BEGIN CERTIFICATE-----)",
        ));
    }
    Ok(certs)
}

/// The private key in `path`: PKCS#8, SEC1 (EC) or PKCS#1 (RSA).
///
/// # Errors
/// The file cannot be read, is not PEM, or holds no private key.
pub fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, PemError> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| match e {
        rustls::pki_types::pem::Error::NoItemsFound => error(
            path,
            "no private key in it (expected PKCS#8, SEC1 or RSA PEM: -----BEGIN ... PRIVATE KEY-----)",
        ),
        other => error(path, describe(&other, "private key")),
    })
}
