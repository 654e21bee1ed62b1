//! The archive thread: reads history back from the log for members whose cursor is older
//! than their room's in-memory window (a JOIN asking for old history, or a member that fell
//! behind). Reactors never read the disk; they ask here and carry on with other work, and the
//! answer comes back through their mailbox.
//!
//! Each answer is bounded (`FETCH_BYTES`), so a JOIN of a million messages is served a slice
//! at a time, paced by how fast the member's socket drains.

use std::fs::File;
use std::io::{self, BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::mpsc::Receiver;

use super::format::{RECORD_HEADER_LEN, SEGMENT_HEADER_LEN, decode_record};
use super::segment_path;
use crate::batch_frames::Frame;
use crate::mailbox::{ConnRef, Fetched, Gone, Mailbox};
use crate::room::Room;

/// Most bytes of frames in one answer: one answer fills a socket buffer or so.
pub const FETCH_BYTES: usize = 256 * 1024;

/// A member's request for history: frames of `room` from seq `from`, at most `max` of them.
#[derive(Debug)]
pub struct Fetch {
    pub reactor: usize,
    pub conn: ConnRef,
    pub room: Arc<Room>,
    pub from: u64,
    pub max: u64,
}

/// Serves fetches until every sender is gone. Once `stopping` says the server is stopping,
/// fetches still queued are dropped unread: no member waits for history any more (sessions
/// only finish what they owe), and a backlog of slow members' fetches must not hold the stop
/// past `--shutdown-timeout`.
pub fn run(
    requests: Receiver<Fetch>,
    mailboxes: Arc<[Mailbox]>,
    dir: PathBuf,
    stopping: impl Fn() -> bool,
) {
    let mut reader = SegmentReader::default();
    while let Ok(fetch) = requests.recv() {
        if stopping() {
            continue;
        }
        let frames = read_history(&dir, &fetch.room, fetch.from, fetch.max, &mut reader);
        if let Some(mailbox) = mailboxes.get(fetch.reactor) {
            let answer = Fetched {
                conn: fetch.conn,
                room: fetch.room.id,
                from: fetch.from,
                frames,
            };
            mailbox.post_fetched(answer);
        }
    }
}

/// Keeps the last segment opened, since consecutive fetches usually read the same one.
#[derive(Default)]
pub(super) struct SegmentReader {
    open: Option<(u64, File)>,
}

impl SegmentReader {
    fn at(&mut self, dir: &Path, segment: u64, offset: u64) -> io::Result<BufReader<File>> {
        let file = match self.open.take() {
            Some((id, file)) if id == segment => file,
            _ => File::open(segment_path(dir, segment))?,
        };
        let mut copy = file.try_clone()?;
        self.open = Some((segment, file));
        copy.seek(SeekFrom::Start(offset))?;
        Ok(BufReader::with_capacity(64 * 1024, copy))
    }
}

/// Reads the frames of `room` with seq `from..`, at most `max` of them and about
/// `FETCH_BYTES` in all, and never past the room's durable head: the ring's head as this
/// fetch starts. The log may already hold a batch the sequencer has written and is still
/// syncing; if that sync fails the batch is cut off and its seqs given to other messages, so a
/// frame past the head must never reach a member.
pub(super) fn read_history(
    dir: &Path,
    room: &Room,
    from: u64,
    max: u64,
    reader: &mut SegmentReader,
) -> Result<Vec<Frame>, Gone> {
    let (start, (first, head)) = room.read(|ring| (ring.locate(from), ring.bounds()));
    let Some(mut pos) = start.filter(|_| first != 0 && from >= first && from <= head) else {
        return Err(Gone);
    };
    // The frames back to back in one buffer, so a member is sent them as one slice.
    let mut frames: Vec<u8> = Vec::new();
    let mut lens: Vec<u32> = Vec::new();
    let mut bytes = 0;
    let mut next = from;
    let mut buf = Vec::new();
    'segments: loop {
        let Ok(mut file) = reader.at(dir, pos.segment, pos.offset) else {
            break;
        };
        loop {
            if lens.len() as u64 >= max || bytes >= FETCH_BYTES || next > head {
                break 'segments;
            }
            match read_record(&mut file, &mut buf) {
                Ok(true) => {}
                // The end of this segment (or of what is complete in it): go on to the next.
                Ok(false) | Err(_) => break,
            }
            let Ok((record, _)) = decode_record(&buf) else {
                break 'segments;
            };
            if record.room != &*room.name || record.seq < next {
                continue;
            }
            if record.seq != next {
                break 'segments;
            }
            bytes += record.frame.len();
            frames.extend_from_slice(record.frame);
            lens.push(u32::try_from(record.frame.len()).unwrap_or(u32::MAX));
            next += 1;
        }
        pos = crate::room::Pos {
            segment: pos.segment + 1,
            offset: SEGMENT_HEADER_LEN as u64,
        };
    }
    if lens.is_empty() {
        Err(Gone)
    } else {
        Ok(Frame::split(frames, &lens))
    }
}

/// Reads one whole record into `buf`; false at a clean or torn end.
fn read_record(file: &mut impl Read, buf: &mut Vec<u8>) -> io::Result<bool> {
    buf.clear();
    buf.resize(RECORD_HEADER_LEN, 0);
    if !fill(file, buf)? {
        return Ok(false);
    }
    let len = buf.first_chunk::<4>().map_or(0, |b| u32::from_be_bytes(*b));
    let len = usize::try_from(len).unwrap_or(usize::MAX);
    // A zero length is where the zeros of a prepared segment begin: its end of data.
    if len == 0 || len > super::format::MAX_PAYLOAD {
        return Ok(false);
    }
    buf.resize(RECORD_HEADER_LEN + len, 0);
    fill(file, buf.get_mut(RECORD_HEADER_LEN..).unwrap_or_default())
}

fn fill(file: &mut impl Read, buf: &mut [u8]) -> io::Result<bool> {
    match file.read_exact(buf) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Ok(false),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mailbox::Delivery;
    use crate::room::{RingLimits, Rooms};

    /// Runs the archive over three queued fetches; returns how many were answered.
    fn answered(stopping: bool) -> usize {
        let Ok(poll) = mio::Poll::new() else {
            panic!("a poll for the mailbox's waker");
        };
        let Ok(waker) = mio::Waker::new(poll.registry(), mio::Token(0)) else {
            panic!("a waker");
        };
        let mailboxes: Arc<[Mailbox]> = Arc::from(vec![Mailbox::new(waker)]);
        let rooms = Rooms::new(
            8,
            1,
            RingLimits {
                messages: 16,
                bytes: 1 << 16,
            },
        );
        let Ok(room) = rooms.open("r") else {
            panic!("a room");
        };
        let (tx, rx) = std::sync::mpsc::channel();
        for key in 0..3 {
            let fetch = Fetch {
                reactor: 0,
                conn: ConnRef { key, serial: 1 },
                room: Arc::clone(&room),
                from: 1,
                max: 10,
            };
            assert!(tx.send(fetch).is_ok());
        }
        drop(tx);
        let dir = std::env::temp_dir().join("chatd-archive-test-no-log");
        run(rx, Arc::clone(&mailboxes), dir, || stopping);
        let mut got = Delivery::default();
        if let Some(mailbox) = mailboxes.first() {
            mailbox.take(&mut got);
        }
        got.fetched.len()
    }

    #[test]
    fn every_fetch_is_answered_while_serving() {
        assert_eq!(answered(false), 3);
    }

    #[test]
    fn a_stopping_server_drops_the_fetches_still_queued_unread() {
        assert_eq!(answered(true), 0);
    }
}
