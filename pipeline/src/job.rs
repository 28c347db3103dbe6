//! The embedded job: one timely worker in this thread, driven record by record.

use crate::dataflow::ConnData;
use crate::dataflow::{self, Inputs, OutputBuffer};
use crate::explain::{NameCandidate, NameExplanation, NamedBy};
use crate::graph::Text;
use crate::graph::{release_order, GraphRecord, Output};
use crate::order::{append_or_swap, sort_by_key_then};
use crate::params::Params;
use crate::stage::{ContainerInfo, Interner, ProcessInfo, Stage, StageUpdate, StageValue};
use differential_dataflow::input::InputSession;
use flowgraph_schema::{EventTime, NameSource, Record, TraceRole, Upid};
use std::net::IpAddr;
use std::time::Instant;
use timely::communication::allocator::thread::Thread;
use timely::communication::allocator::Allocator;
use timely::dataflow::operators::probe::Handle as ProbeHandle;
use timely::worker::{Config as WorkerConfig, Worker};

/// How the job treats time.
#[derive(Debug, Clone)]
pub struct JobConfig {
    /// Initial query parameters.
    pub params: Params,
    /// How far behind the largest event time seen the frontier trails (ns).
    pub lateness_ns: u64,
    /// The frontier is advanced (and a progress mark output) once it has moved this far (ns).
    pub progress_interval_ns: u64,
    /// Longest window a parameter change may ask for (ns); bounds retained state.
    pub max_window_ns: u64,
    /// How many released updates a long jump of the frontier holds before it hands them
    /// over: once at least this many wait for the caller, the jump ends a piece at the next
    /// multiple of `progress_interval_ns` (a progress mark there) and returns; it goes on at
    /// the next call into the job once the caller has drained the piece. A jump then holds
    /// about this many updates at once, plus one interval's, not all of its own (the
    /// frontier's first move completes the first `lateness` of a stream at once:
    /// docs/BENCHMARKS.md, item 37). The end of a stream (`finish`) is never cut.
    pub max_updates_per_piece: usize,
    /// How many connection events (samples settling, keys expiring) one pass through the
    /// dataflow takes: a slice also ends after the time that brings it this many (a time's
    /// events go through together, however many). A busy stretch (an export of many agents at
    /// once, or its expiry a window later) is cut finer and a quiet one is not, so the
    /// buffers' peak is bounded by work as well as by event time. At 4,096 the 400 s medium
    /// stream has 5% more slices and the job ~523 bytes per live key instead of ~550, at the
    /// same speed in process, through Kafka, and on the large stream, where it has 2.2x the
    /// slices (docs/BENCHMARKS.md, item 41). The output is the same whatever it is.
    pub max_slice_events: usize,
}

impl Default for JobConfig {
    fn default() -> Self {
        JobConfig {
            params: Params::default(),
            lateness_ns: 30 * 1_000_000_000,
            progress_interval_ns: 1_000_000_000,
            max_window_ns: 3600 * 1_000_000_000,
            max_updates_per_piece: 8_192,
            max_slice_events: 4_096,
        }
    }
}

/// What happened to an accepted record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// Processed at its own event time.
    OnTime,
    /// Older than the frontier: processed at the frontier instead.
    Late {
        /// The time it was processed at.
        processed_at: EventTime,
    },
}

/// Why a record was not processed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Rejection(pub String);

/// The most busy event time one pass through the dataflow covers, whatever the progress
/// interval. Every buffer between the stage and the released outputs (the stage's changes,
/// the operators' inputs and outputs, the release's sort) holds one slice's worth at a time,
/// and the allocator keeps their peak resident between slices. At the default 1 s interval,
/// 100 ms slices took the job from ~773 to ~670 bytes per live key on the 400 s medium stream
/// at the same speed (docs/BENCHMARKS.md, item 15). Shorter slices only add dataflow steps;
/// the updates and their times are the same.
const MAX_COMPUTE_SLICE_NS: u64 = 100_000_000;

/// Counters of what the job has seen.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct JobStats {
    /// Records pushed, of every kind.
    pub records: u64,
    /// Records processed at the frontier because they were older than it.
    pub late: u64,
    /// Records rejected (for example a decreasing counter).
    pub rejected: u64,
    /// Passes through the dataflow: slices of event time (see [`JobConfig::max_slice_events`]).
    pub slices: u64,
}

