//! The on-disk format of the message log: segment headers and records. Pure: bytes in,
//! values out, so recovery, `chatd log verify` and the fuzzer share one definition.
//!
//! A segment file starts with a 32-byte header:
//!
//! ```text
//! magic "CHATDLOG" (8) | version u32 | header crc32c u32 | epoch u64 | segment id u64
//! ```
//!
//! then holds records back to back. A record is its payload's length, a CRC32C over that
//! length and the payload, and the payload: the MSG frame exactly as clients receive it
//! (length prefix included), so replay from disk sends the bytes it reads; in format 2, a
//! message sent with a key (protocol version 2, `client ≠ 0`) has the key after the frame,
//! inside the checksum, so that exactly-once survives a restart (see [`crate::dedupe`]).
//!
//! ```text
//! len u32 | crc32c(len ++ payload) u32 | payload (len bytes):
//!     format 1: MSG frame
//!     format 2: MSG frame [ client u64 (≠ 0) | id u64 ]
//! ```
//!
//! The frame's own length prefix says where it ends, so a record says by its length whether
//! it has a key. The header's version is the format of the segment's records: format 1
//! segments (written before keys existed) are read as they are, never appended to; records
//! with a key in one are damage.
//!
//! All integers are big-endian, like the wire protocol.

use std::num::NonZeroU64;

use crate::protocol::codec::{RawFrame, parse_server};
use crate::protocol::{HEADER_LEN as FRAME_HEADER_LEN, ServerFrame, kind};

pub const MAGIC: [u8; 8] = *b"CHATDLOG";
/// The format this build writes: 2, records that may carry a key.
pub const VERSION: u32 = 2;
/// The first format, records without keys: still read.
pub const VERSION_1: u32 = 1;
pub const SEGMENT_HEADER_LEN: usize = 32;
pub const RECORD_HEADER_LEN: usize = 8;
/// The key after a keyed record's frame: client u64 and id u64.
pub const KEY_LEN: usize = 16;
/// No record is larger: the largest MSG frame any configuration allows, plus its prefix and a
/// key.
pub const MAX_PAYLOAD: usize =
    crate::protocol::MAX_FRAME_CEILING as usize + FRAME_HEADER_LEN + KEY_LEN;

/// No room ever reaches a larger seq (at a million messages a second it would take some
/// 290,000 years); a record claiming one is damage, whatever its checksum says, and refusing
/// it keeps every `seq + 1` of recovery and the rings far from overflow.
pub const MAX_SEQ: u64 = i64::MAX as u64;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmentHeader {
    pub epoch: u64,
    pub id: u64,
}

impl SegmentHeader {
    /// The header of a segment this build writes (format [`VERSION`]).
    pub fn encode(&self) -> [u8; SEGMENT_HEADER_LEN] {
        self.encode_format(VERSION)
    }

    /// The header as a build writing format `version` wrote it (tests and fuzz seeds make
    /// format 1 segments with it).
    pub fn encode_format(&self, version: u32) -> [u8; SEGMENT_HEADER_LEN] {
        let mut out = [0u8; SEGMENT_HEADER_LEN];
        out[..8].copy_from_slice(&MAGIC);
        out[8..12].copy_from_slice(&version.to_be_bytes());
        out[16..24].copy_from_slice(&self.epoch.to_be_bytes());
        out[24..32].copy_from_slice(&self.id.to_be_bytes());
        let crc = header_crc(&out);
        out[12..16].copy_from_slice(&crc.to_be_bytes());
        out
    }

    /// # Errors
    /// What is wrong with the header, in words for an operator.
    pub fn decode(bytes: &[u8]) -> Result<SegmentHeader, &'static str> {
        SegmentHeader::decode_with_format(bytes).map(|(header, _)| header)
    }

    /// The header and the format version of the segment's records (1 or 2).
    ///
    /// # Errors
    /// What is wrong with the header, in words for an operator.
    pub fn decode_with_format(bytes: &[u8]) -> Result<(SegmentHeader, u32), &'static str> {
        let b: &[u8; SEGMENT_HEADER_LEN] = bytes
            .first_chunk()
            .ok_or("segment shorter than its header")?;
        let (magic, rest) = b.split_first_chunk::<8>().ok_or("short header")?;
        if magic != &MAGIC {
            return Err("not a chatd log segment (bad magic)");
        }
        let (version, rest) = rest.split_first_chunk::<4>().ok_or("short header")?;
        let version = u32::from_be_bytes(*version);
        if version != VERSION && version != VERSION_1 {
            return Err("segment written by an unknown format version");
        }
        let (crc, rest) = rest.split_first_chunk::<4>().ok_or("short header")?;
        if u32::from_be_bytes(*crc) != header_crc(b) {
            return Err("segment header checksum mismatch");
        }
        let (epoch, rest) = rest.split_first_chunk::<8>().ok_or("short header")?;
        let (id, _) = rest.split_first_chunk::<8>().ok_or("short header")?;
        Ok((
            SegmentHeader {
                epoch: u64::from_be_bytes(*epoch),
                id: u64::from_be_bytes(*id),
            },
            version,
        ))
    }
}

