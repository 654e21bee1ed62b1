//! The web page in a real browser: headless Chromium, driven through Selenium by
//! `tests/browser/drive.py`, logs in, joins, sees a message the CLI client posted, sends its
//! own, takes a message while the daemon is down and delivers it once after the restart,
//! resumes without a gap or a duplicate, exchanges direct messages with a version 2 TCP
//! client, is refused someone else's direct room and loses a room made private, all without
//! a console or CSP error. Needs Debian's `chromium`, `chromium-driver` and `python3-selenium`
//! (`.ci/run` installs them); skips loudly where they are missing.

mod util;

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};

use chatd::client::{Client, Reply};
use chatd::protocol::ClientFrame;
use util::{BIN, Daemon, add_user};

const PYTHON: &str = "/usr/bin/python3";
const CHAT: &str = env!("CARGO_BIN_EXE_chat");

/// Why the browser cannot run here, if it cannot.
fn missing() -> Option<String> {
    for tool in ["/usr/bin/chromium", "/usr/bin/chromedriver", PYTHON] {
        if !Path::new(tool).exists() {
            return Some(format!("{tool} is not installed"));
        }
    }
    let selenium = Command::new(PYTHON)
        .args(["-c", "import selenium"])
        .status();
    match selenium {
        Ok(s) if s.success() => None,
        _ => Some("python3-selenium is not installed".into()),
    }
}

/// Posts `text` to `room` as `user` with the CLI client, `chat send`.
fn chat_send(addr: std::net::SocketAddr, user: &str, token: &str, room: &str, text: &str) {
    let out = Command::new(CHAT)
        .args([
            "--server",
            &addr.to_string(),
            "--user",
            user,
            "send",
            room,
            text,
        ])
        .env("CHAT_TOKEN", token)
        .env("HOME", std::env::temp_dir())
        .output()
        .expect("run chat send");
    assert!(
        out.status.success(),
        "chat send: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A TCP client of `user` speaking protocol version 2.
fn login_v2(d: &Daemon, user: &str, token: &str) -> Client {
    let mut c = d.connect();
    c.send(&ClientFrame::Hello {
        version: 2,
        user,
        token,
        client: 7,
    })
    .expect("send HELLO");
    match util::recv(&mut c) {
        Reply::Welcome { version: 2, .. } => c,
        other => panic!("expected WELCOME version 2, got {other:?}"),
    }
}

#[test]
fn the_page_chats_with_the_cli_and_resumes_after_a_restart() {
    if let Some(why) = missing() {
        eprintln!(
            "!!! SKIPPED the browser test: {why} (apt-get install chromium chromium-driver python3-selenium)"
        );
        return;
    }
    let keep = tempfile::tempdir().expect("temp dir");
    let data = keep.path().join("data");
    let data_arg = data.display().to_string();
    let shots = keep.path().join("shots");
    std::fs::create_dir_all(&shots).expect("screenshot dir");

    let start = |web: &str| {
        Daemon::start(&[
            "--data-dir",
            &data_arg,
            "--web-listen",
            web,
            "--listen",
            "127.0.0.1:0",
        ])
    };
    let mut d = start("127.0.0.1:0");
    let web = d.web_addrs[0];
    let alice = add_user(&data, "alice");
    let bob = add_user(&data, "bob");
    d.wait_for_users(2);

    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser/drive.py");
    let mut driver = Command::new(PYTHON)
        .arg(&script)
        .args([&format!("http://{web}/"), "alice", &alice])
        .arg(&shots)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("start the browser driver");
    let mut to_driver = driver.stdin.take().expect("driver stdin");
    let mut from_driver = BufReader::new(driver.stdout.take().expect("driver stdout")).lines();
    let mut step = |want: &str| {
        let got = from_driver
            .next()
            .and_then(Result::ok)
            .unwrap_or_else(|| "error: the driver ended".into());
        assert_eq!(got, want, "the browser driver");
    };

    step("joined");
    chat_send(d.addr, "bob", &bob, "lobby", "hello from the terminal");
    writeln!(to_driver, "posted").expect("tell the driver");
    step("sent");

    // The page's message is stored: a TCP client replays it.
    let mut tcp = d.login_with("bob", &bob);
    util::join(&mut tcp, "lobby", 0, u32::MAX);
    let mut others = Vec::new();
    let history = util::recv_msgs(&mut tcp, 2, &mut others);
    assert!(
        history
            .iter()
            .any(|m| m.2 == "alice" && m.3 == "hello from the browser"),
        "{history:?}"
    );
    drop(tcp);

    d.signal(nix::sys::signal::Signal::SIGTERM);
    assert!(d.wait_exit().is_some_and(|s| s.success()), "a clean stop");
    drop(d);
    writeln!(to_driver, "stopped").expect("tell the driver");
    step("queued");
    let d = start(&web.to_string());
    chat_send(d.addr, "bob", &bob, "lobby", "after the restart");
    writeln!(to_driver, "restarted").expect("tell the driver");
    step("delivered");

    // What the page took while the daemon was down is stored exactly once.
    let mut tcp = d.login_with("bob", &bob);
    let (_, head) = util::join(&mut tcp, "lobby", 0, u32::MAX);
    assert_eq!(head, 4, "four messages in lobby, none twice");
    let history = util::recv_msgs(&mut tcp, 4, &mut others);
    let queued = history.iter().filter(|m| m.3 == "typed while down").count();
    assert_eq!(queued, 1, "{history:?}");
    drop(tcp);

    // A direct message from the page, seen and answered by bob in the same direct room.
    step("dm");
    let mut bob_v2 = login_v2(&d, "bob", &bob);
    util::join(&mut bob_v2, "@alice+bob", 0, u32::MAX);
    let dm = util::recv_msgs(&mut bob_v2, 1, &mut others);
    assert_eq!(
        dm.first().map(|m| (m.2.as_str(), m.3.as_str())),
        Some(("alice", "hello bob"))
    );
    util::send(&mut bob_v2, "@alice+bob", 1, "hello alice");
    writeln!(to_driver, "replied").expect("tell the driver");

    // The operator takes a room away from the page while it is in it.
    step("team");
    let out = Command::new(BIN)
        .args(["room", "allow", "team", "bob", "--data-dir", &data_arg])
        .output()
        .expect("run chatd room");
    assert!(
        out.status.success(),
        "chatd room allow: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    writeln!(to_driver, "private").expect("tell the driver");
    step("done");
    drop(bob_v2);
    let status = driver.wait().expect("the driver ends");
    assert!(status.success());
    let shot = shots.join("page.png");
    assert!(shot.exists(), "a screenshot at {}", shot.display());
    eprintln!("screenshot: {} ({BIN})", shot.display());
    // Keep the screenshot for a human when asked to.
    if let Ok(dir) = std::env::var("CHATD_KEEP_SCREENSHOT") {
        let _ = std::fs::copy(&shot, Path::new(&dir).join("web-client.png"));
    }
}
