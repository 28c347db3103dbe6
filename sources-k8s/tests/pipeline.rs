//! End to end: the metadata source's records (from the fixture story, observed at chosen
//! times) plus an agent's conn_stats and process records through the pipeline job. The
//! checkout pod talks to 10.244.1.12 throughout; the frontend rollout hands that IP to a new
//! pod. The edge must move to the new pod exactly at the time the reuse was observed, never
//! before (Pixie issue 885), and the checkout process is named by its pod through its
//! container id alone.

use flowgraph_pipeline::{Edge, GraphRecord, GroupBy, Job, JobConfig, Output, Params};
use flowgraph_schema::{ConnStats, Process, Record, TraceRole, Upid};
use flowgraph_sources_k8s::{Event, Kind, MetadataState, Object};
use k8s_openapi::api::core::v1::{Node, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

const SEC: u64 = 1_000_000_000;
/// 2026-03-11T09:30:00Z, when the story's watch events happen.
const T0: u64 = 1_773_221_400 * SEC;

fn object(kind: Kind, value: serde_json::Value) -> Object {
    match kind {
        Kind::Pod => Object::Pod(Box::new(serde_json::from_value::<Pod>(value).unwrap())),
        Kind::Service => Object::Service(Box::new(serde_json::from_value::<Service>(value).unwrap())),
        Kind::EndpointSlice => Object::EndpointSlice(Box::new(serde_json::from_value::<EndpointSlice>(value).unwrap())),
        Kind::Node => Object::Node(Box::new(serde_json::from_value::<Node>(value).unwrap())),
    }
}

fn fixture(name: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The first list of every kind at T0, then the first pod watch's events, one every 10 s.
/// Returns the records and the time each pod watch event was observed at.
fn metadata_records() -> (Vec<Record>, Vec<(u64, String)>) {
    let mut state = MetadataState::new();
    let mut records = Vec::new();
    for kind in Kind::ALL {
        let list: serde_json::Value =
            serde_json::from_str(&fixture(&format!("{}.list.1.json", kind.as_str()))).unwrap();
        records.extend(state.apply(Event::RelistStarted(kind), T0));
        for item in list["items"].as_array().unwrap() {
            records.extend(state.apply(Event::Applied(object(kind, item.clone())), T0));
        }
        records.extend(state.apply(Event::RelistDone(kind), T0));
    }
    let mut times = Vec::new();
    let mut t = T0;
    for line in fixture("pods.watch.1.jsonl").lines() {
        let event: serde_json::Value = serde_json::from_str(line).unwrap();
        let object = || object(Kind::Pod, event["object"].clone());
        let event = match event["type"].as_str().unwrap() {
            "ADDED" | "MODIFIED" => Event::Applied(object()),
            "DELETED" => Event::Deleted(object()),
            _ => continue,
        };
        t += 10 * SEC;
        let what = match &event {
            Event::Applied(Object::Pod(p)) => format!("applied {}", p.metadata.name.as_deref().unwrap()),
            Event::Deleted(Object::Pod(p)) => format!("deleted {}", p.metadata.name.as_deref().unwrap()),
            _ => unreachable!(),
        };
        times.push((t, what));
        records.extend(state.apply(event, t));
    }
    (records, times)
}

#[test]
fn the_edge_moves_to_the_new_pod_exactly_from_the_reuse_time_on() {
    let (metadata, times) = metadata_records();
    // The reuse: the new frontend pod's MODIFIED with podIP 10.244.1.12, observed at...
    let reuse = times
        .iter()
        .filter(|(_, what)| what == "applied frontend-7b4f9d6c8-m7n3r")
        .map(|(t, _)| *t)
        .nth(1)
        .expect("the new frontend pod is modified to Running in pods.watch.1.jsonl");
    let old_deleted = times.iter().find(|(_, w)| w == "deleted frontend-6c9b8d7f5-k2x4p").unwrap().0;
    assert!(old_deleted > reuse, "the fixture delivers the old pod's deletion after the reuse");
    let checkout_container = metadata
        .iter()
        .find_map(|r| match r {
            Record::Container(c) if c.pod == "shop/checkout-5f7d8c9b6-q8w2z" => Some(c.container.clone()),
            _ => None,
        })
        .expect("a container record for checkout");

    // The agent on node-b: the checkout process, a client of 10.244.1.12:8080, sampled every
    // second from well before the reuse to well after the old pod's deletion.
    let upid = Upid { asid: 7, pid: 4242, start_ticks: 99_000 };
    let start = reuse - 20 * SEC;
    let end = old_deleted + 20 * SEC;
    let mut agent = vec![Record::Process(Box::new(Process {
        time_: start,
        upid,
        cmdline: "/app/checkout --listen :5050".into(),
        comm: "checkout".into(),
        container: checkout_container,
        host: "node-b".into(),
        ..Default::default()
    }))];
    for (i, t) in (start..=end).step_by(SEC as usize).enumerate() {
        agent.push(Record::ConnStats(ConnStats {
            time_: t,
            upid,
            remote_addr: "10.244.1.12".parse().unwrap(),
            remote_port: 8080,
            trace_role: TraceRole::Client,
            conn_open: 1,
            conn_close: 0,
            conn_active: 1,
            bytes_sent: 1000 * (i as u64 + 1),
            bytes_recv: 5000 * (i as u64 + 1),
        }));
    }

    // Everything in time order (metadata first at equal times, as a source at the same
    // instant would be no later), through the job.
    let mut input: Vec<Record> = metadata.into_iter().chain(agent).collect();
    input.sort_by_key(|r| (r.time(), !matches!(r, Record::Name(_) | Record::Container(_))));
    let params = Params { group_by: GroupBy::Pod, ..Params::default() };
    let mut job = Job::new(JobConfig { params, lateness_ns: 0, progress_interval_ns: SEC, ..JobConfig::default() })
        .expect("a job");
    for record in input {
        job.push(record).expect("every record is accepted");
    }
    job.finish();
    let mut outputs = Vec::new();
    job.drain_into(&mut outputs);

    // The set of edges (from, to) in force, at each time it changes. Within one time,
    // retractions come before insertions, so the set is read after the time's last update.
    let mut edges: BTreeMap<(String, String), i64> = BTreeMap::new();
    let mut changes: BTreeMap<u64, BTreeSet<(String, String)>> = BTreeMap::new();
    let mut last_progress = 0;
    for output in &outputs {
        match output {
            Output::Update { time, diff, record: GraphRecord::Edge(Edge { from_entity, to_entity, .. }) } => {
                *edges.entry((from_entity.to_string(), to_entity.to_string())).or_default() += diff;
                edges.retain(|_, d| *d != 0);
                // Bytes change every second; what matters is which edges exist.
                let now: BTreeSet<_> = edges.keys().cloned().collect();
                let before = changes.range(..*time).next_back().map(|(_, e)| e.clone()).unwrap_or_default();
                if now != before {
                    changes.insert(*time, now);
                } else {
                    changes.remove(time);
                }
            }
            Output::Progress(p) => last_progress = *p,
            Output::Update { .. } => {}
        }
    }
    assert_eq!(last_progress, end + 1, "every time up to the last sample is complete");
    let at = |t: u64| -> BTreeSet<(String, String)> {
        changes.range(..=t).next_back().map(|(_, e)| e.clone()).unwrap_or_default()
    };
    let edge = |to: &str| BTreeSet::from([("shop/checkout-5f7d8c9b6-q8w2z".to_string(), to.to_string())]);
    let old = edge("shop/frontend-6c9b8d7f5-k2x4p");
    let new = edge("shop/frontend-7b4f9d6c8-m7n3r");
    assert_eq!(at(start), old, "from the first sample: checkout -> the old frontend pod");
    assert_eq!(at(reuse - 1), old, "never the new pod before the reuse");
    assert_eq!(at(reuse), new, "the new pod from the reuse time on");
    assert_eq!(at(old_deleted), new, "the old pod's late deletion does not move it back or drop it");
    assert_eq!(at(end), new);
    let change_times: Vec<u64> = changes.keys().copied().collect();
    assert_eq!(change_times, vec![start, reuse], "the edge set changes only at the first sample and the reuse");
}
