//! `chat-bench lab` end to end: the real bench starts the real daemon, loads it for two
//! seconds per workload and prints its JSON lines, which are parsed and checked for sanity
//! (the CPU was sampled, every message sent was ACKed and delivered to every member of its
//! room, nothing failed). The figures themselves are not asserted: they belong to the
//! machine. A model the daemon refuses must be a line with an `error` field, the larger N of
//! that model skipped lines, and the lab must go on.

use std::process::Command;

use serde_json::Value;

const BENCH: &str = env!("CARGO_BIN_EXE_chat-bench");
const CHATD: &str = env!("CARGO_BIN_EXE_chatd");

/// Runs `chat-bench lab` with `flags` after the common ones; its lines, status and stderr.
fn lab(flags: &[&str]) -> (Vec<Value>, std::process::ExitStatus, String) {
    let out = Command::new(BENCH)
        .args(["lab", "--chatd", CHATD, "--sample-ms", "250", "--runs", "1"])
        // Both on CPU 0: the test must run on a one-CPU machine too.
        .args(["--server-cpu", "0", "--cpu", "0"])
        .args(flags)
        .output()
        .expect("run chat-bench");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let lines = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    (
        lines,
        out.status,
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

fn num(v: &Value, key: &str) -> f64 {
    v.get(key)
        .and_then(Value::as_f64)
        .unwrap_or_else(|| panic!("{key} is not a number in {v}"))
}

fn text<'a>(v: &'a Value, key: &str) -> &'a str {
    v.get(key)
        .and_then(Value::as_str)
        .unwrap_or_else(|| panic!("{key} is not a string in {v}"))
}

/// The checks every measured line of a clean run must pass; `members` is how many
/// connections each message goes to.
#[track_caller]
fn assert_sane(run: &Value, workload: &str, members: f64) {
    assert_eq!(run.get("error"), None, "{run}");
    assert_eq!(
        (text(run, "workload"), text(run, "model"), num(run, "conns")),
        (workload, "reactor", 2.0),
        "{run}"
    );
    assert_eq!(
        (num(run, "runs"), num(run, "runs_good")),
        (1.0, 1.0),
        "{run}"
    );
    assert_eq!(run["survived"].as_bool(), Some(true), "{run}");
    assert!(num(run, "samples") > 0.0, "{run}");
    for key in [
        "cpu_mean_pct",
        "cpu_mean_pct_min",
        "cpu_mean_pct_max",
        "paper_style_cpu_pct",
        "ctxsw_per_msg",
        "ctxsw_voluntary_per_msg",
        "ctxsw_involuntary_per_msg",
    ] {
        let x = num(run, key);
        assert!(x.is_finite() && x >= 0.0, "{key} = {x} in {run}");
    }
    assert!(num(run, "rss_kib") > 0.0, "{run}");
    assert!(
        run.get("cpu_cv").is_some() && run.get("ack_p99_us").is_some(),
        "{run}"
    );
    let (sent, acked) = (num(run, "sent"), num(run, "acked"));
    assert!(
        sent > 0.0 && sent == acked,
        "sent {sent}, acked {acked}: {run}"
    );
    assert_eq!(num(run, "msgs_expected"), sent * members, "{run}");
    assert_eq!(num(run, "msgs_received"), sent * members, "{run}");
    for key in ["errors", "failures", "unanswered", "msgs_shortfall"] {
        assert_eq!(num(run, key), 0.0, "{key} in {run}");
    }
    // The tree is the daemon and whatever it started: at least the daemon, all its threads.
    assert!(
        num(run, "processes") >= 1.0 && num(run, "threads") >= 1.0,
        "{run}"
    );
}

#[track_caller]
fn assert_refused(line: &Value, workload: &str) {
    assert_eq!(
        (text(line, "workload"), text(line, "model")),
        (workload, "no-such-model"),
        "{line}"
    );
    assert!(
        text(line, "error").contains("--driver"),
        "the daemon's refusal is shown: {line}"
    );
    assert_eq!(line["survived"].as_bool(), Some(false), "{line}");
}

