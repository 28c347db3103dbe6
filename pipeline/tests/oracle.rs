//! The job against an independent, from-scratch oracle.
//!
//! The oracle recomputes the whole graph at a time T straight from DESIGN.md's definition
//! (window filter, latest process and name at or before T, group-by-max, edges summed), with no
//! incrementality at all. The property test drives the job with random streams (several agents
//! with bounded disorder, late records, restarts, process and name changes, IPv4 and IPv6,
//! parameter changes mid-stream) and checks, at every completed time where anything can change,
//! that the deltas the job released add up to exactly the oracle's graph.
//!
//! Time rules the oracle applies (the job's contract):
//! * frontier = (largest event time pushed before this record, 0 if none) - lateness, saturating;
//! * a record older than the frontier is processed at the frontier (`Admission::Late`);
//! * `set_params` applies from the frontier at the call; the last call at or before T rules T.
//!
//! Naming rules (issue 5): per (address, source) the latest name at or before T; the first
//! source in `NameSource` order with a non-empty name wins; loopback peers are named after the
//! process's own entity. A process's empty Kubernetes fields are filled from the latest
//! container record for its container id, if that names a pod.

use flowgraph_pipeline::{Admission, Edge, GraphRecord, GroupBy, IpFilter, Job, JobConfig, Output, Params, Row};
use flowgraph_schema::{ConnStats, Container, EventTime, Name, NameSource, Process, Progress, Record, TraceRole, Upid};
use proptest::prelude::*;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt::Write as _;
use std::net::IpAddr;

const SEC: u64 = 1_000_000_000;
/// Generator time granularity: 100 ms, coarse enough that equal times happen often.
const UNIT: u64 = 100_000_000;
/// The longest window the streams ask for (`WINDOWS_S`): the job then forgets a key soon
/// after it expires (a key is kept for `max_window` for a window change), so streams also
/// check that forgetting a key and tracking it (or its process and address) again loses
/// nothing.
const MAX_WINDOW_NS: u64 = 60 * SEC;

// ---------------------------------------------------------------------------------------------
// Lateness rules
// ---------------------------------------------------------------------------------------------

/// The frontier as the contract defines it.
#[derive(Debug, Clone)]
struct Clock {
    lateness: u64,
    max_seen: Option<u64>,
}

impl Clock {
    fn new(lateness: u64) -> Self {
        Clock { lateness, max_seen: None }
    }

    fn frontier(&self) -> u64 {
        self.max_seen.unwrap_or(0).saturating_sub(self.lateness)
    }

    /// The time a record with event time `t` is processed at, given what was pushed before.
    fn processed_at(&self, t: u64) -> u64 {
        t.max(self.frontier())
    }

    fn observe(&mut self, t: u64) {
        self.max_seen = Some(self.max_seen.map_or(t, |m| m.max(t)));
    }
}

// ---------------------------------------------------------------------------------------------
// Scenario: a concrete stream of pushes and parameter changes, with expected processing times
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone)]
enum Step {
    /// Push `record` (its own time); the contract says it is processed at `eff`.
    Push { record: Record, eff: EventTime },
    /// `set_params(params)`; the contract says it applies from `at`.
    Set { params: Params, at: EventTime },
}

#[derive(Debug, Clone)]
struct Scenario {
    config: JobConfig,
    /// Subtracted from times in dumps, for readability.
    base: u64,
    steps: Vec<Step>,
}

/// Either a record or a parameter change, before processing times are known.
#[derive(Debug, Clone)]
enum Op {
    Push(Record),
    Set(Params),
}

impl Scenario {
    fn from_ops(config: JobConfig, base: u64, ops: Vec<Op>) -> Scenario {
        let mut clock = Clock::new(config.lateness_ns);
        let mut steps = Vec::new();
        for op in ops {
            match op {
                Op::Push(record) => {
                    let eff = clock.processed_at(record.time());
                    clock.observe(record.time());
                    steps.push(Step::Push { record, eff });
                }
                Op::Set(params) => steps.push(Step::Set { params, at: clock.frontier() }),
            }
        }
        Scenario { config, base, steps }
    }

    fn max_time(&self) -> Option<u64> {
        self.steps
            .iter()
            .filter_map(|s| match s {
                Step::Push { record, .. } => Some(record.time()),
                Step::Set { .. } => None,
            })
            .max()
    }

    fn rel(&self, t: u64) -> String {
        if t >= self.base {
            let d = t - self.base;
            format!("{}.{:03}s", d / SEC, (d % SEC) / 1_000_000)
        } else {
            format!("-{}ns", self.base - t)
        }
    }

    /// The stream, one step a line, times relative to `base`.
    fn dump(&self) -> String {
        let mut s = String::new();
        let p = &self.config.params;
        let _ = writeln!(
            s,
            "config: lateness {} ms, progress_interval {} ms, base {} ns, initial params ips={} window={}ms group_by={}",
            self.config.lateness_ns / 1_000_000,
            self.config.progress_interval_ns / 1_000_000,
            self.base,
            p.ips,
            p.window_ns / 1_000_000,
            p.group_by
        );
        for (i, step) in self.steps.iter().enumerate() {
            let line = match step {
                Step::Push { record, eff } => {
                    let at = if *eff != record.time() { format!(" LATE->{}", self.rel(*eff)) } else { String::new() };
                    let t = self.rel(record.time());
                    match record {
                        Record::ConnStats(c) => format!(
                            "conn    t={t}{at} upid={} addr={} port={} role={:?} sent={} recv={}",
                            c.upid, c.remote_addr, c.remote_port, c.trace_role, c.bytes_sent,
                            c.bytes_recv
                        ),
                        Record::Process(p) => format!(
                            "process t={t}{at} upid={} cmdline={:?} pod={:?} service={:?} ns={:?} node={:?} container={:?} host={:?}",
                            p.upid, p.cmdline, p.pod, p.service, p.namespace, p.node, p.container,
                            p.host
                        ),
                        Record::Name(n) => format!(
                            "name    t={t}{at} addr={} name={:?} source={}",
                            n.addr, n.name, n.source
                        ),
                        Record::Container(c) => format!(
                            "container t={t}{at} id={} pod={:?} service={:?} ns={:?} node={:?}",
                            c.container, c.pod, c.service, c.namespace, c.node
                        ),
                        Record::Progress(p) => {
                            format!("progress t={t}{at} source={:?}", p.source)
                        }
                    }
                }
                Step::Set { params, at } => format!(
                    "set_params at={} ips={} window={}ms group_by={}",
                    self.rel(*at),
                    params.ips,
                    params.window_ns / 1_000_000,
                    params.group_by
                ),
            };
            let _ = writeln!(s, "{i:4}: {line}");
        }
        s
    }
}

// ---------------------------------------------------------------------------------------------
// The oracle
// ---------------------------------------------------------------------------------------------

type State = BTreeMap<GraphRecord, i64>;

#[derive(Debug, Clone)]
struct Oracle {
    /// Samples, `time_` set to the time they are processed at.
    conns: Vec<ConnStats>,
    /// Process records per upid, `time_` set to the processing time.
    procs: HashMap<Upid, Vec<Process>>,
    /// Name records per address, `time_` set to the processing time.
    names: HashMap<IpAddr, Vec<Name>>,
    /// Container records per container id, `time_` set to the processing time.
    containers: HashMap<String, Vec<Container>>,
    /// Parameter changes in call order, starting with the initial ones at 0.
    params: Vec<(EventTime, Params)>,
}

impl Oracle {
    fn new(scenario: &Scenario) -> Oracle {
        let mut oracle = Oracle {
            conns: Vec::new(),
            procs: HashMap::new(),
            names: HashMap::new(),
            containers: HashMap::new(),
            params: vec![(0, scenario.config.params.clone())],
        };
        for step in &scenario.steps {
            match step {
                Step::Push { record, eff } => {
                    let mut record = record.clone();
                    record.set_time(*eff);
                    match record {
                        Record::ConnStats(c) => oracle.conns.push(c),
                        Record::Process(p) => oracle.procs.entry(p.upid).or_default().push(*p),
                        Record::Name(n) => oracle.names.entry(n.addr).or_default().push(n),
                        Record::Container(c) => oracle.containers.entry(c.container.clone()).or_default().push(*c),
                        Record::Progress(_) => {}
                    }
                }
                Step::Set { params, at } => oracle.params.push((*at, params.clone())),
            }
        }
        oracle
    }

