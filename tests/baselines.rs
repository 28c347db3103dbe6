//! The benchmark baselines (`flowgraph_benches::baseline`) against the job: the same stream
//! through the dataflow job (its deltas applied to a `GraphState`) and through both baselines
//! must give the same rows and edges at every progress mark, and at the end of a stream read in
//! arrival order. The job is the reference; a baseline that disagrees is wrong, and every ratio
//! the harness prints against it would be too.
//!
//! `cargo test --release --test baselines`. On the medium and large streams, `flowgraph bench`
//! checks the job's final graph against both baselines after its measurements.

use flowgraph_benches::baseline::{BaselineParams, Graph, GraphRow, HashMapQuery, RecomputeQuery};
use flowgraph_benches::{generate, Size};
use flowgraph_pipeline::{Admission, GroupBy, IpFilter, Job, JobConfig, Output, Params};
use flowgraph_schema::{ConnStats, Name, NameSource, Process, Record, TraceRole, Upid};
use flowgraph_sinks::graph::GraphState;

#[path = "../src/plain_graph.rs"]
mod plain_graph;
use std::net::IpAddr;

const SECOND: u64 = 1_000_000_000;
const MINUTE: u64 = 60 * SECOND;
/// Service ClusterIPs, IPv6 pod addresses, one documentation range of external endpoints.
const FILTER: &str = "10.96.0.0/12,fd00:10:244::/48,203.0.113.0/24";

fn smoke(seed: u64) -> Vec<Record> {
    let mut records = Vec::new();
    generate(&Size::Smoke.profile(), seed, |r| records.push(r));
    records
}

fn sorted(mut records: Vec<Record>) -> Vec<Record> {
    records.sort_by_key(Record::time); // stable: ties keep arrival order
    records
}

fn params(ips: &str, window_ns: u64, group_by: GroupBy) -> (Params, BaselineParams) {
    let job = Params { ips: IpFilter::parse_list(ips).unwrap(), window_ns, group_by };
    // The harness's conversion: the pipeline's parameters through their text forms.
    let baseline = BaselineParams::parse(&job.ips.to_string(), job.window_ns, job.group_by.as_str()).unwrap();
    (job, baseline)
}

/// The job's materialized graph in the baselines' plain form.
fn job_graph(state: &GraphState) -> Graph {
    assert_eq!(state.anomalies(), 0, "inconsistent deltas");
    plain_graph::plain_graph(state)
}

/// A readable account of how two graphs differ (the first few rows and edges each way).
fn diff(what: &str, expected: &Graph, actual: &Graph) -> String {
    let mut out = format!(
        "{what}: job has {} rows / {} edges, baseline {} / {}\n",
        expected.rows.len(),
        expected.edges.len(),
        actual.rows.len(),
        actual.edges.len()
    );
    let missing = expected.rows.iter().filter(|r| !actual.rows.contains(r)).take(5);
    let extra = actual.rows.iter().filter(|r| !expected.rows.contains(r)).take(5);
    for r in missing {
        out += &format!("  only in job:      {r:?}\n");
    }
    for r in extra {
        out += &format!("  only in baseline: {r:?}\n");
    }
    let missing = expected.edges.iter().filter(|e| !actual.edges.contains(e)).take(5);
    let extra = actual.edges.iter().filter(|e| !expected.edges.contains(e)).take(5);
    for e in missing {
        out += &format!("  only in job:      {e:?}\n");
    }
    for e in extra {
        out += &format!("  only in baseline: {e:?}\n");
    }
    out
}

fn assert_same(what: &str, expected: &Graph, actual: &Graph) {
    assert!(expected == actual, "{}", diff(what, expected, actual));
}

/// What a lockstep run compared.
struct Checked {
    marks: usize,
    nonempty_marks: usize,
    last: Graph,
}

/// Runs `records` (in time order) through the job with no lateness, and at every progress mark
/// P feeds both baselines every record before P and compares the three graphs at P - 1.
fn lockstep(records: &[Record], ips: &str, window_ns: u64, group_by: GroupBy) -> Checked {
    lockstep_every(records, ips, window_ns, group_by, SECOND)
}

