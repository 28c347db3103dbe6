//! `flowgraph ui`: the live view (docs/LIVE.md).
//!
//! With `--input`, a reader thread feeds a recording (or standard input, as it arrives) to the
//! job in this thread, which also takes the parameter changes the API forwards; the graph goes
//! to a [`LiveGraph`] that the HTTP server reads. With `--from-kafka`, a running pipeline's
//! compacted state topic is read first, then its delta topic is followed.

use crate::cli::{ServeArgs, UiArgs};
use crate::naming::Naming;
use crate::replay::{job_config, kafka_config, stop_flag, ProblemLog};
use anyhow::{bail, Context};
use crossbeam_channel::{select, Receiver};
use flowgraph_live::{ExplainRequest, JobRequest, LiveGraph, ParamsControl, ParamsRequest, Server, ServerConfig};
use flowgraph_pipeline::{Admission, GraphRecord, Job, JobConfig, JobStats, Output, Rejection};
use flowgraph_schema::{EventTime, Record};
use flowgraph_sinks::deltas::DeltaDecoder;
use flowgraph_sinks::graph::GraphState;
use flowgraph_sinks::kafka::{decode_with, last_checkpoint, last_progress, read_deltas, write_state_key};
use flowgraph_sources::clock::SourceClock;
use flowgraph_sources::kafka::{committed_reader, read_to_end};
use flowgraph_sources::recording::{Item, RecordingReader};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use rustc_hash::FxHashMap;
use std::io::{BufRead, ErrorKind, Write};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How often the job's thread looks at the stop flag when nothing else happens.
const IDLE_TICK: Duration = Duration::from_millis(200);

pub fn run(args: UiArgs) -> anyhow::Result<()> {
    if args.from_kafka {
        reject_embedded_only_flags(&args)?;
        return follow_kafka(&args);
    }
    let input = args.input.clone().context("--input: give a recording, or - for standard input")?;
    check_speed(args.speed)?;
    let config = job_config(&args.query)?;
    let max_window_ns = config.max_window_ns;
    let source = if input.as_os_str() == "-" { "standard input".to_string() } else { input.display().to_string() };
    let stop = stop_flag()?;
    let naming = crate::naming::start_for(args.query.config.as_ref(), &args.naming, &config)?;
    let (mut job, control) = LiveJob::new(config, naming)?;
    let _server = serve(&args.serve, job.live(), control, max_window_ns, false)?;
    let reader = if input.as_os_str() == "-" {
        // Records are handed on one by one: the next line may not have been written yet.
        spawn_reader(|| RecordingReader::new(std::io::stdin().lock()), 0.0, 1)
    } else {
        let path = input.clone();
        spawn_reader(move || flowgraph_sources::recording::open(&path), args.speed, batch_for(args.speed))
    };
    let summary = drive(&mut job, reader, &source, &stop, args.exit_at_end, &mut |_| {})?;
    summary.print(&source);
    if let Some(line) = job.naming_summary() {
        println!("{line}");
    }
    Ok(())
}

/// Records per hand-over from the reader thread: batches when unpaced, single records when
/// paced (a batch would hold records back past their due time).
pub fn batch_for(speed: f64) -> usize {
    if speed > 0.0 {
        1
    } else {
        1024
    }
}

/// Starts the HTTP server and prints the page's address (the one line scripts wait for).
/// `fall_back` tries a free port when the asked one is taken (the demo; `ui` reports it).
pub fn serve(
    args: &ServeArgs,
    live: Arc<LiveGraph>,
    control: ParamsControl,
    max_window_ns: u64,
    fall_back: bool,
) -> anyhow::Result<Server> {
    let listen: SocketAddr = args
        .listen
        .parse()
        .with_context(|| format!("--listen: {:?} is not an address such as 127.0.0.1:8080", args.listen))?;
    let metrics = crate::telemetry::recorder()?;
    let config = ServerConfig { listen, token: args.token.clone(), max_window_ns };
    let server = match flowgraph_live::start(live.clone(), control.clone(), config.clone(), metrics.clone()) {
        Err(flowgraph_live::ServeError::Bind { source, .. }) if fall_back && source.kind() == ErrorKind::AddrInUse => {
            tracing::warn!("{listen} is in use; serving the live view on a free port instead");
            let config = ServerConfig { listen: SocketAddr::new(listen.ip(), 0), ..config };
            flowgraph_live::start(live, control, config, metrics)?
        }
        started => started?,
    };
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "flowgraph ui: live view at {}", server.url())?;
    stdout.flush()?;
    Ok(server)
}

