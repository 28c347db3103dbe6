//! What the job outputs: table rows and graph edges, as timestamped updates, and progress.

use flowgraph_schema::{EventTime, Upid};
use rustc_hash::FxHashSet;
use serde::{Deserialize, Serialize};
use std::cmp::Ordering;
use std::net::IpAddr;

/// Shared, immutable text: clones are reference-count bumps, so rows and edges move through
/// the dataflow without copying their strings. A thin pointer (8 bytes; the length lives
/// with the bytes), where `Arc<str>` is 16: every key, row and label holding text is smaller
/// (docs/BENCHMARKS.md, item 17).
pub type Text = arcstr::ArcStr;

/// One shared copy of each distinct text: records carrying the same string hold one
/// allocation. The job interns its input's texts; a decoder of delta lines interns what it
/// parses (flowgraph-sinks' `DeltaDecoder`).
#[derive(Default)]
pub struct TextInterner {
    texts: FxHashSet<Text>,
}

impl std::fmt::Debug for TextInterner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TextInterner").field("texts", &self.texts.len()).finish()
    }
}

impl TextInterner {
    /// The shared copy of `text`, made on its first sight.
    pub fn intern(&mut self, text: &str) -> Text {
        if let Some(existing) = self.texts.get(text) {
            return existing.clone();
        }
        let text = Text::from(text);
        self.texts.insert(text.clone());
        text
    }

    /// Distinct texts held.
    pub fn len(&self) -> usize {
        self.texts.len()
    }

    /// Whether no text is held.
    pub fn is_empty(&self) -> bool {
        self.texts.is_empty()
    }

    /// Whether `text` is held.
    pub fn contains(&self, text: &str) -> bool {
        self.texts.contains(text)
    }

    /// Drops the texts only this interner holds: no record has them any more.
    pub fn forget_unheld(&mut self) {
        self.texts.retain(|text| Text::strong_count(text).is_none_or(|holders| holders > 1));
    }
}

/// Orders text by content, first checking whether both are the same allocation: the job
/// interns its text, so equal strings are usually one allocation, and sorting the output (rows
/// sharing their entities) then skips comparing their bytes.
fn text_cmp(a: &Text, b: &Text) -> Ordering {
    if Text::ptr_eq(a, b) {
        Ordering::Equal
    } else {
        a.cmp(b)
    }
}

/// A table row: one (from_entity, upid, cmdline, remote_addr) group of the window. Ordered
/// field by field, text by content (see `text_cmp`).
// Hash is derived over the fields' contents; the hand-written equality (from Ord, with an
// Arc pointer shortcut for text) compares the same contents, so the two agree.
#[allow(clippy::derived_hash_with_manual_eq)]
#[derive(Debug, Clone, Hash, Serialize, Deserialize)]
pub struct Row {
    /// The process's `group_by` field.
    pub from_entity: Text,
    /// The process.
    pub upid: Upid,
    /// The process's command line.
    pub cmdline: Text,
    /// The peer address.
    pub remote_addr: IpAddr,
    /// The peer's name, or the address as text.
    pub to_entity: Text,
    /// Largest cumulative bytes sent in the window.
    pub bytes_sent: u64,
    /// Largest cumulative bytes received in the window.
    pub bytes_recv: u64,
}

impl Row {
    /// bytes_sent + bytes_recv.
    pub fn bytes_total(&self) -> u64 {
        self.bytes_sent + self.bytes_recv
    }
}

/// A graph edge: the rows of one (from_entity, to_entity) pair, bytes summed. Ordered field by
/// field, text by content.
// Hash is derived over the fields' contents; the hand-written equality (from Ord, with an
// Arc pointer shortcut for text) compares the same contents, so the two agree.
#[allow(clippy::derived_hash_with_manual_eq)]
#[derive(Debug, Clone, Hash, Serialize, Deserialize)]
pub struct Edge {
    /// Source node.
    pub from_entity: Text,
    /// Destination node.
    pub to_entity: Text,
    /// Sum of the rows' bytes_sent.
    pub bytes_sent: u64,
    /// Sum of the rows' bytes_recv.
    pub bytes_recv: u64,
}

impl Edge {
    /// bytes_sent + bytes_recv.
    pub fn bytes_total(&self) -> u64 {
        self.bytes_sent + self.bytes_recv
    }
}

