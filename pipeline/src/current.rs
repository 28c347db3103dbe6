//! The rows and the edges, by two operators that keep only the current state.
//!
//! Differential's join and reduce keep each key's history in arrangements, so that they can
//! answer for any time; every input change is sorted into a batch, merged, and read back. The
//! job's event time is totally ordered and each time is computed once, in order, so the state
//! as of the frontier is all the last two steps of the query need: [`rows`] keeps, per peer
//! (upid, addr), its connection keys in force and their bytes, folds their max (step 3 of the
//! query: max over cumulative counters is each key's latest sample) and joins it with its
//! process's labels and its address's name, all in hash maps; [`rows_and_edges`] keeps each
//! edge's sums and passes the rows on. Both buffer their input until its time is complete at
//! every input, then apply the times in order and emit, per time, what changed (`-old`,
//! `+new`), like differential's `count_total` does for totally ordered times.
//!
//! This is where the records' churn goes: every change of a peer's bytes passes here and
//! nowhere else, while the labels (names, processes, parameters) stay in the differential
//! dataflow, where a parameter change moves them incrementally. docs/BENCHMARKS.md measured
//! the difference against the joins and `count_total` these replace.

use crate::cluster::route;
use crate::dataflow::{ConnData, Member};
use crate::graph::{Edge, GraphRecord, Row, Text};
use crate::order::{append_or_swap, sort_by_key_then};
use crate::state_alloc::StateAlloc;
use differential_dataflow::{AsCollection, VecCollection};
use flowgraph_schema::{EventTime, Upid};
use hashbrown::hash_map::EntryRef;
use rustc_hash::{FxBuildHasher, FxHashMap, FxHashSet};
use serde::{Deserialize, Serialize};
use smallvec::SmallVec;
use std::collections::BTreeMap;
use std::hash::{BuildHasher, Hash};
use std::net::IpAddr;
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::generic::Operator;
use timely::dataflow::operators::vec::{Broadcast, Map};
use timely::dataflow::operators::{CapabilitySet, Concat, Exchange, InputCapability};
use timely::progress::frontier::MutableAntichain;

type Coll<'s, D> = VecCollection<'s, EventTime, D, isize>;

/// What a collection holds for one key now: values with their (non-zero) counts. Almost
/// always one value; a transient second one is kept exactly, as a join would.
#[derive(Debug)]
struct Multiset<V>(SmallVec<[(V, isize); 1]>);

impl<V> Default for Multiset<V> {
    fn default() -> Self {
        Multiset(SmallVec::new())
    }
}

impl<V: PartialEq> Multiset<V> {
    fn update(&mut self, value: V, diff: isize) {
        match self.0.iter().position(|(v, _)| *v == value) {
            Some(i) => {
                self.0[i].1 += diff;
                if self.0[i].1 == 0 {
                    self.0.swap_remove(i);
                }
            }
            None if diff != 0 => self.0.push((value, diff)),
            None => {}
        }
    }

    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    fn iter(&self) -> impl Iterator<Item = &(V, isize)> {
        self.0.iter()
    }

    /// Moves a multiset that spilled to the heap (two values at once) back inline once it
    /// holds one again. A SmallVec keeps its heap buffer otherwise: a peer that once had two
    /// keys in force, or a label that once changed, would hold one for good.
    fn compact(&mut self) {
        if self.0.spilled() && self.0.len() <= 1 {
            self.0.shrink_to_fit();
        }
    }
}

/// A change of what names a row: its process's labels, or its address's name.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub(crate) enum Label {
    /// The process's (from_entity, cmdline) under the current grouping.
    Process(Upid, (Text, Text)),
    /// The kept address's to_entity.
    Address(IpAddr, Text),
}

/// A peer's connection keys in force, with the latest (bytes sent, bytes received) of each.
type PeerKeys = Multiset<(Member, (u64, u64))>;