/// The embedded job behind the live view: records and parameter changes in, the graph out to
/// a [`LiveGraph`]; the pipeline's own names (static file, reverse DNS) go in beside them.
#[derive(Debug)]
pub struct LiveJob {
    job: Job,
    live: Arc<LiveGraph>,
    requests: Receiver<JobRequest>,
    naming: Naming,
    names: Vec<Record>,
    outputs: Vec<Output>,
    progress_interval_ns: u64,
    input_ended: bool,
    /// How far the input's agents have got (`crate::replay::push_followed`).
    clock: SourceClock,
}

impl LiveJob {
    /// A job under `config` with `naming`'s names, and the control the HTTP server uses to
    /// change its parameters and ask it questions.
    pub fn new(config: JobConfig, naming: Naming) -> anyhow::Result<(LiveJob, ParamsControl)> {
        let live = Arc::new(LiveGraph::new(config.params.clone()));
        let progress_interval_ns = config.progress_interval_ns;
        let job = Job::new(config).map_err(anyhow::Error::msg)?;
        let (sender, requests) = crossbeam_channel::unbounded();
        let job = LiveJob {
            job,
            live,
            requests,
            naming,
            names: Vec::new(),
            outputs: Vec::new(),
            progress_interval_ns,
            input_ended: false,
            clock: SourceClock::default(),
        };
        Ok((job, ParamsControl::Editable(sender)))
    }

    pub fn live(&self) -> Arc<LiveGraph> {
        self.live.clone()
    }

    /// Requests from the API waiting for this thread.
    pub fn requests(&self) -> Receiver<JobRequest> {
        self.requests.clone()
    }

    /// Pushes a record, after the static name its address needs, if any.
    pub fn push(&mut self, record: Record) -> Result<Admission, Rejection> {
        if self.naming.is_active() {
            self.naming.observe(&record, self.job.frontier(), &mut self.names);
            self.push_names();
        }
        crate::replay::push_followed(&mut self.job, &mut self.clock, record)
    }

    /// Pushes the names that arrived since the last call (reverse DNS, a reloaded names
    /// file), stamped with the job's frontier.
    pub fn poll_names(&mut self) {
        if self.naming.is_active() {
            self.naming.poll(self.job.frontier(), &mut self.names);
            self.push_names();
        }
    }

    fn push_names(&mut self) {
        for name in self.names.drain(..) {
            // Names are never rejected (any name may follow any other).
            let _ = self.job.push(name);
        }
    }

    /// What the pipeline's own name sources did, if any is set up.
    pub fn naming_summary(&self) -> Option<String> {
        self.naming.summary()
    }

    /// Answers the API's request.
    pub fn handle(&mut self, request: JobRequest) {
        match request {
            JobRequest::Params(request) => self.change_params(request),
            JobRequest::Explain(ExplainRequest { addr, reply }) => {
                let _ = reply.send(self.job.explain(addr));
            }
        }
    }

    pub fn advance_watermark(&mut self, watermark: EventTime) {
        self.job.advance_watermark(watermark);
    }

    /// The job's counters; `records` counts the input's records only.
    pub fn stats(&self) -> JobStats {
        let mut stats = self.job.stats().clone();
        stats.records -= self.naming.records_added();
        stats
    }

    pub fn tracked_connection_keys(&self) -> usize {
        self.job.tracked_connection_keys()
    }

    /// Hands the released outputs to the live graph; true if a progress mark was among them.
    pub fn publish(&mut self) -> bool {
        self.job.drain_into(&mut self.outputs);
        if self.outputs.is_empty() {
            return false;
        }
        self.live.publish(&self.outputs);
        let progressed = self.outputs.iter().any(|o| matches!(o, Output::Progress(_)));
        self.outputs.clear();
        progressed
    }

    /// Applies a change from the API. While input flows, it takes effect at the frontier and
    /// shows at the next progress mark; once the input has ended nothing would move time, so
    /// the job moves it one progress interval on and the change shows at once.
    pub fn change_params(&mut self, request: ParamsRequest) {
        let answer = self.job.set_params(request.params.clone());
        if let Ok(at) = answer {
            tracing::info!(params = ?request.params, effective_from = at, "parameters changed");
            self.live.set_params(request.params);
            if self.input_ended {
                // Wholly: no later input would go on with a jump that ended a piece.
                self.job.finish_at(at + self.progress_interval_ns);
            }
            self.publish();
        }
        // The requester may have gone (a closed connection): nothing to tell then.
        let _ = request.reply.send(answer);
    }