/// A connection key: what one cumulative counter pair belongs to.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct ConnKey {
    upid: Upid,
    addr: IpAddr,
    port: u16,
    role: TraceRole,
}

/// A connection key's cumulative counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord)]
struct Bytes {
    sent: u64,
    recv: u64,
}

impl StageValue for Bytes {
    fn check_order(earlier: &Self, later: &Self) -> Result<(), String> {
        if later.sent < earlier.sent || later.recv < earlier.recv {
            return Err(format!(
                "counter decreased: bytes_sent {} -> {}, bytes_recv {} -> {} (cumulative counters must not go down)",
                earlier.sent, later.sent, earlier.recv, later.recv
            ));
        }
        Ok(())
    }
}

/// Hands the connection stage's changes to the dataflow: every change of a connection key
/// in force goes to `conns` (the rows operator folds the max per (upid, addr), in the same
/// hash-map entry it joins with the labels), and a key's appearance or expiry goes to
/// `present`, the addresses that feed the address set. A superseded sample (`-old` then
/// `+new` for one key at one time, as the stage emits it) leaves presence unchanged, so the
/// address set sees no bytes churn.
fn feed_conns(
    changes: Vec<StageUpdate<ConnKey, Bytes>>,
    conns: &mut InputSession<EventTime, ConnData, isize>,
    present: &mut InputSession<EventTime, IpAddr, isize>,
) {
    let mut changes = changes.into_iter().peekable();
    while let Some((key, bytes, time, diff)) = changes.next() {
        let superseded = diff < 0
            && changes
                .peek()
                .is_some_and(|(next, _, next_time, next_diff)| *next_diff > 0 && *next_time == time && *next == key);
        conns.update_at(conn_data(&key, bytes), time, diff);
        if superseded {
            let (key, bytes, time, diff) = changes.next().expect("peeked");
            conns.update_at(conn_data(&key, bytes), time, diff);
        } else {
            present.update_at(key.addr, time, diff);
        }
    }
}

fn conn_data(key: &ConnKey, bytes: Bytes) -> ConnData {
    ((key.upid, key.addr), ((key.port, key.role), (bytes.sent, bytes.recv)))
}

impl StageValue for ProcessInfo {
    fn check_order(_: &Self, _: &Self) -> Result<(), String> {
        Ok(())
    }
}

impl StageValue for ContainerInfo {
    fn check_order(_: &Self, _: &Self) -> Result<(), String> {
        Ok(())
    }
}

impl StageValue for Text {
    fn check_order(_: &Self, _: &Self) -> Result<(), String> {
        Ok(())
    }
}

/// One net-flow-graph job: by default on a timely worker of its own in the calling thread
/// (`Job::new`), or on one worker of a cluster (`Job::in_worker`, see `crate::cluster`).
///
/// Time model: the frontier trails the largest event time seen by `lateness`, or is the
/// sources' watermark ([`Job::advance_watermark`]) if that is further; a record older than
/// the frontier is processed at the frontier. Whenever the frontier has moved by
/// `progress_interval`, the stages emit the changes before it, the worker runs until the
/// dataflow has caught up, and the updates of every completed time are released, in release
/// order (by a hash of each record's content, `graph::release_order`), followed by a progress
/// mark; a long jump of the frontier is handed over in pieces
/// ([`JobConfig::max_updates_per_piece`], [`Job::jump_unfinished`]). The updates of each time
/// are a function of the input alone; where the marks fall depends on how the input arrived
/// (batches, polls, workers); on a cluster, at multiples of `progress_interval` (see
/// `crate::cluster`).
///
/// On a cluster every worker runs a `Job` on its share of the keys, and the outputs of all of
/// them are gathered on worker 0: only its `drain_into` yields updates.
pub struct Job<W: std::borrow::BorrowMut<Worker> = Worker> {
    config: JobConfig,
    worker: W,
    inputs: Inputs,
    probe: ProbeHandle<EventTime>,
    output: OutputBuffer,
    conns: Stage<ConnKey, Bytes>,
    procs: Stage<Upid, ProcessInfo>,
    names: Stage<(IpAddr, NameSource), Text>,
    containers: Stage<Text, ContainerInfo>,
    interner: Interner,
    /// Parameters in force at the input frontier.
    params: Params,
    /// Changes not yet applied, by time (at or after the input frontier).
    param_changes: Vec<(EventTime, Params)>,
    max_seen: Option<EventTime>,
    /// The sources' own watermark (for Kafka: the minimum over partitions), if they have one.
    watermark: EventTime,
    /// The dataflow's input frontier: every time before it is closed.
    input_frontier: EventTime,
    /// Where the jump of the frontier that ended a piece goes on to (see
    /// [`JobConfig::max_updates_per_piece`]).
    unfinished_jump: Option<EventTime>,
    /// Output updates of times not yet complete.
    held: Vec<(GraphRecord, EventTime, isize)>,
    released: Vec<Output>,
    /// Worker 0 releases the cluster's outputs; the others release nothing.
    releases: bool,
    stats: JobStats,
}

