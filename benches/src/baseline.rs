//! Baselines for the benchmark harness: the net-flow-graph query (mode `total`, DESIGN.md "The
//! query") written twice in plain Rust, from the contract and not from the pipeline's code, so
//! the dataflow job can be measured against them in the same run.
//!
//! * [`HashMapQuery`]: the lower bound on the work. One thread, hash maps, everything
//!   incremental: per connection key the sample in force, per `(upid, remote_addr)` the maxima
//!   over its keys, per edge the sums over its rows. A sample costs one hash lookup when its
//!   key is known; expiries are applied lazily from a time-ordered queue (one entry per key);
//!   nothing is allocated on the hot path. The graph is materialized only on request.
//! * [`RecomputeQuery`]: Pixie's way. Every sample of the last `window` is kept in a
//!   time-ordered buffer (process and name records as latest-per-key), and every refresh
//!   recomputes the whole graph of the window from scratch: steps 1-6 of DESIGN.md.
//!
//! Both report the same [`Graph`]: rows and edges as sorted vectors of plain structs with
//! `String` fields, so they compare with each other and, converted, with the job's output.
//!
//! Semantics (the job's): the graph at event time T holds the conn_stats samples with
//! `T - window < time_ <= T`; per `(upid, remote_addr)` bytes are the maxima over the samples
//! of its connection keys `(upid, remote_addr, remote_port, trace_role)` (counters are
//! cumulative, so per key the latest sample is the max); the process description and the
//! address name are the latest record at or before T, ties at one time going to the greatest
//! value; rows whose `group_by` field is '' (or whose process is unknown) are dropped; `ips`
//! keeps the addresses inside one of its prefixes (all when empty); edges sum their rows.
//!
//! Records may arrive out of time order (a recording in arrival order): an older sample of a
//! known key is dominated by the newer one and ignored, older process and name records never
//! replace newer ones. [`HashMapQuery`] applies a record when it is pushed, so its graph at T is
//! exact when every record pushed so far has `time_ <= T` (time-ordered input, or the end of a
//! recording); [`RecomputeQuery`] filters by time at every refresh and is exact for any order.
//!
//! ```
//! use flowgraph_benches::baseline::{BaselineParams, HashMapQuery, RecomputeQuery};
//! use flowgraph_benches::{generate, Size};
//! let params = BaselineParams::parse("", 60_000_000_000, "service").unwrap();
//! let (mut bound, mut recompute) = (HashMapQuery::new(params.clone()), RecomputeQuery::new(params));
//! let mut records = Vec::new();
//! generate(&Size::Smoke.profile(), 7, |r| records.push(r));
//! records.sort_by_key(|r| r.time());
//! for r in &records {
//!     bound.push(r);
//!     recompute.push(r);
//! }
//! let end = records.last().unwrap().time();
//! assert_eq!(bound.graph_at(end), recompute.refresh(end));
//! ```

use flowgraph_schema::{ConnStats, EventTime, Name, NameSource, Process, Record, TraceRole, Upid};
use rustc_hash::FxHashMap;
use std::cmp::Reverse;
use std::collections::hash_map::Entry;
use std::collections::{BinaryHeap, VecDeque};
use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

// ------------------------------------------------------------------------------- parameters

/// What `from_entity` is: which field of the process record names a graph node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum GroupField {
    /// Kubernetes pod `namespace/name`.
    Pod,
    /// Kubernetes service(s).
    Service,
    /// Kubernetes namespace.
    Namespace,
    /// Kubernetes node.
    Node,
    /// Container id.
    Container,
    /// Host name.
    Host,
    /// The command line.
    Process,
}

impl GroupField {
    /// Every value.
    pub const ALL: [GroupField; 7] = [
        GroupField::Pod,
        GroupField::Service,
        GroupField::Namespace,
        GroupField::Node,
        GroupField::Container,
        GroupField::Host,
        GroupField::Process,
    ];

    /// The name used by the CLI and config (`pod`, `service`, ..., `process`).
    pub fn as_str(self) -> &'static str {
        match self {
            GroupField::Pod => "pod",
            GroupField::Service => "service",
            GroupField::Namespace => "namespace",
            GroupField::Node => "node",
            GroupField::Container => "container",
            GroupField::Host => "host",
            GroupField::Process => "process",
        }
    }

    /// The field of `process` this grouping reads.
    pub fn of(self, process: &Process) -> &str {
        match self {
            GroupField::Pod => &process.pod,
            GroupField::Service => &process.service,
            GroupField::Namespace => &process.namespace,
            GroupField::Node => &process.node,
            GroupField::Container => &process.container,
            GroupField::Host => &process.host,
            GroupField::Process => &process.cmdline,
        }
    }
}

impl fmt::Display for GroupField {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for GroupField {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, String> {
        GroupField::ALL
            .into_iter()
            .find(|g| g.as_str() == text.trim())
            .ok_or_else(|| format!("unknown group_by {text:?}"))
    }
}

/// An IPv4 or IPv6 network: an address and a prefix length (host bits cleared).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct IpPrefix {
    addr: IpAddr,
    len: u8,
}