impl Ord for Row {
    fn cmp(&self, other: &Self) -> Ordering {
        text_cmp(&self.from_entity, &other.from_entity)
            .then_with(|| self.upid.cmp(&other.upid))
            .then_with(|| text_cmp(&self.cmdline, &other.cmdline))
            .then_with(|| self.remote_addr.cmp(&other.remote_addr))
            .then_with(|| text_cmp(&self.to_entity, &other.to_entity))
            .then_with(|| self.bytes_sent.cmp(&other.bytes_sent))
            .then_with(|| self.bytes_recv.cmp(&other.bytes_recv))
    }
}

impl Ord for Edge {
    fn cmp(&self, other: &Self) -> Ordering {
        text_cmp(&self.from_entity, &other.from_entity)
            .then_with(|| text_cmp(&self.to_entity, &other.to_entity))
            .then_with(|| self.bytes_sent.cmp(&other.bytes_sent))
            .then_with(|| self.bytes_recv.cmp(&other.bytes_recv))
    }
}

/// PartialOrd, PartialEq and Eq from a type's `Ord`, so all four agree.
macro_rules! comparisons_from_ord {
    ($($type:ty),*) => {$(
        impl PartialOrd for $type {
            fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
                Some(self.cmp(other))
            }
        }

        impl PartialEq for $type {
            fn eq(&self, other: &Self) -> bool {
                self.cmp(other) == Ordering::Equal
            }
        }

        impl Eq for $type {}
    )*};
}

comparisons_from_ord!(Row, Edge);

/// A row or an edge.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum GraphRecord {
    /// A table row.
    Row(Row),
    /// A graph edge.
    Edge(Edge),
}

impl GraphRecord {
    /// The edge the record is or belongs to: (from_entity, to_entity).
    pub(crate) fn edge_key(&self) -> (&Text, &Text) {
        match self {
            GraphRecord::Row(row) => (&row.from_entity, &row.to_entity),
            GraphRecord::Edge(edge) => (&edge.from_entity, &edge.to_entity),
        }
    }
}

/// Where a record goes among the updates of its time: an XXH3 hash of its content (the
/// release sorts by it, then by content where two hashes are equal, which in practice only
/// equal records' are). A deterministic order that is cheap to sort by: sorting by content
/// compared rows field by field, entity names with long common prefixes, and was a fifth of
/// the job's instructions (docs/BENCHMARKS.md, item 22). XXH3 is a specified algorithm, fed
/// little-endian bytes, so the order is the same on every platform and toolchain.
pub fn release_order(record: &GraphRecord) -> u64 {
    use xxhash_rust::xxh3::xxh3_64;
    // The largest record's fields: an IPv6 row's 1 + 8 + 16 (upid) + 8 + 16 + 8 + 8 + 8 bytes.
    let mut bytes = [0u8; 73];
    let mut at = 0;
    let mut put = |field: &[u8]| {
        bytes[at..at + field.len()].copy_from_slice(field);
        at += field.len();
    };
    let text = |text: &Text| xxh3_64(text.as_bytes()).to_le_bytes();
    match record {
        GraphRecord::Row(row) => {
            put(&[0]);
            put(&text(&row.from_entity));
            put(&row.upid.asid.to_le_bytes());
            put(&row.upid.pid.to_le_bytes());
            put(&row.upid.start_ticks.to_le_bytes());
            put(&text(&row.cmdline));
            match row.remote_addr {
                IpAddr::V4(addr) => put(&addr.octets()),
                IpAddr::V6(addr) => put(&addr.octets()),
            }
            put(&text(&row.to_entity));
            put(&row.bytes_sent.to_le_bytes());
            put(&row.bytes_recv.to_le_bytes());
        }
        GraphRecord::Edge(edge) => {
            put(&[1]);
            put(&text(&edge.from_entity));
            put(&text(&edge.to_entity));
            put(&edge.bytes_sent.to_le_bytes());
            put(&edge.bytes_recv.to_le_bytes());
        }
    }
    xxh3_64(&bytes[..at])
}

/// One output of the job, in the order a consumer must apply them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Output {
    /// `record` enters (+1) or leaves (-1) the graph at event time `time`.
    Update {
        /// Event time (ns) at which the change happens.
        time: EventTime,
        /// +1 or -1.
        diff: i64,
        /// What changes.
        record: GraphRecord,
    },
    /// Every update with time < this has been output above this mark.
    Progress(EventTime),
}
