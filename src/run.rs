//! `flowgraph run`: the long-running service, on one worker or a timely cluster.
//!
//! ```text
//!  every worker: its partitions ─ KafkaSource (per-partition clocks, dead letters) ─┐
//!                                                   routing by key, all workers ◄───┘
//!                ClusterJob (stages + dataflow on its keys) ─ outputs ─► worker 0
//!  worker 0:     SinkThread ─ KafkaSink (deltas + state, one transaction per publish)
//! ```
//!
//! `--workers N` runs N worker threads; `--processes P --process-id I --hosts FILE` joins P
//! processes over timely's own TCP communication (FILE: one `host:port` per line, line i for
//! process i). Partition p is read by worker `p % (N * P)`; records are exchanged by key;
//! worker 0 alone writes the sink, so the topics get each update once.
//!
//! On start the sink finds the last progress mark a previous run committed; the sources read
//! the retained input again (from the beginning, or with `rebuild_from = "window"` from
//! `mark - window - lateness` by message timestamp), the job rebuilds its state, and the sink
//! publishes only times at or after the mark. So a restart, clean or after `kill -9` (of any
//! process), continues the delta topic where it stopped and leaves the state topic as a
//! crash-free run would.

use crate::cli::RunArgs;
use crate::replay::{job_config, kafka_config, stop_flag};
use crate::telemetry::{Heartbeats, WORKER_STALL_LIMIT};
use anyhow::{bail, Context};
use flowgraph_config::{parse_duration_ns, KafkaConfig};
use flowgraph_pipeline::{ClusterJob, JobConfig, Output};
use flowgraph_sinks::kafka::{last_progress, DeltaFormat, KafkaSink, KafkaSinkConfig, SinkThread};
use flowgraph_sources::kafka::{KafkaSource, KafkaSourceConfig, StartAt};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use timely::communication::Config as CommunicationConfig;
use timely::worker::Worker;

/// Records per poll: one transaction (and its buffered deltas) stays bounded while a backlog
/// is read, whatever the size of the messages.
const POLL_RECORDS: usize = 50_000;

/// What every worker needs.
struct Service {
    config: JobConfig,
    kafka: KafkaConfig,
    start: StartAt,
    idle_exit: Option<Duration>,
    /// The pipeline's own name sources (names file, reverse DNS), one set per worker.
    naming: flowgraph_config::NamingSettings,
    stop: Arc<AtomicBool>,
    /// This process's id in a multi-process cluster (`--processes` 2 or more), `None` in one
    /// process. A stopped process of several exits rather than wait in timely for its peers'
    /// dataflows, which a stopped peer never releases (see [`leave_early`]).
    cluster_process: Option<usize>,
    /// Process 0's sink, taken by worker 0.
    sink: Mutex<Option<KafkaSink>>,
    /// `--status-file`: status events for programs that drive the run.
    status: Option<StatusFile>,
    /// Each worker beats once per pass of its loop; `/healthz` fails when one stops.
    heartbeats: Arc<Heartbeats>,
}

/// JSON Lines of status events, one line per event, written whole and flushed at once, so a
/// reader polling the file sees complete lines. Truncated when the run opens it: the file
/// describes one run. A failed write stops the worker, like any other output failure.
struct StatusFile {
    path: std::path::PathBuf,
    file: Mutex<std::fs::File>,
}

impl StatusFile {
    fn create(path: &Path) -> anyhow::Result<StatusFile> {
        let file =
            std::fs::File::create(path).with_context(|| format!("--status-file: cannot open {}", path.display()))?;
        Ok(StatusFile { path: path.to_path_buf(), file: Mutex::new(file) })
    }

    fn write(&self, event: serde_json::Value) -> anyhow::Result<()> {
        use std::io::Write;
        let line = format!("{event}\n");
        let mut file = self.file.lock().expect("status file lock");
        file.write_all(line.as_bytes())
            .and_then(|()| file.flush())
            .with_context(|| format!("--status-file: writing {}", self.path.display()))
    }
}

