//! NATS's side of the `Wire`, in its text protocol: `CONNECT` then `PING` (the `PONG` means
//! ready), `SUB room sid` then `PING` (the `PONG` means the subscription is in place, since
//! the server handles a connection's commands in order), `PUB room n`, pushed
//! `MSG room sid [reply] n`, and `PONG` to the server's `PING`. Publisher connections set
//! `verbose` so that each PUB is answered with `+OK`. A MSG's payload is taken by the size
//! its line gives, never scanned, but its CRLF must follow it.

use std::collections::VecDeque;

use super::{In, Wire, line};
use crate::payload::digits;

pub struct Nats {
    verbose: bool,
    /// `+OK`s still owed for CONNECT and SUB, before those that answer a PUB.
    skip_ok: u64,
    /// What each of our PINGs' PONG means, oldest first.
    pongs: VecDeque<In<'static>>,
    sid: u64,
}

impl Nats {
    pub fn new(verbose: bool) -> Nats {
        Nats {
            verbose,
            skip_ok: 0,
            pongs: VecDeque::new(),
            sid: 0,
        }
    }
}

impl Wire for Nats {
    fn hello(&mut self, out: &mut Vec<u8>) {
        let connect = format!(
            "CONNECT {{\"verbose\":{},\"pedantic\":false,\"name\":\"chat-bench\"}}\r\nPING\r\n",
            self.verbose
        );
        out.extend_from_slice(connect.as_bytes());
        self.skip_ok += u64::from(self.verbose);
        self.pongs.push_back(In::Ready);
    }

    fn subscribe(&mut self, room: &str, out: &mut Vec<u8>) {
        self.sid += 1;
        out.extend_from_slice(format!("SUB {room} {}\r\nPING\r\n", self.sid).as_bytes());
        self.skip_ok += u64::from(self.verbose);
        self.pongs.push_back(In::Subscribed);
    }

    fn publish(&mut self, room: &str, text: &str, out: &mut Vec<u8>) {
        out.extend_from_slice(format!("PUB {room} {}\r\n", text.len()).as_bytes());
        out.extend_from_slice(text.as_bytes());
        out.extend_from_slice(b"\r\n");
    }

    fn publisher_subscribes(&self) -> bool {
        false
    }

    fn parse(
        &mut self,
        buf: &[u8],
        out: &mut Vec<u8>,
        on: &mut dyn FnMut(In<'_>),
    ) -> Result<usize, String> {
        let mut used = 0;
        loop {
            let rest = buf.get(used..).unwrap_or_default();
            let Some((head, n)) = line(rest) else {
                return Ok(used);
            };
            if let Some(args) = head.strip_prefix(b"MSG ") {
                let len = msg_size(args)
                    .ok_or_else(|| format!("bad MSG line {:?}", String::from_utf8_lossy(head)))?;
                let end = n
                    .checked_add(len)
                    .ok_or_else(|| format!("MSG size {len} too large"))?;
                let (Some(payload), Some(crlf)) = (rest.get(n..end), rest.get(end..end + 2)) else {
                    return Ok(used);
                };
                if crlf != b"\r\n" {
                    return Err(format!("MSG payload of {len} bytes not followed by CRLF"));
                }
                used += end + 2;
                on(In::Message(payload));
                continue;
            }
            used += n;
            if head == b"PING" {
                out.extend_from_slice(b"PONG\r\n");
            } else if head == b"PONG" {
                on(self.pongs.pop_front().unwrap_or(In::Other));
            } else if head == b"+OK" {
                if self.skip_ok > 0 {
                    self.skip_ok -= 1;
                } else {
                    on(In::Ack);
                }
            } else if let Some(e) = head.strip_prefix(b"-ERR ") {
                on(In::Error(String::from_utf8_lossy(e).into_owned()));
            } else {
                on(In::Other);
            }
        }
    }
}

/// The payload size a MSG line's arguments (`subject sid [reply] size`) end with.
fn msg_size(args: &[u8]) -> Option<usize> {
    let mut words = args.split(|b| *b == b' ');
    let size = words.next_back()?;
    if !(2..=3).contains(&words.count()) {
        return None;
    }
    usize::try_from(digits(size)?).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    const SESSION: &[u8] = b"INFO {}\r\n+OK\r\nPONG\r\n+OK\r\nPONG\r\n+OK\r\nPING\r\n\
                     MSG r 1 5\r\nhello\r\nMSG r 1 rep 2\r\nhi\r\nMSG r 1 4\r\n\xff\r\n\n\r\n\
                     MSG r 1 0\r\n\r\nMSG r 1 9\r\npart";

    fn session_events() -> Vec<String> {
        [
            "Other",
            "Ready",
            "Subscribed",
            "Ack",
            "Message([104, 101, 108, 108, 111])",
            "Message([104, 105])",
            "Message([255, 13, 10, 10])",
            "Message([])",
        ]
        .map(String::from)
        .to_vec()
    }

    /// The events, the replies written and the bytes kept.
    type Fed = (Vec<String>, Vec<u8>, Vec<u8>);

    /// A publisher's wire after `hello` and one `subscribe`, and what `parse` made of `reads`
    /// fed one after the other into a buffer that keeps what a parse left, as the driver does.
    fn fed(reads: &[&[u8]]) -> Result<Fed, String> {
        let mut n = Nats::new(true);
        let mut out = Vec::new();
        n.hello(&mut out);
        n.subscribe("r", &mut out);
        out.clear();
        let (mut buf, mut got) = (Vec::new(), Vec::new());
        for r in reads {
            buf.extend_from_slice(r);
            let used = n.parse(&buf, &mut out, &mut |e| got.push(format!("{e:?}")))?;
            buf.drain(..used);
        }
        Ok((got, out, buf))
    }

    #[test]
    fn pongs_mean_what_their_pings_asked_and_oks_skip_the_setup() {
        let (got, out, kept) = fed(&[SESSION]).expect("valid");
        assert_eq!(got, session_events());
        assert_eq!(out, b"PONG\r\n", "the server's PING is answered");
        assert_eq!(kept, b"MSG r 1 9\r\npart");
    }

    #[test]
    fn a_session_split_across_reads_at_every_byte_gives_the_same_events() {
        let whole = fed(&[SESSION]);
        for cut in 0..=SESSION.len() {
            let (a, b) = SESSION.split_at(cut);
            assert_eq!(fed(&[a, b]), whole, "cut at {cut}");
        }
        let bytes: Vec<&[u8]> = SESSION.chunks(1).collect();
        assert_eq!(fed(&bytes), whole, "a byte per read");
    }

    #[test]
    fn malformed_msgs_are_errors() {
        for bad in [
            &b"MSG r 1 x\r\n"[..],
            b"MSG r 1 -1\r\n",
            b"MSG r 1\r\n",
            b"MSG r 1 rep x 5\r\n",
            b"MSG r 1 5\r\nhelloXY",
            b"MSG r 1 5\r\nhello\n\r",
            b"MSG r 1 99999999999999999999\r\n",
        ] {
            assert!(fed(&[bad]).is_err(), "{:?}", String::from_utf8_lossy(bad));
        }
    }
}