enum Change {
    Bytes((Upid, IpAddr), (Member, (u64, u64)), isize),
    Label(Label, isize),
}

/// The processes (or the addresses) the rows operator knows, each under a dense u32 id while
/// it has labels or peers: the per-peer map and the indexes of who a label change touches
/// hold two 4-byte ids per peer instead of a 16-byte upid and a 17-byte address (the 400 s
/// medium stream: 670 -> 600 bytes per live key; docs/BENCHMARKS.md, item 16).
#[derive(Debug)]
struct Sides<K, L> {
    ids: FxHashMap<K, u32>,
    slots: Vec<Side<K, L>>,
    /// Ids whose slot is unused, to hand out again.
    free: Vec<u32>,
    /// Ids that may have lost their last label or peer during the current time; released
    /// only at its end, so that ids held across the time stay the same side.
    maybe_unused: Vec<u32>,
}

/// One process (its (from_entity, cmdline)) or address (its name), and its peers by the
/// other side's id.
#[derive(Debug)]
struct Side<K, L> {
    key: K,
    labels: Multiset<L>,
    peers: FxHashSet<u32>,
}

impl<K, L> Default for Sides<K, L> {
    fn default() -> Self {
        Sides { ids: FxHashMap::default(), slots: Vec::new(), free: Vec::new(), maybe_unused: Vec::new() }
    }
}

impl<K: Hash + Eq + Copy, L: PartialEq> Sides<K, L> {
    fn id(&self, key: &K) -> Option<u32> {
        self.ids.get(key).copied()
    }

    /// The key's id, given a fresh one (and remembered as maybe unused) if it had none.
    fn intern(&mut self, key: K) -> u32 {
        if let Some(id) = self.ids.get(&key) {
            return *id;
        }
        let side = Side { key, labels: Multiset::default(), peers: FxHashSet::default() };
        let id = match self.free.pop() {
            Some(id) => {
                self.slots[id as usize] = side;
                id
            }
            None => {
                self.slots.push(side);
                u32::try_from(self.slots.len() - 1).expect("fewer than 2^32 processes or addresses")
            }
        };
        self.ids.insert(key, id);
        self.maybe_unused.push(id);
        id
    }

    fn side(&self, id: u32) -> &Side<K, L> {
        &self.slots[id as usize]
    }

    fn update_labels(&mut self, key: K, labels: L, diff: isize) {
        let id = self.intern(key);
        let side = &mut self.slots[id as usize];
        side.labels.update(labels, diff);
        side.labels.compact();
        if side.labels.is_empty() {
            self.maybe_unused.push(id);
        }
    }

    fn add_peer(&mut self, id: u32, peer: u32) {
        self.slots[id as usize].peers.insert(peer);
    }

    fn remove_peer(&mut self, id: u32, peer: u32) {
        let peers = &mut self.slots[id as usize].peers;
        peers.remove(&peer);
        if peers.is_empty() {
            // A set keeps its capacity when emptied: dropped, as the index entry was before.
            *peers = FxHashSet::default();
            self.maybe_unused.push(id);
        }
    }

    /// Releases the ids, among those that may be, whose side has no labels and no peers (the
    /// slot is overwritten when its id is handed out again).
    fn release_unused(&mut self) {
        for id in std::mem::take(&mut self.maybe_unused) {
            let side = &self.slots[id as usize];
            if side.labels.is_empty() && side.peers.is_empty() && self.ids.remove(&side.key).is_some() {
                self.free.push(id);
            }
        }
    }
}

