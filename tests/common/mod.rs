//! Helpers shared by the real-broker tests (tests/kafka.rs, tests/kafka_failures.rs,
//! tests/cluster.rs): a broker from scripts/kafka, reading topics back, comparing delta
//! streams and state topics with the in-process replay; reading /metrics over HTTP (also
//! tests/agent.rs); and a graph document's rows and edges as sets (also tests/ui.rs).
// Each test binary compiles this module and uses a subset of it.
#![allow(dead_code)]

use flowgraph_pipeline::{GraphRecord, Output};
use flowgraph_sinks::graph::GraphState;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::{Offset, TopicPartitionList};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Runs `flowgraph ARGS` in `dir`, asserts it succeeded, and returns its stdout and stderr
/// (logs at info level, which tests grep).
pub fn flowgraph(dir: &Path, args: &[&str]) -> String {
    let output = Command::new(env!("CARGO_BIN_EXE_flowgraph"))
        .current_dir(dir)
        .args(args)
        .env("RUST_LOG", "info")
        .output()
        .expect("run flowgraph");
    let stdout = String::from_utf8_lossy(&output.stdout).to_string();
    let stderr = String::from_utf8_lossy(&output.stderr).to_string();
    assert!(output.status.success(), "flowgraph {args:?} failed\n{stdout}\n{stderr}");
    stdout + &stderr
}

/// The smoke stream (seed 11) written to `dir/smoke.fgb` and its in-process replay with a
/// 1-minute window: the reference the Kafka and cluster runs must reproduce.
pub fn smoke_reference(dir: &Path) -> Vec<Output> {
    flowgraph(dir, &["generate", "--size", "smoke", "--seed", "11", "--out", "smoke.fgb"]);
    flowgraph(dir, &["replay", "--input", "smoke.fgb", "--window", "1m", "--deltas", "reference.jsonl"]);
    std::fs::read_to_string(dir.join("reference.jsonl"))
        .unwrap()
        .lines()
        .map(|l| flowgraph_sinks::deltas::from_line(l).unwrap())
        .collect()
}

/// The graph a consumer holds after applying `outputs`.
pub fn graph_of(outputs: &[Output]) -> GraphState {
    outputs.iter().fold(GraphState::default(), |mut graph, output| {
        graph.apply(output);
        graph
    })
}

pub fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// A broker started by the project's script, stopped (and its dir removed) on drop.
pub struct Broker {
    dir: PathBuf,
    /// What `start` printed: bootstrap=, and with --secure secure_bootstrap=, ca_pem=, ...
    pub endpoints: BTreeMap<String, String>,
    /// Whether `pause` stopped its process.
    paused: bool,
}