    /// The parameters in force at `t`: the last change applied at or before it.
    fn params_at(&self, t: EventTime) -> &Params {
        let (_, p) = self.params.iter().rev().find(|(at, _)| *at <= t).expect("initial params apply from 0");
        p
    }

    /// The latest process record for `upid` at or before `t`; equal times: greatest record.
    fn process_at(&self, upid: &Upid, t: EventTime) -> Option<&Process> {
        self.procs.get(upid)?.iter().filter(|p| p.time_ <= t).max_by(|a, b| (a.time_, *a).cmp(&(b.time_, *b)))
    }

    /// The process as the graph sees it at `t`: its latest record, with empty Kubernetes
    /// fields filled from its container's latest record when that names a pod.
    fn entity_process_at(&self, upid: &Upid, t: EventTime) -> Option<Process> {
        let mut process = self.process_at(upid, t)?.clone();
        let container = self
            .containers
            .get(&process.container)
            .and_then(|records| {
                records.iter().filter(|c| c.time_ <= t).max_by(|a, b| (a.time_, *a).cmp(&(b.time_, *b)))
            })
            .filter(|c| !c.pod.is_empty());
        if let Some(c) = container {
            for (own, theirs) in [
                (&mut process.pod, &c.pod),
                (&mut process.service, &c.service),
                (&mut process.namespace, &c.namespace),
                (&mut process.node, &c.node),
            ] {
                if own.is_empty() {
                    own.clone_from(theirs);
                }
            }
        }
        Some(process)
    }

    /// The name for `addr` at `t`: per source the latest at or before `t` (equal times:
    /// greatest name), then the first source in precedence order whose name is not empty.
    fn name_at(&self, addr: &IpAddr, t: EventTime) -> Option<&str> {
        let names = self.names.get(addr)?;
        NameSource::ALL.iter().find_map(|source| {
            names
                .iter()
                .filter(|n| n.time_ <= t && n.source == *source)
                .max_by(|a, b| (a.time_, &a.name).cmp(&(b.time_, &b.name)))
                .map(|n| n.name.as_str())
                .filter(|name| !name.is_empty())
        })
    }

    /// The whole graph at `t`, rows and edges, each with multiplicity 1.
    fn graph_at(&self, t: EventTime) -> State {
        let params = self.params_at(t);
        let window = params.window_ns;
        // 1-3: samples in (t - window, t], filtered, grouped by (from, upid, cmdline, addr).
        let mut groups: BTreeMap<(String, Upid, String, IpAddr), (u64, u64)> = BTreeMap::new();
        let keeps = oracle_filter(&params.ips);
        for c in &self.conns {
            // t - window < time_ <= t, in exact arithmetic (no wrap-around below 0).
            let in_window = c.time_ <= t && u128::from(c.time_) + u128::from(window) > u128::from(t);
            if !in_window || !keeps(&c.remote_addr) {
                continue;
            }
            let (from, cmdline) = match self.entity_process_at(&c.upid, t) {
                Some(p) => (oracle_entity(params.group_by, &p).to_string(), p.cmdline.clone()),
                None => (String::new(), String::new()),
            };
            let g = groups.entry((from, c.upid, cmdline, c.remote_addr)).or_insert((0, 0));
            g.0 = g.0.max(c.bytes_sent);
            g.1 = g.1.max(c.bytes_recv);
        }
        // 4-6: drop unknown entities, name the peer, sum edges.
        let mut state = State::new();
        let mut edges: BTreeMap<(String, String), (u64, u64)> = BTreeMap::new();
        for ((from_entity, upid, cmdline, remote_addr), (sent, recv)) in groups {
            if from_entity.is_empty() {
                continue;
            }
            let to_entity = if remote_addr.is_loopback() {
                from_entity.clone()
            } else {
                self.name_at(&remote_addr, t).map_or_else(|| remote_addr.to_string(), str::to_string)
            };
            let e = edges.entry((from_entity.clone(), to_entity.clone())).or_insert((0, 0));
            e.0 += sent;
            e.1 += recv;
            state.insert(
                GraphRecord::Row(Row {
                    from_entity: from_entity.into(),
                    upid,
                    cmdline: cmdline.into(),
                    remote_addr,
                    to_entity: to_entity.into(),
                    bytes_sent: sent,
                    bytes_recv: recv,
                }),
                1,
            );
        }
        for ((from_entity, to_entity), (bytes_sent, bytes_recv)) in edges {
            state.insert(
                GraphRecord::Edge(Edge {
                    from_entity: from_entity.into(),
                    to_entity: to_entity.into(),
                    bytes_sent,
                    bytes_recv,
                }),
                1,
            );
        }
        state
    }

    /// Every time at which the graph can differ from the time just before: a record's
    /// processing time, a sample's expiry under any window ever in force, a parameter change.
    fn change_points(&self) -> BTreeSet<EventTime> {
        let windows: BTreeSet<u64> = self.params.iter().map(|(_, p)| p.window_ns).collect();
        let mut points = BTreeSet::new();
        for c in &self.conns {
            points.insert(c.time_);
            for w in &windows {
                points.insert(c.time_.saturating_add(*w));
            }
        }
        points.extend(self.procs.values().flatten().map(|p| p.time_));
        points.extend(self.names.values().flatten().map(|n| n.time_));
        points.extend(self.containers.values().flatten().map(|c| c.time_));
        points.extend(self.params.iter().map(|(at, _)| *at));
        points
    }

    /// The deltas a perfect job would release up to and including `last`, consolidated.
    fn deltas_through(&self, last: EventTime) -> BTreeMap<(EventTime, GraphRecord), i64> {
        let mut out = BTreeMap::new();
        let mut prev = State::new();
        for t in self.change_points().into_iter().filter(|t| *t <= last) {
            let now = self.graph_at(t);
            for (r, d) in diff_states(&prev, &now) {
                out.insert((t, r), d);
            }
            prev = now;
        }
        out
    }
}

/// now - prev, as (record, diff) with diff != 0.
fn diff_states(prev: &State, now: &State) -> Vec<(GraphRecord, i64)> {
    let mut d: BTreeMap<GraphRecord, i64> = BTreeMap::new();
    for (r, m) in prev {
        *d.entry(r.clone()).or_default() -= m;
    }
    for (r, m) in now {
        *d.entry(r.clone()).or_default() += m;
    }
    d.into_iter().filter(|(_, m)| *m != 0).collect()
}

// ---------------------------------------------------------------------------------------------
// The checker: accumulates the job's outputs and compares with the oracle at completed times
// ---------------------------------------------------------------------------------------------

struct Checker<'a> {
    scenario: &'a Scenario,
    oracle: &'a Oracle,
    change_points: BTreeSet<EventTime>,
    /// Updates not yet folded into `state`, in output order.
    pending: Vec<(EventTime, i64, GraphRecord)>,
    /// All updates with time <= `checked_through`.
    state: State,
    /// Every time <= this has been checked.
    checked_through: Option<EventTime>,
    last_progress: Option<EventTime>,
    update_times: BTreeSet<EventTime>,
    /// Number of (time) checks done, for the record.
    checks: usize,
}

impl<'a> Checker<'a> {
    fn new(scenario: &'a Scenario, oracle: &'a Oracle) -> Self {
        Checker {
            scenario,
            oracle,
            change_points: oracle.change_points(),
            pending: Vec::new(),
            state: State::new(),
            checked_through: None,
            last_progress: None,
            update_times: BTreeSet::new(),
            checks: 0,
        }
    }

