//! Failures on the Kafka path, against a real broker (`scripts/kafka`): `kill -9` of the
//! pipeline at three points of a stream, a broker restart in the middle of a stream, what a
//! silent broker costs the source's worker, and a TLS + SASL/SCRAM connection (and a wrong
//! password). Each test starts a broker of its own (`scripts/kafka start --port auto --dir
//! <tmp>`), stopped when the test ends.
//!
//! Every scenario of the pipeline ends with the same check: the delta topic has the same
//! updates at every time as the in-process replay (`flowgraph replay --deltas`), no update
//! twice, progress marks strictly increasing with every update between two marks inside them,
//! and the state topic folded by key equals the crash-free final graph.

mod common;
use common::{
    assert_marks_cover, assert_same_deltas, delta_topic_outputs, free_local_addr, http_get, snapshot_as_state,
    state_topic_graph, Broker, Proc,
};
use flowgraph_pipeline::Output;
use flowgraph_sinks::deltas;
use flowgraph_sources::kafka::{KafkaSource, KafkaSourceConfig, StartAt};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// These tests each run a broker and a paced stream on a 2-core machine: run them one at a
/// time, so their timing assumptions hold and their brokers never race for ports.
fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());
    // A failed test poisons the lock; the next one still runs.
    SERIAL.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A private link to (or copy of) the binary under test, taken once: other builds sharing the
/// target directory may replace target/release/flowgraph while these tests run. Links left
/// by earlier runs whose process is gone are removed.
fn flowgraph_bin() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let tmp = std::env::temp_dir();
        for entry in std::fs::read_dir(&tmp).into_iter().flatten().flatten() {
            let name = entry.file_name().to_string_lossy().to_string();
            if let Some(pid) = name.strip_prefix("flowgraph-kf-bin-") {
                if !Path::new("/proc").join(pid).exists() {
                    let _ = std::fs::remove_file(entry.path());
                }
            }
        }
        let private = tmp.join(format!("flowgraph-kf-bin-{}", std::process::id()));
        let _ = std::fs::remove_file(&private);
        let bin = env!("CARGO_BIN_EXE_flowgraph");
        if std::fs::hard_link(bin, &private).is_err() {
            std::fs::copy(bin, &private).expect("copy the flowgraph binary");
        }
        private
    })
}

fn work_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("flowgraph-kf-work-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn flowgraph_output(dir: &Path, args: &[&str]) -> std::process::Output {
    Command::new(flowgraph_bin()).current_dir(dir).args(args).env("RUST_LOG", "info").output().expect("run flowgraph")
}

fn flowgraph(dir: &Path, args: &[&str]) -> String {
    let output = flowgraph_output(dir, args);
    let stdout = String::from_utf8_lossy(&output.stdout).to_string();
    let stderr = String::from_utf8_lossy(&output.stderr).to_string();
    assert!(output.status.success(), "flowgraph {args:?} failed\n{stdout}\n{stderr}");
    stdout + &stderr
}

/// Spawns the private binary with its stderr (RUST_LOG=info) in `log`.
fn spawn_flowgraph(dir: &Path, log: &str, args: &[&str]) -> Proc {
    common::spawn_binary(flowgraph_bin(), dir, log, args)
}

/// The Prometheus metrics of a `run --metrics-addr ADDR`, unlabelled ones by name; `None`
/// while the endpoint does not answer.
fn metrics(addr: &str) -> Option<BTreeMap<String, f64>> {
    let (_, text) = http_get(addr, "/metrics")?;
    let values: BTreeMap<String, f64> = text
        .lines()
        .filter(|l| l.starts_with("flowgraph_"))
        .filter_map(|l| {
            let (name, value) = l.rsplit_once(' ')?;
            Some((name.to_string(), value.trim().parse().ok()?))
        })
        .collect();
    (!values.is_empty()).then_some(values)
}

/// A metric's value, summed over its label sets (these runs have one worker: `{worker="0"}`).
fn metric(values: &BTreeMap<String, f64>, name: &str) -> f64 {
    values
        .iter()
        .filter(|(key, _)| key.as_str() == name || key.strip_prefix(name).is_some_and(|rest| rest.starts_with('{')))
        .map(|(_, value)| value)
        .sum()
}

/// The smoke recording (`smoke.fgb` in `dir`) and its in-process replay: deltas and the
/// final graph as the state topic holds it.
struct Reference {
    records: u64,
    deltas: Vec<Output>,
    state: BTreeMap<String, String>,
}

