//! Kafka sinks: the graph-delta topic and the compacted graph-state topic.
//!
//! ```text
//!  job outputs ── updates of completed times ──┐
//!              └─ Progress(P) ─────────────────┤ one transaction per hand-over (or several), ending on a mark:
//!                                              ├─ deltas topic: update batches, each then {"progress":P}
//!                                              └─ state topic:  key -> last value | tombstone
//! ```
//!
//! Data and its progress mark commit together, so a `read_committed` consumer never sees a
//! mark without every update before it, nor updates of a batch that was aborted. The state
//! topic gets one write per key per send (the hand-overs that queued while the sink was busy,
//! taken together): its value after the send's last mark. Hand-overs that arrive while the
//! sink thread sends join the open transaction, up to a size, so a catch-up handed over in
//! pieces commits once per several pieces.
//!
//! Restart: the sink reads the last committed progress mark P0 from the delta topic and
//! publishes nothing with a time below P0 (the job recomputes those times while it rebuilds its
//! state, and they are already on the topic). The first new transaction continues exactly
//! where the last committed one ended, so a consumer sees every time once and progress marks
//! strictly increasing.

use crate::deltas::{self, EdgeJson, RowJson};
use flowgraph_pipeline::{GraphRecord, Output};
use flowgraph_schema::EventTime;
use hashbrown::hash_table::{Entry, HashTable};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::{ClientContext, DefaultClientContext};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::error::{KafkaError, KafkaResult, RDKafkaErrorCode};
use rdkafka::message::Message;
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ProducerContext, ThreadedProducer};
use rdkafka::{Offset, TopicPartitionList};
use rustc_hash::FxBuildHasher;
use std::collections::BTreeMap;
use std::hash::BuildHasher;
use std::sync::mpsc::{self, SyncSender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How delta messages are encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeltaFormat {
    /// JSON Lines, the lines of `replay --deltas` (schema: docs/schema/graph_delta.schema.json).
    Json,
    /// A bincode `Vec<Output>` behind the header "FD", version 1.
    Bincode,
}

/// What the Kafka sink needs to know.
#[derive(Debug, Clone)]
pub struct KafkaSinkConfig {
    /// `bootstrap.servers`.
    pub brokers: String,
    /// The delta topic (one partition: deltas are totally ordered).
    pub deltas_topic: String,
    /// The compacted state topic.
    pub state_topic: String,
    /// Delta encoding.
    pub format: DeltaFormat,
    /// Stable per pipeline instance: a restarted instance fences its previous incarnation.
    pub transactional_id: String,
    /// Most updates in one delta message.
    pub max_updates_per_message: usize,
    /// Extra librdkafka options (security, ...), applied last.
    pub options: BTreeMap<String, String>,
}

/// Errors of the sink. A failed transaction is aborted; the caller should exit and restart.
#[derive(Debug, thiserror::Error)]
pub enum KafkaSinkError {
    /// Client creation or topic setup failed.
    #[error("Kafka sink setup on {brokers}: {message}")]
    Setup {
        /// The bootstrap servers.
        brokers: String,
        /// What failed.
        message: String,
    },
    /// A transaction failed and was aborted.
    // `error`, not `source`: librdkafka's error repeats its cause in its own text, so a
    // chain printed with `{:#}` would say the same thing three times.
    #[error("publishing progress mark {progress} failed (transaction aborted): {error}")]
    Transaction {
        /// The mark being published.
        progress: EventTime,
        /// librdkafka's error.
        error: KafkaError,
    },
    /// The sink thread stopped after an earlier error, already reported.
    #[error("the Kafka sink stopped after an earlier error")]
    Stopped,
    /// The sink thread panicked.
    #[error("the Kafka sink thread panicked")]
    Panicked,
}

/// Counters of the sink. What a transaction wrote counts once it is committed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KafkaSinkStats {
    /// Updates published.
    pub updates: u64,
    /// Updates not published because a previous run had published their times.
    pub skipped_on_resume: u64,
    /// Transactions committed.
    pub transactions: u64,
    /// Transactions aborted (a send or the commit failed).
    pub aborts: u64,
    /// Delta messages written (update batches and progress marks).
    pub messages: u64,
    /// State-topic upserts and tombstones written.
    pub state_writes: u64,
    /// Time spent encoding updates and handing messages to the producer, including waits
    /// for room in the producer's queue.
    pub sending: Duration,
    /// Time spent waiting for commits: every message of the transaction acknowledged, then
    /// the commit marker.
    pub committing: Duration,
    /// CPU time of the thread the sink runs on, when it runs on a [`SinkThread`] (zero
    /// otherwise): of its wall time sending and committing, what it spent working.
    pub thread_cpu: Duration,
}

/// Publishes job outputs to the delta and state topics.
pub struct KafkaSink {
    config: KafkaSinkConfig,
    producer: ThreadedProducer<DefaultProducerContext>,
    pending: Vec<Output>,
    resume_after: Option<EventTime>,
    /// Partition 0 when the state topic has one partition (as `ensure_topics` creates it):
    /// named, it spares librdkafka's partitioner a hash of every key (~4% of a Kafka run's
    /// samples). A topic made with more keeps the partitioner, which placed its keys so far.
    state_partition: Option<i32>,
    stats: KafkaSinkStats,
    /// The transaction begun by [`KafkaSink::send_batches`] and not yet committed.
    open: Option<OpenTransaction>,
}

/// What the open transaction has sent so far.
#[derive(Debug, Default)]
struct OpenTransaction {
    /// Its last progress mark.
    progress: EventTime,
    updates: u64,
    messages: u64,
    state_writes: u64,
    sending: Duration,
}

impl std::fmt::Debug for KafkaSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaSink")
            .field("deltas_topic", &self.config.deltas_topic)
            .field("resume_after", &self.resume_after)
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

