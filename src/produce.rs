//! `flowgraph replay --to-kafka`: publish a recording to an input topic, as agents would.

use crate::cli::ReplayArgs;
use crate::output::DeliveryReport;
use anyhow::bail;
use anyhow::Context;
use flowgraph_config::KafkaConfig;
use flowgraph_schema::{binary, Record};
use flowgraph_sources::recording;
use rdkafka::producer::{BaseRecord, Producer, ThreadedProducer};
use std::time::{Duration, Instant};

/// Records per message at most. A message holds a run of consecutive records with one key,
/// so each partition receives its records in the recording's order (a progress record never
/// overtakes the data it covers, and nothing is held back behind another key).
const BATCH: usize = 1000;

/// The smallest wait the pacing sleeps for.
const PACING_STEP: Duration = Duration::from_millis(5);

/// The message key of a record: its agent, so one agent's records stay in order on one
/// partition. Names and container metadata have no agent: [`publish`] gives them the key of
/// the next record that has one (they lead their agent's batch), and these keys ("names",
/// "containers") only to those after the last such record.
fn key_of(record: &Record) -> String {
    match record {
        Record::ConnStats(c) => format!("agent-{}", c.upid.asid),
        Record::Process(p) => format!("agent-{}", p.upid.asid),
        Record::Progress(p) if p.source.is_empty() => "progress".into(),
        Record::Progress(p) => p.source.clone(),
        Record::Name(_) => "names".into(),
        Record::Container(_) => "containers".into(),
    }
}

/// Parses `10x` or `10` (a positive factor).
pub fn parse_speed(text: &str) -> anyhow::Result<f64> {
    let factor: f64 = text
        .trim()
        .trim_end_matches(['x', 'X'])
        .parse()
        .map_err(|_| anyhow::anyhow!("--speed: {text:?} is not a factor such as 10x"))?;
    if !(factor.is_finite() && factor > 0.0) {
        bail!("--speed: must be a positive factor such as 10x, not {text:?}");
    }
    Ok(factor)
}

pub fn run(args: &ReplayArgs, topic: &str) -> anyhow::Result<()> {
    if let Some(rate) = args.rate.filter(|r| !(r.is_finite() && *r > 0.0)) {
        bail!("--rate: must be a positive number of records per second, not {rate}");
    }
    // --max (the default) is no pacing; clap rejects it together with --rate or --speed.
    let pacing = match args.max {
        true => Pacing::default(),
        false => Pacing { rate: args.rate, speed: args.speed.as_deref().map(parse_speed).transpose()? },
    };
    let kafka = crate::replay::kafka_config(args.query.config.as_ref(), args.brokers.as_ref())?;
    let published =
        publish(&crate::output::producer(&kafka)?, &args.input, &kafka, topic, args.partitions, pacing, &mut |_| {})?;
    println!(
        "published {} records in {} messages to {topic} on {} in {:.2} s ({:.0} records/s); {} bad input skipped",
        published.records,
        published.messages,
        kafka.brokers,
        published.seconds,
        published.records as f64 / published.seconds,
        published.bad
    );
    Ok(())
}

/// Creates `topic` with `partitions` partitions unless it exists.
pub fn ensure_topic(kafka: &KafkaConfig, topic: &str, partitions: i32) -> anyhow::Result<()> {
    flowgraph_sources::kafka::create_topic_if_missing(&kafka.brokers, &kafka.options, topic, partitions)
        .map_err(anyhow::Error::msg)
}

/// How fast to publish: a record rate, or a multiple of the recording's event-time pace.
#[derive(Debug, Clone, Copy, Default)]
pub struct Pacing {
    pub rate: Option<f64>,
    pub speed: Option<f64>,
}

/// What a publication did.
#[derive(Debug)]
pub struct Published {
    pub records: u64,
    pub messages: u64,
    pub bad: u64,
    pub seconds: f64,
}

