//! The HTTPS web listener (`--web-tls-listen`) end to end: a browser-like rustls client that
//! offers ALPN `h2` and `http/1.1` gets `http/1.1`, fetches the page whose CSP names its
//! `wss://` socket, and chats over WebSocket inside TLS with a TCP client; a client that asks
//! for ALPN `chatd/1` is refused there, and served on the protocol's own TLS listener.

#[path = "util/pki.rs"]
mod pki;
#[path = "util/tls.rs"]
mod tls;
mod util;
#[path = "util/web.rs"]
mod web_client;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;

use chatd::client::Reply;
use chatd::protocol::ClientFrame;
use pki::{Leaf, Pki};
use rustls::{ClientConfig, ClientConnection, StreamOwned};
use tls::TlsClient;
use util::{Daemon, PATIENCE, join, recv_msgs};
use web_client::{WsClient, header};

type TlsStream = StreamOwned<ClientConnection, TcpStream>;

/// A daemon with a plain listener, an HTTPS web listener and, with `tls_listen`, the
/// protocol's TLS listener, all on one certificate signed by a fresh test CA.
struct WebTlsDaemon {
    d: Daemon,
    pki: Pki,
    _leaf: Leaf,
    _certs: tempfile::TempDir,
}

impl WebTlsDaemon {
    #[track_caller]
    fn start(tls_listen: bool) -> WebTlsDaemon {
        let certs = tempfile::tempdir().expect("temp dir");
        let pki = Pki::new(certs.path());
        let leaf = pki.leaf("server", &["localhost", "127.0.0.1"]);
        let (cert, key) = (
            leaf.cert.display().to_string(),
            leaf.key.display().to_string(),
        );
        let mut args = vec!["--web-tls-listen", "127.0.0.1:0"];
        args.extend(["--tls-cert", &cert, "--tls-key", &key]);
        if tls_listen {
            args.extend(["--tls-listen", "127.0.0.1:0"]);
        }
        let d = Daemon::start(&args);
        WebTlsDaemon {
            d,
            pki,
            _leaf: leaf,
            _certs: certs,
        }
    }

    fn web(&self) -> SocketAddr {
        self.d.web_tls_addrs[0]
    }

    /// The client configuration of a browser: this CA, and ALPN `alpn`.
    fn config(&self, alpn: &[&[u8]]) -> Arc<ClientConfig> {
        let config = chatd::tls::client::client_config(Some(&self.pki.ca_pem)).expect("config");
        let mut config = (*config).clone();
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        Arc::new(config)
    }

    /// A finished TLS handshake with the HTTPS listener as `localhost`, offering `alpn`.
    fn connect(&self, alpn: &[&[u8]]) -> Result<TlsStream, std::io::Error> {
        let tcp = TcpStream::connect(self.web())?;
        tcp.set_read_timeout(Some(PATIENCE))?;
        let name = chatd::tls::client::server_name("localhost").map_err(std::io::Error::other)?;
        let conn = ClientConnection::new(self.config(alpn), name).map_err(std::io::Error::other)?;
        let mut tls = StreamOwned::new(conn, tcp);
        while tls.conn.is_handshaking() {
            tls.conn.complete_io(&mut tls.sock)?;
        }
        Ok(tls)
    }
}

/// What a browser offers.
const BROWSER_ALPN: [&[u8]; 2] = [b"h2", b"http/1.1"];

#[test]
fn a_browser_alpn_gets_http_1_1_and_chats_over_wss_with_a_tcp_client() {
    let w = WebTlsDaemon::start(false);
    let alice = w.d.add_user("alice");
    let bob = w.d.add_user("bob");
    let tls = w.connect(&BROWSER_ALPN).expect("TLS handshake");
    assert_eq!(tls.conn.alpn_protocol(), Some(&b"http/1.1"[..]));
    let url = format!("wss://localhost:{}/ws", w.web().port());
    let mut ws = WsClient::over(tls, &url, None).expect("upgrade inside TLS");
    ws.hello("alice", &alice);
    ws.join("lobby");
    let mut tcp = w.d.login_with("bob", &bob);
    join(&mut tcp, "lobby", u64::MAX, 0);

    ws.send(&ClientFrame::Send {
        room: "lobby",
        id: 1,
        text: "over wss",
    });
    let (mut msg, mut ack) = (None, None);
    while msg.is_none() || ack.is_none() {
        match ws.expect() {
            Reply::Msg { seq, text, .. } => msg = Some((seq, text)),
            Reply::Ack { id: 1, seq } => ack = Some(seq),
            other => panic!("unexpected {other:?}"),
        }
    }
    let (seq, text) = msg.expect("own MSG");
    assert_eq!((Some(seq), text.as_str()), (ack, "over wss"));
    let got = recv_msgs(&mut tcp, 1, &mut Vec::new());
    assert_eq!(got[0].3, "over wss");
}

#[test]
fn the_page_over_https_names_its_wss_socket_in_the_csp() {
    let w = WebTlsDaemon::start(false);
    let mut tls = w.connect(&BROWSER_ALPN).expect("TLS handshake");
    let host = format!("localhost:{}", w.web().port());
    let request = format!("GET / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
    tls.write_all(request.as_bytes()).expect("send request");
    let mut page = Vec::new();
    tls.read_to_end(&mut page)
        .expect("the whole page, then close_notify");
    let page = String::from_utf8_lossy(&page);
    assert!(page.starts_with("HTTP/1.1 200"), "{page}");
    assert!(page.contains("<script type=\"module\" src=\"app.js\">"));
    let csp = header(&page, "Content-Security-Policy").expect("a CSP");
    assert!(
        csp.contains(&format!("connect-src wss://{host}/ws")),
        "{csp}"
    );
    assert!(!csp.contains("ws://"), "a plain socket allowed: {csp}");
}

#[test]
fn a_chatd_alpn_client_is_refused_by_the_web_listener_and_served_by_the_tls_one() {
    let w = WebTlsDaemon::start(true);
    let Err(e) = w.connect(&[chatd::tls::ALPN]) else {
        panic!("ALPN chatd/1 accepted by the HTTPS listener");
    };
    // The server aborts the handshake: rustls says no_application_protocol if the alert
    // reaches the client, else the connection just ends.
    let tls_error = e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>());
    let alert = rustls::Error::AlertReceived(rustls::AlertDescription::NoApplicationProtocol);
    assert!(
        tls_error == Some(&alert) || e.kind() == std::io::ErrorKind::UnexpectedEof,
        "{e}"
    );
    let token = w.d.add_user("carol");
    let mut c = TlsClient::connect(w.d.tls_addrs[0], &w.pki.ca_pem, "localhost").expect("TLS");
    assert_eq!(c.tls.conn.alpn_protocol(), Some(chatd::tls::ALPN));
    c.login("carol", &token);
}
