//! What a reader process tells its sender through their pipe, in the order of the client's
//! requests: the answers to send as they are, the JOINs and LEAVEs the sender carries out
//! itself (so that JOINED comes before its replay), and the end of the connection.
//!
//! ```text
//! note: tag: u8 | len: u32 (big-endian) | body (len bytes)
//! ```
//!
//! Only the pair's own reader writes the pipe, so a note is never interleaved with another;
//! still, the sender checks every note and ends the connection on one it cannot read. This
//! module must never carry anything the sender would have to look up elsewhere.

use super::log::Tail;
use crate::protocol::{ServerFrame, encode_server};

const REPLY: u8 = 1;
const JOIN: u8 = 2;
const LEAVE: u8 = 3;
const FINISH: u8 = 4;
const CLOSE: u8 = 5;
const HEAD: usize = 5;

/// One note, borrowed from the bytes read from the pipe.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Note<'a> {
    /// A whole encoded server frame, to write to the client as it is.
    Reply(&'a [u8]),
    /// JOIN(room, after, limit), checked and its room created by the reader, with the room's
    /// tail as the reader saw it when it read the JOIN: answer JOINED with that head, replay
    /// up to it, then follow the room live from there. (The sender may get to it only after
    /// the reader stored more SENDs: those are live messages, not history.)
    Join {
        room: &'a str,
        after: u64,
        limit: u32,
        tail: Tail,
    },
    /// LEAVE(room), checked by the reader: stop following the room, answer LEFT.
    Leave { room: &'a str },
    /// BYE, or the client's FIN: write what is owed and the rooms' new messages, then close.
    Finish,
    /// After a fatal ERROR (already sent as a Reply) or at shutdown: write what is owed and
    /// close, with no further message.
    Close,
}

/// Appends the note for a server frame.
pub fn push_reply(frame: &ServerFrame<'_>, out: &mut Vec<u8>) {
    let start = begin(REPLY, out);
    encode_server(frame, out);
    finish(start, out);
}

/// Appends `note`.
pub fn push(note: &Note<'_>, out: &mut Vec<u8>) {
    match *note {
        Note::Reply(frame) => {
            let start = begin(REPLY, out);
            out.extend_from_slice(frame);
            finish(start, out);
        }
        Note::Join {
            room,
            after,
            limit,
            tail,
        } => {
            let start = begin(JOIN, out);
            out.extend_from_slice(&after.to_be_bytes());
            out.extend_from_slice(&limit.to_be_bytes());
            out.extend_from_slice(&tail.head.to_be_bytes());
            out.extend_from_slice(&tail.end.to_be_bytes());
            out.extend_from_slice(room.as_bytes());
            finish(start, out);
        }
        Note::Leave { room } => {
            let start = begin(LEAVE, out);
            out.extend_from_slice(room.as_bytes());
            finish(start, out);
        }
        Note::Finish => finish(begin(FINISH, out), out),
        Note::Close => finish(begin(CLOSE, out), out),
    }
}

fn begin(tag: u8, out: &mut Vec<u8>) -> usize {
    let start = out.len();
    out.extend_from_slice(&[tag, 0, 0, 0, 0]);
    start
}

fn finish(start: usize, out: &mut [u8]) {
    let len = out.len() - start - HEAD;
    if let Some(slot) = out.get_mut(start + 1..start + HEAD) {
        slot.copy_from_slice(&u32::try_from(len).unwrap_or(u32::MAX).to_be_bytes());
    }
}

/// A note that does not parse: the pair's pipe is out of step, and the connection ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BadNote;

/// The note at the front of `buf` and the bytes it takes, or `None` if it is not all there.
///
/// # Errors
/// An unknown tag or a body that does not fit its tag.
pub fn next(buf: &[u8]) -> Result<Option<(Note<'_>, usize)>, BadNote> {
    let Some((&[tag, a, b, c, d], rest)) = buf.split_first_chunk::<HEAD>() else {
        return Ok(None);
    };
    let len = u32::from_be_bytes([a, b, c, d]) as usize;
    let Some(body) = rest.get(..len) else {
        return Ok(None);
    };
    let note = match tag {
        REPLY => Note::Reply(body),
        JOIN => {
            let (after, rest) = body.split_first_chunk::<8>().ok_or(BadNote)?;
            let (limit, rest) = rest.split_first_chunk::<4>().ok_or(BadNote)?;
            let (head, rest) = rest.split_first_chunk::<8>().ok_or(BadNote)?;
            let (end, name) = rest.split_first_chunk::<8>().ok_or(BadNote)?;
            Note::Join {
                room: room(name)?,
                after: u64::from_be_bytes(*after),
                limit: u32::from_be_bytes(*limit),
                tail: Tail {
                    head: u64::from_be_bytes(*head),
                    end: u64::from_be_bytes(*end),
                },
            }
        }
        LEAVE => Note::Leave { room: room(body)? },
        FINISH if body.is_empty() => Note::Finish,
        CLOSE if body.is_empty() => Note::Close,
        _ => return Err(BadNote),
    };
    Ok(Some((note, HEAD + len)))
}

fn room(bytes: &[u8]) -> Result<&str, BadNote> {
    std::str::from_utf8(bytes).map_err(|_| BadNote)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_note_reads_back_as_written_and_a_partial_one_waits() {
        let mut frame = Vec::new();
        encode_server(&ServerFrame::Pong { nonce: 7 }, &mut frame);
        let notes = [
            Note::Reply(&frame),
            Note::Join {
                room: "#general",
                after: 3,
                limit: u32::MAX,
                tail: Tail { end: 99, head: 2 },
            },
            Note::Leave { room: "#general" },
            Note::Finish,
            Note::Close,
        ];
        let mut out = Vec::new();
        for note in &notes {
            push(note, &mut out);
        }
        let mut via_frame = Vec::new();
        push_reply(&ServerFrame::Pong { nonce: 7 }, &mut via_frame);
        assert_eq!(
            via_frame.get(..frame.len() + HEAD),
            out.get(..frame.len() + HEAD)
        );

        let mut rest = out.as_slice();
        for want in &notes {
            let (got, used) = next(rest).expect("valid").expect("whole");
            assert_eq!(&got, want);
            for cut in 0..used {
                let partial = rest.get(..cut).unwrap_or_default();
                assert_eq!(next(partial), Ok(None), "{cut} bytes of {want:?}");
            }
            rest = rest.get(used..).unwrap_or_default();
        }
        assert!(rest.is_empty());
    }

    #[test]
    fn a_note_out_of_step_is_refused() {
        assert_eq!(next(&[9, 0, 0, 0, 0]), Err(BadNote));
        assert_eq!(next(&[FINISH, 0, 0, 0, 1, 0]), Err(BadNote));
        assert_eq!(next(&[JOIN, 0, 0, 0, 2, 0, 0]), Err(BadNote));
    }
}
