//! The binary envelope: length-delimited frames, each carrying a batch of records.
//!
//! ```text
//! offset  size  field
//!      0     2  magic "FG"
//!      2     1  format version (2; version 1 frames are still read)
//!      3     1  flags (0; reserved)
//!      4     4  payload length, u32 little-endian, at most MAX_FRAME_LEN
//!      8     n  payload: bincode 2 (standard config) of Vec<Record>
//! ```
//!
//! A recording is a sequence of frames; a Kafka message holds one frame. A frame that fails to
//! decode is rejected whole (bincode cannot resynchronise inside a payload), but the length
//! prefix lets a reader skip to the next frame, so one bad batch never costs the ones around it.

use crate::Record;

/// The two bytes every frame starts with.
pub const MAGIC: [u8; 2] = *b"FG";
/// The format version this crate writes.
pub const VERSION: u8 = 2;
/// Every version this crate reads. Version 1 had no `Container` record and no `source` on
/// `Name`; its names read as [`NameSource::Static`](crate::NameSource::Static).
pub const READABLE_VERSIONS: [u8; 2] = [1, 2];
/// Bytes before the payload.
pub const HEADER_LEN: usize = 8;
/// Largest payload accepted, in bytes.
pub const MAX_FRAME_LEN: usize = 16 * 1024 * 1024;
/// Most records one frame may carry.
pub const MAX_BATCH_RECORDS: usize = 100_000;

fn config() -> impl bincode::config::Config {
    bincode::config::standard().with_limit::<MAX_FRAME_LEN>()
}

/// Why a frame was rejected. The caller adds where (byte offset, topic/partition/offset).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BinaryError {
    /// The frame does not start with "FG".
    #[error("bad magic {found:02x?}: not a flowgraph binary frame")]
    BadMagic {
        /// The two bytes found.
        found: [u8; 2],
    },
    /// A format version this build does not read.
    #[error("unsupported format version {0} (this build reads versions 1 and {VERSION})")]
    UnsupportedVersion(u8),
    /// The length prefix claims more than [`MAX_FRAME_LEN`].
    #[error("frame payload of {len} bytes exceeds the limit of {MAX_FRAME_LEN}")]
    FrameTooLarge {
        /// The claimed payload length.
        len: usize,
    },
    /// The input ends inside the frame.
    #[error("truncated frame: needs {needed} bytes, only {available} present")]
    Truncated {
        /// Bytes the frame needs (header plus payload).
        needed: usize,
        /// Bytes there were.
        available: usize,
    },
    /// The payload is not a valid batch.
    #[error("undecodable payload: {0}")]
    Payload(String),
    /// The payload decoded but left bytes over.
    #[error("payload has {0} trailing bytes")]
    TrailingBytes(usize),
    /// More records than [`MAX_BATCH_RECORDS`].
    #[error("batch of {count} records exceeds the limit of {MAX_BATCH_RECORDS}")]
    TooManyRecords {
        /// The batch's size.
        count: usize,
    },
    /// One record of the batch is out of bounds.
    #[error("record {index} of the batch: {message}")]
    Record {
        /// Position in the batch.
        index: usize,
        /// What is wrong.
        message: String,
    },
}

/// Reads a frame header and returns the payload length it announces.
pub fn payload_len(header: &[u8; HEADER_LEN]) -> Result<usize, BinaryError> {
    let magic = [header[0], header[1]];
    if magic != MAGIC {
        return Err(BinaryError::BadMagic { found: magic });
    }
    if !READABLE_VERSIONS.contains(&header[2]) {
        return Err(BinaryError::UnsupportedVersion(header[2]));
    }
    let len = u32::from_le_bytes([header[4], header[5], header[6], header[7]]) as usize;
    if len > MAX_FRAME_LEN {
        return Err(BinaryError::FrameTooLarge { len });
    }
    Ok(len)
}

