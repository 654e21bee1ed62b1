//! `chat-bench presence --nodes 2`: "who is here" across two chatd nodes. One nats-server
//! with JetStream, two `chatd serve --store jetstream --jetstream-replicas 1` nodes sharing a
//! users file; the M members join and WATCH the room on node A, the C churners join and leave
//! it on node B, and node B's set of users reaches A as rosters on plain NATS subjects (looked
//! for every 100 ms tick). It measures the delay from a churner's JOINED or LEFT answer on B
//! to each member's PRESENCE on A, and both nodes', the NATS server's and the generator's CPU.
//!
//! Accounting is the single-node mode's (`presence`): every member must get exactly one
//! PRESENCE per churner event, in order (here, gone, here...), none missed and none twice.
//! Warm-up: node B follows the room only once one of its users joined it, so an idle anchor
//! user joins on B first, and the churners start only once every member has its MEMBERS
//! snapshot and has been told the anchor is here (so A has heard B); the anchor is not
//! counted. A churner stays in and out of the room at least `MIN_DWELL`: a node tells the
//! others what a user did within one tick only as far as one visit or one return, so more
//! changes of one churner within a tick would count as missed events. It never touches processes or directories but its own.

use std::fmt::Write as _;
use std::io::{self, Write as _};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use chatd::client::Reply;
use chatd::protocol::ClientFrame;

use crate::cluster::nats::Nats;
use crate::cluster::nodes::Nodes;
use crate::os::usage_of;
use crate::presence::{
    ANCHOR, DRAIN, Members, Pace, Presence, ROOM, SETUP, Tally, add_users, generator_bound, login,
    show, spread, start_churners, wait, wait_for_login,
};
use crate::stats::{Latency, Percentiles};

/// The shortest stay in (and out of) the room: three presence ticks, so that a tick late by
/// a busy machine still sees each departure and return.
const MIN_DWELL: Duration = Duration::from_millis(300);

/// One run's figures.
#[derive(Debug, Clone, Default)]
pub struct NodesRow {
    pub members: usize,
    pub churners: usize,
    /// Joins plus leaves the churners completed.
    pub events: u64,
    pub secs: f64,
    /// PRESENCE frames the members got for churners.
    pub frames: u64,
    pub violations: usize,
    /// From a churner's answer on B to a member's PRESENCE on A, over every receipt.
    pub delay: Percentiles,
    pub node_a_cpu_secs: Option<f64>,
    pub node_b_cpu_secs: Option<f64>,
    pub nats_cpu_secs: Option<f64>,
    pub generator_cpu_secs: Option<f64>,
}

impl NodesRow {
    pub fn json(&self) -> String {
        let opt = |v: Option<f64>| v.map_or_else(|| "null".into(), |x| format!("{x:.3}"));
        format!(
            "{{\"scenario\":\"presence\",\"nodes\":2,\"members\":{},\"churners\":{},\
             \"events\":{},\"secs\":{:.3},\"frames\":{},\"violations\":{},\
             \"delay_p50_us\":{},\"delay_p99_us\":{},\"delay_max_us\":{},\
             \"node_a_cpu_secs\":{},\"node_b_cpu_secs\":{},\"nats_cpu_secs\":{},\
             \"generator_cpu_secs\":{}}}",
            self.members,
            self.churners,
            self.events,
            self.secs,
            self.frames,
            self.violations,
            self.delay.p50_us,
            self.delay.p99_us,
            self.delay.max_us,
            opt(self.node_a_cpu_secs),
            opt(self.node_b_cpu_secs),
            opt(self.nats_cpu_secs),
            opt(self.generator_cpu_secs)
        )
    }

    fn generator_bound(&self) -> bool {
        generator_bound(self.generator_cpu_secs, self.secs)
    }
}

/// The churners needed for `rate` events per second with each staying `MIN_DWELL`.
fn churners_for(asked: usize, rate: u32) -> usize {
    let needed = (f64::from(rate) * MIN_DWELL.as_secs_f64()).ceil() as usize;
    asked.max(needed)
}

/// Runs every run and prints a JSON line per run and a table of medians. Returns whether
/// every run balanced.
///
/// # Errors
/// NATS, a node or the load could not be set up.
pub fn run(p: &Presence) -> Result<bool, String> {
    let churners = churners_for(p.churners, p.rate);
    if churners != p.churners {
        eprintln!(
            "chat-bench presence --nodes 2: {} churners at {} events/s would stay {} ms in \
             the room, under {} ms; using {churners} churners",
            p.churners,
            p.rate,
            p.churners as u64 * 1000 / u64::from(p.rate),
            MIN_DWELL.as_millis()
        );
    }
    let mut rows = Vec::new();
    for rep in 1..=p.runs {
        eprintln!(
            "chat-bench presence: {} members on node A, {churners} churners on node B, run {rep}/{}",
            p.members, p.runs
        );
        let row = once(p, churners)?;
        println!("{}", row.json());
        let _ = io::stdout().flush();
        rows.push(row);
    }
    print!("{}", table(p, churners, &rows));
    Ok(rows.iter().all(|r| r.violations == 0))
}

