//! `fanout` and `rooms`: P publishers and S subscribers over K rooms (fanout is K = 1), on any
//! of the three systems. Subscriber i is in room i mod K; publisher p sends its messages to
//! the rooms in turn, numbering them per room, so each subscriber sees, from each publisher, a
//! sequence 1, 2, 3, ... that it checks for loss, duplicates and reordering (`track`), and
//! each message's send stamp gives its end-to-end latency. Publishers send at most `window`
//! unanswered, at full speed or paced at `rate` msgs/s in all, for `secs` seconds or
//! `messages` each; then subscribers get until nothing has arrived for a while to catch up.

mod driver;

pub use driver::Ends;

use crate::stats::Latency;
use crate::track::Tally;
use crate::wire::Kind;

/// The shape of one pub/sub run.
#[derive(Debug, Clone, PartialEq)]
pub struct PubSub {
    pub kind: Kind,
    pub publishers: usize,
    pub subscribers: usize,
    pub rooms: usize,
    pub size: usize,
    pub window: usize,
    /// Messages per second over all publishers; `None`: as fast as the answers come.
    pub rate: Option<f64>,
    /// Per publisher; `None`: until `secs` are up.
    pub messages: Option<u64>,
    pub secs: f64,
    pub room: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shape(publishers: usize, rooms: usize) -> PubSub {
        PubSub {
            kind: Kind::Chatd,
            publishers,
            subscribers: 1,
            rooms,
            size: 1,
            window: 1,
            rate: None,
            messages: None,
            secs: 1.0,
            room: "r".into(),
        }
    }

    #[test]
    fn every_room_has_a_publisher_and_none_has_two_when_rooms_outnumber_them() {
        let ps = shape(3, 7);
        let mut all: Vec<usize> = (0..3).flat_map(|p| ps.rooms_of(p)).collect();
        all.sort_unstable();
        assert_eq!(all, (0..7).collect::<Vec<_>>());
        assert_eq!(ps.rooms_of(1), [1, 4]);
        assert_eq!(shape(10, 4).rooms_of(9), [1]);
    }
}

/// What a pub/sub run measured.
#[derive(Debug, Default)]
pub struct Measured {
    /// From the common start to the last delivery (or the publishers' end, if later).
    pub secs: f64,
    /// From the common start to the last publisher's last answer.
    pub pub_secs: f64,
    pub published: u64,
    pub acked: u64,
    /// Deliveries the subscribers were owed: for each, what was published to its room.
    pub expected: u64,
    pub tally: Tally,
    /// End-to-end: publisher's stamp to the subscriber's read.
    pub latency: Latency,
    pub errors: u64,
    pub failures: Vec<String>,
    pub bench_cpu_secs: f64,
    /// Server CPU seconds spent between the start and the end (when its pid is known).
    pub server_cpu_secs: Option<f64>,
}

impl PubSub {
    pub fn room_name(&self, i: usize) -> String {
        format!("{}-{}", self.room, i % self.rooms.max(1))
    }

    /// The rooms publisher `p` sends to: its share of the K rooms (room r belongs to
    /// publisher r mod P), or room p mod K when there are more publishers than rooms. chatd
    /// publishers join each, and chatd limits the rooms one connection may join.
    pub fn rooms_of(&self, p: usize) -> Vec<usize> {
        let (pubs, rooms) = (self.publishers.max(1), self.rooms.max(1));
        if pubs >= rooms {
            vec![p % rooms]
        } else {
            (0..rooms).filter(|r| r % pubs == p).collect()
        }
    }

    /// Runs against the server at `server`.
    ///
    /// # Errors
    /// No connection could be set up.
    pub fn run(&self, server: &crate::server::Server) -> Result<Measured, String> {
        driver::drive(self, server)
    }

    /// Runs with the publishers and the subscribers each at their own end.
    ///
    /// # Errors
    /// No connection could be set up.
    pub fn run_to(&self, at: &Ends<'_>) -> Result<Measured, String> {
        driver::drive_to(self, at)
    }
}