/// The join of bytes, process labels and address names, as of the last completed time.
#[derive(Default)]
struct RowState {
    /// Per peer (process id, address id), its connection keys in force with their bytes: one
    /// entry per peer holds both the max's inputs and what the join needs (a single look-up
    /// per changed peer). In the state tables' allocator (state_alloc.rs), as the edges' sums.
    bytes: hashbrown::HashMap<(u32, u32), PeerKeys, FxBuildHasher, StateAlloc>,
    /// Processes with their labels and their peers' address ids: who a label change touches.
    processes: Sides<Upid, (Text, Text)>,
    /// Addresses with their names and their peers' process ids.
    addresses: Sides<IpAddr, Text>,
    /// The ids of a time's peers: kept between times (a new vector per time left the bench's
    /// resident memory ~3% higher, docs/BENCHMARKS.md item 25), shrunk back after a time with
    /// more than [`PEER_IDS_KEPT`] peers (a window change touches every peer).
    peer_ids: Vec<(u32, u32)>,
}

/// The most peers' ids whose room `RowState` keeps between times (8 bytes each).
const PEER_IDS_KEPT: usize = 16_384;

impl RowState {
    /// The rows of one peer now, with their counts.
    fn rows_of(&self, peer: (u32, u32), out: &mut SmallVec<[(Row, isize); 1]>) {
        let (process, address) = (self.processes.side(peer.0), self.addresses.side(peer.1));
        rows_from((process.key, address.key), self.bytes.get(&peer), &process.labels, &address.labels, out);
    }

    fn apply_label(&mut self, label: Label, diff: isize) {
        match label {
            Label::Process(upid, labels) => self.processes.update_labels(upid, labels, diff),
            Label::Address(addr, name) => self.addresses.update_labels(addr, name, diff),
        }
    }

    /// Applies the changes of one time and appends the rows that changed.
    ///
    /// Label changes are rare and may touch many peers: those peers' rows are taken before
    /// and after everything of the time is applied. Bytes changes are the churn: grouped by
    /// peer, each peer's labels and bytes entry are looked up once (on a million keys each
    /// look-up is a cache miss) and the indexes are touched only when a peer appears or
    /// leaves. A peer not touched by a label change has the same labels before and after.
    fn advance(&mut self, time: EventTime, changes: Vec<Change>, out: &mut Vec<(GraphRecord, EventTime, isize)>) {
        let mut labels = Vec::new();
        let mut bytes: Vec<BytesChange> = Vec::with_capacity(changes.len());
        for change in changes {
            match change {
                Change::Bytes(peer, value, diff) => bytes.push((peer, value, diff)),
                Change::Label(label, diff) => labels.push((label, diff)),
            }
        }
        let mut relabeled: Vec<(u32, u32)> = Vec::new();
        for (label, _) in &labels {
            match label {
                Label::Process(upid, _) => {
                    if let Some(process) = self.processes.id(upid) {
                        let peers = &self.processes.side(process).peers;
                        relabeled.extend(peers.iter().map(|address| (process, *address)));
                    }
                }
                Label::Address(addr, _) => {
                    if let Some(address) = self.addresses.id(addr) {
                        let peers = &self.addresses.side(address).peers;
                        relabeled.extend(peers.iter().map(|process| (*process, address)));
                    }
                }
            }
        }
        relabeled.sort_unstable();
        relabeled.dedup();
        let mut before_relabel: Vec<SmallVec<[(Row, isize); 1]>> = Vec::with_capacity(relabeled.len());
        for peer in &relabeled {
            let mut rows = SmallVec::new();
            self.rows_of(*peer, &mut rows);
            before_relabel.push(rows);
        }
        // Insertions first: a -old +new pair then never empties an entry.
        labels.sort_by_key(|(_, diff)| std::cmp::Reverse(*diff));
        for (label, diff) in labels {
            self.apply_label(label, diff);
        }

        // Retractions first: a key's `-old +new` then never holds two values at once, so a
        // peer with one key never spills its multiset to the heap. (Emptiness is judged
        // before and after the whole group, so a peer emptied midway stays indexed.)
        group_by_peer(&mut bytes);
        // Each peer's ids, and its entry looked up in a loop of its own first: the look-ups
        // are independent, so the CPU overlaps their cache misses, where the main loop's long
        // body would take them one at a time (docs/BENCHMARKS.md, item 25).
        let mut peers = std::mem::take(&mut self.peer_ids);
        for group in bytes.chunk_by(|a, b| a.0 == b.0) {
            let (upid, addr) = group[0].0;
            peers.push((self.processes.intern(upid), self.addresses.intern(addr)));
        }
        let touched: usize = peers.iter().filter_map(|ids| self.bytes.get(ids)).map(|entry| entry.0.len()).sum();
        std::hint::black_box(touched);
        let (mut before, mut after) = (SmallVec::new(), SmallVec::new());
        for (group, &ids) in bytes.chunk_by(|a, b| a.0 == b.0).zip(&peers) {
            let (upid, addr) = group[0].0;
            let emit_here = relabeled.binary_search(&ids).is_err();
            let process = &self.processes.side(ids.0).labels;
            let address = &self.addresses.side(ids.1).labels;
            let entry = self.bytes.entry(ids).or_default();
            let was_empty = entry.is_empty();
            if emit_here {
                rows_from((upid, addr), Some(&*entry), process, address, &mut before);
            }
            for (_, value, diff) in group {
                entry.update(*value, *diff);
            }
            if emit_here {
                rows_from((upid, addr), Some(&*entry), process, address, &mut after);
            }
            let is_empty = entry.is_empty();
            if is_empty {
                self.bytes.remove(&ids);
            } else {
                entry.compact();
            }
            match (was_empty, is_empty) {
                (true, false) => {
                    self.processes.add_peer(ids.0, ids.1);
                    self.addresses.add_peer(ids.1, ids.0);
                }
                (false, true) => {
                    self.processes.remove_peer(ids.0, ids.1);
                    self.addresses.remove_peer(ids.1, ids.0);
                }
                _ => {}
            }
            if emit_here {
                emit_changed(time, &mut before, &mut after, out);
            }
        }

        for (peer, mut before) in relabeled.into_iter().zip(before_relabel) {
            self.rows_of(peer, &mut after);
            emit_changed(time, &mut before, &mut after, out);
        }
        self.processes.release_unused();
        self.addresses.release_unused();
        peers.clear();
        peers.shrink_to(PEER_IDS_KEPT);
        self.peer_ids = peers;
    }
}

