//! The Kafka source: records from an input topic, with per-partition watermarks.
//!
//! ```text
//!  topic partitions ── manual assignment (partition % workers == worker) ── BaseConsumer
//!        │ message = one binary frame, or JSON Lines
//!        ├─ records ───────────────────────────────► caller (the job)
//!        ├─ progress records ─► partition watermark ─► min over partitions ─► caller
//!        └─ undecodable ─► dead-letter topic (payload + reason + topic/partition/offset), counted
//! ```
//!
//! No consumer-group rebalancing: the assignment is a pure function of the partition count and
//! the worker, so every run of the pipeline reads the same partitions in every worker. A
//! partition's watermark is the largest progress time seen on it (agents key their messages by
//! agent id, so one partition carries one or a few agents): the least latest progress over the
//! sources that have sent progress on it, or its largest event time minus lateness if that is
//! further. The frontier is the minimum over partitions, so a partition read ahead of the
//! others (a backlog) does not make their records late. A partition that held data when the
//! source started holds the frontier until it delivers; one that was empty does not, nor does
//! one that has gone idle: quiet for `idle_after` with nothing left to read (its agents left),
//! until it delivers again. A worker all of whose partitions are empty or idle has no
//! watermark, and follows the other workers' (`flowgraph_pipeline::ClusterJob::follow_others`).
//! Progress
//! counts only once a partition has carried `lateness` plus one agent progress period of event
//! time: before that, a source the partition has not heard from yet may still come
//! (`crate::clock`).

use crate::clock::SourceClock;
use flowgraph_schema::binary::{self, MAGIC};
use flowgraph_schema::{json, EventTime, Record};
use rdkafka::admin::{AdminClient, AdminOptions, TopicResult};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{Header, Message, OwnedHeaders};
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{Offset, TopicPartitionList};
use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

/// Where a source starts reading.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartAt {
    /// The oldest retained message.
    Beginning,
    /// Only messages produced from now on.
    End,
    /// The first message whose timestamp is at or after this event time (ns).
    EventTime(EventTime),
}

/// What the Kafka source needs to know.
#[derive(Debug, Clone)]
pub struct KafkaSourceConfig {
    /// `bootstrap.servers`.
    pub brokers: String,
    /// The input topic.
    pub topic: String,
    /// Where undecodable messages go; `None` only counts them.
    pub dead_letter_topic: Option<String>,
    /// Where to start.
    pub start: StartAt,
    /// This worker's index and the number of workers: partition p is read by worker
    /// `p % workers`.
    pub worker: usize,
    /// Number of workers.
    pub workers: usize,
    /// Extra librdkafka options (security, timeouts, ...), applied last.
    pub options: BTreeMap<String, String>,
    /// A partition's watermark is at least its largest event time minus this: a partition
    /// whose sources send no progress still moves, and one read ahead of the others (a
    /// backlog) does not make their records late.
    pub lateness_ns: EventTime,
    /// A partition that has delivered nothing for this long, with nothing left to read on the
    /// broker, is idle: it stops holding the frontier until it delivers again (its agents
    /// left). `None`: never.
    pub idle_after: Option<Duration>,
}

/// Errors that stop the source (bad input never does).
#[derive(Debug, thiserror::Error)]
pub enum KafkaSourceError {
    /// The client could not be created or configured.
    #[error("cannot create the Kafka client for {brokers}: {source}")]
    Client {
        /// The bootstrap servers.
        brokers: String,
        /// librdkafka's error.
        source: KafkaError,
    },
    /// The topic's metadata could not be read (broker down, topic missing, no access).
    #[error("cannot read metadata of topic {topic:?} from {brokers}: {reason}")]
    Metadata {
        /// The bootstrap servers.
        brokers: String,
        /// The topic.
        topic: String,
        /// Why.
        reason: String,
    },
    /// Assigning or seeking failed.
    #[error("cannot assign partitions of {topic:?}: {source}")]
    Assign {
        /// The topic.
        topic: String,
        /// librdkafka's error.
        source: KafkaError,
    },
    /// Consuming failed in a way retrying will not fix.
    #[error("consuming {topic:?} failed: {source}")]
    Consume {
        /// The topic.
        topic: String,
        /// librdkafka's error.
        source: KafkaError,
    },
}

