//! Graph deltas as JSON Lines.
//!
//! ```text
//! {"time":T,"diff":1,"row":{"from_entity":…,"upid":"A:P:S","cmdline":…,"remote_addr":…,
//!   "to_entity":…,"bytes_sent":N,"bytes_recv":N,"bytes_total":N}}
//! {"time":T,"diff":-1,"edge":{"from_entity":…,"to_entity":…,"bytes_sent":N,"bytes_recv":N,"bytes_total":N}}
//! {"progress":P}      every update with time < P is above this line
//! ```

use flowgraph_pipeline::{Edge, GraphRecord, Output, Row, Text, TextInterner};
use flowgraph_schema::{EventTime, Upid};
use serde::Serialize;
use sonic_rs::format::Formatter;
use std::borrow::Cow;
use std::io::{self, Write};
use std::net::IpAddr;

/// A row as it appears in deltas and snapshots.
#[derive(Debug, Serialize)]
pub struct RowJson<'a> {
    from_entity: &'a str,
    upid: &'a Upid,
    cmdline: &'a str,
    remote_addr: &'a IpAddr,
    to_entity: &'a str,
    bytes_sent: u64,
    bytes_recv: u64,
    bytes_total: u64,
}

impl<'a> From<&'a Row> for RowJson<'a> {
    fn from(row: &'a Row) -> Self {
        RowJson {
            from_entity: &row.from_entity,
            upid: &row.upid,
            cmdline: &row.cmdline,
            remote_addr: &row.remote_addr,
            to_entity: &row.to_entity,
            bytes_sent: row.bytes_sent,
            bytes_recv: row.bytes_recv,
            bytes_total: row.bytes_total(),
        }
    }
}

/// An edge as it appears in deltas and snapshots.
#[derive(Debug, Serialize)]
pub struct EdgeJson<'a> {
    from_entity: &'a str,
    to_entity: &'a str,
    bytes_sent: u64,
    bytes_recv: u64,
    bytes_total: u64,
}

impl<'a> From<&'a Edge> for EdgeJson<'a> {
    fn from(edge: &'a Edge) -> Self {
        EdgeJson {
            from_entity: &edge.from_entity,
            to_entity: &edge.to_entity,
            bytes_sent: edge.bytes_sent,
            bytes_recv: edge.bytes_recv,
            bytes_total: edge.bytes_total(),
        }
    }
}

