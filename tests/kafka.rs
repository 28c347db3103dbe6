//! The Kafka path against a real broker (`scripts/kafka`, Apache Kafka 4.x in KRaft mode,
//! fetched from Maven Central): recording -> `replay --to-kafka` -> `flowgraph run` -> delta
//! and state topics, compared with the in-process replay of the same recording.
//!
//! One broker serves every scenario, each on topics of its own.

mod common;
use common::{flowgraph, graph_of, smoke_reference, Broker, assert_same_deltas, delta_topic_outputs, read_topic, snapshot_as_state, state_topic_graph};
use flowgraph_pipeline::Output;
use rdkafka::config::ClientConfig;
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};



fn spawn_flowgraph(dir: &Path, args: &[&str]) -> Child {
    Command::new(env!("CARGO_BIN_EXE_flowgraph"))
        .current_dir(dir)
        .args(args)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .spawn()
        .expect("spawn flowgraph")
}

/// `flowgraph ui --from-kafka`, killed when dropped.
struct LiveView {
    child: Child,
    url: String,
}

impl LiveView {
    fn start(dir: &Path, args: &[&str]) -> LiveView {
        let mut child = Command::new(env!("CARGO_BIN_EXE_flowgraph"))
            .current_dir(dir)
            .args(args)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn flowgraph ui");
        let mut first = String::new();
        std::io::BufRead::read_line(&mut std::io::BufReader::new(child.stdout.take().unwrap()), &mut first).unwrap();
        let url = first
            .trim()
            .strip_prefix("flowgraph ui: live view at ")
            .unwrap_or_else(|| panic!("flowgraph ui printed {first:?}"))
            .trim_end_matches('/')
            .to_string();
        LiveView { child, url }
    }

    fn get(&self, path: &str) -> String {
        let mut response = ureq::get(&format!("{}{path}", self.url)).call().unwrap_or_else(|e| panic!("GET {path}: {e}"));
        response.body_mut().read_to_string().unwrap()
    }

