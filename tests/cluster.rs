//! Scale-out through a real broker (scripts/kafka): the smoke stream on a 4-partition input
//! topic, computed by one worker, by two worker threads in one process, and by two processes
//! of one worker each over timely's TCP communication, gives the same updates at every time,
//! byte-identical final snapshots, and the same state topic as the in-process replay. Killing
//! one process of a two-process run in mid-stream (SIGKILL), stopping each (SIGTERM) and
//! restarting both recovers to the same answer, with no update repeated or missing on the
//! delta topic. A worker whose partition is empty does not hold a running cluster's frontier.

mod common;
use common::{
    assert_marks_cover, assert_same_deltas, delta_topic_outputs, flowgraph, graph_of, head_start, smoke_reference,
    snapshot_as_state, spawn_flowgraph, state_topic_graph, Broker, Proc,
};
use flowgraph_pipeline::Output;
use flowgraph_schema::Record;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Waits for a process and asserts it succeeded, showing its log if not.
fn wait_ok(proc: &mut Proc, dir: &Path, log: &str) {
    let status = proc.0.wait().unwrap();
    let text = std::fs::read_to_string(dir.join(log)).unwrap_or_default();
    assert!(status.success(), "{log}: {status}\n{text}");
}

/// Waits up to `limit` for a process to exit by itself; its status.
fn exits_within(proc: &mut Proc, limit: Duration, what: &str) -> std::process::ExitStatus {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = proc.0.try_wait().unwrap() {
            return status;
        }
        assert!(Instant::now() < deadline, "{what}: still running after {limit:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn config(dir: &Path, bootstrap: &str, name: &str, input: &str) -> PathBuf {
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(
        &path,
        format!(
            "[query]\nwindow = \"1m\"\n\n[kafka]\nbrokers = \"{bootstrap}\"\ninput_topic = \"{input}\"\n\
             deltas_topic = \"{name}.deltas\"\nstate_topic = \"{name}.state\"\n\
             dead_letter_topic = \"{name}.dead\"\ntransactional_id = \"{name}\"\n"
        ),
    )
    .unwrap();
    path
}

/// A hosts file for two processes on free loopback ports.
fn hosts(dir: &Path) -> PathBuf {
    let ports: Vec<u16> = (0..2)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0").unwrap())
        .collect::<Vec<_>>()
        .iter()
        .map(|l| l.local_addr().unwrap().port())
        .collect();
    let path = dir.join("hosts");
    std::fs::write(&path, format!("127.0.0.1:{}\n127.0.0.1:{}\n", ports[0], ports[1])).unwrap();
    path
}

fn final_snapshot(outputs: &[Output]) -> String {
    graph_of(outputs).snapshot_json()
}

#[test]
fn one_worker_two_threads_and_two_processes_publish_the_same_graph() {
    let broker = Broker::start("cluster", false);
    let b = broker.bootstrap();
    let dir = std::env::temp_dir().join(format!("flowgraph-test-cluster-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let reference = smoke_reference(&dir);
    let reference_snapshot = final_snapshot(&reference);
    let reference_state = snapshot_as_state(&reference);
    flowgraph(
        &dir,
        &["replay", "--input", "smoke.fgb", "--to-kafka", "cluster.in", "--partitions", "4", "--brokers", b],
    );
    let hosts = hosts(&dir);
    let hosts = hosts.to_str().unwrap();

    let mut snapshots = Vec::new();
    for name in ["one", "threads", "processes"] {
        let config = config(&dir, b, name, "cluster.in");
        let config = config.to_str().unwrap();
        let run = ["run", "--config", config, "--exit-when-idle", "2s"];
        match name {
            "one" => {
                flowgraph(&dir, &run);
            }
            "threads" => {
                let log = flowgraph(&dir, &[&run[..], &["--workers", "2"]].concat());
                assert!(log.contains("worker=1"), "the second worker did not run:\n{log}");
            }
            _ => {
                let cluster =
                    |id: &'static str| [&run[..], &["--processes", "2", "--process-id", id, "--hosts", hosts]].concat();
                let mut first = spawn_flowgraph(&dir, "process-0.log", &cluster("0"));
                let mut second = spawn_flowgraph(&dir, "process-1.log", &cluster("1"));
                wait_ok(&mut first, &dir, "process-0.log");
                wait_ok(&mut second, &dir, "process-1.log");
            }
        }
        let published = delta_topic_outputs(b, &format!("{name}.deltas"));
        assert_marks_cover(&published, name);
        assert_same_deltas(&published, &reference, name);
        assert_eq!(state_topic_graph(b, &format!("{name}.state")), reference_state, "{name}: state topic");
        snapshots.push((name, final_snapshot(&published)));
    }
    for (name, snapshot) in &snapshots {
        assert!(*snapshot == reference_snapshot, "{name}: the final snapshot differs from the replay's");
    }

    an_empty_partition_does_not_hold_a_running_cluster(b, &dir, &reference);
    a_quiet_partition_stops_holding_a_running_cluster(b, &dir, &reference);

    // Two processes, one killed (SIGKILL) in mid-stream while the input is still arriving,
    // then both restarted: the delta topic continues without repeats or gaps.
    let config = config(&dir, b, "crash", "crash.in");
    let config = config.to_str().unwrap();
    let mut producer = spawn_flowgraph(
        &dir,
        "producer.log",
        &[
            "replay", "--input", "smoke.fgb", "--to-kafka", "crash.in", "--partitions", "4", "--brokers", b, "--rate",
            "4000",
        ],
    );
    // A head start: every agent's first records are in before the run starts, so lateness
    // is decided per partition; otherwise the run could legitimately differ from the replay.
    head_start(b, "crash.in", 4, Duration::from_secs(2));
    let cluster = |id: &'static str, idle: bool| {
        let mut args = vec!["run", "--config", config, "--processes", "2", "--process-id", id, "--hosts", hosts];
        if idle {
            args.extend(["--exit-when-idle", "2s"]);
        }
        args
    };
    let mut first = spawn_flowgraph(&dir, "crash-0.log", &cluster("0", false));
    let mut second = spawn_flowgraph(&dir, "crash-1.log", &cluster("1", false));
    let deadline = Instant::now() + Duration::from_secs(60);
    while !delta_topic_outputs(b, "crash.deltas").iter().any(|o| matches!(o, Output::Progress(_))) {
        assert!(Instant::now() < deadline, "the two-process run published nothing in 60 s");
        std::thread::sleep(Duration::from_millis(300));
    }
    second.0.kill().unwrap();
    second.0.wait().unwrap();
    // The survivor loses its peer: it says so and exits by itself, for a restart of both.
    let status = exits_within(&mut first, Duration::from_secs(10), "process 0 without its peer");
    let log = std::fs::read_to_string(dir.join("crash-0.log")).unwrap();
    assert_eq!(status.code(), Some(3), "{log}");
    assert!(log.contains("the timely cluster broke"), "{log}");

    // Both restarted, then one of them stopped with SIGTERM once both consume. Process 1 leaves
    // by exiting (code 0), without releasing its times, so process 0 cannot complete one
    // without its records, and finds the cluster broken (code 3). Process 0 commits what it
    // handed over and exits (code 0); process 1 finds the cluster broken.
    for stopped in [1, 0] {
        let logs = [format!("stop{stopped}-0.log"), format!("stop{stopped}-1.log")];
        let mut procs = [
            spawn_flowgraph(&dir, &logs[0], &cluster("0", false)),
            spawn_flowgraph(&dir, &logs[1], &cluster("1", false)),
        ];
        let log = |i: usize| std::fs::read_to_string(dir.join(&logs[i])).unwrap_or_default();
        let deadline = Instant::now() + Duration::from_secs(60);
        while !(log(0).contains("flowgraph run: consuming") && log(1).contains("flowgraph run: consuming")) {
            assert!(Instant::now() < deadline, "the restarted two-process run did not start consuming in 60 s");
            std::thread::sleep(Duration::from_millis(100));
        }
        std::thread::sleep(Duration::from_secs(1));
        let pid = procs[stopped].0.id().to_string();
        assert!(std::process::Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
        let status =
            exits_within(&mut procs[stopped], Duration::from_secs(20), &format!("process {stopped} after SIGTERM"));
        let said = if stopped == 0 { "flowgraph run: stopped" } else { "leaves the cluster by exiting" };
        assert!(
            status.success() && log(stopped).contains(said),
            "process {stopped} after SIGTERM: {status}\n{}",
            log(stopped)
        );
        let other = 1 - stopped;
        let status =
            exits_within(&mut procs[other], Duration::from_secs(10), &format!("process {other} after its peer's stop"));
        assert!(
            status.code() == Some(3) && log(other).contains("the timely cluster broke"),
            "process {other} after process {stopped}'s stop: {status}\n{}",
            log(other)
        );
    }
    let before = delta_topic_outputs(b, "crash.deltas");
    assert_marks_cover(&before, "two processes after a kill and two stops");

    wait_ok(&mut producer, &dir, "producer.log");
    let mut first = spawn_flowgraph(&dir, "restart-0.log", &cluster("0", true));
    let mut second = spawn_flowgraph(&dir, "restart-1.log", &cluster("1", true));
    wait_ok(&mut first, &dir, "restart-0.log");
    wait_ok(&mut second, &dir, "restart-1.log");
    let restarted = std::fs::read_to_string(dir.join("restart-0.log")).unwrap();
    assert!(restarted.contains("resuming after the last committed progress mark"), "{restarted}");
    let published = delta_topic_outputs(b, "crash.deltas");
    assert!(
        last_mark(&published) > last_mark(&before),
        "the restarted cluster published nothing: {} outputs before the restart (last mark {:?}), {} after (last mark {:?})",
        before.len(), last_mark(&before), published.len(), last_mark(&published)
    );
    assert_marks_cover(&published, "two processes after a kill and two stops, both restarted");
    assert_same_deltas(&published, &reference, "two processes after a kill and two stops, both restarted");
    assert_eq!(state_topic_graph(b, "crash.state"), reference_state, "state topic after the kill and the stops");
    assert!(final_snapshot(&published) == reference_snapshot, "final snapshot after the kill and the stops");
    let _ = std::fs::remove_dir_all(&dir);
}

/// Two worker threads, the input topic's records all on partition 0 and partition 1 empty
/// (worker 1 reads only that). The running cluster publishes the stream's graph while it runs:
/// before worker 1 followed the others' watermark, its empty partition held the cluster's
/// frontier at 0, and nothing was published until the run ended. Old records arriving on
/// partition 1 afterwards are counted late by worker 1.
fn an_empty_partition_does_not_hold_a_running_cluster(b: &str, dir: &Path, reference: &[Output]) {
    flowgraph_sources::kafka::create_topic_if_missing(b, &Default::default(), "idle.in", 2).unwrap();
    produce_to_partition(b, "idle.in", 0, &smoke_records(dir));
    let config = config(dir, b, "idle", "idle.in");
    let mut run = spawn_flowgraph(dir, "idle.log", &["run", "--config", config.to_str().unwrap(), "--workers", "2"]);
    let log = || std::fs::read_to_string(dir.join("idle.log")).unwrap_or_default();
    let published = published_up_to(b, "idle.deltas", reachable_while_running(reference), log);
    assert!(log().contains("partitions=[1]"), "worker 1 does not read the empty partition alone:\n{}", log());
    assert_marks_cover(&published, "an empty partition");
    assert_same_deltas(
        &published,
        &updates_before_last_mark(&published, reference),
        "an empty partition, up to the last mark",
    );

    // Partition 1 delivers at last: the stream's first 50 data records, from long before the
    // cluster's watermark. Worker 1 counts them late (re-stamped to its watermark, which
    // followed worker 0's) and the run goes on.
    let old: Vec<Record> =
        smoke_records(dir).into_iter().filter(|r| !matches!(r, Record::Progress(_))).take(50).collect();
    produce_to_partition(b, "idle.in", 1, &old);
    let deadline = Instant::now() + Duration::from_secs(30);
    while !log().contains("worker=1 records=50 late=50 ") {
        assert!(Instant::now() < deadline, "worker 1 did not report 50 late records in 30 s:\n{}", log());
        std::thread::sleep(Duration::from_millis(300));
    }
    stops_cleanly(&mut run, "the run with an empty partition", log);
}

/// The smoke stream's records, in the recording's order.
fn smoke_records(dir: &Path) -> Vec<Record> {
    let mut reader = flowgraph_sources::recording::open(&dir.join("smoke.fgb")).unwrap();
    let mut records = Vec::new();
    while let Some(item) = reader.next_item().unwrap() {
        records.push(item.unwrap().1);
    }
    records
}

/// Sends `records` to one partition of `topic`, in order, as binary frames of up to 1,000.
fn produce_to_partition(b: &str, topic: &str, partition: i32, records: &[Record]) {
    use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
    let producer: BaseProducer = rdkafka::ClientConfig::new().set("bootstrap.servers", b).create().unwrap();
    let mut frame = Vec::new();
    for chunk in records.chunks(1000) {
        frame.clear();
        flowgraph_schema::binary::encode_frame(chunk, &mut frame);
        producer.send(BaseRecord::<str, [u8]>::to(topic).partition(partition).key("test").payload(&frame)).unwrap();
        producer.poll(Duration::ZERO);
    }
    producer.flush(Duration::from_secs(30)).unwrap();
}

/// The last progress mark of a delta stream.
fn last_mark(outputs: &[Output]) -> Option<u64> {
    outputs.iter().rev().find_map(|o| match o {
        Output::Progress(p) => Some(*p),
        _ => None,
    })
}

/// The last time the one-job replay completes, less the lateness a run holds back (30 s by
/// default) and a progress period: where a running cluster's marks get to at least.
fn reachable_while_running(reference: &[Output]) -> u64 {
    last_mark(reference).unwrap() - 31_000_000_000
}

/// The reference's updates before the last mark `published` carries.
fn updates_before_last_mark(published: &[Output], reference: &[Output]) -> Vec<Output> {
    let mark = last_mark(published).unwrap();
    reference.iter().filter(|o| matches!(o, Output::Update { time, .. } if *time < mark)).cloned().collect()
}

/// Stops a run with SIGTERM and asserts it exits by itself, successfully, within 20 s.
fn stops_cleanly(run: &mut Proc, what: &str, log: impl Fn() -> String) {
    let pid = run.0.id().to_string();
    assert!(std::process::Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
    let status = exits_within(run, Duration::from_secs(20), &format!("{what} after SIGTERM"));
    assert!(status.success(), "{what} after SIGTERM: {status}\n{}", log());
}

/// Waits up to 60 s for the delta topic to carry a mark at or past `at`; what it holds then.
fn published_up_to(b: &str, topic: &str, at: u64, log: impl Fn() -> String) -> Vec<Output> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let published = delta_topic_outputs(b, topic);
        if last_mark(&published).is_some_and(|mark| mark >= at) {
            return published;
        }
        assert!(
            Instant::now() < deadline,
            "{topic}: got to mark {:?} in 60 s, not {at}\n{}",
            last_mark(&published),
            log()
        );
        std::thread::sleep(Duration::from_millis(300));
    }
}

/// Two worker threads; partition 1 carries 5 s of a quiet agent's progress and then nothing
/// (its agent left), partition 0 the whole smoke stream. With `idle_partition_after = "2s"`,
/// partition 1 stops holding the frontier once it has been quiet that long with nothing left
/// to read, so the running cluster publishes the stream's graph; before, partition 1's clock
/// held the cluster's frontier 5 s into the stream for good.
fn a_quiet_partition_stops_holding_a_running_cluster(b: &str, dir: &Path, reference: &[Output]) {
    let records = smoke_records(dir);
    let first = records.iter().map(Record::time).min().unwrap();
    flowgraph_sources::kafka::create_topic_if_missing(b, &Default::default(), "quiet.in", 2).unwrap();
    let quiet: Vec<Record> = (0..=5)
        .map(|s| {
            Record::Progress(flowgraph_schema::Progress {
                time_: first + s * 1_000_000_000,
                source: "agent-quiet".into(),
                losses: Default::default(),
            })
        })
        .collect();
    produce_to_partition(b, "quiet.in", 1, &quiet);
    produce_to_partition(b, "quiet.in", 0, &records);
    let config = config(dir, b, "quiet", "quiet.in");
    let mut text = std::fs::read_to_string(&config).unwrap();
    text.push_str("idle_partition_after = \"2s\"\n");
    std::fs::write(&config, text).unwrap();
    let mut run = spawn_flowgraph(dir, "quiet.log", &["run", "--config", config.to_str().unwrap(), "--workers", "2"]);
    let log = || std::fs::read_to_string(dir.join("quiet.log")).unwrap_or_default();
    let published = published_up_to(b, "quiet.deltas", reachable_while_running(reference), log);
    assert!(
        log().contains("partition idle") && log().contains("partition=1"),
        "partition 1 was not found idle:\n{}",
        log()
    );
    assert_marks_cover(&published, "a quiet partition");
    assert_same_deltas(
        &published,
        &updates_before_last_mark(&published, reference),
        "a quiet partition, up to the last mark",
    );
    stops_cleanly(&mut run, "the run with a quiet partition", log);
    // The last report: worker 1 read the quiet agent's 6 progress records, and its partition
    // is idle.
    assert!(log().contains("worker=1 records=6 late=0 idle_partitions=1 "), "worker 1's last report:\n{}", log());
}