impl Reference {
    /// First and last progress mark, in seconds (as `flowgraph_frontier_seconds`).
    fn span(&self) -> (f64, f64) {
        let mut marks = self.deltas.iter().filter_map(|o| match o {
            Output::Progress(p) => Some(*p as f64 / 1e9),
            _ => None,
        });
        let first = marks.next().expect("the reference has progress marks");
        (first, marks.next_back().unwrap_or(first))
    }

    /// The event time (s) at `fraction` of the stream.
    fn event_time_at(&self, fraction: f64) -> f64 {
        let (first, last) = self.span();
        first + fraction * (last - first)
    }

    /// How far into the stream an event time (s) is.
    fn fraction_at(&self, seconds: f64) -> f64 {
        let (first, last) = self.span();
        (seconds - first) / (last - first)
    }
}

fn reference(dir: &Path) -> Reference {
    let generated = flowgraph(dir, &["generate", "--size", "smoke", "--seed", "11", "--out", "smoke.fgb"]);
    let records = generated
        .split_whitespace()
        .skip_while(|w| *w != "wrote")
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("generate printed no record count: {generated}"));
    flowgraph(dir, &["replay", "--input", "smoke.fgb", "--window", "1m", "--deltas", "reference.jsonl"]);
    let deltas: Vec<Output> = std::fs::read_to_string(dir.join("reference.jsonl"))
        .unwrap()
        .lines()
        .map(|l| deltas::from_line(l).unwrap())
        .collect();
    let state = snapshot_as_state(&deltas);
    assert!(state.len() > 100, "smoke graph suspiciously small");
    Reference { records, deltas, state }
}

/// A run config whose topics are named after `name`; `options` go to [kafka.options].
fn run_config(dir: &Path, brokers: &str, name: &str, input: &str, options: &[(&str, &str)]) -> String {
    let path = dir.join(format!("{name}.toml"));
    let mut text = format!(
        "[query]\nwindow = \"1m\"\n\n[kafka]\nbrokers = \"{brokers}\"\ninput_topic = \"{input}\"\n\
         deltas_topic = \"{name}.deltas\"\nstate_topic = \"{name}.state\"\n\
         dead_letter_topic = \"{name}.dead\"\ntransactional_id = \"{name}\"\n"
    );
    if !options.is_empty() {
        text.push_str("\n[kafka.options]\n");
        for (key, value) in options {
            text.push_str(&format!("\"{key}\" = \"{value}\"\n"));
        }
    }
    std::fs::write(&path, text).unwrap();
    path.to_str().unwrap().to_string()
}

/// The delta topic `{name}.deltas` and the state topic `{name}.state` against the reference:
/// same updates at every time, no update published twice, marks strictly increasing with every
/// update between two marks in [previous mark, mark), the same last mark, the same final graph.
fn assert_exact(bootstrap: &str, name: &str, reference: &Reference) {
    let published = delta_topic_outputs(bootstrap, &format!("{name}.deltas"));
    assert_same_deltas(&published, &reference.deltas, name);
    let updates = |o: &[Output]| o.iter().filter(|o| matches!(o, Output::Update { .. })).count();
    assert_eq!(
        updates(&published),
        updates(&reference.deltas),
        "{name}: update count differs from the in-process replay (a repeat?)"
    );
    assert_marks_cover(&published, name);
    let last_mark = |o: &[Output]| {
        o.iter().rev().find_map(|o| match o {
            Output::Progress(p) => Some(*p),
            _ => None,
        })
    };
    assert_eq!(last_mark(&published), last_mark(&reference.deltas), "{name}: last progress mark");
    assert_eq!(state_topic_graph(bootstrap, &format!("{name}.state")), reference.state, "{name}: state topic");
}

/// Waits until `run --metrics-addr addr` reports at least `transactions` committed
/// transactions and `ready()` holds; returns its metrics then. Panics if it exits first.
fn wait_for_run(
    run: &mut Proc,
    addr: &str,
    transactions: f64,
    mut ready: impl FnMut(&BTreeMap<String, f64>) -> bool,
    what: &str,
) -> BTreeMap<String, f64> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(status) = run.0.try_wait().unwrap() {
            panic!("{what}: flowgraph run exited ({status}) before it was expected to");
        }
        if let Some(values) = metrics(addr) {
            if metric(&values, "flowgraph_transactions_total") >= transactions && ready(&values) {
                return values;
            }
        }
        assert!(Instant::now() < deadline, "{what}: timed out waiting for flowgraph run");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// `replay --to-kafka NAME.in --rate RATE` of the smoke stream, one partition, still