impl<W: std::borrow::BorrowMut<Worker>> std::fmt::Debug for Job<W> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Job")
            .field("params", &self.params)
            .field("input_frontier", &self.input_frontier)
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

impl Job<Worker> {
    /// Builds the dataflow on a worker of its own. Fails if the parameters do not validate.
    pub fn new(config: JobConfig) -> Result<Job, String> {
        let allocator = Allocator::Thread(Thread::default());
        let worker = Worker::new(WorkerConfig::default(), allocator, Some(Instant::now()));
        Job::in_worker(worker, config)
    }
}

impl<W: std::borrow::BorrowMut<Worker>> Job<W> {
    /// Builds the dataflow on `worker` (owned, or borrowed from a cluster's worker thread).
    /// Every worker of a cluster must build it, in the same order as its other dataflows.
    pub fn in_worker(mut worker: W, config: JobConfig) -> Result<Job<W>, String> {
        config.params.validate(config.max_window_ns)?;
        if config.progress_interval_ns == 0 {
            return Err("progress_interval: must be longer than zero".into());
        }
        if config.max_updates_per_piece == 0 {
            return Err("max_updates_per_piece: must be 1 or more".into());
        }
        if config.max_slice_events == 0 {
            return Err("max_slice_events: must be 1 or more".into());
        }
        let output = OutputBuffer::default();
        let (mut inputs, probe) = dataflow::build(worker.borrow_mut(), output.clone());
        // The parameters are one value each for the whole cluster: worker 0 holds them.
        let releases = worker.borrow_mut().index() == 0;
        if releases {
            inputs.ips.insert(config.params.ips.clone());
            inputs.group_by.insert(config.params.group_by);
        }
        Ok(Job {
            conns: Stage::new(Some(config.params.window_ns), config.max_window_ns),
            procs: Stage::new(None, config.max_window_ns),
            names: Stage::new(None, config.max_window_ns),
            containers: Stage::new(None, config.max_window_ns),
            interner: Interner::default(),
            params: config.params.clone(),
            config,
            worker,
            inputs,
            probe,
            output,
            param_changes: Vec::new(),
            max_seen: None,
            watermark: 0,
            input_frontier: 0,
            unfinished_jump: None,
            held: Vec::new(),
            released: Vec::new(),
            releases,
            stats: JobStats::default(),
        })
    }