/// Counters of what the source has seen.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KafkaSourceStats {
    /// Messages read.
    pub messages: u64,
    /// Records decoded.
    pub records: u64,
    /// Messages or lines that could not be decoded.
    pub decode_errors: u64,
    /// Of those, the ones written to the dead-letter topic.
    pub dead_letters: u64,
    /// Records older than their partition's watermark (or the reader's, if further),
    /// re-stamped to it.
    pub late: u64,
    /// Partitions idle now (see [`KafkaSourceConfig::idle_after`]).
    pub idle_partitions: u64,
}

/// One undecodable message or line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetter {
    /// Topic, partition and offset it came from.
    pub origin: String,
    /// What is wrong.
    pub reason: String,
}

/// Reads records from the partitions of a topic assigned to this worker.
pub struct KafkaSource {
    config: KafkaSourceConfig,
    consumer: BaseConsumer,
    dead_letters: Option<ThreadedProducer<DefaultProducerContext>>,
    /// Event-time position per partition that has carried records.
    clocks: BTreeMap<i32, SourceClock>,
    partitions: Vec<i32>,
    /// Next offset to read per partition (last message read + 1).
    positions: BTreeMap<i32, i64>,
    /// Since when each partition has been quiet as far as this source knows: its last message
    /// (or its clock's start), or the last time the broker was asked whether it is caught up.
    quiet_since: BTreeMap<i32, Instant>,
    /// Partitions with a clock that are idle (see [`KafkaSourceConfig::idle_after`]).
    idle: BTreeSet<i32>,
    stats: KafkaSourceStats,
}

impl std::fmt::Debug for KafkaSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaSource")
            .field("topic", &self.config.topic)
            .field("partitions", &self.partitions)
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

/// Builds a librdkafka client configuration: the bootstrap servers, then the user's options.
pub fn client_config(brokers: &str, options: &BTreeMap<String, String>) -> ClientConfig {
    let mut config = ClientConfig::new();
    config.set("bootstrap.servers", brokers);
    for (key, value) in options {
        config.set(key, value);
    }
    config
}