    /// One output, in order. `frontier` is the contract's frontier when it was drained (None
    /// after `finish`): a progress mark may not pass it.
    fn feed(&mut self, output: Output, frontier: Option<EventTime>) -> Result<(), String> {
        let rel = |t| self.scenario.rel(t);
        match output {
            Output::Update { time, diff, record } => {
                if let Some(p) = self.last_progress {
                    if time < p {
                        return Err(format!(
                            "update at {} ({diff:+} {record:?}) output after progress mark {}",
                            rel(time),
                            rel(p)
                        ));
                    }
                }
                if diff != 1 && diff != -1 {
                    return Err(format!("update at {} has diff {diff}, not +1 or -1: {record:?}", rel(time)));
                }
                self.update_times.insert(time);
                self.pending.push((time, diff, record));
            }
            Output::Progress(p) => {
                if let Some(last) = self.last_progress {
                    if p < last {
                        return Err(format!("progress mark {} after a later mark {}", rel(p), rel(last)));
                    }
                }
                if let Some(f) = frontier {
                    if p > f {
                        return Err(format!("progress mark {} passes the frontier {} before finish()", rel(p), rel(f)));
                    }
                }
                // Updates are released only once their time is complete.
                if let Some((t, d, r)) = self.pending.iter().find(|(t, _, _)| *t >= p) {
                    return Err(format!(
                        "update at {} ({d:+} {r:?}) was output before its time was complete (next progress mark {})",
                        rel(*t),
                        rel(p)
                    ));
                }
                self.last_progress = Some(p);
                if p > 0 {
                    self.check_through(p - 1)?;
                }
            }
        }
        Ok(())
    }

    /// Checks every time in (checked_through, last] where the graph or the updates can change,
    /// and `last` itself.
    fn check_through(&mut self, last: EventTime) -> Result<(), String> {
        let lo = self.checked_through.map_or(0, |c| c + 1);
        if self.checked_through.is_some_and(|c| c >= last) {
            return Ok(());
        }
        let mut times: BTreeSet<EventTime> = self.change_points.range(lo..=last).copied().collect();
        times.extend(self.update_times.range(lo..=last).copied());
        times.insert(last);
        self.pending.sort_by_key(|(t, _, _)| *t); // stable: keeps output order within a time
        for t in times {
            let split = self.pending.partition_point(|(pt, _, _)| *pt <= t);
            for (_, d, r) in self.pending.drain(..split) {
                let m = self.state.entry(r.clone()).or_default();
                *m += d;
                if *m == 0 {
                    self.state.remove(&r);
                }
            }
            let want = self.oracle.graph_at(t);
            self.checks += 1;
            if self.state != want {
                return Err(self.mismatch(t, &want));
            }
        }
        self.checked_through = Some(last);
        Ok(())
    }

    fn mismatch(&self, t: EventTime, want: &State) -> String {
        let p = self.oracle.params_at(t);
        let mut s = format!(
            "graph at {} ({} ns) differs from the oracle (params ips={} window={}ms group_by={})\n",
            self.scenario.rel(t),
            t,
            p.ips,
            p.window_ns / 1_000_000,
            p.group_by
        );
        for (r, m) in &self.state {
            if want.get(r) != Some(m) {
                let _ = writeln!(s, "  job has (x{m}), oracle has not: {r:?}");
            }
        }
        for r in want.keys() {
            if !self.state.contains_key(r) {
                let _ = writeln!(s, "  oracle has, job has not:     {r:?}");
            }
        }
        s
    }

    /// After `finish()`: the last mark is the largest event time + 1 and nothing follows it.
    fn finish(&mut self) -> Result<(), String> {
        if let Some((t, d, r)) = self.pending.first() {
            return Err(format!("update at {} ({d:+} {r:?}) after the last progress mark", self.scenario.rel(*t)));
        }
        if let Some(max) = self.scenario.max_time() {
            if self.last_progress != Some(max + 1) {
                return Err(format!(
                    "last progress mark after finish() is {:?}, want largest event time + 1 = {} ({} ns)",
                    self.last_progress.map(|p| self.scenario.rel(p)),
                    self.scenario.rel(max + 1),
                    max + 1
                ));
            }
        }
        Ok(())
    }
}

/// Runs the job on the scenario and checks everything against the oracle.
fn run_case(scenario: &Scenario) -> Result<usize, String> {
    let oracle = Oracle::new(scenario);
    let mut checker = Checker::new(scenario, &oracle);
    let mut job = Job::new(scenario.config.clone()).map_err(|e| format!("Job::new: {e}"))?;
    let mut clock = Clock::new(scenario.config.lateness_ns);
    let mut out = Vec::new();
    let (mut records, mut late) = (0u64, 0u64);
    for (i, step) in scenario.steps.iter().enumerate() {
        match step {
            Step::Push { record, eff } => {
                let want = if *eff > record.time() {
                    late += 1;
                    Admission::Late { processed_at: *eff }
                } else {
                    Admission::OnTime
                };
                records += 1;
                let got = job.push(record.clone()).map_err(|e| format!("step {i}: push rejected: {e}"))?;
                if got != want {
                    return Err(format!("step {i}: admission {got:?}, want {want:?}"));
                }
                clock.observe(record.time());
                if job.frontier() != clock.frontier() {
                    return Err(format!(
                        "step {i}: frontier {} ({} ns), want {} ({} ns)",
                        scenario.rel(job.frontier()),
                        job.frontier(),
                        scenario.rel(clock.frontier()),
                        clock.frontier()
                    ));
                }
            }
            Step::Set { params, at } => {
                let got = job.set_params(params.clone()).map_err(|e| format!("step {i}: set_params failed: {e}"))?;
                if got != *at {
                    return Err(format!(
                        "step {i}: set_params applies at {}, want the frontier {}",
                        scenario.rel(got),
                        scenario.rel(*at)
                    ));
                }
            }
        }
        job.drain_into(&mut out);
        for o in out.drain(..) {
            checker.feed(o, Some(clock.frontier())).map_err(|e| format!("after step {i}: {e}"))?;
        }
    }
    job.finish();
    job.drain_into(&mut out);
    for o in out.drain(..) {
        checker.feed(o, None).map_err(|e| format!("after finish(): {e}"))?;
    }
    checker.finish()?;
    let stats = job.stats().clone();
    if stats.rejected != 0 || stats.late != late || stats.records != records {
        return Err(format!("stats {stats:?}, want records {records}, late {late}, rejected 0"));
    }
    Ok(checker.checks)
}

// ---------------------------------------------------------------------------------------------
// Random streams
// ---------------------------------------------------------------------------------------------

const SLOTS: usize = 6;
const ADDRS: [&str; 10] = [
    "127.0.0.1", "::1", "10.0.0.1", "10.0.0.2", "10.1.2.3", "192.168.1.5", "8.8.8.8", "2001:db8::1", "2001:db8::2",
    "fd00::5",
];
/// The oracle's own reading of a filter: which addresses it keeps. It reads the filter's text
/// as this test wrote it (one of FILTERS; `IpFilter` only says which) with ipnet, so neither a
/// broken `IpFilter::matches` nor a broken `IpFilter::parse_list` can agree with itself. An
/// empty list keeps every address. Read once per graph, not per sample.
fn oracle_filter(filter: &IpFilter) -> impl Fn(&IpAddr) -> bool {
    let text = if *filter == IpFilter::all() {
        ""
    } else {
        FILTERS.iter().find(|text| IpFilter::parse_list(text).as_ref() == Ok(filter)).expect("a filter from FILTERS")
    };
    let nets: Vec<ipnet::IpNet> = text
        .split(',')
        .map(str::trim)
        .filter(|item| !item.is_empty())
        .map(|item| match item.parse::<ipnet::IpNet>() {
            Ok(net) => net,
            Err(_) => ipnet::IpNet::from(item.parse::<IpAddr>().expect("a filter item is a network or an address")),
        })
        .collect();
    move |addr| nets.is_empty() || nets.iter().any(|net| net.contains(addr))
}