    /// The input is over: completes every time up to the last event time seen.
    pub fn end_input(&mut self) {
        self.input_ended = true;
        self.job.finish();
        self.publish();
    }
}

/// What the reader thread hands the job.
pub enum ReaderEvent {
    /// Records and undecodable pieces, in input order.
    Items(Vec<Item>),
    /// Reading failed (an I/O error); the input ends here.
    Failed(anyhow::Error),
}

/// Reads a recording in a thread of its own, pacing it by event time at `speed` (0: no
/// pauses). The channel closes at the end of the input.
pub fn spawn_reader<R, F>(open: F, speed: f64, batch: usize) -> Receiver<ReaderEvent>
where
    R: BufRead,
    F: FnOnce() -> std::io::Result<RecordingReader<R>> + Send + 'static,
{
    let (sender, events) = crossbeam_channel::bounded(16);
    let spawned = std::thread::Builder::new().name("flowgraph-reader".into()).spawn(move || {
        let read = || -> anyhow::Result<()> {
            let mut reader = open().context("opening the input")?;
            let started = Instant::now();
            let mut origin: Option<EventTime> = None;
            let mut items = Vec::with_capacity(batch);
            while let Some(item) = reader.next_item().context("reading the input")? {
                if let (Ok((_, record)), true) = (&item, speed > 0.0) {
                    let origin = *origin.get_or_insert(record.time());
                    let due = Duration::from_secs_f64(record.time().saturating_sub(origin) as f64 / 1e9 / speed);
                    if let Some(wait) = due.checked_sub(started.elapsed()) {
                        std::thread::sleep(wait);
                    }
                }
                items.push(item);
                if items.len() >= batch && sender.send(ReaderEvent::Items(std::mem::take(&mut items))).is_err() {
                    return Ok(()); // the job has stopped
                }
            }
            if !items.is_empty() {
                let _ = sender.send(ReaderEvent::Items(items));
            }
            Ok(())
        };
        if let Err(e) = read() {
            let _ = sender.send(ReaderEvent::Failed(e));
        }
    });
    if let Err(e) = spawned {
        // Without a reader the input is simply empty; say why.
        tracing::error!(error = %e, "cannot start the reader thread");
    }
    events
}

/// What the input brought.
#[derive(Debug, Default)]
pub struct InputSummary {
    pub stats: JobStats,
    pub bad_input: u64,
    pub tracked_keys: usize,
    pub ended: bool,
}

impl InputSummary {
    pub fn print(&self, source: &str) {
        println!(
            "{source}: {} records ({} late, {} rejected), {} undecodable; {}",
            self.stats.records,
            self.stats.late,
            self.stats.rejected,
            self.bad_input,
            if self.ended { "input complete" } else { "stopped before the end of the input" }
        );
    }
}

/// Runs the job's thread: records from the reader, parameter changes from the API, until a
/// stop signal (or the end of the input, with `exit_at_end`). `on_progress` sees the graph
/// after each published progress mark.
pub fn drive(
    job: &mut LiveJob,
    reader: Receiver<ReaderEvent>,
    source: &str,
    stop: &AtomicBool,
    exit_at_end: bool,
    on_progress: &mut dyn FnMut(&LiveGraph),
) -> anyhow::Result<InputSummary> {
    let mut problems = ProblemLog::new(source);
    let mut bad_input = 0u64;
    let mut input = Some(reader);
    let requests = job.requests();
    let never = crossbeam_channel::never();
    while !stop.load(Ordering::Relaxed) {
        select! {
            recv(input.as_ref().unwrap_or(&never)) -> event => match event {
                Ok(ReaderEvent::Items(items)) => {
                    for item in items {
                        match item {
                            Ok((position, record)) => {
                                let kind = record.kind();
                                if let Err(rejection) = job.push(record) {
                                    problems.report(format!("{position}: {kind} record rejected: {rejection}"));
                                }
                            }
                            Err(bad) => {
                                bad_input += 1;
                                problems.report(bad);
                            }
                        }
                    }
                    if job.publish() {
                        on_progress(&job.live);
                    }
                }
                Ok(ReaderEvent::Failed(e)) => return Err(e.context(format!("reading {source}"))),
                Err(_) => {
                    input = None;
                    job.end_input();
                    on_progress(&job.live);
                    crate::telemetry::job(&job.stats(), bad_input, job.live.time().unwrap_or(0));
                    if exit_at_end {
                        break;
                    }
                    // On standard error: standard output carries the one address line.
                    eprintln!(
                        "flowgraph ui: {source} ended ({} records); serving its final graph until Ctrl-C",
                        job.stats().records
                    );
                }
            },
            recv(requests) -> request => {
                if let Ok(request) = request {
                    job.handle(request);
                    on_progress(&job.live);
                }
            },
            default(IDLE_TICK) => {}
        }
        job.poll_names();
        crate::telemetry::job(&job.stats(), bad_input, job.live.time().unwrap_or(0));
    }
    Ok(InputSummary {
        stats: job.stats(),
        bad_input,
        tracked_keys: job.tracked_connection_keys(),
        ended: input.is_none(),
    })
}

