//! `chat-bench lab` end to end: the real bench starts the real daemon, loads it for two
//! seconds and prints its JSON lines, which are parsed and checked for sanity (the CPU was
//! sampled, every message sent was ACKed, nothing failed). The figures themselves are not
//! asserted: they belong to the machine. A model the daemon refuses must be a line with an
//! `error` field, and the lab must go on.

use std::process::Command;

use serde_json::Value;

const BENCH: &str = env!("CARGO_BIN_EXE_chat-bench");
const CHATD: &str = env!("CARGO_BIN_EXE_chatd");

fn lab(models: &str) -> (Vec<Value>, std::process::ExitStatus, String) {
    let out = Command::new(BENCH)
        .args(["lab", "--chatd", CHATD, "--models", models])
        .args(["--conns", "2", "--secs", "2", "--sample-ms", "250"])
        // Both on CPU 0: the test must run on a one-CPU machine too.
        .args(["--server-cpu", "0", "--cpu", "0"])
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

#[test]
fn a_short_lab_run_samples_the_cpu_and_every_message_is_acked() {
    if !cfg!(target_os = "linux") {
        eprintln!("SKIPPED: the lab samples the server's process tree from /proc, Linux only");
        return;
    }
    let (lines, status, stderr) = lab("reactor,no-such-model");
    assert!(status.success(), "{status}: {stderr}");
    let [run, refused] = lines.as_slice() else {
        panic!("expected two lines, got {lines:?}\n{stderr}");
    };
    assert_eq!(run.get("error"), None, "{run}");
    assert_eq!(
        (run["model"].as_str(), run["conns"].as_u64()),
        (Some("reactor"), Some(2))
    );
    assert!(num(run, "samples") > 0.0, "{run}");
    for key in ["cpu_mean_pct", "paper_style_cpu_pct", "ctxsw_per_msg"] {
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
    for key in ["errors", "failures", "unanswered"] {
        assert_eq!(num(run, key), 0.0, "{key} in {run}");
    }
    // The tree is the daemon and whatever it started: at least the daemon, all its threads.
    assert!(
        num(run, "processes") >= 1.0 && num(run, "threads") >= 1.0,
        "{run}"
    );
    assert_eq!(
        refused["model"].as_str(),
        Some("no-such-model"),
        "{refused}"
    );
    let why = refused["error"].as_str().unwrap_or_default();
    assert!(
        why.contains("--driver"),
        "the daemon's refusal is shown: {refused}"
    );
}