    /// Feeds one record. The frontier (largest event time seen minus lateness, or the
    /// sources' watermark) may move, and completed times are computed; their outputs wait
    /// for [`Job::drain_into`].
    pub fn push(&mut self, record: Record) -> Result<Admission, Rejection> {
        self.stats.records += 1;
        let frontier = self.frontier();
        let original = record.time();
        let (time, admission) = if original < frontier {
            (frontier, Admission::Late { processed_at: frontier })
        } else {
            (original, Admission::OnTime)
        };
        // A late record is processed as if it had been stamped at the frontier, so ties
        // between records of one key at one time are broken on the same values everywhere.
        let mut record = record;
        record.set_time(time);
        let inserted = match record {
            Record::ConnStats(c) => {
                let key = ConnKey { upid: c.upid, addr: c.remote_addr, port: c.remote_port, role: c.trace_role };
                let bytes = Bytes { sent: c.bytes_sent, recv: c.bytes_recv };
                self.conns.insert(key, time, bytes)
            }
            Record::Process(p) => {
                let info = self.interner.process(&p);
                self.procs.insert(p.upid, time, info)
            }
            Record::Name(n) => {
                let name = self.interner.intern(&n.name);
                self.names.insert((n.addr, n.source), time, name)
            }
            Record::Container(c) if c.container.is_empty() => {
                Err("container record without a container id".to_string())
            }
            Record::Container(c) => {
                let id = self.interner.intern(&c.container);
                let info = self.interner.container(&c);
                self.containers.insert(id, time, info)
            }
            Record::Progress(_) => Ok(()),
        };
        if let Err(reason) = inserted {
            self.stats.rejected += 1;
            return Err(Rejection(reason));
        }
        if admission != Admission::OnTime {
            self.stats.late += 1;
        }
        self.max_seen = Some(self.max_seen.map_or(original, |m| m.max(original)));
        self.maybe_advance();
        Ok(admission)
    }

    /// Raises the sources' watermark: they promise nothing older than `watermark` will come.
    /// The frontier is the larger of this and (largest event time seen - lateness), so a
    /// source that keeps its watermark current completes times sooner than lateness alone.
    pub fn advance_watermark(&mut self, watermark: EventTime) {
        self.watermark = self.watermark.max(watermark);
        self.maybe_advance();
    }

    fn maybe_advance(&mut self) {
        if let Some(to) = self.unfinished_jump {
            // Its last piece waits to be drained: the jump goes on once it has been.
            if !self.released.is_empty() {
                return;
            }
            self.advance(to, Pieces::Allowed);
            if self.unfinished_jump.is_some() {
                return;
            }
        }
        let frontier = self.frontier();
        if frontier >= self.input_frontier.saturating_add(self.config.progress_interval_ns) {
            self.advance(frontier, Pieces::Allowed);
        }
    }

    /// How far the frontier trails the largest event time seen (ns).
    pub fn lateness_ns(&self) -> EventTime {
        self.config.lateness_ns
    }

    /// The worker the job runs on (a cluster steps it between polls of its input).
    pub fn worker(&mut self) -> &mut Worker {
        self.worker.borrow_mut()
    }

    /// The largest event time pushed so far.
    pub fn max_seen(&self) -> Option<EventTime> {
        self.max_seen
    }

    /// Changes the parameters from the current frontier on; returns that time.
    pub fn set_params(&mut self, params: Params) -> Result<EventTime, String> {
        params.validate(self.config.max_window_ns)?;
        let at = self.frontier();
        self.param_changes.push((at, params));
        Ok(at)
    }

    /// The parameters in force at the latest released time, or pending from the frontier on.
    pub fn params(&self) -> &Params {
        self.param_changes.last().map_or(&self.params, |(_, p)| p)
    }

    /// The current frontier: the largest event time seen minus lateness, or the sources'
    /// watermark if that is further (0 before either).
    pub fn frontier(&self) -> EventTime {
        self.max_seen
            .map_or(0, |m| m.saturating_sub(self.config.lateness_ns))
            .max(self.watermark)
            .max(self.input_frontier)
    }

    /// Moves the outputs released so far into `out`.
    pub fn drain_into(&mut self, out: &mut Vec<Output>) {
        // Into an empty `out`, the buffer itself is handed over (no copy). What comes back (the
        // caller's empty buffer) is dropped: a caller that clears and reuses its buffer would
        // otherwise pass the capacity of its largest release back and forth with the job,
        // holding it for good.
        append_or_swap(out, &mut self.released);
        self.released = Vec::new();
    }

    /// Completes every time up to and including the largest event time seen, so the last
    /// progress mark is that time + 1. Pending window expiries past it are not flushed.
    pub fn finish(&mut self) {
        if let Some(max_seen) = self.max_seen {
            self.finish_at(max_seen + 1);
        }
    }

    /// Completes every time before `end` (on a cluster: the largest event time any worker saw,
    /// + 1, so that every worker ends at the same mark).
    pub fn finish_at(&mut self, end: EventTime) {
        if let Some(to) = self.unfinished_jump {
            self.advance(to, Pieces::NotAllowed);
        }
        if end > self.input_frontier {
            self.advance(end, Pieces::NotAllowed);
        }
    }

