//! The segment preparer: a thread that makes the next segment file ahead of time, already
//! filled with zeros to its full size and synced, so that the log writer only ever overwrites
//! blocks the file system has allocated and initialised.
//!
//! Why: an append moves the file's end, and on ext4 (and most journalling file systems) an
//! `fdatasync` after an append must commit that size change through the journal, a second
//! device flush. Measured on this project's test machine, an `fdatasync` after a 600-byte
//! append took 240–810 µs at the median with a tail of 4 ms, and after an overwrite of zeros
//! 100–180 µs (see `docs/architecture.md`, "Group commit"). Writing over a prepared file turns
//! every sync of `--fsync always` into the cheap kind.
//!
//! The file is made under a temporary name (`<id>.prep`, which recovery never reads) and only
//! renamed into place by the writer when it rolls, so a half-made file is never a segment.
//! This thread must never touch a `.seg` file, and its failures are never fatal: the writer
//! then creates the next segment the old way and appends to it.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, Receiver, Sender, TryRecvError};
use std::time::{Duration, Instant};

use super::format::{SEGMENT_HEADER_LEN, SegmentHeader};

/// Zeros written per call while filling, each then sent to the disk on its own: small, so that
/// a sync of the log never queues behind much of it.
const FILL_CHUNK: usize = 64 * 1024;

/// At most this many bytes of zeros a second: filling at the disk's full speed made the log's
/// own syncs wait behind it (a 64 MiB fill put 22 ms into the p99.9 of a paced benchmark
/// under `--fsync always`; see `docs/benchmarks.md`). At this rate a 64 MiB segment takes 8 s,
/// and a segment is prepared long before the active one is full.
const FILL_BYTES_PER_SEC: u64 = 8 << 20;

/// A segment file ready to be renamed into place.
#[derive(Debug)]
pub struct Prepared {
    pub id: u64,
    pub file: File,
    /// The file's length: header and zeros.
    pub len: u64,
}

/// The writer's handle on the preparer thread. At most one file is asked for at a time. The
/// thread starts at the first request, so a log that never needs a successor never has one,
/// and start-up (which drops privileges before any thread) starts none.
pub struct Preparer {
    dir: PathBuf,
    epoch: u64,
    /// The thread could not start once: it is not tried again.
    failed: bool,
    requests: Option<Sender<(u64, u64)>>,
    ready: Option<Receiver<io::Result<Prepared>>>,
    /// The id asked for and not yet taken.
    asked: Option<u64>,
    /// A file that arrived before the writer wanted it.
    arrived: Option<Prepared>,
}

/// Where segment `id` is made before it is renamed to its segment name.
pub fn prep_path(dir: &Path, id: u64) -> PathBuf {
    dir.join(format!("{id:020}.prep"))
}

/// Removes what an earlier run left half made (a crash while filling, or a file prepared and
/// never used). Returns how many files it removed.
pub fn remove_leftovers(dir: &Path) -> usize {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    let mut removed = 0;
    for entry in entries.flatten() {
        let name = entry.file_name();
        let is_prep = name
            .to_str()
            .and_then(|n| n.strip_suffix(".prep"))
            .is_some_and(|digits| digits.len() == 20 && digits.bytes().all(|b| b.is_ascii_digit()));
        if is_prep && std::fs::remove_file(entry.path()).is_ok() {
            removed += 1;
        }
    }
    removed
}

impl Preparer {
    /// A preparer for segments of `epoch` in `dir`; no thread yet.
    pub fn new(dir: &Path, epoch: u64) -> Preparer {
        Preparer {
            dir: dir.to_path_buf(),
            epoch,
            failed: false,
            requests: None,
            ready: None,
            asked: None,
            arrived: None,
        }
    }

    /// Starts the thread. If it cannot start, the writer appends as it always could.
    fn start(&mut self) {
        let (request_tx, request_rx) = mpsc::channel::<(u64, u64)>();
        let (ready_tx, ready_rx) = mpsc::channel();
        let dir = self.dir.clone();
        let epoch = self.epoch;
        let spawned = std::thread::Builder::new()
            .name("log-prepare".into())
            .spawn(move || {
                // Ends when the writer drops its sender.
                while let Ok((id, len)) = request_rx.recv() {
                    let made = prepare(&dir, epoch, id, len);
                    if ready_tx.send(made).is_err() {
                        let _ = std::fs::remove_file(prep_path(&dir, id));
                        break;
                    }
                }
            });
        match spawned {
            Ok(_) => {
                self.requests = Some(request_tx);
                self.ready = Some(ready_rx);
            }
            Err(e) => {
                self.failed = true;
                log::warn!("log: cannot start the segment preparer, appending instead: {e}");
            }
        }
    }

    /// Asks for segment `id` of `len` bytes, unless a file is already asked for or waiting.
    pub fn ask(&mut self, id: u64, len: u64) {
        if self.asked.is_some() || self.arrived.is_some() {
            return;
        }
        if self.requests.is_none() && !self.failed {
            self.start();
        }
        if let Some(requests) = &self.requests
            && requests.send((id, len)).is_ok()
        {
            self.asked = Some(id);
        }
    }

    /// Whether segment `id` is made and waiting, without blocking.
    pub fn has(&mut self, id: u64) -> bool {
        self.collect();
        self.arrived.as_ref().is_some_and(|p| p.id == id)
    }

    /// Takes the file for segment `id` if it is ready; a file made for any other id is stale
    /// (the writer rolled without it) and is removed.
    pub fn take(&mut self, id: u64) -> Option<Prepared> {
        self.collect();
        let prepared = self.arrived.take()?;
        if prepared.id == id {
            return Some(prepared);
        }
        let _ = std::fs::remove_file(prep_path(&self.dir, prepared.id));
        None
    }