fn client(brokers: &str, options: &BTreeMap<String, String>) -> ClientConfig {
    let mut config = ClientConfig::new();
    config.set("bootstrap.servers", brokers);
    for (key, value) in options {
        config.set(key, value);
    }
    config
}

const TIMEOUT: Duration = Duration::from_secs(30);

/// Waits up to `timeout` until every message sent is acknowledged, looking every
/// [`FLUSH_CHECK`].
///
/// rdkafka's flush waits for events in steps of up to 100 ms, and on a `ThreadedProducer` the
/// events go to the producer's own polling thread, so every step runs its full 100 ms. The
/// sink's commits (whose `commit_transaction` flushes first) took >= 100 ms however little
/// they sent (measured: 101-107 ms per transaction, docs/KAFKA.md); flushed here, a commit
/// finds nothing outstanding and returns as soon as the coordinator answers.
///
/// Each look is rdkafka's flush with no time to wait, which wakes the broker threads and
/// counts what is outstanding, then a sleep. A flush with a short timeout instead (1 ms, until
/// 2026-12-06) spins: rdkafka rounds the time left down to whole milliseconds, so its every
/// poll returned at once, and the sink's thread took a core from the producer's and the
/// broker's threads, which it was waiting for (docs/KAFKA.md, "The sink's flush spun").
pub fn flush_promptly<C: ProducerContext + 'static>(
    producer: &ThreadedProducer<C>,
    timeout: Duration,
) -> KafkaResult<()> {
    let deadline = Instant::now() + timeout;
    loop {
        match producer.flush(Duration::ZERO) {
            Err(KafkaError::Flush(RDKafkaErrorCode::OperationTimedOut)) if Instant::now() < deadline => {
                std::thread::sleep(FLUSH_CHECK);
            }
            done => return done,
        }
    }
}

/// How often [`flush_promptly`] looks whether every message is acknowledged.
const FLUSH_CHECK: Duration = Duration::from_micros(500);

impl KafkaSink {
    /// Creates the topics if missing, initializes transactions (fencing an older incarnation)
    /// and finds where a previous run stopped.
    pub fn new(config: KafkaSinkConfig) -> Result<Self, KafkaSinkError> {
        let setup = |message: String| KafkaSinkError::Setup { brokers: config.brokers.clone(), message };
        check_access(&config.brokers, &config.options).map_err(setup)?;
        ensure_topics(&config).map_err(setup)?;
        let producer: ThreadedProducer<DefaultProducerContext> = {
            let mut c = client(&config.brokers, &BTreeMap::new());
            c.set("transactional.id", &config.transactional_id)
                .set("enable.idempotence", "true")
                // The sink hands a whole transaction over, then waits for it: lingering would
                // only hold its last messages (p50 -4 ms end to end, docs/KAFKA.md). Messages
                // still batch while earlier requests are in flight.
                .set("linger.ms", "0")
                // JSON deltas and state values shrink ~6.5x with lz4 (1.08 GB -> 168 MB on the
                // broker for the medium stream) at the same records/s (docs/KAFKA.md): less
                // disk and network for every consumer. Overridable in [kafka.options]; this
                // build's librdkafka has no zstd.
                .set("compression.type", "lz4");
            for (key, value) in &config.options {
                c.set(key, value);
            }
            c.create().map_err(|e| setup(format!("cannot create producer: {e}")))?
        };
        producer.init_transactions(TIMEOUT).map_err(|e| setup(format!("cannot initialize transactions: {e}")))?;
        let resume_after = last_progress(&config.brokers, &config.deltas_topic, &config.options).map_err(setup)?;
        let state_partitions = producer
            .client()
            .fetch_metadata(Some(&config.state_topic), TIMEOUT)
            .map_err(|e| setup(format!("cannot read the metadata of {}: {e}", config.state_topic)))?
            .topics()
            .first()
            .map_or(0, |topic| topic.partitions().len());
        let state_partition = (state_partitions == 1).then_some(0);
        if let Some(p) = resume_after {
            tracing::info!(topic = %config.deltas_topic, progress = p, "resuming after the last committed progress mark");
        }
        Ok(KafkaSink {
            config,
            producer,
            pending: Vec::new(),
            resume_after,
            state_partition,
            stats: KafkaSinkStats::default(),
            open: None,
        })
    }

    /// The last progress mark a previous run committed, if any: the job should rebuild its
    /// state from input older than this by window + lateness.
    pub fn resume_after(&self) -> Option<EventTime> {
        self.resume_after
    }

    /// Sends every completed batch of `outputs` (the updates before a progress mark, and the
    /// mark) in the open transaction, beginning one if none is open; [`KafkaSink::commit`]
    /// ends it. A caller that hands over many marks at once (catching up) pays one commit, not
    /// one per mark, and the state topic gets one write per key per call, its last value.
    /// Updates left without a mark wait for the next call.
    pub fn send_batches(&mut self, outputs: Vec<Output>) -> Result<(), KafkaSinkError> {
        let started = Instant::now();
        // The completed batches: where each ends in `pending`, and its mark.
        let mut batches: Vec<(usize, EventTime)> = Vec::new();
        for output in outputs {
            match output {
                Output::Update { time, .. } => {
                    if self.resume_after.is_some_and(|p| time < p) {
                        self.stats.skipped_on_resume += 1;
                    } else {
                        self.pending.push(output);
                    }
                }
                Output::Progress(progress) => {
                    if self.resume_after.is_none_or(|p| progress > p) {
                        batches.push((self.pending.len(), progress));
                    }
                }
            }
        }
        let Some(&(published, progress)) = batches.last() else {
            self.stats.sending += started.elapsed();
            return Ok(());
        };
        if self.open.is_none() {
            let first = batches[0].1;
            self.producer
                .begin_transaction()
                .map_err(|error| KafkaSinkError::Transaction { progress: first, error })?;
        }
        let sent = self.send_transaction(&batches);
        self.pending.drain(..published);
        let (messages, state_writes) = match sent {
            Ok(counts) => counts,
            Err(source) => {
                self.abort(progress, &source);
                return Err(KafkaSinkError::Transaction { progress, error: source });
            }
        };
        let open = self.open.get_or_insert_with(OpenTransaction::default);
        open.progress = progress;
        open.updates += published as u64;
        open.messages += messages;
        open.state_writes += state_writes;
        let spent = started.elapsed();
        open.sending += spent;
        self.stats.sending += spent;
        Ok(())
    }