fn table(p: &Presence, churners: usize, rows: &[NodesRow]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "\nmedians of {} runs (min-max); 2 nodes, {} members on A (watching), {churners} \
         churners on B, {} events/s asked\n",
        p.runs, p.members, p.rate
    );
    let _ = writeln!(
        out,
        "| events/s | PRESENCE frames/s | delay p50 ms | delay p99 ms | delay max ms | \
         node A cpu s | node B cpu s | nats cpu s | generator cpu s | violations |"
    );
    let _ = writeln!(out, "|---|---|---|---|---|---|---|---|---|---|");
    let ms = |us: u64| Some(us as f64 / 1000.0);
    let per_sec = |n: u64, secs: f64| (secs > 0.0).then(|| n as f64 / secs);
    let bound = rows.iter().any(NodesRow::generator_bound);
    let _ = writeln!(
        out,
        "| {} | {} | {} | {} | {} | {} | {} | {} | {}{} | {} |",
        show(spread(rows, |r| per_sec(r.events, r.secs)), 0),
        show(spread(rows, |r| per_sec(r.frames, r.secs)), 0),
        show(spread(rows, |r| ms(r.delay.p50_us)), 1),
        show(spread(rows, |r| ms(r.delay.p99_us)), 1),
        show(spread(rows, |r| ms(r.delay.max_us)), 1),
        show(spread(rows, |r| r.node_a_cpu_secs), 2),
        show(spread(rows, |r| r.node_b_cpu_secs), 2),
        show(spread(rows, |r| r.nats_cpu_secs), 2),
        show(spread(rows, |r| r.generator_cpu_secs), 2),
        if bound { " (generator-bound)" } else { "" },
        rows.iter().map(|r| r.violations).sum::<usize>()
    );
    out
}

/// Where in its period churner `i` starts, as a fraction: the golden-ratio sequence, so that
/// the churners' events fall at every phase of node B's tick rather than all at one (an even
/// split of a period that is a whole number of ticks would give them all the same phase, and
/// the same delay).
fn spread_phase(i: usize) -> f64 {
    const GOLDEN: f64 = 0.618_033_988_749_895;
    (i as f64 * GOLDEN).fract()
}

/// CPU seconds of node `i` so far.
fn node_cpu(nodes: &Nodes, i: usize) -> Option<f64> {
    usage_of(*nodes.pids().get(i)?).cpu_secs
}