/// A change of one connection key's bytes, by its peer.
type BytesChange = ((Upid, IpAddr), (Member, (u64, u64)), isize);

/// Orders a time's bytes changes so that each peer's are adjacent, its retractions first.
/// Sorts by the peer's hash, computed once per change, comparing the changes' peers and
/// signs only where two hashes are equal ([`sort_by_key_then`]), rather than sorting the
/// 72-byte changes by their peers: that sort was ~10% of the job's time on the 400 s medium
/// stream (docs/BENCHMARKS.md, item 24). The order of the peers is the hashes', which nothing
/// downstream depends on (a time's updates are released in release order).
fn group_by_peer(bytes: &mut [BytesChange]) {
    group_by_peer_hash(bytes, |peer| FxBuildHasher.hash_one(peer));
}

/// [`group_by_peer`] with the peer's hash given (a test forces collisions).
fn group_by_peer_hash(bytes: &mut [BytesChange], hash: impl Fn(&(Upid, IpAddr)) -> u64) {
    sort_by_key_then(
        bytes,
        |(peer, _, _)| hash(peer),
        |(a, _, a_diff), (b, _, b_diff)| (a, *a_diff > 0).cmp(&(b, *b_diff > 0)),
    );
}

/// A peer's rows from its connection keys' bytes (their max), its process's labels and its
/// address's name (multisets, so the rows are their product), with their counts.
fn rows_from(
    (upid, addr): (Upid, IpAddr),
    members: Option<&PeerKeys>,
    process: &Multiset<(Text, Text)>,
    address: &Multiset<Text>,
    out: &mut SmallVec<[(Row, isize); 1]>,
) {
    out.clear();
    let Some(members) = members else {
        return;
    };
    // The peer's bytes: the max over its connection keys in force, each counter on its own.
    let in_force = members.iter().filter(|(_, count)| *count > 0).map(|((_, bytes), _)| *bytes);
    let Some((sent, recv)) = in_force.reduce(|(s, r), (sent, recv)| (s.max(sent), r.max(recv))) else {
        return;
    };
    for ((from_entity, cmdline), process_count) in process.iter() {
        for (to_entity, address_count) in address.iter() {
            // Loopback traffic stays inside the process's own entity (Pixie's sidecar
            // rule): a name for 127.0.0.1 would merge every host's loopback into one.
            let to_entity = if addr.is_loopback() { from_entity } else { to_entity };
            let row = Row {
                from_entity: from_entity.clone(),
                upid,
                cmdline: cmdline.clone(),
                remote_addr: addr,
                to_entity: to_entity.clone(),
                bytes_sent: sent,
                bytes_recv: recv,
            };
            out.push((row, process_count * address_count));
        }
    }
}

