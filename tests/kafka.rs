//! The Kafka path against a real broker (`scripts/kafka`, Apache Kafka 4.x in KRaft mode,
//! fetched from Maven Central): recording -> `replay --to-kafka` -> `flowgraph run` -> delta
//! and state topics, compared with the in-process replay of the same recording.
//!
//! One broker serves every scenario, each on topics of its own.

mod common;
use common::{
    assert_marks_cover, assert_same_deltas, delta_topic_outputs, flowgraph, free_local_addr, graph_of, head_start,
    http_get, metric, read_messages, read_topic, rows_and_edges, smoke_reference, snapshot_as_state, spawn_flowgraph,
    state_topic_graph, Broker,
};
use flowgraph_pipeline::Output;
use flowgraph_schema::{binary, Record};
use rdkafka::config::ClientConfig;
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

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
        let mut response =
            ureq::get(&format!("{}{path}", self.url)).call().unwrap_or_else(|e| panic!("GET {path}: {e}"));
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

/// The fields (`name=value`) of `flowgraph run`'s last progress report in `log`.
fn last_report(log: &str) -> BTreeMap<String, String> {
    let line = log
        .lines()
        .rev()
        .find(|l| l.contains("flowgraph run: progress"))
        .unwrap_or_else(|| panic!("no progress report in the log:\n{log}"));
    line.split_whitespace()
        .filter_map(|field| field.split_once('='))
        .map(|(name, value)| (name.to_string(), value.to_string()))
        .collect()
}