    /// Blocks until the file asked for has arrived or failed (tests, and nothing else: the
    /// writer never waits for the preparer).
    #[cfg(test)]
    pub fn wait(&mut self) {
        if let (Some(ready), Some(_)) = (&self.ready, self.asked) {
            let got = ready.recv();
            self.asked = None;
            self.receive(got.ok());
        }
    }

    fn collect(&mut self) {
        if self.asked.is_none() {
            return;
        }
        let Some(ready) = &self.ready else {
            return;
        };
        match ready.try_recv() {
            Ok(made) => {
                self.asked = None;
                self.receive(Some(made));
            }
            Err(TryRecvError::Empty) => {}
            Err(TryRecvError::Disconnected) => {
                self.asked = None;
                self.requests = None;
                self.ready = None;
                self.failed = true;
            }
        }
    }

    fn receive(&mut self, made: Option<io::Result<Prepared>>) {
        match made {
            Some(Ok(prepared)) => self.arrived = Some(prepared),
            Some(Err(e)) => log::warn!(
                "log: cannot prepare the next segment, it will be appended to instead: {e}"
            ),
            None => {}
        }
    }
}

/// Makes `<id>.prep`: the segment header, then zeros up to `len` bytes, synced.
fn prepare(dir: &Path, epoch: u64, id: u64, len: u64) -> io::Result<Prepared> {
    let path = prep_path(dir, id);
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(&path)?;
    file.write_all_at(&SegmentHeader { epoch, id }.encode(), 0)?;
    let zeros = vec![0u8; FILL_CHUNK];
    let mut at = SEGMENT_HEADER_LEN as u64;
    let len = len.max(at);
    let started = Instant::now();
    while at < len {
        let n = usize::try_from(len - at).map_or(FILL_CHUNK, |left| left.min(FILL_CHUNK));
        file.write_all_at(zeros.get(..n).unwrap_or_default(), at)?;
        write_back(&file, at, n);
        at += n as u64;
        // Paced: ahead of the rate, wait for it.
        let due = Duration::from_secs_f64(at as f64 / FILL_BYTES_PER_SEC as f64);
        if let Some(early) = due.checked_sub(started.elapsed()) {
            std::thread::sleep(early);
        }
    }
    file.sync_all()?;
    Ok(Prepared { id, file, len })
}

/// Starts writing `len` bytes at `at` to the disk now, without waiting, so that the zeros
/// leave in small pieces rather than all at the final sync. Advice only: failing is harmless.
#[cfg(any(target_os = "linux", target_os = "freebsd"))]
fn write_back(file: &File, at: u64, len: usize) {
    use nix::fcntl::{PosixFadviseAdvice, posix_fadvise};
    use std::os::fd::AsRawFd;
    // Linux starts the writeback of dirty pages in the range and keeps them cached;
    // FreeBSD's syncer writes them on its schedule.
    let (Ok(at), Ok(len)) = (i64::try_from(at), i64::try_from(len)) else {
        return;
    };
    let _ = posix_fadvise(
        file.as_raw_fd(),
        at,
        len,
        PosixFadviseAdvice::POSIX_FADV_DONTNEED,
    );
}

#[cfg(not(any(target_os = "linux", target_os = "freebsd")))]
fn write_back(_: &File, _: u64, _: usize) {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_prepared_segment_is_its_header_then_zeros_to_its_length() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let mut p = Preparer::new(tmp.path(), 7);
        p.ask(3, 5000);
        p.wait();
        assert!(p.has(3));
        assert!(!p.has(4));
        let prepared = p.take(3).expect("segment 3 is ready");
        assert_eq!(prepared.len, 5000);
        let bytes = std::fs::read(prep_path(tmp.path(), 3)).expect("read");
        assert_eq!(bytes.len(), 5000);
        let (header, rest) = bytes.split_at(SEGMENT_HEADER_LEN);
        assert_eq!(
            SegmentHeader::decode(header),
            Ok(SegmentHeader { epoch: 7, id: 3 })
        );
        assert!(rest.iter().all(|&b| b == 0));
    }

    #[test]
    fn a_file_made_for_another_segment_is_removed_not_used() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let mut p = Preparer::new(tmp.path(), 7);
        p.ask(3, 4096);
        p.wait();
        assert!(p.take(4).is_none(), "made for 3, not 4");
        assert!(!prep_path(tmp.path(), 3).exists());
        // Once taken (or discarded), the next one may be asked for.
        p.ask(5, 4096);
        p.wait();
        assert!(p.take(5).is_some());
    }

    #[test]
    fn leftovers_are_prep_files_only() {
        let tmp = tempfile::tempdir().expect("tempdir");
        std::fs::write(prep_path(tmp.path(), 9), b"half made").expect("write");
        std::fs::write(tmp.path().join("00000000000000000009.seg"), b"x").expect("write");
        std::fs::write(tmp.path().join("notes.prep"), b"x").expect("write");
        assert_eq!(remove_leftovers(tmp.path()), 1);
        assert!(tmp.path().join("00000000000000000009.seg").exists());
        assert!(tmp.path().join("notes.prep").exists());
    }

    #[test]
    fn a_failed_preparation_leaves_nothing_to_take() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let gone = tmp.path().join("no-such-folder");
        let mut p = Preparer::new(&gone, 7);
        p.ask(2, 4096);
        p.wait();
        assert!(p.take(2).is_none());
    }
}
