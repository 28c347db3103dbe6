//! Reading recorded streams: JSON Lines or binary frames, detected from the first bytes.

use flowgraph_schema::binary::{self, BinaryError, HEADER_LEN, MAGIC};
use flowgraph_schema::json::{self, MAX_LINE_LEN};
use flowgraph_schema::Record;
use std::collections::VecDeque;
use std::fmt;
use std::fs::File;
use std::io::{self, BufRead, BufReader, Read};
use std::path::Path;

/// The two encodings of a recording.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// One JSON object per line.
    JsonLines,
    /// Length-delimited bincode frames.
    Binary,
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Format::JsonLines => "JSON Lines",
            Format::Binary => "binary",
        })
    }
}

/// Where in the input a problem is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Position {
    /// 1-based line of a JSON Lines input.
    Line(u64),
    /// Byte offset of a binary frame.
    Offset(u64),
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Position::Line(line) => write!(f, "line {line}"),
            Position::Offset(offset) => write!(f, "byte offset {offset}"),
        }
    }
}

/// A piece of input that could not be decoded. Reading goes on after it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{position}: {message}")]
pub struct BadInput {
    /// Where.
    pub position: Position,
    /// What is wrong.
    pub message: String,
    /// Records lost with it, when known (a binary frame's whole batch counts as one).
    pub records_lost: u64,
}

/// An item of a recording: a record with its position, or bad input.
pub type Item = Result<(Position, Record), BadInput>;

/// Opens a recording, detecting its format.
pub fn open(path: &Path) -> io::Result<RecordingReader<BufReader<File>>> {
    let file =
        File::open(path).map_err(|e| io::Error::new(e.kind(), format!("cannot open {}: {e}", path.display())))?;
    RecordingReader::new(BufReader::with_capacity(1 << 20, file))
}

/// Iterates the records of a recording. I/O errors end the iteration with `Err` from
/// [`RecordingReader::next_item`]; decoding errors are items.
#[derive(Debug)]
pub struct RecordingReader<R> {
    input: R,
    format: Format,
    /// JSON: lines read; binary: bytes consumed.
    position: u64,
    decoded: VecDeque<(Position, Record)>,
    line: Vec<u8>,
    /// A frame header found by resynchronisation, not yet decoded.
    pending_header: Option<[u8; HEADER_LEN]>,
    done: bool,
}

impl<R: BufRead> RecordingReader<R> {
    /// Wraps a reader, detecting the format from its first bytes ("FG" starts a binary frame;
    /// anything else is read as JSON Lines).
    pub fn new(mut input: R) -> io::Result<Self> {
        let head = input.fill_buf()?;
        let format = if head.starts_with(&MAGIC) { Format::Binary } else { Format::JsonLines };
        Ok(RecordingReader {
            input,
            format,
            position: 0,
            decoded: VecDeque::new(),
            line: Vec::new(),
            pending_header: None,
            done: false,
        })
    }

    /// The detected format.
    pub fn format(&self) -> Format {
        self.format
    }

    /// The next record or piece of bad input; `Ok(None)` at the end.
    pub fn next_item(&mut self) -> io::Result<Option<Item>> {
        loop {
            if let Some(decoded) = self.decoded.pop_front() {
                return Ok(Some(Ok(decoded)));
            }
            if self.done {
                return Ok(None);
            }
            let item = match self.format {
                Format::JsonLines => self.read_line()?,
                Format::Binary => self.read_frame()?,
            };
            if let Some(bad) = item {
                return Ok(Some(Err(bad)));
            }
        }
    }

