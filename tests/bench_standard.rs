//! `chat-bench standard` end to end, shrunk to a few seconds: the real bench runs every table
//! of the set once against real chatd daemons it spawns (no Redis or NATS needed), prints a
//! JSON line per run, and writes the page section and both plots. Checked: one line per
//! planned run, each from round 1 and balanced; chatd pinned to one CPU ran one reactor; the
//! page names every table and its exact commands, keeps the text around the markers, and the
//! plots are SVG. The figures themselves belong to the machine and are not asserted.

use std::process::Command;

use serde_json::Value;

const BENCH: &str = env!("CARGO_BIN_EXE_chat-bench");

#[test]
fn a_tiny_standard_set_writes_every_table_and_both_plots() {
    let dir = tempfile::tempdir().expect("temp dir");
    let page = dir.path().join("benchmarks.md");
    let plots = dir.path().join("plots");
    let begin = "<!-- standard-set:begin (written by `chat-bench standard`) -->";
    let end = "<!-- standard-set:end -->";
    std::fs::write(&page, format!("# Before\n{begin}\nold\n{end}\n## After\n")).expect("page");
    let out = Command::new(BENCH)
        .args([
            "standard",
            "--targets",
            "chatd",
            "--secs",
            "1",
            "--runs",
            "1",
        ])
        .args([
            "--latency-runs",
            "1",
            "--subscriber-counts",
            "2",
            "--paced",
            "200x2",
        ])
        .args(["--idle", "50", "--idle-procs", "1", "--connect", "50"])
        // Both on CPU 0: the test must run on a one-CPU machine too.
        .args(["--server-cpu", "0", "--cpu", "0", "--out"])
        .arg(&page)
        .arg("--plots")
        .arg(&plots)
        .output()
        .expect("run chat-bench");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{}\n{stderr}", out.status);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    let scenarios: Vec<&str> = lines
        .iter()
        .map(|l| l["scenario"].as_str().unwrap_or("?"))
        .collect();
    // Full speed, rooms, request/response, paced chatd with and without fsync, idle, connect.
    assert_eq!(
        scenarios,
        [
            "fanout", "rooms", "fanout", "fanout", "fanout", "idle", "connect"
        ],
        "{stderr}"
    );
    for l in &lines {
        assert_eq!(l["round"].as_u64(), Some(1), "{l}");
        assert_eq!(l["target"].as_str(), Some("chatd"), "{l}");
        assert_eq!(
            l["server_reactors"].as_u64(),
            Some(1),
            "pinned to one CPU: {l}"
        );
        for k in ["lost", "duplicates", "reordered", "failures", "failed"] {
            assert!(l.get(k).is_none_or(|n| n.as_u64() == Some(0)), "{k}: {l}");
        }
    }
    let md = std::fs::read_to_string(&page).expect("page written");
    assert!(
        md.starts_with("# Before\n") && md.ends_with("\n## After\n"),
        "{md}"
    );
    assert!(!md.contains("\nold\n"), "{md}");
    for title in [
        "### Fanout at full speed (1 publisher, window 1000",
        "### Rooms at full speed",
        "### Request/response (window 16): fanout 1 → 2",
        "### Paced latency",
        "### Idle connections (50 held by 1 process)",
        "### Connection set-up",
        "What the group commit costs chatd",
    ] {
        assert!(md.contains(title), "{title} missing:\n{md}");
    }
    for cmd in [
        "chat-bench fanout --spawn --target chatd --server-cpu 0 --cpu 0 --subscribers 2 \
         --window 16 --secs 1 --fsync never",
        "chat-bench fanout --spawn --target chatd --server-cpu 0 --cpu 0 --subscribers 2 \
         --window 1000 --secs 1 --rate 200 --fsync always",
    ] {
        assert!(md.contains(&format!("\n{cmd}\n")), "{cmd} missing:\n{md}");
    }
    for svg in ["fanout-throughput.svg", "fanout-p99.svg"] {
        let text = std::fs::read_to_string(plots.join(svg)).expect("plot written");
        assert!(text.starts_with("<svg"), "{svg}");
    }
}
