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

/// Serves fetches until every sender is gone.
pub fn run(requests: Receiver<Fetch>, mailboxes: Arc<[Mailbox]>, dir: PathBuf) {
    let mut reader = SegmentReader::default();
    while let Ok(fetch) = requests.recv() {
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
) -> Result<Vec<Arc<[u8]>>, Gone> {
    let (start, (first, head)) = room.read(|ring| (ring.locate(from), ring.bounds()));
    let Some(mut pos) = start.filter(|_| first != 0 && from >= first && from <= head) else {
        return Err(Gone);
    };
    let mut frames: Vec<Arc<[u8]>> = Vec::new();
    let mut bytes = 0;
    let mut next = from;
    let mut buf = Vec::new();
    'segments: loop {
        let Ok(mut file) = reader.at(dir, pos.segment, pos.offset) else {
            break;
        };
        loop {
            if frames.len() as u64 >= max || bytes >= FETCH_BYTES || next > head {
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
            frames.push(Arc::from(record.frame));
            next += 1;
        }
        pos = crate::room::Pos {
            segment: pos.segment + 1,
            offset: SEGMENT_HEADER_LEN as u64,
        };
    }
    if frames.is_empty() {
        Err(Gone)
    } else {
        Ok(frames)
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
    if len > super::format::MAX_PAYLOAD {
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
