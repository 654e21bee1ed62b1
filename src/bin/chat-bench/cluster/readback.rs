//! After the load: every room read back in full (JOIN with `after` 0 and no limit) on every
//! node, and held against the ACKs. On a node other than the one a SEND went through, each
//! ACKed message must be there at the seq its ACK gave, with its text; the seqs must run
//! without a gap, and no text may appear twice. `check` is the pure part.
//!
//! It only reads: it never SENDs.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;

use chatd::client::Reply;
use chatd::protocol::{ClientFrame, ErrorCode};

use super::sender::{Acked, parse_text};
use crate::login::{Target, login, next};
use crate::runner::SPAWN_USER;

/// A JOIN refused with STORAGE is sent again after this pause, at most `JOIN_TRIES` times.
const JOIN_RETRY_AFTER: std::time::Duration = std::time::Duration::from_millis(200);
const JOIN_TRIES: u32 = 10;

/// What one room read back on one node came to.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Checked {
    /// Messages read.
    pub read: u64,
    /// ACKed messages missing at their seq, or with another text there.
    pub lost: u64,
    /// Messages whose text was read before, at another seq.
    pub dups: u64,
    /// Seqs missing between the first one read and the last (or read out of order).
    pub gaps: u64,
    /// Messages of ours that were never ACKed (a STORAGE error, or no answer): an unknown
    /// outcome that turned out stored, which is allowed.
    pub unacked_present: u64,
}

impl Checked {
    pub fn add(&mut self, o: Checked) {
        self.read += o.read;
        self.lost += o.lost;
        self.dups += o.dups;
        self.gaps += o.gaps;
        self.unacked_present += o.unacked_present;
    }
}

/// Holds one room's messages as read (`(seq, text)` in the order they came) against the
/// ACKs of that room.
pub fn check(acked: &[Acked], read: &[(u64, String)]) -> Checked {
    let mut c = Checked {
        read: read.len() as u64,
        ..Checked::default()
    };
    let mut at: HashMap<u64, (u32, u64)> = HashMap::with_capacity(read.len());
    let mut seen: HashSet<(u32, u64)> = HashSet::with_capacity(read.len());
    let mut prev: Option<u64> = None;
    for (seq, text) in read {
        match prev {
            Some(p) if *seq <= p => c.gaps += 1,
            Some(p) => c.gaps += seq - p - 1,
            None => {}
        }
        prev = Some(prev.map_or(*seq, |p| p.max(*seq)));
        let Some(who) = parse_text(text) else {
            continue;
        };
        if !seen.insert(who) {
            c.dups += 1;
        }
        at.insert(*seq, who);
    }
    let mut ours: HashSet<(u32, u64)> = HashSet::with_capacity(acked.len());
    for a in acked {
        ours.insert((a.sender, a.id));
        if at.get(&a.seq) != Some(&(a.sender, a.id)) {
            c.lost += 1;
        }
    }
    c.unacked_present = seen.iter().filter(|w| !ours.contains(w)).count() as u64;
    c
}

/// The ACKed messages of one room that `check` counts as lost, each with what the room holds
/// at its seq instead (`None`: nothing, or not one of ours); at most `n` of them.
pub fn lost(acked: &[Acked], read: &[(u64, String)], n: usize) -> Vec<(Acked, Option<(u32, u64)>)> {
    let at: HashMap<u64, Option<(u32, u64)>> = read
        .iter()
        .map(|(seq, text)| (*seq, parse_text(text)))
        .collect();
    acked
        .iter()
        .filter_map(|a| {
            let there = at.get(&a.seq).copied().flatten();
            (there != Some((a.sender, a.id))).then_some((*a, there))
        })
        .take(n)
        .collect()
}