/// A delta line's serde form: the reference that [`write_line`]'s bytes are tested against.
#[cfg(test)]
#[derive(Serialize)]
#[serde(untagged)]
enum Line<'a> {
    Row { time: EventTime, diff: i64, row: RowJson<'a> },
    Edge { time: EventTime, diff: i64, edge: EdgeJson<'a> },
    Progress { progress: EventTime },
}

/// Formats one output as a delta line (without the newline).
pub fn to_line(output: &Output) -> String {
    let mut bytes = Vec::new();
    write_line(output, &mut bytes);
    String::from_utf8(bytes).expect("JSON is UTF-8")
}

/// Appends one delta line (without its newline) to `out`, the same bytes as [`to_line`].
///
/// The line's shape is fixed, so its keys and punctuation are written as constant bytes; texts
/// go through sonic-rs's SIMD string escaping and integers through itoa. Through serde, every
/// key was escaped like a text on every line (docs/KAFKA.md, "The delta lines without serde").
/// A property test holds the bytes to serde_json's serialization of [`Line`].
pub fn write_line(output: &Output, out: &mut Vec<u8>) {
    match output {
        Output::Update { time, diff, record } => {
            out.extend_from_slice(b"{\"time\":");
            write_integer(*time, out);
            out.extend_from_slice(b",\"diff\":");
            write_integer(*diff, out);
            match record {
                GraphRecord::Row(row) => {
                    out.extend_from_slice(b",\"row\":");
                    write_row(row, out);
                }
                GraphRecord::Edge(edge) => {
                    out.extend_from_slice(b",\"edge\":");
                    write_edge(edge, out);
                }
            }
            out.push(b'}');
        }
        Output::Progress(progress) => {
            out.extend_from_slice(b"{\"progress\":");
            write_integer(*progress, out);
            out.push(b'}');
        }
    }
}

/// Appends a record's object, a state topic value: the bytes serde_json writes for
/// [`RowJson`] or [`EdgeJson`].
pub(crate) fn write_record(record: &GraphRecord, out: &mut Vec<u8>) {
    match record {
        GraphRecord::Row(row) => write_row(row, out),
        GraphRecord::Edge(edge) => write_edge(edge, out),
    }
}

/// A row's object, as [`RowJson`] serializes.
fn write_row(row: &Row, out: &mut Vec<u8>) {
    out.extend_from_slice(b"{\"from_entity\":");
    write_text(&row.from_entity, out);
    out.extend_from_slice(b",\"upid\":");
    write_upid(&row.upid, out);
    out.extend_from_slice(b",\"cmdline\":");
    write_text(&row.cmdline, out);
    out.extend_from_slice(b",\"remote_addr\":");
    write_address(&row.remote_addr, out);
    out.extend_from_slice(b",\"to_entity\":");
    write_text(&row.to_entity, out);
    write_byte_counts(row.bytes_sent, row.bytes_recv, row.bytes_total(), out);
}

/// An edge's object, as [`EdgeJson`] serializes.
fn write_edge(edge: &Edge, out: &mut Vec<u8>) {
    out.extend_from_slice(b"{\"from_entity\":");
    write_text(&edge.from_entity, out);
    out.extend_from_slice(b",\"to_entity\":");
    write_text(&edge.to_entity, out);
    write_byte_counts(edge.bytes_sent, edge.bytes_recv, edge.bytes_total(), out);
}

/// The three byte columns and the object's closing brace.
fn write_byte_counts(sent: u64, recv: u64, total: u64, out: &mut Vec<u8>) {
    out.extend_from_slice(b",\"bytes_sent\":");
    write_integer(sent, out);
    out.extend_from_slice(b",\"bytes_recv\":");
    write_integer(recv, out);
    out.extend_from_slice(b",\"bytes_total\":");
    write_integer(total, out);
    out.push(b'}');
}

/// An address as a JSON string, as its `Display` (and so serde) writes it. Almost every
/// address is IPv4, written octet by octet without `fmt`, whose machinery was ~2% of the
/// Kafka sink's thread.
pub(crate) fn write_address(address: &IpAddr, out: &mut Vec<u8>) {
    out.push(b'"');
    match address {
        IpAddr::V4(v4) => {
            for (i, octet) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    out.push(b'.');
                }
                write_integer(octet, out);
            }
        }
        IpAddr::V6(v6) => write!(out, "{v6}").expect("writing to a Vec does not fail"),
    }
    out.push(b'"');
}

/// A upid as a JSON string, as its `Display` (and so serde) writes it: digits and colons,
/// nothing to escape.
pub(crate) fn write_upid(upid: &Upid, out: &mut Vec<u8>) {
    out.push(b'"');
    upid.write_text(out);
    out.push(b'"');
}

/// A text as a JSON string, escaped as serde_json escapes it.
pub(crate) fn write_text(text: &str, out: &mut Vec<u8>) {
    sonic_rs::format::CompactFormatter.write_string_fast(out, text, true).expect("writing to a Vec does not fail");
}

/// An integer in decimal, as serde_json writes it.
pub(crate) fn write_integer(value: impl itoa::Integer, out: &mut Vec<u8>) {
    out.extend_from_slice(itoa::Buffer::new().format(value).as_bytes());
}

#[cfg(test)]
fn line(output: &Output) -> Line<'_> {
    match output {
        Output::Update { time, diff, record: GraphRecord::Row(row) } => {
            Line::Row { time: *time, diff: *diff, row: row.into() }
        }
        Output::Update { time, diff, record: GraphRecord::Edge(edge) } => {
            Line::Edge { time: *time, diff: *diff, edge: edge.into() }
        }
        Output::Progress(progress) => Line::Progress { progress: *progress },
    }
}

#[derive(serde::Deserialize)]
struct LineIn<'a> {
    time: Option<EventTime>,
    diff: Option<i64>,
    #[serde(borrow)]
    row: Option<RowIn<'a>>,
    #[serde(borrow)]
    edge: Option<EdgeIn<'a>>,
    progress: Option<EventTime>,
}

// Texts are borrowed from the line unless they hold escapes: the decoder interns them, so a
// text shared by many records is allocated once.
#[derive(serde::Deserialize)]
struct RowIn<'a> {
    #[serde(borrow)]
    from_entity: Cow<'a, str>,
    upid: Upid,
    #[serde(borrow)]
    cmdline: Cow<'a, str>,
    remote_addr: IpAddr,
    #[serde(borrow)]
    to_entity: Cow<'a, str>,
    bytes_sent: u64,
    bytes_recv: u64,
}

