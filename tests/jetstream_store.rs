//! What `--store jetstream` adds beyond the protocol suite (which runs against it through
//! `per_driver!`): the retention flags become the limits of each room's stream, and JOINED's
//! `first` is the stream's first seq once retention has cut it. One nats-server, one replica.

#[path = "util/frames.rs"]
mod frames;
mod util;

use std::time::Duration;

use chatd::client::Reply;
use util::nats;
use util::{Driver, join, recv, send};

const ALL: u32 = u32::MAX;

/// The config and state of the one stream that is not a KV bucket (the room's), as the
/// server's monitoring endpoint reports them.
#[track_caller]
fn room_stream(monitor_port: u16) -> serde_json::Value {
    let (status, body) =
        nats::http_get(monitor_port, "/jsz?streams=true&config=true").expect("GET /jsz");
    assert_eq!(status, 200, "{body}");
    let jsz: serde_json::Value = serde_json::from_str(&body).expect("jsz is JSON");
    let streams: Vec<&serde_json::Value> = jsz["account_details"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|a| a["stream_detail"].as_array().into_iter().flatten())
        .filter(|s| !s["name"].as_str().unwrap_or("KV_").starts_with("KV_"))
        .collect();
    assert_eq!(streams.len(), 1, "one room, one stream: {jsz}");
    streams[0].clone()
}

#[test]
fn retention_flags_are_the_stream_limits_and_joined_reports_the_streams_first_seq() {
    if nats::skip("retention of --store jetstream") {
        return;
    }
    let flags = [
        "--retention-bytes",
        "4096",
        "--retention-age",
        "2m",
        "--send-rate",
        "0",
    ];
    let first_node = Driver::JetStream.start(&flags);
    let mut alice = first_node.login("alice");
    join(&mut alice, "#r", 0, 0);
    let text = "x".repeat(200);
    // One at a time: an ACK comes once this node's follower has the message, so none is cut
    // by the stream's 4 KiB before the node saw it. (A burst larger than the stream's limits
    // can be cut first, and a live member owed what was cut is closed as a slow consumer.)
    for id in 1..=40 {
        send(&mut alice, "#r", id, &format!("{id:03} {text}"));
        loop {
            match recv(&mut alice) {
                Reply::Ack { id: acked, seq } => {
                    assert_eq!(
                        (acked, seq),
                        (id, id),
                        "one sender, one room: seq follows id"
                    );
                    break;
                }
                Reply::Msg { .. } => {}
                other => panic!("expected ACK, got {other:?}"),
            }
        }
    }

    let port = first_node
        .nats
        .as_ref()
        .expect("a JetStream daemon has its server")
        .monitor_port();
    let stream = room_stream(port);
    assert_eq!(stream["config"]["max_bytes"], 4096, "{stream}");
    let two_minutes = Duration::from_secs(120).as_nanos();
    assert_eq!(
        stream["config"]["max_age"].as_u64().map(u128::from),
        Some(two_minutes),
        "{stream}"
    );
    let first = stream["state"]["first_seq"].as_u64().expect("first_seq");
    assert_eq!(stream["state"]["last_seq"], 40, "{stream}");
    assert!(
        first > 1,
        "4096 bytes cannot hold 40 messages of 200: {stream}"
    );

    // A node that has not seen the room yet reads where it stands from the stream.
    let token = first_node.add_user("bob");
    let second_node = Driver::start_beside(&first_node, &flags);
    let mut bob = second_node.login_with("bob", &token);
    assert_eq!(join(&mut bob, "#r", 0, ALL), (first, 40));
    let mut seqs = Vec::new();
    while seqs.last() != Some(&40) {
        match recv(&mut bob) {
            Reply::Msg { seq, text: t, .. } => {
                assert_eq!(t, format!("{seq:03} {text}"));
                seqs.push(seq);
            }
            other => panic!("expected MSG, got {other:?}"),
        }
    }
    assert_eq!(seqs, (first..=40).collect::<Vec<u64>>(), "what is retained");
    frames::assert_alive(&mut bob);
}