impl KafkaSource {
    /// Connects, finds the topic's partitions, assigns this worker's share and seeks.
    pub fn new(config: KafkaSourceConfig) -> Result<Self, KafkaSourceError> {
        let client_error = |source| KafkaSourceError::Client { brokers: config.brokers.clone(), source };
        let mut client = client_config(&config.brokers, &BTreeMap::new());
        client
            // Offsets are the pipeline's business (it seeks by event time); no group protocol.
            .set("group.id", format!("flowgraph-source-{}", config.topic))
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("isolation.level", "read_committed")
            .set("enable.partition.eof", "false")
            // librdkafka waits up to 500 ms for a fetch to fill; the graph's latency matters
            // more than fetch efficiency at the rates agents produce.
            .set("fetch.wait.max.ms", "50");
        for (key, value) in &config.options {
            client.set(key, value);
        }
        let consumer: BaseConsumer = client.create().map_err(client_error)?;
        let metadata = consumer.fetch_metadata(Some(&config.topic), Duration::from_secs(10)).map_err(|e| {
            KafkaSourceError::Metadata {
                brokers: config.brokers.clone(),
                topic: config.topic.clone(),
                reason: e.to_string(),
            }
        })?;
        let topic = metadata
            .topics()
            .iter()
            .find(|t| t.name() == config.topic)
            .filter(|t| t.error().is_none() && !t.partitions().is_empty())
            .ok_or_else(|| KafkaSourceError::Metadata {
                brokers: config.brokers.clone(),
                topic: config.topic.clone(),
                reason: "the topic does not exist or has no partitions".into(),
            })?;
        let workers = config.workers.max(1);
        let mut partitions: Vec<i32> =
            topic.partitions().iter().map(|p| p.id()).filter(|p| (*p as usize) % workers == config.worker).collect();
        partitions.sort_unstable();
        let mut assignment = TopicPartitionList::new();
        for &p in &partitions {
            let offset = match config.start {
                StartAt::Beginning => Offset::Beginning,
                StartAt::End => Offset::End,
                // Resolved below by a timestamp lookup.
                StartAt::EventTime(ns) => Offset::Offset((ns / 1_000_000) as i64),
            };
            assignment
                .add_partition_offset(&config.topic, p, offset)
                .map_err(|source| KafkaSourceError::Assign { topic: config.topic.clone(), source })?;
        }
        if let StartAt::EventTime(_) = config.start {
            assignment = consumer
                .offsets_for_times(assignment, Duration::from_secs(10))
                .map_err(|source| KafkaSourceError::Assign { topic: config.topic.clone(), source })?;
        }
        consumer
            .assign(&assignment)
            .map_err(|source| KafkaSourceError::Assign { topic: config.topic.clone(), source })?;
        let dead_letters = match &config.dead_letter_topic {
            Some(topic) => Some({
                create_topic_if_missing(&config.brokers, &config.options, topic, 1).map_err(|reason| {
                    KafkaSourceError::Metadata { brokers: config.brokers.clone(), topic: topic.clone(), reason }
                })?;
                client_config(&config.brokers, &config.options)
                    .set("enable.idempotence", "true")
                    .create()
                    .map_err(client_error)?
            }),
            None => None,
        };
        // A partition that holds data to read holds the frontier back until it delivers some:
        // otherwise whichever partition the client fetches first would make the others late.
        let mut clocks = BTreeMap::new();
        if config.start != StartAt::End {
            for &p in &partitions {
                let (low, high) = consumer
                    .fetch_watermarks(&config.topic, p, Duration::from_secs(10))
                    .map_err(|source| KafkaSourceError::Assign { topic: config.topic.clone(), source })?;
                if high > low {
                    clocks.insert(p, SourceClock::default());
                }
            }
        }
        let quiet_since = clocks.keys().map(|p| (*p, Instant::now())).collect();
        Ok(KafkaSource {
            clocks,
            positions: BTreeMap::new(),
            quiet_since,
            idle: BTreeSet::new(),
            partitions,
            config,
            consumer,
            dead_letters,
            stats: KafkaSourceStats::default(),
        })
    }

    /// The partitions this worker reads.
    pub fn partitions(&self) -> &[i32] {
        &self.partitions
    }

    /// Waits up to `timeout` for messages and appends the decoded records to `out`, stopping
    /// once it holds `max_records` records or the queue is empty. Returns the dead letters of
    /// this call.
    ///
    /// `floor` is the reader's own watermark (what it has promised the job): a record before
    /// it is late too, whatever its partition's clock says. That happens to the first records
    /// of a partition that was empty or idle while the reader's other partitions moved its
    /// watermark on (or the other workers did, when the reader had only such partitions and
    /// followed them), and to those of a source that joins its partition behind the
    /// partition's clock.
    pub fn poll(
        &mut self,
        timeout: Duration,
        max_records: usize,
        floor: EventTime,
        out: &mut Vec<Record>,
    ) -> Result<Vec<DeadLetter>, KafkaSourceError> {
        let mut dead = Vec::new();
        let mut wait = timeout;
        while out.len() < max_records {
            let Some(result) = self.consumer.poll(wait) else {
                break;
            };
            wait = Duration::ZERO;
            let message = match result {
                Ok(message) => message,
                Err(e) if is_transient(&e) => {
                    tracing::warn!(topic = %self.config.topic, error = %e, "Kafka consumer error, retrying");
                    break;
                }
                Err(source) => return Err(KafkaSourceError::Consume { topic: self.config.topic.clone(), source }),
            };
            self.stats.messages += 1;
            let partition = message.partition();
            self.positions.insert(partition, message.offset() + 1);
            self.quiet_since.insert(partition, Instant::now());
            if self.idle.remove(&partition) {
                tracing::info!(topic = %self.config.topic, partition, "partition delivers again: it holds the frontier again");
            }
            let origin = format!("{}/{}@{}", message.topic(), partition, message.offset());
            let payload = message.payload().unwrap_or_default();
            let before = out.len();
            let mut bad: Vec<(String, &[u8])> = Vec::new();
            decode_message(payload, out, &mut bad);
            // Copy the (rare) bad bytes so the message's borrow of the consumer can end.
            let bad: Vec<(String, Vec<u8>)> = bad.into_iter().map(|(reason, bytes)| (reason, bytes.to_vec())).collect();
            drop(message);
            if out.len() > before {
                // Lateness is a property of the partition: a record older than its partition's
                // watermark is processed at that watermark. Decided here, per partition, it is
                // the same whichever worker reads the partition and whatever else it reads, so
                // one worker and a cluster compute the same times. The watermark handed to the
                // job is the minimum over partitions, never above a re-stamped time.
                let lateness = self.config.lateness_ns;
                let clock = self.clocks.entry(partition).or_default();
                for record in &mut out[before..] {
                    clock.observe(record);
                    let (time, watermark) = (record.time(), clock.watermark(lateness).max(floor));
                    if time < watermark && !matches!(record, Record::Progress(_)) {
                        tracing::debug!(partition, time, watermark, record = ?record, "late record");
                        record.set_time(watermark);
                        self.stats.late += 1;
                    }
                }
            }
            self.stats.records += (out.len() - before) as u64;
            for (reason, bytes) in bad {
                self.stats.decode_errors += 1;
                let letter = DeadLetter { origin: origin.clone(), reason };
                tracing::warn!(origin = %letter.origin, error = %letter.reason, "undecodable input");
                self.send_dead_letter(&letter, &bytes);
                dead.push(letter);
            }
        }
        self.find_idle_partitions();
        self.stats.idle_partitions = self.idle.len() as u64;
        Ok(dead)
    }