    /// The time before which every time is computed and released. The frontier may be ahead
    /// of it by less than a progress interval, and further while a jump is unfinished (see
    /// [`JobConfig::max_updates_per_piece`]).
    pub fn completed(&self) -> EventTime {
        self.input_frontier
    }

    /// True while a jump of the frontier has ended a piece and goes on at the next call into
    /// the job, once its outputs have been drained.
    pub fn jump_unfinished(&self) -> bool {
        self.unfinished_jump.is_some()
    }

    /// What the job has seen so far.
    pub fn stats(&self) -> &JobStats {
        &self.stats
    }

    /// How the address is named at the input frontier, and what the alternatives are.
    /// On a cluster a worker sees only the names routed to it (by address).
    pub fn explain(&self, addr: IpAddr) -> NameExplanation {
        let addr = addr.to_canonical();
        let candidates: Vec<NameCandidate> = NameSource::ALL
            .iter()
            .filter_map(|&source| {
                let (since, name) = self.names.settled(&(addr, source))?;
                Some(NameCandidate { source, name: name.to_string(), since })
            })
            .collect();
        let winner = candidates.iter().find(|c| !c.name.is_empty());
        let (to_entity, decided_by) = if addr.is_loopback() {
            (String::new(), NamedBy::Loopback)
        } else if let Some(winner) = winner {
            (winner.name.clone(), NamedBy::Source(winner.source))
        } else {
            (addr.to_string(), NamedBy::Address)
        };
        NameExplanation { addr, at: self.input_frontier, to_entity, decided_by, candidates }
    }

    /// Connection keys the windowing stage tracks (live, or kept for a window change).
    pub fn tracked_connection_keys(&self) -> usize {
        self.conns.keys()
    }

    /// How much busy event time one pass through the dataflow covers: the progress interval,
    /// or [`MAX_COMPUTE_SLICE_NS`] if that is shorter.
    fn compute_slice_ns(&self) -> u64 {
        self.config.progress_interval_ns.min(MAX_COMPUTE_SLICE_NS)
    }

    /// Closes every time before `to`, computes them, and releases their outputs.
    ///
    /// The work goes through the dataflow in slices of at most [`Job::compute_slice_ns`] of
    /// busy event time and about [`JobConfig::max_slice_events`] connection events (this
    /// worker's), each released as soon as it is computed, so a long jump of the frontier
    /// (the end of a replay completes everything past the frontier at once) holds one
    /// slice's changes in the dataflow, not all of them. Their released outputs wait in
    /// `released` until the caller drains them. Only the last slice ends with a progress
    /// mark, so the slices do not show in the output; except where `pieces` allows a jump to
    /// end a piece early (see [`JobConfig::max_updates_per_piece`]), on worker 0, which alone
    /// releases: the others go on to `to`, waiting in the dataflow for worker 0's slices.
    fn advance(&mut self, to: EventTime, pieces: Pieces) {
        self.unfinished_jump = None;
        // Where the current piece ends, once it is full: see below.
        let mut piece_end = None;
        while self.input_frontier < to {
            // Skip stretches of time where nothing is staged: a slice starts at the next event.
            let next_event = [
                self.conns.next_event(),
                self.procs.next_event(),
                self.names.next_event(),
                self.containers.next_event(),
                // Set at the frontier, which only grows: in time order.
                self.param_changes.first().map(|(at, _)| *at).filter(|at| *at < to),
            ]
            .into_iter()
            .flatten()
            .min()
            .unwrap_or(to);
            let slice_end = to
                .min(self.input_frontier.max(next_event).saturating_add(self.compute_slice_ns()))
                .min(piece_end.unwrap_or(EventTime::MAX));
            let slice_end = self.conns.end_of_first(self.config.max_slice_events, slice_end).unwrap_or(slice_end);
            self.stats.slices += 1;
            while let Some(&(at, _)) = self.param_changes.first().filter(|(at, _)| *at < slice_end) {
                let (_, params) = self.param_changes.remove(0);
                self.stage_until(at);
                self.apply_params(at, params);
            }
            self.stage_until(slice_end);
            self.inputs.advance_to(slice_end);
            self.inputs.flush();
            while self.probe.less_than(&slice_end) {
                self.worker.borrow_mut().step();
            }
            self.input_frontier = slice_end;
            self.release_updates(slice_end);
            let may_end_a_piece = pieces == Pieces::Allowed && self.releases;
            if piece_end.is_none() && may_end_a_piece && self.released.len() >= self.config.max_updates_per_piece {
                // Full: the piece ends at the next multiple of the progress interval, where a
                // cluster's marks fall too (every worker completes the same times; only this
                // one, worker 0, stops there, and the others wait for it in the dataflow).
                let interval = self.config.progress_interval_ns;
                let at = slice_end.div_ceil(interval).saturating_mul(interval);
                piece_end = (at < to).then_some(at);
            }
            if piece_end == Some(slice_end) {
                // Every time before it is complete and released: a mark there is as true as
                // one at `to`.
                self.released.push(Output::Progress(slice_end));
                self.unfinished_jump = Some(to);
                return;
            }
        }
        if self.releases {
            self.released.push(Output::Progress(to));
        }
    }

