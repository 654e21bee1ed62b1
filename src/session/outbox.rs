//! A connection's outgoing bytes: a short queue of frames, written with one `writev`.
//!
//! Control frames (WELCOME, ACK, ERROR, ...) are encoded into owned buffers, coalesced when
//! they follow each other. Room messages are `Arc`s of the ring's own frames: queued by
//! reference, never copied. The queue holds only a small window of what a member is owed
//! (the rest stays in the ring behind the member's cursor), so its size never grows with a
//! backlog. The queue itself lives behind one pointer, made when a frame is queued and given
//! back once the connection is idle again (`shrink_if_idle`), so that an idle connection's
//! outbox is 8 bytes and no heap.

use std::collections::VecDeque;
use std::io::{self, IoSlice, Write};

use crate::batch_frames::Frame;
use crate::protocol::{ServerFrame, encode_server, kind};

/// Most buffers handed to one `writev`: enough to fill a socket buffer with small messages,
/// few enough to live on the stack.
pub const MAX_IOV: usize = 64;

#[derive(Debug)]
enum Chunk {
    Owned(Vec<u8>),
    /// A run of ring frames stored together, and how many frames it holds.
    Shared(Frame, u32),
}

impl Chunk {
    fn bytes(&self) -> &[u8] {
        match self {
            Chunk::Owned(v) => v,
            Chunk::Shared(f, _) => f,
        }
    }
}

/// The queue itself, boxed: an idle connection holds none, and pays one pointer for it.
#[derive(Debug, Default)]
pub struct Outbox {
    queue: Option<Box<Queue>>,
}

#[derive(Debug, Default)]
struct Queue {
    chunks: VecDeque<Chunk>,
    /// Bytes of the front chunk already written.
    front_written: usize,
    /// Bytes held in owned chunks: what the client's own requests have made us queue.
    owned_bytes: usize,
    /// Ring frames in shared chunks (a chunk holds a run of them).
    shared_frames: usize,
}

// Every connection carries an outbox, nearly always empty: one pointer.
const _: () = assert!(std::mem::size_of::<Outbox>() == 8);

impl Outbox {
    pub fn is_empty(&self) -> bool {
        self.queue.as_ref().is_none_or(|q| q.chunks.is_empty())
    }

    /// Chunks queued, the first possibly partly written.
    pub fn chunk_count(&self) -> usize {
        self.queue.as_ref().map_or(0, |q| q.chunks.len())
    }

    /// Bytes of control frames queued and not yet written; reading from a client pauses while
    /// this is high, so a client that pipelines requests without reading answers cannot make
    /// us buffer without bound.
    pub fn owned_bytes(&self) -> usize {
        self.queue.as_ref().map_or(0, |q| q.owned_bytes)
    }

    /// The queue, made if there is none.
    fn queue(&mut self) -> &mut Queue {
        self.queue.get_or_insert_with(Box::default)
    }

    /// Queues a control frame, appending to the last owned buffer when there is one.
    pub fn push_frame(&mut self, frame: &ServerFrame<'_>) {
        self.queue().push_frame(frame);
    }

