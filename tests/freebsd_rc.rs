//! The FreeBSD rc.d script (`dist/freebsd/chatd`), checked without FreeBSD: its syntax with
//! `sh -n`, and its logic run by `sh` under a stub rc.subr that prints what the real
//! `run_rc_command` would act on. The stub cannot prove that rc.subr, daemon(8) and chatd work
//! together on a FreeBSD machine; it proves the script hands them the right values.

use std::path::{Path, PathBuf};
use std::process::Command;

const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/dist/freebsd/chatd");

/// The parts of rc.subr the script calls. `run_rc_command` reads `${name}_user` the way the
/// real one does: when it is set, rc.subr runs the command under `su -m USER`.
const STUB_RC_SUBR: &str = r#"
warn() { echo "WARN: $*" >&2; }
load_rc_config() { . "$STUB_RC_CONF"; }
run_rc_command() {
    eval _user=\$${name}_user
    printf 'verb=%s\n' "$1"
    printf 'rc_subr_user=%s\n' "$_user"
    printf 'command=%s\n' "$command"
    printf 'command_args=%s\n' "$command_args"
    printf 'pidfile=%s\n' "$pidfile"
    printf 'procname=%s\n' "$procname"
}
"#;

fn script() -> String {
    std::fs::read_to_string(SCRIPT).expect("read dist/freebsd/chatd")
}

/// Runs the script's `start` with `rc_conf` as /etc/rc.conf; returns stdout and stderr.
fn run_with(rc_conf: &str) -> (String, String) {
    let dir = tempfile::tempdir().expect("tmp");
    let stub = dir.path().join("rc.subr");
    std::fs::write(&stub, STUB_RC_SUBR).expect("write stub");
    let conf = dir.path().join("rc.conf");
    std::fs::write(&conf, rc_conf).expect("write rc.conf");
    let text = script();
    assert_eq!(
        text.matches(". /etc/rc.subr\n").count(),
        1,
        "the script must source /etc/rc.subr exactly once"
    );
    let copy: PathBuf = dir.path().join("chatd");
    let sourced = format!(". {}\n", stub.display());
    std::fs::write(&copy, text.replace(". /etc/rc.subr\n", &sourced)).expect("write copy");
    let out = sh(&copy, &conf);
    assert!(out.status.success(), "sh failed: {out:?}");
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn sh(script: &Path, conf: &Path) -> std::process::Output {
    Command::new("sh")
        .arg(script)
        .arg("start")
        .env("STUB_RC_CONF", conf)
        .output()
        .expect("run sh")
}

fn value<'a>(out: &'a str, key: &str) -> &'a str {
    out.lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix('='))
        .unwrap_or_else(|| panic!("no {key} in {out}"))
}

#[test]
fn the_rc_script_parses() {
    let out = Command::new("sh")
        .args(["-n", SCRIPT])
        .output()
        .expect("run sh -n");
    assert!(out.status.success(), "sh -n: {out:?}");
}

#[test]
fn the_rc_script_never_sets_the_name_rc_subr_reserves() {
    // rc.subr runs the whole command as ${name}_user when it is set: daemon(8) then cannot
    // write /var/run/chatd.pid and chatd cannot drop privileges it never had.
    for (n, line) in script().lines().enumerate() {
        let code = line.split('#').next().unwrap_or_default();
        for reserved in [
            "chatd_user=",
            "chatd_user:=",
            "${name}_user=",
            "${name}_user:=",
        ] {
            assert!(
                !code.contains(reserved),
                "line {}: {line:?} sets rc.subr's reserved {reserved}",
                n + 1
            );
        }
    }
}

#[test]
fn by_default_rc_subr_starts_daemon_as_root_and_chatd_drops_to_chatd() {
    let (out, err) = run_with("chatd_enable=YES\n");
    assert_eq!(value(&out, "verb"), "start");
    assert_eq!(
        value(&out, "rc_subr_user"),
        "",
        "rc.subr must not su: {out}"
    );
    assert_eq!(value(&out, "command"), "/usr/sbin/daemon");
    assert_eq!(value(&out, "pidfile"), "/var/run/chatd.pid");
    assert_eq!(value(&out, "procname"), "/usr/local/bin/chatd");
    let args = value(&out, "command_args");
    assert!(args.starts_with("-f -p /var/run/chatd.pid "), "{args}");
    assert!(
        args.contains(
            "/usr/local/bin/chatd serve --config /usr/local/etc/chatd/chatd.toml \
             --user chatd --group chatd"
        ),
        "{args}"
    );
    assert!(err.is_empty(), "unexpected warnings: {err}");
}

#[test]
fn the_account_is_chosen_with_chatd_runas() {
    let (out, _) = run_with("chatd_runas=alice\nchatd_rungroup=staff\n");
    assert_eq!(value(&out, "rc_subr_user"), "");
    assert!(
        value(&out, "command_args").ends_with("--user alice --group staff"),
        "{out}"
    );
}

#[test]
fn an_old_chatd_user_setting_is_taken_over_and_hidden_from_rc_subr() {
    let (out, err) = run_with("chatd_user=bob\n");
    assert_eq!(value(&out, "rc_subr_user"), "", "rc.subr would su to bob");
    assert!(value(&out, "command_args").contains("--user bob "), "{out}");
    assert!(
        err.contains("chatd_runas"),
        "no warning naming the new knob: {err}"
    );

    let (out, _) = run_with("chatd_user=bob\nchatd_runas=carol\n");
    assert_eq!(value(&out, "rc_subr_user"), "");
    assert!(
        value(&out, "command_args").contains("--user carol "),
        "{out}"
    );
}