/// Publishes a recording to `topic` (created with `partitions` if missing) on `producer`;
/// `on_queued` sees each record as it is queued for sending. Callers make the producer with
/// [`crate::output::producer`], as `flowgraph agent` makes its own, so the records travel as
/// an agent's do (librdkafka's default `linger.ms`, 5 ms). A new idempotent producer holds its
/// first messages until the broker gives it a producer id, which took 500 ms (a retry) in four
/// `bench-kafka` runs of five: a caller that paces for a measurement makes it early, as a live
/// agent's producer has its id already.
pub fn publish(
    producer: &ThreadedProducer<DeliveryReport>,
    input: &std::path::Path,
    kafka: &KafkaConfig,
    topic: &str,
    partitions: i32,
    pacing: Pacing,
    on_queued: &mut dyn FnMut(&Record),
) -> anyhow::Result<Published> {
    let speed = pacing.speed;
    let mut reader = recording::open(input)?;
    ensure_topic(kafka, topic, partitions)?;
    // Connected, with the topic's leaders known, before the first record is paced, as a live
    // agent's producer is: `bench-kafka` counted the client's start-up in the latency of the
    // first records (with the producer id, above: 0.5-0.7 s).
    producer
        .client()
        .fetch_metadata(Some(topic), Duration::from_secs(30))
        .with_context(|| format!("reading the metadata of {topic} from {}", kafka.brokers))?;
    let started = Instant::now();
    let mut batch: Vec<Record> = Vec::new();
    let mut batch_key = String::new();
    let mut unkeyed: Vec<Record> = Vec::new();
    let mut first_time: Option<u64> = None;
    let (mut records, mut messages, mut bad) = (0u64, 0u64, 0u64);
    let mut frame = Vec::new();
    let mut send = |key: &str, batch: &mut Vec<Record>| -> anyhow::Result<()> {
        if batch.is_empty() {
            return Ok(());
        }
        send_frame(producer, topic, key, batch, &mut frame)?;
        messages += 1;
        batch.clear();
        Ok(())
    };
    while let Some(item) = reader.next_item()? {
        let record = match item {
            Ok((_, record)) => record,
            Err(problem) => {
                bad += 1;
                tracing::warn!("{}: {problem}", input.display());
                continue;
            }
        };
        records += 1;
        let due = match (pacing.rate, speed) {
            (Some(rate), _) => Some(Duration::from_secs_f64(records as f64 / rate)),
            (None, Some(factor)) => {
                let origin = *first_time.get_or_insert(record.time());
                let behind = record.time().saturating_sub(origin) as f64 / 1e9;
                Some(Duration::from_secs_f64(behind / factor))
            }
            (None, None) => None,
        };
        // Wait only when ahead by a whole pacing step, so messages keep batching records
        // (sleeping per record would send one record per message).
        if let Some(wait) = due.and_then(|due| due.checked_sub(started.elapsed())) {
            if wait >= PACING_STEP {
                // Send what is batched before waiting, so pacing is what the broker sees.
                send(&batch_key, &mut batch)?;
                std::thread::sleep(wait);
            }
        }
        // A name or container record rides with the records it was recorded among: it leads
        // its agent's batch, so it waits for the next record with a key and takes that one.
        // On that agent's partition it is covered by the agent's progress. The key of the
        // record before it could be another agent's, whose progress (sent every second
        // between exports) may already be past the name's time: the name would be late. A
        // key of its own would be a partition with no progress, holding the frontier.
        if matches!(record, Record::Name(_) | Record::Container(_)) {
            unkeyed.push(record);
            continue;
        }
        let key = key_of(&record);
        if key != batch_key {
            send(&batch_key, &mut batch)?;
            batch_key = key;
        }
        for held in unkeyed.drain(..).chain(std::iter::once(record)) {
            if batch.len() >= BATCH {
                send(&batch_key, &mut batch)?;
            }
            on_queued(&held);
            batch.push(held);
        }
    }
    // Names after the last record with a key: their own keys.
    for held in std::mem::take(&mut unkeyed) {
        let key = key_of(&held);
        if key != batch_key || batch.len() >= BATCH {
            send(&batch_key, &mut batch)?;
            batch_key = key;
        }
        on_queued(&held);
        batch.push(held);
    }
    send(&batch_key, &mut batch)?;
    crate::output::flush_delivered(producer, topic, Duration::from_secs(60))?;
    Ok(Published { records, messages, bad, seconds: started.elapsed().as_secs_f64().max(1e-9) })
}

/// Sends `records` to `topic`, each no earlier than its instant (in the order given), keyed as
/// [`publish`] keys them, and waits until they are acknowledged.
pub fn publish_at(
    producer: &ThreadedProducer<DeliveryReport>,
    topic: &str,
    records: Vec<(Instant, Record)>,
) -> anyhow::Result<()> {
    let mut frame = Vec::new();
    for (due, record) in records {
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        send_frame(producer, topic, &key_of(&record), std::slice::from_ref(&record), &mut frame)?;
    }
    crate::output::flush_delivered(producer, topic, Duration::from_secs(60))
}

/// Sends `records` as one binary frame keyed `key` (`frame` is reused scratch space). Stamped
/// with the wall clock, not the recording's event time: a broker deletes messages older than
/// its retention, and a recording's times may be months old.
fn send_frame(
    producer: &ThreadedProducer<DeliveryReport>,
    topic: &str,
    key: &str,
    records: &[Record],
    frame: &mut Vec<u8>,
) -> anyhow::Result<()> {
    frame.clear();
    binary::encode_frame(records, frame);
    crate::output::send_waiting(producer, BaseRecord::<str, [u8]>::to(topic).key(key).payload(&frame[..]))
}