/// CRC32C of a header with its crc field taken as zero.
fn header_crc(header: &[u8; SEGMENT_HEADER_LEN]) -> u32 {
    let mut copy = *header;
    copy[12..16].fill(0);
    crc32c::crc32c(&copy)
}

/// The key a message was sent with: its sender's client and the SEND's id (the user is the
/// MSG frame's).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordKey {
    pub client: NonZeroU64,
    pub id: u64,
}

/// Appends one record holding `frame`, with no key, to `out`.
pub fn encode_record(frame: &[u8], out: &mut Vec<u8>) {
    encode_keyed_record(frame, None, out);
}

/// Appends one record holding `frame` and, if it has one, the key it was sent with.
pub fn encode_keyed_record(frame: &[u8], key: Option<RecordKey>, out: &mut Vec<u8>) {
    let mut trailer = [0u8; KEY_LEN];
    let trailer: &[u8] = match key {
        Some(key) => {
            trailer[..8].copy_from_slice(&key.client.get().to_be_bytes());
            trailer[8..].copy_from_slice(&key.id.to_be_bytes());
            &trailer
        }
        None => &[],
    };
    let len = u32::try_from(frame.len() + trailer.len())
        .unwrap_or(u32::MAX)
        .to_be_bytes();
    let crc = crc32c::crc32c_append(crc32c::crc32c(&len), frame);
    let crc = crc32c::crc32c_append(crc, trailer);
    out.extend_from_slice(&len);
    out.extend_from_slice(&crc.to_be_bytes());
    out.extend_from_slice(frame);
    out.extend_from_slice(trailer);
}

/// A record read back: the MSG frame and what recovery needs from it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Record<'a> {
    /// The MSG frame alone, without the key.
    pub frame: &'a [u8],
    pub room: &'a str,
    pub user: &'a str,
    pub seq: u64,
    pub ts_ms: u64,
    pub key: Option<RecordKey>,
}

/// Why bytes are not a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordError {
    /// The bytes end inside the record: a torn write, if at the end of the newest segment.
    Truncated,
    /// The length is impossible.
    BadLength,
    /// The checksum does not match.
    BadChecksum,
    /// The checksum matches but the payload is not a MSG frame.
    BadPayload,
}

impl RecordError {
    pub fn describe(self) -> &'static str {
        match self {
            RecordError::Truncated => "record cut short",
            RecordError::BadLength => "impossible record length",
            RecordError::BadChecksum => "record checksum mismatch",
            RecordError::BadPayload => "record is not a valid message",
        }
    }
}

/// Decodes the record at the front of `buf`, returning it and its length on disk.
///
/// # Errors
/// See [`RecordError`].
pub fn decode_record(buf: &[u8]) -> Result<(Record<'_>, usize), RecordError> {
    let (header, rest) = buf
        .split_first_chunk::<RECORD_HEADER_LEN>()
        .ok_or(RecordError::Truncated)?;
    let (len_bytes, crc_bytes) = header.split_at(4);
    let len = u32::from_be_bytes(len_bytes.try_into().map_err(|_| RecordError::Truncated)?);
    let len = usize::try_from(len).map_err(|_| RecordError::BadLength)?;
    if !(FRAME_HEADER_LEN + 1..=MAX_PAYLOAD).contains(&len) {
        return Err(RecordError::BadLength);
    }
    let payload = rest.get(..len).ok_or(RecordError::Truncated)?;
    let crc = u32::from_be_bytes(crc_bytes.try_into().map_err(|_| RecordError::Truncated)?);
    if crc32c::crc32c_append(crc32c::crc32c(len_bytes), payload) != crc {
        return Err(RecordError::BadChecksum);
    }
    let record = parse_payload(payload).ok_or(RecordError::BadPayload)?;
    Ok((record, RECORD_HEADER_LEN + len))
}