/// Decodes a frame's payload, of the `version` its header names, into records, checking
/// every bound.
pub fn decode_payload(version: u8, payload: &[u8]) -> Result<Vec<Record>, BinaryError> {
    let decoded = if version == 1 {
        bincode::serde::decode_from_slice::<Vec<v1::Record>, _>(payload, config())
            .map(|(records, used)| (records.into_iter().map(Record::from).collect(), used))
    } else {
        bincode::serde::decode_from_slice::<Vec<Record>, _>(payload, config())
    };
    let (mut records, used): (Vec<Record>, usize) = decoded.map_err(|e| BinaryError::Payload(e.to_string()))?;
    if used != payload.len() {
        return Err(BinaryError::TrailingBytes(payload.len() - used));
    }
    if records.len() > MAX_BATCH_RECORDS {
        return Err(BinaryError::TooManyRecords { count: records.len() });
    }
    for (index, record) in records.iter_mut().enumerate() {
        record.validate().map_err(|message| BinaryError::Record { index, message })?;
    }
    Ok(records)
}

/// Decodes one whole frame (header and payload) from the start of `bytes`.
/// Returns the records and the number of bytes the frame occupied.
pub fn decode_frame(bytes: &[u8]) -> Result<(Vec<Record>, usize), BinaryError> {
    let header: &[u8; HEADER_LEN] = bytes
        .get(..HEADER_LEN)
        .and_then(|h| h.try_into().ok())
        .ok_or(BinaryError::Truncated { needed: HEADER_LEN, available: bytes.len() })?;
    let len = payload_len(header)?;
    let payload = bytes
        .get(HEADER_LEN..HEADER_LEN + len)
        .ok_or(BinaryError::Truncated { needed: HEADER_LEN + len, available: bytes.len() })?;
    Ok((decode_payload(header[2], payload)?, HEADER_LEN + len))
}

/// Encodes a batch as one frame, appended to `out`.
///
/// Panics if the batch exceeds [`MAX_BATCH_RECORDS`] or [`MAX_FRAME_LEN`]: writers choose
/// their batch sizes, so that is a programming error, not bad input.
pub fn encode_frame(records: &[Record], out: &mut Vec<u8>) {
    assert!(records.len() <= MAX_BATCH_RECORDS, "batch too large");
    let start = out.len();
    out.extend_from_slice(&MAGIC);
    out.push(VERSION);
    out.push(0);
    out.extend_from_slice(&[0; 4]);
    bincode::serde::encode_into_std_write(records, out, config()).expect("encoding into a Vec cannot fail");
    let len = out.len() - start - HEADER_LEN;
    assert!(len <= MAX_FRAME_LEN, "frame too large");
    out[start + 4..start + 8].copy_from_slice(&(len as u32).to_le_bytes());
}

/// The records of format version 1, read by converting them.
mod v1 {
    use crate::{ConnStats, EventTime, NameSource, Process, Progress};
    use serde::Deserialize;
    use std::net::IpAddr;

    #[derive(Deserialize)]
    pub(super) struct Name {
        time_: EventTime,
        addr: IpAddr,
        name: String,
    }

    #[derive(Deserialize)]
    pub(super) enum Record {
        ConnStats(ConnStats),
        Process(Process),
        Name(Name),
        Progress(Progress),
    }

