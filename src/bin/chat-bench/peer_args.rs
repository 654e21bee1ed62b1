//! How the peers are told to listen: redis-server's command line and nats-server's, plain,
//! with TLS (the run's throwaway certificate, no client certificates, nothing else changed),
//! or, for nats-server, with its WebSocket listener beside the client port. Pure text in,
//! text out; `server` runs them.

use std::ffi::OsString;
use std::path::Path;

use crate::pki::Pki;

/// Clients one redis-server takes: above the idle scenario's 18,000, under the 20,000 files.
const REDIS_MAX_CLIENTS: &str = "19000";

/// Seconds nats-server gives a client to finish its handshake (its default, half a second, is
/// shorter than a burst of a thousand handshakes on one core takes).
const NATS_TLS_TIMEOUT_SECS: u32 = 10;

/// redis-server's arguments: no persistence, no protection, on `port` (plain) or with only a
/// TLS port (`--port 0`) when `tls` is given.
pub fn redis(port: u16, tls: Option<&Pki>) -> Vec<OsString> {
    let port = port.to_string();
    let mut a: Vec<OsString> = Vec::new();
    let mut push = |words: &[&str]| a.extend(words.iter().map(OsString::from));
    match tls {
        None => push(&["--port", &port]),
        Some(_) => push(&[
            "--port",
            "0",
            "--tls-port",
            &port,
            "--tls-auth-clients",
            "no",
        ]),
    }
    push(&["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]);
    push(&["--maxclients", REDIS_MAX_CLIENTS]);
    push(&["--protected-mode", "no", "--daemonize", "no"]);
    if let Some(pki) = tls {
        for (flag, file) in [
            ("--tls-cert-file", &pki.cert),
            ("--tls-key-file", &pki.key),
            ("--tls-ca-cert-file", &pki.ca),
        ] {
            a.push(flag.into());
            a.push(file.into());
        }
    }
    a
}

/// nats-server's arguments when plain: `-a 127.0.0.1 -p PORT`.
pub fn nats_plain(port: u16) -> Vec<OsString> {
    ["-a", "127.0.0.1", "-p", &port.to_string()]
        .iter()
        .map(OsString::from)
        .collect()
}

/// nats-server's configuration file for TLS on `port` (TLS needs a file: no flag sets the
/// handshake timeout).
pub fn nats_tls_config(port: u16, pki: &Pki) -> String {
    format!(
        "listen: \"127.0.0.1:{port}\"\ntls {{\n  cert_file: \"{}\"\n  key_file: \"{}\"\n  \
         timeout: {NATS_TLS_TIMEOUT_SECS}\n}}\n",
        quoted(&pki.cert),
        quoted(&pki.key)
    )
}

/// nats-server's configuration file for its WebSocket listener on `ws_port`, beside the
/// client port `port` (which it always opens): plain (`no_tls`), no compression (it is
/// negotiated only if the client offers it, and the bench never does), no origin check.
pub fn nats_ws_config(port: u16, ws_port: u16) -> String {
    format!(
        "listen: \"127.0.0.1:{port}\"\nwebsocket {{\n  listen: \"127.0.0.1:{ws_port}\"\n  \
         no_tls: true\n  compression: false\n}}\n"
    )
}

/// A path inside a NATS config's double quotes.
fn quoted(p: &Path) -> String {
    p.display()
        .to_string()
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(a: &[OsString]) -> Vec<String> {
        a.iter().map(|w| w.to_string_lossy().into_owned()).collect()
    }

    fn after<'a>(a: &'a [String], flag: &str) -> Option<&'a str> {
        let i = a.iter().position(|w| w == flag)?;
        a.get(i + 1).map(String::as_str)
    }

    #[test]
    fn redis_over_tls_has_no_plain_port_and_asks_for_no_client_certificate() {
        let Ok(pki) = Pki::new() else {
            eprintln!("SKIPPED: no openssl command on this machine (apt-get install openssl)");
            return;
        };
        let plain = words(&redis(7000, None));
        assert_eq!(after(&plain, "--port"), Some("7000"));
        assert!(!plain.iter().any(|w| w.starts_with("--tls")));
        let tls = words(&redis(7000, Some(&pki)));
        assert_eq!(after(&tls, "--port"), Some("0"));
        assert_eq!(after(&tls, "--tls-port"), Some("7000"));
        assert_eq!(after(&tls, "--tls-auth-clients"), Some("no"));
        let cert = pki.cert.display().to_string();
        assert_eq!(after(&tls, "--tls-cert-file"), Some(cert.as_str()));
        assert_eq!(after(&tls, "--save"), Some(""), "no persistence either way");
    }

    #[test]
    fn nats_tls_config_listens_on_loopback_with_the_run_certificate() {
        let Ok(pki) = Pki::new() else {
            eprintln!("SKIPPED: no openssl command on this machine (apt-get install openssl)");
            return;
        };
        let conf = nats_tls_config(4222, &pki);
        assert!(conf.starts_with("listen: \"127.0.0.1:4222\"\n"), "{conf}");
        assert!(conf.contains(&format!("cert_file: \"{}\"", pki.cert.display())));
        assert!(conf.contains(&format!("key_file: \"{}\"", pki.key.display())));
        assert!(conf.contains("timeout: 10"));
        assert_eq!(words(&nats_plain(4222)), ["-a", "127.0.0.1", "-p", "4222"]);
    }

    #[test]
    fn nats_ws_config_opens_a_plain_websocket_beside_the_client_port() {
        let conf = nats_ws_config(4222, 8222);
        assert!(conf.starts_with("listen: \"127.0.0.1:4222\"\n"), "{conf}");
        assert!(
            conf.contains("websocket {\n  listen: \"127.0.0.1:8222\"\n"),
            "{conf}"
        );
        assert!(
            conf.contains("no_tls: true"),
            "nats-server refuses a websocket without TLS otherwise"
        );
        assert!(conf.ends_with("}\n"), "{conf}");
    }
}
