//! Why a TLS handshake failed, in one line for a person: certificate names, webpki's errors
//! and signature algorithms put in words, never a Rust debug dump. Shared by `chat`, the
//! blocking client and the tests; it only formats.

use rustls::{CertificateError, Error};

/// One line saying why a TLS handshake with `server` (the name verified) failed, for a
/// person: never a Rust debug dump.
pub fn explain(cause: &Error, server: &str) -> String {
    let untrusted = format!(
        "the certificate of {server} is not signed by a CA we trust: pass --ca-file with the \
         CA (or the server's self-signed certificate)"
    );
    let Error::InvalidCertificate(cert) = cause else {
        return explain_other(cause, server);
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
        _ => explain_certificate(&tidy_names(cert), server),
    }
}

/// `cert` with the certificate's names as a person writes them: webpki hands them over in
/// their debug form (`DnsName("localhost")`, `IpAddress(127.0.0.1)`).
fn tidy_names(cert: &CertificateError) -> CertificateError {
    match cert {
        CertificateError::NotValidForNameContext {
            expected,
            presented,
        } => {
            let mut names: Vec<String> = presented.iter().filter_map(|n| plain_name(n)).collect();
            if names.is_empty() {
                names.push("no DNS name or IP address".into());
            }
            CertificateError::NotValidForNameContext {
                expected: expected.clone(),
                presented: names,
            }
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

/// The failures that are not about the certificate.
fn explain_other(e: &Error, server: &str) -> String {
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

#[cfg(test)]
mod tests {
    use super::*;
    use rustls::OtherError;
    use std::fmt;
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
        let line = explain(&algorithm, "h");
        assert!(line.contains("--ca-file"), "{line}");
        let line = explain(&other("CaUsedAsEndEntity"), "h");
        assert!(line.contains("CA:FALSE"), "{line}");
        let line = explain(&other("TrailingData(Foo { x: 1 })"), "h");
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
            let line = explain(&cause, "h");
            assert!(!line.contains(['{', '[', '"']), "{line}");
            assert!(!line.contains("Context"), "{line}");
        }
    }
}