fn emit_changed(
    time: EventTime,
    before: &mut SmallVec<[(Row, isize); 1]>,
    after: &mut SmallVec<[(Row, isize); 1]>,
    out: &mut Vec<(GraphRecord, EventTime, isize)>,
) {
    if before == after {
        return;
    }
    out.extend(before.drain(..).map(|(row, count)| (GraphRecord::Row(row), time, -count)));
    out.extend(after.drain(..).map(|(row, count)| (GraphRecord::Row(row), time, count)));
}

/// Changes waiting for their time to complete, by time (each time's in a `B`), and the
/// capabilities to emit their results. A round brings a few hundred distinct times at most
/// (records of one export period share one), so grouping on arrival is cheaper than sorting
/// the changes.
struct Pending<B> {
    changes: BTreeMap<EventTime, B>,
    capabilities: CapabilitySet<EventTime>,
}

impl<B> Pending<B> {
    fn new() -> Self {
        Pending { changes: BTreeMap::new(), capabilities: CapabilitySet::new() }
    }

    /// Keeps a message's capability, to emit the results of its changes with.
    fn hold(&mut self, capability: InputCapability<EventTime>) {
        self.capabilities.insert(capability.retain_least(0).expect("data under a capability"));
    }

    /// Removes the changes of every time no input can still send, in time order.
    fn take_complete(&mut self, frontiers: &[&MutableAntichain<EventTime>]) -> BTreeMap<EventTime, B> {
        // Totally ordered times: the first time some input may still send splits the map.
        let open = frontiers.iter().filter_map(|f| f.frontier().first().copied()).min();
        match open {
            Some(open) => {
                let rest = self.changes.split_off(&open);
                std::mem::replace(&mut self.changes, rest)
            }
            None => std::mem::take(&mut self.changes),
        }
    }

    /// Keeps capabilities only for what is still pending.
    fn downgrade(&mut self) {
        match self.changes.keys().next() {
            Some(earliest) => self.capabilities.downgrade([*earliest]),
            None => self.capabilities = CapabilitySet::new(),
        }
    }
}

impl<C> Pending<Vec<C>> {
    /// Takes a message's changes and a capability to emit their results with.
    fn accept(&mut self, capability: InputCapability<EventTime>, changes: impl Iterator<Item = (EventTime, C)>) {
        self.hold(capability);
        self.extend(changes);
    }

    /// Files changes by time; a run of changes at one time costs one look-up.
    fn extend(&mut self, changes: impl Iterator<Item = (EventTime, C)>) {
        let mut run: Option<(EventTime, Vec<C>)> = None;
        for (time, change) in changes {
            match &mut run {
                Some((run_time, run)) if *run_time == time => run.push(change),
                _ => {
                    if let Some((run_time, mut run)) = run.take() {
                        append_or_swap(self.changes.entry(run_time).or_default(), &mut run);
                    }
                    run = Some((time, vec![change]));
                }
            }
        }
        if let Some((run_time, mut run)) = run {
            append_or_swap(self.changes.entry(run_time).or_default(), &mut run);
        }
    }
}