impl IpPrefix {
    /// The network of `addr` with a prefix of `len` bits (at most 32 for IPv4, 128 for IPv6).
    pub fn new(addr: IpAddr, len: u8) -> Result<Self, String> {
        let addr = match addr {
            IpAddr::V4(a) if len <= 32 => IpAddr::V4((u32::from(a) & mask32(len)).into()),
            IpAddr::V6(a) if len <= 128 => IpAddr::V6((u128::from(a) & mask128(len)).into()),
            _ => return Err(format!("prefix length {len} is too long for {addr}")),
        };
        Ok(IpPrefix { addr, len })
    }

    /// The single address (a /32 or /128).
    pub fn host(addr: IpAddr) -> Self {
        let len = if addr.is_ipv4() { 32 } else { 128 };
        IpPrefix { addr, len }
    }

    /// The network address.
    pub fn addr(&self) -> IpAddr {
        self.addr
    }

    /// The prefix length.
    pub fn prefix_len(&self) -> u8 {
        self.len
    }

    /// Whether `addr` is inside the network (an IPv4 network holds no IPv6 address, and back).
    pub fn contains(&self, addr: &IpAddr) -> bool {
        match (self.addr, addr) {
            (IpAddr::V4(net), IpAddr::V4(a)) => (u32::from(net) ^ u32::from(*a)) & mask32(self.len) == 0,
            (IpAddr::V6(net), IpAddr::V6(a)) => (u128::from(net) ^ u128::from(*a)) & mask128(self.len) == 0,
            _ => false,
        }
    }
}

fn mask32(len: u8) -> u32 {
    if len == 0 {
        0
    } else {
        u32::MAX << (32 - u32::from(len))
    }
}

fn mask128(len: u8) -> u128 {
    if len == 0 {
        0
    } else {
        u128::MAX << (128 - u32::from(len))
    }
}

impl FromStr for IpPrefix {
    type Err = String;
    /// `10.0.0.0/8`, `2001:db8::/32`, or a bare address (IPv4-mapped IPv6 taken as IPv4).
    fn from_str(text: &str) -> Result<Self, String> {
        let text = text.trim();
        match text.split_once('/') {
            Some((addr, len)) => {
                let addr: IpAddr = addr.parse().map_err(|e| format!("invalid CIDR {text:?}: {e}"))?;
                let len: u8 = len.parse().map_err(|e| format!("invalid CIDR {text:?}: {e}"))?;
                IpPrefix::new(addr, len)
            }
            None => {
                let addr: IpAddr = text.parse().map_err(|e| format!("invalid address {text:?}: {e}"))?;
                Ok(IpPrefix::host(addr.to_canonical()))
            }
        }
    }
}

impl fmt::Display for IpPrefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.len)
    }
}

/// The query's parameters, as the baselines take them (the pipeline's `Params` in plain form).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BaselineParams {
    /// Remote addresses kept: inside one of these networks; every address when empty.
    pub ips: Vec<IpPrefix>,
    /// Window length (ns): the graph at T covers samples with `T - window < time_ <= T`.
    pub window_ns: u64,
    /// What a graph node is.
    pub group_by: GroupField,
}

impl Default for BaselineParams {
    /// Pixie's defaults: every address, 5 minutes, by pod.
    fn default() -> Self {
        BaselineParams { ips: Vec::new(), window_ns: 5 * 60 * 1_000_000_000, group_by: GroupField::Pod }
    }
}

impl BaselineParams {
    /// From text: `ips` a comma-separated list of addresses and CIDRs (`""` or `"all"`: every
    /// address; the pipeline's `IpFilter` prints in this form), the window in ns, `group_by` by
    /// name (`GroupBy::as_str`).
    pub fn parse(ips: &str, window_ns: u64, group_by: &str) -> Result<Self, String> {
        let ips = if ips.trim() == "all" {
            Vec::new()
        } else {
            ips.split(',')
                .filter(|item| !item.trim().is_empty())
                .map(str::parse)
                .collect::<Result<Vec<IpPrefix>, String>>()?
        };
        if window_ns == 0 {
            return Err("window: must be longer than zero".into());
        }
        Ok(BaselineParams { ips, window_ns, group_by: group_by.parse()? })
    }

    /// Whether the graph keeps rows for this remote address.
    pub fn keeps(&self, addr: &IpAddr) -> bool {
        self.ips.is_empty() || self.ips.iter().any(|net| net.contains(addr))
    }
}

// ------------------------------------------------------------------------------- the graph

/// A table row: one (from_entity, upid, cmdline, remote_addr) group of the window.
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct GraphRow {
    /// The process's `group_by` field.
    pub from_entity: String,
    /// The process, `ASID:PID:START_TICKS`.
    pub upid: String,
    /// The process's command line.
    pub cmdline: String,
    /// The peer address as text.
    pub remote_addr: String,
    /// The peer's name, or the address as text.
    pub to_entity: String,
    /// Largest cumulative bytes sent over the group's samples in the window.
    pub bytes_sent: u64,
    /// Largest cumulative bytes received over the group's samples in the window.
    pub bytes_recv: u64,
}