/// One run on a fresh NATS server and fresh nodes.
fn once(p: &Presence, churners: usize) -> Result<NodesRow, String> {
    let nats = Nats::start_servers(&p.nats, 1)?;
    let nodes = Nodes::start(&p.chatd, &nats.urls(), 2, p.members + churners + 16, 1)?;
    let (a, b) = match nodes.nodes.as_slice() {
        [a, b] => (a.addr, b.addr),
        _ => return Err("two nodes were asked for".into()),
    };
    let members: Vec<(String, String)> = (0..p.members)
        .map(|i| (format!("m{i}"), format!("token-m{i}")))
        .collect();
    let churner_users: Vec<(String, String)> = (0..churners)
        .map(|i| (format!("c{i}"), format!("token-c{i}")))
        .collect();
    let anchor = (ANCHOR.to_string(), format!("token-{ANCHOR}"));
    for i in 0..2 {
        let all = members.iter().chain(&churner_users);
        add_users(&nodes.data_dir(i), all.chain(std::iter::once(&anchor)))?;
    }
    wait_for_login(a, &anchor)?;
    wait_for_login(b, &anchor)?;

    let mut room = Members::open(a, &members, true, true)?;
    room.until_ready()?;
    // The anchor opens the room on B; once every member heard of it, A has B's roster.
    let mut anchor_conn = login(b, &anchor.0, &anchor.1).map_err(|e| format!("{ANCHOR}: {e}"))?;
    let join = ClientFrame::Join {
        room: ROOM,
        after: 0,
        limit: 0,
    };
    anchor_conn
        .send(&join)
        .map_err(|e| format!("{ANCHOR}: {e}"))?;
    wait(&mut anchor_conn, ANCHOR, |r| {
        matches!(r, Reply::Joined { .. })
    })?;
    let deadline = Instant::now() + SETUP;
    while room.tallies.iter().any(|t| t.anchor == 0) {
        if Instant::now() > deadline {
            return Err("the members on node A never heard of the anchor on node B".into());
        }
        room.turn(Duration::from_millis(50))?;
    }

    let stop = Arc::new(AtomicBool::new(false));
    let cpu = || {
        (
            node_cpu(&nodes, 0),
            node_cpu(&nodes, 1),
            nats.cpu_secs(),
            usage_of(std::process::id()).cpu_secs,
        )
    };
    let before = cpu();
    let started = Instant::now();
    let per_churner = f64::from(p.rate) / churners as f64;
    let period = Duration::from_secs_f64(2.0 / per_churner);
    let pace = |i| Pace {
        events_per_sec: per_churner,
        hold: true,
        offset: period.mul_f64(spread_phase(i)),
    };
    let handles = start_churners(b, churner_users, pace, &stop)?;
    let churn_for = Duration::from_secs_f64(p.secs);
    while started.elapsed() < churn_for {
        room.turn(Duration::from_millis(50))?;
    }
    stop.store(true, Ordering::Relaxed);
    // The members are read on while the churners finish their last period, or what arrives
    // meanwhile would be stamped late.
    while handles.iter().any(|h| !h.is_finished()) {
        room.turn(Duration::from_millis(10))?;
    }
    let mut answers = Vec::new();
    for h in handles {
        answers.push(h.join().map_err(|_| "a churner panicked")??);
    }
    let secs = started.elapsed().as_secs_f64();
    let events: u64 = answers.iter().map(|a| a.len() as u64).sum();
    let drain_until = Instant::now() + DRAIN;
    while !room.all_have(events) && Instant::now() < drain_until {
        room.turn(Duration::from_millis(50))?;
    }
    let after = cpu();
    let (violations, delay) = account(&room.tallies, &answers);
    room.report_violations(
        violations,
        &format!("were not told each of the {events} churner events exactly once and in order"),
    );
    let frames = room.frames();
    drop(room);
    drop(anchor_conn);
    nodes.stop()?;
    drop(nats);
    let diff = |a: Option<f64>, b: Option<f64>| a.zip(b).map(|(a, b)| b - a);
    Ok(NodesRow {
        members: p.members,
        churners,
        events,
        secs,
        frames,
        violations,
        delay: delay.percentiles(),
        node_a_cpu_secs: diff(before.0, after.0),
        node_b_cpu_secs: diff(before.1, after.1),
        nats_cpu_secs: diff(before.2, after.2),
        generator_cpu_secs: diff(before.3, after.3),
    })
}

/// Matches each member's n-th PRESENCE about a churner with that churner's n-th answer: a
/// member is a violation unless it got, for every churner, exactly as many as the churner's
/// events, alternating here and gone from "here". Returns the violations and the delays.
fn account(tallies: &[Tally], answers: &[Vec<Instant>]) -> (usize, Latency) {
    let mut delay = Latency::new();
    let mut violations = 0;
    let mut seen = vec![0usize; answers.len()];
    for tally in tallies {
        seen.iter_mut().for_each(|n| *n = 0);
        let mut wrong = false;
        for &(c, here, at) in &tally.receipts {
            let (Some(n), Some(times)) = (seen.get_mut(c), answers.get(c)) else {
                wrong = true;
                continue;
            };
            // The n-th event of a churner is a join when n is even.
            wrong |= here != (*n % 2 == 0);
            match times.get(*n) {
                Some(answered) => delay.record(at.saturating_duration_since(*answered)),
                None => wrong = true,
            }
            *n += 1;
        }
        wrong |= seen.iter().zip(answers).any(|(n, a)| *n != a.len());
        violations += usize::from(wrong);
    }
    (violations, delay)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn churners_are_raised_so_that_each_stay_outlasts_the_tick() {
        assert_eq!(churners_for(20, 200), 60);
        assert_eq!(churners_for(80, 200), 80);
        assert_eq!(churners_for(2, 20), 6);
    }

    #[test]
    fn a_member_told_twice_or_out_of_order_is_a_violation() {
        let t0 = Instant::now();
        let ms = |n| t0 + Duration::from_millis(n);
        let answers = vec![vec![ms(0), ms(300)]];
        let tally = |receipts: Vec<(usize, bool, Instant)>| Tally {
            churn: receipts.len() as u64,
            anchor: 1,
            receipts,
        };
        let good = tally(vec![(0, true, ms(50)), (0, false, ms(360))]);
        let twice = tally(vec![
            (0, true, ms(50)),
            (0, true, ms(60)),
            (0, false, ms(360)),
        ]);
        let missed = tally(vec![(0, true, ms(50))]);
        let (v, d) = account(std::slice::from_ref(&good), &answers);
        assert_eq!(v, 0);
        let p = d.percentiles();
        assert_eq!((p.count, p.max_us / 1000), (2, 60));
        assert_eq!(account(&[good, twice, missed], &answers).0, 2);
    }
}
