//! NATS's side of the `Wire`, in its text protocol: `CONNECT` then `PING` (the `PONG` means
//! ready), `SUB room sid` then `PING` (the `PONG` means the subscription is in place, since
//! the server handles a connection's commands in order), `PUB room n`, pushed
//! `MSG room sid [reply] n`, and `PONG` to the server's `PING`. Publisher connections set
//! `verbose` so that each PUB is answered with `+OK`.

use std::collections::VecDeque;

use super::{In, Wire, line};

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
                let len = args
                    .rsplit(|b| *b == b' ')
                    .next()
                    .and_then(|w| std::str::from_utf8(w).ok()?.parse::<usize>().ok())
                    .ok_or_else(|| format!("bad MSG line {:?}", String::from_utf8_lossy(head)))?;
                if rest.len() < n + len + 2 {
                    return Ok(used);
                }
                used += n + len + 2;
                on(In::Message(rest.get(n..n + len).unwrap_or_default()));
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pongs_mean_what_their_pings_asked_and_oks_skip_the_setup() {
        let mut n = Nats::new(true);
        let mut out = Vec::new();
        n.hello(&mut out);
        n.subscribe("r", &mut out);
        let wire = b"INFO {}\r\n+OK\r\nPONG\r\n+OK\r\nPONG\r\n+OK\r\nPING\r\n\
                     MSG r 1 5\r\nhello\r\nMSG r 1 rep 2\r\nhi\r\nMSG r 1 9\r\npart";
        let mut got = Vec::new();
        out.clear();
        let used = n
            .parse(wire, &mut out, &mut |e| got.push(format!("{e:?}")))
            .expect("valid");
        assert_eq!(
            got,
            [
                "Other",
                "Ready",
                "Subscribed",
                "Ack",
                "Message([104, 101, 108, 108, 111])",
                "Message([104, 105])"
            ]
        );
        assert_eq!(out, b"PONG\r\n", "the server's PING is answered");
        assert_eq!(wire.get(used..), Some(&b"MSG r 1 9\r\npart"[..]));
    }
}