/// How many whole, checksummed records start anywhere in `buf`, found by trying every offset
/// (and jumping over each record found). Recovery uses it to tell a torn tail (nothing valid
/// after the first bad byte) from damage in the middle of a segment (valid records follow).
/// A cheap check of the record's length against its MSG frame's own prefix and kind comes
/// before the checksum, so random bytes cost a few comparisons per offset.
pub fn count_records(buf: &[u8]) -> u64 {
    let mut found = 0;
    let mut at = 0;
    while let Some(rest) = buf.get(at..) {
        if rest.len() < RECORD_HEADER_LEN + FRAME_HEADER_LEN + 1 {
            break;
        }
        let used = plausible(rest)
            .then(|| decode_record(rest).ok())
            .flatten()
            .map(|(_, used)| used);
        match used {
            Some(used) => {
                found += 1;
                at += used;
            }
            None => at += 1,
        }
    }
    found
}

/// Whether `buf` starts like a record holding a MSG frame: the record's length is the frame's
/// length prefix plus the prefix itself (and a key, if it has one), and the kind is MSG.
fn plausible(buf: &[u8]) -> bool {
    let field = |at: usize| {
        buf.get(at..at + 4)
            .and_then(|b| b.try_into().ok())
            .map(u32::from_be_bytes)
    };
    match (
        field(0),
        field(RECORD_HEADER_LEN),
        buf.get(RECORD_HEADER_LEN + 4),
    ) {
        (Some(len), Some(prefix), Some(&k)) => {
            let frame = u64::from(prefix) + FRAME_HEADER_LEN as u64;
            k == kind::MSG && (u64::from(len) == frame || u64::from(len) == frame + KEY_LEN as u64)
        }
        _ => false,
    }
}