    /// Updates sent in the open transaction (0 if none is open).
    pub fn open_updates(&self) -> u64 {
        self.open.as_ref().map_or(0, |open| open.updates)
    }

    /// Commits the open transaction, if one is open: waits until every message of it is
    /// acknowledged, then writes the commit markers.
    pub fn commit(&mut self) -> Result<(), KafkaSinkError> {
        let Some(open) = self.open.take() else { return Ok(()) };
        let progress = open.progress;
        let committing = Instant::now();
        let committed =
            flush_promptly(&self.producer, TIMEOUT).and_then(|()| self.producer.commit_transaction(TIMEOUT));
        let commit_time = committing.elapsed();
        self.stats.committing += commit_time;
        if let Err(source) = committed {
            self.abort(progress, &source);
            return Err(KafkaSinkError::Transaction { progress, error: source });
        }
        tracing::debug!(
            progress,
            updates = open.updates,
            state_writes = open.state_writes,
            sending_ms = open.sending.as_millis() as u64,
            committing_ms = commit_time.as_millis() as u64,
            "transaction committed"
        );
        self.stats.transactions += 1;
        self.stats.updates += open.updates;
        self.stats.messages += open.messages;
        self.stats.state_writes += open.state_writes;
        Ok(())
    }

    /// Aborts the open transaction after `error`, and counts it.
    fn abort(&mut self, progress: EventTime, error: &KafkaError) {
        self.open = None;
        self.stats.aborts += 1;
        tracing::warn!(progress, error = %error, "aborting the transaction");
        if let Err(e) = self.producer.abort_transaction(TIMEOUT) {
            tracing::warn!(progress, error = %e, "aborting the transaction failed");
        }
    }

    /// Sends the open transaction's batches (`batches`: where each ends in `pending`, and its
    /// mark) as [`encode_transaction`] encodes them: delta messages to partition 0 of the delta
    /// topic (one ordered log, where `last_progress` reads it), state writes to the state
    /// topic. Returns how many delta messages and state writes it sent.
    fn send_transaction(&self, batches: &[(usize, EventTime)]) -> Result<(u64, u64), KafkaError> {
        let Some(&(end, _)) = batches.last() else { return Ok((0, 0)) };
        // Stamped with the wall clock, not the mark's event time: the broker rolls and deletes
        // segments by message timestamp, and a replayed recording's event times can be far
        // older than the retention, which had it delete deltas minutes after they were
        // written (seen in tests/cluster.rs). The event time is in the payload.
        let timestamp =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64);
        let max_updates = self.config.max_updates_per_message;
        encode_transaction(self.config.format, max_updates, &self.pending[..end], batches, |message| match message {
            TransactionMessage::Delta(payload) => {
                self.send(&self.config.deltas_topic, Some(0), None, Some(payload), timestamp)
            }
            TransactionMessage::State { key, value } => {
                self.send(&self.config.state_topic, self.state_partition, Some(key), value, timestamp)
            }
        })
    }

    /// Queues one message; `partition` None leaves it to librdkafka's partitioner.
    fn send(
        &self,
        topic: &str,
        partition: Option<i32>,
        key: Option<&[u8]>,
        payload: Option<&[u8]>,
        timestamp: i64,
    ) -> Result<(), KafkaError> {
        let mut record: BaseRecord<'_, [u8], [u8]> = BaseRecord::to(topic).timestamp(timestamp);
        if let Some(partition) = partition {
            record = record.partition(partition);
        }
        if let Some(key) = key {
            record = record.key(key);
        }
        if let Some(payload) = payload {
            record = record.payload(payload);
        }
        let mut record = record;
        loop {
            match self.producer.send(record) {
                Ok(()) => return Ok(()),
                Err((KafkaError::MessageProduction(rdkafka::types::RDKafkaErrorCode::QueueFull), r)) => {
                    record = r;
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err((e, _)) => return Err(e),
            }
        }
    }

    /// What the sink has done.
    pub fn stats(&self) -> &KafkaSinkStats {
        &self.stats
    }
}

/// A [`KafkaSink`] on a thread of its own, so the worker computes the next batch while the
/// previous transaction is encoded, sent and committed (a commit waits for every message of
/// the transaction to be acknowledged). Batches are published in the order they are handed
/// over; batches that queue up while a commit is in flight go out in one transaction.
#[derive(Debug)]
pub struct SinkThread {
    handoff: Option<SyncSender<Vec<Output>>>,
    thread: Option<JoinHandle<Result<(), KafkaSinkError>>>,
    stats: Arc<Mutex<KafkaSinkStats>>,
    resume_after: Option<EventTime>,
    /// Time the worker waited to hand over, with the queue full.
    handoff_wait: Duration,
}

/// The sink thread keeps a transaction open for batches handed over while it sends, until it
/// holds this many updates: a catch-up still commits every so often, so that what consumers
/// can read moves on, and no transaction comes near the transaction timeout.
const TRANSACTION_UPDATES: u64 = 65_536;