/// The table rows: each peer's max bytes over its connection keys in force, joined with its
/// process's labels and its address's name. On a cluster, peers and process labels go to
/// the worker of their upid and every worker gets every address's name. They leave as graph
/// records, the edges operator's input and output type, so it passes them on as they are.
pub(crate) fn rows<'s>(
    bytes: Coll<'s, ConnData>,
    processes: Coll<'s, (Upid, (Text, Text))>,
    addresses: Coll<'s, (IpAddr, Text)>,
) -> Coll<'s, GraphRecord> {
    let bytes = bytes.inner.exchange(|(((upid, _), _), _, _)| route(upid));
    let labels = processes
        .inner
        .exchange(|((upid, _), _, _)| route(upid))
        .map(|((upid, labels), time, diff)| (Label::Process(upid, labels), time, diff))
        .concat(addresses.map(|(addr, name)| Label::Address(addr, name)).inner.broadcast());
    bytes
        .binary_frontier(labels, Pipeline, Pipeline, "Rows", |_, _| {
            let mut pending = Pending::<Vec<Change>>::new();
            let mut state = RowState::default();
            let mut out = Vec::new();
            move |(bytes, bytes_frontier), (labels, labels_frontier), output| {
                bytes.for_each(|capability, data| {
                    let changes =
                        data.drain(..).map(|((peer, value), time, diff)| (time, Change::Bytes(peer, value, diff)));
                    pending.accept(capability, changes);
                });
                labels.for_each(|capability, data| {
                    pending.accept(
                        capability,
                        data.drain(..).map(|(label, time, diff)| (time, Change::Label(label, diff))),
                    );
                });
                let complete = pending.take_complete(&[bytes_frontier, labels_frontier]);
                if let Some(earliest) = complete.keys().next() {
                    let capability = pending.capabilities.delayed(earliest);
                    for (time, changes) in complete {
                        state.advance(time, changes, &mut out);
                    }
                    // The buffer itself goes downstream, and whatever a pusher hands back
                    // (on a cluster, a drained buffer at full capacity) is dropped: kept
                    // here, it would hold the capacity of the largest burst for good.
                    output.session(&capability).give_container(&mut std::mem::take(&mut out));
                }
                pending.downgrade();
            }
        })
        .as_collection()
}

/// Per edge: (rows, bytes sent, bytes received), summed over its rows.
type EdgeSums = (isize, i64, i64);

/// The most edges' changes whose room `rows_and_edges` keeps between times (~40 bytes each).
const CHANGED_EDGES_KEPT: usize = 16_384;

/// An edge's key borrowed from a row: looks up `(Text, Text)` keys without cloning the text.
/// Hashes as the tuple does (its fields in order).
#[derive(Hash)]
struct EdgeOf<'a>(&'a Text, &'a Text);

impl hashbrown::Equivalent<(Text, Text)> for EdgeOf<'_> {
    fn equivalent(&self, key: &(Text, Text)) -> bool {
        *self.0 == key.0 && *self.1 == key.1
    }
}

impl From<&EdgeOf<'_>> for (Text, Text) {
    fn from(edge: &EdgeOf<'_>) -> Self {
        (edge.0.clone(), edge.1.clone())
    }
}