/// With `--from-kafka` the graph is the pipeline's, as its config's `[query]` made it, and no
/// record passes through this process: a query, naming or pacing flag would change nothing but
/// the parameters the view reports, so it is refused rather than ignored.
fn reject_embedded_only_flags(args: &UiArgs) -> anyhow::Result<()> {
    let mut given = [args.query.given(), args.naming.given()].concat();
    if args.speed != 0.0 {
        given.push("--speed");
    }
    if !given.is_empty() {
        bail!(
            "{} cannot be used with --from-kafka: the view shows the graph the pipeline computes, with the query \
             and names of its config (--config); set them there",
            given.join(", ")
        );
    }
    Ok(())
}

/// `ui --from-kafka`: bootstrap from the state topic and the deltas after its checkpoint
/// ([`bootstrap`]), then follow the delta topic, applying deltas as they come.
fn follow_kafka(args: &UiArgs) -> anyhow::Result<()> {
    let kafka = kafka_config(args.query.config.as_ref(), args.brokers.as_ref())?;
    let config = job_config(&args.query)?;
    let source = args.query.config.as_ref().map_or("the default query".to_string(), |p| p.display().to_string());
    let live = Arc::new(LiveGraph::new(config.params.clone()));
    let control = ParamsControl::ReadOnly(format!(
        "this view follows the pipeline that writes {}; its parameters are set in its config ({source})",
        kafka.deltas_topic
    ));
    live.set_not_ready(Some(format!("bootstrapping from {} and {}", kafka.state_topic, kafka.deltas_topic)));
    let _server = serve(&args.serve, live.clone(), control, config.max_window_ns, false)?;
    let stop = stop_flag()?;

    let consumer = committed_reader(&kafka.brokers, &kafka.options, "flowgraph-ui")?;
    let topic = &kafka.deltas_topic;
    let mut decoder = DeltaDecoder::default();
    let Some(current) = bootstrap(&kafka, &consumer, &mut decoder, &stop)? else { return Ok(()) };
    let graph = current.into_graph();
    let summary = format!(
        "bootstrapped from {} and {topic}: {} edges, {} rows at {}",
        kafka.state_topic,
        graph.edge_count(),
        graph.row_count(),
        graph.time().map_or("no progress mark yet".to_string(), crate::report::format_time)
    );
    live.replace(graph);
    live.set_not_ready(None);
    // The bootstrap read the delta topic to its end: with nothing more to wait for, that is
    // the end of the input.
    if args.exit_at_end {
        println!("{summary}");
        return Ok(());
    }
    tracing::info!(time = ?live.time(), "bootstrapped; following {topic}");

    while !stop.load(Ordering::Relaxed) {
        let Some(message) = consumer.poll(Duration::from_millis(500)) else { continue };
        let message = message.with_context(|| format!("consuming {topic}"))?;
        match decode_with(&mut decoder, message.payload().unwrap_or_default()) {
            Ok(outputs) => live.publish(&outputs),
            Err(e) => tracing::warn!(offset = message.offset(), error = %e, "undecodable delta message"),
        }
    }
    Ok(())
}

/// The graph a pipeline's topics hold now, by state key, and its progress mark.
pub struct Bootstrap {
    /// Rows and edges by state key (read through [`Bootstrap::into_graph`]).
    by_key: FxHashMap<Vec<u8>, GraphRecord>,
    /// The last progress mark applied (the topic's last committed mark when none was).
    pub progress: Option<EventTime>,
    /// Messages read from the state topic, and values that did not decode.
    pub state_messages: u64,
    pub undecodable: u64,
}

impl Bootstrap {
    /// The graph, at the progress mark.
    pub fn into_graph(self) -> GraphState {
        let mut graph = GraphState::default();
        for record in self.by_key.into_values() {
            graph.apply(&Output::Update { time: 0, diff: 1, record });
        }
        if let Some(p) = self.progress {
            graph.apply(&Output::Progress(p));
        }
        graph
    }
}

