//! The blocking client over TLS, against a small rustls server run in a thread of the test:
//! the handshake and frames both ways, a reply bigger than rustls buffers at once, a reader
//! and a writer on two threads, timeouts, and every handshake failure as one readable line
//! that code can tell from a refused or dropped connection.

#[path = "util/pki.rs"]
mod pki;

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use chatd::client::{Client, Reply, TlsStream, Transport, handshake_error};
use chatd::protocol::codec::parse_client;
use chatd::protocol::{ClientFrame, Decoded, Deframer, ServerFrame, encode_server};
use chatd::tls::client::{client_config, server_name};
use chatd::tls::server::{CertFiles, ServerTls};
use pki::Pki;
use rustls::{ServerConnection, StreamOwned};

/// How long any wait of these tests may take before it counts as a hang.
const PATIENCE: Duration = Duration::from_secs(10);

type ServerStream = StreamOwned<ServerConnection, TcpStream>;

/// A CA, a server certificate for localhost and 127.0.0.1, and the server side of TLS.
struct Setup {
    _dir: tempfile::TempDir,
    pki: Pki,
    tls: ServerTls,
}

fn setup() -> Setup {
    let dir = tempfile::tempdir().expect("tmp");
    let pki = Pki::new(dir.path());
    let leaf = pki.leaf("server", &["localhost", "127.0.0.1"]);
    let tls = ServerTls::load(&CertFiles {
        cert: leaf.cert,
        key: leaf.key,
    })
    .expect("server TLS");
    Setup {
        _dir: dir,
        pki,
        tls,
    }
}

/// Accepts one connection, wraps it in TLS and hands it to `script` in a thread.
fn serve<T: Send + 'static>(
    tls: &ServerTls,
    script: impl FnOnce(&mut ServerStream) -> T + Send + 'static,
) -> (SocketAddr, JoinHandle<T>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    let config = Arc::clone(&tls.config);
    let handle = std::thread::spawn(move || {
        let (tcp, _) = listener.accept().expect("accept");
        tcp.set_read_timeout(Some(PATIENCE)).expect("timeout");
        let conn = ServerConnection::new(config).expect("server connection");
        let mut stream = StreamOwned::new(conn, tcp);
        script(&mut stream)
    });
    (addr, handle)
}

/// Accepts one plain connection and hands it to `script` in a thread.
fn serve_plain(script: impl FnOnce(TcpStream) + Send + 'static) -> (SocketAddr, JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    let handle = std::thread::spawn(move || {
        let (tcp, _) = listener.accept().expect("accept");
        script(tcp);
    });
    (addr, handle)
}