    /// Reads one line; a record goes to `decoded`, bad input is returned.
    fn read_line(&mut self) -> io::Result<Option<BadInput>> {
        self.line.clear();
        // Read at most one byte past the limit, then skip the rest of an over-long line.
        let read = (&mut self.input).take(MAX_LINE_LEN as u64 + 1).read_until(b'\n', &mut self.line)?;
        if read == 0 {
            self.done = true;
            return Ok(None);
        }
        self.position += 1;
        let position = Position::Line(self.position);
        if self.line.last() != Some(&b'\n') && self.line.len() > MAX_LINE_LEN {
            let mut skipped = self.line.len();
            loop {
                let buf = self.input.fill_buf()?;
                if buf.is_empty() {
                    break;
                }
                match buf.iter().position(|b| *b == b'\n') {
                    Some(end) => {
                        skipped += end;
                        self.input.consume(end + 1);
                        break;
                    }
                    None => {
                        let len = buf.len();
                        skipped += len;
                        self.input.consume(len);
                    }
                }
            }
            return Ok(Some(BadInput {
                position,
                message: format!("line is at least {skipped} bytes long, more than the limit of {MAX_LINE_LEN}"),
                records_lost: 1,
            }));
        }
        let text = match std::str::from_utf8(&self.line) {
            Ok(text) => text.trim(),
            Err(e) => return Ok(Some(BadInput { position, message: format!("not UTF-8: {e}"), records_lost: 1 })),
        };
        if text.is_empty() {
            return Ok(None);
        }
        match json::decode_line(text) {
            Ok(record) => {
                self.decoded.push_back((position, record));
                Ok(None)
            }
            Err(e) => Ok(Some(BadInput { position, message: e.to_string(), records_lost: 1 })),
        }
    }

    /// Reads one frame; its records go to `decoded`, bad input is returned.
    fn read_frame(&mut self) -> io::Result<Option<BadInput>> {
        let offset = self.position;
        let position = Position::Offset(offset);
        let mut header = [0u8; HEADER_LEN];
        let got = match self.pending_header.take() {
            Some(pending) => {
                header = pending;
                HEADER_LEN
            }
            None => read_up_to(&mut self.input, &mut header)?,
        };
        if got == 0 {
            self.done = true;
            return Ok(None);
        }
        if got < HEADER_LEN {
            self.done = true;
            self.position += got as u64;
            let e = BinaryError::Truncated { needed: HEADER_LEN, available: got };
            return Ok(Some(BadInput { position, message: e.to_string(), records_lost: 0 }));
        }
        let len = match binary::payload_len(&header) {
            Ok(len) => len,
            Err(e) => {
                // The length cannot be trusted: skip to the next plausible frame header.
                let skipped = self.resync(&header[1..])?;
                self.position += 1 + skipped;
                return Ok(Some(BadInput {
                    position,
                    message: format!("{e}; skipped {} bytes to the next frame", 1 + skipped),
                    records_lost: 0,
                }));
            }
        };
        let mut payload = vec![0u8; len];
        let got = read_up_to(&mut self.input, &mut payload)?;
        self.position += (HEADER_LEN + got) as u64;
        if got < len {
            self.done = true;
            let e = BinaryError::Truncated { needed: HEADER_LEN + len, available: HEADER_LEN + got };
            return Ok(Some(BadInput { position, message: e.to_string(), records_lost: 1 }));
        }
        match binary::decode_payload(header[2], &payload) {
            Ok(records) => {
                self.decoded.extend(records.into_iter().map(|r| (position, r)));
                Ok(None)
            }
            Err(e) => Ok(Some(BadInput { position, message: e.to_string(), records_lost: 1 })),
        }
    }

    /// Consumes bytes until the input starts with a valid frame header (or ends). `carried`
    /// are bytes already read past the bad header's first byte. Returns the bytes skipped
    /// beyond the first.
    fn resync(&mut self, carried: &[u8]) -> io::Result<u64> {
        let mut window: VecDeque<u8> = carried.iter().copied().collect();
        let mut skipped = 0u64;
        loop {
            while window.len() < HEADER_LEN {
                let mut byte = [0u8; 1];
                if read_up_to(&mut self.input, &mut byte)? == 0 {
                    self.done = true;
                    return Ok(skipped + window.len() as u64);
                }
                window.push_back(byte[0]);
            }
            let header: [u8; HEADER_LEN] = std::array::from_fn(|i| window[i]);
            if header[3] == 0 && binary::payload_len(&header).is_ok() {
                // Put the header back in front of the stream by decoding it next.
                self.pending_header = Some(header);
                return Ok(skipped);
            }
            window.pop_front();
            skipped += 1;
        }
    }
}

