//! Counters and gauges for operators, rendered as Prometheus text by `--metrics ADDR`.
//!
//! Hot paths only ever do relaxed `fetch_add`s on their own reactor's shard (one cache line per
//! reactor), so counting costs no cross-core traffic; the scrape sums the shards. Nothing here
//! may block or allocate on a hot path.

pub mod histogram;
pub mod http;

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering::Relaxed};

use crate::protocol::ErrorCode;
use crate::transport::tls::Failure;
use histogram::Histogram;

/// Client frame kinds are 1..=8 (WHO and WATCH are version 2's); index 0 counts nothing
/// (kept so kinds index directly).
const KINDS: usize = 9;
/// Error codes are 1..=17 (FORBIDDEN and STALE_ID are version 2's); index 0 counts nothing.
const CODES: usize = 18;
/// Server frame kinds 0x81..=0x89, at index kind - 0x80.
const OUT_KINDS: usize = 10;
const OUT_NAMES: [&str; OUT_KINDS] = [
    "", "WELCOME", "JOINED", "LEFT", "MSG", "ACK", "PONG", "ERROR", "MEMBERS", "PRESENCE",
];
const KIND_NAMES: [&str; KINDS] = [
    "", "HELLO", "JOIN", "LEAVE", "SEND", "PING", "BYE", "WHO", "WATCH",
];

/// One reactor's counters. Aligned so two reactors never share a cache line.
#[derive(Debug, Default)]
#[repr(align(128))]
pub struct Shard {
    pub frames_in: [AtomicU64; KINDS],
    /// Server frame kinds 0x81..=0x89, at index kind - 0x80.
    pub frames_out: [AtomicU64; OUT_KINDS],
    pub errors: [AtomicU64; CODES],
    /// MSG frames queued to members (live and replayed): the fanout.
    pub delivered: AtomicU64,
    pub bytes_in: AtomicU64,
    pub bytes_out: AtomicU64,
    pub accepted: AtomicU64,
    pub refused: AtomicU64,
    /// Gauges, refreshed by the reactor's timer: connections by state.
    pub handshake: AtomicU64,
    pub ready: AtomicU64,
    pub closing: AtomicU64,
    /// TLS: handshakes completed, handshakes failed by `Failure` (in `Failure::ALL` order),
    /// and a gauge of TLS connections open.
    pub tls_established: AtomicU64,
    pub tls_failures: [AtomicU64; Failure::ALL.len()],
    pub tls_open: AtomicU64,
    /// A gauge of WebSocket connections open (past their upgrade).
    pub websocket_open: AtomicU64,
}

impl Shard {
    pub fn frame_in(&self, kind: u8) {
        if let Some(c) = self.frames_in.get(usize::from(kind)) {
            c.fetch_add(1, Relaxed);
        }
    }

    pub fn frame_out(&self, kind: u8, count: u64) {
        if let Some(c) = self.frames_out.get(usize::from(kind.wrapping_sub(0x80))) {
            c.fetch_add(count, Relaxed);
        }
    }

    pub fn error(&self, code: ErrorCode) {
        if let Some(c) = self.errors.get(usize::from(code.as_u16())) {
            c.fetch_add(1, Relaxed);
        }
    }

    pub fn tls_failed(&self, failure: Failure) {
        let i = Failure::ALL.iter().position(|&f| f == failure);
        if let Some(c) = i.and_then(|i| self.tls_failures.get(i)) {
            c.fetch_add(1, Relaxed);
        }
    }

    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Relaxed);
    }
}

/// What the sequencer and the log report.
#[derive(Debug, Default)]
pub struct StoreGauges {
    pub stored: AtomicU64,
    pub batches: AtomicU64,
    pub failed_batches: AtomicU64,
    pub log_bytes: AtomicU64,
    /// Keyed SENDs answered with the seq they were stored as before (exactly-once retries).
    pub retries: AtomicU64,
    /// `(user, client)` pairs the dedupe table remembers.
    pub dedupe_pairs: AtomicU64,
    /// Each fsync of the log.
    pub fsync: Histogram,
    /// Where a SEND's time goes before it is ACKed and fanned out, stage by stage: from the
    /// reactor handing it over to the sequencer taking it into a batch; the batch's write and
    /// sync; and from the sequencer posting to a reactor's mailbox to that reactor taking it.
    pub send_queue: Histogram,
    pub commit: Histogram,
    pub mail_wait: Histogram,
}