/// A graph edge: the rows of one (from_entity, to_entity) pair, bytes summed.
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct GraphEdge {
    /// Source node.
    pub from_entity: String,
    /// Destination node.
    pub to_entity: String,
    /// Sum of the rows' bytes_sent.
    pub bytes_sent: u64,
    /// Sum of the rows' bytes_recv.
    pub bytes_recv: u64,
}

impl GraphRow {
    /// bytes_sent + bytes_recv.
    pub fn bytes_total(&self) -> u64 {
        self.bytes_sent + self.bytes_recv
    }
}

impl GraphEdge {
    /// bytes_sent + bytes_recv.
    pub fn bytes_total(&self) -> u64 {
        self.bytes_sent + self.bytes_recv
    }
}

/// The graph at one time: rows and edges, each sorted (derived `Ord`: field by field).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Graph {
    /// Table rows, sorted.
    pub rows: Vec<GraphRow>,
    /// Edges, sorted.
    pub edges: Vec<GraphEdge>,
}

impl Graph {
    /// Sorts rows and edges (for graphs built by hand or converted from another form).
    pub fn sorted(mut self) -> Graph {
        self.rows.sort_unstable();
        self.edges.sort_unstable();
        self
    }

    /// The edges summed from `rows` (DESIGN.md: edges are (from, to) with the bytes summed).
    pub fn with_edges_from_rows(rows: Vec<GraphRow>) -> Graph {
        let mut sums: FxHashMap<(&str, &str), (u64, u64)> = FxHashMap::default();
        for row in &rows {
            let sum = sums.entry((&row.from_entity, &row.to_entity)).or_default();
            sum.0 += row.bytes_sent;
            sum.1 += row.bytes_recv;
        }
        let edges = sums
            .into_iter()
            .map(|((from, to), (sent, recv))| GraphEdge {
                from_entity: from.to_string(),
                to_entity: to.to_string(),
                bytes_sent: sent,
                bytes_recv: recv,
            })
            .collect();
        Graph { rows, edges }.sorted()
    }
}

// ------------------------------------------------------------------- the hash-map lower bound

/// Marks "no slot" in the intrusive lists and slot references.
const NONE: u32 = u32::MAX;

/// A connection key: what one cumulative counter pair belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct ConnKey {
    upid: Upid,
    addr: IpAddr,
    port: u16,
    role: TraceRole,
}

/// A connection key's sample in force, linked into its pair's list of keys.
#[derive(Debug, Clone)]
struct Conn {
    key: ConnKey,
    pair: u32,
    time: EventTime,
    sent: u64,
    recv: u64,
    prev: u32,
    next: u32,
}

/// One (upid, remote_addr): the maxima over its keys in force, and what it adds to its edge.
#[derive(Debug, Clone)]
struct Pair {
    upid: u32,
    addr: u32,
    /// Head of the list of its keys in force (through `Conn::prev/next`).
    conns: u32,
    sent: u64,
    recv: u64,
    /// Neighbours in the upid's list of pairs.
    upid_prev: u32,
    upid_next: u32,
    /// Neighbours in the address's list of pairs.
    addr_prev: u32,
    addr_next: u32,
    /// The edge this pair's row adds to (NONE: no row), and what it adds.
    edge: u32,
    added_sent: u64,
    added_recv: u64,
}

/// A upid: its latest process record (never expires) and its pairs.
#[derive(Debug, Clone)]
struct ProcSlot {
    upid: Upid,
    latest: Option<Process>,
    /// Interned `group_by` field; NONE when unknown or ''.
    entity: u32,
    /// Interned cmdline; NONE when unknown.
    cmdline: u32,
    pairs: u32,
}

/// A remote address: whether `ips` keeps it, its text, its latest name per source, its pairs.
#[derive(Debug, Clone)]
struct AddrSlot {
    kept: bool,
    /// Loopback peers are named after the process's own entity.
    loopback: bool,
    /// Interned address text (NONE when not kept: never needed).
    text: u32,
    /// Per source (in `NameSource::ALL` order): (time, interned name) of its latest record.
    names: [Option<(EventTime, u32)>; 4],
    /// The name in force: the first source's non-empty name, else `text`.
    to_entity: u32,
    pairs: u32,
}

/// An edge's sums over its rows.
#[derive(Debug, Clone)]
struct EdgeSum {
    from: u32,
    to: u32,
    sent: u64,
    recv: u64,
    rows: u32,
}

/// Slots in a vector, with a free list: indices stay valid while the slot lives.
#[derive(Debug, Clone)]
struct Slab<T> {
    items: Vec<T>,
    free: Vec<u32>,
}

impl<T> Default for Slab<T> {
    fn default() -> Self {
        Slab { items: Vec::new(), free: Vec::new() }
    }
}

impl<T> Slab<T> {
    fn insert(&mut self, item: T) -> u32 {
        match self.free.pop() {
            Some(i) => {
                self.items[i as usize] = item;
                i
            }
            None => {
                self.items.push(item);
                (self.items.len() - 1) as u32
            }
        }
    }

    fn remove(&mut self, i: u32) {
        self.free.push(i);
    }
}