fn parse_payload(payload: &[u8]) -> Option<Record<'_>> {
    let (prefix, _) = payload.split_first_chunk::<FRAME_HEADER_LEN>()?;
    let length = usize::try_from(u32::from_be_bytes(*prefix)).ok()?;
    let (frame, trailer) = payload.split_at_checked(FRAME_HEADER_LEN.checked_add(length)?)?;
    let key = match trailer.len() {
        0 => None,
        KEY_LEN => {
            let (client, id) = trailer.split_first_chunk::<8>()?;
            Some(RecordKey {
                client: NonZeroU64::new(u64::from_be_bytes(*client))?,
                id: u64::from_be_bytes(id.try_into().ok()?),
            })
        }
        _ => return None,
    };
    let rest = frame.get(FRAME_HEADER_LEN..)?;
    let (&kind_byte, body) = rest.split_first()?;
    if kind_byte != kind::MSG {
        return None;
    }
    let raw = RawFrame {
        kind: kind_byte,
        body,
        wire_len: frame.len(),
    };
    match parse_server(&raw).ok()? {
        ServerFrame::Msg {
            room,
            seq,
            ts_ms,
            user,
            ..
        } if seq > 0 => Some(Record {
            frame,
            room,
            user,
            seq,
            ts_ms,
            key,
        }),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::encode_server;

    fn msg(room: &str, seq: u64, text: &str) -> Vec<u8> {
        let mut out = Vec::new();
        encode_server(
            &ServerFrame::Msg {
                room,
                seq,
                ts_ms: 5,
                user: "u",
                text,
            },
            &mut out,
        );
        out
    }

    #[test]
    fn header_round_trips_and_rejects_damage() {
        let h = SegmentHeader { epoch: 7, id: 3 };
        let bytes = h.encode();
        assert_eq!(SegmentHeader::decode(&bytes), Ok(h));
        for i in 0..SEGMENT_HEADER_LEN {
            let mut bad = bytes;
            bad[i] ^= 0x40;
            assert!(
                SegmentHeader::decode(&bad).is_err(),
                "flip at byte {i} went unnoticed"
            );
        }
        assert!(SegmentHeader::decode(&bytes[..31]).is_err());
    }

    #[test]
    fn record_round_trips() {
        let frame = msg("#r", 9, "hello");
        let mut buf = Vec::new();
        encode_record(&frame, &mut buf);
        let (rec, used) = decode_record(&buf).expect("valid record");
        assert_eq!(used, buf.len());
        assert_eq!(
            (rec.room, rec.seq, rec.ts_ms, rec.frame),
            ("#r", 9, 5, frame.as_slice())
        );
    }

    #[test]
    fn a_keyed_record_round_trips_and_its_frame_stands_alone() {
        let frame = msg("#r", 9, "hello");
        let key = RecordKey {
            client: NonZeroU64::new(77).expect("non-zero"),
            id: 5,
        };
        let mut buf = Vec::new();
        encode_keyed_record(&frame, Some(key), &mut buf);
        assert_eq!(buf.len(), RECORD_HEADER_LEN + frame.len() + KEY_LEN);
        let (rec, used) = decode_record(&buf).expect("valid record");
        assert_eq!(used, buf.len());
        assert_eq!(
            (rec.frame, rec.user, rec.key),
            (frame.as_slice(), "u", Some(key))
        );
        assert_eq!(count_records(&buf), 1);
        for cut in 0..buf.len() {
            assert_eq!(
                decode_record(&buf[..cut]).map(|r| r.1),
                Err(RecordError::Truncated),
                "cut {cut}"
            );
        }
        for i in 0..buf.len() {
            let mut bad = buf.clone();
            bad[i] ^= 0x01;
            assert!(decode_record(&bad).is_err(), "flip at byte {i}");
        }
    }

    #[test]
    fn a_trailer_that_is_no_key_is_bad_payload() {
        let frame = msg("#r", 9, "hello");
        for trailer in [vec![0u8; 16], vec![1u8; 15], vec![1u8; 17]] {
            let mut payload = frame.clone();
            payload.extend_from_slice(&trailer);
            let mut buf = Vec::new();
            encode_record(&payload, &mut buf);
            assert_eq!(
                decode_record(&buf).map(|r| r.1),
                Err(RecordError::BadPayload),
                "trailer of {} bytes",
                trailer.len()
            );
        }
    }

    #[test]
    fn format_1_headers_are_still_read() {
        let h = SegmentHeader { epoch: 7, id: 3 };
        assert_eq!(
            SegmentHeader::decode_with_format(&h.encode()),
            Ok((h, VERSION))
        );
        let old = h.encode_format(VERSION_1);
        assert_eq!(
            SegmentHeader::decode_with_format(&old),
            Ok((SegmentHeader { epoch: 7, id: 3 }, VERSION_1))
        );
    }

    #[test]
    fn every_cut_of_a_record_is_truncated() {
        let mut buf = Vec::new();
        encode_record(&msg("#r", 1, "abc"), &mut buf);
        for cut in 0..buf.len() {
            assert_eq!(
                decode_record(&buf[..cut]).map(|r| r.1),
                Err(RecordError::Truncated),
                "cut {cut}"
            );
        }
    }

    #[test]
    fn every_flipped_byte_is_caught() {
        let mut buf = Vec::new();
        encode_record(&msg("#r", 1, "abc"), &mut buf);
        for i in 0..buf.len() {
            let mut bad = buf.clone();
            bad[i] ^= 0x01;
            assert!(
                decode_record(&bad).is_err(),
                "flip at byte {i} went unnoticed"
            );
        }
    }

    #[test]
    fn count_records_finds_whole_records_among_garbage_and_nothing_in_a_torn_one() {
        let mut buf = vec![0u8; 13];
        encode_record(&msg("#r", 1, "abc"), &mut buf);
        buf.extend_from_slice(b"garbage");
        encode_record(&msg("#r", 2, "def"), &mut buf);
        assert_eq!(count_records(&buf), 2);
        let mut one = Vec::new();
        encode_record(&msg("#r", 3, "ghi"), &mut one);
        for cut in 0..one.len() {
            assert_eq!(count_records(&one[..cut]), 0, "cut {cut}");
        }
        let mut flipped = one.clone();
        flipped[RECORD_HEADER_LEN + 7] ^= 1;
        assert_eq!(count_records(&flipped), 0);
    }

    #[test]
    fn a_checksummed_non_msg_is_bad_payload() {
        let mut pong = Vec::new();
        encode_server(&ServerFrame::Pong { nonce: 1 }, &mut pong);
        let mut buf = Vec::new();
        encode_record(&pong, &mut buf);
        assert_eq!(
            decode_record(&buf).map(|r| r.1),
            Err(RecordError::BadPayload)
        );
    }
}