    /// Moves every staged change before `to` into the dataflow's inputs.
    fn stage_until(&mut self, to: EventTime) {
        let mut conns = Vec::new();
        self.conns.advance(to, &mut conns);
        feed_conns(conns, &mut self.inputs.conns, &mut self.inputs.present);
        let mut procs = Vec::new();
        self.procs.advance(to, &mut procs);
        for (upid, process, time, diff) in procs {
            self.inputs.procs.update_at((upid, process), time, diff);
        }
        let mut names = Vec::new();
        self.names.advance(to, &mut names);
        for (key, name, time, diff) in names {
            self.inputs.names.update_at((key, name), time, diff);
        }
        let mut containers = Vec::new();
        self.containers.advance(to, &mut containers);
        for (id, info, time, diff) in containers {
            self.inputs.containers.update_at((id, info), time, diff);
        }
    }

    fn apply_params(&mut self, at: EventTime, params: Params) {
        if params.window_ns != self.params.window_ns {
            let mut conns = Vec::new();
            self.conns.set_window(params.window_ns, &mut conns);
            feed_conns(conns, &mut self.inputs.conns, &mut self.inputs.present);
        }
        if params.ips != self.params.ips {
            self.inputs.ips.update_at(self.params.ips.clone(), at, -1);
            self.inputs.ips.update_at(params.ips.clone(), at, 1);
        }
        if params.group_by != self.params.group_by {
            self.inputs.group_by.update_at(self.params.group_by, at, -1);
            self.inputs.group_by.update_at(params.group_by, at, 1);
        }
        self.params = params;
    }

    /// Releases the consolidated updates of every time before `upper`, in time order.
    fn release_updates(&mut self, upper: EventTime) {
        // Taken whole, so the dataflow's buffer does not keep the capacity of the largest slice.
        let mut computed = std::mem::take(&mut *self.output.borrow_mut());
        append_or_swap(&mut self.held, &mut computed);
        // The operators emit only at the times of their input, all before the slice's end, so
        // everything is usually due: take it whole rather than copy it out.
        let mut due = if self.held.iter().all(|(_, time, _)| *time < upper) {
            std::mem::take(&mut self.held)
        } else {
            let (due, later) = self.held.drain(..).partition(|(_, time, _)| *time < upper);
            self.held = later;
            due
        };
        // By (time, release order), so equal updates are adjacent and add up; then, in a time,
        // retractions first, then insertions, each in release order, so runs are identical.
        sort_for_release(&mut due);
        due.dedup_by(|(record, time, diff), (kept_record, kept_time, kept_diff)| {
            let same = time == kept_time && record == kept_record;
            if same {
                *kept_diff += *diff;
            }
            same
        });
        due.retain(|(_, _, diff)| *diff != 0);
        self.released.reserve(due.len());
        if due.iter().any(|(_, _, diff)| diff.unsigned_abs() > 1) {
            // Rare (a multiset row): by diff within a time, stably, each copy released alone.
            due.sort_by_key(|(_, time, diff)| (*time, *diff));
            for (record, time, diff) in due {
                let unit = diff.signum() as i64;
                for _ in 1..diff.unsigned_abs() {
                    self.released.push(Output::Update { time, diff: unit, record: record.clone() });
                }
                self.released.push(Output::Update { time, diff: unit, record });
            }
            return;
        }
        // Every diff is -1 or +1: a time's retractions go out as they come, its insertions
        // wait for the end of the time (a stable partition, linear, instead of a second sort).
        let mut insertions: Vec<Output> = Vec::new();
        let mut current = None;
        for (record, time, diff) in due {
            if current != Some(time) {
                self.released.append(&mut insertions);
                current = Some(time);
            }
            let update = Output::Update { time, diff: diff as i64, record };
            if diff < 0 {
                self.released.push(update);
            } else {
                insertions.push(update);
            }
        }
        self.released.append(&mut insertions);
    }
}