/// Reads a pipeline's current graph: the state topic, then by key the deltas after the last
/// checkpoint before the state was read (docs/LIVE.md). Leaves `consumer` on the delta topic
/// after the deltas it applied, to follow on from there. `None` if `stop` was raised.
///
/// The state topic has no time of its own: it holds the graph as of some checkpoint at or
/// after the last one committed before the read (E1 is the delta topic's end then), and keys
/// whose last write is older did not change since. So the view applies, by key, every delta
/// after that checkpoint's message up to E2, the delta topic's end after the read: a
/// retraction removes a key only if it holds exactly the retracted value, an insertion sets
/// it. Re-applying a stretch of deltas by key ends where applying it once does, so at E2 the
/// graph is exact. A delta topic without a checkpoint message (one that a version writing the
/// state at every transaction wrote) is applied from E1.
pub fn bootstrap(
    kafka: &flowgraph_config::KafkaConfig,
    consumer: &BaseConsumer,
    decoder: &mut DeltaDecoder,
    stop: &AtomicBool,
) -> anyhow::Result<Option<Bootstrap>> {
    let topic = &kafka.deltas_topic;
    let end_of_deltas = |what: &str| -> anyhow::Result<i64> {
        let (_, end) = consumer
            .fetch_watermarks(topic, 0, Duration::from_secs(10))
            .with_context(|| format!("reading the end of {topic} on {} ({what})", kafka.brokers))?;
        Ok(end)
    };

    let before_state = end_of_deltas("before the state")?;
    let checkpoint =
        last_checkpoint(&kafka.brokers, topic, &kafka.options, Some(before_state)).map_err(anyhow::Error::msg)?;
    let apply_from = checkpoint.map_or(before_state, |c| c.offset + 1);
    let mut progress = last_progress(&kafka.brokers, topic, &kafka.options).map_err(anyhow::Error::msg)?;
    let mut by_key: FxHashMap<Vec<u8>, GraphRecord> = FxHashMap::default();
    let mut undecodable = 0u64;
    let state_messages = read_to_end(&kafka.brokers, &kafka.state_topic, &kafka.options, |key, value| {
        let Some(key) = key else { return };
        match value.map(|value| decoder.state_value(value)) {
            Some(Ok(record)) => {
                by_key.insert(key.to_vec(), record);
            }
            Some(Err(_)) => undecodable += 1,
            None => {
                by_key.remove(key);
            }
        }
    })?;
    let after_state = end_of_deltas("after the state")?;
    tracing::info!(
        state_topic = %kafka.state_topic,
        state_messages,
        keys = by_key.len(),
        undecodable,
        checkpoint = checkpoint.map(|c| c.progress),
        catch_up = after_state - apply_from,
        "read the state topic; applying the deltas after its checkpoint"
    );

    let mut key = Vec::new();
    read_deltas(&kafka.brokers, topic, &kafka.options, apply_from, after_state, |message| {
        let outputs = match decode_with(decoder, message.payload().unwrap_or_default()) {
            Ok(outputs) => outputs,
            Err(e) => {
                tracing::warn!(offset = message.offset(), error = %e, "undecodable delta message");
                return Ok(());
            }
        };
        for output in outputs {
            match output {
                Output::Update { diff, record, .. } => {
                    key.clear();
                    write_state_key(&record, &mut key);
                    if diff < 0 {
                        if by_key.get(key.as_slice()) == Some(&record) {
                            by_key.remove(key.as_slice());
                        }
                    } else if let Some(held) = by_key.get_mut(key.as_slice()) {
                        *held = record;
                    } else {
                        by_key.insert(key.clone(), record);
                    }
                }
                Output::Progress(p) => progress = Some(p),
            }
        }
        Ok(())
    })
    .map_err(anyhow::Error::msg)?;
    if stop.load(Ordering::Relaxed) {
        return Ok(None);
    }
    // Followed from E2 on: everything before it is applied.
    let mut assignment = TopicPartitionList::new();
    assignment.add_partition_offset(topic, 0, Offset::Offset(after_state))?;
    consumer.assign(&assignment)?;
    Ok(Some(Bootstrap { by_key, progress, state_messages, undecodable }))
}

/// Checks `--speed`.
pub fn check_speed(speed: f64) -> anyhow::Result<()> {
    if speed.is_nan() || speed < 0.0 {
        bail!("--speed: must be 0 or more");
    }
    Ok(())
}
