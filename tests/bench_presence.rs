//! `chat-bench presence --nodes 2` end to end, with tiny numbers: the real bench starts one
//! nats-server and two chatd nodes, members watching on one, churners on the other, and
//! prints a JSON line per run. Checked: every member was told each churner event exactly once
//! (no violations), every event reached every member, and the delays are within reason. The
//! figures themselves belong to the machine and are only bounded loosely. Skipped, loudly,
//! where nats-server is not installed.

#[path = "util/nats.rs"]
#[allow(dead_code)]
mod nats;

use std::process::Command;

use serde_json::Value;

const BENCH: &str = env!("CARGO_BIN_EXE_chat-bench");
const CHATD: &str = env!("CARGO_BIN_EXE_chatd");

#[test]
fn across_two_nodes_every_member_is_told_each_churner_event_once() {
    if nats::skip("across_two_nodes_every_member_is_told_each_churner_event_once") {
        return;
    }
    let server = nats::binary().unwrap_or_else(|e| panic!("{e}"));
    let out = Command::new(BENCH)
        .args(["presence", "--nodes", "2", "--nats-server", server])
        .args(["--chatd", CHATD, "--members", "5", "--churners", "2"])
        .args(["--rate", "20", "--secs", "1", "--runs", "1"])
        .output()
        .expect("run chat-bench");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{}\n{stderr}", out.status);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<Value> = stdout
        .lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    assert_eq!(lines.len(), 1, "{stdout}");
    let run = &lines[0];
    assert_eq!(run["nodes"], 2, "{run}");
    assert_eq!(run["violations"], 0, "{run}\n{stderr}");
    // 2 churners at 20 events/s would stay 100 ms, one tick: the bench raises them to 6.
    assert_eq!(run["churners"], 6, "{run}");
    let events = run["events"].as_u64().expect("events");
    assert!(events >= 2, "{run}");
    assert_eq!(run["frames"].as_u64(), Some(events * 5), "{run}");
    let (p50, max) = (run["delay_p50_us"].as_u64(), run["delay_max_us"].as_u64());
    assert!(p50.is_some_and(|d| d > 0), "{run}");
    // A tick (100 ms) plus NATS: far under the 15 s after which a node is forgotten.
    assert!(max.is_some_and(|d| d < 15_000_000), "{run}");
    assert!(stdout.contains("| events/s |"), "{stdout}");
}