    /// Marks idle the partitions that have delivered nothing for `idle_after` and have
    /// nothing left to read on the broker (asked at most once per `idle_after` each, all in
    /// one query). One that cannot be asked (the broker is away) stays as it is: its backlog
    /// may be on the way.
    fn find_idle_partitions(&mut self) {
        let Some(idle_after) = self.config.idle_after else { return };
        let quiet: Vec<i32> = self
            .quiet_since
            .iter()
            .filter(|(p, since)| !self.idle.contains(p) && since.elapsed() >= idle_after)
            .map(|(p, _)| *p)
            .collect();
        for &partition in &quiet {
            // Asked now: not again before another `idle_after` of quiet.
            self.quiet_since.insert(partition, Instant::now());
        }
        for (partition, unread) in self.unread(&quiet, Duration::from_secs(1)) {
            if unread <= 0 {
                tracing::info!(
                    topic = %self.config.topic, partition, quiet_for = ?idle_after,
                    "partition idle: nothing delivered and nothing left to read; it no longer holds the frontier until it delivers again"
                );
                self.idle.insert(partition);
            }
        }
    }

    /// Messages not read yet in each of `partitions` (the end a read_committed reader can
    /// reach, less the next offset; the start stands for the next offset of a partition that
    /// never delivered), asking the broker in one request per partition leader and in
    /// `timeout` overall. A partition it could not answer for is left out: while the broker
    /// is away the caller waits `timeout` once, not once per partition.
    fn unread(&self, partitions: &[i32], timeout: Duration) -> Vec<(i32, i64)> {
        let deadline = Instant::now() + timeout;
        let ask = |partitions: &mut dyn Iterator<Item = i32>, at: Offset| -> BTreeMap<i32, i64> {
            let mut list = TopicPartitionList::new();
            for partition in partitions {
                // Fails only for an offset it cannot represent, and these are fixed.
                let _ = list.add_partition_offset(&self.config.topic, partition, at);
            }
            if list.count() == 0 {
                return BTreeMap::new();
            }
            match self.consumer.offsets_for_times(list, deadline.saturating_duration_since(Instant::now())) {
                Ok(answer) => answer
                    .elements()
                    .iter()
                    .filter(|element| element.error().is_ok())
                    .filter_map(|element| match element.offset() {
                        Offset::Offset(offset) => Some((element.partition(), offset)),
                        _ => None,
                    })
                    .collect(),
                Err(_) => BTreeMap::new(),
            }
        };
        let ends = ask(&mut partitions.iter().copied(), Offset::End);
        let mut never_delivered = ends.keys().copied().filter(|p| !self.positions.contains_key(p));
        let starts = ask(&mut never_delivered, Offset::Beginning);
        ends.into_iter()
            .filter_map(|(partition, end)| {
                let next = self.positions.get(&partition).or_else(|| starts.get(&partition))?;
                Some((partition, end - next))
            })
            .collect()
    }

