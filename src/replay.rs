//! `flowgraph replay`: a recorded stream through the job, in this process.

use crate::cli::{QueryArgs, ReplayArgs};
use crate::naming::Naming;
use crate::report;
use anyhow::{bail, Context};
use flowgraph_config::{ConfigFile, QueryConfig};
use flowgraph_pipeline::{Admission, Job, JobConfig, Output, Rejection};
use flowgraph_schema::Record;
use flowgraph_sinks::deltas::DeltaWriter;
use flowgraph_sinks::graph::GraphState;
use flowgraph_sources::clock::SourceClock;
use flowgraph_sources::recording::{self, Format, RecordingReader};
use indicatif::{ProgressBar, ProgressStyle};
use std::fs::File;
use std::io::{BufRead, BufWriter};
use std::time::{Duration, Instant};

/// How many bad or rejected records are described one by one before only counting.
const DESCRIBED_PROBLEMS: u64 = 10;

/// The job's configuration from the config file (if any) with the flags on top.
pub fn job_config(args: &QueryArgs) -> anyhow::Result<JobConfig> {
    let mut query = match &args.config {
        Some(path) => ConfigFile::load(path)?.query,
        None => QueryConfig::default(),
    };
    if let Some(ips) = &args.ips {
        query.ips = ips.split(',').map(str::to_string).collect();
    }
    if let Some(window) = &args.window {
        query.window = window.clone();
    }
    if let Some(group_by) = &args.group_by {
        query.group_by = group_by.clone();
    }
    if let Some(lateness) = &args.lateness {
        query.lateness = lateness.clone();
    }
    if let Some(interval) = &args.progress_interval {
        query.progress_interval = interval.clone();
    }
    if let Some(updates) = args.max_updates_per_piece {
        query.max_updates_per_piece = updates;
    }
    let config = query.validate().map_err(|mut e| {
        e.file = args.config.clone();
        e
    })?;
    Ok(config)
}

/// The `[kafka]` section of the config file (if any) with `--brokers` on top, validated.
pub fn kafka_config(
    config: Option<&std::path::PathBuf>,
    brokers: Option<&String>,
) -> anyhow::Result<flowgraph_config::KafkaConfig> {
    let mut kafka = match config {
        Some(path) => ConfigFile::load(path)?.kafka,
        None => Default::default(),
    };
    if let Some(brokers) = brokers {
        kafka.brokers = brokers.clone();
    }
    kafka.validate().map_err(|mut e| {
        e.file = config.cloned();
        e
    })?;
    Ok(kafka)
}

/// A flag that SIGINT or SIGTERM raises, for loops that stop cleanly.
pub fn stop_flag() -> anyhow::Result<std::sync::Arc<std::sync::atomic::AtomicBool>> {
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(signal, stop.clone()).context("installing signal handlers")?;
    }
    Ok(stop)
}

/// Describes an input's first problems one by one (as warnings), then only counts them, so a
/// bad input cannot flood the log.
#[derive(Debug)]
pub struct ProblemLog {
    source: String,
    seen: u64,
}

impl ProblemLog {
    pub fn new(source: &str) -> Self {
        ProblemLog { source: source.to_string(), seen: 0 }
    }

    pub fn report(&mut self, what: impl std::fmt::Display) {
        self.seen += 1;
        if self.seen <= DESCRIBED_PROBLEMS {
            tracing::warn!("{}: {what}", self.source);
        } else if self.seen == DESCRIBED_PROBLEMS + 1 {
            tracing::warn!("{}: further problems are counted, not described", self.source);
        }
    }
}

/// What a replay saw and produced.
#[derive(Debug)]
pub struct ReplaySummary {
    pub format: Format,
    pub records: u64,
    pub late: u64,
    pub rejected: u64,
    pub bad_input: u64,
    pub updates: u64,
    pub progress_marks: u64,
    pub elapsed: Duration,
    pub graph: GraphState,
    pub tracked_keys: usize,
}