/// Each distinct string once, by id.
#[derive(Debug, Clone, Default)]
struct Interner {
    ids: FxHashMap<Box<str>, u32>,
    texts: Vec<Box<str>>,
}

impl Interner {
    fn id(&mut self, text: &str) -> u32 {
        if let Some(&id) = self.ids.get(text) {
            return id;
        }
        let id = self.texts.len() as u32;
        self.texts.push(text.into());
        self.ids.insert(text.into(), id);
        id
    }

    fn text(&self, id: u32) -> &str {
        if id == NONE {
            ""
        } else {
            &self.texts[id as usize]
        }
    }
}

/// The lower bound on the work: a single-threaded incremental implementation with hash maps.
///
/// [`HashMapQuery::push`] records (in time order, or nearly: see the module docs),
/// [`HashMapQuery::advance_to`] applies the window's expiries up to T and keeps every aggregate
/// current, [`HashMapQuery::graph_at`] does that and materializes the graph. Per sample of a
/// known key the work is one hash lookup and O(1) updates of the pair's maxima and its edge's
/// sums; a key's expiry costs O(keys of its pair); a process relabel or a new name costs
/// O(pairs of that upid or address).
#[derive(Debug, Clone)]
pub struct HashMapQuery {
    params: BaselineParams,
    /// Expiries are applied up to here.
    now: EventTime,
    conn_index: FxHashMap<ConnKey, u32>,
    conns: Slab<Conn>,
    /// (expiry, conn slot): one entry per key in force, at or before its real expiry (a newer
    /// sample moves the real expiry later; the entry is re-queued when it comes up).
    expiries: BinaryHeap<Reverse<(EventTime, u32)>>,
    pair_index: FxHashMap<(u32, u32), u32>,
    pairs: Slab<Pair>,
    upid_index: FxHashMap<Upid, u32>,
    procs: Vec<ProcSlot>,
    addr_index: FxHashMap<IpAddr, u32>,
    addrs: Vec<AddrSlot>,
    edge_index: FxHashMap<(u32, u32), u32>,
    edges: Vec<EdgeSum>,
    strings: Interner,
    rejected: u64,
}

impl HashMapQuery {
    /// An empty graph for `params`.
    pub fn new(params: BaselineParams) -> Self {
        HashMapQuery {
            params,
            now: 0,
            conn_index: FxHashMap::default(),
            conns: Slab::default(),
            expiries: BinaryHeap::new(),
            pair_index: FxHashMap::default(),
            pairs: Slab::default(),
            upid_index: FxHashMap::default(),
            procs: Vec::new(),
            addr_index: FxHashMap::default(),
            addrs: Vec::new(),
            edge_index: FxHashMap::default(),
            edges: Vec::new(),
            strings: Interner::default(),
            rejected: 0,
        }
    }

    /// The parameters.
    pub fn params(&self) -> &BaselineParams {
        &self.params
    }

    /// Applies one record (progress records are ignored).
    pub fn push(&mut self, record: &Record) {
        match record {
            Record::ConnStats(c) => self.push_conn(c),
            Record::Process(p) => self.push_process(p),
            Record::Name(n) => self.push_name(n),
            // Container metadata (Kubernetes) is outside the baselines: the benchmark streams
            // carry none, and `flowgraph bench` refuses a stream that does.
            Record::Container(_) | Record::Progress(_) => {}
        }
    }

    /// Connection keys in force (at the last [`HashMapQuery::advance_to`]).
    pub fn live_keys(&self) -> usize {
        self.conn_index.len()
    }

    /// Samples ignored because a counter went down against the key's sample in force (the job
    /// rejects those too).
    pub fn rejected(&self) -> u64 {
        self.rejected
    }

    /// Applies every expiry up to `time` (a sample at t leaves at t + window), keeping the
    /// maxima and sums current; materializes nothing. Times before an earlier call are ignored.
    pub fn advance_to(&mut self, time: EventTime) {
        if time < self.now {
            return;
        }
        self.now = time;
        let window = self.params.window_ns;
        while let Some(&Reverse((at, id))) = self.expiries.peek() {
            if at > time {
                break;
            }
            self.expiries.pop();
            let expiry = self.conns.items[id as usize].time.saturating_add(window);
            if expiry > time {
                // A newer sample came since the entry was queued.
                self.expiries.push(Reverse((expiry, id)));
            } else {
                self.expire(id);
            }
        }
    }

    /// The graph at `time`: [`HashMapQuery::advance_to`] it, then rows and edges, sorted.
    pub fn graph_at(&mut self, time: EventTime) -> Graph {
        self.advance_to(time);
        let mut rows = Vec::new();
        for pair in &self.pairs.items {
            if pair.edge == NONE {
                continue; // no row, or a free slot
            }
            let edge = &self.edges[pair.edge as usize];
            let proc = &self.procs[pair.upid as usize];
            let addr = &self.addrs[pair.addr as usize];
            rows.push(GraphRow {
                from_entity: self.strings.text(edge.from).to_string(),
                upid: proc.upid.to_string(),
                cmdline: self.strings.text(proc.cmdline).to_string(),
                remote_addr: self.strings.text(addr.text).to_string(),
                to_entity: self.strings.text(edge.to).to_string(),
                bytes_sent: pair.added_sent,
                bytes_recv: pair.added_recv,
            });
        }
        let edges = self
            .edges
            .iter()
            .filter(|edge| edge.rows > 0)
            .map(|edge| GraphEdge {
                from_entity: self.strings.text(edge.from).to_string(),
                to_entity: self.strings.text(edge.to).to_string(),
                bytes_sent: edge.sent,
                bytes_recv: edge.recv,
            })
            .collect();
        Graph { rows, edges }.sorted()
    }