    /// Queues a MEMBERS frame of `room` listing the longest prefix of `users` that fits in
    /// `max_frame` (see `protocol::codec::encode_members`).
    pub fn push_members<'u>(
        &mut self,
        room: &str,
        total: u32,
        users: impl IntoIterator<Item = &'u str>,
        max_frame: u32,
    ) {
        self.queue().push_encoded(|buf| {
            crate::protocol::codec::encode_members(room, total, users, max_frame, buf);
        });
    }

    /// Queues a ring frame by reference.
    pub fn push_shared(&mut self, frame: &Frame) {
        self.queue().push_shared(frame);
    }

    /// Ring frames queued and not yet written whole.
    pub fn shared_frames(&self) -> usize {
        self.queue.as_ref().map_or(0, |q| q.shared_frames)
    }

    /// Drops every chunk not yet started. The partly written front chunk stays, so that the
    /// byte stream remains a sequence of whole frames.
    pub fn discard_unstarted(&mut self) {
        if let Some(q) = self.queue.as_mut() {
            q.discard_unstarted();
        }
    }

    /// Releases the queue's memory if it is empty, so that an idle connection holds none.
    pub fn shrink_if_idle(&mut self) {
        if self.is_empty() {
            self.queue = None;
        }
    }

    /// Writes as much as one `writev` takes.
    ///
    /// # Errors
    /// Whatever the writer returns, `WouldBlock` included; nothing is consumed then.
    pub fn write_to(&mut self, w: &mut impl Write) -> io::Result<usize> {
        self.write_counted(w, |_, _| {})
    }

    /// Like `write_to`, and calls `sent` with the kind of every frame that left whole.
    ///
    /// # Errors
    /// Whatever the writer returns, `WouldBlock` included; nothing is consumed then.
    pub fn write_counted(
        &mut self,
        w: &mut impl Write,
        sent: impl FnMut(u8, u64),
    ) -> io::Result<usize> {
        match self.queue.as_mut() {
            Some(q) => q.write_counted(w, sent),
            None => w.write_vectored(&[]),
        }
    }
}

impl Queue {
    fn push_frame(&mut self, frame: &ServerFrame<'_>) {
        self.push_encoded(|buf| encode_server(frame, buf));
    }

    /// Queues the control frame(s) `encode` appends, after the last owned buffer if the
    /// queue ends with one.
    fn push_encoded(&mut self, encode: impl FnOnce(&mut Vec<u8>)) {
        let added = match self.chunks.back_mut() {
            Some(Chunk::Owned(buf)) => {
                let before = buf.len();
                encode(buf);
                buf.len() - before
            }
            _ => {
                let mut buf = Vec::new();
                encode(&mut buf);
                let len = buf.len();
                self.chunks.push_back(Chunk::Owned(buf));
                len
            }
        };
        self.owned_bytes += added;
    }

    /// Queues a ring frame by reference; one that the last queued frame joins extends it, so
    /// that a run of frames stored together is one chunk and one buffer to the kernel.
    fn push_shared(&mut self, frame: &Frame) {
        self.shared_frames += 1;
        if let Some(Chunk::Shared(last, frames)) = self.chunks.back_mut()
            && last.absorb(frame)
        {
            *frames += 1;
            return;
        }
        self.chunks.push_back(Chunk::Shared(frame.clone(), 1));
    }

    fn discard_unstarted(&mut self) {
        let keep = usize::from(self.front_written > 0);
        while self.chunks.len() > keep {
            match self.chunks.pop_back() {
                Some(Chunk::Owned(buf)) => self.owned_bytes -= buf.len(),
                Some(Chunk::Shared(_, frames)) => self.shared_frames -= frames as usize,
                None => {}
            }
        }
    }

    fn write_counted(
        &mut self,
        w: &mut impl Write,
        sent: impl FnMut(u8, u64),
    ) -> io::Result<usize> {
        let mut slices = [IoSlice::new(&[]); MAX_IOV];
        let mut count = 0;
        for (slot, chunk) in slices.iter_mut().zip(self.chunks.iter()) {
            let skip = if count == 0 { self.front_written } else { 0 };
            *slot = IoSlice::new(chunk.bytes().get(skip..).unwrap_or_default());
            count += 1;
        }
        let written = w.write_vectored(slices.get(..count).unwrap_or_default())?;
        self.consume(written, sent);
        Ok(written)
    }

