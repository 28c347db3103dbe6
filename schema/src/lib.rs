//! The records every flowgraph component exchanges, and their two codecs.
//!
//! Records follow Pixie's `conn_stats` semantics (see docs/RECORDS.md):
//!
//! * [`ConnStats`]: cumulative bytes per connection key `(upid, remote_addr, remote_port,
//!   trace_role)`, one sample per live key and export period;
//! * [`Process`]: what a `upid` is (cmdline, container, pod, ...), valid from its time on;
//! * [`Name`]: a name for a remote address from one [`NameSource`], valid from its time on;
//! * [`Container`]: the pod a container id belongs to (Kubernetes metadata), valid from its
//!   time on;
//! * [`Progress`]: a source's event-time watermark: it sends nothing older any more.
//!
//! Codecs: [`json`] is the JSON Lines interchange form of DESIGN.md (replay input, tests);
//! [`binary`] is the versioned, length-delimited bincode envelope carrying batches of records
//! (recordings, Kafka messages). Both decode with bounds and return typed errors.

#![deny(missing_docs)]

pub mod binary;
pub mod json;
mod upid;

pub use upid::{ParseUpidError, Upid};

use serde::{Deserialize, Serialize};
use std::net::IpAddr;

/// Event time: wall-clock nanoseconds since the Unix epoch.
pub type EventTime = u64;

/// Longest string field a decoder accepts, in bytes (cmdlines are the long ones).
pub const MAX_STRING_LEN: usize = 16 * 1024;

/// Which side of the connection the traced process is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "u8", into = "u8")]
pub enum TraceRole {
    /// The role could not be determined.
    Unknown,
    /// The process opened the connection (connect).
    Client,
    /// The process accepted the connection (accept); `remote_port` is then 0, as in Pixie.
    Server,
}

impl TryFrom<u8> for TraceRole {
    type Error = String;
    fn try_from(value: u8) -> Result<Self, Self::Error> {
        match value {
            0 => Ok(TraceRole::Unknown),
            1 => Ok(TraceRole::Client),
            2 => Ok(TraceRole::Server),
            other => Err(format!("unknown trace_role {other} (expected 0 unknown, 1 client, 2 server)")),
        }
    }
}

impl From<TraceRole> for u8 {
    fn from(role: TraceRole) -> u8 {
        match role {
            TraceRole::Unknown => 0,
            TraceRole::Client => 1,
            TraceRole::Server => 2,
        }
    }
}

/// One sample of a connection key's cumulative counters.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ConnStats {
    /// Event time of the sample (wall-clock ns).
    pub time_: EventTime,
    /// The process that owns the connection.
    pub upid: Upid,
    /// The peer's address; IPv4-mapped IPv6 addresses are stored as IPv4.
    pub remote_addr: IpAddr,
    /// The peer's port, 0 when the process is the server.
    #[serde(default)]
    pub remote_port: u16,
    /// Client or server side.
    #[serde(default = "unknown_role")]
    pub trace_role: TraceRole,
    /// Connections opened for this key since tracking began.
    #[serde(default)]
    pub conn_open: u64,
    /// Connections closed for this key since tracking began.
    #[serde(default)]
    pub conn_close: u64,
    /// Connections open now.
    #[serde(default)]
    pub conn_active: u64,
    /// Bytes sent since tracking began.
    pub bytes_sent: u64,
    /// Bytes received since tracking began.
    pub bytes_recv: u64,
}

fn unknown_role() -> TraceRole {
    TraceRole::Unknown
}

/// What a process is. The latest record for a upid at or before T applies at T.
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Process {
    /// Event time from which this description holds.
    pub time_: EventTime,
    /// The process described.
    pub upid: Upid,
    /// Full command line, arguments separated by spaces.
    #[serde(default)]
    pub cmdline: String,
    /// Short command name (`/proc/PID/comm`).
    #[serde(default)]
    pub comm: String,
    /// Container id from the cgroup path, '' for host processes.
    #[serde(default)]
    pub container: String,
    /// Host name of the node the process runs on.
    #[serde(default)]
    pub host: String,
    /// Kubernetes pod as `namespace/name`, '' when unknown.
    #[serde(default)]
    pub pod: String,
    /// Kubernetes service(s) as `namespace/name`, '' when unknown.
    #[serde(default)]
    pub service: String,
    /// Kubernetes namespace, '' when unknown.
    #[serde(default)]
    pub namespace: String,
    /// Kubernetes node name, '' when unknown.
    #[serde(default)]
    pub node: String,
}