/// In a process other than 0: the mark process 0 resumes after, once it has set up the
/// topics and fenced the previous incarnation (waiting up to a minute for that).
fn mark_of_process_zero(kafka: &KafkaConfig) -> anyhow::Result<Option<flowgraph_schema::EventTime>> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match last_progress(&kafka.brokers, &kafka.deltas_topic, &kafka.options) {
            Ok(mark) => return Ok(mark),
            Err(e) if Instant::now() < deadline => {
                tracing::info!(error = %e, "waiting for process 0 to set up {}", kafka.deltas_topic);
                std::thread::sleep(Duration::from_secs(1));
            }
            Err(e) => bail!("reading the last progress mark of {}: {e}", kafka.deltas_topic),
        }
    }
}

pub fn run(args: RunArgs) -> anyhow::Result<()> {
    let config = job_config(&args.query)?;
    let kafka = kafka_config(args.query.config.as_ref(), args.brokers.as_ref())?;
    let naming = crate::naming::settings(args.query.config.as_ref(), &args.naming)?;
    let idle_exit = args
        .exit_when_idle
        .as_deref()
        .map(|d| parse_duration_ns("--exit-when-idle", d).map(Duration::from_nanos))
        .transpose()?;
    let communication = cluster(&args)?;
    // Opened before the sink fences a previous incarnation, so a bad path stops nothing.
    let status = args.status_file.as_deref().map(StatusFile::create).transpose()?;

    let heartbeats = Heartbeats::new(args.workers * args.processes.max(1), WORKER_STALL_LIMIT);
    crate::telemetry::serve(args.metrics_addr.as_deref(), Some(heartbeats.clone()))?;
    let stop = stop_flag()?;

    // Process 0 writes the sink: it creates the topics and fences a previous incarnation's
    // open transaction before reading the last committed mark, so that mark is final.
    let first_process = args.process_id.unwrap_or(0) == 0;
    let sink = match first_process {
        true => Some(KafkaSink::new(KafkaSinkConfig {
            brokers: kafka.brokers.clone(),
            deltas_topic: kafka.deltas_topic.clone(),
            state_topic: kafka.state_topic.clone(),
            format: if kafka.delta_format == "bincode" { DeltaFormat::Bincode } else { DeltaFormat::Json },
            transactional_id: kafka.transactional_id.clone(),
            max_updates_per_message: flowgraph_sinks::kafka::MAX_UPDATES_PER_MESSAGE,
            state_checkpoint_every: kafka.state_checkpoint_ns()?,
            state_writes_per_send: flowgraph_sinks::kafka::STATE_WRITES_PER_SEND,
            options: kafka.options.clone(),
        })?),
        false => None,
    };
    // Where the sources start: from the beginning, unless the config asks to rebuild only the
    // last window before the mark, or to start at the end on a first run.
    let needs_mark = kafka.rebuild_from == "window" || kafka.start == "end";
    let resume_after = match &sink {
        Some(sink) => sink.resume_after(),
        None if needs_mark => mark_of_process_zero(&kafka)?,
        None => None,
    };
    let start = match resume_after {
        Some(mark) if kafka.rebuild_from == "window" => {
            StartAt::EventTime(mark.saturating_sub(config.params.window_ns + config.lateness_ns))
        }
        Some(_) => StartAt::Beginning,
        None if kafka.start == "end" => StartAt::End,
        None => StartAt::Beginning,
    };
    tracing::info!(
        brokers = %kafka.brokers, topic = %kafka.input_topic, start = ?start, cluster = ?communication,
        "flowgraph run: starting"
    );
    exit_when_the_cluster_breaks(&communication);
    let cluster_process = (args.processes > 1).then(|| args.process_id.unwrap_or(0));
    let service = Arc::new(Service {
        config,
        kafka,
        start,
        idle_exit,
        naming,
        stop,
        cluster_process,
        sink: Mutex::new(sink),
        status,
        heartbeats,
    });
    let timely_config = timely::Config { communication, worker: timely::WorkerConfig::default() };
    let guards = timely::execute(timely_config, move |worker| {
        let (index, peers) = (worker.index(), worker.peers());
        run_worker(worker, &service).map_err(|error| {
            // Its job is dropped by now, but what that releases reaches the peers only when
            // this worker steps again, which it never does. Before its job was built, the
            // others would wait for its dataflows for good.
            if peers > 1 {
                leave_early(index, Some(&error));
            }
            format!("worker {index}: {error:#}")
        })
    })
    .map_err(|e| anyhow::anyhow!("starting the timely cluster: {e}"))?;
    let mut failures = Vec::new();
    for result in guards.join() {
        match result {
            Ok(Ok(())) => {}
            Ok(Err(e)) | Err(e) => failures.push(e),
        }
    }
    if !failures.is_empty() {
        bail!("{}", failures.join("; "));
    }
    Ok(())
}