impl Broker {
    pub fn start(name: &str, secure: bool) -> Broker {
        let dir = std::env::temp_dir().join(format!("flowgraph-kf-kafka-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let mut broker = Broker { dir, endpoints: BTreeMap::new(), paused: false };
        let mut args = vec!["--port", "auto"];
        if secure {
            args.push("--secure");
        }
        broker.run_start(&args);
        broker
    }

    /// `scripts/kafka start ARGS --dir DIR`; a dir remembers its port, so a restart needs
    /// no --port.
    pub fn run_start(&mut self, args: &[&str]) {
        let output = Command::new(root().join("scripts/kafka"))
            .arg("start")
            .args(args)
            .arg("--dir")
            .arg(&self.dir)
            .stderr(Stdio::inherit())
            .output()
            .expect("cannot run scripts/kafka");
        let stdout = String::from_utf8_lossy(&output.stdout);
        self.endpoints =
            stdout.lines().filter_map(|l| l.split_once('=')).map(|(k, v)| (k.to_string(), v.to_string())).collect();
        assert!(
            output.status.success() && self.endpoints.contains_key("bootstrap"),
            "scripts/kafka start failed ({}): these tests need a real Kafka broker, which the \
             script fetches with Maven (needs java 17+ and mvn: run scripts/setup)\n{stdout}",
            output.status
        );
    }

    pub fn bootstrap(&self) -> &str {
        &self.endpoints["bootstrap"]
    }

    pub fn stop(&self) {
        let status = Command::new(root().join("scripts/kafka"))
            .args(["stop", "--dir"])
            .arg(&self.dir)
            .status()
            .expect("cannot run scripts/kafka");
        assert!(status.success(), "scripts/kafka stop failed");
    }

    /// Stops the broker's process (SIGSTOP) without closing its connections: a broker that
    /// no longer answers, as a hung JVM or a network partition looks to a client, where a
    /// stopped one refuses connections at once. `resume` (SIGCONT) undoes it; dropping a
    /// paused broker resumes it first.
    pub fn pause(&mut self) {
        assert!(self.signal("-STOP"), "cannot pause the broker in {}", self.dir.display());
        self.paused = true;
    }

    pub fn resume(&mut self) {
        assert!(self.signal("-CONT"), "cannot resume the broker in {}", self.dir.display());
        self.paused = false;
    }

    /// `kill SIGNAL` to the broker's process; whether it was sent.
    fn signal(&self, signal: &str) -> bool {
        let Ok(pid) = std::fs::read_to_string(self.dir.join("kafka.pid")) else { return false };
        Command::new("kill").args([signal, pid.trim()]).status().is_ok_and(|s| s.success())
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        // Not asserted: a drop may run while a failed test unwinds.
        if self.paused {
            self.signal("-CONT");
        }
        let _ = Command::new(root().join("scripts/kafka")).args(["stop", "--dir"]).arg(&self.dir).status();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A child process killed (SIGKILL) if the test ends while it runs.
pub struct Proc(pub Child);

impl Drop for Proc {
    fn drop(&mut self) {
        if matches!(self.0.try_wait(), Ok(None)) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// Spawns `flowgraph ARGS` in `dir` with its log (RUST_LOG=info) in `dir/log`; killed when the
/// returned [`Proc`] is dropped, so a failing test leaves nothing running.
pub fn spawn_flowgraph(dir: &Path, log: &str, args: &[&str]) -> Proc {
    spawn_binary(Path::new(env!("CARGO_BIN_EXE_flowgraph")), dir, log, args)
}

/// [`spawn_flowgraph`] with a given copy of the binary (tests/kafka_failures.rs runs a private
/// link that other builds cannot replace under it).
pub fn spawn_binary(binary: &Path, dir: &Path, log: &str, args: &[&str]) -> Proc {
    let stderr = std::fs::File::create(dir.join(log)).unwrap();
    Proc(
        Command::new(binary)
            .current_dir(dir)
            .args(args)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .expect("spawn flowgraph"),
    )
}

/// One message read back from a topic.
#[derive(Debug, Clone)]
pub struct TopicMessage {
    pub partition: i32,
    pub offset: i64,
    pub key: Option<String>,
    pub payload: Option<Vec<u8>>,
    /// Header values as (lossy) text, by key.
    pub headers: BTreeMap<String, String>,
}

/// An address on loopback that was free a moment ago, for a server the test starts.
pub fn free_local_addr() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().to_string()
}

/// `GET path` from `addr` over HTTP: (status, body); `None` while the endpoint does not answer.
pub fn http_get(addr: &str, path: &str) -> Option<(u16, String)> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_connect(Some(Duration::from_secs(1)))
        .timeout_global(Some(Duration::from_secs(3)))
        .build()
        .into();
    let mut response = agent.get(&format!("http://{addr}{path}")).call().ok()?;
    Some((response.status().as_u16(), response.body_mut().read_to_string().ok()?))
}

/// The Prometheus text of `addr`'s `/metrics`; panics unless it answers 200.
pub fn scrape(addr: &str) -> String {
    match http_get(addr, "/metrics") {
        Some((200, text)) => text,
        other => panic!("GET http://{addr}/metrics: {other:?}"),
    }
}

/// The first sample of the metric `name` in a Prometheus text exposition (labelled or not).
pub fn metric(metrics: &str, name: &str) -> Option<f64> {
    metrics
        .lines()
        .filter(|l| l.strip_prefix(name).is_some_and(|rest| rest.starts_with([' ', '{'])))
        .find_map(|l| l.rsplit_once(' ').and_then(|(_, v)| v.trim().parse().ok()))
}

/// A producer's head start: returns `after_first` after the first message reached any of
/// `topic`'s `partitions`. A partition that is empty when a source starts does not hold the
/// frontier (an idle agent must not stall the graph), so records that reach it later, behind
/// the other partitions' clocks, would be late; the head start lets every agent's first
/// records in. It counts from the first message, not from the producer's start, which on a
/// fresh broker can wait seconds for its producer id.
pub fn head_start(bootstrap: &str, topic: &str, partitions: usize, after_first: Duration) {
    let consumer: BaseConsumer = ClientConfig::new().set("bootstrap.servers", bootstrap).create().unwrap();
    let started = Instant::now();
    let any = || {
        (0..partitions as i32).any(|partition| {
            consumer.fetch_watermarks(topic, partition, Duration::from_secs(5)).is_ok_and(|(low, high)| high > low)
        })
    };
    while !any() {
        assert!(started.elapsed() < Duration::from_secs(60), "{topic}: no message in 60 s (see the producer's log)");
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(after_first);
}

/// Every message of a topic's partitions as (key, payload), from the beginning to the
/// current end, committed only.
pub fn read_topic(bootstrap: &str, topic: &str) -> Vec<(Option<String>, Option<Vec<u8>>)> {
    read_messages(bootstrap, topic).into_iter().map(|m| (m.key, m.payload)).collect()
}

/// Every message of a topic's partitions, with partition, offset and headers, from the
/// beginning to the current end, committed only.
pub fn read_messages(bootstrap: &str, topic: &str) -> Vec<TopicMessage> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", "flowgraph-test-reader")
        .set("enable.auto.commit", "false")
        .set("isolation.level", "read_committed")
        .create()
        .unwrap();
    let metadata = consumer.fetch_metadata(Some(topic), Duration::from_secs(10)).unwrap();
    let partitions: Vec<i32> = metadata.topics()[0].partitions().iter().map(|p| p.id()).collect();
    let mut out = Vec::new();
    for partition in partitions {
        let (low, high) = consumer.fetch_watermarks(topic, partition, Duration::from_secs(10)).unwrap();
        if high <= low {
            continue;
        }
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(topic, partition, Offset::Beginning).unwrap();
        consumer.assign(&tpl).unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            assert!(Instant::now() < deadline, "timed out reading {topic}/{partition}");
            match consumer.poll(Duration::from_millis(500)) {
                Some(Ok(m)) => {
                    let headers = m
                        .headers()
                        .map(|h| {
                            h.iter()
                                .map(|h| {
                                    (
                                        h.key.to_string(),
                                        String::from_utf8_lossy(h.value.unwrap_or_default()).to_string(),
                                    )
                                })
                                .collect()
                        })
                        .unwrap_or_default();
                    out.push(TopicMessage {
                        partition,
                        offset: m.offset(),
                        key: m.key().map(|k| String::from_utf8_lossy(k).to_string()),
                        payload: m.payload().map(<[u8]>::to_vec),
                        headers,
                    });
                    if m.offset() + 1 >= high {
                        break;
                    }
                }
                Some(Err(e)) => panic!("reading {topic}: {e}"),
                // Transaction markers take offsets too: a transactional topic's last data
                // message is before its end, and the reader stops once it is past it.
                None => {
                    if consumer
                        .position()
                        .unwrap()
                        .elements()
                        .iter()
                        .all(|e| matches!(e.offset(), Offset::Offset(o) if o >= high - 1))
                    {
                        break;
                    }
                }
            }
        }
    }
    out
}

/// Updates per time, consolidated: what any correct delta stream must agree on.
pub fn per_time(outputs: &[Output]) -> BTreeMap<u64, BTreeMap<GraphRecord, i64>> {
    let mut by_time: BTreeMap<u64, BTreeMap<GraphRecord, i64>> = BTreeMap::new();
    for output in outputs {
        if let Output::Update { time, diff, record } = output {
            *by_time.entry(*time).or_default().entry(record.clone()).or_default() += diff;
        }
    }
    for updates in by_time.values_mut() {
        updates.retain(|_, d| *d != 0);
    }
    by_time.retain(|_, u| !u.is_empty());
    by_time
}

/// Compares two delta streams time by time and panics with a short account of the first
/// difference (the whole maps are far too long to print).
pub fn assert_same_deltas(actual: &[Output], expected: &[Output], what: &str) {
    let (a, e) = (per_time(actual), per_time(expected));
    if a == e {
        return;
    }
    let times: std::collections::BTreeSet<u64> = a.keys().chain(e.keys()).copied().collect();
    let empty = BTreeMap::new();
    for t in times {
        let (at, et) = (a.get(&t).unwrap_or(&empty), e.get(&t).unwrap_or(&empty));
        if at != et {
            let extra: Vec<_> = at.iter().filter(|(r, d)| et.get(*r) != Some(*d)).take(3).collect();
            let missing: Vec<_> = et.iter().filter(|(r, d)| at.get(*r) != Some(*d)).take(3).collect();
            panic!(
                "{what}: {} times vs {} expected; first difference at time {t}: {} updates vs {}\n\
                 unexpected: {extra:?}\nmissing: {missing:?}",
                a.len(),
                e.len(),
                at.len(),
                et.len()
            );
        }
    }
}

/// Progress marks increase, and every update lies between the mark before it and the mark
/// after it (time >= the previous mark, time < the next one), so the updates published up to
/// any mark P are exactly those with time < P: with [`assert_same_deltas`], two streams then
/// hold the same delta multiset at each progress mark of either.
pub fn assert_marks_cover(outputs: &[Output], what: &str) {
    let mut previous = 0;
    let mut open: Vec<u64> = Vec::new();
    for output in outputs {
        match output {
            Output::Update { time, .. } => {
                assert!(*time >= previous, "{what}: an update at {time} after the mark {previous}");
                open.push(*time);
            }
            Output::Progress(mark) => {
                assert!(*mark > previous, "{what}: mark {mark} after mark {previous}");
                assert!(open.iter().all(|t| t < mark), "{what}: an update at or after the mark {mark} before it");
                open.clear();
                previous = *mark;
            }
        }
    }
    assert!(open.is_empty(), "{what}: {} updates after the last mark", open.len());
}

pub fn delta_topic_outputs(bootstrap: &str, topic: &str) -> Vec<Output> {
    read_topic(bootstrap, topic)
        .into_iter()
        .flat_map(|(_, payload)| flowgraph_sinks::kafka::decode(&payload.unwrap()).unwrap())
        .collect()
}

/// The state topic folded by key: the graph a late consumer reconstructs.
pub fn state_topic_graph(bootstrap: &str, topic: &str) -> BTreeMap<String, String> {
    let mut state = BTreeMap::new();
    for (key, payload) in read_topic(bootstrap, topic) {
        let key = key.expect("state messages are keyed");
        match payload {
            Some(value) => state.insert(key, String::from_utf8(value).unwrap()),
            None => state.remove(&key),
        };
    }
    state
}

pub fn snapshot_as_state(outputs: &[Output]) -> BTreeMap<String, String> {
    let mut graph = GraphState::default();
    outputs.iter().for_each(|o| graph.apply(o));
    let rows = graph.rows().cloned().map(GraphRecord::Row);
    let edges = graph.edges().cloned().map(GraphRecord::Edge);
    rows.chain(edges).map(|r| flowgraph_sinks::kafka::state_entry(&r)).collect()
}

/// A graph document's rows and edges (`/api/graph`, a stream's snapshot, `replay --snapshot`)
/// as sets of their JSON: `/api/graph` sends them in no particular order.
pub fn rows_and_edges(document: &serde_json::Value) -> (BTreeSet<String>, BTreeSet<String>) {
    let set = |key: &str| document[key].as_array().unwrap().iter().map(serde_json::Value::to_string).collect();
    (set("rows"), set("edges"))
}