/// Reads `room` back in full on the node at `addr`: JOINED's head, then every MSG up to it.
///
/// # Errors
/// The connection failed or timed out, or the node refused the JOIN.
pub fn read_room(addr: SocketAddr, token: &str, room: &str) -> Result<Vec<(u64, String)>, String> {
    let target = Target {
        addr,
        user: SPAWN_USER.into(),
        token: token.into(),
    };
    let mut c = login(&target).map_err(|e| format!("{room} on {addr}: {e}"))?;
    let join = ClientFrame::Join {
        room,
        after: 0,
        limit: u32::MAX,
    };
    c.send(&join)
        .map_err(|e| format!("{room} on {addr}: {e}"))?;
    let mut head = None;
    let mut out = Vec::new();
    let mut tries = 1;
    loop {
        // Done once the last seq JOINED announced has come (at once for an empty room).
        if let Some(h) = head
            && out.last().map_or(h == 0, |(s, _)| *s >= h)
        {
            break;
        }
        match next(&mut c).map_err(|e| format!("{room} on {addr}: {e}"))? {
            Reply::Joined {
                room: r, head: h, ..
            } if r == room => head = Some(h),
            Reply::Msg {
                room: r, seq, text, ..
            } if r == room => out.push((seq, text)),
            // "Cannot be read now; try again": so we do, a bounded number of times.
            Reply::Error {
                code, reference: 0, ..
            } if code == ErrorCode::Storage as u16 && tries < JOIN_TRIES => {
                tries += 1;
                std::thread::sleep(JOIN_RETRY_AFTER);
                c.send(&join)
                    .map_err(|e| format!("{room} on {addr}: {e}"))?;
            }
            Reply::Error { message, .. } => {
                return Err(format!("{room} on {addr}: ERROR {message}"));
            }
            _ => {}
        }
    }
    let _ = c.send(&ClientFrame::Bye);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::sender::text_of;

    fn msg(seq: u64, sender: u32, id: u64) -> (u64, String) {
        let mut t = String::new();
        text_of(sender, id, 20, &mut t);
        (seq, t)
    }

    fn acked(seq: u64, sender: u32, id: u64) -> Acked {
        Acked {
            room: 0,
            seq,
            sender,
            id,
            at_ms: 0,
        }
    }

    #[test]
    fn lost_names_what_the_seq_holds_instead() {
        let read = [msg(1, 0, 1), msg(2, 0, 9)];
        let acks = [acked(1, 0, 1), acked(2, 1, 5), acked(3, 1, 6)];
        let l = lost(&acks, &read, 10);
        let got: Vec<_> = l.iter().map(|(a, there)| (a.seq, *there)).collect();
        assert_eq!(got, [(2, Some((0, 9))), (3, None)]);
        assert_eq!(lost(&acks, &read, 1).len(), 1);
    }

    #[test]
    fn a_complete_room_balances() {
        let read = [msg(1, 0, 1), msg(2, 1, 1), msg(3, 0, 2)];
        let acks = [acked(1, 0, 1), acked(2, 1, 1), acked(3, 0, 2)];
        assert_eq!(
            check(&acks, &read),
            Checked {
                read: 3,
                ..Checked::default()
            }
        );
    }

    #[test]
    fn a_missing_or_moved_message_is_lost_and_a_hole_is_a_gap() {
        let read = [msg(1, 0, 1), msg(3, 0, 2)];
        let acks = [acked(1, 0, 1), acked(2, 1, 1), acked(3, 1, 2)];
        let c = check(&acks, &read);
        assert_eq!((c.lost, c.gaps, c.dups), (2, 1, 0));
        assert_eq!(c.unacked_present, 1, "0:2 was stored but never ACKed");
    }

    #[test]
    fn a_text_stored_twice_is_a_duplicate() {
        let read = [msg(1, 0, 1), msg(2, 0, 1), msg(2, 0, 2)];
        let c = check(&[acked(1, 0, 1)], &read);
        assert_eq!((c.dups, c.gaps, c.lost), (1, 1, 0));
    }
}