/// A worker of a cluster leaves before the job finished: on an error (`Some`), or stopped in a
/// process other than process 0. Leaving the cluster cleanly (dropping its job, then stepping
/// until timely is done) would release its times, so the others (worker 0 publishing) could
/// complete them without its records. It exits the process at once instead, before it steps
/// again (a dropped job's release is local until then): its peers' next progress waits for
/// it, the cluster breaks (the other processes exit, code 3), and a restart resumes after the
/// last committed progress mark.
/// Process 0's open transaction is never committed: the restarted sink fences it, or the
/// broker's transaction timeout aborts it. A stop in process 0 needs none of this: worker 0
/// publishes nothing computed after the stop, commits, and exits.
fn leave_early(index: usize, error: Option<&anyhow::Error>) -> ! {
    match error {
        Some(error) => {
            eprintln!(
                "error: worker {index}: {error:#}; exiting at once, as the other workers cannot finish without it"
            );
            std::process::exit(1);
        }
        None => {
            eprintln!("flowgraph run: stopped; this process leaves the cluster by exiting, so that no time is completed without it");
            std::process::exit(0);
        }
    }
}

/// timely cannot carry on without a peer: when a process of the cluster dies, the others'
/// communication threads panic, and then their workers; when a worker thread panics, the
/// other workers of its process wait for its progress for good, and the process hangs where
/// no orchestrator restarts it. On any cluster of more than one worker, say so once, plainly,
/// and exit at once (an open Kafka transaction is then aborted, never half-published), so the
/// orchestrator restarts every process; the restarted cluster resumes after the last
/// committed progress mark. A single worker needs none of this: its panic ends `run`.
fn exit_when_the_cluster_breaks(communication: &CommunicationConfig) {
    if matches!(communication, CommunicationConfig::Thread) {
        return;
    }
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let thread = std::thread::current();
        let Some(name) = thread.name().filter(|n| n.starts_with("timely:")) else {
            return default_hook(info);
        };
        let payload = info.payload();
        let message = payload
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| payload.downcast_ref::<&str>().copied())
            .unwrap_or("no message");
        let place = info.location().map(|l| format!(" at {l}")).unwrap_or_default();
        eprintln!(
            "error: the timely cluster broke (thread {name}: {message}{place}); exiting so that \
             every process can be restarted, which resumes after the last committed progress mark"
        );
        std::process::exit(3);
    }));
}

/// timely's communication from `--workers`, `--processes`, `--process-id` and `--hosts`.
fn cluster(args: &RunArgs) -> anyhow::Result<CommunicationConfig> {
    if args.workers == 0 {
        bail!("--workers: must be 1 or more");
    }
    if args.processes <= 1 {
        if args.hosts.is_some() {
            bail!("--hosts: only with --processes 2 or more");
        }
        return Ok(match args.workers {
            1 => CommunicationConfig::Thread,
            n => CommunicationConfig::Process(n),
        });
    }
    let process = args.process_id.context("--process-id (or FLOWGRAPH_PROCESS_ID): needed with --processes")?;
    if process >= args.processes {
        bail!("--process-id: {process} is not below --processes {}", args.processes);
    }
    let hosts = args.hosts.as_deref().context("--hosts: needed with --processes")?;
    let addresses = read_hosts(hosts, args.processes)?;
    Ok(CommunicationConfig::Cluster { threads: args.workers, process, addresses, report: false, zerocopy: false })
}