/// Batches handed over and not yet taken by the sink thread, at most: the worker waits
/// beyond that, so a slow broker slows the worker instead of growing memory.
const QUEUED_BATCHES: usize = 2;

impl SinkThread {
    /// Moves `sink` to a new thread.
    pub fn spawn(mut sink: KafkaSink) -> std::io::Result<Self> {
        let (handoff, batches) = mpsc::sync_channel::<Vec<Output>>(QUEUED_BATCHES);
        let stats = Arc::new(Mutex::new(sink.stats().clone()));
        let resume_after = sink.resume_after();
        let shared = Arc::clone(&stats);
        let thread = std::thread::Builder::new().name("kafka-sink".into()).spawn(move || {
            let cpu = cpu_time::ThreadTime::now();
            while let Ok(mut outputs) = batches.recv() {
                // Whatever queued during the last commit joins this transaction.
                while let Ok(more) = batches.try_recv() {
                    outputs.extend(more);
                }
                let mut sent = sink.send_batches(outputs);
                // And what is handed over while it is sent, as it comes, up to a size: a
                // catch-up handed over in pieces then commits once per several pieces, with
                // the acknowledgements of each arriving while the next is sent, instead of
                // waiting for them at every piece's commit.
                while sent.is_ok() && sink.open_updates() < TRANSACTION_UPDATES {
                    match batches.try_recv() {
                        Ok(more) => sent = sink.send_batches(more),
                        Err(_) => break,
                    }
                }
                let published = sent.and_then(|()| sink.commit());
                let stats = KafkaSinkStats { thread_cpu: cpu.elapsed(), ..sink.stats().clone() };
                *shared.lock().unwrap_or_else(|e| e.into_inner()) = stats;
                published?;
            }
            Ok(())
        })?;
        Ok(SinkThread {
            handoff: Some(handoff),
            thread: Some(thread),
            stats,
            resume_after,
            handoff_wait: Duration::ZERO,
        })
    }

    /// See [`KafkaSink::resume_after`].
    pub fn resume_after(&self) -> Option<EventTime> {
        self.resume_after
    }

    /// Hands `outputs` to the sink thread, waiting while it has [`QUEUED_BATCHES`] queued.
    /// Fails with the sink's error once a transaction has failed (the sink then stops).
    pub fn publish(&mut self, outputs: Vec<Output>) -> Result<(), KafkaSinkError> {
        let handoff = self.handoff.as_ref().ok_or(KafkaSinkError::Stopped)?;
        let waiting = Instant::now();
        let sent = handoff.send(outputs);
        self.handoff_wait += waiting.elapsed();
        if sent.is_err() {
            // The thread ended: a transaction failed. Its error is the one to report.
            self.handoff = None;
            return self.join();
        }
        Ok(())
    }

    /// Publishes everything handed over, then stops the thread.
    pub fn finish(&mut self) -> Result<(), KafkaSinkError> {
        self.handoff = None;
        self.join()
    }

    fn join(&mut self) -> Result<(), KafkaSinkError> {
        match self.thread.take() {
            Some(thread) => thread.join().unwrap_or(Err(KafkaSinkError::Panicked)),
            None => Err(KafkaSinkError::Stopped),
        }
    }