/// [`lockstep`] with the job's progress interval: 1 ns marks every distinct record time.
fn lockstep_every(
    records: &[Record],
    ips: &str,
    window_ns: u64,
    group_by: GroupBy,
    progress_interval_ns: u64,
) -> Checked {
    let (job_params, base) = params(ips, window_ns, group_by);
    let mut job =
        Job::new(JobConfig { params: job_params, lateness_ns: 0, progress_interval_ns, ..JobConfig::default() })
            .unwrap();
    let mut bound = HashMapQuery::new(base.clone());
    let mut recompute = RecomputeQuery::new(base);
    let mut state = GraphState::default();
    let mut outputs = Vec::new();
    let mut fed = 0;
    let mut checked = Checked { marks: 0, nonempty_marks: 0, last: Graph::default() };
    let label = format!("ips={ips:?} window={}s group_by={group_by}", window_ns / SECOND);
    let mut on_outputs = |outputs: &mut Vec<Output>, state: &mut GraphState, fed: &mut usize| {
        for output in outputs.drain(..) {
            state.apply(&output);
            let Output::Progress(mark) = output else { continue };
            while *fed < records.len() && records[*fed].time() < mark {
                bound.push(&records[*fed]);
                recompute.push(&records[*fed]);
                *fed += 1;
            }
            let at = mark - 1;
            let expected = job_graph(state);
            let what = format!("{label} at mark {mark}");
            assert_same(&format!("hash-map, {what}"), &expected, &bound.graph_at(at));
            assert_same(&format!("recompute, {what}"), &expected, &recompute.refresh(at));
            checked.marks += 1;
            checked.nonempty_marks += usize::from(!expected.rows.is_empty());
            checked.last = expected;
        }
    };
    for record in records {
        let admission = job.push(record.clone()).expect("generated records are valid");
        assert_eq!(admission, Admission::OnTime, "time-ordered input is never late");
        job.drain_into(&mut outputs);
        on_outputs(&mut outputs, &mut state, &mut fed);
    }
    job.finish();
    job.drain_into(&mut outputs);
    on_outputs(&mut outputs, &mut state, &mut fed);
    assert_eq!(fed, records.len(), "the last mark covers every record");
    assert_eq!(bound.rejected(), 0);
    checked
}

#[test]
fn pod_5m_every_mark() {
    let records = sorted(smoke(1));
    let checked = lockstep(&records, "", 5 * MINUTE, GroupBy::Pod);
    assert!(checked.marks > 150, "{} marks", checked.marks);
    assert!(checked.last.rows.len() > 50 && checked.last.edges.len() > 20, "a trivial graph");
}

#[test]
fn service_1m_every_mark() {
    let records = sorted(smoke(2));
    let checked = lockstep(&records, "", MINUTE, GroupBy::Service);
    assert!(checked.nonempty_marks > 150, "{} non-empty marks", checked.nonempty_marks);
    assert!(checked.last.edges.len() > 10);
}

#[test]
fn ips_filter_1m_and_5m_every_mark() {
    let records = sorted(smoke(3));
    for (window, group_by) in [(MINUTE, GroupBy::Pod), (5 * MINUTE, GroupBy::Service)] {
        let filtered = lockstep(&records, FILTER, window, group_by).last;
        let all = lockstep(&records, "", window, group_by).last;
        // The filter removes rows by address only: the filtered rows are exactly the
        // unfiltered rows whose address is inside the filter, and some are removed.
        let (_, base) = params(FILTER, window, group_by);
        let kept: Vec<GraphRow> =
            all.rows.iter().filter(|r| base.keeps(&r.remote_addr.parse::<IpAddr>().unwrap())).cloned().collect();
        assert!(!filtered.rows.is_empty() && filtered.rows.len() < all.rows.len());
        assert_eq!(filtered, Graph::with_edges_from_rows(kept));
    }
}

#[test]
fn every_grouping_every_mark() {
    let records = sorted(smoke(4));
    for group_by in GroupBy::ALL {
        let checked = lockstep(&records, "", 2 * MINUTE, group_by);
        assert!(!checked.last.rows.is_empty(), "{group_by}: empty graph");
    }
}