/// The hosts file: `host:port` per line, one per process; blank lines and `#` comments skipped.
fn read_hosts(path: &Path, processes: usize) -> anyhow::Result<Vec<String>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("--hosts: cannot read {}", path.display()))?;
    let mut addresses = Vec::new();
    for (number, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        match line.rsplit_once(':') {
            Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok() => addresses.push(line.to_string()),
            _ => bail!("--hosts: {}:{}: {line:?} is not host:port", path.display(), number + 1),
        }
    }
    if addresses.len() != processes {
        bail!(
            "--hosts: {} lists {} processes, but --processes is {processes} (one host:port per process, in process order)",
            path.display(),
            addresses.len()
        );
    }
    Ok(addresses)
}

/// One worker: its partitions in, its keys' share of the job, and on worker 0 the sink.
fn run_worker(worker: &mut Worker, service: &Service) -> anyhow::Result<()> {
    let (index, peers) = (worker.index(), worker.peers());
    // This worker thread's CPU time, for the stopped event (beside the sink's and the process's).
    let cpu = cpu_time::ThreadTime::now();
    let kafka = &service.kafka;
    let mut source = KafkaSource::new(KafkaSourceConfig {
        brokers: kafka.brokers.clone(),
        topic: kafka.input_topic.clone(),
        dead_letter_topic: Some(kafka.dead_letter_topic.clone()).filter(|t| !t.is_empty()),
        start: service.start,
        worker: index,
        workers: peers,
        options: kafka.options.clone(),
        lateness_ns: service.config.lateness_ns,
        idle_after: Some(kafka.idle_partition_after()?),
    })?;
    let mut sink = match index {
        0 => {
            let sink = service.sink.lock().expect("sink lock").take();
            let sink = sink.context("worker 0 runs in process 0, which has the sink")?;
            Some(SinkThread::spawn(sink).context("starting the Kafka sink thread")?)
        }
        _ => None,
    };
    tracing::info!(worker = index, workers = peers, partitions = ?source.partitions(), "flowgraph run: consuming");
    if let Some(status) = &service.status {
        status.write(serde_json::json!({"event": "consuming", "worker": index, "workers": peers, "partitions": source.partitions()}))?;
    }
    let mut job = ClusterJob::new(worker, service.config.clone()).map_err(anyhow::Error::msg)?;
    // Each worker names the addresses of its own partitions' records; the names are routed
    // to the worker that owns the address like any other record.
    let mut naming = crate::naming::Naming::start(&service.naming, service.config.lateness_ns)?;
    let mut names = Vec::new();
    let (mut records, mut outputs) = (Vec::new(), Vec::new());
    let mut rejected = 0u64;
    // Since when polls have returned nothing (processing time does not count as idle).
    let mut idle_since: Option<Instant> = None;
    let mut closed = false;
    if source.partitions().is_empty() {
        // More workers than partitions: nothing to read, and nothing to hold the others back.
        job.close();
        closed = true;
    }
    let mut last_report = Instant::now();
    let mut last_progress = None;
    loop {
        service.heartbeats.beat(index);
        if service.stop.load(Ordering::SeqCst) {
            break;
        }
        // A long jump of the frontier handed over in pieces is finished before more is read,
        // so that what it stages meanwhile does not make the next jump as long.
        if !closed && !job.jump_unfinished() {
            source.poll(Duration::from_millis(100), POLL_RECORDS, job.watermark(), &mut records)?;
            if records.is_empty() {
                idle_since.get_or_insert_with(Instant::now);
            } else {
                idle_since = None;
            }
            for record in records.drain(..) {
                if naming.is_active() {
                    naming.observe(&record, job.watermark(), &mut names);
                    names.drain(..).for_each(|name| job.push(name));
                }
                job.push(record);
            }
            if naming.is_active() {
                naming.poll(job.watermark(), &mut names);
                names.drain(..).for_each(|name| job.push(name));
            }
            match source.watermark() {
                Some(watermark) => job.advance_watermark(watermark),
                // None of this worker's partitions has carried a record, or all are idle: it
                // must not hold the cluster's frontier (such a partition does not hold one
                // worker's either), so it follows the workers whose partitions speak.
                None => {
                    if job.follow_others() && peers > 1 {
                        tracing::info!(worker = index, partitions = ?source.partitions(), "every partition of this worker is empty or idle: its watermark follows the other workers'");
                    }
                }
            }
            let idle = |limit: Duration| idle_since.is_some_and(|since| since.elapsed() >= limit);
            if service.idle_exit.is_some_and(idle) {
                tracing::info!(
                    worker = index,
                    "no input for {:?}: completing the last event time",
                    service.idle_exit.unwrap_or_default()
                );
                job.close();
                closed = true;
            }
        }
        job.step();
        if service.stop.load(Ordering::SeqCst) {
            // Another worker of this process may have stopped and dropped its job, which
            // lets this step complete times without that worker's records: nothing computed
            // in this step is published.
            break;
        }
        for rejection in job.take_rejections() {
            rejected += 1;
            if rejected <= 10 {
                tracing::warn!(worker = index, error = %rejection, "record rejected");
            }
        }
        if let Some(sink) = sink.as_mut() {
            job.drain_into(&mut outputs);
            if let Some(p) = outputs.iter().rev().find_map(|o| match o {
                Output::Progress(p) => Some(*p),
                _ => None,
            }) {
                last_progress = Some(p);
            }
            // The sink thread publishes it while this worker goes on.
            let published = if outputs.is_empty() { Ok(()) } else { sink.publish(std::mem::take(&mut outputs)) };
            // Every pass, not only on a hand-over: a commit finishes after its hand-over, and
            // an idle pipeline's metrics would otherwise miss its last transaction.
            crate::telemetry::sink(&sink.stats(), sink.handoff_wait());
            published?;
        }
        crate::telemetry::worker(index, job.stats(), source.stats(), job.frontier());
        if last_report.elapsed() >= Duration::from_secs(10) {
            report(index, &job, &source, sink.as_ref());
            crate::telemetry::lag(&source.lag());
            last_report = Instant::now();
        }
        if closed && job.finished() {
            break;
        }
    }
    // Done with its loop (stopped or finished; the others may run on): not a stalled worker.
    service.heartbeats.left(index);
    if !job.finished() && service.cluster_process.is_some_and(|process| process != 0) {
        // Stopped: dropping the job would let process 0 complete times without this
        // process's records, and publish them. Its dead letters go out first.
        source.flush();
        leave_early(index, None);
    }
    if let Some(sink) = sink.as_mut() {
        // Every batch handed over is committed before the run reports that it stopped.
        let finished = sink.finish();
        crate::telemetry::sink(&sink.stats(), sink.handoff_wait());
        finished?;
    }
    source.flush();
    report(index, &job, &source, sink.as_ref());
    if let Some(status) = &service.status {
        let (j, s, k) = (job.stats(), source.stats(), sink.as_ref().map(SinkThread::stats));
        status.write(serde_json::json!({
            "event": "stopped", "worker": index, "workers": peers, "records": s.records, "late": s.late,
            "keyed_records": j.records, "rejected": j.rejected, "decode_errors": s.decode_errors,
            "dead_letters": s.dead_letters, "updates_out": k.as_ref().map(|k| k.updates),
            "transactions": k.as_ref().map(|k| k.transactions), "last_progress": last_progress,
            "state_writes": k.as_ref().map(|k| k.state_writes), "state_checkpoints": k.as_ref().map(|k| k.checkpoints),
            "sink_sending_ms": k.as_ref().map(|k| millis(k.sending)),
            "sink_committing_ms": k.as_ref().map(|k| millis(k.committing)),
            "handoff_wait_ms": sink.as_ref().map(|k| millis(k.handoff_wait())),
            // CPU time: this worker's thread, the sink's thread, and the whole process so far
            // (librdkafka's threads are most of the rest).
            "worker_cpu_ms": millis(cpu.elapsed()),
            "sink_cpu_ms": k.as_ref().map(|k| millis(k.thread_cpu)),
            "process_cpu_ms": millis(cpu_time::ProcessTime::now().as_duration()),
            // The process's, so the same in every worker's event of one process.
            "peak_resident_bytes": crate::process_memory::peak_resident_bytes(),
        }))?;
    }
    if index == 0 {
        tracing::info!(last_progress = ?last_progress, "flowgraph run: stopped");
        if !job.finished() && service.cluster_process.is_some() {
            // Stopped, with every batch handed over committed. timely would wait for the other
            // processes' dataflows, which a stopped process never releases (it exits).
            std::process::exit(0);
        }
    }
    Ok(())
}

