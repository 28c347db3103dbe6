//! `flowgraph run`: the long-running service.
//!
//! ```text
//!  input topic ─ KafkaSource (watermarks, dead letters) ─ Job ─ KafkaSink (deltas + state, txn)
//! ```
//!
//! On start the sink finds the last progress mark a previous run committed; the source reads
//! the retained input again (from the beginning, or with `rebuild_from = "window"` from
//! `mark - window - lateness` by message timestamp), the job rebuilds its state, and the sink
//! publishes only times at or after the mark. So a restart, clean or after `kill -9`, continues the delta topic where
//! it stopped and leaves the state topic as a crash-free run would.

use crate::cli::RunArgs;
use crate::replay::{job_config, kafka_config, stop_flag};
use flowgraph_config::parse_duration_ns;
use flowgraph_pipeline::{Job, JobConfig, Output};
use flowgraph_sinks::kafka::{DeltaFormat, KafkaSink, KafkaSinkConfig};
use flowgraph_sources::kafka::{KafkaSource, KafkaSourceConfig, StartAt};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

pub fn run(args: RunArgs) -> anyhow::Result<()> {
    let config = job_config(&args.query)?;
    let kafka = kafka_config(args.query.config.as_ref(), args.brokers.as_ref())?;
    let idle_exit = args
        .exit_when_idle
        .as_deref()
        .map(|d| parse_duration_ns("--exit-when-idle", d).map(Duration::from_nanos))
        .transpose()?;

    crate::telemetry::serve(args.metrics_addr.as_deref())?;
    let stop = stop_flag()?;

    let mut sink = KafkaSink::new(KafkaSinkConfig {
        brokers: kafka.brokers.clone(),
        deltas_topic: kafka.deltas_topic.clone(),
        state_topic: kafka.state_topic.clone(),
        format: if kafka.delta_format == "bincode" { DeltaFormat::Bincode } else { DeltaFormat::Json },
        transactional_id: kafka.transactional_id.clone(),
        max_updates_per_message: 5000,
        options: kafka.options.clone(),
    })?;
    let start = match sink.resume_after() {
        Some(mark) if kafka.rebuild_from == "window" => StartAt::EventTime(
            mark.saturating_sub(config.params.window_ns + config.lateness_ns),
        ),
        Some(_) => StartAt::Beginning,
        None if kafka.start == "end" => StartAt::End,
        None => StartAt::Beginning,
    };
    let mut source = KafkaSource::new(KafkaSourceConfig {
        brokers: kafka.brokers.clone(),
        topic: kafka.input_topic.clone(),
        dead_letter_topic: Some(kafka.dead_letter_topic.clone()).filter(|t| !t.is_empty()),
        start,
        worker: 0,
        workers: 1,
        options: kafka.options.clone(),
        lateness_ns: config.lateness_ns,
    })?;
    tracing::info!(
        brokers = %kafka.brokers, topic = %kafka.input_topic, partitions = ?source.partitions(),
        start = ?start, "flowgraph run: consuming"
    );

    // The source applies lateness per partition and hands the job the minimum: a global
    // "largest time seen - lateness" would make a lagging partition's records late.
    // Records per poll: one transaction (and its buffered deltas) stays bounded while a
    // backlog is read, whatever the size of the messages.
    const POLL_RECORDS: usize = 50_000;
    let mut job = Job::new(JobConfig { lateness_ns: u64::MAX, ..config }).map_err(anyhow::Error::msg)?;
    let (mut records, mut outputs) = (Vec::new(), Vec::new());
    let mut rejected_logged = 0u64;
    // Since when polls have returned nothing (processing time does not count as idle).
    let mut idle_since: Option<Instant> = None;
    let mut last_report = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        source.poll(Duration::from_millis(100), POLL_RECORDS, &mut records)?;
        if records.is_empty() {
            idle_since.get_or_insert_with(Instant::now);
        } else {
            idle_since = None;
        }
        for record in records.drain(..) {
            if let Err(rejection) = job.push(record) {
                rejected_logged += 1;
                if rejected_logged <= 10 {
                    tracing::warn!(error = %rejection, "record rejected");
                }
            }
        }
        if let Some(watermark) = source.watermark() {
            job.advance_watermark(watermark);
        }
        job.drain_into(&mut outputs);
        sink.publish(&outputs)?;
        outputs.clear();
        crate::telemetry::pipeline(job.stats(), source.stats(), sink.stats(), job.frontier());
        if last_report.elapsed() >= Duration::from_secs(10) {
            report(&job, &source, &sink);
            crate::telemetry::lag(&source.lag());
            last_report = Instant::now();
        }
        if idle_exit.is_some_and(|idle| idle_since.is_some_and(|since| since.elapsed() >= idle)) {
            tracing::info!("no input for {:?}: completing the last event time and exiting", idle_exit.unwrap_or_default());
            job.finish();
            job.drain_into(&mut outputs);
            sink.publish(&outputs)?;
            break;
        }
    }
    source.flush();
    report(&job, &source, &sink);
    let last = outputs.iter().rev().find_map(|o| match o {
        Output::Progress(p) => Some(*p),
        _ => None,
    });
    tracing::info!(last_progress = ?last, "flowgraph run: stopped");
    Ok(())
}

fn report(job: &Job, source: &KafkaSource, sink: &KafkaSink) {
    let (j, s, k) = (job.stats(), source.stats(), sink.stats());
    tracing::info!(
        records = j.records, late = j.late, rejected = j.rejected,
        decode_errors = s.decode_errors, dead_letters = s.dead_letters,
        updates_out = k.updates, transactions = k.transactions,
        skipped_on_resume = k.skipped_on_resume, frontier = job.frontier(),
        "flowgraph run: progress"
    );
}