/// publishing while the test acts; its log is producer.log.
fn publish_paced(dir: &Path, brokers: &str, name: &str, rate: u32) -> Proc {
    let (topic, rate) = (format!("{name}.in"), rate.to_string());
    spawn_flowgraph(
        dir,
        "producer.log",
        &[
            "replay", "--input", "smoke.fgb", "--to-kafka", &topic, "--partitions", "1", "--brokers", brokers,
            "--rate", &rate,
        ],
    )
}

/// Stops a `run` with SIGTERM (it must exit cleanly), completes the last event time with a
/// run that resumes after the last committed mark, and checks the topics `NAME.*` are exact.
fn stop_and_finish(
    run: &mut Proc,
    log: &str,
    dir: &Path,
    config: &str,
    brokers: &str,
    name: &str,
    reference: &Reference,
) {
    let status = Command::new("kill").args(["-TERM", &run.0.id().to_string()]).status().unwrap();
    assert!(status.success());
    let status = run.0.wait().unwrap();
    assert!(status.success(), "{log} after SIGTERM: {status}\n{}", log_tail(dir, log));
    // Complete the last event time (a run without --exit-when-idle never does).
    let finished = flowgraph(dir, &["run", "--config", config, "--exit-when-idle", "2s"]);
    assert!(finished.contains("resuming after the last committed progress mark"), "{finished}");
    assert_exact(brokers, name, reference);
}

fn log_tail(dir: &Path, log: &str) -> String {
    let text = std::fs::read_to_string(dir.join(log)).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(15)..].join("\n")
}

/// `kill -9` of the pipeline at three points of a stream that `replay --to-kafka --rate`
/// is still publishing, a restart after each, then a run to the end: exact.
#[test]
fn kill_9_at_three_points_of_a_stream() {
    let _serial = one_at_a_time();
    let broker = Broker::start("kill", false);
    let b = broker.bootstrap();
    let dir = work_dir("kill");
    let reference = reference(&dir);
    let config = run_config(&dir, b, "kill", "kill.in", &[]);
    // 17,581 records at 800/s: about 22 s of stream, about the pace at which `run` (one
    // transaction per poll of at most 64 messages) reads the one-record messages of a paced replay.
    let mut producer = publish_paced(&dir, b, "kill", 800);
    let started = Instant::now();
    let mut frontiers = Vec::new();
    for (i, fraction) in [0.25, 0.5, 0.75].into_iter().enumerate() {
        let addr = free_local_addr();
        let log = format!("run{i}.log");
        let mut run = spawn_flowgraph(&dir, &log, &["run", "--config", &config, "--metrics-addr", &addr]);
        // Kill once this incarnation has committed something of its own and its frontier has
        // passed `fraction` of the stream's event time.
        let spawned = Instant::now();
        wait_for_run(&mut run, &addr, 1.0, |_| true, &log);
        let first_commit = spawned.elapsed().as_secs_f64();
        let at = reference.event_time_at(fraction);
        let values = wait_for_run(&mut run, &addr, 1.0, |m| metric(m, "flowgraph_frontier_seconds") >= at, &log);
        run.0.kill().unwrap(); // SIGKILL
        run.0.wait().unwrap();
        let producing = producer.0.try_wait().unwrap().is_none();
        let frontier = metric(&values, "flowgraph_frontier_seconds");
        eprintln!(
            "kill -9 #{} at {:.1} s ({:.0}% of the event time; first commit {first_commit:.1} s after start): \
             {} records in, {} transactions, producer {}",
            i + 1,
            started.elapsed().as_secs_f64(),
            100.0 * reference.fraction_at(frontier),
            metric(&values, "flowgraph_records_in_total"),
            metric(&values, "flowgraph_transactions_total"),
            if producing { "still publishing" } else { "done" }
        );
        if i > 0 {
            let text = std::fs::read_to_string(dir.join(&log)).unwrap();
            assert!(text.contains("resuming after the last committed progress mark"), "{log}:\n{text}");
        }
        frontiers.push(frontier);
    }
    assert!(frontiers.windows(2).all(|w| w[0] < w[1]), "the kills were not at three points: {frontiers:?}");
    assert!(producer.0.wait().unwrap().success(), "replay --to-kafka failed:\n{}", log_tail(&dir, "producer.log"));
    let log = flowgraph(&dir, &["run", "--config", &config, "--exit-when-idle", "2s"]);
    assert!(log.contains("resuming after the last committed progress mark"), "{log}");
    assert_exact(b, "kill", &reference);
    let _ = std::fs::remove_dir_all(&dir);
}