    /// What the sink has committed so far.
    pub fn stats(&self) -> KafkaSinkStats {
        self.stats.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// How long the worker has waited to hand batches over (the sink was behind).
    pub fn handoff_wait(&self) -> Duration {
        self.handoff_wait
    }
}

/// A message of a transaction, as [`encode_transaction`] hands it over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransactionMessage<'a> {
    /// A delta message: updates of one batch, or the batch's progress mark.
    Delta(&'a [u8]),
    /// A state-topic write.
    State {
        /// The record's state key.
        key: &'a [u8],
        /// Its value, or its tombstone (`None`).
        value: Option<&'a [u8]>,
    },
}

/// Encodes a transaction and hands its messages to `send` in the order they are to be sent.
/// For each batch (`batches`: where each ends in `updates`, and its mark): its updates in
/// messages of at most `max_updates` updates and [`MAX_MESSAGE_BYTES`], its mark, then the
/// state writes of the keys whose last update in the transaction is in that batch (one write
/// per key: its last value, or a tombstone). Returns how many delta messages and state writes
/// it handed over. Pure, so tests and benchmarks run it without a broker.
pub fn encode_transaction<E>(
    format: DeltaFormat,
    max_updates: usize,
    updates: &[Output],
    batches: &[(usize, EventTime)],
    mut send: impl FnMut(TransactionMessage<'_>) -> Result<(), E>,
) -> Result<(u64, u64), E> {
    let last = last_updates(updates);
    let mut state_writes = last.iter().peekable();
    let (mut messages_sent, mut start) = (0u64, 0usize);
    let mut spans = Vec::new();
    // One buffer for every key: each is handed over (and copied by librdkafka) before the next.
    let mut key = Vec::new();
    for &(end, progress) in batches {
        // JSON lines embed each record's state value: where, so it is not encoded twice.
        spans.clear();
        let mut messages =
            split_messages(format, &updates[start..end], max_updates.max(1), MAX_MESSAGE_BYTES, Some(&mut spans));
        messages.push(encode(format, &[Output::Progress(progress)]));
        for payload in &messages {
            send(TransactionMessage::Delta(payload))?;
        }
        messages_sent += messages.len() as u64;
        while let Some(&(position, record, present)) = state_writes.next_if(|(position, ..)| *position < end) {
            key.clear();
            write_state_key(record, &mut key);
            let encoded;
            let value = match (present, spans[position - start]) {
                (false, _) => None,
                (true, Some(span)) => Some(&messages[span.message][span.start..span.end]),
                (true, None) => {
                    encoded = state_value(record);
                    Some(encoded.as_bytes())
                }
            };
            send(TransactionMessage::State { key: &key, value })?;
        }
        start = end;
    }
    Ok((messages_sent, last.len() as u64))
}

/// The last update of each state key: its position in `updates`, its record, and whether
/// the record is present after it (an insertion: a value) or gone (a retraction: a
/// tombstone). Updates come in time order, retractions before insertions within a time, so
/// the last update of a key wins: a change is -old then +new, a disappearance ends on -old.
/// In the order of the positions: deterministic without comparing strings (sorting the keys
/// as text was ~3% of a Kafka run's profile).
///
/// The table holds only positions (4 bytes each, sized for every update so it never
/// rehashes); keys are compared through the records. A map from borrowed keys to
/// (position, record) entries, ~100 bytes each, was ~20% of the sink's thread in bench-kafka's
/// throughput phase (transactions of 100,000s of updates), in probing and comparing keys.
fn last_updates(updates: &[Output]) -> Vec<(usize, &GraphRecord, bool)> {
    let hasher = FxBuildHasher;
    let update_at = |position: u32| match &updates[position as usize] {
        Output::Update { diff, record, .. } => (record, *diff),
        Output::Progress(_) => unreachable!("only updates' positions are in the table"),
    };
    let record_at = |position: u32| update_at(position).0;
    let mut last: HashTable<u32> = HashTable::with_capacity(updates.len());
    for (position, output) in updates.iter().enumerate() {
        let Output::Update { record, .. } = output else { continue };
        let position = u32::try_from(position).expect("a transaction holds fewer than 2^32 updates");
        let key = StateKey::of(record);
        let hash = hasher.hash_one(&key);
        let same_key = |&other: &u32| StateKey::of(record_at(other)) == key;
        match last.entry(hash, same_key, |&other| hasher.hash_one(StateKey::of(record_at(other)))) {
            Entry::Occupied(mut entry) => *entry.get_mut() = position,
            Entry::Vacant(entry) => {
                entry.insert(position);
            }
        }
    }
    let mut positions: Vec<u32> = last.into_iter().collect();
    positions.sort_unstable();
    positions
        .into_iter()
        .map(|position| {
            let (record, diff) = update_at(position);
            (position as usize, record, diff > 0)
        })
        .collect()
}

/// What identifies a row or an edge on the state topic, borrowed from the record.
#[derive(PartialEq, Eq, Hash)]
enum StateKey<'a> {
    Edge(&'a str, &'a str),
    Row(&'a str, flowgraph_schema::Upid, &'a str, std::net::IpAddr),
}

impl<'a> StateKey<'a> {
    fn of(record: &'a GraphRecord) -> Self {
        match record {
            GraphRecord::Edge(e) => StateKey::Edge(&e.from_entity, &e.to_entity),
            GraphRecord::Row(r) => StateKey::Row(&r.from_entity, r.upid, &r.cmdline, r.remote_addr),
        }
    }
}

/// The state topic's key and current value for a row or an edge. Keys are JSON arrays that
/// say which kind they are: `["edge",from,to]`, `["row",from,upid,cmdline,addr]`.
pub fn state_entry(record: &GraphRecord) -> (String, String) {
    (state_key(record), state_value(record))
}

fn state_key(record: &GraphRecord) -> String {
    let mut key = Vec::new();
    write_state_key(record, &mut key);
    String::from_utf8(key).expect("JSON is UTF-8")
}

/// Appends a record's state key to `out`. The upid and the address serialize as the strings
/// their `Display` gives, without a `String` of their own.
fn write_state_key(record: &GraphRecord, out: &mut Vec<u8>) {
    match record {
        GraphRecord::Edge(e) => sonic_rs::to_writer(out, &("edge", &*e.from_entity, &*e.to_entity)),
        GraphRecord::Row(r) => {
            sonic_rs::to_writer(out, &("row", &*r.from_entity, &r.upid, &*r.cmdline, &r.remote_addr))
        }
    }
    .expect("keys serialize")
}

fn state_value(record: &GraphRecord) -> String {
    match record {
        GraphRecord::Edge(e) => serde_json::to_string(&EdgeJson::from(e)),
        GraphRecord::Row(r) => serde_json::to_string(&RowJson::from(r)),
    }
    .expect("records serialize")
}

/// Decodes a state-topic value (a row or an edge object) back into the record.
pub fn decode_state_value(value: &[u8]) -> Result<GraphRecord, String> {
    let text = std::str::from_utf8(value).map_err(|e| format!("state value is not UTF-8: {e}"))?;
    // A state value is a delta line's record: parse it as one, trying both kinds.
    for kind in ["row", "edge"] {
        let line = format!("{{\"time\":0,\"diff\":1,\"{kind}\":{text}}}");
        if let Ok(Output::Update { record, .. }) = deltas::from_line(&line) {
            return Ok(record);
        }
    }
    Err("state value is neither a row nor an edge".into())
}

/// Most updates in one delta message, as `flowgraph run` sets [`KafkaSinkConfig`]'s.
pub const MAX_UPDATES_PER_MESSAGE: usize = 5000;

/// Largest delta message written, below the brokers' default `message.max.bytes` (1 MiB)
/// with room for headers and batch overhead.
pub const MAX_MESSAGE_BYTES: usize = 900 * 1024;

/// Encodes updates as messages of at most `max_updates` updates and `max_bytes` bytes (a
/// single update larger than that still gets a message of its own). Each update is encoded
/// once and messages are filled greedily; a message's bytes are exactly what [`encode`] gives
/// for its updates.
pub fn split_messages(
    format: DeltaFormat,
    updates: &[Output],
    max_updates: usize,
    max_bytes: usize,
    mut spans: Option<&mut Vec<Option<RecordSpan>>>,
) -> Vec<Vec<u8>> {
    let mut messages = Vec::new();
    let mut body: Vec<u8> = Vec::new();
    let mut count = 0usize;
    // The frame adds the bincode magic and count (at most 3 + 9 bytes); JSON adds nothing.
    let overhead = match format {
        DeltaFormat::Json => 0,
        DeltaFormat::Bincode => BINCODE_MAGIC.len() + 9,
    };
    for output in updates {
        // Encoded in place: copying every update in from a buffer of its own cost ~4% of the
        // encoding (criterion: `deltas/Kafka sink`).
        let mut at = body.len();
        encode_item(format, output, &mut body);
        if count > 0 && (count == max_updates || overhead + body.len() > max_bytes) {
            // The message is full without this update, which starts the next one. Messages
            // fill up alike, so the next gets the last one's size at once.
            let mut next = Vec::with_capacity(at);
            next.extend_from_slice(&body[at..]);
            body.truncate(at);
            messages.push(frame(format, std::mem::replace(&mut body, next), count));
            (at, count) = (0, 0);
        }
        if let Some(spans) = spans.as_deref_mut() {
            // A JSON message is its lines as they are, so offsets in the body are offsets in it.
            let object = match format {
                DeltaFormat::Json => record_object(&body[at..]),
                DeltaFormat::Bincode => None,
            };
            spans.push(object.map(|(start, end)| RecordSpan {
                message: messages.len(),
                start: at + start,
                end: at + end,
            }));
        }
        count += 1;
    }
    if count > 0 {
        messages.push(frame(format, body, count));
    }
    messages
}

/// Where an update's record object (its state-topic value) lies in a delta message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordSpan {
    /// Index of the message.
    pub message: usize,
    /// Offset of the object's first byte in the message.
    pub start: usize,
    /// Offset just past its last byte.
    pub end: usize,
}

