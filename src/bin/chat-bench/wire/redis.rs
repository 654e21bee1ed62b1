//! Redis's side of the `Wire`, in RESP2: `PING` (answered `+PONG`), `SUBSCRIBE room`
//! (answered `*3 subscribe room n`), `PUBLISH room text` (answered `:receivers`), and pushed
//! `*3 message room text`. Only the replies those commands produce are parsed; numbers are
//! read as ASCII digits and a bulk string is taken by its length, its bytes never scanned
//! (a message's text is most of what arrives), but its CRLF must follow it.

use super::{In, Wire, line};
use crate::payload::leading_digits;

#[derive(Default)]
pub struct Redis;

/// One RESP value of the kinds the commands above produce.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Item<'a> {
    Simple(&'a [u8]),
    Error(&'a [u8]),
    Int,
    Bulk(&'a [u8]),
    Nil,
}

fn command(words: &[&[u8]], out: &mut Vec<u8>) {
    out.extend_from_slice(format!("*{}\r\n", words.len()).as_bytes());
    for w in words {
        out.extend_from_slice(format!("${}\r\n", w.len()).as_bytes());
        out.extend_from_slice(w);
        out.extend_from_slice(b"\r\n");
    }
}

/// The number on the line at the front of `buf`, after its type byte (`:1`, `$-1`, `*3`),
/// and the bytes the line takes with its CRLF; `None` until the line is in. The digits are
/// read as they come, without looking for the line's end first.
fn int_line(buf: &[u8]) -> Result<Option<(i64, usize)>, String> {
    let bad = || {
        let shown = buf.get(..buf.len().min(24)).unwrap_or_default();
        format!("bad RESP number line {:?}", String::from_utf8_lossy(shown))
    };
    let negative = buf.get(1) == Some(&b'-');
    let at = 1 + usize::from(negative);
    let rest = buf.get(at..).unwrap_or_default();
    let Some((n, len)) = leading_digits(rest) else {
        // No digit yet, something else, or more digits than a u64 holds.
        return if rest.is_empty() {
            Ok(None)
        } else {
            Err(bad())
        };
    };
    let n = i64::try_from(n).map_err(|_| bad())?;
    let end = at + len;
    match (buf.get(end), buf.get(end + 1)) {
        (Some(b'\r'), Some(b'\n')) => Ok(Some((if negative { -n } else { n }, end + 2))),
        (None, _) | (Some(b'\r'), None) => Ok(None),
        _ => Err(bad()),
    }
}

/// One non-array value at the front of `buf`: `None` if incomplete.
fn item(buf: &[u8]) -> Result<Option<(Item<'_>, usize)>, String> {
    match buf.first() {
        None => Ok(None),
        Some(b':') => Ok(int_line(buf)?.map(|(_, n)| (Item::Int, n))),
        Some(b'$') => {
            let Some((len, n)) = int_line(buf)? else {
                return Ok(None);
            };
            let Ok(len) = usize::try_from(len) else {
                return Ok(Some((Item::Nil, n)));
            };
            let end = n
                .checked_add(len)
                .ok_or_else(|| format!("RESP bulk length {len} too large"))?;
            let (Some(data), Some(crlf)) = (buf.get(n..end), buf.get(end..end + 2)) else {
                return Ok(None);
            };
            if crlf != b"\r\n" {
                return Err(format!("RESP bulk of {len} bytes not followed by CRLF"));
            }
            Ok(Some((Item::Bulk(data), end + 2)))
        }
        Some(_) => {
            let Some((head, n)) = line(buf) else {
                return Ok(None);
            };
            let body = head.get(1..).unwrap_or_default();
            let it = match head.first() {
                Some(b'+') => Item::Simple(body),
                Some(b'-') => Item::Error(body),
                _ => {
                    return Err(format!(
                        "unexpected RESP {:?}",
                        String::from_utf8_lossy(head)
                    ));
                }
            };
            Ok(Some((it, n)))
        }
    }
}

impl Wire for Redis {
    fn hello(&mut self, out: &mut Vec<u8>) {
        command(&[b"PING"], out);
    }

    fn subscribe(&mut self, room: &str, out: &mut Vec<u8>) {
        command(&[b"SUBSCRIBE", room.as_bytes()], out);
    }

    fn publish(&mut self, room: &str, text: &str, out: &mut Vec<u8>) {
        command(&[b"PUBLISH", room.as_bytes(), text.as_bytes()], out);
    }

    fn publisher_subscribes(&self) -> bool {
        false
    }

    fn parse(
        &mut self,
        buf: &[u8],
        _out: &mut Vec<u8>,
        on: &mut dyn FnMut(In<'_>),
    ) -> Result<usize, String> {
        let mut used = 0;
        loop {
            let rest = buf.get(used..).unwrap_or_default();
            if rest.first() != Some(&b'*') {
                let Some((it, n)) = item(rest)? else {
                    return Ok(used);
                };
                used += n;
                on(match it {
                    Item::Simple(b"PONG") => In::Ready,
                    Item::Int => In::Ack,
                    Item::Error(e) => In::Error(String::from_utf8_lossy(e).into_owned()),
                    _ => In::Other,
                });
                continue;
            }
            let Some((count, mut n)) = int_line(rest)? else {
                return Ok(used);
            };
            let mut items = [Item::Nil; 3];
            let mut complete = true;
            for i in 0..usize::try_from(count).unwrap_or(0) {
                match item(rest.get(n..).unwrap_or_default())? {
                    Some((it, m)) => {
                        if let Some(slot) = items.get_mut(i) {
                            *slot = it;
                        }
                        n += m;
                    }
                    None => {
                        complete = false;
                        break;
                    }
                }
            }
            if !complete {
                return Ok(used);
            }
            used += n;
            on(match items {
                [Item::Bulk(b"message"), _, Item::Bulk(text)] => In::Message(text),
                [Item::Bulk(b"subscribe"), ..] => In::Subscribed,
                _ => In::Other,
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn events(bytes: &[u8]) -> (Vec<String>, usize) {
        let mut got = Vec::new();
        let used = Redis
            .parse(bytes, &mut Vec::new(), &mut |e| got.push(format!("{e:?}")))
            .expect("valid RESP");
        (got, used)
    }

    /// What `parse` made of `reads`, fed one after the other into a buffer that keeps what a
    /// parse left, as the driver does.
    fn fed(reads: &[&[u8]]) -> Result<(Vec<String>, usize), String> {
        let (mut buf, mut got) = (Vec::new(), Vec::new());
        for r in reads {
            buf.extend_from_slice(r);
            let used = Redis.parse(&buf, &mut Vec::new(), &mut |e| got.push(format!("{e:?}")))?;
            buf.drain(..used);
        }
        Ok((got, buf.len()))
    }

    const SESSION: &[u8] = b"+PONG\r\n*3\r\n$9\r\nsubscribe\r\n$1\r\nr\r\n:1\r\n:5\r\n\
        *3\r\n$7\r\nmessage\r\n$1\r\nr\r\n$5\r\nhello\r\n-ERR no\r\n\
        *3\r\n$7\r\nmessage\r\n$1\r\nr\r\n$4\r\n\xff\r\n\n\r\n*3\r\n$7\r\nmessage\r\n$1\r\nr\r\n$0\r\n\r\n";

    fn session_events() -> Vec<String> {
        [
            "Ready",
            "Subscribed",
            "Ack",
            "Message([104, 101, 108, 108, 111])",
            "Error(\"ERR no\")",
            "Message([255, 13, 10, 10])",
            "Message([])",
        ]
        .map(String::from)
        .to_vec()
    }

    #[test]
    fn replies_become_events_and_partial_ones_wait() {
        let (got, used) = events(SESSION);
        assert_eq!(used, SESSION.len());
        assert_eq!(got, session_events());
        let (got, used) = events(b"*3\r\n$7\r\nmessage\r\n$1\r\nr\r\n$5\r\nhel");
        assert_eq!((got.len(), used), (0, 0));
    }

    #[test]
    fn a_session_split_across_reads_at_every_byte_gives_the_same_events() {
        for cut in 0..=SESSION.len() {
            let (a, b) = SESSION.split_at(cut);
            assert!(fed(&[a]).is_ok(), "a prefix cut at {cut} is not an error");
            assert_eq!(fed(&[a, b]), Ok((session_events(), 0)), "cut at {cut}");
        }
        let bytes: Vec<&[u8]> = SESSION.chunks(1).collect();
        assert_eq!(fed(&bytes), Ok((session_events(), 0)), "a byte per read");
    }

    #[test]
    fn malformed_replies_are_errors() {
        for bad in [
            &b"?what\r\n"[..],
            b":x1\r\n",
            b":\r\n",
            b"$+5\r\nhello\r\n",
            b"$5\r\nhelloXY",
            b"*3\r\n$7\r\nmessage\r\n$1\r\nr\r\n$5\r\nhello!!",
            b"*x\r\n",
            b"$99999999999999999999\r\n",
        ] {
            assert!(fed(&[bad]).is_err(), "{:?}", String::from_utf8_lossy(bad));
        }
        assert_eq!(int_line(b"$-1\r\n"), Ok(Some((-1, 5))));
        assert_eq!(
            int_line(b":9223372036854775807\r\n+"),
            Ok(Some((i64::MAX, 22)))
        );
        for partial in [&b":"[..], b":-", b":12", b":12\r"] {
            assert_eq!(int_line(partial), Ok(None), "{partial:?}");
        }
        for bad in [
            &b":9223372036854775808\r\n"[..],
            b":-\r\n",
            b":1x\r\n",
            b":1\r\r",
            b":+1\r\n",
        ] {
            assert!(int_line(bad).is_err(), "{:?}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn commands_are_resp_arrays() {
        let mut out = Vec::new();
        Redis.publish("r", "hi", &mut out);
        assert_eq!(out, b"*3\r\n$7\r\nPUBLISH\r\n$1\r\nr\r\n$2\r\nhi\r\n");
    }
}