/// The broker stops and starts again (same dir and port) while `flowgraph run` and the
/// producer are in the middle of a stream: run stays up, reads the whole stream and commits
/// again without an abort, and the result is exact.
#[test]
fn broker_restart_in_the_middle_of_a_stream() {
    let _serial = one_at_a_time();
    let mut broker = Broker::start("restart", false);
    let b = broker.bootstrap().to_string();
    let b = b.as_str();
    let dir = work_dir("restart");
    let reference = reference(&dir);
    let config = run_config(&dir, b, "restart", "restart.in", &[]);
    // About 18 s of stream: the outage (stop ~2 s, 3 s down, start ~4 s) falls in its middle.
    let mut producer = publish_paced(&dir, b, "restart", 1000);
    let addr = free_local_addr();
    let mut run = spawn_flowgraph(&dir, "run.log", &["run", "--config", &config, "--metrics-addr", &addr]);
    let at = reference.event_time_at(0.3);
    let before =
        wait_for_run(&mut run, &addr, 1.0, |m| metric(m, "flowgraph_frontier_seconds") >= at, "before the outage");
    let producer_was_running = producer.0.try_wait().unwrap().is_none();
    let outage = Instant::now();
    broker.stop();
    std::thread::sleep(Duration::from_secs(3));
    broker.run_start(&[]);
    assert_eq!(broker.bootstrap(), b, "the restarted broker listens elsewhere");
    let outage = outage.elapsed();
    let producer_status = producer.0.wait().unwrap();
    assert!(
        producer_status.success(),
        "replay --to-kafka did not survive the broker restart:\n{}",
        log_tail(&dir, "producer.log")
    );
    // run rides through the outage: it stays up, reads the whole stream and commits again,
    // with no transaction aborted (librdkafka reconnects; an open transaction's commit waits
    // for the broker, up to the sink's 30 s timeout).
    let deadline = Instant::now() + Duration::from_secs(60);
    let values = loop {
        if let Some(status) = run.0.try_wait().unwrap() {
            panic!("flowgraph run exited during the broker restart ({status}):\n{}", log_tail(&dir, "run.log"));
        }
        if let Some(values) = metrics(&addr) {
            let (records, transactions) =
                (metric(&values, "flowgraph_records_in_total"), metric(&values, "flowgraph_transactions_total"));
            if records >= reference.records as f64 && transactions > metric(&before, "flowgraph_transactions_total") {
                break values;
            }
        }
        assert!(
            Instant::now() < deadline,
            "flowgraph run did not read the whole stream after the outage:\n{}",
            log_tail(&dir, "run.log")
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    let log = std::fs::read_to_string(dir.join("run.log")).unwrap_or_default();
    // What librdkafka and run said during the outage, by kind (text without numbers).
    let mut kinds: BTreeMap<String, usize> = BTreeMap::new();
    for line in log.lines().filter(|l| l.contains(" WARN ") || l.contains(" ERROR ")) {
        let text = line.split_once('Z').map_or(line, |(_, t)| t);
        let kind: String = text.chars().filter(|c| !c.is_ascii_digit()).take(110).collect();
        *kinds.entry(kind).or_default() += 1;
    }
    let (records, transactions) =
        (metric(&values, "flowgraph_records_in_total"), metric(&values, "flowgraph_transactions_total"));
    eprintln!(
        "flowgraph run rode through a {:.1} s broker outage (stopped at {:.0}% of the stream, producer {}): \
         {records} records in, transactions {} before, {transactions} after; warnings and errors logged:\n{}",
        outage.as_secs_f64(),
        100.0 * reference.fraction_at(metric(&before, "flowgraph_frontier_seconds")),
        if producer_was_running { "still publishing" } else { "done" },
        metric(&before, "flowgraph_transactions_total"),
        kinds.iter().map(|(k, n)| format!("  {n:>4} x {k}")).collect::<Vec<_>>().join("\n"),
    );
    assert!(producer_was_running, "the stream had ended before the outage; the scenario tests nothing");
    assert!(
        log.contains("Kafka consumer error, retrying"),
        "run logged no consumer error: it did not see the outage\n{}",
        log_tail(&dir, "run.log")
    );
    assert_eq!(records, reference.records as f64, "records read by the run that rode through the outage");
    // Its workers went on coming round their loops: the liveness probe passes.
    let health = http_get(&addr, "/healthz");
    assert_eq!(health, Some((200, "ok\n".to_string())), "/healthz after the outage");
    assert_eq!(metric(&values, "flowgraph_transaction_aborts_total"), 0.0, "transactions aborted during the outage");
    stop_and_finish(&mut run, "run.log", &dir, &config, b, "restart", &reference);
    let _ = std::fs::remove_dir_all(&dir);
}

/// While the broker does not answer (paused: a hung broker or a network partition; a
/// stopped one refuses connections, and every question fails at once), the source's
/// questions to it (whether its quiet partitions have anything left to read, for idleness;
/// the lag `run` reports every 10 s) wait one timeout in all, not one per partition. A worker
/// stalled in them neither steps its peers nor sees a stop for as long as the outage lasts:
/// before 2026-12-06, each partition asked about cost its own 1 s in a poll (3.1 s in one
/// poll here) and its own 5 s in the lag (40 s here).
#[test]
fn a_silent_broker_stalls_the_source_once_not_per_partition() {
    let _serial = one_at_a_time();
    let mut broker = Broker::start("silent", false);
    let b = broker.bootstrap().to_string();
    let dir = work_dir("silent");
    let reference = reference(&dir);
    flowgraph(
        &dir,
        &["replay", "--input", "smoke.fgb", "--to-kafka", "silent.in", "--partitions", "8", "--brokers", &b],
    );
    let idle_after = Duration::from_secs(6);
    let mut source = KafkaSource::new(KafkaSourceConfig {
        brokers: b.clone(),
        topic: "silent.in".into(),
        dead_letter_topic: None,
        start: StartAt::Beginning,
        worker: 0,
        workers: 1,
        options: BTreeMap::new(),
        lateness_ns: 30_000_000_000,
        idle_after: Some(idle_after),
    })
    .unwrap();
    assert_eq!(source.partitions().len(), 8);
    // Nothing read yet: every message is unread (each partition's start stands for its next
    // offset), as another reader counts them.
    let unread: i64 = source.lag().iter().map(|(_, n)| n).sum();
    assert_eq!(unread, common::read_messages(&b, "silent.in").len() as i64, "the lag before reading");
    let mut records = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while (records.len() as u64) < reference.records {
        source.poll(Duration::from_millis(100), 50_000, 0, &mut records).unwrap();
        assert!(Instant::now() < deadline, "read {} of {} records in 60 s", records.len(), reference.records);
    }
    let read_all = Instant::now();
    let lag: Vec<(i32, i64)> = (0..8).map(|p| (p, 0)).collect();
    assert_eq!(source.lag(), lag, "the lag with every message read and the broker answering");
    broker.pause();
    // Well past the quiet period (the partitions' last deliveries spread over the reading), so
    // that every partition is asked about, with the broker silent.
    let mut longest_poll = Duration::ZERO;
    while read_all.elapsed() < idle_after + Duration::from_secs(8) {
        let started = Instant::now();
        source.poll(Duration::from_millis(100), 50_000, 0, &mut records).unwrap();
        longest_poll = longest_poll.max(started.elapsed());
    }
    let started = Instant::now();
    let lag = source.lag();
    let lag_took = started.elapsed();
    eprintln!("with the broker silent: longest poll {longest_poll:?}, lag {lag_took:?} ({lag:?})");
    assert_eq!(source.stats().idle_partitions, 0, "a partition became idle while the broker could not be asked");
    assert!(lag.is_empty(), "a lag from a silent broker: {lag:?}");
    // The questions wait their timeout (1 s; 5 s for the lag) once, with room for a slow machine.
    assert!(longest_poll < Duration::from_secs(2), "a poll took {longest_poll:?} with the broker silent");
    assert!(lag_took < Duration::from_secs(7), "the lag took {lag_took:?} with the broker silent");
    broker.resume();
    let _ = std::fs::remove_dir_all(&dir);
}

/// A second `run` with the same transactional id (a deployment that overlaps its previous
/// instance) fences the first: the first's next transaction fails, and it stops with that
/// error (raised on the sink's thread, reported by the worker), while the second goes on.
/// The result is exact.
#[test]
fn a_second_instance_fences_the_first() {
    let _serial = one_at_a_time();
    let broker = Broker::start("fence", false);
    let b = broker.bootstrap();
    let dir = work_dir("fence");
    let reference = reference(&dir);
    let config = run_config(&dir, b, "fence", "fence.in", &[]);
    let mut producer = publish_paced(&dir, b, "fence", 800);
    let (first_addr, second_addr) = (free_local_addr(), free_local_addr());
    let mut first = spawn_flowgraph(&dir, "first.log", &["run", "--config", &config, "--metrics-addr", &first_addr]);
    wait_for_run(&mut first, &first_addr, 1.0, |_| true, "first.log");
    let mut second = spawn_flowgraph(&dir, "second.log", &["run", "--config", &config, "--metrics-addr", &second_addr]);
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = first.0.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "the fenced run did not stop:\n{}", log_tail(&dir, "first.log"));
        std::thread::sleep(Duration::from_millis(100));
    };
    let log = std::fs::read_to_string(dir.join("first.log")).unwrap_or_default();
    assert!(!status.success(), "the fenced run exited with success:\n{}", log_tail(&dir, "first.log"));
    assert!(
        log.contains("transaction aborted"),
        "the fenced run did not say why it stopped:\n{}",
        log_tail(&dir, "first.log")
    );
    let reason = log.lines().rev().find(|l| l.contains("transaction aborted")).unwrap_or_default();
    eprintln!("the fenced run stopped: {reason}");
    assert!(
        producer.0.try_wait().unwrap().is_none(),
        "the stream had ended before the fence; the scenario tests nothing"
    );
    wait_for_run(&mut second, &second_addr, 1.0, |_| true, "second.log");
    assert!(producer.0.wait().unwrap().success(), "replay --to-kafka failed:\n{}", log_tail(&dir, "producer.log"));
    stop_and_finish(&mut second, "second.log", &dir, &config, b, "fence", &reference);
    let _ = std::fs::remove_dir_all(&dir);
}