    fn send_dead_letter(&mut self, letter: &DeadLetter, payload: &[u8]) {
        let (Some(producer), Some(topic)) = (&self.dead_letters, &self.config.dead_letter_topic) else {
            return;
        };
        let headers = OwnedHeaders::new()
            .insert(Header { key: "flowgraph.reason", value: Some(letter.reason.as_str()) })
            .insert(Header { key: "flowgraph.origin", value: Some(letter.origin.as_str()) });
        let record: BaseRecord<'_, str, [u8]> =
            BaseRecord::to(topic).key(letter.origin.as_str()).payload(payload).headers(headers);
        match producer.send(record) {
            Ok(()) => self.stats.dead_letters += 1,
            Err((e, _)) => {
                tracing::warn!(topic = %topic, error = %e, "cannot write to the dead-letter topic")
            }
        }
    }

    /// The input frontier: the minimum over the partitions that have carried records, and
    /// are not idle, of each one's watermark, max(its sources' least progress, its largest
    /// event time - lateness); `None` before any record, or while every such partition is
    /// idle.
    pub fn watermark(&mut self) -> Option<EventTime> {
        let lateness = self.config.lateness_ns;
        let idle = &self.idle;
        self.clocks.iter_mut().filter(|(p, _)| !idle.contains(p)).map(|(_, clock)| clock.watermark(lateness)).min()
    }

    /// Messages not read yet per partition (end offset - next offset), asking the broker (in
    /// 5 s at most; a partition it cannot answer for is left out).
    pub fn lag(&self) -> Vec<(i32, i64)> {
        self.unread(&self.partitions, Duration::from_secs(5))
    }

    /// What the source has seen.
    pub fn stats(&self) -> &KafkaSourceStats {
        &self.stats
    }

    /// Waits until dead letters are written (call before exiting).
    pub fn flush(&self) {
        if let Some(producer) = &self.dead_letters {
            let _ = producer.flush(Duration::from_secs(10));
        }
    }
}

/// Deletes `topics`; one that does not exist is not an error.
pub fn delete_topics(brokers: &str, options: &BTreeMap<String, String>, topics: &[&str]) -> Result<(), String> {
    let admin = admin_client(brokers, options)?;
    let results = futures_executor::block_on(admin.delete_topics(topics, &AdminOptions::new()))
        .map_err(|e| format!("cannot delete topics {topics:?} on {brokers}: {e}"))?;
    check_topic_results(results, RDKafkaErrorCode::UnknownTopicOrPartition, "delete", brokers)
}

/// Creates `topic` with `partitions` partitions (replication 1) unless it exists. Brokers often
/// disable auto-creation, and a producer would otherwise drop messages without a word.
pub fn create_topic_if_missing(
    brokers: &str,
    options: &BTreeMap<String, String>,
    topic: &str,
    partitions: i32,
) -> Result<(), String> {
    use rdkafka::admin::{NewTopic, TopicReplication};
    let admin = admin_client(brokers, options)?;
    let new_topic = NewTopic::new(topic, partitions, TopicReplication::Fixed(1));
    let results = futures_executor::block_on(admin.create_topics([&new_topic], &AdminOptions::new()))
        .map_err(|e| format!("cannot create topic {topic} on {brokers}: {e}"))?;
    check_topic_results(results, RDKafkaErrorCode::TopicAlreadyExists, "create", brokers)
}

fn admin_client(
    brokers: &str,
    options: &BTreeMap<String, String>,
) -> Result<AdminClient<DefaultClientContext>, String> {
    client_config(brokers, options).create().map_err(|e| format!("cannot create admin client: {e}"))
}

