//! Throwaway certificates for `--tls` runs, made by the `openssl` command line in a fresh temp
//! dir: a CA, and an ECDSA P-256 server certificate it signs for 127.0.0.1 and localhost,
//! which chatd, redis-server and nats-server all present in the same run. The keys live only
//! as long as the `Pki` (Drop removes the directory); they are never written anywhere else.

use std::path::{Path, PathBuf};
use std::process::Command;

/// Lifetime of the throwaway certificates: a run never takes a day.
const DAYS: &str = "2";

/// What the server certificate is good for. webpki wants a v3 end-entity certificate whose
/// names are in subjectAltName; the common name is not read.
const SERVER_EXT: &str = "\
basicConstraints=critical,CA:FALSE
keyUsage=critical,digitalSignature
extendedKeyUsage=serverAuth
subjectAltName=IP:127.0.0.1,DNS:localhost
";

pub struct Pki {
    dir: PathBuf,
    /// The CA certificate clients trust.
    pub ca: PathBuf,
    /// The server's certificate and key (PEM, the key PKCS#8).
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl Pki {
    /// Makes the CA and the server certificate.
    ///
    /// # Errors
    /// `openssl` is missing or failed (its stderr is in the message).
    pub fn new() -> Result<Pki, String> {
        let dir = crate::daemon::fresh_dir()?;
        let pki = Pki {
            ca: dir.join("ca.pem"),
            cert: dir.join("server.pem"),
            key: dir.join("server.key"),
            dir,
        };
        std::fs::write(pki.dir.join("server.ext"), SERVER_EXT)
            .map_err(|e| format!("{}: {e}", pki.dir.display()))?;
        let p256 = [
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
        ];
        pki.openssl(
            &["req", "-x509"],
            &p256,
            &[
                "-keyout",
                "ca.key",
                "-out",
                "ca.pem",
                "-days",
                DAYS,
                "-subj",
                "/CN=chat-bench throwaway CA",
            ],
        )?;
        pki.openssl(
            &["req"],
            &p256,
            &[
                "-keyout",
                "server.key",
                "-out",
                "server.csr",
                "-subj",
                "/CN=127.0.0.1",
            ],
        )?;
        pki.openssl(
            &["x509", "-req"],
            &[],
            &[
                "-in",
                "server.csr",
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-days",
                DAYS,
                "-extfile",
                "server.ext",
                "-out",
                "server.pem",
            ],
        )?;
        Ok(pki)
    }

    /// The directory the certificates are in (for the peers' config files).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn openssl(&self, cmd: &[&str], key: &[&str], rest: &[&str]) -> Result<(), String> {
        let out = Command::new("openssl")
            .args(cmd)
            .args(key)
            .args(rest)
            .current_dir(&self.dir)
            .output()
            .map_err(|e| {
                format!("cannot run openssl ({e}): --tls needs it (apt-get install openssl)")
            })?;
        if out.status.success() {
            Ok(())
        } else {
            let err = String::from_utf8_lossy(&out.stderr);
            Err(format!("openssl {} failed: {}", cmd.join(" "), err.trim()))
        }
    }
}

impl Drop for Pki {
    fn drop(&mut self) {
        // Only the directory `new` created, keys and all.
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tls::TlsClient;
    use crate::wire::Kind;
    use chatd::tls::server::{CertFiles, ServerTls};

    /// Runs a handshake between `client` and a chatd server configuration in memory.
    fn handshake(client: &TlsClient, server: &ServerTls) -> Result<(), String> {
        let mut c = client.connection().map_err(|e| e.to_string())?;
        let mut s = rustls::ServerConnection::new(std::sync::Arc::clone(&server.config))
            .map_err(|e| e.to_string())?;
        for _ in 0..10 {
            let mut wire = Vec::new();
            while c.wants_write() {
                c.write_tls(&mut wire).map_err(|e| e.to_string())?;
            }
            s.read_tls(&mut wire.as_slice())
                .map_err(|e| e.to_string())?;
            s.process_new_packets().map_err(|e| e.to_string())?;
            let mut back = Vec::new();
            while s.wants_write() {
                s.write_tls(&mut back).map_err(|e| e.to_string())?;
            }
            c.read_tls(&mut back.as_slice())
                .map_err(|e| e.to_string())?;
            c.process_new_packets().map_err(|e| e.to_string())?;
            if !c.is_handshaking() && !s.is_handshaking() {
                return Ok(());
            }
        }
        Err("the handshake did not finish".into())
    }

    #[test]
    fn the_throwaway_certificate_passes_a_verifying_handshake_and_leaves_with_the_pki() {
        if Command::new("openssl").arg("version").output().is_err() {
            eprintln!("SKIPPED: no openssl command on this machine (apt-get install openssl)");
            return;
        }
        let pki = Pki::new().expect("openssl makes the PKI");
        let dir = pki.dir().to_path_buf();
        let files = CertFiles {
            cert: pki.cert.clone(),
            key: pki.key.clone(),
        };
        let server = ServerTls::load(&files).expect("chatd takes the openssl key");
        for kind in [Kind::Chatd, Kind::Redis] {
            let client = TlsClient::new(kind, &pki.ca).expect("the CA loads");
            handshake(&client, &server).expect("the CA vouches for 127.0.0.1");
        }
        let other = Pki::new().expect("a second PKI");
        let stranger = TlsClient::new(Kind::Chatd, &other.ca).expect("the CA loads");
        assert!(
            handshake(&stranger, &server).is_err(),
            "another run's CA is not trusted"
        );
        drop(pki);
        assert!(!dir.exists(), "the keys are removed with the PKI");
    }
}