/// The graph: the rows, passed on, and the edges, rows summed per (from_entity, to_entity).
/// An edge is present while its sums are not all zero (its row count keeps an edge of
/// zero-byte rows present). The rows go on from here, rather than from a second consumer of
/// the rows' stream, which would have timely clone every batch of rows for it.
///
/// The rows pass through as they arrive, in the buffers they came in (they need no
/// completed time); what waits for a time to complete is only that time's change per edge,
/// summed on arrival. Holding the rows until then cost a copy of each, and a buffer the
/// size of the largest time's rows (docs/BENCHMARKS.md, item 33).
pub(crate) fn rows_and_edges(rows: Coll<'_, GraphRecord>) -> Coll<'_, GraphRecord> {
    rows.inner
        .exchange(|(record, _, _)| route(&record.edge_key()))
        .unary_frontier(Pipeline, "Edges", |_, _| {
            // Per time not yet complete, its change per edge.
            let mut pending = Pending::<EdgeChanges>::new();
            let mut sums: hashbrown::HashMap<(Text, Text), EdgeSums, FxBuildHasher, StateAlloc> = Default::default();
            // An emptied map of a time's changes, kept for the next time (a new map per time
            // left the bench's resident memory ~4% higher, docs/BENCHMARKS.md item 23), and
            // shrunk back after a time that changed more edges than `CHANGED_EDGES_KEPT` (a
            // `group_by` change touches every edge), so it does not hold that capacity for good.
            let mut spare: Option<EdgeChanges> = None;
            let mut out = Vec::new();
            move |(input, frontier), output| {
                input.for_each(|capability, records| {
                    // Records of one time come in runs: one look-up of the time's map a run.
                    for run in records.chunk_by(|(_, a, _), (_, b, _)| a == b) {
                        let changed =
                            pending.changes.entry(run[0].1).or_insert_with(|| spare.take().unwrap_or_default());
                        for (record, _, diff) in run {
                            // The input is rows; anything else would pass through unsummed.
                            let GraphRecord::Row(row) = record else {
                                continue;
                            };
                            let delta = changed.entry_ref(&EdgeOf(&row.from_entity, &row.to_entity)).or_default();
                            delta.0 += diff;
                            delta.1 += *diff as i64 * row.bytes_sent as i64;
                            delta.2 += *diff as i64 * row.bytes_recv as i64;
                        }
                    }
                    output.session(&capability).give_container(records);
                    pending.hold(capability);
                });
                let complete = pending.take_complete(&[frontier]);
                if let Some(earliest) = complete.keys().next() {
                    let capability = pending.capabilities.delayed(earliest);
                    for (time, mut changed) in complete {
                        for (edge, delta) in changed.drain() {
                            if delta == (0, 0, 0) {
                                continue;
                            }
                            // One look-up per changed edge: the entry is updated, created or
                            // removed in place. The edge's texts are cloned only for a new entry
                            // and a retraction; the insertion takes `edge`'s own (each clone is
                            // an atomic count, docs/BENCHMARKS.md item 29).
                            let (old, new) = match sums.entry_ref(&EdgeOf(&edge.0, &edge.1)) {
                                EntryRef::Occupied(mut sum) => {
                                    let old = *sum.get();
                                    let new = (old.0 + delta.0, old.1 + delta.1, old.2 + delta.2);
                                    if new == (0, 0, 0) {
                                        sum.remove();
                                    } else {
                                        *sum.get_mut() = new;
                                    }
                                    (old, new)
                                }
                                EntryRef::Vacant(slot) => {
                                    slot.insert(delta);
                                    ((0, 0, 0), delta)
                                }
                            };
                            let edge_of = |(from_entity, to_entity): (Text, Text), (_, sent, recv): EdgeSums| {
                                GraphRecord::Edge(Edge {
                                    from_entity,
                                    to_entity,
                                    bytes_sent: sent as u64,
                                    bytes_recv: recv as u64,
                                })
                            };
                            if old != (0, 0, 0) {
                                out.push((edge_of(edge.clone(), old), time, -1));
                            }
                            if new != (0, 0, 0) {
                                out.push((edge_of(edge, new), time, 1));
                            }
                        }
                        changed.shrink_to(CHANGED_EDGES_KEPT);
                        spare = Some(changed);
                    }
                    // The buffer itself goes downstream, and whatever a pusher hands back
                    // (on a cluster, a drained buffer at full capacity) is dropped: kept
                    // here, it would hold the capacity of the largest burst for good.
                    output.session(&capability).give_container(&mut std::mem::take(&mut out));
                }
                pending.downgrade();
            }
        })
        .as_collection()
}

/// A time's change per edge, summed over its rows' updates.
type EdgeChanges = hashbrown::HashMap<(Text, Text), EdgeSums, FxBuildHasher>;

#[cfg(test)]
mod tests {
    use super::*;
    use flowgraph_schema::TraceRole;
    use rand::{Rng, SeedableRng};

    /// Each peer's changes adjacent, its retractions first, and no change lost or added.
    fn assert_grouped(grouped: &[BytesChange], original: &[BytesChange]) {
        let mut seen = Vec::new();
        for group in grouped.chunk_by(|a, b| a.0 == b.0) {
            assert!(!seen.contains(&group[0].0), "peer {:?} in two groups", group[0].0);
            seen.push(group[0].0);
            assert!(group.is_sorted_by_key(|(_, _, diff)| *diff > 0), "insertion before retraction: {group:?}");
        }
        let (mut grouped, mut original) = (grouped.to_vec(), original.to_vec());
        grouped.sort();
        original.sort();
        assert_eq!(grouped, original, "changes lost or added");
    }

    #[test]
    fn a_times_bytes_changes_are_grouped_by_peer_retractions_first_even_when_hashes_collide() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(11);
        let peers: Vec<(Upid, IpAddr)> = (0..6u32)
            .map(|i| (Upid { asid: i % 2, pid: i, start_ticks: 7 }, IpAddr::from([10, 0, 0, (i % 3) as u8])))
            .collect();
        for _ in 0..200 {
            let changes: Vec<BytesChange> = (0..rng.random_range(0..40))
                .map(|_| {
                    let peer = peers[rng.random_range(0..peers.len())];
                    let member = (rng.random_range(0..3u16), TraceRole::Client);
                    let diff = if rng.random_bool(0.5) { 1 } else { -1 };
                    (peer, (member, (rng.random_range(0..100), 0)), diff)
                })
                .collect();
            let mut grouped = changes.clone();
            group_by_peer(&mut grouped);
            assert_grouped(&grouped, &changes);
            // Every peer's hash the same, then two peers per hash: every run interleaved.
            let mut grouped = changes.clone();
            group_by_peer_hash(&mut grouped, |_| 42);
            assert_grouped(&grouped, &changes);
            let mut grouped = changes.clone();
            group_by_peer_hash(&mut grouped, |(upid, _)| u64::from(upid.pid / 2));
            assert_grouped(&grouped, &changes);
        }
    }

    #[test]
    fn a_side_keeps_its_id_while_it_has_labels_or_peers_and_the_id_is_reused_after() {
        let mut sides: Sides<u64, &str> = Sides::default();
        let (a, b) = (sides.intern(10), sides.intern(20));
        assert_ne!(a, b);
        assert_eq!(sides.intern(10), a, "a known key keeps its id");

        sides.update_labels(10, "ten", 1);
        sides.add_peer(b, 7);
        sides.release_unused();
        assert_eq!((sides.id(&10), sides.id(&20)), (Some(a), Some(b)), "labels or a peer keep a side");

        // Ids held across a time stay valid until its end, even once unused.
        sides.update_labels(10, "ten", -1);
        assert_eq!(sides.side(a).key, 10);
        sides.remove_peer(b, 7);
        sides.release_unused();
        assert_eq!((sides.id(&10), sides.id(&20)), (None, None), "neither labels nor peers: released");

        let c = sides.intern(30);
        assert!(c == a || c == b, "a released id is handed out again");
        let side = sides.side(c);
        assert!(side.key == 30 && side.labels.is_empty() && side.peers.is_empty());
        assert_eq!(sides.ids.len(), 1);
    }
}