/// Each topic's result of an admin request; `already` (the topic is already as asked) is
/// not an error.
fn check_topic_results(
    results: Vec<TopicResult>,
    already: RDKafkaErrorCode,
    verb: &str,
    brokers: &str,
) -> Result<(), String> {
    for result in results {
        match result {
            Ok(_) => {}
            Err((_, code)) if code == already => {}
            Err((topic, code)) => return Err(format!("cannot {verb} topic {topic} on {brokers}: {code}")),
        }
    }
    Ok(())
}

fn is_transient(error: &KafkaError) -> bool {
    use rdkafka::types::RDKafkaErrorCode as Code;
    !matches!(
        error.rdkafka_error_code(),
        Some(
            Code::UnknownTopicOrPartition
                | Code::TopicAuthorizationFailed
                | Code::SaslAuthenticationFailed
                | Code::Authentication
        )
    )
}

/// Decodes one message: a binary frame (whole message), or JSON Lines (each line on its own,
/// so one bad line costs only itself).
pub fn decode_message<'a>(payload: &'a [u8], out: &mut Vec<Record>, bad: &mut Vec<(String, &'a [u8])>) {
    if payload.starts_with(&MAGIC) {
        match binary::decode_frame(payload) {
            Ok((records, used)) if used == payload.len() => out.extend(records),
            Ok((_, used)) => {
                bad.push((format!("{} bytes after the frame (one frame per message)", payload.len() - used), payload))
            }
            Err(e) => bad.push((e.to_string(), payload)),
        }
        return;
    }
    for (index, line) in payload.split(|b| *b == b'\n').enumerate() {
        let text = match std::str::from_utf8(line) {
            Ok(text) => text.trim(),
            Err(e) => {
                bad.push((format!("line {}: not UTF-8: {e}", index + 1), line));
                continue;
            }
        };
        if text.is_empty() {
            continue;
        }
        match json::decode_line(text) {
            Ok(record) => out.push(record),
            Err(e) => bad.push((format!("line {}: {e}", index + 1), line)),
        }
    }
}

/// A consumer that sees committed messages only and commits no offsets (readers assign their
/// partitions themselves): what every reader of the pipeline's topics uses.
pub fn committed_reader(
    brokers: &str,
    options: &BTreeMap<String, String>,
    group_id: &str,
) -> Result<BaseConsumer, KafkaSourceError> {
    committed_reader_with(brokers, options, group_id, &[])
}

/// [`committed_reader`] with `settings` of the caller's own, before the user's options.
fn committed_reader_with(
    brokers: &str,
    options: &BTreeMap<String, String>,
    group_id: &str,
    settings: &[(&str, &str)],
) -> Result<BaseConsumer, KafkaSourceError> {
    let mut client = client_config(brokers, &BTreeMap::new());
    client.set("group.id", group_id).set("enable.auto.commit", "false").set("isolation.level", "read_committed");
    // Readers of a whole topic drain librdkafka's queue (64 MB by default) faster than it
    // refills: after a full queue it pauses fetching for this long (1 s by default), which
    // was half of a view's bootstrap on the large fleet (docs/KAFKA.md, "Restart and
    // bootstrap").
    client.set("fetch.queue.backoff.ms", "10");
    for (key, value) in settings {
        client.set(*key, *value);
    }
    for (key, value) in options {
        client.set(key, value);
    }
    client.create().map_err(|source| KafkaSourceError::Client { brokers: brokers.to_string(), source })
}