/// The record object inside an update's JSON line with its newline,
/// `{"time":T,"diff":D,"row":{...}}\n`: from the line's second `{` (time and diff are numbers)
/// to before its last `}`. A unit test holds this to [`state_value`].
fn record_object(line: &[u8]) -> Option<(usize, usize)> {
    let start = 1 + line.get(1..)?.iter().position(|&b| b == b'{')?;
    let end = line.len().checked_sub(2).filter(|&end| end > start && line[end] == b'}' && line[end - 1] == b'}')?;
    Some((start, end))
}

/// One output's encoding inside a message: a JSON line with its newline, or a bincode element.
fn encode_item(format: DeltaFormat, output: &Output, out: &mut Vec<u8>) {
    match format {
        DeltaFormat::Json => {
            deltas::write_line(output, out);
            out.push(b'\n');
        }
        DeltaFormat::Bincode => {
            bincode::serde::encode_into_std_write(output, out, bincode::config::standard())
                .expect("encoding into a Vec cannot fail");
        }
    }
}

/// A message from `count` encoded items: as is for JSON; for bincode the magic and the
/// sequence's length before its elements, which is how bincode encodes a slice.
fn frame(format: DeltaFormat, body: Vec<u8>, count: usize) -> Vec<u8> {
    match format {
        DeltaFormat::Json => body,
        DeltaFormat::Bincode => {
            let mut bytes = BINCODE_MAGIC.to_vec();
            bincode::encode_into_std_write(count as u64, &mut bytes, bincode::config::standard())
                .expect("encoding into a Vec cannot fail");
            bytes.extend_from_slice(&body);
            bytes
        }
    }
}

/// Magic of a bincode delta message.
pub const BINCODE_MAGIC: [u8; 3] = *b"FD\x01";

/// Encodes outputs as one delta message: JSON lines, or bincode's encoding of the slice
/// behind [`BINCODE_MAGIC`].
pub fn encode(format: DeltaFormat, outputs: &[Output]) -> Vec<u8> {
    let mut body = Vec::new();
    for output in outputs {
        encode_item(format, output, &mut body);
    }
    frame(format, body, outputs.len())
}

/// Decodes a delta message (either format).
pub fn decode(payload: &[u8]) -> Result<Vec<Output>, String> {
    if let Some(body) = payload.strip_prefix(&BINCODE_MAGIC) {
        let (outputs, _) =
            bincode::serde::decode_from_slice(body, bincode::config::standard().with_limit::<{ 64 * 1024 * 1024 }>())
                .map_err(|e| e.to_string())?;
        return Ok(outputs);
    }
    let text = std::str::from_utf8(payload).map_err(|e| e.to_string())?;
    text.lines().filter(|l| !l.trim().is_empty()).map(deltas::from_line).collect()
}

/// Waits until the brokers answer a metadata request, up to `TIMEOUT`, and fails at once on
/// an authentication error. librdkafka treats a rejected login (wrong SASL password, ...) like
/// a network error: every call retries until its own timeout and ends in a generic "timed out"
/// or "transport failure", and the admin client never says why. Its error events do: a
/// consumer with a group id receives them from `poll`.
fn check_access(brokers: &str, options: &BTreeMap<String, String>) -> Result<(), String> {
    use rdkafka::types::RDKafkaErrorCode as Code;
    let mut config = client(brokers, &BTreeMap::new());
    config.set("group.id", "flowgraph-access-check").set("enable.auto.commit", "false");
    for (key, value) in options {
        config.set(key, value);
    }
    let consumer: BaseConsumer = config.create().map_err(|e| format!("cannot create a client: {e}"))?;
    let deadline = std::time::Instant::now() + TIMEOUT;
    loop {
        while let Some(event) = consumer.poll(Duration::from_millis(100)) {
            if let Err(e) = event {
                if matches!(e.rdkafka_error_code(), Some(Code::Authentication | Code::SaslAuthenticationFailed)) {
                    return Err(format!("authentication failed (check the sasl.* options): {e}"));
                }
            }
        }
        match consumer.fetch_metadata(None, Duration::from_millis(500)) {
            Ok(_) => return Ok(()),
            Err(e) if std::time::Instant::now() >= deadline => {
                return Err(format!("no broker answered within {}s: {e}", TIMEOUT.as_secs()))
            }
            Err(_) => {}
        }
    }
}