/// The harness's way: the recording in arrival order (bounded disorder), the job with its
/// default lateness, the hash-map bound advanced and the recomputation refreshed every second
/// of event time; the final graphs must agree.
#[test]
fn arrival_order_end_of_stream() {
    let records = smoke(5);
    assert!(records.windows(2).any(|w| w[1].time() < w[0].time()), "the stream has disorder");
    for (ips, window, group_by) in [("", 5 * MINUTE, GroupBy::Pod), (FILTER, MINUTE, GroupBy::Service)] {
        let (job_params, base) = params(ips, window, group_by);
        let mut job = Job::new(JobConfig { params: job_params, ..JobConfig::default() }).unwrap();
        let mut state = GraphState::default();
        let mut outputs = Vec::new();
        for record in &records {
            job.push(record.clone()).unwrap();
            job.drain_into(&mut outputs);
        }
        job.finish();
        job.drain_into(&mut outputs);
        outputs.iter().for_each(|o| state.apply(o));
        assert_eq!(job.stats().late, 0);
        let last = records.iter().map(Record::time).max().unwrap();
        assert_eq!(state.time(), Some(last));
        let expected = job_graph(&state);

        let mut bound = HashMapQuery::new(base.clone());
        let mut recompute = RecomputeQuery::new(base);
        let first = records.iter().map(Record::time).min().unwrap();
        let mut next = first + SECOND;
        let mut refreshes = 0;
        for record in &records {
            while record.time() >= next {
                bound.advance_to(next);
                recompute.refresh(next);
                refreshes += 1;
                next += SECOND;
            }
            bound.push(record);
            recompute.push(record);
        }
        assert!(refreshes > 400);
        assert_same(&format!("hash-map, {ips:?}"), &expected, &bound.graph_at(last));
        assert_same(&format!("recompute, {ips:?}"), &expected, &recompute.refresh(last));
        assert!(bound.live_keys() > 0);
    }
}

/// The baselines are not blind: a different window, grouping or filter gives another graph,
/// and both agree on that other graph.
#[test]
fn baselines_see_parameter_differences() {
    let records = sorted(smoke(6));
    let end = records.last().unwrap().time();
    let run = |ips: &str, window: u64, group_by: &str| {
        let base = BaselineParams::parse(ips, window, group_by).unwrap();
        let mut bound = HashMapQuery::new(base.clone());
        let mut recompute = RecomputeQuery::new(base);
        for r in &records {
            bound.push(r);
            recompute.push(r);
        }
        let graph = bound.graph_at(end);
        assert_eq!(graph, recompute.refresh(end), "{ips} {window} {group_by}");
        graph
    };
    let pod_5m = run("", 5 * MINUTE, "pod");
    let pod_1m = run("", MINUTE, "pod");
    let service_5m = run("", 5 * MINUTE, "service");
    let filtered = run(FILTER, 5 * MINUTE, "pod");
    assert_ne!(pod_5m, pod_1m);
    assert!(pod_1m.rows.len() < pod_5m.rows.len(), "a shorter window holds fewer groups");
    assert_ne!(pod_5m.edges, service_5m.edges);
    assert!(filtered.rows.len() < pod_5m.rows.len());
    // And mid-stream, far enough in for a 1 m window to have dropped early connections.
    let mid = records[records.len() / 2].time();
    let half: Vec<Record> = records.iter().filter(|r| r.time() <= mid).cloned().collect();
    let at = |window: u64| {
        let mut recompute = RecomputeQuery::new(BaselineParams::parse("", window, "pod").unwrap());
        half.iter().for_each(|r| recompute.push(r));
        recompute.refresh(mid)
    };
    assert_ne!(at(MINUTE), at(5 * MINUTE));
}

// ------------------------------------------------------------------------ hand-made cases

fn upid(pid: u32) -> Upid {
    Upid { asid: 1, pid, start_ticks: 100 }
}

fn conn(time: u64, pid: u32, addr: &str, port: u16, sent: u64, recv: u64) -> Record {
    Record::ConnStats(ConnStats {
        time_: time,
        upid: upid(pid),
        remote_addr: addr.parse().unwrap(),
        remote_port: port,
        trace_role: if port == 0 { TraceRole::Server } else { TraceRole::Client },
        conn_open: 1,
        conn_close: 0,
        conn_active: 1,
        bytes_sent: sent,
        bytes_recv: recv,
    })
}

fn process(time: u64, pid: u32, pod: &str, service: &str) -> Record {
    Record::Process(Box::new(Process {
        time_: time,
        upid: upid(pid),
        cmdline: format!("app-{pid}"),
        pod: pod.into(),
        service: service.into(),
        ..Process::default()
    }))
}

fn name(time: u64, addr: &str, text: &str) -> Record {
    Record::Name(Name { time_: time, addr: addr.parse().unwrap(), name: text.into(), source: NameSource::Dns })
}