/// Reads every partition of `topic` from its beginning up to the end it had when called,
/// handing each message's key and payload to `each`; returns the number of messages.
/// `read_committed`, so aborted transactions are invisible.
pub fn read_to_end(
    brokers: &str,
    topic: &str,
    options: &BTreeMap<String, String>,
    mut each: impl FnMut(Option<&[u8]>, Option<&[u8]>),
) -> Result<u64, KafkaSourceError> {
    // A transactional topic ends on a commit marker, which a read_committed reader never
    // sees: the read learns that it is done from its position, once a poll has waited a
    // moment for nothing. The broker holds a fetch that finds nothing for this long (500 ms
    // by default). (Partition end events would say it too, but the default client context
    // logs each of them as an error.)
    let settings = [("fetch.wait.max.ms", "10")];
    let consumer = committed_reader_with(brokers, options, &format!("flowgraph-reader-{topic}"), &settings)?;
    let metadata_error =
        |reason: String| KafkaSourceError::Metadata { brokers: brokers.to_string(), topic: topic.to_string(), reason };
    let metadata =
        consumer.fetch_metadata(Some(topic), Duration::from_secs(10)).map_err(|e| metadata_error(e.to_string()))?;
    let partitions: Vec<i32> = metadata
        .topics()
        .iter()
        .find(|t| t.name() == topic && t.error().is_none())
        .ok_or_else(|| metadata_error("the topic does not exist".into()))?
        .partitions()
        .iter()
        .map(|p| p.id())
        .collect();
    let mut ends = BTreeMap::new();
    let mut assignment = TopicPartitionList::new();
    for p in partitions {
        let (low, high) =
            consumer.fetch_watermarks(topic, p, Duration::from_secs(10)).map_err(|e| metadata_error(e.to_string()))?;
        if high > low {
            ends.insert(p, high);
            assignment
                .add_partition_offset(topic, p, Offset::Beginning)
                .map_err(|source| KafkaSourceError::Assign { topic: topic.into(), source })?;
        }
    }
    if ends.is_empty() {
        return Ok(0);
    }
    consumer.assign(&assignment).map_err(|source| KafkaSourceError::Assign { topic: topic.into(), source })?;
    let mut count = 0;
    while !ends.is_empty() {
        match consumer.poll(Duration::from_millis(50)) {
            Some(Ok(message)) => {
                count += 1;
                each(message.key(), message.payload());
                if message.offset() + 1 >= ends.get(&message.partition()).copied().unwrap_or(0) {
                    ends.remove(&message.partition());
                }
            }
            Some(Err(e)) if is_transient(&e) => {
                tracing::warn!(topic, error = %e, "Kafka consumer error, retrying")
            }
            Some(Err(source)) => return Err(KafkaSourceError::Consume { topic: topic.into(), source }),
            None => {
                // Transaction markers hold the last offsets of transactional topics: a
                // partition whose position has passed its last data message is done.
                let positions =
                    consumer.position().map_err(|source| KafkaSourceError::Consume { topic: topic.into(), source })?;
                for element in positions.elements() {
                    if let Offset::Offset(position) = element.offset() {
                        if ends.get(&element.partition()).is_some_and(|end| position + 1 >= *end) {
                            ends.remove(&element.partition());
                        }
                    }
                }
            }
        }
    }
    Ok(count)
}

#[cfg(test)]
mod tests {
    use super::*;
    use flowgraph_schema::Progress;

    #[test]
    fn json_messages_keep_their_good_lines() {
        let payload = b"{\"type\":\"progress\",\"time_\":5}\ngarbage\n{\"type\":\"progress\",\"time_\":6}\n";
        let (mut out, mut bad) = (Vec::new(), Vec::new());
        decode_message(payload, &mut out, &mut bad);
        assert_eq!(out.len(), 2);
        assert_eq!(bad.len(), 1);
        assert!(bad[0].0.starts_with("line 2:"), "{}", bad[0].0);
    }

    #[test]
    fn binary_messages_are_one_frame() {
        let mut payload = Vec::new();
        let record = Record::Progress(Progress { time_: 1, source: "a".into(), losses: Default::default() });
        binary::encode_frame(std::slice::from_ref(&record), &mut payload);
        let (mut out, mut bad) = (Vec::new(), Vec::new());
        decode_message(&payload, &mut out, &mut bad);
        assert_eq!(out, vec![record]);
        assert!(bad.is_empty());
        payload.truncate(payload.len() - 1);
        let (mut out, mut bad) = (Vec::new(), Vec::new());
        decode_message(&payload, &mut out, &mut bad);
        assert!(out.is_empty());
        assert!(bad[0].0.contains("truncated"), "{}", bad[0].0);
    }
}