/// Who named an address. When several sources name one address, the first in this order wins
/// (the derived `Ord` is that order): Kubernetes, then DNS answers seen on the host, then the
/// static names file, then reverse DNS.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NameSource {
    /// A pod IP (`ns/pod`) or a service cluster IP (`ns/service`) from the Kubernetes API.
    Kubernetes,
    /// The name a process on the host looked up: a DNS answer the agent saw (UDP port 53).
    Dns,
    /// The operator's names file (CIDR or address -> name). A name record without a source
    /// is taken to be this one: hand-written records are the usual case.
    #[default]
    Static,
    /// A PTR lookup by the pipeline's resolver.
    ReverseDns,
}

impl NameSource {
    /// Every source, in precedence order.
    pub const ALL: [NameSource; 4] =
        [NameSource::Kubernetes, NameSource::Dns, NameSource::Static, NameSource::ReverseDns];

    /// The source's name in JSON and on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            NameSource::Kubernetes => "kubernetes",
            NameSource::Dns => "dns",
            NameSource::Static => "static",
            NameSource::ReverseDns => "reverse_dns",
        }
    }
}

impl std::fmt::Display for NameSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A name for an address from one source. Per (address, source), the latest record at or
/// before T applies at T; an empty `name` withdraws that source's name (a deleted pod, a
/// removed line of the names file).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Name {
    /// Event time from which this name holds.
    pub time_: EventTime,
    /// The address named; IPv4-mapped IPv6 addresses are stored as IPv4.
    pub addr: IpAddr,
    /// The name; '' withdraws this source's earlier name for the address.
    pub name: String,
    /// Who named it; decides between sources that disagree.
    #[serde(default)]
    pub source: NameSource,
}

/// What the Kubernetes API says about a container: the pod it belongs to. A process record's
/// own Kubernetes fields win; where they are empty, the record for its container id fills
/// them. The latest record for a container at or before T applies at T; an empty `pod`
/// withdraws it (the pod was deleted).
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Container {
    /// Event time from which this holds.
    pub time_: EventTime,
    /// Container id as the agent reads it from the cgroup path (64 hex digits for
    /// containerd, CRI-O and Docker).
    pub container: String,
    /// Pod as `namespace/name`; '' withdraws.
    #[serde(default)]
    pub pod: String,
    /// Every service selecting the pod, `namespace/name`, sorted, joined by ','.
    #[serde(default)]
    pub service: String,
    /// The pod's namespace.
    #[serde(default)]
    pub namespace: String,
    /// The node the pod runs on.
    #[serde(default)]
    pub node: String,
}

/// How often an agent sends [`Progress`] by default (`flowgraph agent --progress-period`).
/// Part of the contract: the pipeline's source clock assumes every running agent on a stream
/// has sent one within this much event time of the stream's start, and the stream generator's
/// fleet reports at this period.
pub const AGENT_PROGRESS_PERIOD_NS: EventTime = 1_000_000_000;

/// The shortest progress period an agent accepts (the generator's fleet is held to it too).
pub const MIN_AGENT_PROGRESS_PERIOD_NS: EventTime = 100_000_000;

/// The longest a running agent goes without sending [`Progress`] (the smaller of its progress
/// and export periods; `flowgraph agent` refuses periods that exceed it). Part of the
/// contract: the pipeline's source clock takes a source whose latest progress trails its
/// stream by more than lateness plus this as gone (its node drained), and stops waiting for it.
pub const AGENT_SILENCE_LIMIT_NS: EventTime = 60_000_000_000;

/// A source's event-time watermark: it will send nothing with `time_` below this any more.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Progress {
    /// The watermark (wall-clock ns).
    pub time_: EventTime,
    /// Which source speaks: an agent id, or a name such as `k8s-metadata`.
    #[serde(default)]
    pub source: String,
    /// The source's loss counters since it started (for the agent: map_full, update_failed,
    /// missing_state, lost_byte_events, foreign_io, delete_failed, and with DNS names on
    /// dns_kernel_passed, dns_truncated, dns_packets, dns_parse_failures, dns_answers,
    /// dns_names, dns_cache_evictions, dns_names_dropped, dns_read_errors, dns_unavailable);
    /// empty when it has none.
    #[serde(default)]
    pub losses: std::collections::BTreeMap<String, u64>,
}