/// Reads one client frame and gives its kind-specific summary.
fn read_frame(stream: &mut impl Read, buf: &mut Vec<u8>) -> Option<String> {
    let deframer = Deframer::for_server(64 * 1024);
    loop {
        if let Decoded::Frame(raw) = deframer.next(buf).expect("a valid frame") {
            let text = match parse_client(&raw).expect("parses") {
                ClientFrame::Hello { user, token, .. } => format!("HELLO {user} {token}"),
                ClientFrame::Ping { nonce } => format!("PING {nonce}"),
                other => format!("{other:?}"),
            };
            let used = raw.wire_len;
            buf.drain(..used);
            return Some(text);
        }
        let mut chunk = [0u8; 4096];
        match stream.read(&mut chunk) {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

fn write_frame(stream: &mut impl Write, frame: &ServerFrame<'_>) {
    let mut bytes = Vec::new();
    encode_server(frame, &mut bytes);
    stream.write_all(&bytes).expect("write frame");
    stream.flush().expect("flush");
}

fn welcome() -> ServerFrame<'static> {
    ServerFrame::Welcome {
        version: 1,
        epoch: 7,
        session: 1,
        max_frame: 64 * 1024,
        idle_timeout_ms: 30_000,
        server: "test",
    }
}

fn connect(s: &Setup, addr: SocketAddr, name: &str) -> io::Result<Client> {
    let config = client_config(Some(&s.pki.ca_pem)).expect("client config");
    Client::connect_tls(addr, config, server_name(name).expect("name"))
}

fn hello(c: &mut Client) {
    c.send(&ClientFrame::Hello {
        version: 1,
        user: "alice",
        token: "t0k",
        client: 0,
    })
    .expect("send HELLO");
}

#[test]
fn frames_round_trip_over_tls_with_the_chatd_alpn() {
    let s = setup();
    let (addr, server) = serve(&s.tls, |stream| {
        let mut buf = Vec::new();
        let hello = read_frame(stream, &mut buf);
        write_frame(stream, &welcome());
        let ping = read_frame(stream, &mut buf);
        write_frame(stream, &ServerFrame::Pong { nonce: 42 });
        let alpn = stream.conn.alpn_protocol().map(<[u8]>::to_vec);
        stream.conn.send_close_notify();
        let _ = stream.flush();
        (hello, ping, alpn)
    });
    let mut c = connect(&s, addr, "localhost").expect("TLS connect");
    let Transport::Tls(tls) = c.transport() else {
        panic!("a TLS client has a TLS transport");
    };
    assert_eq!(
        tls.alpn_protocol().expect("alpn").as_deref(),
        Some(&b"chatd/1"[..])
    );
    assert_eq!(c.peer_addr().expect("peer"), addr);
    assert_eq!(
        c.stream().peer_addr().expect("the TCP socket beneath"),
        addr
    );
    hello(&mut c);
    assert!(matches!(
        c.recv().expect("recv"),
        Some(Reply::Welcome { epoch: 7, .. })
    ));
    c.send(&ClientFrame::Ping { nonce: 42 }).expect("ping");
    assert_eq!(c.recv().expect("recv"), Some(Reply::Pong { nonce: 42 }));
    assert_eq!(c.recv().expect("the clean end"), None);
    let (hello, ping, alpn) = server.join().expect("server");
    assert_eq!(hello.as_deref(), Some("HELLO alice t0k"));
    assert_eq!(ping.as_deref(), Some("PING 42"));
    assert_eq!(alpn.as_deref(), Some(&b"chatd/1"[..]));
}

#[test]
fn an_ip_address_is_verified_against_the_certificate_ip() {
    let s = setup();
    let (addr, server) = serve(&s.tls, |stream| {
        let mut buf = Vec::new();
        read_frame(stream, &mut buf);
        write_frame(stream, &welcome());
    });
    let mut c = connect(&s, addr, "127.0.0.1").expect("127.0.0.1 is in the certificate");
    hello(&mut c);
    assert!(matches!(
        c.recv().expect("recv"),
        Some(Reply::Welcome { .. })
    ));
    server.join().expect("server");
}

#[test]
fn a_reply_larger_than_rustls_buffers_arrives_whole_and_in_order() {
    let s = setup();
    const MSGS: u64 = 400;
    let text = "x".repeat(2000);
    let (addr, server) = serve(&s.tls, move |stream| {
        let mut buf = Vec::new();
        read_frame(stream, &mut buf);
        let mut bytes = Vec::new();
        encode_server(&welcome(), &mut bytes);
        for seq in 1..=MSGS {
            let msg = ServerFrame::Msg {
                room: "#big",
                seq,
                ts_ms: seq,
                user: "bob",
                text: &text,
            };
            encode_server(&msg, &mut bytes);
        }
        // About 800 KB in one write: many full records reach the client at once.
        stream.write_all(&bytes).expect("write");
        stream.flush().expect("flush");
        stream.conn.send_close_notify();
        let _ = stream.flush();
    });
    let mut c = connect(&s, addr, "localhost").expect("TLS connect");
    c.set_timeout(Some(PATIENCE)).expect("timeout");
    hello(&mut c);
    assert!(matches!(
        c.recv().expect("recv"),
        Some(Reply::Welcome { .. })
    ));
    for want in 1..=MSGS {
        match c.recv().expect("recv") {
            Some(Reply::Msg { seq, text, .. }) => {
                assert_eq!(seq, want);
                assert_eq!(text.len(), 2000);
            }
            other => panic!("expected MSG {want}, got {other:?}"),
        }
    }
    assert_eq!(c.recv().expect("end"), None);
    server.join().expect("server");
}

#[test]
fn a_reader_thread_blocked_on_the_socket_does_not_block_the_writer() {
    let s = setup();
    let (addr, server) = serve(&s.tls, |stream| {
        let mut buf = Vec::new();
        read_frame(stream, &mut buf);
        write_frame(stream, &welcome());
        for _ in 0..3 {
            let Some(ping) = read_frame(stream, &mut buf) else {
                return;
            };
            let nonce = ping
                .strip_prefix("PING ")
                .and_then(|n| n.parse().ok())
                .expect("a PING");
            write_frame(stream, &ServerFrame::Pong { nonce });
        }
    });
    let config = client_config(Some(&s.pki.ca_pem)).expect("config");
    let tcp = TcpStream::connect(addr).expect("connect");
    let tls = TlsStream::connect(tcp, config, server_name("localhost").expect("name"))
        .expect("handshake");
    let mut writer = Transport::Tls(tls.try_clone().expect("clone"));
    let mut reader = Client::from_transport(Transport::Tls(tls));
    reader.set_timeout(Some(PATIENCE)).expect("timeout");
    let (tx, rx) = mpsc::channel();
    // The reader waits before anything was sent: the server answers only what it receives,
    // so the writer must get through while the reader sits in its read.
    let reading = std::thread::spawn(move || {
        while let Ok(Some(reply)) = reader.recv() {
            if tx.send(reply).is_err() {
                return;
            }
        }
    });
    let frame = |f: &ClientFrame<'_>| {
        let mut bytes = Vec::new();
        chatd::protocol::encode_client(f, &mut bytes);
        bytes
    };
    writer
        .write_all(&frame(&ClientFrame::Hello {
            version: 1,
            user: "alice",
            token: "t",
            client: 0,
        }))
        .expect("HELLO");
    let deadline = Instant::now() + PATIENCE;
    let next = || rx.recv_timeout(deadline.saturating_duration_since(Instant::now()));
    assert!(matches!(next(), Ok(Reply::Welcome { .. })));
    for nonce in 1..=3 {
        writer
            .write_all(&frame(&ClientFrame::Ping { nonce }))
            .expect("PING");
        assert_eq!(next(), Ok(Reply::Pong { nonce }));
    }
    writer.close();
    server.join().expect("server");
    reading.join().expect("reader");
}

#[test]
fn a_writer_stuck_on_a_full_socket_does_not_stop_the_reader() {
    use nix::sys::socket::{setsockopt, sockopt};
    const MSGS: u64 = 200;
    let s = setup();
    let (go, wait) = mpsc::channel::<()>();
    let (addr, server) = serve(&s.tls, move |stream| {
        setsockopt(&stream.sock, sockopt::RcvBuf, &(16 * 1024)).expect("SO_RCVBUF");
        let mut buf = Vec::new();
        read_frame(stream, &mut buf);
        write_frame(stream, &welcome());
        // From here on the server reads nothing, so the client's writes pile up.
        let _ = wait.recv_timeout(PATIENCE);
        let text = "y".repeat(1000);
        for seq in 1..=MSGS {
            let msg = ServerFrame::Msg {
                room: "#r",
                seq,
                ts_ms: seq,
                user: "bob",
                text: &text,
            };
            write_frame(stream, &msg);
        }
        let _ = wait.recv_timeout(PATIENCE);
    });
    let config = client_config(Some(&s.pki.ca_pem)).expect("config");
    let tcp = TcpStream::connect(addr).expect("connect");
    setsockopt(&tcp, sockopt::SndBuf, &(16 * 1024)).expect("SO_SNDBUF");
    tcp.set_write_timeout(Some(PATIENCE)).expect("timeout");
    let tls = TlsStream::connect(tcp, config, server_name("localhost").expect("name"))
        .expect("handshake");
    let mut reader = Client::from_transport(Transport::Tls(tls.try_clone().expect("clone")));
    reader.set_timeout(Some(PATIENCE)).expect("timeout");
    hello(&mut reader);
    assert!(matches!(
        reader.recv().expect("recv"),
        Some(Reply::Welcome { .. })
    ));
    let mut writer = Transport::Tls(tls);
    let closer = writer.try_clone().expect("clone");
    let (started, writing) = mpsc::channel();
    let stuck = std::thread::spawn(move || {
        let blob = vec![0u8; 64 * 1024];
        let _ = started.send(());
        // Far more than the socket buffers hold: this blocks until the socket is shut.
        for _ in 0..512 {
            if writer.write_all(&blob).is_err() {
                return;
            }
        }
    });
    writing.recv_timeout(PATIENCE).expect("writer started");
    go.send(()).expect("server waits");
    for want in 1..=MSGS {
        match reader.recv() {
            Ok(Some(Reply::Msg { seq, .. })) => assert_eq!(seq, want),
            other => panic!("expected MSG {want} while the writer is stuck, got {other:?}"),
        }
    }
    closer.close();
    stuck.join().expect("writer");
    let _ = go.send(());
    server.join().expect("server");
}

#[test]
fn recv_times_out_over_tls_and_the_session_survives_it() {
    let s = setup();
    let (go, wait) = mpsc::channel::<()>();
    let (addr, server) = serve(&s.tls, move |stream| {
        let mut buf = Vec::new();
        read_frame(stream, &mut buf);
        // Silent until the client has seen its timeout.
        let _ = wait.recv_timeout(PATIENCE);
        write_frame(stream, &welcome());
    });
    let mut c = connect(&s, addr, "localhost").expect("TLS connect");
    hello(&mut c);
    c.set_timeout(Some(Duration::from_millis(100)))
        .expect("timeout");
    let started = Instant::now();
    let e = c.recv().expect_err("no answer yet");
    assert!(
        matches!(
            e.kind(),
            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
        ),
        "{e}"
    );
    assert!(started.elapsed() < PATIENCE);
    go.send(()).expect("server waits");
    c.set_timeout(Some(PATIENCE)).expect("timeout");
    assert!(matches!(
        c.recv().expect("recv"),
        Some(Reply::Welcome { .. })
    ));
    server.join().expect("server");
}

#[test]
fn a_server_that_never_answers_the_handshake_times_out_and_is_no_certificate_error() {
    let (go, wait) = mpsc::channel::<()>();
    let (addr, server) = serve_plain(move |_tcp| {
        let _ = wait.recv_timeout(PATIENCE);
    });
    let s = setup();
    let tcp = TcpStream::connect(addr).expect("connect");
    tcp.set_read_timeout(Some(Duration::from_millis(100)))
        .expect("timeout");
    let config = client_config(Some(&s.pki.ca_pem)).expect("config");
    let e = TlsStream::connect(tcp, config, server_name("localhost").expect("name"))
        .expect_err("no answer");
    assert!(
        matches!(
            e.kind(),
            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
        ),
        "{e}"
    );
    assert!(handshake_error(&e).is_none(), "a timeout may pass: {e}");
    go.send(()).expect("server waits");
    server.join().expect("server");
}

/// The handshake error of connecting to `addr`, as one line.
#[track_caller]
fn refused_line(ca: &std::path::Path, addr: SocketAddr, name: &str) -> String {
    let config = client_config(Some(ca)).expect("config");
    let e = Client::connect_tls(addr, config, server_name(name).expect("name"))
        .err()
        .expect("the handshake must fail");
    let line = e.to_string();
    let inner = handshake_error(&e).unwrap_or_else(|| panic!("not a handshake error: {e:?}"));
    assert_eq!(inner.line, line);
    assert_eq!(e.kind(), io::ErrorKind::InvalidData);
    assert!(
        !line.contains('\n') && !line.contains('{'),
        "one plain line: {line}"
    );
    line
}

#[test]
fn a_certificate_for_another_name_is_one_readable_line() {
    let s = setup();
    let (addr, server) = serve(&s.tls, |stream| {
        let mut buf = Vec::new();
        read_frame(stream, &mut buf)
    });
    let line = refused_line(&s.pki.ca_pem, addr, "10.0.0.5");
    assert!(
        line.contains("certificate for localhost, 127.0.0.1 is not valid for 10.0.0.5"),
        "{line}"
    );
    assert!(line.contains("--server-name"), "{line}");
    assert_eq!(server.join().expect("server"), None, "no frame got through");
}

#[test]
fn a_certificate_from_an_unknown_ca_is_one_readable_line() {
    let s = setup();
    let (addr, server) = serve(&s.tls, |stream| {
        let mut buf = Vec::new();
        read_frame(stream, &mut buf)
    });
    let other = tempfile::tempdir().expect("tmp");
    let stranger = Pki::new(other.path());
    let line = refused_line(&stranger.ca_pem, addr, "localhost");
    assert!(
        line.contains("unknown issuer") && line.contains("--ca-file"),
        "{line}"
    );
    assert_eq!(server.join().expect("server"), None);
}

#[test]
fn a_plain_server_is_named_as_not_speaking_tls() {
    let s = setup();
    // What a plain chatd does with a ClientHello: its first bytes read as an absurd frame
    // length, so it answers TOO_LARGE and closes.
    let (addr, server) = serve_plain(|mut tcp| {
        let mut first = [0u8; 5];
        tcp.read_exact(&mut first).expect("client hello");
        let mut bytes = Vec::new();
        encode_server(
            &ServerFrame::Error {
                code: chatd::protocol::ErrorCode::TooLarge.as_u16(),
                reference: 0,
                message: "declared frame length exceeds max_frame",
            },
            &mut bytes,
        );
        let _ = tcp.write_all(&bytes);
    });
    let line = refused_line(&s.pki.ca_pem, addr, "localhost");
    assert!(line.contains("did not answer with TLS"), "{line}");
    server.join().expect("server");
}

#[test]
fn a_server_that_hangs_up_during_the_handshake_is_a_dropped_connection() {
    let s = setup();
    let (addr, server) = serve_plain(drop);
    let config = client_config(Some(&s.pki.ca_pem)).expect("config");
    let e = Client::connect_tls(addr, config, server_name("localhost").expect("name"))
        .err()
        .expect("no handshake");
    assert!(handshake_error(&e).is_none(), "may be retried: {e}");
    assert!(
        matches!(
            e.kind(),
            io::ErrorKind::UnexpectedEof | io::ErrorKind::ConnectionReset
        ),
        "{e}"
    );
    server.join().expect("server");
}
