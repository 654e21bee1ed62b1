//! Why a TLS handshake was refused, as one line for a person, carried inside an `io::Error`
//! so that code can tell a refused certificate (never worth retrying) from a refused or
//! dropped connection (worth retrying).
//!
//! [`crate::tls::client::explain`] words the common cases; this file first rewrites what
//! rustls and webpki hand over in their debug form (certificate names, webpki's own errors,
//! signature algorithm ids), so that no line ever shows a Rust debug dump.

use std::fmt;
use std::io;

use rustls::{CertificateError, Error};

use crate::tls::client::explain;

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

/// One line saying why the handshake with `server` (the name verified) failed.
pub fn readable(cause: &Error, server: &str) -> String {
    let untrusted = format!(
        "the certificate of {server} is not signed by a CA we trust: pass --ca-file with the \
         CA (or the server's self-signed certificate)"
    );
    let Error::InvalidCertificate(cert) = cause else {
        return explain(cause, server);
    };
    match cert {
        // webpki tried the trusted roots and none had a key of the certificate's signature
        // algorithm: no trusted CA signed it.
        CertificateError::UnsupportedSignatureAlgorithmContext { .. }
        | CertificateError::UnsupportedSignatureAlgorithmForPublicKeyContext { .. } => untrusted,
        CertificateError::BadSignature => format!(
            "the certificate of {server} has a signature that does not verify (a corrupted or \
             forged certificate, or the wrong --ca-file)"
        ),
        CertificateError::BadEncoding => {
            format!("the certificate of {server} is not a valid certificate (bad encoding)")
        }
        CertificateError::InvalidPurpose | CertificateError::InvalidPurposeContext { .. } => {
            format!(
                "the certificate of {server} is not meant for a TLS server (its extended key \
                 usage lacks serverAuth)"
            )
        }
        CertificateError::Other(other) => {
            // webpki's errors show as their variant name, sometimes followed by fields.
            let text = other.to_string();
            let name = text
                .split(|c: char| !c.is_ascii_alphanumeric())
                .next()
                .unwrap_or_default();
            match name {
                "CaUsedAsEndEntity" => format!(
                    "the certificate of {server} is a CA certificate, which a server cannot \
                     present: give the server a certificate of its own (a self-signed one needs \
                     basicConstraints CA:FALSE)"
                ),
                "UnknownIssuer" => untrusted,
                _ => format!("the certificate of {server} is not acceptable ({name})"),
            }
        }
        _ => explain(&tidy(cause), server),
    }
}

/// `cause` with the certificate's names as a person writes them: webpki hands them over in
/// their debug form (`DnsName("localhost")`, `IpAddress(127.0.0.1)`).
fn tidy(cause: &Error) -> Error {
    match cause {
        Error::InvalidCertificate(CertificateError::NotValidForNameContext {
            expected,
            presented,
        }) => {
            let mut names: Vec<String> = presented.iter().filter_map(|n| plain_name(n)).collect();
            if names.is_empty() {
                names.push("no DNS name or IP address".into());
            }
            Error::InvalidCertificate(CertificateError::NotValidForNameContext {
                expected: expected.clone(),
                presented: names,
            })
        }
        other => other.clone(),
    }
}

/// `localhost` for `DnsName("localhost")`, `127.0.0.1` for `IpAddress(127.0.0.1)`; `None`
/// for names no server is reached by (a directory name).
fn plain_name(debug: &str) -> Option<String> {
    let (kind, rest) = debug.split_once('(')?;
    let inner = rest.strip_suffix(')')?;
    let inner = inner
        .strip_prefix('"')
        .and_then(|i| i.strip_suffix('"'))
        .unwrap_or(inner);
    matches!(kind, "DnsName" | "IpAddress" | "UniformResourceIdentifier").then(|| inner.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls::OtherError;
    use std::sync::Arc;

    #[test]
    fn certificate_names_lose_their_debug_form() {
        assert_eq!(
            plain_name("DnsName(\"localhost\")").as_deref(),
            Some("localhost")
        );
        assert_eq!(
            plain_name("IpAddress(127.0.0.1)").as_deref(),
            Some("127.0.0.1")
        );
        assert_eq!(plain_name("IpAddress(::1)").as_deref(), Some("::1"));
        assert_eq!(plain_name("DirectoryName"), None);
        assert_eq!(plain_name("Unsupported(0x87)"), None);
    }

    #[derive(Debug)]
    struct Webpki(&'static str);

    impl fmt::Display for Webpki {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str(self.0)
        }
    }

    impl std::error::Error for Webpki {}

    fn other(text: &'static str) -> Error {
        Error::InvalidCertificate(CertificateError::Other(OtherError(Arc::new(Webpki(text)))))
    }

    #[test]
    fn no_refusal_reads_as_a_debug_dump() {
        let algorithm = Error::InvalidCertificate(
            CertificateError::UnsupportedSignatureAlgorithmForPublicKeyContext {
                signature_algorithm_id: vec![6, 8, 42],
                public_key_algorithm_id: vec![6, 9, 42],
            },
        );
        let line = readable(&algorithm, "h");
        assert!(line.contains("--ca-file"), "{line}");
        let line = readable(&other("CaUsedAsEndEntity"), "h");
        assert!(line.contains("CA:FALSE"), "{line}");
        let line = readable(&other("TrailingData(Foo { x: 1 })"), "h");
        assert_eq!(
            line,
            "the certificate of h is not acceptable (TrailingData)"
        );
        for cause in [
            algorithm,
            other("CaUsedAsEndEntity"),
            Error::InvalidCertificate(CertificateError::BadSignature),
            Error::InvalidCertificate(CertificateError::InvalidPurpose),
        ] {
            let line = readable(&cause, "h");
            assert!(!line.contains(['{', '[', '"']), "{line}");
            assert!(!line.contains("Context"), "{line}");
        }
    }
}