/// Whether a jump of the frontier may end a piece before it reaches its end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pieces {
    /// Yes, once the released outputs reach [`JobConfig::max_updates_per_piece`].
    Allowed,
    /// No: the caller needs everything up to the end now (the end of a stream).
    NotAllowed,
}

/// Sorts updates by time, then by [`release_order`], then by content and diff (where two
/// orders are equal: equal records, or a hash collision), comparing records only there.
fn sort_for_release(updates: &mut [(GraphRecord, EventTime, isize)]) {
    sort_by_key_then(
        updates,
        |(record, time, _)| (*time, release_order(record)),
        |(a, _, a_diff), (b, _, b_diff)| (a, a_diff).cmp(&(b, b_diff)),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_connection_stage_slot_is_88_bytes() {
        // docs/BENCHMARKS.md (items 18 and 19) counts on it; 96 before them.
        assert_eq!(crate::stage::slot_bytes::<ConnKey, Bytes>(), 88);
    }

    #[test]
    fn the_release_order_does_not_depend_on_arrival_and_keeps_equal_updates_adjacent() {
        use crate::graph::{Edge, Row};
        use rand::seq::SliceRandom;
        use rand::SeedableRng;
        let text = |s: &str| Text::from(s);
        let row = |entity: &str, pid: u32, sent: u64| {
            // IPv6 rows are the longest input to `release_order`.
            let remote_addr = if pid.is_multiple_of(2) { "10.0.0.7" } else { "fd00::7" };
            GraphRecord::Row(Row {
                from_entity: text(entity),
                upid: Upid { asid: 1, pid, start_ticks: 7 },
                cmdline: text("redis-server"),
                remote_addr: remote_addr.parse().unwrap(),
                to_entity: text("shop/redis"),
                bytes_sent: sent,
                bytes_recv: 0,
            })
        };
        let edge = |sent: u64| {
            let (from_entity, to_entity) = (text("shop/web"), text("shop/redis"));
            GraphRecord::Edge(Edge { from_entity, to_entity, bytes_sent: sent, bytes_recv: 0 })
        };
        let mut updates = Vec::new();
        for time in [20, 10] {
            for pid in 0..50 {
                updates.push((row("shop/web", pid, 100 + pid as u64), time, 1));
                updates.push((row("shop/web", pid, 90), time, -1));
            }
            // An edge whose row count changed but not its bytes: -e +e, which must meet.
            updates.push((edge(5), time, -1));
            updates.push((edge(5), time, 1));
        }
        let mut expected = updates.clone();
        sort_for_release(&mut expected);
        for seed in 0..20 {
            let mut shuffled = updates.clone();
            shuffled.shuffle(&mut rand_chacha::ChaCha8Rng::seed_from_u64(seed));
            sort_for_release(&mut shuffled);
            assert!(shuffled == expected, "the order depends on the arrival order (seed {seed})");
        }
        assert!(expected.is_sorted_by_key(|(record, time, _)| (*time, release_order(record))));
        let (first, second) = expected.split_at(expected.len() / 2);
        assert!(first.iter().all(|(_, time, _)| *time == 10) && second.iter().all(|(_, time, _)| *time == 20));
        for (record, time, _) in &expected {
            let copies = expected.iter().filter(|(r, t, _)| r == record && t == time).count();
            let mut run = expected.iter().skip_while(|(r, t, _)| !(r == record && t == time)).take(copies);
            assert!(run.all(|(r, t, _)| r == record && t == time), "equal updates are not adjacent");
        }
    }
}