    impl From<Record> for crate::Record {
        fn from(record: Record) -> crate::Record {
            match record {
                Record::ConnStats(r) => crate::Record::ConnStats(r),
                Record::Process(r) => crate::Record::Process(Box::new(r)),
                Record::Name(n) => crate::Record::Name(crate::Name {
                    time_: n.time_,
                    addr: n.addr,
                    name: n.name,
                    source: NameSource::Static,
                }),
                Record::Progress(r) => crate::Record::Progress(r),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{json, ConnStats, Container, Name, NameSource, Process, Progress, TraceRole, Upid};

    fn sample() -> Vec<Record> {
        let upid = Upid { asid: 1, pid: 2, start_ticks: 3 };
        vec![
            Record::ConnStats(ConnStats {
                time_: 10,
                upid,
                remote_addr: "2001:db8::7".parse().unwrap(),
                remote_port: 443,
                trace_role: TraceRole::Client,
                conn_open: 1,
                conn_close: 0,
                conn_active: 1,
                bytes_sent: 5,
                bytes_recv: 6,
            }),
            Record::Process(Box::new(Process { time_: 9, upid, cmdline: "curl x".into(), ..Default::default() })),
            Record::Name(Name {
                time_: 11,
                addr: "10.0.0.1".parse().unwrap(),
                name: "db".into(),
                source: NameSource::Dns,
            }),
            Record::Container(Box::new(Container {
                time_: 12,
                container: "c0ffee".into(),
                pod: "shop/web-1".into(),
                service: "shop/web,shop/web-canary".into(),
                namespace: "shop".into(),
                node: "n1".into(),
            })),
            Record::Progress(Progress {
                time_: 12,
                source: "agent-1".into(),
                losses: [("map_full".to_string(), 3)].into(),
            }),
        ]
    }

    #[test]
    fn round_trip_and_agrees_with_json() {
        let mut buf = Vec::new();
        encode_frame(&sample(), &mut buf);
        encode_frame(&sample()[..1], &mut buf);
        let (first, used) = decode_frame(&buf).unwrap();
        assert_eq!(first, sample());
        let (second, used2) = decode_frame(&buf[used..]).unwrap();
        assert_eq!(second, sample()[..1]);
        assert_eq!(used + used2, buf.len());
        for r in &first {
            assert_eq!(&json::decode_line(&json::encode_line(r)).unwrap(), r);
        }
    }

    #[test]
    fn version_1_frames_are_still_read() {
        // A version-1 batch: the enum had four variants and Name no source field.
        #[derive(serde::Serialize)]
        struct NameV1 {
            time_: u64,
            addr: std::net::IpAddr,
            name: String,
        }
        #[derive(serde::Serialize)]
        enum RecordV1 {
            #[allow(dead_code)]
            ConnStats(ConnStats),
            #[allow(dead_code)]
            Process(Process),
            Name(NameV1),
        }
        let old = vec![RecordV1::Name(NameV1 { time_: 5, addr: "10.0.0.2".parse().unwrap(), name: "cache".into() })];
        let payload = bincode::serde::encode_to_vec(&old, config()).unwrap();
        let mut frame = vec![b'F', b'G', 1, 0];
        frame.extend_from_slice(&(payload.len() as u32).to_le_bytes());
        frame.extend_from_slice(&payload);
        let (records, _) = decode_frame(&frame).unwrap();
        assert_eq!(
            records,
            vec![Record::Name(Name {
                time_: 5,
                addr: "10.0.0.2".parse().unwrap(),
                name: "cache".into(),
                source: NameSource::Static,
            })]
        );
    }

    #[test]
    fn truncated_frames_are_typed_errors() {
        let mut buf = Vec::new();
        encode_frame(&sample(), &mut buf);
        for cut in [0, 3, HEADER_LEN, buf.len() - 1] {
            assert!(matches!(decode_frame(&buf[..cut]), Err(BinaryError::Truncated { .. })), "cut at {cut}");
        }
    }

    #[test]
    fn oversized_and_foreign_frames_are_rejected_before_allocating() {
        let mut header = [b'F', b'G', VERSION, 0, 0, 0, 0, 0];
        header[4..8].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(matches!(payload_len(&header), Err(BinaryError::FrameTooLarge { .. })));
        assert!(matches!(decode_frame(b"{\"type\":1}"), Err(BinaryError::BadMagic { .. })));
        let mut buf = Vec::new();
        encode_frame(&sample(), &mut buf);
        buf[2] = 99;
        assert!(matches!(decode_frame(&buf), Err(BinaryError::UnsupportedVersion(99))));
        // A payload claiming 2^60 records must fail on the limit, not try to allocate.
        let mut payload = vec![0xFF];
        payload.extend_from_slice(&(1u64 << 60).to_le_bytes());
        assert!(matches!(decode_payload(VERSION, &payload), Err(BinaryError::Payload(_))));
    }

    #[test]
    fn a_bad_field_value_names_the_record() {
        let mut buf = Vec::new();
        encode_frame(&sample()[..1], &mut buf);
        // trace_role is the byte after remote_port (443 varint = 0xFB 0xBB 0x01); set it to 9.
        let pos = buf.windows(4).position(|w| w == [0xFB, 0xBB, 0x01, 1]).unwrap() + 3;
        buf[pos] = 9;
        let err = decode_frame(&buf).unwrap_err().to_string();
        assert!(err.contains("trace_role 9"), "{err}");
    }
}
