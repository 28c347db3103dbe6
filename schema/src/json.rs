//! The JSON Lines interchange form: one object per line, tagged by `type`.
//!
//! ```text
//! {"type":"conn_stats","time_":NS,"upid":"ASID:PID:START_TICKS","remote_addr":"10.0.0.7",
//!  "remote_port":6379,"trace_role":1,"conn_open":1,"conn_close":0,"bytes_sent":N,"bytes_recv":N}
//! {"type":"process","time_":NS,"upid":"…","cmdline":"…","pod":"ns/name",…}
//! {"type":"name","time_":NS,"addr":"…","name":"…","source":"dns"}
//! {"type":"container","time_":NS,"container":"<id>","pod":"ns/name","service":"ns/a,ns/b",…}
//! {"type":"progress","time_":NS,"source":"agent-7"}
//! ```
//!
//! Unknown fields are ignored; missing optional fields are empty.

use crate::{ConnStats, Container, Name, Process, Progress, Record};
use serde::{Deserialize, Serialize};

/// Longest line the decoder accepts, in bytes.
pub const MAX_LINE_LEN: usize = 64 * 1024;

/// Why one JSON line was rejected. The caller adds where (line number, file).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JsonError {
    /// The line is longer than [`MAX_LINE_LEN`].
    #[error("line is {len} bytes long, more than the limit of {MAX_LINE_LEN}")]
    LineTooLong {
        /// The line's length.
        len: usize,
    },
    /// Not JSON, a wrong type, a missing field, an unknown `type` or a bad value.
    #[error("{}{message}", if *column > 0 { format!("column {column}: ") } else { String::new() })]
    Invalid {
        /// 1-based column where the parser stopped (0 when serde_json does not know it).
        column: usize,
        /// serde_json's description.
        message: String,
    },
    /// Well-formed, but a value is out of bounds.
    #[error("{0}")]
    OutOfBounds(String),
}

#[derive(Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum Tagged {
    ConnStats(ConnStats),
    Process(Process),
    Name(Name),
    Progress(Progress),
    Container(Container),
}

/// Decodes one line (without its newline).
pub fn decode_line(line: &str) -> Result<Record, JsonError> {
    if line.len() > MAX_LINE_LEN {
        return Err(JsonError::LineTooLong { len: line.len() });
    }
    let tagged: Tagged = serde_json::from_str(line)
        .map_err(|e| JsonError::Invalid { column: e.column(), message: strip_position(&e.to_string()) })?;
    let mut record = match tagged {
        Tagged::ConnStats(r) => Record::ConnStats(r),
        Tagged::Process(r) => Record::Process(Box::new(r)),
        Tagged::Name(r) => Record::Name(r),
        Tagged::Progress(r) => Record::Progress(r),
        Tagged::Container(r) => Record::Container(Box::new(r)),
    };
    record.validate().map_err(JsonError::OutOfBounds)?;
    Ok(record)
}

/// Encodes one record as a line (without the newline).
pub fn encode_line(record: &Record) -> String {
    // The variant's contents cloned, not the record: a boxed process or container would be
    // cloned into a new box only to be moved out of it.
    let tagged = match record {
        Record::ConnStats(r) => Tagged::ConnStats(r.clone()),
        Record::Process(r) => Tagged::Process((**r).clone()),
        Record::Name(r) => Tagged::Name(r.clone()),
        Record::Progress(r) => Tagged::Progress(r.clone()),
        Record::Container(r) => Tagged::Container((**r).clone()),
    };
    serde_json::to_string(&tagged).expect("records always serialize to JSON")
}