/// The process field a grouping names, written here from DESIGN.md rather than taken from the
/// pipeline (`process` groups by cmdline).
fn oracle_entity(group_by: GroupBy, p: &Process) -> &str {
    match group_by.to_string().as_str() {
        "pod" => &p.pod,
        "service" => &p.service,
        "namespace" => &p.namespace,
        "node" => &p.node,
        "container" => &p.container,
        "host" => &p.host,
        "process" => &p.cmdline,
        other => panic!("the oracle does not know grouping {other}"),
    }
}

const FILTERS: [&str; 6] = [
    "",
    "10.0.0.0/8",
    "2001:db8::/32",
    "10.0.0.1,2001:db8::2",
    "192.168.0.0/16,fd00::/8,8.8.8.8",
    "10.0.0.2/32,10.1.0.0/16,2001:db8::1/128",
];
const WINDOWS_S: [u64; 5] = [3, 5, 10, 30, 60];
const LATENESS_S: [u64; 3] = [4, 6, 10];
const PORTS: [u16; 3] = [0, 6379, 443];
const ROLES: [TraceRole; 3] = [TraceRole::Unknown, TraceRole::Client, TraceRole::Server];

/// Stream-wide choices.
#[derive(Debug, Clone)]
struct Knobs {
    agents: u8,
    /// Per agent: how far behind the global clock its records are (units).
    offsets: [u8; 4],
    lateness: u8,
    /// Start near the epoch (0) or at a realistic wall-clock time.
    realistic_base: bool,
    initial: (u8, u8, u8),
    /// The job's `max_updates_per_piece`: small ones make every jump of the frontier end
    /// pieces, each with its own mark, which the checker holds to the oracle too.
    max_updates_per_piece: usize,
    /// The job's `max_slice_events`: small ones cut the dataflow's passes at most times.
    max_slice_events: usize,
}

/// One abstract event; `realize` turns it into a concrete, contract-respecting record.
/// `dt` advances the global clock (units of 100 ms); `late` makes the record older than the
/// frontier.
#[derive(Debug, Clone)]
enum AOp {
    Sample {
        dt: u8,
        slot: u8,
        addr: u8,
        port: u8,
        role: u8,
        inc_sent: u16,
        inc_recv: u16,
        frac: u8,
        jitter: u8,
        late: bool,
    },
    Proc {
        dt: u8,
        slot: u8,
        variant: u8,
        jitter: u8,
        late: bool,
    },
    Restart {
        dt: u8,
        slot: u8,
        announce: bool,
    },
    Name {
        dt: u8,
        addr: u8,
        variant: u8,
        source: u8,
        late: bool,
    },
    Container {
        dt: u8,
        slot: u8,
        variant: u8,
        pod: u8,
        late: bool,
    },
    Progress {
        dt: u8,
        agent: u8,
    },
    SetParams {
        ips: u8,
        window: u8,
        group_by: u8,
    },
}

fn knobs() -> impl Strategy<Value = Knobs> {
    let pieces = prop_oneof![Just(1), Just(4), Just(JobConfig::default().max_updates_per_piece)];
    let slice_events = prop_oneof![Just(1), Just(3), Just(JobConfig::default().max_slice_events)];
    (
        1u8..=4,
        [0u8..=30, 0u8..=30, 0u8..=30, 0u8..=30],
        0u8..3,
        any::<bool>(),
        (0u8..6, 0u8..5, 0u8..7),
        pieces,
        slice_events,
    )
        .prop_map(
            |(agents, offsets, lateness, realistic_base, initial, max_updates_per_piece, max_slice_events)| Knobs {
                agents,
                offsets,
                lateness,
                realistic_base,
                initial,
                max_updates_per_piece,
                max_slice_events,
            },
        )
}

fn aop() -> impl Strategy<Value = AOp> {
    let dt = || 0u8..=20;
    prop_oneof![
        14 => (
            dt(),
            0u8..SLOTS as u8,
            0u8..ADDRS.len() as u8,
            0u8..3,
            0u8..3,
            prop_oneof![Just(0u16), 1u16..5000],
            prop_oneof![Just(0u16), 1u16..5000],
            any::<u8>(),
            0u8..=5,
            proptest::bool::weighted(0.04),
        )
            .prop_map(
                |(dt, slot, addr, port, role, inc_sent, inc_recv, frac, jitter, late)| {
                    AOp::Sample {
                        dt,
                        slot,
                        addr,
                        port,
                        role,
                        inc_sent,
                        inc_recv,
                        frac,
                        jitter,
                        late,
                    }
                }
            ),
        2 => (dt(), 0u8..SLOTS as u8, 0u8..8, 0u8..=5, proptest::bool::weighted(0.1)).prop_map(
            |(dt, slot, variant, jitter, late)| AOp::Proc {
                dt,
                slot,
                variant,
                jitter,
                late
            }
        ),
        1 => (dt(), 0u8..SLOTS as u8, any::<bool>())
            .prop_map(|(dt, slot, announce)| AOp::Restart { dt, slot, announce }),
        2 => (dt(), 0u8..ADDRS.len() as u8, 0u8..7, 0u8..4, proptest::bool::weighted(0.1))
            .prop_map(|(dt, addr, variant, source, late)| AOp::Name {
                dt,
                addr,
                variant,
                source,
                late
            }),
        1 => (dt(), 0u8..SLOTS as u8, 0u8..4, 0u8..4, proptest::bool::weighted(0.1))
            .prop_map(|(dt, slot, variant, pod, late)| AOp::Container {
                dt,
                slot,
                variant,
                pod,
                late
            }),
        2 => (dt(), 0u8..4).prop_map(|(dt, agent)| AOp::Progress { dt, agent }),
        1 => (0u8..FILTERS.len() as u8, 0u8..WINDOWS_S.len() as u8, 0u8..7).prop_map(
            |(ips, window, group_by)| AOp::SetParams {
                ips,
                window,
                group_by
            }
        ),
    ]
}

fn params(ips: u8, window: u8, group_by: u8) -> Params {
    Params {
        ips: IpFilter::parse_list(FILTERS[ips as usize]).expect("valid filter"),
        window_ns: WINDOWS_S[window as usize] * SEC,
        group_by: GroupBy::ALL[group_by as usize],
    }
}

fn addr(i: u8) -> IpAddr {
    ADDRS[i as usize].parse().expect("valid address")
}

/// A process description; several slots share services, some fields are empty.
fn describe(time: u64, upid: Upid, slot: u8, variant: u8) -> Process {
    let ns = format!("ns{}", slot % 2);
    Process {
        time_: time,
        upid,
        cmdline: if variant == 6 { String::new() } else { format!("/usr/bin/app{slot} --mode={}", variant % 3) },
        comm: format!("app{slot}"),
        container: if variant.is_multiple_of(2) { format!("ctr-{slot}-{variant}") } else { String::new() },
        host: format!("host-{}", upid.asid),
        // Even variants run in a container; some of those leave their Kubernetes fields to
        // the container's metadata record.
        pod: if variant % 4 == 3 || variant == 2 { String::new() } else { format!("{ns}/pod-{slot}-{variant}") },
        service: match variant % 3 {
            0 => String::new(),
            v => format!("{ns}/svc-{v}"),
        },
        namespace: if variant % 5 == 4 { String::new() } else { ns },
        node: if variant == 7 || variant == 6 { String::new() } else { format!("node-{}", upid.asid) },
    }
}

fn name_of(addr: u8, variant: u8) -> String {
    if variant == 6 {
        return String::new(); // the source withdraws its name
    }
    match variant % 3 {
        0 => format!("svc-{addr}"),
        1 => format!("svc-{addr}.v{variant}"),
        _ => "shared-name".to_string(), // two addresses can share a name
    }
}

type ConnKey = (Upid, IpAddr, u16, TraceRole);