/// The bad message of kind `kind % 4`, built from real `records` so that only the damage
/// makes it bad, and what its dead letter's reason must say.
fn bad_message(kind: usize, records: &[Record]) -> (Vec<u8>, &'static str) {
    let frame = || {
        let mut frame = Vec::new();
        binary::encode_frame(records, &mut frame);
        frame
    };
    match kind % 4 {
        0 => {
            // Random bytes (xorshift, seeded by the kind): not a frame (0xff first, never
            // valid UTF-8), and no newline, so the JSON Lines decoder sees one bad line.
            let mut x = 0x9e37_79b9u32 ^ kind as u32;
            let mut bytes = vec![0xff];
            while bytes.len() < 64 {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                bytes.extend(x.to_le_bytes().into_iter().filter(|b| *b != b'\n'));
            }
            (bytes, "line 1: not UTF-8")
        }
        1 => {
            // A frame cut in half: its length field claims more bytes than follow.
            let mut frame = frame();
            let claimed = u32::from_le_bytes(frame[4..8].try_into().unwrap()) as usize;
            frame.truncate(binary::HEADER_LEN + claimed / 2);
            assert!(claimed > frame.len() - binary::HEADER_LEN);
            (frame, "truncated frame")
        }
        2 => {
            let mut frame = frame();
            frame[2] = 9;
            (frame, "unsupported format version 9")
        }
        _ => (br#"{"type":"conn_stats","time_":1717200000000000000,"upid":"#.to_vec(), "line 1: "),
    }
}

/// Publishes the recording to `topic` (one partition, created here) as frames of 500
/// records, with a bad message before the first frame, after every fourth and after the last,
/// of each kind in turn. Returns the records published in valid frames and the reasons the
/// bad messages' dead letters must give, in order.
fn publish_with_garbage(bootstrap: &str, topic: &str, recording: &Path) -> (u64, Vec<(Vec<u8>, &'static str)>) {
    flowgraph_sources::kafka::create_topic_if_missing(bootstrap, &BTreeMap::new(), topic, 1).unwrap();
    let mut reader = flowgraph_sources::recording::open(recording).unwrap();
    let mut records = Vec::new();
    while let Some(item) = reader.next_item().unwrap() {
        records.push(item.expect("the smoke recording has no bad input").1);
    }
    let producer: ThreadedProducer<DefaultProducerContext> =
        ClientConfig::new().set("bootstrap.servers", bootstrap).set("enable.idempotence", "true").create().unwrap();
    let send = |key: &str, payload: &[u8]| {
        producer.send(BaseRecord::<str, [u8]>::to(topic).key(key).payload(payload)).map_err(|(e, _)| e).unwrap()
    };
    let mut bad = Vec::new();
    let mut send_bad = |before: &[Record]| {
        let (payload, reason) = bad_message(bad.len(), &before[..before.len().min(50)]);
        send("junk", &payload);
        bad.push((payload, reason));
    };
    let frames: Vec<&[Record]> = records.chunks(500).collect();
    for (i, chunk) in frames.iter().enumerate() {
        if i % 4 == 0 {
            send_bad(chunk);
        }
        let mut frame = Vec::new();
        binary::encode_frame(chunk, &mut frame);
        send("agent", &frame);
    }
    send_bad(frames[frames.len() - 1]);
    producer.flush(Duration::from_secs(30)).unwrap();
    (records.len() as u64, bad)
}

/// The number right after the first `marker` in a command's output.
fn number_after(output: &str, marker: &str) -> u64 {
    let at = output.find(marker).unwrap_or_else(|| panic!("no {marker:?} in:\n{output}")) + marker.len();
    output[at..]
        .split(|c: char| !c.is_ascii_digit())
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{output}"))
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
    let replayed = flowgraph(
        &dir,
        &["replay", "--input", "smoke.fgb", "--to-kafka", "straight.in", "--partitions", "1", "--brokers", b],
    );
    let status_file = dir.join("straight.status.jsonl");
    let log = flowgraph(
        &dir,
        &[
            "run",
            "--config",
            config.to_str().unwrap(),
            "--exit-when-idle",
            "2s",
            "--status-file",
            status_file.to_str().unwrap(),
        ],
    );
    assert!(log.contains("late=0"), "records were late through Kafka:\n{log}");
    let published = delta_topic_outputs(b, "straight.deltas");
    // The status file, for programs that drive `run`: the worker started consuming, then
    // stopped having read every record published, none late, at the last mark published.
    let status: Vec<serde_json::Value> = std::fs::read_to_string(&status_file)
        .unwrap()
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{line}: {e}")))
        .collect();
    let events: Vec<&str> = status.iter().map(|e| e["event"].as_str().unwrap()).collect();
    assert_eq!(events, ["consuming", "stopped"], "{status:?}");
    let records_published = number_after(&replayed, "published ");
    let stopped = &status[1];
    assert_eq!((stopped["worker"].as_u64(), stopped["workers"].as_u64()), (Some(0), Some(1)), "{stopped}");
    assert_eq!(
        (stopped["records"].as_u64(), stopped["late"].as_u64()),
        (Some(records_published), Some(0)),
        "{stopped}"
    );
    let last_mark = published.iter().rev().find_map(|o| match o {
        Output::Progress(p) => Some(*p),
        _ => None,
    });
    assert_eq!(stopped["last_progress"].as_u64(), last_mark, "{stopped}");
    assert_same_deltas(&published, &reference, "straight run");
    assert_marks_cover(&published, "straight run");
    assert_eq!(state_topic_graph(b, "straight.state"), reference_state, "state topic differs");

    // 1a. What people and scripts read back: `tail --state`, `tail` of the deltas, and a
    //     recording of the input topic that replays to the same deltas.
    let edges = graph_of(&reference).edge_count();
    let expected = format!("{edges} edges");
    let state = flowgraph(&dir, &["tail", "--config", config.to_str().unwrap(), "--state", "--top", "3"]);
    assert!(state.contains(&expected), "tail --state: wanted {expected}\n{state}");
    let tail = flowgraph(&dir, &["tail", "--config", config.to_str().unwrap(), "--exit-at-end", "--top", "3"]);
    assert!(tail.contains(&expected), "tail: wanted {expected}\n{tail}");
    let recorded = flowgraph(&dir, &["record", "--from-kafka", "straight.in", "--out", "recorded.fgb", "--brokers", b]);
    assert!(recorded.contains("0 undecodable"), "{recorded}");
    // Reading to a topic's end is the normal way these end: nothing to log as an error.
    for (what, output) in [("tail --state", &state), ("tail", &tail), ("record", &recorded)] {
        assert!(!output.contains(" ERROR "), "{what} logged an error\n{output}");
    }
    flowgraph(&dir, &["replay", "--input", "recorded.fgb", "--window", "1m", "--deltas", "recorded.jsonl"]);
    assert!(
        std::fs::read(dir.join("recorded.jsonl")).unwrap() == std::fs::read(dir.join("reference.jsonl")).unwrap(),
        "the recording of the input topic does not replay to the same deltas"
    );

    // 1b. Four partitions, read in whatever interleaving the client fetches: per-partition
    //     clocks keep a partition read ahead from making the others late.
    //     Published with `--max` (no pacing, the default, said explicitly); it excludes the
    //     pacing flags. This run writes bincode deltas, which the readers below must follow.
    let config = run_config(&dir, b, "multi");
    let mut text = std::fs::read_to_string(&config).unwrap();
    text.push_str("delta_format = \"bincode\"\n");
    std::fs::write(&config, text).unwrap();
    flowgraph(
        &dir,
        &["replay", "--input", "smoke.fgb", "--to-kafka", "multi.in", "--partitions", "4", "--brokers", b, "--max"],
    );
    for pacing in [["--rate", "100"], ["--speed", "10x"]] {
        let output = Command::new(env!("CARGO_BIN_EXE_flowgraph"))
            .current_dir(&dir)
            .args(["replay", "--input", "smoke.fgb", "--to-kafka", "multi.in", "--brokers", b, "--max"])
            .args(pacing)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success() && stderr.contains("cannot be used with"), "--max with {pacing:?}: {stderr}");
    }
    let log = flowgraph(&dir, &["run", "--config", config.to_str().unwrap(), "--exit-when-idle", "2s"]);
    assert!(log.contains("late=0"), "records were late across partitions:\n{log}");
    // Checkpoint messages are empty; every other message is bincode.
    let messages = read_topic(b, "multi.deltas");
    let other = messages.iter().filter_map(|(_, payload)| payload.as_ref()).filter(|payload| !payload.is_empty());
    let other = other.filter(|payload| !payload.starts_with(&flowgraph_sinks::kafka::BINCODE_MAGIC)).count();
    assert_eq!(other, 0, "delta_format = \"bincode\" wrote other messages ({} in all)", messages.len());
    let published = delta_topic_outputs(b, "multi.deltas");
    assert_same_deltas(&published, &reference, "four partitions");
    assert_marks_cover(&published, "four partitions");
    assert_eq!(state_topic_graph(b, "multi.state"), reference_state, "state topic (four partitions)");
    // The bincode deltas read back: `tail`, and the live view's bootstrap, which with
    // `--exit-at-end` stops at the delta topic's end and prints the graph's size.
    let rows = graph_of(&reference).row_count();
    let tail = flowgraph(&dir, &["tail", "--config", config.to_str().unwrap(), "--exit-at-end", "--top", "3"]);
    assert!(tail.contains(&format!("{edges} edges, {rows} rows")), "tail of bincode deltas:\n{tail}");
    // Run with a deadline: a view that ignored --exit-at-end would serve until killed.
    let mut view = Command::new(env!("CARGO_BIN_EXE_flowgraph"))
        .current_dir(&dir)
        .args(["ui", "--from-kafka", "--config", config.to_str().unwrap(), "--exit-at-end", "--listen", "127.0.0.1:0"])
        .env("RUST_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(dir.join("view-at-end.log")).unwrap())
        .spawn()
        .unwrap();
    let log = || std::fs::read_to_string(dir.join("view-at-end.log")).unwrap_or_default();
    let deadline = Instant::now() + Duration::from_secs(60);
    while view.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = view.kill();
            panic!("ui --from-kafka --exit-at-end still ran 60 s after its start:\n{}", log());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let view = view.wait_with_output().unwrap();
    let printed = String::from_utf8_lossy(&view.stdout);
    let bootstrapped = format!("bootstrapped from multi.state and multi.deltas: {edges} edges, {rows} rows at ");
    assert!(
        view.status.success() && printed.contains(&bootstrapped),
        "ui --from-kafka --exit-at-end: wanted {bootstrapped}, got {}\n{printed}\n{}",
        view.status,
        log()
    );

    // 2. kill -9 in the middle, restart: the delta topic continues without repeats or gaps,
    //    the state topic ends as in the crash-free run.
    let config = run_config(&dir, b, "crash");
    let mut producer = spawn_flowgraph(
        &dir,
        "crash-producer.log",
        &[
            "replay", "--input", "smoke.fgb", "--to-kafka", "crash.in", "--partitions", "1", "--brokers", b, "--rate",
            "4000",
        ],
    );
    head_start(b, "crash.in", 1, Duration::from_secs(2));
    let metrics_addr = free_local_addr();
    let mut pipeline = spawn_flowgraph(
        &dir,
        "crash-run.log",
        &["run", "--config", config.to_str().unwrap(), "--metrics-addr", &metrics_addr],
    );
    // Empty while the endpoint does not answer yet.
    let scrape = || http_get(&metrics_addr, "/metrics").map(|(_, text)| text).unwrap_or_default();
    // Killed once it has committed a transaction: its start-up (the sink's set-up on a fresh
    // broker) takes from under a second to a few on this machine, so no fixed sleep will do.
    let deadline = Instant::now() + Duration::from_secs(60);
    while metric(&scrape(), "flowgraph_transactions_total").unwrap_or(0.0) < 1.0 {
        assert!(Instant::now() < deadline, "the first run committed no transaction in 60 s:\n{}", scrape());
        std::thread::sleep(Duration::from_millis(100));
    }
    // A live view joins mid-stream: it bootstraps from the state topic while the pipeline
    // writes, then follows the delta topic through the kill and the restart.
    let view =
        LiveView::start(&dir, &["ui", "--from-kafka", "--config", config.to_str().unwrap(), "--listen", "127.0.0.1:0"]);
    let metrics = scrape();
    let value =
        |name: &str| -> f64 { metric(&metrics, name).unwrap_or_else(|| panic!("no {name} in /metrics:\n{metrics}")) };
    assert!(value("flowgraph_records_in_total") > 0.0, "the pipeline committed before reading:\n{metrics}");
    assert_eq!(value("flowgraph_transaction_aborts_total"), 0.0, "{metrics}");
    // Each committed transaction wrote at least its progress mark.
    assert!(
        value("flowgraph_delta_messages_out_total") >= value("flowgraph_transactions_total"),
        "delta messages and transactions disagree:\n{metrics}"
    );
    value("flowgraph_state_records_out_total"); // served from the start (panics if missing)
                                                // Every metric /metrics serves is in the telemetry table of docs/KAFKA.md.
    let documented = std::fs::read_to_string(common::root().join("docs/KAFKA.md")).unwrap();
    for line in metrics.lines().filter(|l| l.starts_with("flowgraph_")) {
        let name = line.split(['{', ' ']).next().unwrap();
        assert!(documented.contains(&format!("`{name}")), "{name} is served at /metrics but not in docs/KAFKA.md");
    }
    pipeline.0.kill().unwrap(); // SIGKILL
    pipeline.0.wait().unwrap();
    let before_crash = delta_topic_outputs(b, "crash.deltas");
    assert!(
        before_crash.iter().any(|o| matches!(o, Output::Progress(_))),
        "the first run published nothing before the kill; the scenario tests nothing"
    );
    assert!(producer.0.wait().unwrap().success());
    let log = flowgraph(&dir, &["run", "--config", config.to_str().unwrap(), "--exit-when-idle", "2s"]);
    assert!(log.contains("resuming after the last committed progress mark"), "{log}");
    // Reading the delta topic to its end to resume is not an error (it logged one, PartitionEOF).
    let errors: Vec<&str> = log.lines().filter(|line| line.contains(" ERROR ")).collect();
    assert!(errors.is_empty(), "the restart logged errors: {errors:#?}");
    let published = delta_topic_outputs(b, "crash.deltas");
    assert_same_deltas(&published, &reference, "run with a kill -9 and a restart");
    assert_marks_cover(&published, "run with a kill -9 and a restart");
    assert_eq!(state_topic_graph(b, "crash.state"), reference_state, "state topic after the crash differs");
    let final_graph = graph_of(&reference);
    let expected: serde_json::Value = serde_json::from_str(&final_graph.snapshot_json()).unwrap();
    let shown = view.graph_at(expected["time"].as_u64().unwrap());
    assert!(
        rows_and_edges(&shown) == rows_and_edges(&expected),
        "the live view that joined mid-stream ends on a different graph than the replay"
    );
    let params = view.get("/api/params");
    assert!(params.contains("\"editable\":false") && params.contains("\"window\":\"1m\""), "{params}");
    drop(view);

    // 3. Garbage between valid messages (random bytes, a frame cut short, a wrong version,
    //    truncated JSON): every valid record processed, every bad message counted and in the
    //    dead-letter topic with its reason and origin, the result unchanged.
    let config = run_config(&dir, b, "garbage");
    let (valid, bad) = publish_with_garbage(b, "garbage.in", &dir.join("smoke.fgb"));
    let input = read_messages(b, "garbage.in");
    let bad_offsets: Vec<i64> = input.iter().filter(|m| m.key.as_deref() == Some("junk")).map(|m| m.offset).collect();
    assert_eq!(bad_offsets.len(), bad.len(), "bad messages on the input topic");
    assert!(bad_offsets[0] == 0 && bad_offsets[bad.len() - 1] == input.len() as i64 - 1, "{bad_offsets:?}");
    let log = flowgraph(&dir, &["run", "--config", config.to_str().unwrap(), "--exit-when-idle", "2s"]);
    let report = last_report(&log);
    let count = |name: &str| report.get(name).and_then(|v| v.parse::<u64>().ok());
    assert_eq!(count("records"), Some(valid), "records read around the garbage:\n{log}");
    assert_eq!(count("decode_errors"), Some(bad.len() as u64), "{log}");
    assert_eq!(count("dead_letters"), Some(bad.len() as u64), "{log}");
    let letters = read_messages(b, "garbage.dead");
    assert_eq!(letters.len(), bad.len(), "dead-letter topic");
    for ((letter, (payload, reason)), offset) in letters.iter().zip(&bad).zip(&bad_offsets) {
        let origin = format!("garbage.in/0@{offset}");
        assert_eq!(letter.headers.get("flowgraph.origin"), Some(&origin), "{letter:?}");
        assert_eq!(letter.key.as_ref(), Some(&origin), "dead letter key");
        let given = letter.headers.get("flowgraph.reason").map(String::as_str).unwrap_or_default();
        assert!(given.contains(reason), "dead letter of {origin}: reason {given:?}, wanted {reason:?}");
        assert_eq!(letter.payload.as_ref(), Some(payload), "dead letter of {origin} does not carry the bad message");
    }
    let published = delta_topic_outputs(b, "garbage.deltas");
    assert_same_deltas(&published, &reference, "garbage between valid messages");
    assert_marks_cover(&published, "garbage between valid messages");
    assert_eq!(state_topic_graph(b, "garbage.state"), reference_state, "garbage changed the result");

    // 4. The end-to-end harness (`bench-kafka`, smoke size: it must keep working; nothing is
    //    asserted about speed): every record reflected by a readable mark, the throughput
    //    phase through to the end, and its topics deleted afterwards.
    let out = flowgraph(
        &dir,
        &[
            "bench-kafka",
            "--input",
            "smoke.fgb",
            "--brokers",
            b,
            "--speed",
            "100x",
            "--max-updates-per-piece",
            "100",
            // The binary format here, the only run of it through a broker (JSON is every other
            // run's): the bench's reader fails on a delta message in a format other than the
            // one asked for.
            "--delta-format",
            "bincode",
            // Harmless to every client; the runs must get it in their [kafka.options].
            "--kafka-option",
            "socket.keepalive.enable=true",
            // Two runs of each phase, each on its own topics, judged on the worse.
            "--latency-runs",
            "2",
            "--throughput-runs",
            "2",
            "--json",
            "bk.json",
        ],
    );
    assert_eq!(out.matches("records never reflected: 0").count(), 2, "{out}");
    assert_eq!(out.matches("produce-to-readable latency: p50").count(), 2, "{out}");
    // Where each phase's sink spent its time, and the run's peak resident memory, from the
    // run's status file.
    let figures: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("bk.json")).unwrap()).unwrap();
    assert_eq!(figures["max_updates_per_piece"], 100, "{figures}");
    assert_eq!(figures["delta_format"], "bincode", "{figures}");
    assert_eq!(figures["kafka_options"]["socket.keepalive.enable"], "true", "{figures}");
    let setting = "(bincode deltas, socket.keepalive.enable=true, the median of 2 runs)";
    assert_eq!(out.matches(setting).count(), 2, "both verdicts name the setting and the runs\n{out}");
    // With RUST_LOG set (as `flowgraph` sets it here) the runs' logs and configs are kept.
    let kept = out.lines().find_map(|l| l.strip_prefix("bench-kafka: the runs' logs are in ")).expect(&out);
    let runs = figures["throughput_runs"].as_array().expect("throughput_runs").clone();
    let rates: Vec<f64> = runs.iter().map(|run| run["records_per_second"].as_f64().unwrap()).collect();
    assert_eq!(rates.len(), 2, "{figures}");
    let lower = rates.iter().copied().fold(f64::INFINITY, f64::min);
    assert_eq!(figures["throughput"]["records_per_second"].as_f64(), Some(lower), "the median of two is the lower");
    assert!(out.contains("throughput over 2 runs: median "), "{out}");
    let p99s: Vec<f64> = figures["latency_runs"]
        .as_array()
        .expect("latency_runs")
        .iter()
        .map(|run| run["latency_ms"]["p99"].as_f64().unwrap())
        .collect();
    assert_eq!(p99s.len(), 2, "{figures}");
    let higher = p99s.iter().copied().fold(0.0, f64::max);
    assert_eq!(figures["latency_ms"]["p99"].as_f64(), Some(higher), "the median of two p99s is the higher");
    assert!(out.contains("latency over 2 runs: median p99 "), "{out}");
    for phase in ["latency-1", "latency-2", "throughput-1", "throughput-2"] {
        let config = std::fs::read_dir(kept)
            .unwrap()
            .map(|entry| entry.unwrap().path())
            .find(|path| path.to_string_lossy().ends_with(&format!(".{phase}.toml")))
            .unwrap_or_else(|| panic!("no config of the {phase} run in {kept}"));
        let config: toml::Table = std::fs::read_to_string(&config).unwrap().parse().unwrap();
        let option = config.get("kafka").and_then(|k| k.get("options")).and_then(|o| o.get("socket.keepalive.enable"));
        assert_eq!(option.and_then(|v| v.as_str()), Some("true"), "the {phase} run's config:\n{config}");
    }
    std::fs::remove_dir_all(kept).unwrap();
    for (phase, figures) in [("latency phase", &figures), ("throughput phase", &figures["throughput"])] {
        let transactions = number_after(&out, &format!("the sink ({phase}): "));
        assert!(transactions > 0, "{phase}: no transaction committed\n{out}");
        assert!(out.contains(&format!("flowgraph run ({phase}): peak resident memory ")), "{out}");
        // A running pipeline (timely, librdkafka's threads, the job) holds more than 10 MiB.
        let peak = figures["peak_resident_bytes"].as_u64().unwrap_or_else(|| panic!("{phase}: {figures}"));
        assert!(peak > 10 << 20, "{phase}: peak resident memory {peak} B");
        // CPU by thread: the worker and the sink's thread both worked, and the process's total
        // (taken last) holds both.
        assert!(out.contains(&format!("flowgraph run's CPU ({phase}): ")), "{out}");
        let cpu = |name: &str| figures["sink"][name].as_u64().unwrap_or_else(|| panic!("{phase}: {name}: {figures}"));
        let (worker, sink, process) = (cpu("worker_cpu_ms"), cpu("sink_cpu_ms"), cpu("process_cpu_ms"));
        assert!(worker > 0 && sink > 0 && process >= worker + sink, "{phase}: {figures}");
        // The state topic was written at checkpoints: at least the clean stop's.
        assert!(cpu("checkpoints") >= 1 && cpu("state_writes") > 0, "{phase}: {figures}");
    }
    // Its throughput phase ran the whole recording (and the sources' next reports) through a
    // second pipeline, which read every record of it; the smoke stream is too small for the
    // targets, which say so.
    let published = number_after(&out, "published ");
    assert_eq!(number_after(&out, "throughput: "), published, "{out}");
    assert_eq!(number_after(&out, "the pipeline read "), published + number_after(&out, "these and "), "{out}");
    assert!(
        out.contains("n/a   Kafka (one local broker) >= 300,000 records/s") && out.contains("n/a   Kafka p99"),
        "{out}"
    );
    let deleted = out.lines().find_map(|l| l.strip_prefix("deleted topics ")).unwrap_or_else(|| panic!("{out}"));
    let admin: rdkafka::consumer::BaseConsumer =
        rdkafka::ClientConfig::new().set("bootstrap.servers", b).create().unwrap();
    // The broker applies a deletion to its metadata shortly after answering it.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let metadata = rdkafka::consumer::Consumer::fetch_metadata(&admin, None, Duration::from_secs(10)).unwrap();
        let left: Vec<String> =
            metadata.topics().iter().map(|t| t.name().to_string()).filter(|t| t.starts_with("bench-")).collect();
        if left.is_empty() {
            break;
        }
        assert!(Instant::now() < deadline, "bench-kafka said it deleted {deleted} but left {left:?}");
        std::thread::sleep(Duration::from_millis(200));
    }

    // 5. The sink keeps a transaction open across hand-overs (as its thread does while the
    //    pieces of a catch-up queue up): the batches of several `send_batches` calls commit as
    //    one transaction, and the topics hold what the in-process replay gives.
    let mut sink = flowgraph_sinks::kafka::KafkaSink::new(flowgraph_sinks::kafka::KafkaSinkConfig {
        brokers: b.to_string(),
        deltas_topic: "spanning.deltas".into(),
        state_topic: "spanning.state".into(),
        format: flowgraph_sinks::kafka::DeltaFormat::Json,
        transactional_id: "spanning".into(),
        max_updates_per_message: flowgraph_sinks::kafka::MAX_UPDATES_PER_MESSAGE,
        // At every send: the state topic is checked after the last commit, with no `finish`.
        state_checkpoint_every: 0,
        state_writes_per_send: usize::MAX,
        options: BTreeMap::new(),
    })
    .unwrap();
    // Hand-overs of ten marks each, three to a transaction.
    let mut handovers = vec![Vec::new()];
    for output in &reference {
        handovers.last_mut().unwrap().push(output.clone());
        let marks = handovers.last().unwrap().iter().filter(|o| matches!(o, Output::Progress(_))).count();
        if marks == 10 {
            handovers.push(Vec::new());
        }
    }
    handovers.retain(|handover| !handover.is_empty());
    let transactions = handovers.chunks(3).count() as u64;
    assert!(transactions > 3, "{} hand-overs", handovers.len());
    for (n, group) in handovers.chunks(3).enumerate() {
        for handover in group {
            sink.send_batches(handover.clone()).unwrap();
        }
        assert_eq!(sink.stats().transactions, n as u64, "hand-overs were committed before `commit`");
        sink.commit().unwrap();
    }
    assert_eq!(sink.stats().transactions, transactions);
    let spanning = delta_topic_outputs(b, "spanning.deltas");
    assert_same_deltas(&spanning, &reference, "transactions spanning hand-overs");
    let marks = |outputs: &[Output]| outputs.iter().filter(|o| matches!(o, Output::Progress(_))).count();
    assert_eq!(marks(&spanning), marks(&reference), "transactions spanning hand-overs: marks");
    assert!(state_topic_graph(b, "spanning.state") == reference_state, "transactions spanning hand-overs: state");
    let state_writes_at_every_send = sink.stats().state_writes;
    drop(sink);

    // 6. State checkpoints (docs/KAFKA.md): the same hand-overs with a checkpoint every fifth
    //    of the stream. A crash between two checkpoints (the sink dropped, no `finish`): a view
    //    that bootstraps then shows the graph at the last committed mark, not the checkpoint's;
    //    the restarted sink takes over the keys changed since the checkpoint, and after its clean
    //    stop the state topic is the final graph, written with fewer records than at every send.
    let mark_times: Vec<u64> =
        reference.iter().filter_map(|o| if let Output::Progress(p) = o { Some(*p) } else { None }).collect();
    let checkpoint_config = || flowgraph_sinks::kafka::KafkaSinkConfig {
        brokers: b.to_string(),
        deltas_topic: "checkpoints.deltas".into(),
        state_topic: "checkpoints.state".into(),
        format: flowgraph_sinks::kafka::DeltaFormat::Json,
        transactional_id: "checkpoints".into(),
        max_updates_per_message: flowgraph_sinks::kafka::MAX_UPDATES_PER_MESSAGE,
        state_checkpoint_every: (mark_times.last().unwrap() - mark_times[0]) / 5,
        // A checkpoint's earlier keys over several sends.
        state_writes_per_send: 50,
        options: BTreeMap::new(),
    };
    let mut first = flowgraph_sinks::kafka::KafkaSink::new(checkpoint_config()).unwrap();
    // The crash: after two thirds of the hand-overs, at the first commit that is not a checkpoint.
    for (sent, handover) in handovers.iter().enumerate() {
        first.send_batches(handover.clone()).unwrap();
        first.commit().unwrap();
        if sent + 1 >= handovers.len() * 2 / 3 && first.stats().pending_state_keys > 0 {
            break;
        }
    }
    let first_stats = first.stats().clone();
    assert!(first_stats.checkpoints >= 2, "{first_stats:?}");
    assert!(first_stats.pending_state_keys > 0, "no key changed since the last checkpoint: the crash tests nothing");
    assert!(first_stats.transactions < handovers.len() as u64, "the crash came at the end: {first_stats:?}");
    drop(first);
    let committed = delta_topic_outputs(b, "checkpoints.deltas");
    let last_mark = committed.iter().rev().find_map(|o| if let Output::Progress(p) = o { Some(*p) } else { None });
    let at_crash = graph_of(&committed);
    assert!(
        snapshot_as_state(&committed) != state_topic_graph(b, "checkpoints.state"),
        "the state topic is already the graph at the last mark: the bootstrap's catch-up tests nothing"
    );
    let config = run_config(&dir, b, "checkpoints");
    let view =
        LiveView::start(&dir, &["ui", "--from-kafka", "--config", config.to_str().unwrap(), "--listen", "127.0.0.1:0"]);
    let expected: serde_json::Value = serde_json::from_str(&at_crash.snapshot_json()).unwrap();
    let shown = view.graph_at(expected["time"].as_u64().unwrap());
    assert!(
        rows_and_edges(&shown) == rows_and_edges(&expected),
        "a view that bootstrapped between two checkpoints shows a different graph than the deltas up to the last mark"
    );
    drop(view);
    let mut restarted = flowgraph_sinks::kafka::KafkaSink::new(checkpoint_config()).unwrap();
    assert_eq!(restarted.resume_after(), last_mark);
    restarted.take_over().unwrap();
    // At least what the first held: since the last completed checkpoint's mark, it takes over
    // the keys of a checkpoint still being written too.
    let taken_over = restarted.stats().pending_state_keys;
    assert!(
        taken_over >= first_stats.pending_state_keys,
        "the restarted sink took over {taken_over} keys changed since the last checkpoint; the first held {}",
        first_stats.pending_state_keys
    );
    // As the restarted job recomputes: every hand-over again; times before the mark are skipped.
    for handover in &handovers {
        restarted.send_batches(handover.clone()).unwrap();
        restarted.commit().unwrap();
    }
    restarted.finish().unwrap();
    assert_same_deltas(&delta_topic_outputs(b, "checkpoints.deltas"), &reference, "checkpoints with a crash");
    assert!(state_topic_graph(b, "checkpoints.state") == reference_state, "checkpoints with a crash: state");
    let checkpoint_writes = first_stats.state_writes + restarted.stats().state_writes;
    assert!(
        checkpoint_writes < state_writes_at_every_send,
        "checkpoints wrote {checkpoint_writes} state records, at every send {state_writes_at_every_send}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