/// serde_json appends " at line L column C"; the caller reports the position its own way.
fn strip_position(message: &str) -> String {
    match message.rfind(" at line ") {
        Some(at) => message[..at].to_string(),
        None => message.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{TraceRole, Upid};

    const CONN: &str = r#"{"type":"conn_stats","time_":1000,"upid":"7:42:9001","remote_addr":"10.0.0.7","remote_port":6379,"trace_role":1,"conn_open":1,"conn_close":0,"conn_active":1,"bytes_sent":100,"bytes_recv":2000}"#;

    #[test]
    fn decodes_the_design_example() {
        let Record::ConnStats(c) = decode_line(CONN).unwrap() else { panic!("not conn_stats") };
        assert_eq!(c.upid, Upid { asid: 7, pid: 42, start_ticks: 9001 });
        assert_eq!(c.remote_addr.to_string(), "10.0.0.7");
        assert_eq!(c.trace_role, TraceRole::Client);
        assert_eq!((c.bytes_sent, c.bytes_recv), (100, 2000));
    }

    #[test]
    fn round_trips_every_kind() {
        let lines = [
            CONN,
            r#"{"type":"process","time_":5,"upid":"1:2:3","cmdline":"redis-server *:6379","comm":"redis-server","container":"abc","host":"h1","pod":"db/redis-0","service":"db/redis","namespace":"db","node":"n1"}"#,
            r#"{"type":"name","time_":6,"addr":"2001:db8::1","name":"api.example.com"}"#,
            r#"{"type":"progress","time_":7,"source":"agent-1"}"#,
        ];
        for line in lines {
            let record = decode_line(line).unwrap();
            assert_eq!(decode_line(&encode_line(&record)).unwrap(), record, "{line}");
        }
    }

    #[test]
    fn unknown_fields_are_ignored_and_optional_fields_default() {
        let r = decode_line(r#"{"type":"process","time_":5,"upid":"1:2:3","future_field":[1,2]}"#).unwrap();
        let Record::Process(p) = r else { panic!() };
        assert_eq!(p.cmdline, "");
        assert_eq!(p.pod, "");
    }

    #[test]
    fn ipv4_mapped_ipv6_becomes_ipv4_and_ipv6_is_canonical() {
        let r = decode_line(r#"{"type":"name","time_":6,"addr":"::ffff:10.1.2.3","name":"x"}"#).unwrap();
        let Record::Name(n) = r else { panic!() };
        assert_eq!(n.addr.to_string(), "10.1.2.3");
        let r = decode_line(r#"{"type":"name","time_":6,"addr":"2001:0DB8:0:0::0001","name":"x"}"#).unwrap();
        let Record::Name(n) = r else { panic!() };
        assert_eq!(n.addr.to_string(), "2001:db8::1");
    }

    #[test]
    fn bad_lines_give_clear_errors() {
        let cases = [
            ("garbage", "expected value"),
            (r#"{"type":"conn_stats","time_":"soon"}"#, "invalid type"),
            (r#"{"type":"teleport","time_":1}"#, "unknown variant `teleport`"),
            (&CONN.replace("\"bytes_sent\":100", "\"bytes_sent\":-5"), "invalid value: integer `-5`"),
            (&CONN.replace("\"trace_role\":1", "\"trace_role\":9"), "unknown trace_role 9"),
            (&CONN.replace("7:42:9001", "7:42"), "invalid upid"),
            (&CONN.replace("10.0.0.7", "10.0.0.300"), "invalid IP address"),
            (r#"{"type":"name","time_":6,"addr":"10.0.0.1"}"#, "missing field `name`"),
        ];
        for (line, expected) in cases {
            let err = decode_line(line).unwrap_err().to_string();
            assert!(err.contains(expected), "{line}\n  gave {err}\n  wanted {expected}");
        }
    }

    #[test]
    fn oversized_strings_and_lines_are_rejected() {
        let long = "x".repeat(crate::MAX_STRING_LEN + 1);
        let line = format!(r#"{{"type":"process","time_":5,"upid":"1:2:3","cmdline":"{long}"}}"#);
        assert!(decode_line(&line).unwrap_err().to_string().contains("`cmdline`"));
        let line = format!(r#"{{"type":"process","time_":5,"upid":"1:2:3","cmdline":"{}"}}"#, "y".repeat(MAX_LINE_LEN));
        assert!(matches!(decode_line(&line), Err(JsonError::LineTooLong { .. })));
    }
}