#[derive(serde::Deserialize)]
struct EdgeIn<'a> {
    #[serde(borrow)]
    from_entity: Cow<'a, str>,
    #[serde(borrow)]
    to_entity: Cow<'a, str>,
    bytes_sent: u64,
    bytes_recv: u64,
}

/// A state topic value: a row's or an edge's object (a row is the one with a upid).
#[derive(serde::Deserialize)]
struct RecordIn<'a> {
    #[serde(borrow)]
    from_entity: Cow<'a, str>,
    upid: Option<Upid>,
    #[serde(borrow)]
    cmdline: Option<Cow<'a, str>>,
    remote_addr: Option<IpAddr>,
    #[serde(borrow)]
    to_entity: Cow<'a, str>,
    bytes_sent: u64,
    bytes_recv: u64,
}

/// Parses a delta line back into an output (what a downstream consumer does). To parse
/// many, keep a [`DeltaDecoder`]: it shares texts between the records.
pub fn from_line(line: &str) -> Result<Output, String> {
    DeltaDecoder::default().line(line.as_bytes())
}

/// Parses delta lines and state values into records, each distinct text allocated once.
///
/// A restarted sink's take-over, a view's bootstrap and a consumer following the delta topic
/// decode millions of updates whose texts (entities, command lines) repeat: sonic-rs parses
/// them borrowed from the line, and the decoder hands out one shared copy of each. Texts no
/// record holds any more are dropped as the set grows, so a decoder kept for a long-running
/// consumer holds about what its records hold.
#[derive(Default, Debug)]
pub struct DeltaDecoder {
    texts: TextInterner,
    /// The set's size at which texts no record holds are dropped.
    sweep_at: usize,
}

impl DeltaDecoder {
    /// Parses one delta line (without its newline).
    pub fn line(&mut self, line: &[u8]) -> Result<Output, String> {
        let parsed: LineIn = sonic_rs::from_slice(line).map_err(|e| format!("bad delta line: {e}"))?;
        if let Some(progress) = parsed.progress {
            return Ok(Output::Progress(progress));
        }
        let (Some(time), Some(diff)) = (parsed.time, parsed.diff) else {
            return Err("bad delta line: neither progress nor time and diff".into());
        };
        let record = match (parsed.row, parsed.edge) {
            (Some(r), None) => GraphRecord::Row(Row {
                from_entity: self.intern(&r.from_entity),
                upid: r.upid,
                cmdline: self.intern(&r.cmdline),
                remote_addr: r.remote_addr,
                to_entity: self.intern(&r.to_entity),
                bytes_sent: r.bytes_sent,
                bytes_recv: r.bytes_recv,
            }),
            (None, Some(e)) => GraphRecord::Edge(Edge {
                from_entity: self.intern(&e.from_entity),
                to_entity: self.intern(&e.to_entity),
                bytes_sent: e.bytes_sent,
                bytes_recv: e.bytes_recv,
            }),
            _ => return Err("bad delta line: needs exactly one of row and edge".into()),
        };
        Ok(Output::Update { time, diff, record })
    }

    /// Parses a state topic value: the record object of the key's last delta line.
    pub fn state_value(&mut self, value: &[u8]) -> Result<GraphRecord, String> {
        let parsed: RecordIn = sonic_rs::from_slice(value).map_err(|e| format!("bad state value: {e}"))?;
        match (parsed.upid, parsed.cmdline, parsed.remote_addr) {
            (Some(upid), Some(cmdline), Some(remote_addr)) => Ok(GraphRecord::Row(Row {
                from_entity: self.intern(&parsed.from_entity),
                upid,
                cmdline: self.intern(&cmdline),
                remote_addr,
                to_entity: self.intern(&parsed.to_entity),
                bytes_sent: parsed.bytes_sent,
                bytes_recv: parsed.bytes_recv,
            })),
            (None, None, None) => Ok(GraphRecord::Edge(Edge {
                from_entity: self.intern(&parsed.from_entity),
                to_entity: self.intern(&parsed.to_entity),
                bytes_sent: parsed.bytes_sent,
                bytes_recv: parsed.bytes_recv,
            })),
            _ => Err("bad state value: a row needs upid, cmdline and remote_addr, an edge none of them".into()),
        }
    }