    fn consume(&mut self, mut n: usize, mut sent: impl FnMut(u8, u64)) {
        while n > 0 {
            let Some(front) = self.chunks.front() else {
                return;
            };
            let left = front.bytes().len() - self.front_written;
            if n < left {
                self.front_written += n;
                return;
            }
            n -= left;
            self.front_written = 0;
            match self.chunks.pop_front() {
                Some(Chunk::Owned(buf)) => {
                    self.owned_bytes -= buf.len();
                    frame_kinds(&buf, &mut sent);
                }
                // A run holds ring frames only, which are all MSGs: counted without parsing.
                Some(Chunk::Shared(_, frames)) => {
                    self.shared_frames -= frames as usize;
                    sent(kind::MSG, u64::from(frames));
                }
                None => {}
            }
        }
    }
}

/// Calls `sent` with the kind of each whole frame in `bytes` (frames back to back).
fn frame_kinds(mut bytes: &[u8], sent: &mut impl FnMut(u8, u64)) {
    while let Some((len, rest)) = bytes.split_first_chunk::<4>() {
        let len = usize::try_from(u32::from_be_bytes(*len)).unwrap_or(usize::MAX);
        let (Some(&kind), Some(next)) = (rest.first(), rest.get(len..)) else {
            return;
        };
        sent(kind, 1);
        bytes = next;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A writer that takes at most `cap` bytes per call, like a socket with a small buffer.
    struct Trickle {
        taken: Vec<u8>,
        cap: usize,
    }

    impl Write for Trickle {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            if self.cap == 0 {
                return Err(io::ErrorKind::WouldBlock.into());
            }
            let n = buf.len().min(self.cap);
            self.taken
                .extend_from_slice(buf.get(..n).unwrap_or_default());
            Ok(n)
        }
        fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
            if self.cap == 0 {
                return Err(io::ErrorKind::WouldBlock.into());
            }
            let mut total = 0;
            for b in bufs {
                if total == self.cap {
                    break;
                }
                total +=
                    self.write(b.get(..(self.cap - total).min(b.len())).unwrap_or_default())?;
            }
            Ok(total)
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    fn expected(frames: &[ServerFrame<'_>], shared: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        for f in frames {
            encode_server(f, &mut out);
        }
        out.extend_from_slice(shared);
        out
    }

    #[test]
    fn partial_writes_keep_frames_whole_and_in_order() {
        let pong = ServerFrame::Pong { nonce: 7 };
        let ack = ServerFrame::Ack { id: 1, seq: 2 };
        let shared: Frame = vec![9u8; 40].into();
        let mut out = Outbox::default();
        out.push_frame(&pong);
        out.push_frame(&ack);
        out.push_shared(&shared);
        assert_eq!(
            out.chunk_count(),
            2,
            "consecutive control frames share one buffer"
        );
        let mut sink = Trickle {
            taken: Vec::new(),
            cap: 3,
        };
        while !out.is_empty() {
            out.write_to(&mut sink)
                .expect("trickle never fails with cap > 0");
        }
        assert_eq!(sink.taken, expected(&[pong, ack], &shared));
        assert_eq!(out.owned_bytes(), 0);
    }

    #[test]
    fn every_frame_that_leaves_whole_is_counted_once() {
        let mut out = Outbox::default();
        out.push_frame(&ServerFrame::Pong { nonce: 1 });
        out.push_frame(&ServerFrame::Ack { id: 1, seq: 1 });
        out.push_shared(&vec![0, 0, 0, 1, 0x84].into());
        let mut kinds = Vec::new();
        let mut sink = Trickle {
            taken: Vec::new(),
            cap: 5,
        };
        while !out.is_empty() {
            out.write_counted(&mut sink, |k, n| {
                kinds.extend(std::iter::repeat_n(k, n as usize))
            })
            .expect("trickle");
        }
        assert_eq!(kinds, vec![0x86, 0x85, 0x84]);
    }

    /// Records how many buffers each `writev` was handed, and takes at most `cap` bytes.
    struct Counting {
        taken: Vec<u8>,
        buffers: Vec<usize>,
        cap: usize,
    }

    impl Write for Counting {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.write_vectored(&[IoSlice::new(buf)])
        }
        fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
            self.buffers.push(bufs.len());
            let mut total = 0;
            for b in bufs {
                let n = b.len().min(self.cap - total);
                self.taken.extend_from_slice(b.get(..n).unwrap_or_default());
                total += n;
            }
            Ok(total)
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn frames_stored_together_go_out_as_one_buffer_and_partial_writes_resume_inside_the_run() {
        let parts: Vec<Vec<u8>> = (1..=5u8).map(|n| vec![n; 10]).collect();
        let stored = Frame::together(parts.iter().map(Vec::as_slice));
        let alone: Frame = vec![9u8; 10].into();
        let mut out = Outbox::default();
        out.push_frame(&ServerFrame::Pong { nonce: 1 });
        for f in &stored {
            out.push_shared(f);
        }
        out.push_shared(&alone);
        let mut sink = Counting {
            taken: Vec::new(),
            buffers: Vec::new(),
            cap: 13 + 25,
        };
        out.write_to(&mut sink).expect("first write");
        assert_eq!(
            sink.buffers,
            vec![3],
            "the PONG, the run of five stored frames, the frame alone"
        );
        // 25 bytes into the run, which is one chunk of five frames: it stays until whole.
        assert_eq!((out.chunk_count(), out.shared_frames()), (2, 6));
        sink.cap = 1000;
        out.write_to(&mut sink).expect("second write");
        assert_eq!(
            sink.buffers,
            vec![3, 2],
            "the rest of the run, the frame alone"
        );
        let mut want = Vec::new();
        encode_server(&ServerFrame::Pong { nonce: 1 }, &mut want);
        for p in &parts {
            want.extend_from_slice(p);
        }
        want.extend_from_slice(&alone);
        assert_eq!(sink.taken, want);
        assert!(out.is_empty());
        assert_eq!(out.shared_frames(), 0);
    }

    #[test]
    fn a_run_of_stored_frames_is_counted_as_that_many_msgs_once_it_is_written_whole() {
        let parts: Vec<Vec<u8>> = (1..=3u8).map(|n| vec![n; 10]).collect();
        let mut out = Outbox::default();
        for f in Frame::together(parts.iter().map(Vec::as_slice)) {
            out.push_shared(&f);
        }
        let mut counted = Vec::new();
        let mut sink = Trickle {
            taken: Vec::new(),
            cap: 25,
        };
        out.write_counted(&mut sink, |k, n| counted.push((k, n)))
            .expect("part of the run");
        assert!(
            counted.is_empty(),
            "nothing counted before the run is whole"
        );
        out.write_counted(&mut sink, |k, n| counted.push((k, n)))
            .expect("the rest");
        assert_eq!(counted, vec![(kind::MSG, 3)]);
    }

    #[test]
    fn would_block_consumes_nothing() {
        let mut out = Outbox::default();
        out.push_frame(&ServerFrame::Pong { nonce: 1 });
        let mut sink = Trickle {
            taken: Vec::new(),
            cap: 0,
        };
        assert!(out.write_to(&mut sink).is_err());
        assert_eq!(out.owned_bytes(), 13);
    }

    #[test]
    fn discard_keeps_the_partly_written_front() {
        let mut out = Outbox::default();
        out.push_shared(&vec![1u8; 10].into());
        out.push_frame(&ServerFrame::Pong { nonce: 1 });
        let mut sink = Trickle {
            taken: Vec::new(),
            cap: 4,
        };
        out.write_to(&mut sink).expect("writes 4");
        out.discard_unstarted();
        assert_eq!((out.chunk_count(), out.shared_frames()), (1, 1));
        assert_eq!(out.owned_bytes(), 0);
        let mut sink = Trickle {
            taken: Vec::new(),
            cap: 100,
        };
        out.write_to(&mut sink).expect("writes the rest");
        assert_eq!(sink.taken, vec![1u8; 6]);
    }
}
