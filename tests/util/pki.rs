//! Throwaway certificates for the TLS tests, made fresh by rcgen in a temporary directory:
//! a CA, and leaf certificates it signs for the names a test asks for. Never committed, never
//! real: each key lives only as long as the test's temp dir.

#![allow(dead_code)]

use std::path::{Path, PathBuf};

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};

/// A CA written to `dir/ca.pem`, able to sign leaf certificates.
pub struct Pki {
    pub dir: PathBuf,
    pub ca_pem: PathBuf,
    ca: CertifiedIssuer<'static, KeyPair>,
}

/// A leaf certificate and its key, as PEM files.
pub struct Leaf {
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl Pki {
    #[track_caller]
    pub fn new(dir: &Path) -> Pki {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        // A name of its own, so that two test CAs are told apart by name, as real ones are.
        let name = format!("chatd test CA {}", dir.display());
        params.distinguished_name.push(DnType::CommonName, name);
        let key = KeyPair::generate().expect("CA key");
        let ca = CertifiedIssuer::self_signed(params, key).expect("CA certificate");
        let ca_pem = dir.join("ca.pem");
        std::fs::write(&ca_pem, ca.pem()).expect("write ca.pem");
        Pki {
            dir: dir.to_path_buf(),
            ca_pem,
            ca,
        }
    }

    /// A leaf for `names` (DNS names or IP addresses), signed by the CA, written as
    /// `<file>.pem` and `<file>.key` (PKCS#8, ECDSA P-256).
    #[track_caller]
    pub fn leaf(&self, file: &str, names: &[&str]) -> Leaf {
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let mut params = CertificateParams::new(names).expect("leaf params");
        params
            .distinguished_name
            .push(DnType::CommonName, "chatd test server");
        let key = KeyPair::generate().expect("leaf key");
        let cert = params.signed_by(&key, &self.ca).expect("sign leaf");
        let leaf = Leaf {
            cert: self.dir.join(format!("{file}.pem")),
            key: self.dir.join(format!("{file}.key")),
        };
        std::fs::write(&leaf.cert, cert.pem()).expect("write cert");
        std::fs::write(&leaf.key, key.serialize_pem()).expect("write key");
        leaf
    }
}

impl Leaf {
    /// `chatd serve` flags for one TLS listener on a free loopback port with this certificate.
    pub fn serve_flags(&self) -> Vec<String> {
        vec![
            "--tls-listen".into(),
            "127.0.0.1:0".into(),
            "--tls-cert".into(),
            self.cert.display().to_string(),
            "--tls-key".into(),
            self.key.display().to_string(),
        ]
    }
}