/// A duration in whole milliseconds, as the progress reports and the status file give the
/// sink's times.
fn millis(duration: Duration) -> u64 {
    duration.as_millis() as u64
}

fn report(index: usize, job: &ClusterJob, source: &KafkaSource, sink: Option<&SinkThread>) {
    let (j, s, k) = (job.stats(), source.stats(), sink.map(SinkThread::stats));
    tracing::info!(
        worker = index,
        records = s.records,
        late = s.late,
        idle_partitions = s.idle_partitions,
        keyed_records = j.records,
        rejected = j.rejected,
        decode_errors = s.decode_errors,
        dead_letters = s.dead_letters,
        updates_out = k.as_ref().map(|k| k.updates),
        transactions = k.as_ref().map(|k| k.transactions),
        aborts = k.as_ref().map(|k| k.aborts),
        skipped_on_resume = k.as_ref().map(|k| k.skipped_on_resume),
        sink_sending_ms = k.as_ref().map(|k| millis(k.sending)),
        sink_committing_ms = k.as_ref().map(|k| millis(k.committing)),
        sink_cpu_ms = k.as_ref().map(|k| millis(k.thread_cpu)),
        handoff_wait_ms = sink.map(|k| millis(k.handoff_wait())),
        frontier = job.frontier(),
        "flowgraph run: progress"
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::{Cli, Command};
    use clap::Parser;
    use std::process::Stdio;
    use timely::dataflow::operators::{Input, Probe};
    use timely::dataflow::InputHandle;

    /// Set in the child process the test below starts: it runs the cluster instead.
    const CHILD: &str = "FLOWGRAPH_TEST_PANICKING_WORKER_CHILD";

    /// The child's part: `flowgraph run --workers 2`'s cluster, worker 1 panics, and worker 0
    /// waits for its progress, as a running job's workers do. The hook under test exits the
    /// process, so it runs in a child.
    fn two_workers_one_panics() {
        let Command::Run(args) = Cli::parse_from(["flowgraph", "run", "--workers", "2"]).command else {
            unreachable!("parsed a run command")
        };
        let communication = cluster(&args).expect("--workers 2 is a valid cluster");
        exit_when_the_cluster_breaks(&communication);
        let config = timely::Config { communication, worker: timely::WorkerConfig::default() };
        let guards = timely::execute(config, |worker| {
            let mut input = InputHandle::new();
            let probe =
                worker.dataflow::<u64, _, _>(|scope| scope.input_from(&mut input).container::<Vec<u64>>().probe().0);
            if worker.index() == 1 {
                panic!("a bug in worker 1");
            }
            input.advance_to(1);
            while probe.less_than(input.time()) {
                worker.step();
            }
        })
        .expect("timely starts");
        drop(guards.join());
        eprintln!("the cluster finished without its panicking worker");
    }

    #[test]
    fn a_panicking_worker_ends_a_one_process_cluster() {
        if std::env::var_os(CHILD).is_some() {
            two_workers_one_panics();
            return;
        }
        let mut child = std::process::Command::new(std::env::current_exe().unwrap())
            .args(["run::tests::a_panicking_worker_ends_a_one_process_cluster", "--exact", "--nocapture"])
            .env(CHILD, "1")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let started = Instant::now();
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break status;
            }
            if started.elapsed() > Duration::from_secs(60) {
                child.kill().unwrap();
                panic!("the process still ran 60 s after a worker panicked: the other waits for it for good");
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        let mut stderr = String::new();
        std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
        assert_eq!(status.code(), Some(3), "exit code; stderr: {stderr}");
        assert!(
            stderr.contains("error: the timely cluster broke (thread timely:work-1: a bug in worker 1 at src/run.rs:"),
            "stderr: {stderr}"
        );
    }
}