    fn push_conn(&mut self, c: &ConnStats) {
        let window = self.params.window_ns;
        if c.time_.saturating_add(window) <= self.now {
            return; // out of the window already
        }
        let key = ConnKey { upid: c.upid, addr: c.remote_addr, port: c.remote_port, role: c.trace_role };
        let (pair_id, fresh) = match self.conn_index.get(&key) {
            Some(&id) => {
                let conn = &mut self.conns.items[id as usize];
                if (c.time_, c.bytes_sent, c.bytes_recv) <= (conn.time, conn.sent, conn.recv) {
                    return; // an older (or the same) sample: dominated
                }
                if c.bytes_sent < conn.sent || c.bytes_recv < conn.recv {
                    self.rejected += 1;
                    return;
                }
                // Its expiry entry stays where it is: it comes up early and is re-queued.
                conn.time = c.time_;
                conn.sent = c.bytes_sent;
                conn.recv = c.bytes_recv;
                (conn.pair, false)
            }
            None => {
                let pair_id = self.pair_for(c.upid, c.remote_addr);
                let head = self.pairs.items[pair_id as usize].conns;
                let id = self.conns.insert(Conn {
                    key,
                    pair: pair_id,
                    time: c.time_,
                    sent: c.bytes_sent,
                    recv: c.bytes_recv,
                    prev: NONE,
                    next: head,
                });
                if head != NONE {
                    self.conns.items[head as usize].prev = id;
                }
                self.pairs.items[pair_id as usize].conns = id;
                self.conn_index.insert(key, id);
                self.expiries.push(Reverse((c.time_.saturating_add(window), id)));
                // A pair without keys is dropped: a pair with none before is a new one.
                (pair_id, head == NONE)
            }
        };
        let pair = &mut self.pairs.items[pair_id as usize];
        let (sent, recv) = (pair.sent.max(c.bytes_sent), pair.recv.max(c.bytes_recv));
        if fresh {
            pair.sent = sent;
            pair.recv = recv;
            self.refresh_pair(pair_id);
            return;
        }
        if (sent, recv) == (pair.sent, pair.recv) {
            return; // the maxima did not move
        }
        pair.sent = sent;
        pair.recv = recv;
        if pair.edge != NONE {
            // The hot path. Whether the pair has a row, and on which edge, depends on its
            // process and its address only (their changes refresh it): only the bytes moved.
            let edge = &mut self.edges[pair.edge as usize];
            edge.sent = edge.sent.wrapping_add(sent - pair.added_sent);
            edge.recv = edge.recv.wrapping_add(recv - pair.added_recv);
            (pair.added_sent, pair.added_recv) = (sent, recv);
        }
    }

    fn push_process(&mut self, p: &Process) {
        let slot_id = self.proc_slot(p.upid);
        let slot = &mut self.procs[slot_id as usize];
        // Process's Ord starts with (time_, upid): for one upid, it is (time, value) order.
        if slot.latest.as_ref().is_some_and(|latest| latest >= p) {
            return;
        }
        let field = self.params.group_by.of(p);
        let entity = if field.is_empty() { NONE } else { self.strings.id(field) };
        let cmdline = self.strings.id(&p.cmdline);
        let slot = &mut self.procs[slot_id as usize];
        slot.latest = Some(p.clone());
        slot.cmdline = cmdline;
        if slot.entity != entity {
            slot.entity = entity;
            let mut pair = slot.pairs;
            while pair != NONE {
                self.refresh_pair(pair);
                pair = self.pairs.items[pair as usize].upid_next;
            }
        }
    }

    fn push_name(&mut self, n: &Name) {
        let slot_id = self.addr_slot(n.addr);
        let source = NameSource::ALL.iter().position(|s| *s == n.source).expect("every source is listed");
        if let Some((time, name)) = self.addrs[slot_id as usize].names[source] {
            if (time, self.strings.text(name)) >= (n.time_, n.name.as_str()) {
                return;
            }
        }
        let name = self.strings.id(&n.name);
        let slot = &mut self.addrs[slot_id as usize];
        let before = slot.to_entity;
        slot.names[source] = Some((n.time_, name));
        let strings = &self.strings;
        slot.to_entity = slot
            .names
            .iter()
            .flatten()
            .map(|(_, name)| *name)
            .find(|name| !strings.text(*name).is_empty())
            .unwrap_or(slot.text);
        if slot.kept && before != slot.to_entity {
            let mut pair = slot.pairs;
            while pair != NONE {
                self.refresh_pair(pair);
                pair = self.pairs.items[pair as usize].addr_next;
            }
        }
    }