/// Turns abstract events into a concrete stream. Counters stay monotone per connection key in
/// processing-time order: a sample processed at e gets a value between the largest value
/// processed at or before e and the smallest processed after e.
fn realize(knobs: &Knobs, ops: &[AOp]) -> Scenario {
    let base = if knobs.realistic_base { 1_700_000_000 * SEC } else { 0 };
    let lateness = LATENESS_S[knobs.lateness as usize] * SEC;
    let config = JobConfig {
        params: params(knobs.initial.0, knobs.initial.1, knobs.initial.2),
        lateness_ns: lateness,
        progress_interval_ns: SEC,
        max_window_ns: MAX_WINDOW_NS,
        max_updates_per_piece: knobs.max_updates_per_piece,
        max_slice_events: knobs.max_slice_events,
    };
    let agents = u32::from(knobs.agents.max(1));
    let mut clock = Clock::new(lateness);
    let mut g = base; // global clock
    let mut generation = [0u64; SLOTS];
    let mut variant: [Option<u8>; SLOTS] = [None; SLOTS];
    let mut counters: HashMap<ConnKey, Vec<(u64, u64, u64)>> = HashMap::new();
    let mut out = Vec::new();

    let upid_of = |slot: u8, generation: &[u64; SLOTS]| Upid {
        asid: u32::from(slot) % agents,
        pid: 1000 + u32::from(slot),
        start_ticks: 5000 + 17 * generation[slot as usize],
    };
    let agent_time = |g: u64, agent: u32, jitter: u8| {
        g.saturating_sub((u64::from(knobs.offsets[agent as usize]) + u64::from(jitter)) * UNIT)
    };
    let late_time = |clock: &Clock, jitter: u8| clock.frontier().saturating_sub((1 + 4 * u64::from(jitter)) * UNIT);

    for op in ops {
        let dt = match op {
            AOp::Sample { dt, .. }
            | AOp::Proc { dt, .. }
            | AOp::Restart { dt, .. }
            | AOp::Name { dt, .. }
            | AOp::Container { dt, .. }
            | AOp::Progress { dt, .. } => *dt,
            AOp::SetParams { .. } => 0,
        };
        g += u64::from(dt) * UNIT;
        let record = match *op {
            AOp::Sample { slot, addr: a, port, role, inc_sent, inc_recv, frac, jitter, late, .. } => {
                let upid = upid_of(slot, &generation);
                let t = if late { late_time(&clock, jitter) } else { agent_time(g, upid.asid, jitter) };
                let e = clock.processed_at(t);
                let key = (upid, addr(a), PORTS[port as usize], ROLES[role as usize]);
                let samples = counters.entry(key).or_default();
                let pick = |field: fn(&(u64, u64, u64)) -> u64, inc: u16| {
                    let lo = samples.iter().filter(|s| s.0 <= e).map(field).max().unwrap_or(0);
                    let hi = samples.iter().filter(|s| s.0 > e).map(field).min();
                    match hi {
                        None => lo + u64::from(inc),
                        Some(hi) => lo + (hi - lo) * u64::from(frac) / 255,
                    }
                };
                let sent = pick(|s| s.1, inc_sent);
                let recv = pick(|s| s.2, inc_recv);
                samples.push((e, sent, recv));
                Some(Record::ConnStats(ConnStats {
                    time_: t,
                    upid,
                    remote_addr: key.1,
                    remote_port: key.2,
                    trace_role: key.3,
                    conn_open: 1,
                    conn_close: 0,
                    conn_active: 1,
                    bytes_sent: sent,
                    bytes_recv: recv,
                }))
            }
            AOp::Proc { slot, variant: v, jitter, late, .. } => {
                let upid = upid_of(slot, &generation);
                variant[slot as usize] = Some(v);
                let t = if late { late_time(&clock, jitter) } else { agent_time(g, upid.asid, jitter) };
                Some(Record::Process(Box::new(describe(t, upid, slot, v))))
            }
            AOp::Restart { slot, announce, .. } => {
                generation[slot as usize] += 1;
                let upid = upid_of(slot, &generation);
                match (announce, variant[slot as usize]) {
                    (true, Some(v)) => {
                        Some(Record::Process(Box::new(describe(agent_time(g, upid.asid, 0), upid, slot, v))))
                    }
                    _ => None,
                }
            }
            AOp::Name { addr: a, variant: v, source, late, .. } => {
                let t = if late { late_time(&clock, v) } else { g };
                Some(Record::Name(Name {
                    time_: t,
                    addr: addr(a),
                    name: name_of(a, v),
                    source: NameSource::ALL[source as usize],
                }))
            }
            AOp::Container { slot, variant: v, pod, late, .. } => {
                let t = if late { late_time(&clock, v) } else { g };
                // Container ids as `describe` makes them (even variants); pod 0 withdraws.
                let ns = format!("kns{}", pod % 2);
                Some(Record::Container(Box::new(Container {
                    time_: t,
                    container: format!("ctr-{slot}-{}", 2 * v),
                    pod: if pod == 0 { String::new() } else { format!("{ns}/kpod-{slot}-{pod}") },
                    service: match pod {
                        0 | 1 => String::new(),
                        2 => format!("{ns}/ksvc"),
                        _ => format!("{ns}/ksvc,{ns}/ksvc-canary"),
                    },
                    namespace: if pod == 0 { String::new() } else { ns },
                    node: format!("knode-{}", pod % 2),
                })))
            }
            AOp::Progress { agent, .. } => {
                let agent = u32::from(agent) % agents;
                Some(Record::Progress(Progress {
                    time_: agent_time(g, agent, 5),
                    source: format!("agent-{agent}"),
                    losses: Default::default(),
                }))
            }
            AOp::SetParams { ips, window, group_by } => {
                out.push(Step::Set { params: params(ips, window, group_by), at: clock.frontier() });
                None
            }
        };
        if let Some(record) = record {
            let eff = clock.processed_at(record.time());
            clock.observe(record.time());
            out.push(Step::Push { record, eff });
        }
    }
    Scenario { config, base, steps: out }
}