impl StoreGauges {
    pub fn fsync(&self, micros: u64) {
        self.fsync.observe(micros);
    }
}

/// Whether the JetStream engine has NATS (`--store jetstream`); `Off` with the local log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EngineState {
    Off,
    Up,
    Down,
}

/// What the JetStream engine reports.
#[derive(Debug, Default)]
pub struct EngineGauges {
    /// An [`EngineState`]: 0 off, 1 up, 2 down.
    state: AtomicU8,
    pub publishes: AtomicU64,
    pub retries: AtomicU64,
    pub failures: AtomicU64,
    /// PubAcks naming a seq the stream holds another message at: answered STORAGE.
    pub conflicts: AtomicU64,
    /// Keys read back from rooms' streams when this node loaded them.
    pub keys_rebuilt: AtomicU64,
    /// Presence rosters this node sent to the others.
    pub rosters_sent: AtomicU64,
    /// Presence rosters of other nodes taken in.
    pub rosters_heard: AtomicU64,
    /// Messages on a presence subject that were not rosters, or came from a node over the
    /// limit: ignored.
    pub rosters_refused: AtomicU64,
    /// From a SEND reaching the engine to its PubAck, retries included.
    pub puback: Histogram,
}

impl EngineGauges {
    pub fn set_state(&self, state: EngineState) {
        let code = match state {
            EngineState::Off => 0,
            EngineState::Up => 1,
            EngineState::Down => 2,
        };
        self.state.store(code, Relaxed);
    }

    pub fn state(&self) -> EngineState {
        match self.state.load(Relaxed) {
            0 => EngineState::Off,
            1 => EngineState::Up,
            _ => EngineState::Down,
        }
    }

    pub fn published(&self, micros: u64) {
        self.publishes.fetch_add(1, Relaxed);
        self.puback.observe(micros);
    }

    pub fn retried(&self) {
        self.retries.fetch_add(1, Relaxed);
    }

    pub fn failed(&self) {
        self.failures.fetch_add(1, Relaxed);
    }

    pub fn conflicted(&self) {
        self.conflicts.fetch_add(1, Relaxed);
    }
}

#[derive(Debug)]
pub struct Metrics {
    pub shards: Box<[Shard]>,
    pub store: StoreGauges,
    pub jetstream: EngineGauges,
}

impl Metrics {
    pub fn new(reactors: usize) -> Metrics {
        Metrics {
            shards: (0..reactors).map(|_| Shard::default()).collect(),
            store: StoreGauges::default(),
            jetstream: EngineGauges::default(),
        }
    }

    pub fn shard(&self, reactor: usize) -> Option<&Shard> {
        self.shards.get(reactor)
    }

    fn sum(&self, f: impl Fn(&Shard) -> &AtomicU64) -> u64 {
        self.shards.iter().map(|s| f(s).load(Relaxed)).sum()
    }