fn read_up_to(input: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match input.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

#[cfg(test)]
mod tests {
    use super::*;
    use flowgraph_schema::{Progress, Record};

    fn progress(t: u64) -> Record {
        Record::Progress(Progress { time_: t, source: "a".into(), losses: Default::default() })
    }

    fn read_all(bytes: &[u8]) -> (Format, Vec<Item>) {
        let mut reader = RecordingReader::new(bytes).unwrap();
        let mut items = Vec::new();
        while let Some(item) = reader.next_item().unwrap() {
            items.push(item);
        }
        (reader.format(), items)
    }

    #[test]
    fn json_lines_report_bad_lines_by_number_and_keep_the_rest() {
        let input = b"{\"type\":\"progress\",\"time_\":1}\n\nnot json\n{\"type\":\"progress\",\"time_\":2}\n{\"type\":\"bogus\"}\n{\"type\":\"progress\",\"time_\":3}";
        let (format, items) = read_all(input);
        assert_eq!(format, Format::JsonLines);
        let summary: Vec<String> = items
            .iter()
            .map(|i| match i {
                Ok((p, r)) => format!("{p} ok {}", r.time()),
                Err(bad) => format!("{} bad", bad.position),
            })
            .collect();
        assert_eq!(summary, ["line 1 ok 1", "line 3 bad", "line 4 ok 2", "line 5 bad", "line 6 ok 3"]);
    }

    #[test]
    fn an_overlong_line_is_skipped_whole() {
        let mut input =
            format!("{{\"type\":\"progress\",\"time_\":1,\"x\":\"{}\"}}\n", "y".repeat(MAX_LINE_LEN * 2)).into_bytes();
        input.extend_from_slice(b"{\"type\":\"progress\",\"time_\":2}\n");
        let (_, items) = read_all(&input);
        assert!(items[0].as_ref().unwrap_err().message.contains("more than the limit"));
        assert_eq!(items[1].as_ref().unwrap().1.time(), 2);
        assert_eq!(items[1].as_ref().unwrap().0, Position::Line(2));
        assert_eq!(items.len(), 2);
    }

    #[test]
    fn binary_skips_a_corrupt_frame_and_resyncs_after_garbage() {
        let mut input = Vec::new();
        binary::encode_frame(&[progress(1), progress(2)], &mut input);
        let second = input.len();
        binary::encode_frame(&[progress(3)], &mut input);
        input[second + HEADER_LEN] = 0xFF; // corrupt the second frame's payload
        let garbage_at = input.len();
        input.extend_from_slice(b"garbage!");
        binary::encode_frame(&[progress(4)], &mut input);
        let (format, items) = read_all(&input);
        assert_eq!(format, Format::Binary);
        assert_eq!(items.len(), 5, "{items:?}");
        assert_eq!(items[1].as_ref().unwrap().1.time(), 2);
        assert_eq!(items[2].as_ref().unwrap_err().position, Position::Offset(second as u64));
        assert_eq!(items[3].as_ref().unwrap_err().position, Position::Offset(garbage_at as u64));
        let (position, record) = items[4].as_ref().unwrap();
        assert_eq!((*position, record.time()), (Position::Offset(garbage_at as u64 + 8), 4));
    }

    #[test]
    fn an_oversized_length_prefix_is_reported_and_the_next_frame_read() {
        let mut input = Vec::new();
        binary::encode_frame(&[progress(1)], &mut input);
        let bad_at = input.len();
        binary::encode_frame(&[progress(2)], &mut input);
        // The second frame claims 16 MiB + 1 bytes: refused before allocating, then skipped.
        let claimed = (binary::MAX_FRAME_LEN as u32 + 1).to_le_bytes();
        input[bad_at + 4..bad_at + 8].copy_from_slice(&claimed);
        let next_at = input.len();
        binary::encode_frame(&[progress(3)], &mut input);
        let (_, items) = read_all(&input);
        assert_eq!(items.len(), 3, "{items:?}");
        let bad = items[1].as_ref().unwrap_err();
        assert_eq!(bad.position, Position::Offset(bad_at as u64));
        assert!(bad.message.contains("exceeds the limit"), "{}", bad.message);
        let (position, record) = items[2].as_ref().unwrap();
        assert_eq!((*position, record.time()), (Position::Offset(next_at as u64), 3));
    }

    #[test]
    fn binary_truncated_tail_is_reported() {
        let mut input = Vec::new();
        binary::encode_frame(&[progress(1)], &mut input);
        let end = input.len();
        binary::encode_frame(&[progress(2)], &mut input);
        input.truncate(input.len() - 2);
        let (_, items) = read_all(&input);
        assert_eq!(items.len(), 2);
        let bad = items[1].as_ref().unwrap_err();
        assert_eq!(bad.position, Position::Offset(end as u64));
        assert!(bad.message.contains("truncated"), "{}", bad.message);
    }
}