/// Window edges, max over ports, sums over rows, late names, relabels, unknown processes,
/// ties at one time: every record time and every whole second of a small stream (so also the
/// instants a sample leaves the window), all three against each other.
#[test]
fn hand_made_stream_every_instant() {
    let s = SECOND;
    let mut records = vec![
        process(0, 1, "ns/a-1", "ns/a"),
        process(0, 2, "ns/a-2", "ns/a"),
        process(0, 3, "", ""), // a host process: no pod, dropped
        conn(s, 1, "10.0.0.9", 6379, 100, 10),
        conn(s, 1, "10.0.0.9", 6380, 50, 70), // another port of the same (upid, addr)
        conn(2 * s, 2, "10.0.0.9", 6379, 5, 5),
        conn(2 * s, 3, "10.0.0.9", 6379, 9, 9),
        conn(3 * s, 4, "10.0.0.8", 80, 9, 9), // no process record yet
        name(4 * s, "10.0.0.9", "redis"),
        process(5 * s, 4, "ns/b-1", "ns/b"),
        conn(6 * s, 1, "10.0.0.9", 6379, 200, 20),
        process(7 * s, 2, "ns/a-2", "ns/a-canary"), // a relabel,
        process(7 * s, 2, "ns/a-2", "ns/a-z"),      // and a tie: the greatest record wins
        name(8 * s, "10.0.0.9", "redis-0"),
        name(8 * s, "10.0.0.9", "redis-1"), // a tie: the greatest wins, whether last
        name(8 * s, "2001:db8::1", "zeta"),
        name(8 * s, "2001:db8::1", "alpha"), // or first
        conn(9 * s, 5, "2001:db8::1", 443, 1, 2),
        process(9 * s, 5, "ns/c-1", "ns/c"),
        process(9 * s, 5, "ns/c-0", "ns/c"), // a tie, the greatest first
        conn(10 * s, 1, "10.0.0.9", 6380, 60, 80),
        conn(10 * s, 1, "10.0.0.9", 6380, 61, 80), // a tie: the greatest wins
        conn(10 * s, 2, "10.0.0.9", 6379, 7, 7),
        conn(10 * s, 2, "10.0.0.9", 6379, 6, 6), // the same, the greatest first
    ];
    // Progress records just after every whole second: with a 1 ns progress interval the job
    // then marks k s + 1, so the graphs are compared at k s exactly, when samples expire.
    records.extend((1..=16).map(|k| {
        Record::Progress(flowgraph_schema::Progress {
            time_: k * s + 1,
            source: "test".into(),
            losses: Default::default(),
        })
    }));
    let records = sorted(records);
    for (window, group_by) in [(5 * s, GroupBy::Pod), (3 * s, GroupBy::Service), (s, GroupBy::Pod)] {
        for ips in ["", "10.0.0.9,2001:db8::/32", "10.0.0.0/31"] {
            let checked = lockstep_every(&records, ips, window, group_by, 1);
            assert!(checked.marks > 25, "{ips} {window}: {} marks", checked.marks);
            assert!(checked.nonempty_marks >= 5 || ips.starts_with("10.0.0.0/"));
        }
    }
    // A few facts by hand (window 5 s, by pod).
    let base = BaselineParams::parse("", 5 * s, "pod").unwrap();
    let mut bound = HashMapQuery::new(base);
    records.iter().filter(|r| r.time() <= 4 * s).for_each(|r| bound.push(r));
    let g = bound.graph_at(4 * s);
    let row = |g: &Graph, pid: u32| g.rows.iter().find(|r| r.upid == upid(pid).to_string()).cloned();
    let r1 = row(&g, 1).unwrap();
    assert_eq!((r1.bytes_sent, r1.bytes_recv), (100, 70), "max over ports, per column");
    assert_eq!(r1.to_entity, "redis");
    assert!(row(&g, 3).is_none(), "'' from_entity is dropped");
    assert!(row(&g, 4).is_none(), "an unknown process is dropped");
    assert_eq!(g.edges.len(), 2);
    // The sample at 1 s is in force until 6 s excluded; at 6 s port 6379 has a new one.
    let g = bound.graph_at(5 * s + s - 1);
    assert_eq!(row(&g, 1).map(|r| r.bytes_sent), Some(100));
    records.iter().filter(|r| r.time() > 4 * s && r.time() <= 6 * s).for_each(|r| bound.push(r));
    let g = bound.graph_at(6 * s);
    assert_eq!(row(&g, 1).map(|r| (r.bytes_sent, r.bytes_recv)), Some((200, 20)));
    assert!(row(&g, 2).is_some(), "upid 2's sample at 2 s is in force until 7 s");
    let g = bound.graph_at(7 * s);
    assert!(row(&g, 2).is_none(), "upid 2's sample at 2 s left at 7 s");
}