/// The pipeline over the SASL_SSL listener (SCRAM-SHA-512, the script's CA): exact. A wrong
/// password stops `run` within a bounded time with an error that says authentication failed.
/// The input is published over SASL_SSL too, by `replay --to-kafka` with the same config file
/// (the producers of records read the `[kafka]` section's options, as agents do).
#[test]
fn tls_and_sasl_scram() {
    let _serial = one_at_a_time();
    let broker = Broker::start("secure", true);
    let b = broker.bootstrap();
    let e = &broker.endpoints;
    let dir = work_dir("secure");
    let reference = reference(&dir);
    let options = |password| {
        [
            ("security.protocol", "SASL_SSL"),
            ("sasl.mechanisms", e["sasl_mechanism"].as_str()),
            ("sasl.username", e["sasl_username"].as_str()),
            ("sasl.password", password),
            ("ssl.ca.location", e["ca_pem"].as_str()),
        ]
    };
    let secure = &e["secure_bootstrap"];
    let config = run_config(&dir, secure, "secure", "secure.in", &options(&e["sasl_password"]));
    let published = flowgraph(
        &dir,
        &["replay", "--input", "smoke.fgb", "--to-kafka", "secure.in", "--partitions", "1", "--config", &config],
    );
    assert!(
        published.contains(&format!("on {secure}")),
        "replay --to-kafka did not publish over SASL_SSL: {published}"
    );
    let output = flowgraph_output(&dir, &["run", "--config", &config, "--exit-when-idle", "2s"]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        !stderr.contains("OpenSSL not available at build time"),
        "this flowgraph binary was built without rdkafka's ssl feature (another build sharing \
         target/ may have replaced it):\n{stderr}"
    );
    assert!(output.status.success(), "run over SASL_SSL failed:\n{stderr}");
    assert!(stderr.contains("late=0"), "{stderr}");
    assert_exact(b, "secure", &reference);

    let config = run_config(&dir, secure, "wrong", "secure.in", &options("not-the-password"));
    let started = Instant::now();
    let mut run = spawn_flowgraph(&dir, "wrong.log", &["run", "--config", &config, "--exit-when-idle", "2s"]);
    let status = loop {
        if let Some(status) = run.0.try_wait().unwrap() {
            break status;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "a wrong password did not stop flowgraph run within 60 s:\n{}",
            log_tail(&dir, "wrong.log")
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    let log = std::fs::read_to_string(dir.join("wrong.log")).unwrap();
    let error = log.lines().find(|l| l.starts_with("error")).unwrap_or_default();
    eprintln!("wrong password: {status} after {:.1} s: {error}", started.elapsed().as_secs_f64());
    assert!(!status.success(), "flowgraph run succeeded with a wrong password:\n{log}");
    assert!(error.to_lowercase().contains("authentication"), "the error does not say authentication failed:\n{log}");
    let _ = std::fs::remove_dir_all(&dir);
}