/// Samples of one key never decrease in processing-time order (checks the generator).
fn assert_monotone(scenario: &Scenario) {
    let mut by_key: HashMap<ConnKey, Vec<(u64, u64, u64)>> = HashMap::new();
    for step in &scenario.steps {
        if let Step::Push { record: Record::ConnStats(c), eff } = step {
            by_key
                .entry((c.upid, c.remote_addr, c.remote_port, c.trace_role))
                .or_default()
                .push((*eff, c.bytes_sent, c.bytes_recv));
        }
    }
    for samples in by_key.values() {
        for a in samples {
            for b in samples {
                if a.0 < b.0 {
                    assert!(a.1 <= b.1 && a.2 <= b.2, "generator broke monotonicity");
                }
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 256,
        failure_persistence: None,
        max_shrink_iters: 100_000,
        // Shrinking a real failure may take up to 5 minutes; scripts/mutants sets less.
        max_shrink_time: std::env::var("FLOWGRAPH_MAX_SHRINK_MS")
            .ok()
            .and_then(|ms| ms.parse().ok())
            .unwrap_or(300_000),
        ..ProptestConfig::default()
    })]

    /// The job's accumulated deltas equal the oracle's graph at every completed time.
    #[test]
    fn job_matches_oracle_at_every_completed_time(
        knobs in knobs(),
        ops in proptest::collection::vec(aop(), 1..300),
    ) {
        let scenario = realize(&knobs, &ops);
        assert_monotone(&scenario);
        if let Err(e) = run_case(&scenario) {
            return Err(TestCaseError::fail(format!("{e}\n--- stream ---\n{}", scenario.dump())));
        }
    }

    /// The harness itself: a perfect delta stream derived from the oracle passes the checker,
    /// and the same stream with one update missing does not. Does not run the job.
    #[test]
    fn checker_accepts_the_oracle_and_rejects_a_gap(
        knobs in knobs(),
        ops in proptest::collection::vec(aop(), 1..300),
    ) {
        let scenario = realize(&knobs, &ops);
        assert_monotone(&scenario);
        let oracle = Oracle::new(&scenario);
        let Some(max) = scenario.max_time() else { return Ok(()) };
        let mut outputs = Vec::new();
        let mut mark = scenario.base.saturating_sub(10 * SEC).max(SEC);
        for ((t, record), diff) in oracle.deltas_through(max) {
            while mark <= t {
                outputs.push(Output::Progress(mark));
                mark += SEC;
            }
            outputs.push(Output::Update { time: t, diff, record });
        }
        outputs.push(Output::Progress(max + 1));
        let feed_all = |outputs: &[Output]| -> Result<(), String> {
            let mut checker = Checker::new(&scenario, &oracle);
            for o in outputs {
                checker.feed(o.clone(), None)?;
            }
            checker.finish()
        };
        prop_assert_eq!(feed_all(&outputs), Ok(()));
        if let Some(i) = outputs.iter().rposition(|o| matches!(o, Output::Update { .. })) {
            outputs.remove(i);
            prop_assert!(feed_all(&outputs).is_err());
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Hand-made streams with pinned outputs (checked against both the oracle and the job)
// ---------------------------------------------------------------------------------------------

fn cfg(params: Params, lateness_ns: u64) -> JobConfig {
    JobConfig { params, lateness_ns, progress_interval_ns: SEC, max_window_ns: MAX_WINDOW_NS, ..JobConfig::default() }
}

fn params_of(window_s: u64, group_by: GroupBy) -> Params {
    Params { ips: IpFilter::all(), window_ns: window_s * SEC, group_by }
}

fn upid(asid: u32, pid: u32, start_ticks: u64) -> Upid {
    Upid { asid, pid, start_ticks }
}

fn proc_rec(t: u64, upid: Upid, cmdline: &str, pod: &str, service: &str) -> Op {
    Op::Push(Record::Process(Box::new(Process {
        time_: t,
        upid,
        cmdline: cmdline.into(),
        pod: pod.into(),
        service: service.into(),
        ..Process::default()
    })))
}

fn conn(t: u64, upid: Upid, addr: &str, port: u16, sent: u64, recv: u64) -> Op {
    Op::Push(Record::ConnStats(ConnStats {
        time_: t,
        upid,
        remote_addr: addr.parse().unwrap(),
        remote_port: port,
        trace_role: TraceRole::Client,
        conn_open: 1,
        conn_close: 0,
        conn_active: 1,
        bytes_sent: sent,
        bytes_recv: recv,
    }))
}

fn name_rec(t: u64, addr: &str, name: &str) -> Op {
    named_by(t, addr, name, NameSource::Static)
}

fn named_by(t: u64, addr: &str, name: &str, source: NameSource) -> Op {
    Op::Push(Record::Name(Name { time_: t, addr: addr.parse().unwrap(), name: name.into(), source }))
}

fn progress(t: u64) -> Op {
    Op::Push(Record::Progress(Progress { time_: t, source: "agent-0".into(), losses: Default::default() }))
}

#[allow(clippy::too_many_arguments)]
fn row(from: &str, upid: Upid, cmd: &str, addr: &str, to: &str, s: u64, r: u64) -> GraphRecord {
    GraphRecord::Row(Row {
        from_entity: from.into(),
        upid,
        cmdline: cmd.into(),
        remote_addr: addr.parse().unwrap(),
        to_entity: to.into(),
        bytes_sent: s,
        bytes_recv: r,
    })
}

fn edge(from: &str, to: &str, s: u64, r: u64) -> GraphRecord {
    GraphRecord::Edge(Edge { from_entity: from.into(), to_entity: to.into(), bytes_sent: s, bytes_recv: r })
}

type Deltas = BTreeMap<(EventTime, GraphRecord), i64>;

fn deltas(list: Vec<(u64, i64, GraphRecord)>) -> Deltas {
    let mut d = Deltas::new();
    for (t, diff, r) in list {
        *d.entry((t, r)).or_default() += diff;
    }
    d.retain(|_, m| *m != 0);
    d
}

/// Runs the job; returns its consolidated deltas, its last progress mark and the admissions.
fn job_deltas(scenario: &Scenario) -> (Deltas, Option<u64>, Vec<Result<Admission, String>>) {
    let mut job = Job::new(scenario.config.clone()).expect("valid config");
    let mut admissions = Vec::new();
    for step in &scenario.steps {
        match step {
            Step::Push { record, .. } => {
                admissions.push(job.push(record.clone()).map_err(|e| e.0));
            }
            Step::Set { params, .. } => {
                job.set_params(params.clone()).expect("valid params");
            }
        }
    }
    job.finish();
    let mut out = Vec::new();
    job.drain_into(&mut out);
    let mut list = Vec::new();
    let mut last = None;
    for o in out {
        match o {
            Output::Update { time, diff, record } => list.push((time, diff, record)),
            Output::Progress(p) => last = Some(p),
        }
    }
    (deltas(list), last, admissions)
}

/// Pins `expected` against the oracle, then the job (deltas, last mark, full check).
fn pin(scenario: &Scenario, expected: Vec<(u64, i64, GraphRecord)>) {
    let expected = deltas(expected);
    let max = scenario.max_time().unwrap();
    let oracle = Oracle::new(scenario);
    assert_eq!(oracle.deltas_through(max), expected, "oracle disagrees with the pinned deltas");
    let (got, last, admissions) = job_deltas(scenario);
    assert!(admissions.iter().all(Result::is_ok), "{admissions:?}");
    assert_eq!(got, expected, "job disagrees with the pinned deltas");
    assert_eq!(last, Some(max + 1), "last progress mark");
    if let Err(e) = run_case(scenario) {
        panic!("{e}\n{}", scenario.dump());
    }
}

#[test]
fn window_expires_exactly_at_time_plus_window_and_max_spans_ports() {
    let u = upid(1, 100, 7);
    let a = "10.0.0.7";
    let sc = Scenario::from_ops(
        cfg(params_of(5, GroupBy::Pod), SEC),
        0,
        vec![
            proc_rec(10 * SEC, u, "app", "ns/a", ""),
            conn(10 * SEC, u, a, 6379, 100, 50),
            conn(12 * SEC, u, a, 6379, 300, 60),
            conn(13 * SEC, u, a, 443, 200, 70),
            progress(20 * SEC),
        ],
    );
    let r = |s, rc| row("ns/a", u, "app", a, a, s, rc);
    let e = |s, rc| edge("ns/a", a, s, rc);
    pin(
        &sc,
        vec![
            (10 * SEC, 1, r(100, 50)),
            (10 * SEC, 1, e(100, 50)),
            (12 * SEC, -1, r(100, 50)),
            (12 * SEC, -1, e(100, 50)),
            (12 * SEC, 1, r(300, 60)),
            (12 * SEC, 1, e(300, 60)),
            (13 * SEC, -1, r(300, 60)),
            (13 * SEC, -1, e(300, 60)),
            (13 * SEC, 1, r(300, 70)),
            (13 * SEC, 1, e(300, 70)),
            // 15 s: the 10 s sample leaves, the max does not change.
            // 17 s: the 12 s sample leaves (window (12, 17]).
            (17 * SEC, -1, r(300, 70)),
            (17 * SEC, -1, e(300, 70)),
            (17 * SEC, 1, r(200, 70)),
            (17 * SEC, 1, e(200, 70)),
            (18 * SEC, -1, r(200, 70)),
            (18 * SEC, -1, e(200, 70)),
        ],
    );
}

#[test]
fn late_record_is_processed_at_the_frontier() {
    let u = upid(1, 100, 7);
    let sc = Scenario::from_ops(
        cfg(params_of(30, GroupBy::Pod), 2 * SEC),
        0,
        vec![
            proc_rec(10 * SEC, u, "app", "ns/a", ""),
            conn(10 * SEC, u, "10.0.0.1", 80, 10, 1),
            progress(20 * SEC),
            conn(12 * SEC, u, "10.0.0.2", 80, 20, 2), // frontier 18 s: late
            progress(21 * SEC),
        ],
    );
    assert!(matches!(
        sc.steps[3],
        Step::Push { eff, .. } if eff == 18 * SEC
    ));
    pin(
        &sc,
        vec![
            (10 * SEC, 1, row("ns/a", u, "app", "10.0.0.1", "10.0.0.1", 10, 1)),
            (10 * SEC, 1, edge("ns/a", "10.0.0.1", 10, 1)),
            (18 * SEC, 1, row("ns/a", u, "app", "10.0.0.2", "10.0.0.2", 20, 2)),
            (18 * SEC, 1, edge("ns/a", "10.0.0.2", 20, 2)),
        ],
    );
    let (_, _, admissions) = job_deltas(&sc);
    assert_eq!(admissions[3], Ok(Admission::Late { processed_at: 18 * SEC }));
}

/// A late process record is re-timed to the frontier, and there it ties with an on-time record
/// of the same upid: the greater `Process` (compared with its processed time) wins, whatever
/// the original times or the arrival order.
#[test]
fn a_late_process_record_ties_at_the_frontier_by_record_order() {
    let u = upid(1, 100, 7);
    let late_proc = Process {
        time_: 11 * SEC, // late: processed at 18 s
        upid: u,
        cmdline: "app".into(),
        pod: "ns/b".into(),
        container: "c".into(), // > "": this record is the greater one
        ..Process::default()
    };
    let on_time_proc = Process { time_: 18 * SEC, pod: String::new(), container: String::new(), ..late_proc.clone() };
    assert!(Process { time_: 18 * SEC, ..late_proc.clone() } > on_time_proc);
    for late_first in [true, false] {
        let (first, second) = if late_first {
            (late_proc.clone(), on_time_proc.clone())
        } else {
            // The on-time record first keeps the frontier at 18 s (max seen 20 s).
            (on_time_proc.clone(), late_proc.clone())
        };
        let sc = Scenario::from_ops(
            cfg(params_of(30, GroupBy::Pod), 2 * SEC),
            0,
            vec![
                proc_rec(10 * SEC, u, "app", "ns/a", ""),
                conn(10 * SEC, u, "10.0.0.1", 80, 10, 1),
                progress(20 * SEC),
                Op::Push(Record::Process(Box::new(first))),
                Op::Push(Record::Process(Box::new(second))),
                progress(21 * SEC),
            ],
        );
        for i in [3, 4] {
            assert!(matches!(sc.steps[i], Step::Push { eff, .. } if eff == 18 * SEC));
        }
        pin(
            &sc,
            vec![
                (10 * SEC, 1, row("ns/a", u, "app", "10.0.0.1", "10.0.0.1", 10, 1)),
                (10 * SEC, 1, edge("ns/a", "10.0.0.1", 10, 1)),
                (18 * SEC, -1, row("ns/a", u, "app", "10.0.0.1", "10.0.0.1", 10, 1)),
                (18 * SEC, -1, edge("ns/a", "10.0.0.1", 10, 1)),
                (18 * SEC, 1, row("ns/b", u, "app", "10.0.0.1", "10.0.0.1", 10, 1)),
                (18 * SEC, 1, edge("ns/b", "10.0.0.1", 10, 1)),
            ],
        );
    }
}

#[test]
fn a_name_arriving_later_renames_the_edge_at_its_time() {
    let u = upid(2, 200, 9);
    let a = "2001:db8::7";
    let sc = Scenario::from_ops(
        cfg(params_of(60, GroupBy::Pod), SEC),
        0,
        vec![
            proc_rec(10 * SEC, u, "web", "ns/web", ""),
            conn(10 * SEC, u, a, 6379, 5, 6),
            name_rec(12 * SEC, a, "redis"),
            progress(14 * SEC),
        ],
    );
    pin(
        &sc,
        vec![
            (10 * SEC, 1, row("ns/web", u, "web", a, a, 5, 6)),
            (10 * SEC, 1, edge("ns/web", a, 5, 6)),
            (12 * SEC, -1, row("ns/web", u, "web", a, a, 5, 6)),
            (12 * SEC, -1, edge("ns/web", a, 5, 6)),
            (12 * SEC, 1, row("ns/web", u, "web", a, "redis", 5, 6)),
            (12 * SEC, 1, edge("ns/web", "redis", 5, 6)),
        ],
    );
}

#[test]
fn sources_take_precedence_and_a_withdrawal_falls_back() {
    let u = upid(2, 200, 9);
    let a = "10.4.0.9";
    let sc = Scenario::from_ops(
        cfg(params_of(60, GroupBy::Pod), SEC),
        0,
        vec![
            proc_rec(10 * SEC, u, "web", "ns/web", ""),
            conn(10 * SEC, u, a, 443, 5, 6),
            named_by(11 * SEC, a, "ptr.example.net", NameSource::ReverseDns),
            // A lower-precedence source never overrides a higher one, whenever it arrives.
            named_by(12 * SEC, a, "api.example.com", NameSource::Dns),
            named_by(13 * SEC, a, "ptr2.example.net", NameSource::ReverseDns),
            named_by(14 * SEC, a, "shop/api", NameSource::Kubernetes),
            // The pod goes away: the DNS name is back, not the address.
            named_by(16 * SEC, a, "", NameSource::Kubernetes),
            progress(18 * SEC),
        ],
    );
    let r = |to: &str| row("ns/web", u, "web", a, to, 5, 6);
    let e = |to: &str| edge("ns/web", to, 5, 6);
    pin(
        &sc,
        vec![
            (10 * SEC, 1, r(a)),
            (10 * SEC, 1, e(a)),
            (11 * SEC, -1, r(a)),
            (11 * SEC, -1, e(a)),
            (11 * SEC, 1, r("ptr.example.net")),
            (11 * SEC, 1, e("ptr.example.net")),
            (12 * SEC, -1, r("ptr.example.net")),
            (12 * SEC, -1, e("ptr.example.net")),
            (12 * SEC, 1, r("api.example.com")),
            (12 * SEC, 1, e("api.example.com")),
            (14 * SEC, -1, r("api.example.com")),
            (14 * SEC, -1, e("api.example.com")),
            (14 * SEC, 1, r("shop/api")),
            (14 * SEC, 1, e("shop/api")),
            (16 * SEC, -1, r("shop/api")),
            (16 * SEC, -1, e("shop/api")),
            (16 * SEC, 1, r("api.example.com")),
            (16 * SEC, 1, e("api.example.com")),
        ],
    );
    // explain() tells the same story at the end: dns wins, kubernetes withdrew.
    let mut job = Job::new(sc.config.clone()).unwrap();
    for step in &sc.steps {
        if let Step::Push { record, .. } = step {
            job.push(record.clone()).unwrap();
        }
    }
    job.finish();
    let why = job.explain(a.parse().unwrap());
    assert_eq!(why.to_entity, "api.example.com");
    assert_eq!(why.decided_by, flowgraph_pipeline::NamedBy::Source(NameSource::Dns));
    let seen: Vec<(NameSource, &str, u64)> =
        why.candidates.iter().map(|c| (c.source, c.name.as_str(), c.since)).collect();
    assert_eq!(
        seen,
        vec![
            (NameSource::Kubernetes, "", 16 * SEC),
            (NameSource::Dns, "api.example.com", 12 * SEC),
            (NameSource::ReverseDns, "ptr2.example.net", 13 * SEC),
        ]
    );
}

#[test]
fn two_late_samples_of_one_key_at_the_frontier_leave_the_later_in_force() {
    // Both late records are re-stamped to the frontier (18 s): the stage emits -100 +200 -200
    // +300 at one time for one key, and the max that follows must be 300.
    let u = upid(1, 100, 7);
    let a = "10.0.0.9";
    let sc = Scenario::from_ops(
        cfg(params_of(60, GroupBy::Pod), 2 * SEC),
        0,
        vec![
            proc_rec(10 * SEC, u, "app", "ns/a", ""),
            conn(10 * SEC, u, a, 80, 100, 1),
            conn(11 * SEC, u, "10.0.0.10", 80, 5, 5),
            progress(20 * SEC),
            conn(12 * SEC, u, a, 80, 200, 2),
            conn(13 * SEC, u, a, 80, 300, 3),
            progress(21 * SEC),
        ],
    );
    let r = |s, rc| row("ns/a", u, "app", a, a, s, rc);
    let other = row("ns/a", u, "app", "10.0.0.10", "10.0.0.10", 5, 5);
    pin(
        &sc,
        vec![
            (10 * SEC, 1, r(100, 1)),
            (10 * SEC, 1, edge("ns/a", a, 100, 1)),
            (11 * SEC, 1, other),
            (11 * SEC, 1, edge("ns/a", "10.0.0.10", 5, 5)),
            (18 * SEC, -1, r(100, 1)),
            (18 * SEC, -1, edge("ns/a", a, 100, 1)),
            (18 * SEC, 1, r(300, 3)),
            (18 * SEC, 1, edge("ns/a", a, 300, 3)),
        ],
    );
}

#[test]
fn loopback_peers_are_the_process_own_entity() {
    let u = upid(1, 100, 7);
    let sc = Scenario::from_ops(
        cfg(params_of(60, GroupBy::Pod), SEC),
        0,
        vec![
            proc_rec(10 * SEC, u, "envoy", "ns/web", ""),
            conn(10 * SEC, u, "127.0.0.1", 15001, 5, 6),
            conn(10 * SEC, u, "::1", 8080, 7, 8),
            // A name for a loopback address changes nothing.
            name_rec(11 * SEC, "127.0.0.1", "localhost"),
            progress(12 * SEC),
        ],
    );
    pin(
        &sc,
        vec![
            (10 * SEC, 1, row("ns/web", u, "envoy", "127.0.0.1", "ns/web", 5, 6)),
            (10 * SEC, 1, row("ns/web", u, "envoy", "::1", "ns/web", 7, 8)),
            (10 * SEC, 1, edge("ns/web", "ns/web", 12, 14)),
        ],
    );
}

#[test]
fn container_metadata_fills_the_pod_from_its_time_and_ip_reuse_moves_the_edge() {
    // A client process on a Kubernetes node whose agent knows only its container id; the
    // metadata source names its pod later. The server's IP belongs to pod A, then (Pixie
    // #885) to pod B: the edge moves at the reuse time, never before.
    let client = upid(1, 100, 7);
    let server_ip = "10.244.1.7";
    let ctr = "3f2a9c";
    let container = |t: u64, pod: &str, service: &str| {
        Op::Push(Record::Container(Box::new(Container {
            time_: t,
            container: ctr.into(),
            pod: pod.into(),
            service: service.into(),
            namespace: "shop".into(),
            node: "node-1".into(),
        })))
    };
    let sc = Scenario::from_ops(
        cfg(params_of(60, GroupBy::Service), SEC),
        0,
        vec![
            Op::Push(Record::Process(Box::new(Process {
                time_: 10 * SEC,
                upid: client,
                cmdline: "web".into(),
                container: ctr.into(),
                ..Process::default()
            }))),
            conn(10 * SEC, client, server_ip, 6379, 5, 6),
            named_by(10 * SEC, server_ip, "shop/redis-a", NameSource::Kubernetes),
            // The pod is behind two services: one entity naming both.
            container(12 * SEC, "shop/web-1", "shop/web,shop/web-canary"),
            named_by(14 * SEC, server_ip, "", NameSource::Kubernetes),
            named_by(15 * SEC, server_ip, "shop/redis-b", NameSource::Kubernetes),
            progress(17 * SEC),
        ],
    );
    let from = "shop/web,shop/web-canary";
    let r = |to: &str| row(from, client, "web", server_ip, to, 5, 6);
    let e = |to: &str| edge(from, to, 5, 6);
    pin(
        &sc,
        vec![
            // Until 12 s the process has no service: no row (from_entity '').
            (12 * SEC, 1, r("shop/redis-a")),
            (12 * SEC, 1, e("shop/redis-a")),
            (14 * SEC, -1, r("shop/redis-a")),
            (14 * SEC, -1, e("shop/redis-a")),
            (14 * SEC, 1, r(server_ip)),
            (14 * SEC, 1, e(server_ip)),
            (15 * SEC, -1, r(server_ip)),
            (15 * SEC, -1, e(server_ip)),
            (15 * SEC, 1, r("shop/redis-b")),
            (15 * SEC, 1, e("shop/redis-b")),
        ],
    );
}

#[test]
fn a_group_by_change_applies_from_the_frontier() {
    let u1 = upid(1, 100, 7);
    let u2 = upid(1, 101, 8);
    let a = "10.0.0.1";
    let sc = Scenario::from_ops(
        cfg(params_of(60, GroupBy::Pod), SEC),
        0,
        vec![
            proc_rec(10 * SEC, u1, "api", "ns/a", "ns/s"),
            proc_rec(10 * SEC, u2, "job", "ns/b", ""),
            conn(10 * SEC, u1, a, 80, 1, 2),
            conn(10 * SEC, u2, a, 80, 3, 4),
            progress(12 * SEC),
            Op::Set(params_of(60, GroupBy::Service)),
            progress(14 * SEC),
        ],
    );
    assert!(matches!(sc.steps[5], Step::Set { at, .. } if at == 11 * SEC));
    pin(
        &sc,
        vec![
            (10 * SEC, 1, row("ns/a", u1, "api", a, a, 1, 2)),
            (10 * SEC, 1, row("ns/b", u2, "job", a, a, 3, 4)),
            (10 * SEC, 1, edge("ns/a", a, 1, 2)),
            (10 * SEC, 1, edge("ns/b", a, 3, 4)),
            (11 * SEC, -1, row("ns/a", u1, "api", a, a, 1, 2)),
            (11 * SEC, -1, row("ns/b", u2, "job", a, a, 3, 4)),
            (11 * SEC, -1, edge("ns/a", a, 1, 2)),
            (11 * SEC, -1, edge("ns/b", a, 3, 4)),
            // u2 has no service: its row is dropped.
            (11 * SEC, 1, row("ns/s", u1, "api", a, a, 1, 2)),
            (11 * SEC, 1, edge("ns/s", a, 1, 2)),
        ],
    );
    // The job must report the same application time.
    let mut job = Job::new(sc.config.clone()).unwrap();
    for step in &sc.steps {
        match step {
            Step::Push { record, .. } => {
                job.push(record.clone()).unwrap();
            }
            Step::Set { params, .. } => assert_eq!(job.set_params(params.clone()), Ok(11 * SEC)),
        }
    }
}

#[test]
fn shared_services_sum_and_a_process_change_splits_the_edge() {
    let u1 = upid(1, 100, 7);
    let u2 = upid(2, 100, 7); // same pid on another node
    let u3 = upid(1, 102, 3); // never described: dropped
    let (a, b) = ("10.0.0.1", "10.0.0.2");
    let sc = Scenario::from_ops(
        cfg(params_of(60, GroupBy::Service), SEC),
        0,
        vec![
            proc_rec(10 * SEC, u1, "api", "ns/a1", "ns/api"),
            proc_rec(10 * SEC, u2, "api", "ns/a2", "ns/api"),
            name_rec(10 * SEC, a, "db"),
            name_rec(10 * SEC, b, "db"), // two addresses, one name
            conn(10 * SEC, u1, a, 5432, 10, 100),
            conn(10 * SEC, u2, b, 5432, 20, 200),
            conn(10 * SEC, u3, a, 5432, 7, 7),
            proc_rec(12 * SEC, u2, "api2", "ns/a2", "ns/api2"),
            progress(14 * SEC),
        ],
    );
    pin(
        &sc,
        vec![
            (10 * SEC, 1, row("ns/api", u1, "api", a, "db", 10, 100)),
            (10 * SEC, 1, row("ns/api", u2, "api", b, "db", 20, 200)),
            (10 * SEC, 1, edge("ns/api", "db", 30, 300)),
            (12 * SEC, -1, row("ns/api", u2, "api", b, "db", 20, 200)),
            (12 * SEC, 1, row("ns/api2", u2, "api2", b, "db", 20, 200)),
            (12 * SEC, -1, edge("ns/api", "db", 30, 300)),
            (12 * SEC, 1, edge("ns/api", "db", 10, 100)),
            (12 * SEC, 1, edge("ns/api2", "db", 20, 200)),
        ],
    );
}