    fn proc_slot(&mut self, upid: Upid) -> u32 {
        match self.upid_index.entry(upid) {
            Entry::Occupied(e) => *e.get(),
            Entry::Vacant(e) => {
                let id = self.procs.len() as u32;
                self.procs.push(ProcSlot { upid, latest: None, entity: NONE, cmdline: NONE, pairs: NONE });
                e.insert(id);
                id
            }
        }
    }

    fn addr_slot(&mut self, addr: IpAddr) -> u32 {
        if let Some(&id) = self.addr_index.get(&addr) {
            return id;
        }
        let kept = self.params.keeps(&addr);
        let text = if kept { self.strings.id(&addr.to_string()) } else { NONE };
        let id = self.addrs.len() as u32;
        self.addrs.push(AddrSlot {
            kept,
            loopback: addr.is_loopback(),
            text,
            names: [None; 4],
            to_entity: text,
            pairs: NONE,
        });
        self.addr_index.insert(addr, id);
        id
    }

    fn pair_for(&mut self, upid: Upid, addr: IpAddr) -> u32 {
        let u = self.proc_slot(upid);
        let a = self.addr_slot(addr);
        if let Some(&id) = self.pair_index.get(&(u, a)) {
            return id;
        }
        let (upid_head, addr_head) = (self.procs[u as usize].pairs, self.addrs[a as usize].pairs);
        let id = self.pairs.insert(Pair {
            upid: u,
            addr: a,
            conns: NONE,
            sent: 0,
            recv: 0,
            upid_prev: NONE,
            upid_next: upid_head,
            addr_prev: NONE,
            addr_next: addr_head,
            edge: NONE,
            added_sent: 0,
            added_recv: 0,
        });
        if upid_head != NONE {
            self.pairs.items[upid_head as usize].upid_prev = id;
        }
        if addr_head != NONE {
            self.pairs.items[addr_head as usize].addr_prev = id;
        }
        self.procs[u as usize].pairs = id;
        self.addrs[a as usize].pairs = id;
        self.pair_index.insert((u, a), id);
        id
    }

    /// A key leaves the window: unlink it, recompute its pair's maxima, drop an empty pair.
    fn expire(&mut self, id: u32) {
        let Conn { key, pair: pair_id, prev, next, .. } = self.conns.items[id as usize];
        if prev != NONE {
            self.conns.items[prev as usize].next = next;
        } else {
            self.pairs.items[pair_id as usize].conns = next;
        }
        if next != NONE {
            self.conns.items[next as usize].prev = prev;
        }
        self.conn_index.remove(&key);
        self.conns.remove(id);

        let (mut sent, mut recv, mut conn) = (0, 0, self.pairs.items[pair_id as usize].conns);
        while conn != NONE {
            let c = &self.conns.items[conn as usize];
            sent = sent.max(c.sent);
            recv = recv.max(c.recv);
            conn = c.next;
        }
        let pair = &mut self.pairs.items[pair_id as usize];
        pair.sent = sent;
        pair.recv = recv;
        self.refresh_pair(pair_id);
        if self.pairs.items[pair_id as usize].conns == NONE {
            self.drop_pair(pair_id);
        }
    }

    fn drop_pair(&mut self, id: u32) {
        let p = self.pairs.items[id as usize].clone();
        if p.upid_prev != NONE {
            self.pairs.items[p.upid_prev as usize].upid_next = p.upid_next;
        } else {
            self.procs[p.upid as usize].pairs = p.upid_next;
        }
        if p.upid_next != NONE {
            self.pairs.items[p.upid_next as usize].upid_prev = p.upid_prev;
        }
        if p.addr_prev != NONE {
            self.pairs.items[p.addr_prev as usize].addr_next = p.addr_next;
        } else {
            self.addrs[p.addr as usize].pairs = p.addr_next;
        }
        if p.addr_next != NONE {
            self.pairs.items[p.addr_next as usize].addr_prev = p.addr_prev;
        }
        self.pair_index.remove(&(p.upid, p.addr));
        self.pairs.remove(id);
    }

    /// Brings the pair's contribution to its edge in line with its keys, process and address.
    fn refresh_pair(&mut self, id: u32) {
        let pair = &self.pairs.items[id as usize];
        let (current, sent, recv) = (pair.edge, pair.sent, pair.recv);
        let wanted = if pair.conns == NONE {
            NONE
        } else {
            let (proc, addr) = (&self.procs[pair.upid as usize], &self.addrs[pair.addr as usize]);
            if proc.entity == NONE || !addr.kept {
                NONE
            } else {
                let to = if addr.loopback { proc.entity } else { addr.to_entity };
                let from = proc.entity;
                match self.edges.get(current as usize) {
                    Some(edge) if edge.from == from && edge.to == to => current,
                    _ => self.edge_for(from, to),
                }
            }
        };
        let pair = &mut self.pairs.items[id as usize];
        if wanted == current && (wanted == NONE || (sent, recv) == (pair.added_sent, pair.added_recv)) {
            return;
        }
        if current != NONE {
            let edge = &mut self.edges[current as usize];
            edge.sent = edge.sent.wrapping_sub(pair.added_sent);
            edge.recv = edge.recv.wrapping_sub(pair.added_recv);
            edge.rows -= 1;
        }
        if wanted != NONE {
            let edge = &mut self.edges[wanted as usize];
            edge.sent = edge.sent.wrapping_add(sent);
            edge.recv = edge.recv.wrapping_add(recv);
            edge.rows += 1;
        }
        pair.edge = wanted;
        (pair.added_sent, pair.added_recv) = if wanted == NONE { (0, 0) } else { (sent, recv) };
    }