    /// `/api/graph` once it has reached event time `time` (within 60 s).
    fn graph_at(&self, time: u64) -> serde_json::Value {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let graph: serde_json::Value = serde_json::from_str(&self.get("/api/graph")).unwrap();
            if graph["time"].as_u64().is_some_and(|t| t >= time) {
                return graph;
            }
            assert!(Instant::now() < deadline, "the live view did not reach {time}: at {}", graph["time"]);
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

impl Drop for LiveView {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn run_config(dir: &Path, bootstrap: &str, name: &str) -> PathBuf {
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(
        &path,
        format!(
            "[query]\nwindow = \"1m\"\n\n[kafka]\nbrokers = \"{bootstrap}\"\ninput_topic = \"{name}.in\"\n\
             deltas_topic = \"{name}.deltas\"\nstate_topic = \"{name}.state\"\n\
             dead_letter_topic = \"{name}.dead\"\ntransactional_id = \"{name}\"\n"
        ),
    )
    .unwrap();
    path
}

#[test]
fn kafka_path_equals_the_in_process_replay() {
    let broker = Broker::start("path", false);
    let b = broker.bootstrap();
    let dir = std::env::temp_dir().join(format!("flowgraph-test-kafka-work-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let reference = smoke_reference(&dir);
    let reference_state = snapshot_as_state(&reference);
    assert!(reference_state.len() > 100, "smoke graph suspiciously small");

    // 1. Straight through: same updates at every time, same final graph, same state topic.
    let config = run_config(&dir, b, "straight");
    flowgraph(&dir, &["replay", "--input", "smoke.fgb", "--to-kafka", "straight.in", "--partitions", "1", "--brokers", b]);
    let log = flowgraph(&dir, &["run", "--config", config.to_str().unwrap(), "--exit-when-idle", "2s"]);
    assert!(log.contains("late=0"), "records were late through Kafka:\n{log}");
    let published = delta_topic_outputs(b, "straight.deltas");
    assert_same_deltas(&published, &reference, "straight run");
    assert_eq!(state_topic_graph(b, "straight.state"), reference_state, "state topic differs");
    let marks: Vec<u64> = published.iter().filter_map(|o| match o { Output::Progress(p) => Some(*p), _ => None }).collect();
    assert!(marks.windows(2).all(|w| w[0] < w[1]), "progress marks not increasing");

    // 1a. What people and scripts read back: `tail --state`, `tail` of the deltas, and a
    //     recording of the input topic that replays to the same deltas.
    let edges = graph_of(&reference).edges().count();
    let expected = format!("{edges} edges");
    let state = flowgraph(&dir, &["tail", "--config", config.to_str().unwrap(), "--state", "--top", "3"]);
    assert!(state.contains(&expected), "tail --state: wanted {expected}\n{state}");
    let tail = flowgraph(&dir, &["tail", "--config", config.to_str().unwrap(), "--exit-at-end", "--top", "3"]);
    assert!(tail.contains(&expected), "tail: wanted {expected}\n{tail}");
    let recorded = flowgraph(&dir, &["record", "--from-kafka", "straight.in", "--out", "recorded.fgb", "--brokers", b]);
    assert!(recorded.contains("0 undecodable"), "{recorded}");
    flowgraph(&dir, &["replay", "--input", "recorded.fgb", "--window", "1m", "--deltas", "recorded.jsonl"]);
    assert!(
        std::fs::read(dir.join("recorded.jsonl")).unwrap() == std::fs::read(dir.join("reference.jsonl")).unwrap(),
        "the recording of the input topic does not replay to the same deltas"
    );

    // 1b. Four partitions, read in whatever interleaving the client fetches: per-partition
    //     clocks keep a partition read ahead from making the others late.
    let config = run_config(&dir, b, "multi");
    flowgraph(&dir, &["replay", "--input", "smoke.fgb", "--to-kafka", "multi.in", "--partitions", "4", "--brokers", b]);
    let log = flowgraph(&dir, &["run", "--config", config.to_str().unwrap(), "--exit-when-idle", "2s"]);
    assert!(log.contains("late=0"), "records were late across partitions:\n{log}");
    assert_same_deltas(&delta_topic_outputs(b, "multi.deltas"), &reference, "four partitions");
    assert_eq!(state_topic_graph(b, "multi.state"), reference_state, "state topic (four partitions)");

    // 2. kill -9 in the middle, restart: the delta topic continues without repeats or gaps,
    //    the state topic ends as in the crash-free run.
    let config = run_config(&dir, b, "crash");
    let mut producer = spawn_flowgraph(&dir, &["replay", "--input", "smoke.fgb", "--to-kafka", "crash.in", "--partitions", "1", "--brokers", b, "--rate", "4000"]);
    std::thread::sleep(Duration::from_secs(2));
    let metrics_addr = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().to_string()
    };
    let mut pipeline = spawn_flowgraph(&dir, &["run", "--config", config.to_str().unwrap(), "--metrics-addr", &metrics_addr]);
    std::thread::sleep(Duration::from_secs(2));
    // A live view joins mid-stream: it bootstraps from the state topic while the pipeline
    // writes, then follows the delta topic through the kill and the restart.
    let view = LiveView::start(&dir, &["ui", "--from-kafka", "--config", config.to_str().unwrap(), "--listen", "127.0.0.1:0"]);
    let scraped = Command::new("curl")
        .args(["-sf", &format!("http://{metrics_addr}/metrics")])
        .output()
        .expect("curl is needed for this test (Debian: apt-get install curl)");
    let metrics = String::from_utf8_lossy(&scraped.stdout).to_string();
    let records_in: f64 = metrics
        .lines()
        .filter(|l| l.starts_with("flowgraph_records_in_total"))
        .find_map(|l| l.rsplit_once(' ').and_then(|(_, v)| v.trim().parse().ok()))
        .unwrap_or_else(|| panic!("no flowgraph_records_in_total in /metrics:\n{metrics}"));
    assert!(records_in > 0.0, "the pipeline read nothing in 2 s:\n{metrics}");
    pipeline.kill().unwrap(); // SIGKILL
    pipeline.wait().unwrap();
    let before_crash = delta_topic_outputs(b, "crash.deltas");
    assert!(
        before_crash.iter().any(|o| matches!(o, Output::Progress(_))),
        "the first run published nothing before the kill; the scenario tests nothing"
    );
    assert!(producer.wait().unwrap().success());
    let log = flowgraph(&dir, &["run", "--config", config.to_str().unwrap(), "--exit-when-idle", "2s"]);
    assert!(log.contains("resuming after the last committed progress mark"), "{log}");
    let published = delta_topic_outputs(b, "crash.deltas");
    assert_same_deltas(&published, &reference, "run with a kill -9 and a restart");
    assert_eq!(state_topic_graph(b, "crash.state"), reference_state, "state topic after the crash differs");
    let final_graph = graph_of(&reference);
    let expected: serde_json::Value = serde_json::from_str(&final_graph.snapshot_json()).unwrap();
    let shown = view.graph_at(expected["time"].as_u64().unwrap());
    assert!(
        shown["rows"] == expected["rows"] && shown["edges"] == expected["edges"],
        "the live view that joined mid-stream ends on a different graph than the replay"
    );
    let params = view.get("/api/params");
    assert!(params.contains("\"editable\":false") && params.contains("\"window\":\"1m\""), "{params}");
    drop(view);

    // 3. Garbage between valid messages: every valid record processed, every bad message
    //    in the dead-letter topic, the result unchanged.
    let config = run_config(&dir, b, "garbage");
    flowgraph(&dir, &["replay", "--input", "smoke.fgb", "--to-kafka", "garbage.in", "--partitions", "1", "--brokers", b]);
    let raw: ThreadedProducer<DefaultProducerContext> = ClientConfig::new().set("bootstrap.servers", b).create().unwrap();
    let mut truncated = Vec::new();
    flowgraph_schema::binary::encode_frame(&[], &mut truncated);
    truncated.extend_from_slice(&[1, 2, 3]);
    let mut wrong_version = truncated.clone();
    wrong_version[2] = 9;
    let garbage: Vec<Vec<u8>> = vec![b"\x00\xffrandom bytes".to_vec(), truncated, wrong_version, b"{\"type\":\"conn_stats\"".to_vec()];
    for payload in &garbage {
        raw.send(BaseRecord::<str, [u8]>::to("garbage.in").key("junk").payload(payload)).unwrap();
    }
    raw.flush(Duration::from_secs(10)).unwrap();
    let log = flowgraph(&dir, &["run", "--config", config.to_str().unwrap(), "--exit-when-idle", "2s"]);
    assert!(log.contains("decode_errors=4") && log.contains("dead_letters=4"), "{log}");
    assert_eq!(read_topic(b, "garbage.dead").len(), 4, "dead-letter topic");
    assert_eq!(state_topic_graph(b, "garbage.state"), reference_state, "garbage changed the result");
    let _ = std::fs::remove_dir_all(&dir);
}