/// Any record of a flowgraph stream.
///
/// Processes and containers (eight and five strings) are boxed: they are a few records in a
/// thousand, and unboxed they made every record 216 bytes; boxed, a record is the 88 bytes of
/// a connection sample. Records move by value from the decoder to the job, and whole
/// recordings are held in memory (`bench`, the oracle), so the common case pays for the size
/// (docs/BENCHMARKS.md, item 21). Serialized, a box is its contents: the encodings are
/// unchanged.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Record {
    /// A connection sample.
    ConnStats(ConnStats),
    /// A process description.
    Process(Box<Process>),
    /// An address name.
    Name(Name),
    /// A watermark.
    Progress(Progress),
    /// A container's pod (from the Kubernetes metadata source).
    Container(Box<Container>),
}

impl Record {
    /// The record's event time.
    pub fn time(&self) -> EventTime {
        match self {
            Record::ConnStats(r) => r.time_,
            Record::Process(r) => r.time_,
            Record::Name(r) => r.time_,
            Record::Progress(r) => r.time_,
            Record::Container(r) => r.time_,
        }
    }

    /// Sets the record's event time (used to process a late record at the frontier).
    pub fn set_time(&mut self, time: EventTime) {
        match self {
            Record::ConnStats(r) => r.time_ = time,
            Record::Process(r) => r.time_ = time,
            Record::Name(r) => r.time_ = time,
            Record::Progress(r) => r.time_ = time,
            Record::Container(r) => r.time_ = time,
        }
    }

    /// The record's kind as written in the JSON `type` field.
    pub fn kind(&self) -> &'static str {
        match self {
            Record::ConnStats(_) => "conn_stats",
            Record::Process(_) => "process",
            Record::Name(_) => "name",
            Record::Progress(_) => "progress",
            Record::Container(_) => "container",
        }
    }

    /// Checks what serde cannot: string lengths, and maps IPv4-mapped IPv6 addresses to IPv4.
    pub fn validate(&mut self) -> Result<(), String> {
        fn check(field: &str, value: &str) -> Result<(), String> {
            if value.len() > MAX_STRING_LEN {
                return Err(format!(
                    "field `{field}` is {} bytes long, more than the limit of {MAX_STRING_LEN}",
                    value.len()
                ));
            }
            Ok(())
        }
        match self {
            Record::ConnStats(r) => r.remote_addr = r.remote_addr.to_canonical(),
            Record::Process(p) => {
                for (field, value) in [
                    ("cmdline", &p.cmdline),
                    ("comm", &p.comm),
                    ("container", &p.container),
                    ("host", &p.host),
                    ("pod", &p.pod),
                    ("service", &p.service),
                    ("namespace", &p.namespace),
                    ("node", &p.node),
                ] {
                    check(field, value)?;
                }
            }
            Record::Name(n) => {
                n.addr = n.addr.to_canonical();
                check("name", &n.name)?;
            }
            Record::Container(c) => {
                for (field, value) in [
                    ("container", &c.container),
                    ("pod", &c.pod),
                    ("service", &c.service),
                    ("namespace", &c.namespace),
                    ("node", &c.node),
                ] {
                    check(field, value)?;
                }
                if c.container.is_empty() {
                    return Err("field `container` is empty".into());
                }
            }
            Record::Progress(p) => {
                check("source", &p.source)?;
                if p.losses.len() > 64 {
                    return Err(format!("progress has {} loss counters, more than 64", p.losses.len()));
                }
                for name in p.losses.keys() {
                    check("losses", name)?;
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_is_the_size_of_a_connection_sample() {
        // docs/BENCHMARKS.md (item 21) counts on it: 216 bytes while processes were inline.
        // The variant's tag fits in a niche of the sample's fields.
        assert_eq!(std::mem::size_of::<ConnStats>(), 88);
        assert_eq!(std::mem::size_of::<Record>(), 88);
    }
}