#[test]
fn a_short_lab_run_samples_the_cpu_and_every_message_is_acked_and_delivered() {
    if !cfg!(target_os = "linux") {
        eprintln!("SKIPPED: the lab samples the server's process tree from /proc, Linux only");
        return;
    }
    let (lines, status, stderr) = lab(&[
        "--workload",
        "own,shared",
        "--models",
        "reactor,no-such-model",
        "--conns",
        "2",
        "--secs",
        "2",
    ]);
    assert!(status.success(), "{status}: {stderr}");
    let [own, own_refused, shared, shared_refused] = lines.as_slice() else {
        panic!("expected four lines, got {lines:?}\n{stderr}");
    };
    assert_sane(own, "own", 1.0);
    assert_sane(shared, "shared", 2.0);
    assert_refused(own_refused, "own");
    assert_refused(shared_refused, "shared");
}

#[test]
fn a_model_that_fails_skips_the_larger_counts_and_a_count_past_the_fd_limit_is_refused() {
    let (lines, status, stderr) = lab(&["--models", "no-such-model", "--conns", "2,1,8"]);
    assert!(
        status.success(),
        "a refused model is not an unbalanced run: {stderr}"
    );
    let [first, skipped, skipped_too] = lines.as_slice() else {
        panic!("expected three lines, got {lines:?}\n{stderr}");
    };
    assert_refused(first, "own");
    assert_eq!(num(first, "conns"), 1.0, "the ladder climbs: {first}");
    for (line, n) in [(skipped, 2.0), (skipped_too, 8.0)] {
        assert_eq!(num(line, "conns"), n, "{line}");
        assert_eq!(text(line, "skipped"), "failed at N=1", "{line}");
        assert_eq!(line.get("cpu_mean_pct"), None, "not run: {line}");
    }

    use nix::sys::resource::{RLIM_INFINITY, Resource, getrlimit};
    let soft = getrlimit(Resource::RLIMIT_NOFILE).map_or(RLIM_INFINITY, |(s, _)| s);
    if soft == RLIM_INFINITY {
        eprintln!("SKIPPED: no open-file limit here, so no count is past it");
        return;
    }
    let n = soft.to_string();
    let (lines, status, stderr) = lab(&["--models", "reactor", "--conns", &n]);
    assert!(status.success(), "{status}: {stderr}");
    let [unfit] = lines.as_slice() else {
        panic!("expected one line, got {lines:?}\n{stderr}");
    };
    assert!(text(unfit, "error").contains("RLIMIT_NOFILE"), "{unfit}");
    assert_eq!(
        unfit.get("survived"),
        Some(&Value::Null),
        "never tried: {unfit}"
    );
}

#[test]
fn syscalls_per_message_come_from_strace_or_are_null_never_zero() {
    if !cfg!(target_os = "linux") {
        eprintln!("SKIPPED: the lab counts system calls with strace, Linux only");
        return;
    }
    let (lines, status, stderr) = lab(&[
        "--models",
        "reactor",
        "--conns",
        "1",
        "--secs",
        "1",
        "--syscalls",
    ]);
    assert!(status.success(), "{status}: {stderr}");
    let [line] = lines.as_slice() else {
        panic!("expected one line, got {lines:?}\n{stderr}");
    };
    let strace_works = Command::new("strace")
        .args(["-f", "-c", "-o", "/dev/null", "true"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !strace_works {
        eprintln!("SKIPPED: strace is missing or ptrace is not permitted here");
        assert_eq!(line.get("syscalls_per_msg"), Some(&Value::Null), "{line}");
        assert!(!text(line, "syscalls_error").is_empty(), "{line}");
        return;
    }
    assert_eq!(line.get("syscalls_error"), None, "{line}");
    assert!(num(line, "syscalls_per_msg") > 0.0, "{line}");
    assert!(num(line, "syscalls_sent") > 0.0, "{line}");
    let top = line["syscalls_top"]
        .as_object()
        .expect("an object of names");
    assert!(
        !top.is_empty() && top.values().all(|v| v.as_f64().is_some_and(|x| x > 0.0)),
        "{line}"
    );
}
