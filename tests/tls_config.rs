//! The TLS configuration as operators and users meet it: certificate files loaded and checked,
//! reloaded without dropping the old one on a bad file, ALPN, and handshake failures
//! explained in one readable line. Handshakes run in memory between rustls endpoints.

#[path = "util/pki.rs"]
mod pki;

use std::sync::Arc;

use chatd::tls::client::{client_config, explain, server_name};
use chatd::tls::server::{CertFiles, ServerTls};
use pki::{Leaf, Pki};
use rustls::{ClientConnection, ServerConnection};

fn files(leaf: &Leaf) -> CertFiles {
    CertFiles {
        cert: leaf.cert.clone(),
        key: leaf.key.clone(),
    }
}

/// Runs a handshake between `client` and `server` in memory; the first error either side
/// reports, or the ALPN protocol the server settled on.
fn handshake(
    client: &mut ClientConnection,
    server: &mut ServerConnection,
) -> Result<Option<Vec<u8>>, rustls::Error> {
    for _ in 0..20 {
        let mut wire = Vec::new();
        while client.wants_write() {
            client.write_tls(&mut wire).expect("to memory");
        }
        let mut slice = &wire[..];
        while !slice.is_empty() {
            server.read_tls(&mut slice).expect("from memory");
        }
        server.process_new_packets()?;
        let mut back = Vec::new();
        while server.wants_write() {
            server.write_tls(&mut back).expect("to memory");
        }
        let mut slice = &back[..];
        while !slice.is_empty() {
            client.read_tls(&mut slice).expect("from memory");
        }
        client.process_new_packets()?;
        if !client.is_handshaking() && !server.is_handshaking() {
            return Ok(server.alpn_protocol().map(<[u8]>::to_vec));
        }
    }
    panic!("the handshake did not finish");
}

fn connect(
    tls: &ServerTls,
    ca: &std::path::Path,
    name: &str,
    alpn: bool,
) -> Result<Option<Vec<u8>>, rustls::Error> {
    let mut config = (*client_config(Some(ca)).expect("client config")).clone();
    if !alpn {
        config.alpn_protocols.clear();
    }
    let mut client =
        ClientConnection::new(Arc::new(config), server_name(name).expect("name")).expect("client");
    let mut server = ServerConnection::new(Arc::clone(&tls.config)).expect("server");
    handshake(&mut client, &mut server)
}

#[test]
fn a_chain_and_its_key_load_and_shake_hands_with_and_without_alpn() {
    let tmp = tempfile::tempdir().expect("tmp");
    let pki = Pki::new(tmp.path());
    let leaf = pki.leaf("server", &["localhost", "127.0.0.1"]);
    let tls = ServerTls::load(&files(&leaf)).expect("load");
    let alpn = connect(&tls, &pki.ca_pem, "localhost", true).expect("handshake");
    assert_eq!(alpn.as_deref(), Some(&b"chatd/1"[..]));
    let none = connect(&tls, &pki.ca_pem, "127.0.0.1", false).expect("no ALPN is accepted");
    assert_eq!(none, None);
}

#[test]
fn a_key_of_another_certificate_is_refused_naming_both_files() {
    let tmp = tempfile::tempdir().expect("tmp");
    let pki = Pki::new(tmp.path());
    let (a, b) = (pki.leaf("a", &["localhost"]), pki.leaf("b", &["localhost"]));
    let mixed = CertFiles {
        cert: a.cert.clone(),
        key: b.key.clone(),
    };
    let err = ServerTls::load(&mixed).err().expect("mismatch refused");
    assert!(err.contains("b.key") && err.contains("a.pem"), "{err}");
    assert!(err.contains("does not belong"), "{err}");
}

#[test]
fn unreadable_or_empty_files_are_named_with_the_reason() {
    let tmp = tempfile::tempdir().expect("tmp");
    let pki = Pki::new(tmp.path());
    let leaf = pki.leaf("server", &["localhost"]);
    let missing = CertFiles {
        cert: tmp.path().join("nope.pem"),
        key: leaf.key.clone(),
    };
    let err = ServerTls::load(&missing).err().expect("missing refused");
    assert!(
        err.contains("nope.pem") && err.contains("cannot read"),
        "{err}"
    );
    let junk = tmp.path().join("junk.pem");
    std::fs::write(&junk, "hello\n").expect("write");
    let err = ServerTls::load(&CertFiles {
        cert: junk.clone(),
        key: leaf.key.clone(),
    })
    .err()
    .expect("junk refused");
    assert!(
        err.contains("junk.pem") && err.contains("no certificate"),
        "{err}"
    );
    let err = ServerTls::load(&CertFiles {
        cert: leaf.cert.clone(),
        key: leaf.cert.clone(),
    })
    .err()
    .expect("a certificate is no key");
    assert!(err.contains("no private key"), "{err}");
}

#[test]
fn reload_swaps_the_certificate_and_a_bad_file_keeps_the_old_one() {
    let tmp = tempfile::tempdir().expect("tmp");
    let pki = Pki::new(tmp.path());
    let leaf = pki.leaf("server", &["localhost"]);
    let tls = ServerTls::load(&files(&leaf)).expect("load");
    let first = tls.leaf().expect("leaf");
    // The same paths, new contents: what certbot's renewal does.
    let renewed = pki.leaf("renewed", &["localhost"]);
    std::fs::copy(&renewed.cert, &leaf.cert).expect("copy cert");
    std::fs::copy(&renewed.key, &leaf.key).expect("copy key");
    tls.reload().expect("reload");
    let second = tls.leaf().expect("leaf");
    assert_ne!(first, second);
    assert_eq!(second, pem_der(&renewed.cert));
    connect(&tls, &pki.ca_pem, "localhost", true).expect("handshake with the new one");

    std::fs::write(&leaf.key, "not a key\n").expect("break the key");
    let err = tls.reload().expect_err("bad key refused");
    assert!(err.contains("server.key"), "{err}");
    assert_eq!(
        tls.leaf().expect("leaf"),
        second,
        "the old certificate stays"
    );
    connect(&tls, &pki.ca_pem, "localhost", true).expect("still shakes hands");
}

fn pem_der(path: &std::path::Path) -> Vec<u8> {
    chatd::tls::pem::load_certs(path).expect("certs")[0].to_vec()
}

#[test]
fn handshake_failures_read_as_one_line() {
    let tmp = tempfile::tempdir().expect("tmp");
    let pki = Pki::new(tmp.path());
    let leaf = pki.leaf("server", &["localhost"]);
    let tls = ServerTls::load(&files(&leaf)).expect("load");

    let err = connect(&tls, &pki.ca_pem, "10.0.0.5", true).expect_err("wrong name");
    let line = explain(&err, "10.0.0.5");
    assert!(
        line.contains("certificate for localhost is not valid for 10.0.0.5"),
        "{line}"
    );
    assert!(!line.contains("DnsName") && !line.contains('"'), "{line}");

    let other = tempfile::tempdir().expect("tmp");
    let stranger = Pki::new(other.path());
    let err = connect(&tls, &stranger.ca_pem, "localhost", true).expect_err("unknown CA");
    let line = explain(&err, "localhost");
    assert!(
        line.contains("unknown issuer") && line.contains("--ca-file"),
        "{line}"
    );
    assert!(!line.contains('{'), "no debug dump: {line}");
}