    /// The Prometheus text exposition of everything.
    pub fn render(&self, rooms: usize) -> String {
        let mut out = String::with_capacity(4096);
        family(
            &mut out,
            "connections",
            "gauge",
            "Open connections by reactor and state.",
        );
        for (i, s) in self.shards.iter().enumerate() {
            for (state, g) in [
                ("handshake", &s.handshake),
                ("ready", &s.ready),
                ("closing", &s.closing),
            ] {
                let _ = writeln!(
                    out,
                    "chatd_connections{{reactor=\"{i}\",state=\"{state}\"}} {}",
                    g.load(Relaxed)
                );
            }
        }
        let lines = [
            (
                "connections_accepted_total",
                "counter",
                "Connections accepted.",
                self.sum(|s| &s.accepted),
            ),
            (
                "connections_refused_total",
                "counter",
                "Connections refused at a connection limit.",
                self.sum(|s| &s.refused),
            ),
            (
                "messages_stored_total",
                "counter",
                "Messages written to the log and acknowledged.",
                self.store.stored.load(Relaxed),
            ),
            (
                "fanout_deliveries_total",
                "counter",
                "MSG frames queued to members, live and replayed.",
                self.sum(|s| &s.delivered),
            ),
            (
                "bytes_in_total",
                "counter",
                "Bytes read from clients.",
                self.sum(|s| &s.bytes_in),
            ),
            (
                "bytes_out_total",
                "counter",
                "Bytes written to clients.",
                self.sum(|s| &s.bytes_out),
            ),
            (
                "log_batches_total",
                "counter",
                "Batches written to the log (group commits).",
                self.store.batches.load(Relaxed),
            ),
            (
                "log_failed_batches_total",
                "counter",
                "Batches the disk refused (answered STORAGE).",
                self.store.failed_batches.load(Relaxed),
            ),
            (
                "log_bytes",
                "gauge",
                "Bytes in all log segments.",
                self.store.log_bytes.load(Relaxed),
            ),
            (
                "send_retries_total",
                "counter",
                "Version 2 SENDs answered with the seq they were stored as before (not stored again).",
                self.store.retries.load(Relaxed),
            ),
            (
                "dedupe_pairs",
                "gauge",
                "User and client pairs whose last message ids the server remembers.",
                self.store.dedupe_pairs.load(Relaxed),
            ),
            ("rooms", "gauge", "Rooms the server holds.", rooms as u64),
            (
                "tls_connections",
                "gauge",
                "TLS connections open, in their handshake or established.",
                self.sum(|s| &s.tls_open),
            ),
            (
                "websocket_connections",
                "gauge",
                "WebSocket connections open (upgraded; counted in chatd_connections too).",
                self.sum(|s| &s.websocket_open),
            ),
            (
                "tls_handshakes_total",
                "counter",
                "TLS handshakes completed.",
                self.sum(|s| &s.tls_established),
            ),
        ];
        for (name, kind, help, value) in lines {
            family(&mut out, name, kind, help);
            let _ = writeln!(out, "chatd_{name} {value}");
        }
        family(
            &mut out,
            "tls_handshake_failures_total",
            "counter",
            "TLS handshakes that failed, by reason.",
        );
        for (i, failure) in Failure::ALL.iter().enumerate() {
            let n: u64 = self
                .shards
                .iter()
                .map(|s| s.tls_failures.get(i).map_or(0, |c| c.load(Relaxed)))
                .sum();
            let reason = failure.name();
            let _ = writeln!(
                out,
                "chatd_tls_handshake_failures_total{{reason=\"{reason}\"}} {n}"
            );
        }
        family(
            &mut out,
            "frames_in_total",
            "counter",
            "Frames received, by kind.",
        );
        for (k, name) in KIND_NAMES.iter().enumerate().skip(1) {
            let n: u64 = self
                .shards
                .iter()
                .map(|s| s.frames_in.get(k).map_or(0, |c| c.load(Relaxed)))
                .sum();
            let _ = writeln!(out, "chatd_frames_in_total{{kind=\"{name}\"}} {n}");
        }
        family(
            &mut out,
            "frames_out_total",
            "counter",
            "Frames sent whole, by kind.",
        );
        for (i, name) in OUT_NAMES.iter().enumerate().skip(1) {
            let n: u64 = self
                .shards
                .iter()
                .map(|s| s.frames_out.get(i).map_or(0, |c| c.load(Relaxed)))
                .sum();
            let _ = writeln!(out, "chatd_frames_out_total{{kind=\"{name}\"}} {n}");
        }
        family(
            &mut out,
            "errors_total",
            "counter",
            "ERROR frames sent, by code (SLOW_CONSUMER and RATE_LIMITED included).",
        );
        for code in ErrorCode::ALL {
            let i = usize::from(code.as_u16());
            let n: u64 = self
                .shards
                .iter()
                .map(|s| s.errors.get(i).map_or(0, |c| c.load(Relaxed)))
                .sum();
            let _ = writeln!(out, "chatd_errors_total{{code=\"{code}\"}} {n}");
        }
        let histograms = [
            (
                &self.store.fsync,
                "fsync",
                "Time each fsync of the log took.",
            ),
            (
                &self.store.send_queue,
                "send_queue",
                "Time from a reactor handing a SEND to the sequencer to its batch starting.",
            ),
            (
                &self.store.commit,
                "commit",
                "Time a batch took to be written to the log (and synced, under --fsync always).",
            ),
            (
                &self.store.mail_wait,
                "mail_wait",
                "Time from the sequencer posting ACKs and advanced rooms to a reactor taking them.",
            ),
        ];
        for (h, name, help) in histograms {
            h.render(&mut out, name, help);
        }
        self.render_jetstream(&mut out);
        out
    }