/// Pushes one record of a recorded or live stream into `job`, and moves the job's watermark
/// to where the stream's agents say it has got (`clock`, fed only records the job accepted).
/// The frontier then follows the agents' progress records, as the Kafka source's does per
/// partition (there, over every decoded record; here, over one clock for the whole input),
/// instead of trailing the newest record by the whole lateness: a time completes once every
/// agent heard from has moved past it, and the job holds one progress period of pending
/// samples instead of a lateness's worth. docs/ARCHITECTURE.md "Time model" has the caveats.
pub(crate) fn push_followed(job: &mut Job, clock: &mut SourceClock, record: Record) -> Result<Admission, Rejection> {
    let (time, progress) = (record.time(), matches!(record, Record::Progress(_)));
    if progress {
        // Progress is never rejected, and the clock needs its source.
        clock.observe(&record);
    }
    let admission = job.push(record)?;
    if !progress {
        clock.observe_time(time);
    }
    job.advance_watermark(clock.watermark(job.lateness_ns()));
    Ok(admission)
}

/// Batches of outputs queued for the graph's thread, besides the one it applies and the one
/// the job fills. One is as fast as four, and holds less: the large stream's replay peaked at
/// 1,102 MB with one, 1,156 MB with four, 1,077 MB on one thread (item 46).
const GRAPH_QUEUE: usize = 1;

/// Runs a recording through `job`, with `naming`'s names. Bad input and rejected records are
/// counted and described (the first few), or fatal with `strict`. The job's outputs are
/// applied to the graph, and written to `deltas`, on a thread of their own (`replay-graph`):
/// applying them was ~25% of a replay's time on one core (docs/BENCHMARKS.md, item 46).
pub fn replay_stream<R: BufRead>(
    reader: RecordingReader<R>,
    source: &str,
    job: &mut Job,
    naming: &mut Naming,
    strict: bool,
    deltas: Option<&mut DeltaWriter<BufWriter<File>>>,
    progress_bar: &ProgressBar,
) -> anyhow::Result<ReplaySummary> {
    let started = Instant::now();
    std::thread::scope(|scope| {
        let (to_graph, batches) = std::sync::mpsc::sync_channel::<Vec<Output>>(GRAPH_QUEUE);
        let graph = std::thread::Builder::new()
            .name("replay-graph".into())
            .spawn_scoped(scope, move || apply_all(batches, deltas))
            .context("starting the replay's graph thread")?;
        let fed = feed(reader, source, job, naming, strict, to_graph, progress_bar);
        // The graph thread's error first: a failed write stops the feed, which then only
        // sees its queue closed.
        let (graph, updates, progress_marks) =
            graph.join().map_err(|_| anyhow::anyhow!("the replay's graph thread panicked"))??;
        let (format, bad_input) = fed?;
        progress_bar.finish_and_clear();
        let stats = job.stats().clone();
        Ok(ReplaySummary {
            format,
            records: stats.records - naming.records_added(),
            late: stats.late,
            rejected: stats.rejected,
            bad_input,
            updates,
            progress_marks,
            elapsed: started.elapsed(),
            graph,
            tracked_keys: job.tracked_connection_keys(),
        })
    })
}

/// Reads the recording into `job` and hands each drained batch of outputs to the graph's
/// thread. Returns the recording's format and the bad input it counted.
fn feed<R: BufRead>(
    mut reader: RecordingReader<R>,
    source: &str,
    job: &mut Job,
    naming: &mut Naming,
    strict: bool,
    to_graph: std::sync::mpsc::SyncSender<Vec<Output>>,
    progress_bar: &ProgressBar,
) -> anyhow::Result<(Format, u64)> {
    let mut names = Vec::new();
    let mut outputs = Vec::new();
    let mut bad_input = 0u64;
    let mut problems = ProblemLog::new(source);
    let mut describe = |what: String| problems.report(what);
    let mut clock = SourceClock::default();
    let closed = || anyhow::anyhow!("the replay's graph thread stopped");
    loop {
        let item = reader.next_item().with_context(|| format!("reading {source}"))?;
        let Some(item) = item else { break };
        match item {
            Ok((position, record)) => {
                let kind = record.kind();
                if naming.is_active() {
                    // A static name goes in just before the first record that needs it.
                    naming.observe(&record, job.frontier(), &mut names);
                    for name in names.drain(..) {
                        let _ = job.push(name);
                    }
                }
                match push_followed(job, &mut clock, record) {
                    Ok(Admission::OnTime) | Ok(Admission::Late { .. }) => {}
                    Err(rejection) => {
                        if strict {
                            bail!("{source}: {position}: {kind} record rejected: {rejection}");
                        }
                        describe(format!("{position}: {kind} record rejected: {rejection}"));
                    }
                }
            }
            Err(bad) => {
                bad_input += 1;
                if strict {
                    bail!("{source}: {bad}");
                }
                describe(bad.to_string());
            }
        }
        job.drain_into(&mut outputs);
        if !outputs.is_empty() {
            to_graph.send(std::mem::take(&mut outputs)).map_err(|_| closed())?;
            progress_bar.set_position(job.stats().records - naming.records_added());
            // Late names (a reloaded file, reverse DNS) once per progress mark, not per record.
            if naming.is_active() {
                naming.poll(job.frontier(), &mut names);
                for name in names.drain(..) {
                    let _ = job.push(name);
                }
            }
        }
    }
    if naming.is_active() {
        // The input is read; lookups still on the wire would otherwise never go in.
        naming.settle(naming.settle_limit());
        naming.poll(job.frontier(), &mut names);
        for name in names.drain(..) {
            let _ = job.push(name);
        }
    }
    job.finish();
    job.drain_into(&mut outputs);
    to_graph.send(outputs).map_err(|_| closed())?;
    Ok((reader.format(), bad_input))
}

