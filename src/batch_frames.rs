//! A stored MSG frame as rings, outboxes and the archive hold it: a slice of a buffer that the
//! other frames of its batch share, back to back.
//!
//! Why: a member that is owed several messages gets them in one `writev`, one buffer per frame.
//! The kernel pays for every buffer of a `writev` (each is a separate user copy), and on this
//! project's test machine 64 buffers of 130 bytes cost 2.5 times the CPU of one buffer of the
//! same 8,320 bytes (see `docs/architecture.md`, "Fanout"). Frames stored together lie next
//! to each other, so the outbox queues a whole run of them as one
//! frame ([`Frame::absorb`]) and hands the kernel one buffer for it.
//!
//! A frame never changes once made, and never exposes bytes outside its own slice.

use std::ops::Deref;
use std::sync::Arc;

/// One encoded frame: `len` bytes of `buf` from `start`.
#[derive(Clone, Debug)]
pub struct Frame {
    buf: Arc<[u8]>,
    start: u32,
    len: u32,
}

impl Frame {
    /// A frame alone in its buffer.
    pub fn whole(buf: Arc<[u8]>) -> Frame {
        let len = u32::try_from(buf.len()).unwrap_or(u32::MAX);
        Frame { buf, start: 0, len }
    }

    /// The frames of `parts` laid back to back in one new buffer, in order. Each part must be
    /// shorter than 4 GiB (every frame is: the protocol's ceiling is far below).
    pub fn together<'a>(parts: impl Iterator<Item = &'a [u8]> + Clone) -> Vec<Frame> {
        let total: usize = parts.clone().map(<[u8]>::len).sum();
        let mut bytes = Vec::with_capacity(total);
        let mut spans = Vec::new();
        for part in parts {
            let start = u32::try_from(bytes.len()).unwrap_or(u32::MAX);
            let len = u32::try_from(part.len()).unwrap_or(u32::MAX);
            bytes.extend_from_slice(part);
            spans.push((start, len));
        }
        let buf: Arc<[u8]> = bytes.into();
        spans
            .into_iter()
            .map(|(start, len)| Frame {
                buf: Arc::clone(&buf),
                start,
                len,
            })
            .collect()
    }

    /// Frames of `lens` bytes each, back to back in `bytes` (which they must not overrun:
    /// a frame past its end comes out short), sharing that one buffer without a copy of each.
    pub fn split(bytes: Vec<u8>, lens: &[u32]) -> Vec<Frame> {
        let buf: Arc<[u8]> = bytes.into();
        let mut start = 0u32;
        lens.iter()
            .map(|&len| {
                let frame = Frame {
                    buf: Arc::clone(&buf),
                    start,
                    len,
                };
                start = start.saturating_add(len);
                frame
            })
            .collect()
    }

    pub fn bytes(&self) -> &[u8] {
        let start = self.start as usize;
        self.buf
            .get(start..start + self.len as usize)
            .unwrap_or_default()
    }

    /// Whether `next` starts in the same buffer right where this frame ends: the two can go
    /// to the kernel as one slice.
    pub fn joins(&self, next: &Frame) -> bool {
        Arc::ptr_eq(&self.buf, &next.buf) && self.start + self.len == next.start
    }

    /// Makes this frame cover `next` too, if `next` [`joins`](Frame::joins) it: a run of
    /// frames stored together becomes one slice. Returns whether it did.
    pub fn absorb(&mut self, next: &Frame) -> bool {
        if !self.joins(next) {
            return false;
        }
        match self.len.checked_add(next.len) {
            Some(len) => {
                self.len = len;
                true
            }
            None => false,
        }
    }
}

impl Deref for Frame {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        self.bytes()
    }
}

impl From<Arc<[u8]>> for Frame {
    fn from(buf: Arc<[u8]>) -> Frame {
        Frame::whole(buf)
    }
}

impl From<Vec<u8>> for Frame {
    fn from(bytes: Vec<u8>) -> Frame {
        Frame::whole(bytes.into())
    }
}

impl PartialEq for Frame {
    fn eq(&self, other: &Frame) -> bool {
        self.bytes() == other.bytes()
    }
}

impl Eq for Frame {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_made_together_join_in_order_and_keep_their_own_bytes() {
        let parts: [&[u8]; 3] = [b"abc", b"de", b"fghi"];
        let frames = Frame::together(parts.iter().copied());
        let got: Vec<&[u8]> = frames.iter().map(Frame::bytes).collect();
        assert_eq!(got, parts);
        assert!(frames[0].joins(&frames[1]));
        assert!(frames[1].joins(&frames[2]));
        assert!(!frames[0].joins(&frames[2]), "not next to each other");
        assert!(!frames[1].joins(&frames[0]), "not in this order");
        let mut run = frames[0].clone();
        assert!(run.absorb(&frames[1]));
        assert!(!run.absorb(&frames[0]), "a frame already in the run");
        assert!(run.absorb(&frames[2]));
        assert_eq!(run.bytes(), b"abcdefghi");
        assert_eq!(frames[0].bytes(), b"abc", "the parts are untouched");
    }

    #[test]
    fn frames_of_different_buffers_never_join() {
        let a = Frame::whole(Arc::from(&b"abc"[..]));
        let b = Frame::whole(Arc::from(&b"def"[..]));
        assert!(!a.joins(&b));
        let mut run = a.clone();
        assert!(!run.absorb(&b), "a run never leaves its buffer");
        assert_eq!(run.bytes(), b"abc");
        assert_eq!(a, Frame::from(b"abc".to_vec()));
    }
}