    fn edge_for(&mut self, from: u32, to: u32) -> u32 {
        *self.edge_index.entry((from, to)).or_insert_with(|| {
            self.edges.push(EdgeSum { from, to, sent: 0, recv: 0, rows: 0 });
            (self.edges.len() - 1) as u32
        })
    }
}

// --------------------------------------------------------------------- Pixie's recomputation

/// A conn_stats sample as the recomputation keeps it.
#[derive(Debug, Clone, Copy)]
struct Sample {
    time: EventTime,
    upid: Upid,
    addr: IpAddr,
    sent: u64,
    recv: u64,
}

/// What one recomputation produced: the size of the table and of the graph.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Recomputed {
    /// Samples in the window (after the `ips` filter).
    pub samples: usize,
    /// Table rows.
    pub rows: usize,
    /// Edges.
    pub edges: usize,
}

/// A row of the recomputed table, borrowing its text from the query's state.
struct RowRef<'a> {
    from_entity: &'a str,
    upid: Upid,
    cmdline: &'a str,
    remote_addr: &'a str,
    to_entity: &'a str,
    sent: u64,
    recv: u64,
}

/// Pixie's way: every sample of the last `window` kept, the whole graph recomputed from
/// scratch at every refresh (DESIGN.md steps 1-6).
///
/// Samples sit in a buffer in arrival order and leave it from the front once out of every
/// future window; process and name records are kept as the latest per key (plus any newer ones
/// not yet reached by a refresh, so a refresh never sees a record from after its time).
///
/// [`RecomputeQuery::recompute`] is the query's work per refresh: filter the window, group,
/// join the process and name records, sum the edges, into a table whose text borrows from
/// the state. [`RecomputeQuery::refresh`] does the same and then materializes the sorted
/// [`Graph`] (owned strings, sorted rows and edges), which on a large graph costs more than the
/// query itself: time `recompute` for the cost per refresh, compare `refresh` graphs.
#[derive(Debug, Clone)]
pub struct RecomputeQuery {
    params: BaselineParams,
    samples: VecDeque<Sample>,
    /// Per upid, records sorted by (time, value): the latest at or before the last refresh
    /// and any after it.
    procs: FxHashMap<Upid, Vec<Process>>,
    /// Per (address, source), (time, name) sorted, kept the same way.
    names: FxHashMap<(IpAddr, NameSource), Vec<(EventTime, String)>>,
    /// Addresses as text, formatted once each (a presentation cache, not query state).
    addr_text: FxHashMap<IpAddr, Box<str>>,
    /// The latest refresh time.
    refreshed: EventTime,
    /// Scratch space of the grouping, reused across refreshes.
    groups: FxHashMap<(Upid, IpAddr), (u64, u64)>,
}

impl RecomputeQuery {
    /// An empty buffer for `params`.
    pub fn new(params: BaselineParams) -> Self {
        RecomputeQuery {
            params,
            samples: VecDeque::new(),
            procs: FxHashMap::default(),
            names: FxHashMap::default(),
            addr_text: FxHashMap::default(),
            refreshed: 0,
            groups: FxHashMap::default(),
        }
    }

    /// The parameters.
    pub fn params(&self) -> &BaselineParams {
        &self.params
    }

    /// Samples in the buffer.
    pub fn buffered_samples(&self) -> usize {
        self.samples.len()
    }

    /// Keeps one record (progress records are ignored).
    pub fn push(&mut self, record: &Record) {
        match record {
            Record::ConnStats(c) => self.samples.push_back(Sample {
                time: c.time_,
                upid: c.upid,
                addr: c.remote_addr,
                sent: c.bytes_sent,
                recv: c.bytes_recv,
            }),
            Record::Process(p) => {
                let history = self.procs.entry(p.upid).or_default();
                // Process's Ord starts with (time_, upid): for one upid, (time, value) order.
                let at = history.partition_point(|q| q <= &**p);
                history.insert(at, (**p).clone());
                prune(history, self.refreshed, |q| q.time_);
            }
            Record::Name(n) => {
                let history = self.names.entry((n.addr, n.source)).or_default();
                let key = (n.time_, n.name.as_str());
                let at = history.partition_point(|(t, name)| (*t, name.as_str()) <= key);
                history.insert(at, (n.time_, n.name.clone()));
                prune(history, self.refreshed, |(t, _)| *t);
            }
            Record::Container(_) | Record::Progress(_) => {}
        }
    }

