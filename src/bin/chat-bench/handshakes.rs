//! `chat-bench handshakes`: what one core pays for the TLS handshake alone. Client and server
//! run in this process and hand each other records in memory, with chatd's own server
//! configuration (`ServerTls`, the certificate of a throwaway openssl PKI) and the bench's
//! client configuration (no resumption, so every handshake is full). Only the server's calls
//! are timed, so the figure is the server's cryptography and TLS state machine, free of
//! sockets, the reactor and the generator. `connect --tls` measures the whole set-up beside it.

use std::sync::Arc;
use std::time::{Duration, Instant};

use chatd::tls::server::{CertFiles, ServerTls};
use rustls::{ClientConnection, ServerConnection};

/// Runs `count` full handshakes and prints one JSON line.
///
/// # Errors
/// The PKI or a configuration could not be made, or a handshake failed.
pub fn run(count: u32, cpu: Option<usize>) -> Result<(), String> {
    if let Some(cpu) = cpu {
        crate::net::pin(cpu)?;
    }
    let pki = crate::pki::Pki::new()?;
    let files = CertFiles {
        cert: pki.cert.clone(),
        key: pki.key.clone(),
    };
    let server = ServerTls::load(&files)?;
    let client = crate::tls::TlsClient::new(crate::wire::Kind::Chatd, &pki.ca)?;
    let mut server_time = Duration::ZERO;
    let mut suite = String::new();
    for _ in 0..count {
        let mut c: ClientConnection = client.connection().map_err(|e| e.to_string())?;
        let mut s = ServerConnection::new(Arc::clone(&server.config)).map_err(|e| e.to_string())?;
        // Each flight one way, then the other: a full TLS 1.3 handshake takes two.
        for _ in 0..4 {
            let to_server = drain(&mut c)?;
            let start = Instant::now();
            feed(&to_server, |r| s.read_tls(r))?;
            s.process_new_packets().map_err(|e| e.to_string())?;
            let to_client = drain(&mut s)?;
            server_time += start.elapsed();
            feed(&to_client, |r| c.read_tls(r))?;
            c.process_new_packets().map_err(|e| e.to_string())?;
            if !c.is_handshaking() && !s.is_handshaking() {
                break;
            }
        }
        if s.is_handshaking() {
            return Err("a handshake did not finish in two flights each way".into());
        }
        if suite.is_empty() {
            suite = format!(
                "{:?} {:?}",
                s.protocol_version(),
                s.negotiated_cipher_suite().map(|c| c.suite())
            );
        }
    }
    let per = server_time / count.max(1);
    println!(
        "{{\"scenario\":\"handshakes\",\"count\":{count},\"negotiated\":\"{suite}\",\
         \"server_us_per_handshake\":{:.1},\"handshakes_per_core_sec\":{:.0}}}",
        per.as_secs_f64() * 1e6,
        f64::from(count) / server_time.as_secs_f64().max(1e-9)
    );
    Ok(())
}

/// Everything `conn` has to send now.
fn drain<D>(conn: &mut rustls::ConnectionCommon<D>) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    while conn.wants_write() {
        conn.write_tls(&mut out).map_err(|e| e.to_string())?;
    }
    Ok(out)
}

fn feed(
    mut bytes: &[u8],
    mut read: impl FnMut(&mut &[u8]) -> std::io::Result<usize>,
) -> Result<(), String> {
    while !bytes.is_empty() {
        read(&mut bytes).map_err(|e| e.to_string())?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_few_handshakes_with_chatds_configuration_finish() {
        super::run(3, None).expect("three full handshakes in memory");
    }
}