/// The graph's thread: applies each batch to the graph and writes it to `deltas`, until the
/// feed closes the queue. Returns the graph, the updates and the progress marks.
fn apply_all(
    batches: std::sync::mpsc::Receiver<Vec<Output>>,
    mut deltas: Option<&mut DeltaWriter<BufWriter<File>>>,
) -> anyhow::Result<(GraphState, u64, u64)> {
    let mut graph = GraphState::default();
    let (mut updates, mut progress_marks) = (0u64, 0u64);
    for batch in batches {
        for output in batch {
            if let Some(writer) = deltas.as_mut() {
                writer.write(&output).context("writing deltas")?;
            }
            graph.apply(&output);
            match output {
                Output::Update { .. } => updates += 1,
                Output::Progress(_) => progress_marks += 1,
            }
        }
    }
    Ok((graph, updates, progress_marks))
}

pub fn run(args: ReplayArgs) -> anyhow::Result<()> {
    if let Some(topic) = &args.to_kafka {
        if !args.naming.given().is_empty() {
            bail!("--names, --reverse-dns and --dns-server name addresses in the job; --to-kafka only publishes the recording (give them to `flowgraph run`)");
        }
        return crate::produce::run(&args, topic);
    }
    let config = job_config(&args.query)?;
    let mut naming = crate::naming::start_for(args.query.config.as_ref(), &args.naming, &config)?;
    let reader = recording::open(&args.input)?;
    let source = args.input.display().to_string();
    let mut deltas = match &args.deltas {
        Some(path) => Some(DeltaWriter::new(BufWriter::new(
            File::create(path).with_context(|| format!("creating {}", path.display()))?,
        ))),
        None => None,
    };
    let bar = ProgressBar::new_spinner().with_style(
        ProgressStyle::with_template("{spinner} {human_pos} records replayed ({per_sec})").expect("valid template"),
    );
    bar.enable_steady_tick(Duration::from_millis(200));
    let params = config.params.clone();
    let mut job = Job::new(config).map_err(anyhow::Error::msg)?;
    let summary = replay_stream(reader, &source, &mut job, &mut naming, args.strict, deltas.as_mut(), &bar)?;
    if let Some(writer) = deltas {
        writer.finish().context("writing deltas")?;
    }
    if let Some(path) = &args.snapshot {
        std::fs::write(path, summary.graph.snapshot_json() + "\n")
            .with_context(|| format!("writing {}", path.display()))?;
    }
    report::print_summary(&source, &params, &summary, args.top);
    if let Some(line) = naming.summary() {
        println!("{line}");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use flowgraph_schema::json::decode_line;

    const SECOND: u64 = 1_000_000_000;
    const START: u64 = 1_700_000_000 * SECOND;

    fn conn(seconds: u64, pid: u32, bytes: u64) -> Record {
        let line = format!(
            r#"{{"type":"conn_stats","time_":{},"upid":"1:{pid}:1","remote_addr":"10.0.0.7","remote_port":6379,"trace_role":1,"bytes_sent":{bytes},"bytes_recv":{bytes}}}"#,
            START + seconds * SECOND
        );
        decode_line(&line).expect("valid record")
    }

    fn progress(seconds: u64, agent: &str) -> Record {
        decode_line(&format!(r#"{{"type":"progress","time_":{},"source":"{agent}"}}"#, START + seconds * SECOND))
            .expect("valid record")
    }

    #[test]
    fn the_frontier_follows_the_agents_progress_not_only_lateness() {
        let config = JobConfig { lateness_ns: 30 * SECOND, ..JobConfig::default() };
        let (mut job, mut clock) = (Job::new(config).unwrap(), SourceClock::default());
        let mut push = |job: &mut Job, record| push_followed(job, &mut clock, record);
        push(&mut job, progress(0, "agent-a")).unwrap();
        push(&mut job, progress(0, "agent-b")).unwrap();
        push(&mut job, conn(5, 1, 100)).unwrap();
        push(&mut job, progress(15, "agent-b")).unwrap();
        push(&mut job, progress(40, "agent-a")).unwrap();
        // agent-b's progress (15 s) is behind agent-a's but ahead of the lateness floor
        // (40 - 30 s): the least progress over the agents leads.
        assert_eq!(job.frontier(), START + 15 * SECOND, "the least progress over the agents");
        push(&mut job, progress(50, "agent-a")).unwrap();
        // agent-b's progress is now behind the lateness floor (50 - 30 s), which leads.
        assert_eq!(job.frontier(), START + 20 * SECOND, "the lateness floor");
        let gone = 15 + 30 + flowgraph_schema::AGENT_SILENCE_LIMIT_NS / SECOND + 1;
        push(&mut job, progress(gone, "agent-a")).unwrap();
        // agent-b has been quiet for longer than lateness and the agents' silence limit: it
        // left, and no longer holds the frontier.
        assert_eq!(job.frontier(), START + gone * SECOND, "an agent quiet for longer than it may be");
        // A rejected record (a counter going down) does not move the clock, however late in
        // event time it claims to be.
        assert!(push(&mut job, conn(1_000, 1, 50)).is_err());
        assert_eq!(job.frontier(), START + gone * SECOND);
        push(&mut job, conn(gone + 1, 1, 200)).unwrap();
        assert_eq!(job.stats().late, 0);
    }

    /// The graph's thread writes the deltas. When it cannot, the replay stops reading and
    /// fails with that error (the feed, which then finds the thread gone, says less).
    #[test]
    fn a_deltas_file_that_cannot_be_written_stops_the_replay_with_the_write_error() {
        let line = |record: String| record + "\n";
        let mut lines = String::new();
        for pid in 1..=20 {
            lines += &line(format!(
                r#"{{"type":"process","time_":{START},"upid":"1:{pid}:1","pod":"shop/p{pid}","cmdline":"/app/server"}}"#
            ));
        }
        // A second of records, then the agent's progress past it: each second is released.
        let seconds = 60;
        for second in 1..=seconds {
            for pid in 1..=20 {
                lines += &line(format!(
                    r#"{{"type":"conn_stats","time_":{},"upid":"1:{pid}:1","remote_addr":"10.0.0.7","remote_port":6379,"trace_role":1,"bytes_sent":{second},"bytes_recv":{second}}}"#,
                    START + second * SECOND
                ));
            }
            lines +=
                &line(format!(r#"{{"type":"progress","time_":{},"source":"agent-a"}}"#, START + second * SECOND + 1));
        }
        let reader = RecordingReader::new(std::io::Cursor::new(lines.into_bytes())).unwrap();
        let mut naming = Naming::start(&flowgraph_config::NamesConfig::default().validate().unwrap(), 0).unwrap();
        let mut job = Job::new(JobConfig { lateness_ns: 0, ..JobConfig::default() }).unwrap();
        // /dev/full takes no bytes: the first flush of the buffered deltas fails.
        let mut deltas = DeltaWriter::new(BufWriter::new(File::create("/dev/full").unwrap()));
        let bar = ProgressBar::hidden();
        let error = replay_stream(reader, "test", &mut job, &mut naming, false, Some(&mut deltas), &bar).unwrap_err();
        assert!(format!("{error:#}").contains("writing deltas"), "{error:#}");
        let total = 20 + seconds * 21;
        assert!(job.stats().records < total, "read on after the writes failed: {} of {total}", job.stats().records);
    }
}