    /// Recomputes the table and the graph of the window ending at `time` and reports their
    /// sizes: the work of one refresh, without materializing a [`Graph`].
    pub fn recompute(&mut self, time: EventTime) -> Recomputed {
        let samples = self.group(time);
        let (rows, edges) = self.table(time);
        Recomputed { samples, rows: rows.len(), edges: edges.len() }
    }

    /// The graph for the window ending at `time`, recomputed from the buffer, materialized
    /// and sorted.
    pub fn refresh(&mut self, time: EventTime) -> Graph {
        self.group(time);
        let (rows, edges) = self.table(time);
        let rows = rows
            .into_iter()
            .map(|r| GraphRow {
                from_entity: r.from_entity.to_string(),
                upid: r.upid.to_string(),
                cmdline: r.cmdline.to_string(),
                remote_addr: r.remote_addr.to_string(),
                to_entity: r.to_entity.to_string(),
                bytes_sent: r.sent,
                bytes_recv: r.recv,
            })
            .collect();
        let edges = edges
            .into_iter()
            .map(|((from, to), (sent, recv))| GraphEdge {
                from_entity: from.to_string(),
                to_entity: to.to_string(),
                bytes_sent: sent,
                bytes_recv: recv,
            })
            .collect();
        Graph { rows, edges }.sorted()
    }

    /// Steps 1 and 3: the samples with `T - window < time_ <= T` and `remote_addr` in `ips`,
    /// grouped per (upid, remote_addr) with the max of each counter. (The process, hence
    /// from_entity and cmdline, is one per upid at T, so this is DESIGN.md's group
    /// (from_entity, upid, cmdline, remote_addr).) Returns the samples taken.
    fn group(&mut self, time: EventTime) -> usize {
        let window = self.params.window_ns;
        self.refreshed = self.refreshed.max(time);
        while self.samples.front().is_some_and(|s| s.time.saturating_add(window) <= self.refreshed) {
            self.samples.pop_front();
        }
        self.groups.clear();
        let mut taken = 0;
        for s in &self.samples {
            if s.time <= time && s.time.saturating_add(window) > time && self.params.keeps(&s.addr) {
                taken += 1;
                let group = self.groups.entry((s.upid, s.addr)).or_insert((0, 0));
                group.0 = group.0.max(s.sent);
                group.1 = group.1.max(s.recv);
            }
        }
        for addr in self.groups.keys().map(|(_, addr)| addr) {
            if !self.addr_text.contains_key(addr) {
                self.addr_text.insert(*addr, addr.to_string().into());
            }
        }
        taken
    }

    /// Steps 2, 4, 5 and the edges, over the groups.
    #[allow(clippy::type_complexity)]
    fn table(&self, time: EventTime) -> (Vec<RowRef<'_>>, FxHashMap<(&str, &str), (u64, u64)>) {
        let mut rows = Vec::with_capacity(self.groups.len());
        let mut edges: FxHashMap<(&str, &str), (u64, u64)> = FxHashMap::default();
        for (&(upid, addr), &(sent, recv)) in &self.groups {
            // 2. from_entity and cmdline: the latest process record at or before T;
            // 4. rows whose from_entity is '' (unknown process included) are dropped.
            let Some(process) = self.procs.get(&upid).and_then(|h| at_or_before(h, time, |q| q.time_)) else {
                continue;
            };
            let from_entity = self.params.group_by.of(process);
            if from_entity.is_empty() {
                continue;
            }
            // 5. to_entity: loopback peers are the process's own entity; else per source the
            // latest name at or before T, the first source with a non-empty one; else the
            // address as text.
            let remote_addr: &str = &self.addr_text[&addr];
            let to_entity = if addr.is_loopback() {
                from_entity
            } else {
                NameSource::ALL
                    .iter()
                    .filter_map(|source| self.names.get(&(addr, *source)))
                    .filter_map(|h| at_or_before(h, time, |(t, _)| *t))
                    .map(|(_, name)| name.as_str())
                    .find(|name| !name.is_empty())
                    .unwrap_or(remote_addr)
            };
            // Edges: (from_entity, to_entity), bytes summed over the rows.
            let edge = edges.entry((from_entity, to_entity)).or_insert((0, 0));
            edge.0 += sent;
            edge.1 += recv;
            rows.push(RowRef { from_entity, upid, cmdline: &process.cmdline, remote_addr, to_entity, sent, recv });
        }
        (rows, edges)
    }
}

/// The last entry with time <= `time` of a history sorted by time.
fn at_or_before<V>(history: &[V], time: EventTime, time_of: impl Fn(&V) -> EventTime) -> Option<&V> {
    let after = history.partition_point(|v| time_of(v) <= time);
    after.checked_sub(1).map(|i| &history[i])
}

/// Drops the entries no refresh at or after `refreshed` can see: those before the latest one
/// at or before it.
fn prune<V>(history: &mut Vec<V>, refreshed: EventTime, time_of: impl Fn(&V) -> EventTime) {
    let reached = history.partition_point(|v| time_of(v) <= refreshed);
    if reached > 1 {
        history.drain(..reached - 1);
    }
}