    fn intern(&mut self, text: &str) -> Text {
        if self.texts.len() >= self.sweep_at && !self.texts.contains(text) {
            // Before the set grows: drop the texts no record decoded so far still holds.
            self.texts.forget_unheld();
            self.sweep_at = (2 * self.texts.len()).max(4096);
        }
        self.texts.intern(text)
    }
}

/// Writes outputs as delta lines.
#[derive(Debug)]
pub struct DeltaWriter<W: Write> {
    out: W,
    lines: u64,
    /// The line being written, reused.
    line: Vec<u8>,
}

impl<W: Write> DeltaWriter<W> {
    /// Wraps a writer (buffer it: each line goes out in a write of its own).
    pub fn new(out: W) -> Self {
        DeltaWriter { out, lines: 0, line: Vec::new() }
    }

    /// Writes one output.
    pub fn write(&mut self, output: &Output) -> io::Result<()> {
        self.line.clear();
        write_line(output, &mut self.line);
        self.line.push(b'\n');
        self.out.write_all(&self.line)?;
        self.lines += 1;
        Ok(())
    }

    /// Lines written so far.
    pub fn lines(&self) -> u64 {
        self.lines
    }

    /// Flushes and returns the writer.
    pub fn finish(mut self) -> io::Result<W> {
        self.out.flush()?;
        Ok(self.out)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Any row or edge; its texts favour ASCII, where the escapes are (quotes, backslashes,
    /// control characters), and include any other character.
    pub(crate) fn any_record() -> impl Strategy<Value = GraphRecord> {
        let char = prop_oneof![prop::char::range('\0', '\u{7f}'), any::<char>()];
        let text = move || prop::collection::vec(char.clone(), 0..24).prop_map(String::from_iter);
        let row = (text(), any::<(u32, u32, u64)>(), text(), any::<IpAddr>(), text(), any::<(u64, u64)>()).prop_map(
            |(from, (asid, pid, start_ticks), cmdline, addr, to, (sent, recv))| {
                GraphRecord::Row(Row {
                    from_entity: from.into(),
                    upid: Upid { asid, pid, start_ticks },
                    cmdline: cmdline.into(),
                    remote_addr: addr,
                    to_entity: to.into(),
                    bytes_sent: sent,
                    bytes_recv: recv,
                })
            },
        );
        let edge = (text(), text(), any::<(u64, u64)>()).prop_map(|(from, to, (sent, recv))| {
            GraphRecord::Edge(Edge {
                from_entity: from.into(),
                to_entity: to.into(),
                bytes_sent: sent,
                bytes_recv: recv,
            })
        });
        prop_oneof![row, edge]
    }

    proptest! {
        // Lines are written by sonic-rs for speed; consumers, golden files and the state values
        // (serde_json, `kafka::state_value`) expect serde_json's bytes: any text, any number.
        #[test]
        fn lines_are_the_bytes_serde_json_writes(time in any::<u64>(), diff in any::<i64>(), record in any_record()) {
            let update = Output::Update { time, diff, record };
            let line = to_line(&update);
            prop_assert_eq!(&line, &serde_json::to_string(&super::line(&update)).unwrap());
            prop_assert_eq!(from_line(&line).unwrap(), update);
        }

        // A state value is the record object of the key's delta line (`kafka::state_value`).
        #[test]
        fn state_values_decode_to_their_record(record in any_record()) {
            let value = match &record {
                GraphRecord::Row(row) => serde_json::to_string(&RowJson::from(row)).unwrap(),
                GraphRecord::Edge(edge) => serde_json::to_string(&EdgeJson::from(edge)).unwrap(),
            };
            prop_assert_eq!(DeltaDecoder::default().state_value(value.as_bytes()).unwrap(), record);
        }
    }

    #[test]
    fn a_decoder_shares_each_text_and_forgets_the_ones_no_record_holds() {
        let line = |from: &str, to: &str| {
            let edge = Edge { from_entity: from.into(), to_entity: to.into(), bytes_sent: 1, bytes_recv: 2 };
            to_line(&Output::Update { time: 1, diff: 1, record: GraphRecord::Edge(edge) })
        };
        let edge = |output: Output| match output {
            Output::Update { record: GraphRecord::Edge(edge), .. } => edge,
            other => panic!("not an edge: {other:?}"),
        };
        let mut decoder = DeltaDecoder::default();
        let first = edge(decoder.line(line("shop/cart", "db").as_bytes()).unwrap());
        let second = edge(decoder.line(line("shop/cart", "shop/cart").as_bytes()).unwrap());
        assert!(Text::ptr_eq(&first.from_entity, &second.from_entity));
        assert!(Text::ptr_eq(&second.from_entity, &second.to_entity));
        // An escaped text is unescaped, then shared like any other.
        let escaped = edge(decoder.line(line("say \"hi\"\n", "db").as_bytes()).unwrap());
        assert_eq!(&*escaped.from_entity, "say \"hi\"\n");
        assert!(Text::ptr_eq(&escaped.to_entity, &first.to_entity));

        // Past the set's first sweep, the texts only the decoder held are gone; held ones stay.
        drop((second, escaped));
        for n in 0..5000 {
            decoder.line(line(&format!("pod-{n}"), "db").as_bytes()).unwrap();
        }
        assert!(decoder.texts.contains("shop/cart") && decoder.texts.contains("db"));
        assert!(!decoder.texts.contains("say \"hi\"\n"));
        assert!(decoder.texts.len() < 5000, "{} texts kept", decoder.texts.len());
    }

    #[test]
    fn bad_lines_and_values_say_what_is_wrong() {
        let mut decoder = DeltaDecoder::default();
        let error = |result: Result<Output, String>| result.unwrap_err();
        assert!(error(decoder.line(b"{\"time\":1,\"diff\":1")).starts_with("bad delta line: "));
        assert!(error(decoder.line(b"{\"time\":1}")).contains("neither progress nor time and diff"));
        assert!(error(decoder.line(b"{\"time\":1,\"diff\":1}")).contains("exactly one of row and edge"));
        assert!(error(decoder.line(b"{\"progress\":\"x\"}")).starts_with("bad delta line: "));
        assert!(error(decoder.line(&[b'{', 0xff, b'}'])).starts_with("bad delta line: "));
        let half_row = br#"{"from_entity":"a","upid":"1:2:3","to_entity":"b","bytes_sent":1,"bytes_recv":2}"#;
        assert!(decoder.state_value(half_row).unwrap_err().contains("a row needs upid, cmdline and remote_addr"));
        assert!(decoder.state_value(b"[]").unwrap_err().starts_with("bad state value: "));
    }

    #[test]
    fn lines_have_the_documented_shape() {
        let row = Row {
            from_entity: "shop/cart".into(),
            upid: Upid { asid: 1, pid: 2, start_ticks: 3 },
            cmdline: "cart --port 80".into(),
            remote_addr: "2001:db8::1".parse().unwrap(),
            to_entity: "db".into(),
            bytes_sent: 5,
            bytes_recv: 7,
        };
        assert_eq!(
            to_line(&Output::Update { time: 9, diff: -1, record: GraphRecord::Row(row) }),
            r#"{"time":9,"diff":-1,"row":{"from_entity":"shop/cart","upid":"1:2:3","cmdline":"cart --port 80","remote_addr":"2001:db8::1","to_entity":"db","bytes_sent":5,"bytes_recv":7,"bytes_total":12}}"#
        );
        let edge = Edge { from_entity: "a".into(), to_entity: "b".into(), bytes_sent: 1, bytes_recv: 2 };
        assert_eq!(
            to_line(&Output::Update { time: 9, diff: 1, record: GraphRecord::Edge(edge) }),
            r#"{"time":9,"diff":1,"edge":{"from_entity":"a","to_entity":"b","bytes_sent":1,"bytes_recv":2,"bytes_total":3}}"#
        );
        assert_eq!(to_line(&Output::Progress(10)), r#"{"progress":10}"#);
        let row = Row {
            from_entity: "a".into(),
            upid: Upid { asid: 1, pid: 2, start_ticks: 3 },
            cmdline: "x --y".into(),
            remote_addr: "10.0.0.1".parse().unwrap(),
            to_entity: "b".into(),
            bytes_sent: 4,
            bytes_recv: 5,
        };
        let outputs = [Output::Progress(10), Output::Update { time: 3, diff: -1, record: GraphRecord::Row(row) }];
        for output in outputs {
            assert_eq!(from_line(&to_line(&output)).unwrap(), output);
        }
    }
}