fn ensure_topics(config: &KafkaSinkConfig) -> Result<(), String> {
    let admin: AdminClient<DefaultClientContext> =
        client(&config.brokers, &config.options).create().map_err(|e| format!("cannot create admin client: {e}"))?;
    let deltas = NewTopic::new(&config.deltas_topic, 1, TopicReplication::Fixed(1));
    let state = NewTopic::new(&config.state_topic, 1, TopicReplication::Fixed(1)).set("cleanup.policy", "compact");
    let runtime = futures_executor::block_on(
        admin.create_topics([&deltas, &state], &AdminOptions::new().operation_timeout(Some(TIMEOUT))),
    )
    .map_err(|e| format!("cannot create topics: {e}"))?;
    for result in runtime {
        match result {
            Ok(_) => {}
            Err((_, rdkafka::types::RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((topic, code)) => return Err(format!("cannot create topic {topic}: {code}")),
        }
    }
    Ok(())
}

/// The context of a consumer that reads a partition to its end on purpose. rdkafka hands
/// every consumer error event to `ClientContext::error` before `poll` returns it, and the
/// default logs it at ERROR: every restart of `flowgraph run` on a non-empty delta topic
/// logged "Global error: PartitionEOF" (the last offset of a transactional topic is a commit
/// marker, which a read_committed reader never sees, so the read ends at the end of the
/// partition). The end is logged at debug; any other error as rdkafka would.
struct ReadsToTheEnd;

impl ClientContext for ReadsToTheEnd {
    fn error(&self, error: KafkaError, reason: &str) {
        if error.rdkafka_error_code() == Some(RDKafkaErrorCode::PartitionEOF) {
            tracing::debug!(%reason, "read to the end of the partition");
        } else {
            tracing::error!("librdkafka: {error}: {reason}");
        }
    }
}

impl ConsumerContext for ReadsToTheEnd {}

/// Reads the delta topic's last committed progress mark (what a restarted sink resumes after,
/// and the time of a consumer that bootstraps from the state topic).
pub fn last_progress(
    brokers: &str,
    deltas_topic: &str,
    options: &BTreeMap<String, String>,
) -> Result<Option<EventTime>, String> {
    let consumer: BaseConsumer<ReadsToTheEnd> = {
        let mut c = client(brokers, &BTreeMap::new());
        c.set("group.id", format!("flowgraph-resume-{deltas_topic}"))
            .set("enable.auto.commit", "false")
            .set("isolation.level", "read_committed")
            .set("enable.partition.eof", "true");
        for (key, value) in options {
            c.set(key, value);
        }
        c.create_with_context(ReadsToTheEnd).map_err(|e| format!("cannot create consumer: {e}"))?
    };
    let deadline = Instant::now() + TIMEOUT;
    let (low, high) = loop {
        use rdkafka::types::RDKafkaErrorCode::{LeaderNotAvailable, NotLeaderForPartition};
        match consumer.fetch_watermarks(deltas_topic, 0, TIMEOUT) {
            Ok(watermarks) => break watermarks,
            // A topic created a moment ago (ensure_topics) may not have its leader yet: seen
            // in CI as "NotLeaderForPartition" right after the sink created the topics.
            Err(KafkaError::MetadataFetch(NotLeaderForPartition | LeaderNotAvailable)) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(100));
            }
            Err(e) => return Err(format!("cannot read offsets of {}: {e}", deltas_topic)),
        }
    };
    let mut start = high;
    let mut step = 64;
    while start > low {
        start = (start - step).max(low);
        step *= 4;
        let mut assignment = TopicPartitionList::new();
        assignment.add_partition_offset(deltas_topic, 0, Offset::Offset(start)).map_err(|e| e.to_string())?;
        consumer.assign(&assignment).map_err(|e| e.to_string())?;
        let mut last = None;
        loop {
            match consumer.poll(TIMEOUT) {
                Some(Ok(message)) => {
                    if let Some(payload) = message.payload() {
                        for output in decode(payload)? {
                            if let Output::Progress(p) = output {
                                last = Some(p);
                            }
                        }
                    }
                    if message.offset() + 1 >= high {
                        break;
                    }
                }
                Some(Err(KafkaError::PartitionEOF(_))) => break,
                Some(Err(e)) => return Err(format!("reading {}: {e}", deltas_topic)),
                None => return Err(format!("timed out reading {}", deltas_topic)),
            }
        }
        if last.is_some() {
            return Ok(last);
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;
    use flowgraph_pipeline::{Edge, GraphRecord};

    /// The state topic's writes for one batch of JSON deltas, as the sink sends them.
    fn state_writes(updates: &[Output]) -> Vec<(String, Option<String>)> {
        let text = |bytes: &[u8]| String::from_utf8(bytes.to_vec()).unwrap();
        let mut writes = Vec::new();
        let batch = [(updates.len(), u64::MAX)];
        encode_transaction::<()>(DeltaFormat::Json, 1000, updates, &batch, |message| {
            if let TransactionMessage::State { key, value } = message {
                writes.push((text(key), value.map(text)));
            }
            Ok(())
        })
        .unwrap();
        writes
    }

    proptest::proptest! {
        // Keys are written by sonic-rs, for speed; consumers look them up with serde_json's bytes.
        #[test]
        fn state_keys_are_the_bytes_serde_json_writes(record in crate::deltas::tests::any_record()) {
            let expected = match &record {
                GraphRecord::Edge(e) => serde_json::to_string(&("edge", &*e.from_entity, &*e.to_entity)),
                GraphRecord::Row(r) => serde_json::to_string(
                    &("row", &*r.from_entity, r.upid.to_string(), &*r.cmdline, r.remote_addr.to_string()),
                ),
            };
            proptest::prop_assert_eq!(state_key(&record), expected.unwrap());
        }
    }

    #[test]
    fn a_record_that_appears_and_vanishes_in_one_batch_is_a_tombstone() {
        let edge = |sent| {
            GraphRecord::Edge(Edge { from_entity: "a".into(), to_entity: "b".into(), bytes_sent: sent, bytes_recv: 0 })
        };
        let update = |time, diff, sent| Output::Update { time, diff, record: edge(sent) };
        let appears_and_vanishes = [update(1, 1, 5), update(2, -1, 5)];
        assert_eq!(state_writes(&appears_and_vanishes).into_iter().map(|(_, v)| v).collect::<Vec<_>>(), vec![None]);
        let changes = [update(1, 1, 5), update(2, -1, 5), update(2, 1, 7)];
        let value = state_writes(&changes).into_iter().next().unwrap().1.unwrap();
        assert!(value.contains("\"bytes_sent\":7"), "{value}");
    }

    #[test]
    fn messages_stay_under_the_size_limit_and_keep_every_update_in_order() {
        let updates: Vec<Output> = (0..3000u64)
            .map(|i| Output::Update {
                time: i,
                diff: 1,
                record: GraphRecord::Edge(Edge {
                    from_entity: format!("from-{i}-{}", "x".repeat(200)).into(),
                    to_entity: "to".into(),
                    bytes_sent: i,
                    bytes_recv: i,
                }),
            })
            .collect();
        for format in [DeltaFormat::Json, DeltaFormat::Bincode] {
            let messages = split_messages(format, &updates, 5000, 64 * 1024, None);
            assert!(messages.len() > 1);
            assert!(messages.iter().all(|m| m.len() <= 64 * 1024));
            let decoded: Vec<Output> = messages.iter().flat_map(|m| decode(m).unwrap()).collect();
            assert_eq!(decoded, updates);
            // Filled greedily, each message the bytes `encode` gives for its updates.
            for message in &messages {
                assert_eq!(*message, encode(format, &decode(message).unwrap()));
            }
            assert!(messages[..messages.len() - 1].iter().all(|m| m.len() > 60 * 1024), "messages not filled");
            let counted = split_messages(format, &updates, 7, usize::MAX, None);
            assert_eq!(counted.len(), 3000usize.div_ceil(7));
        }
    }

    #[test]
    fn state_values_taken_from_the_delta_lines_are_the_values_state_value_writes() {
        let tricky = ["plain", "ns/a\"quoted\"", "back\\slash {brace} }", "ünïcode\u{1}\n"];
        let mut updates = Vec::new();
        for (i, text) in tricky.iter().enumerate() {
            let diff = if i % 2 == 0 { 1 } else { -1 };
            updates.push(Output::Update {
                time: i as u64,
                diff,
                record: GraphRecord::Edge(Edge {
                    from_entity: (*text).into(),
                    to_entity: format!("{text}-to").into(),
                    bytes_sent: u64::MAX,
                    bytes_recv: i as u64,
                }),
            });
            updates.push(Output::Update {
                time: i as u64,
                diff,
                record: GraphRecord::Row(flowgraph_pipeline::Row {
                    from_entity: (*text).into(),
                    upid: "1:2:3".parse().unwrap(),
                    cmdline: format!("{text} --flag").into(),
                    remote_addr: "2001:db8::1".parse().unwrap(),
                    to_entity: (*text).into(),
                    bytes_sent: 5,
                    bytes_recv: 1,
                }),
            });
        }
        // Small messages, so spans fall in several of them.
        let mut spans = Vec::new();
        let messages = split_messages(DeltaFormat::Json, &updates, 3, usize::MAX, Some(&mut spans));
        assert!(messages.len() > 2);
        assert_eq!(spans.len(), updates.len());
        for (update, span) in updates.iter().zip(&spans) {
            let Output::Update { record, .. } = update else { unreachable!() };
            let span = span.expect("every update line has a record object");
            let taken = std::str::from_utf8(&messages[span.message][span.start..span.end]).unwrap();
            assert_eq!(taken, state_value(record));
        }
        let mut none = Vec::new();
        split_messages(DeltaFormat::Bincode, &updates, 3, usize::MAX, Some(&mut none));
        assert!(none.iter().all(Option::is_none));
    }

    #[test]
    fn state_writes_serialize_each_key_once_with_its_last_value() {
        let row = |sent| {
            GraphRecord::Row(flowgraph_pipeline::Row {
                from_entity: "ns/a\"quoted\"".into(),
                upid: "1:2:3".parse().unwrap(),
                cmdline: "redis-server *:6379".into(),
                remote_addr: "2001:db8::1".parse().unwrap(),
                to_entity: "ns/b".into(),
                bytes_sent: sent,
                bytes_recv: 1,
            })
        };
        let updates = [
            Output::Update { time: 1, diff: 1, record: row(5) },
            Output::Update { time: 2, diff: -1, record: row(5) },
            Output::Update { time: 2, diff: 1, record: row(9) },
        ];
        let writes = state_writes(&updates);
        assert_eq!(writes.len(), 1);
        let (key, value) = writes.into_iter().next().unwrap();
        assert_eq!(key, r#"["row","ns/a\"quoted\"","1:2:3","redis-server *:6379","2001:db8::1"]"#);
        assert_eq!(value.as_deref(), deltas::to_line(&updates[2]).split_once(r#""row":"#).unwrap().1.strip_suffix('}'));
    }
}