    /// The engine's figures, with `--store jetstream` only.
    fn render_jetstream(&self, out: &mut String) {
        let js = &self.jetstream;
        let up = match js.state() {
            EngineState::Off => return,
            EngineState::Up => 1,
            EngineState::Down => 0,
        };
        let lines = [
            (
                "jetstream_up",
                "gauge",
                "1 while the engine has a NATS connection, 0 while it is reconnecting.",
                up,
            ),
            (
                "jetstream_publishes_total",
                "counter",
                "SENDs JetStream confirmed (PubAck).",
                js.publishes.load(Relaxed),
            ),
            (
                "jetstream_retries_total",
                "counter",
                "Publishes tried again within their SEND's deadline.",
                js.retries.load(Relaxed),
            ),
            (
                "jetstream_failures_total",
                "counter",
                "SENDs answered STORAGE: no PubAck within --nats-ack-timeout, or one that could not be confirmed.",
                js.failures.load(Relaxed),
            ),
            (
                "jetstream_conflicts_total",
                "counter",
                "PubAcks whose seq the stream holds another message at: answered STORAGE, not ACK.",
                js.conflicts.load(Relaxed),
            ),
            (
                "jetstream_keys_rebuilt_total",
                "counter",
                "Keys of keyed SENDs read back from a room's stream when this node loaded the room.",
                js.keys_rebuilt.load(Relaxed),
            ),
            (
                "jetstream_rosters_sent_total",
                "counter",
                "Presence rosters this node sent to the other nodes (who is here, per room).",
                js.rosters_sent.load(Relaxed),
            ),
            (
                "jetstream_rosters_heard_total",
                "counter",
                "Presence rosters of other nodes this node took in.",
                js.rosters_heard.load(Relaxed),
            ),
            (
                "jetstream_rosters_refused_total",
                "counter",
                "Messages on a presence subject that were not rosters, or from a node over the \
                 limit of nodes per room: ignored.",
                js.rosters_refused.load(Relaxed),
            ),
        ];
        for (name, kind, help, value) in lines {
            family(out, name, kind, help);
            let _ = writeln!(out, "chatd_{name} {value}");
        }
        js.puback.render(
            out,
            "jetstream_puback",
            "Time from a SEND reaching the engine to its PubAck, retries included.",
        );
    }
}

fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(
        out,
        "# HELP chatd_{name} {help}\n# TYPE chatd_{name} {kind}"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_are_summed_and_histogram_is_cumulative() {
        let m = Metrics::new(2);
        m.shards[0].frame_in(crate::protocol::kind::SEND);
        m.shards[1].frame_in(crate::protocol::kind::SEND);
        m.shards[1].frame_in(0x7f);
        m.shards[0].error(ErrorCode::RateLimited);
        m.store.fsync(80);
        m.store.fsync(300);
        m.store.fsync(5_000_000);
        let text = m.render(3);
        assert!(
            text.contains("chatd_frames_in_total{kind=\"SEND\"} 2"),
            "{text}"
        );
        assert!(text.contains("chatd_errors_total{code=\"RATE_LIMITED\"} 1"));
        assert!(text.contains("chatd_fsync_seconds_bucket{le=\"0.0001\"} 1"));
        assert!(text.contains("chatd_fsync_seconds_bucket{le=\"0.0005\"} 2"));
        assert!(text.contains("chatd_fsync_seconds_bucket{le=\"+Inf\"} 3"));
        assert!(text.contains("chatd_fsync_seconds_count 3"));
        assert!(text.contains("chatd_rooms 3"));
    }

    #[test]
    fn version_2_kinds_and_codes_are_counted() {
        use crate::protocol::kind;
        let m = Metrics::new(1);
        m.shards[0].frame_in(kind::WHO);
        m.shards[0].frame_in(kind::WATCH);
        m.shards[0].frame_out(kind::MEMBERS, 2);
        m.shards[0].frame_out(kind::PRESENCE, 3);
        m.shards[0].error(ErrorCode::Forbidden);
        m.shards[0].error(ErrorCode::StaleId);
        let text = m.render(0);
        for line in [
            "chatd_frames_in_total{kind=\"WHO\"} 1",
            "chatd_frames_in_total{kind=\"WATCH\"} 1",
            "chatd_frames_out_total{kind=\"MEMBERS\"} 2",
            "chatd_frames_out_total{kind=\"PRESENCE\"} 3",
            "chatd_errors_total{code=\"FORBIDDEN\"} 1",
            "chatd_errors_total{code=\"STALE_ID\"} 1",
        ] {
            assert!(text.contains(line), "{line} missing from {text}");
        }
    }
}
