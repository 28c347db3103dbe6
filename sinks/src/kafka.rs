//! Kafka sinks: the graph-delta topic and the compacted graph-state topic.
//!
//! ```text
//!  job outputs ── updates of completed times ──┐
//!              └─ Progress(P) ─────────────────┤ one transaction per hand-over (or several), ending on a mark:
//!                                              ├─ deltas topic: update batches, each then {"progress":P}
//!                                              └─ state topic, at checkpoints: key -> last value | tombstone
//! ```
//!
//! Data and its progress mark commit together, so a `read_committed` consumer never sees a
//! mark without every update before it, nor updates of a batch that was aborted. Hand-overs
//! that arrive while the sink thread sends join the open transaction, up to a size, so a
//! catch-up handed over in pieces commits once per several pieces.
//!
//! The state topic is written at checkpoints, every [`KafkaSinkConfig::state_checkpoint_every`]
//! of event time: each key changed since the last checkpoint once, with its value at the
//! checkpoint's mark (or a tombstone), spread over the sends from the mark on
//! ([`StateCheckpoints`]), then a checkpoint message on the delta topic (an empty payload with
//! the header [`CHECKPOINT_HEADER`], the mark). Between checkpoints the sink holds the changed
//! keys' last updates. Every live row changes every export period, so writing each key once per
//! checkpoint instead of once per transaction is most of the state topic's cost saved
//! (docs/KAFKA.md). A consumer bootstraps by reading the state topic, then applying by key the
//! deltas after the last checkpoint's mark ([`last_checkpoint`]); a clean stop writes a last
//! checkpoint, so the state topic alone is then the final graph.
//!
//! Restart: the sink reads the last committed progress mark P0 from the delta topic and
//! publishes nothing with a time below P0 (the job recomputes those times while it rebuilds its
//! state, and they are already on the topic). The first new transaction continues exactly
//! where the last committed one ended, so a consumer sees every time once and progress marks
//! strictly increasing. It also reads the deltas after the last checkpoint message and holds
//! their keys' last updates again, so the next checkpoint writes what the crash kept from the
//! state topic.

use crate::deltas::{self, write_address, write_record, write_text, write_upid, DeltaDecoder};
use flowgraph_pipeline::{GraphRecord, Output, Text};
use flowgraph_schema::EventTime;
use hashbrown::hash_table::{Entry, HashTable};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::{ClientContext, DefaultClientContext};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::error::{KafkaError, KafkaResult, RDKafkaErrorCode};
use rdkafka::message::{BorrowedMessage, Header, Headers, Message, OwnedHeaders};
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
    /// Event time (ns) from one state checkpoint to the next; 0 checkpoints every send.
    pub state_checkpoint_every: u64,
    /// Most keys changed before a checkpoint written per send ([`StateCheckpoints`]):
    /// [`STATE_WRITES_PER_SEND`] in `flowgraph run`.
    pub state_writes_per_send: usize,
    /// Extra librdkafka options (security, ...), applied last.
    pub options: BTreeMap<String, String>,
}

/// The header that marks a checkpoint message on the delta topic: its value is the progress
/// mark (decimal) as of which the state topic holds the graph once the message is committed.
pub const CHECKPOINT_HEADER: &str = "flowgraph.checkpoint";

/// Most keys changed before a checkpoint that one send writes, as `flowgraph run` sets
/// [`KafkaSinkConfig::state_writes_per_send`]: ~5 MB of state values, a fraction of a full
/// transaction's deltas (65,536 updates on the sink's thread). It bounds a send's share when the
/// marks jump (a catch-up); otherwise the spread over event time sets the pace.
pub const STATE_WRITES_PER_SEND: usize = 16_384;

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
    /// State checkpoints committed.
    pub checkpoints: u64,
    /// Keys the sink holds for the state topic: changed since the last checkpoint's mark, or
    /// set aside for the checkpoint being written.
    pub pending_state_keys: u64,
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
    /// When the state topic is written, and the keys held until then.
    state: StateCheckpoints,
    /// The keys changed since the last checkpoint, being read from the delta topic
    /// ([`state_since_checkpoint`]) while the job rebuilds its window; `state` once joined.
    taking_over: Option<JoinHandle<Result<StateCheckpoints, String>>>,
    /// The last committed progress mark (the previous run's, until this one commits).
    committed: Option<EventTime>,
}

/// What the open transaction has sent so far.
#[derive(Debug, Default)]
struct OpenTransaction {
    /// Its last progress mark.
    progress: EventTime,
    updates: u64,
    messages: u64,
    state_writes: u64,
    checkpoints: u64,
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

/// Milliseconds since the epoch, the timestamp of every message the sink writes: the wall
/// clock, not the mark's event time, because the broker rolls and deletes segments by message
/// timestamp, and a replayed recording's event times can be far older than the retention,
/// which had it delete deltas minutes after they were written (seen in tests/cluster.rs). The
/// event time is in the payload.
fn wall_clock_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

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
        // A restart reads up to 1.5 checkpoint intervals of deltas to take the held keys over
        // (a minute and more on a large fleet): on a thread of its own, so the job rebuilds
        // its window meanwhile. The first send waits for it.
        let taking_over = {
            let config = config.clone();
            std::thread::Builder::new()
                .name("flowgraph-takeover".into())
                .spawn(move || state_since_checkpoint(&config))
                .map_err(|e| setup(format!("cannot start the state take-over thread: {e}")))?
        };
        let state = StateCheckpoints::new(config.state_checkpoint_every, config.state_writes_per_send);
        Ok(KafkaSink {
            config,
            producer,
            pending: Vec::new(),
            resume_after,
            state_partition,
            stats: KafkaSinkStats::default(),
            open: None,
            state,
            taking_over: Some(taking_over),
            committed: resume_after,
        })
    }

    /// Waits for the take-over of the keys changed since the last checkpoint, if it is still
    /// reading (the first send and [`KafkaSink::finish`] call this).
    pub fn take_over(&mut self) -> Result<(), KafkaSinkError> {
        let Some(taking_over) = self.taking_over.take() else { return Ok(()) };
        let setup = |message: String| KafkaSinkError::Setup { brokers: self.config.brokers.clone(), message };
        let taken = taking_over.join().map_err(|_| setup("the state take-over thread panicked".into()))?;
        self.state =
            taken.map_err(|e| setup(format!("taking over the state changes since the last checkpoint: {e}")))?;
        self.stats.pending_state_keys = self.state.pending() as u64;
        Ok(())
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
        self.take_over()?;
        if self.open.is_none() {
            let first = batches[0].1;
            self.producer
                .begin_transaction()
                .map_err(|error| KafkaSinkError::Transaction { progress: first, error })?;
        }
        let sent = self.send_transaction(&batches);
        self.pending.drain(..published);
        self.stats.pending_state_keys = self.state.pending() as u64;
        let counts = match sent {
            Ok(counts) => counts,
            Err(source) => {
                self.abort(progress, &source);
                return Err(KafkaSinkError::Transaction { progress, error: source });
            }
        };
        let open = self.open.get_or_insert_with(OpenTransaction::default);
        open.progress = progress;
        open.updates += published as u64;
        open.messages += counts.messages;
        open.state_writes += counts.state_writes;
        open.checkpoints += counts.checkpoints;
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
        self.stats.checkpoints += open.checkpoints;
        self.committed = Some(progress);
        Ok(())
    }

    /// Commits the open transaction, then writes a last checkpoint if keys changed since the
    /// previous one, so that the state topic alone holds the final graph: the checkpoint of a
    /// clean stop.
    pub fn finish(&mut self) -> Result<(), KafkaSinkError> {
        self.commit()?;
        self.take_over()?;
        let Some(progress) = self.committed.filter(|_| self.state.pending() > 0) else { return Ok(()) };
        let started = Instant::now();
        self.producer.begin_transaction().map_err(|error| KafkaSinkError::Transaction { progress, error })?;
        let timestamp = wall_clock_ms();
        let changes = self.state.take_all();
        let sent = changes
            .write(|key, value| self.send(&self.config.state_topic, self.state_partition, Some(key), value, timestamp))
            .and_then(|writes| self.send_checkpoint(progress, timestamp).map(|()| writes));
        let state_writes = match sent {
            Ok(writes) => writes,
            Err(source) => {
                self.abort(progress, &source);
                return Err(KafkaSinkError::Transaction { progress, error: source });
            }
        };
        self.stats.sending += started.elapsed();
        self.stats.pending_state_keys = 0;
        self.open = Some(OpenTransaction { progress, messages: 1, state_writes, checkpoints: 1, ..Default::default() });
        self.commit()
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
    /// topic, and a completed checkpoint's message. Returns what it sent.
    fn send_transaction(&mut self, batches: &[(usize, EventTime)]) -> Result<TransactionCounts, KafkaError> {
        let Some(&(end, _)) = batches.last() else { return Ok(TransactionCounts::default()) };
        let timestamp = wall_clock_ms();
        let max_updates = self.config.max_updates_per_message;
        // Out of `self` while `send` borrows it.
        let mut state = std::mem::replace(&mut self.state, StateCheckpoints::new(0, 1));
        let updates = &self.pending[..end];
        let sent =
            encode_transaction(
                self.config.format,
                max_updates,
                updates,
                batches,
                &mut state,
                |message| match message {
                    TransactionMessage::Delta(payload) => {
                        self.send(&self.config.deltas_topic, Some(0), None, Some(payload), timestamp)
                    }
                    TransactionMessage::State { key, value } => {
                        self.send(&self.config.state_topic, self.state_partition, Some(key), value, timestamp)
                    }
                    TransactionMessage::Checkpoint(progress) => self.send_checkpoint(progress, timestamp),
                },
            );
        self.state = state;
        sent
    }

    /// Queues the checkpoint message of `progress` on the delta topic.
    fn send_checkpoint(&self, progress: EventTime, timestamp: i64) -> Result<(), KafkaError> {
        let mark = progress.to_string();
        let headers = OwnedHeaders::new().insert(Header { key: CHECKPOINT_HEADER, value: Some(mark.as_str()) });
        let record: BaseRecord<'_, [u8], [u8]> = BaseRecord::to(&self.config.deltas_topic)
            .partition(0)
            .timestamp(timestamp)
            .payload(&[][..])
            .headers(headers);
        self.queue(record)
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
        self.queue(record)
    }

    /// Hands `record` to the producer, waiting while its queue is full.
    fn queue(&self, mut record: BaseRecord<'_, [u8], [u8]>) -> Result<(), KafkaError> {
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
            // Every hand-over is published: the checkpoint of a clean stop.
            let finished = sink.finish();
            let stats = KafkaSinkStats { thread_cpu: cpu.elapsed(), ..sink.stats().clone() };
            *shared.lock().unwrap_or_else(|e| e.into_inner()) = stats;
            finished
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

    /// Publishes everything handed over and a last state checkpoint, then stops the thread.
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
    /// The checkpoint message of a mark, after the checkpoint's state writes: an empty delta
    /// message with [`CHECKPOINT_HEADER`].
    Checkpoint(EventTime),
}

/// Encodes a transaction's part of one send and hands its messages to `send` in the order they
/// are to be sent. For each batch (`batches`: where each ends in `updates`, and its mark): its
/// updates in messages of at most `max_updates` updates and [`MAX_MESSAGE_BYTES`], then its
/// mark. The state writes follow [`StateCheckpoints`]: when the send's last mark reaches the
/// next checkpoint, each key whose last update is in the send is written after its batch's
/// mark (its value, or a tombstone), and the keys changed earlier are set aside to be written
/// as of that mark; otherwise the send's last updates are held. Then up to the per-send
/// number of set-aside keys is written, and after the last of them the checkpoint message.
/// Returns how many delta messages and state writes it handed over, and whether it completed
/// a checkpoint. Pure, so tests and benchmarks run it without a broker.
pub fn encode_transaction<E>(
    format: DeltaFormat,
    max_updates: usize,
    updates: &[Output],
    batches: &[(usize, EventTime)],
    state: &mut StateCheckpoints,
    mut send: impl FnMut(TransactionMessage<'_>) -> Result<(), E>,
) -> Result<TransactionCounts, E> {
    let mut last = last_updates(updates);
    let checkpoint = batches.last().is_some_and(|&(_, progress)| state.due(progress));
    if checkpoint {
        // Updated again in this send: the writes below have their values.
        for update in &last {
            state.changes.forget(update);
        }
    } else {
        // The writes below need `last` in position order only at a checkpoint.
        state.changes.set_all(&mut last);
    }
    let mut state_writes = last.iter().filter(|_| checkpoint).peekable();
    let mut counts =
        TransactionCounts { state_writes: if checkpoint { last.len() as u64 } else { 0 }, ..Default::default() };
    let mut start = 0usize;
    let mut spans = Vec::new();
    // One buffer for every key, and one for the values not taken from a line: each is handed
    // over (and copied by librdkafka) before the next.
    let (mut key, mut encoded) = (Vec::new(), Vec::new());
    for &(end, progress) in batches {
        // JSON lines embed each record's state value: where, so it is not encoded twice.
        spans.clear();
        let spans_wanted = checkpoint.then_some(&mut spans);
        let mut messages =
            split_messages(format, &updates[start..end], max_updates.max(1), MAX_MESSAGE_BYTES, spans_wanted);
        messages.push(encode(format, &[Output::Progress(progress)]));
        for payload in &messages {
            send(TransactionMessage::Delta(payload))?;
        }
        counts.messages += messages.len() as u64;
        while let Some(update) = state_writes.next_if(|update| update.position < end) {
            key.clear();
            write_state_key(update.record, &mut key);
            let value = match (update.present, spans[update.position - start]) {
                (false, _) => None,
                (true, Some(span)) => Some(&messages[span.message][span.start..span.end]),
                (true, None) => {
                    encoded.clear();
                    write_record(update.record, &mut encoded);
                    Some(encoded.as_slice())
                }
            };
            send(TransactionMessage::State { key: &key, value })?;
        }
        start = end;
    }
    if let Some(&(_, progress)) = batches.last().filter(|_| checkpoint) {
        state.set_aside(progress);
    }
    let Some(draining) = state.draining.as_mut() else { return Ok(counts) };
    let now = batches.last().map_or(draining.progress, |&(_, progress)| progress);
    let take = draining.due(now, state.every).min(state.writes_per_send);
    // From the end: draining the front would move every key still set aside, at each send.
    let rest = draining.records.len() - take;
    counts.state_writes +=
        write_held(draining.records.drain(rest..), |key, value| send(TransactionMessage::State { key, value }))?;
    if draining.records.is_empty() {
        send(TransactionMessage::Checkpoint(draining.progress))?;
        state.draining = None;
        counts.messages += 1;
        counts.checkpoints = 1;
    }
    Ok(counts)
}

/// What [`encode_transaction`] handed over.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TransactionCounts {
    /// Delta messages (update batches, marks, checkpoint messages).
    pub messages: u64,
    /// State-topic writes.
    pub state_writes: u64,
    /// Checkpoints completed (their message sent).
    pub checkpoints: u64,
}

/// When the state topic is written, and what is held until then. A checkpoint is due when a
/// send's last mark reaches `next`: the send writes its own keys, and the keys changed before
/// it are set aside, with their values then, to be written in the sends that follow, spread
/// over half an interval of event time and at most `writes_per_send` a send (a checkpoint of
/// every live key at once holds up the marks behind it: [`Draining::due`]). The checkpoint
/// message follows the last of them; keys changed meanwhile are held for the next
/// checkpoint, due `every` after this one's mark.
#[derive(Debug)]
pub struct StateCheckpoints {
    /// Keys changed since the last checkpoint's mark.
    changes: StateChanges,
    /// A checkpoint being written: its mark, and the keys set aside and not written yet.
    draining: Option<Draining>,
    /// The mark a send must reach for the next checkpoint.
    next: EventTime,
    every: EventTime,
    writes_per_send: usize,
}

#[derive(Debug)]
struct Draining {
    progress: EventTime,
    /// Keys set aside, and those not written yet.
    total: usize,
    records: Vec<(GraphRecord, bool)>,
}

impl Draining {
    /// How many more set-aside keys are due by mark `now`: in proportion to the event time
    /// since the checkpoint's mark, all of them half an interval after it. A checkpoint of
    /// every live key in a few sends (up to the per-send number, 16,384) still held up the marks
    /// behind it (bench-kafka, medium: p99 465-655 ms in the tenths after the checkpoint
    /// against 203-282 ms in the others); spread over half an interval, the writes go at a
    /// lower rate than writing the state at every send did.
    fn due(&self, now: EventTime, every: EventTime) -> usize {
        let spread = every / 2;
        let elapsed = now.saturating_sub(self.progress);
        let due = if elapsed >= spread {
            self.total
        } else {
            (self.total as u128 * u128::from(elapsed) / u128::from(spread)) as usize
        };
        due.saturating_sub(self.total - self.records.len())
    }
}

impl StateCheckpoints {
    /// Checkpoints every `every` of event time (0: at every send), writing at most
    /// `writes_per_send` set-aside keys per send; the first send checkpoints.
    pub fn new(every: EventTime, writes_per_send: usize) -> Self {
        StateCheckpoints {
            changes: StateChanges::default(),
            draining: None,
            next: 0,
            every,
            writes_per_send: writes_per_send.max(1),
        }
    }

    fn due(&self, progress: EventTime) -> bool {
        self.draining.is_none() && progress >= self.next
    }

    fn set_aside(&mut self, progress: EventTime) {
        let records: Vec<_> = std::mem::take(&mut self.changes).table.into_iter().collect();
        self.draining = Some(Draining { progress, total: records.len(), records });
        self.next = progress.saturating_add(self.every);
    }

    /// Keys held: changed since the last checkpoint, or set aside and not written yet.
    pub fn pending(&self) -> usize {
        self.changes.len() + self.draining.as_ref().map_or(0, |d| d.records.len())
    }

    /// Takes every held key with its latest value (a set-aside key changed since is held at
    /// its new value): what a last checkpoint writes.
    fn take_all(&mut self) -> StateChanges {
        let mut all = std::mem::take(&mut self.changes);
        for (record, present) in self.draining.take().map(|d| d.records).unwrap_or_default() {
            all.set_if_absent(record, present);
        }
        all
    }
}

/// The last update of each state key since the last checkpoint: what the next checkpoint
/// writes. It holds the records (their texts shared with the job's), not encoded values:
/// ~100 bytes a key, and each value is encoded once, when written.
#[derive(Default)]
struct StateChanges {
    /// Each key's last record, and whether it is present after it (else a tombstone).
    table: HashTable<(GraphRecord, bool)>,
}

impl std::fmt::Debug for StateChanges {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StateChanges").field("keys", &self.table.len()).finish()
    }
}

impl StateChanges {
    /// Keys held.
    fn len(&self) -> usize {
        self.table.len()
    }

    fn hash(record: &GraphRecord) -> u64 {
        StateKey::of(record).hash_one()
    }

    /// Records a key's last update: `record` present after it, or gone.
    #[cfg(test)]
    fn set(&mut self, record: &GraphRecord, present: bool) {
        self.set_hashed(Self::hash(record), record, present);
    }

    /// [`StateChanges::set`] with the key's hash already computed.
    fn set_hashed(&mut self, hash: u64, record: &GraphRecord, present: bool) {
        let key = StateKey::of(record);
        let same_key = |(other, _): &(GraphRecord, bool)| StateKey::of(other) == key;
        match self.table.entry(hash, same_key, |(other, _)| Self::hash(other)) {
            Entry::Occupied(mut entry) => *entry.get_mut() = (record.clone(), present),
            Entry::Vacant(entry) => {
                entry.insert((record.clone(), present));
            }
        }
    }

    /// Records each key's last update of a send (each key once), reordering `last` by the
    /// table's buckets first. With every live key held (~100,000 on the medium fleet, 88-byte
    /// buckets), a look-up in update order cost two cache misses, its control bytes and its
    /// bucket: ~20% of the sink thread's CPU in bench-kafka. In bucket order the look-ups
    /// walk the table one way.
    fn set_all(&mut self, last: &mut [LastUpdate<'_>]) {
        // hashbrown starts probing at `hash & (buckets - 1)` and holds 7/8 of its buckets:
        // a wrong guess costs locality, not correctness. Insertions that grow the table
        // midway leave the order sorted within each half.
        let buckets = (self.table.capacity() * 8 / 7).max(1).next_power_of_two();
        let mask = (buckets - 1) as u64;
        radsort::sort_by_key(last, |update| update.hash & mask);
        for update in last.iter() {
            self.set_hashed(update.hash, update.record, update.present);
        }
    }

    /// Holds `record` unless its key is held already (with a later update).
    fn set_if_absent(&mut self, record: GraphRecord, present: bool) {
        let key = StateKey::of(&record);
        let hash = Self::hash(&record);
        if self.table.find(hash, |(other, _)| StateKey::of(other) == key).is_none() {
            self.table.insert_unique(hash, (record, present), |(other, _)| Self::hash(other));
        }
    }

    /// Forgets the key of an update's record, if held.
    fn forget(&mut self, update: &LastUpdate<'_>) {
        let key = StateKey::of(update.record);
        if let Ok(entry) = self.table.find_entry(update.hash, |(other, _)| StateKey::of(other) == key) {
            entry.remove();
        }
    }

    /// Records the last update of each key in `outputs` (in time order), as a send does.
    fn apply(&mut self, outputs: &[Output]) {
        self.set_all(&mut last_updates(outputs));
    }

    /// Hands every key's state write to `write` (key, then value or `None` for a tombstone),
    /// in no particular order: each key once. Returns how many.
    fn write<E>(self, write: impl FnMut(&[u8], Option<&[u8]>) -> Result<(), E>) -> Result<u64, E> {
        write_held(self.table, write)
    }
}

/// Hands each held key's state write to `write` (key, then value or `None` for a tombstone).
/// Returns how many.
fn write_held<E>(
    held: impl IntoIterator<Item = (GraphRecord, bool)>,
    mut write: impl FnMut(&[u8], Option<&[u8]>) -> Result<(), E>,
) -> Result<u64, E> {
    let (mut key, mut value, mut count) = (Vec::new(), Vec::new(), 0);
    for (record, present) in held {
        key.clear();
        write_state_key(&record, &mut key);
        value.clear();
        if present {
            write_record(&record, &mut value);
        }
        write(&key, present.then_some(value.as_slice()))?;
        count += 1;
    }
    Ok(count)
}

/// A state key's last update in a send.
#[derive(Debug, Clone, Copy)]
struct LastUpdate<'a> {
    /// Where it is in the send's updates.
    position: usize,
    record: &'a GraphRecord,
    /// Present after it (an insertion: a value), or gone (a retraction: a tombstone).
    present: bool,
    /// The hash of its state key ([`StateKey::hash_one`]).
    hash: u64,
}

/// The last update of each state key. Updates come in time order, retractions before
/// insertions within a time, so the last update of a key wins: a change is -old then +new,
/// a disappearance ends on -old. In the order of the positions: deterministic without
/// comparing strings (sorting the keys as text was ~3% of a Kafka run's profile).
///
/// The table holds only positions (4 bytes each, sized for every update so it never
/// rehashes); keys are compared through the records. A map from borrowed keys to
/// (position, record) entries, ~100 bytes each, was ~20% of the sink's thread in bench-kafka's
/// throughput phase (transactions of 100,000s of updates), in probing and comparing keys.
fn last_updates(updates: &[Output]) -> Vec<LastUpdate<'_>> {
    let update_at = |position: u32| match &updates[position as usize] {
        Output::Update { diff, record, .. } => (record, *diff),
        Output::Progress(_) => unreachable!("only updates' positions are in the table"),
    };
    let record_at = |position: u32| update_at(position).0;
    let mut last: HashTable<u32> = HashTable::with_capacity(updates.len());
    // Each update's key hash, by position, for the held keys' table: kept, not computed again
    // from the texts.
    let mut hashes = vec![0u64; updates.len()];
    for (position, output) in updates.iter().enumerate() {
        let Output::Update { record, .. } = output else { continue };
        let key = StateKey::of(record);
        let hash = key.hash_one();
        hashes[position] = hash;
        let position = u32::try_from(position).expect("a transaction holds fewer than 2^32 updates");
        let same_key = |&other: &u32| StateKey::of(record_at(other)) == key;
        match last.entry(hash, same_key, |&other| StateKey::of(record_at(other)).hash_one()) {
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
            let position = position as usize;
            LastUpdate { position, record, present: diff > 0, hash: hashes[position] }
        })
        .collect()
}

/// What identifies a row or an edge on the state topic, borrowed from the record. Texts are
/// compared as shared texts: the same allocation is equal without reading it (the job and a
/// [`DeltaDecoder`] share each distinct text), which spares a cache miss per text when a key
/// is found in a large table.
#[derive(PartialEq, Eq, Hash)]
enum StateKey<'a> {
    Edge(&'a Text, &'a Text),
    Row(&'a Text, flowgraph_schema::Upid, &'a Text, std::net::IpAddr),
}

impl<'a> StateKey<'a> {
    /// The hash every table of state keys uses: `last_updates`' positions and the held keys,
    /// which take their hashes from it.
    fn hash_one(&self) -> u64 {
        FxBuildHasher.hash_one(self)
    }

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
    (state_key(record), String::from_utf8(state_value(record)).expect("JSON is UTF-8"))
}

fn state_key(record: &GraphRecord) -> String {
    let mut key = Vec::new();
    write_state_key(record, &mut key);
    String::from_utf8(key).expect("JSON is UTF-8")
}

/// Appends a record's state key to `out`. The upid and the address serialize as the strings
/// their `Display` gives, without a `String` of their own.
pub fn write_state_key(record: &GraphRecord, out: &mut Vec<u8>) {
    // Written as the delta lines are (deltas.rs, `write_line`); a test holds the bytes to
    // serde_json's, which compaction depends on: a key must not change its bytes.
    match record {
        GraphRecord::Edge(e) => {
            out.extend_from_slice(b"[\"edge\",");
            write_text(&e.from_entity, out);
            out.push(b',');
            write_text(&e.to_entity, out);
        }
        GraphRecord::Row(r) => {
            out.extend_from_slice(b"[\"row\",");
            write_text(&r.from_entity, out);
            out.push(b',');
            write_upid(&r.upid, out);
            out.push(b',');
            write_text(&r.cmdline, out);
            out.push(b',');
            write_address(&r.remote_addr, out);
        }
    }
    out.push(b']');
}

fn state_value(record: &GraphRecord) -> Vec<u8> {
    let mut value = Vec::new();
    write_record(record, &mut value);
    value
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

/// Decodes a delta message (either format). To decode many, keep a [`DeltaDecoder`] and use
/// [`decode_with`]: it shares texts between the messages' records.
pub fn decode(payload: &[u8]) -> Result<Vec<Output>, String> {
    decode_with(&mut DeltaDecoder::default(), payload)
}

/// Decodes a delta message (either format), JSON lines through `decoder`.
pub fn decode_with(decoder: &mut DeltaDecoder, payload: &[u8]) -> Result<Vec<Output>, String> {
    if let Some(body) = payload.strip_prefix(&BINCODE_MAGIC) {
        let (outputs, _) =
            bincode::serde::decode_from_slice(body, bincode::config::standard().with_limit::<{ 64 * 1024 * 1024 }>())
                .map_err(|e| e.to_string())?;
        return Ok(outputs);
    }
    payload.split(|&b| b == b'\n').filter(|line| !line.trim_ascii().is_empty()).map(|line| decoder.line(line)).collect()
}

/// The progress marks of a delta message, in order. JSON lines are parsed only when they are
/// marks (`{"progress":P}`; the sink writes each line's fields in a fixed order): the sink's
/// start and a bootstrap look back through thousands of messages of up to 5,000 updates for a
/// mark, and bench-kafka's reader looks at every message on the cores of the run it measures.
pub fn progress_marks(payload: &[u8]) -> Result<Vec<EventTime>, String> {
    let mark = |output| match output {
        Output::Progress(p) => Some(p),
        Output::Update { .. } => None,
    };
    if payload.starts_with(&BINCODE_MAGIC) {
        return Ok(decode(payload)?.into_iter().filter_map(mark).collect());
    }
    let mut decoder = DeltaDecoder::default();
    payload
        .split(|&b| b == b'\n')
        .filter(|line| line.starts_with(b"{\"progress\":"))
        .map(|line| decoder.line(line).map(mark))
        .filter_map(Result::transpose)
        .collect()
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
    let reader = DeltaReader::new(brokers, deltas_topic, options)?;
    let (low, high) = reader.watermarks()?;
    reader.find_last(low, high, |message| Ok(progress_marks(message.payload().unwrap_or_default())?.last().copied()))
}

/// A completed checkpoint: once its message was committed, the state topic held the graph as of
/// `progress`; the deltas after `offset` (the message of that progress mark) bring it up to
/// date.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Checkpoint {
    /// The offset of the message that holds the checkpoint's progress mark.
    pub offset: i64,
    /// The progress mark.
    pub progress: EventTime,
}

/// The last checkpoint completed on the delta topic before offset `before` (its end when
/// `None`): its message's mark, found again among the deltas before the message (a checkpoint
/// is written over several sends, so deltas of later marks can come between). `None` when it
/// has none: a topic that a version writing the state topic at every transaction wrote, or an
/// empty one.
pub fn last_checkpoint(
    brokers: &str,
    deltas_topic: &str,
    options: &BTreeMap<String, String>,
    before: Option<i64>,
) -> Result<Option<Checkpoint>, String> {
    let reader = DeltaReader::new(brokers, deltas_topic, options)?;
    let (low, high) = reader.watermarks()?;
    let Some(marked) = reader.find_last(low, before.unwrap_or(high).min(high), checkpoint_of)? else {
        return Ok(None);
    };
    let mark = reader.find_last(low, marked.offset, |message| {
        let holds_mark = progress_marks(message.payload().unwrap_or_default())?.contains(&marked.progress);
        Ok(holds_mark.then(|| message.offset()))
    })?;
    let offset = mark.ok_or_else(|| {
        format!(
            "{deltas_topic}: the checkpoint at offset {} names progress mark {}, which no earlier message holds \
             (deleted by retention?)",
            marked.offset, marked.progress
        )
    })?;
    Ok(Some(Checkpoint { offset, progress: marked.progress }))
}

/// The checkpoint a delta message completes, if it has [`CHECKPOINT_HEADER`]: its own offset
/// and the mark.
fn checkpoint_of(message: &BorrowedMessage<'_>) -> Result<Option<Checkpoint>, String> {
    let Some(headers) = message.headers() else { return Ok(None) };
    let Some(header) = headers.iter().find(|h| h.key == CHECKPOINT_HEADER) else { return Ok(None) };
    let mark = header.value.and_then(|v| std::str::from_utf8(v).ok()).and_then(|v| v.parse().ok());
    let progress = mark.ok_or_else(|| {
        format!("offset {}: header {CHECKPOINT_HEADER} is not a progress mark: {:?}", message.offset(), header.value)
    })?;
    Ok(Some(Checkpoint { offset: message.offset(), progress }))
}

/// How often a long take-over logs how far it has read.
const TAKE_OVER_REPORT_EVERY: Duration = Duration::from_secs(10);

/// What a starting sink takes over from the delta topic: the last updates of the keys changed
/// since the last completed checkpoint (the deltas after its mark; a checkpoint being written
/// when the last run stopped is among them), and the mark the next checkpoint is due at.
/// Without a checkpoint there is nothing to take over (the state topic was written at every
/// transaction, or nothing was written), and the first send checkpoints.
fn state_since_checkpoint(config: &KafkaSinkConfig) -> Result<StateCheckpoints, String> {
    let started = Instant::now();
    let mut state = StateCheckpoints::new(config.state_checkpoint_every, config.state_writes_per_send);
    let Some(checkpoint) = last_checkpoint(&config.brokers, &config.deltas_topic, &config.options, None)? else {
        return Ok(state);
    };
    let reader = DeltaReader::new(&config.brokers, &config.deltas_topic, &config.options)?;
    let (_, high) = reader.watermarks()?;
    let mut reported = Instant::now();
    let (mut messages, mut decoder) = (0u64, DeltaDecoder::default());
    reader.read(checkpoint.offset + 1, high, |message| {
        messages += 1;
        state.changes.apply(&decode_with(&mut decoder, message.payload().unwrap_or_default())?);
        if reported.elapsed() >= TAKE_OVER_REPORT_EVERY {
            reported = Instant::now();
            let total = high - checkpoint.offset - 1;
            tracing::info!(topic = %config.deltas_topic, messages, total, keys = state.pending(), "taking over");
        }
        Ok(())
    })?;
    state.next = checkpoint.progress.saturating_add(config.state_checkpoint_every);
    tracing::info!(
        topic = %config.deltas_topic,
        checkpoint = checkpoint.progress,
        messages,
        keys = state.pending(),
        seconds = started.elapsed().as_secs_f64(),
        "took over the state changes since the last checkpoint"
    );
    Ok(state)
}

/// Hands each committed message of the delta topic from offset `start` up to `high` to
/// `each`, in order. It ends at `high` or at the partition's end, whichever comes first: a
/// stretch that ends on transaction markers has no message to end on.
pub fn read_deltas(
    brokers: &str,
    deltas_topic: &str,
    options: &BTreeMap<String, String>,
    start: i64,
    high: i64,
    each: impl FnMut(&BorrowedMessage<'_>) -> Result<(), String>,
) -> Result<(), String> {
    DeltaReader::new(brokers, deltas_topic, options)?.read(start, high, each)
}

/// A `read_committed` reader of the delta topic's partition, for the sink's start and for
/// consumers that bootstrap.
struct DeltaReader {
    consumer: BaseConsumer<ReadsToTheEnd>,
    topic: String,
}

impl DeltaReader {
    fn new(brokers: &str, deltas_topic: &str, options: &BTreeMap<String, String>) -> Result<Self, String> {
        let mut c = client(brokers, &BTreeMap::new());
        c.set("group.id", format!("flowgraph-resume-{deltas_topic}"))
            .set("enable.auto.commit", "false")
            .set("isolation.level", "read_committed")
            .set("enable.partition.eof", "true")
            // Read as fast as it decodes: not paused 1 s whenever librdkafka's queue is full
            // (docs/KAFKA.md, "Restart and bootstrap").
            .set("fetch.queue.backoff.ms", "10")
            // A read that ends at the committed end (on a commit marker, which it never sees)
            // learns so from a fetch that returns nothing: not after the broker waited 500 ms
            // (the default) for data.
            .set("fetch.wait.max.ms", "10");
        for (key, value) in options {
            c.set(key, value);
        }
        let consumer = c.create_with_context(ReadsToTheEnd).map_err(|e| format!("cannot create consumer: {e}"))?;
        Ok(DeltaReader { consumer, topic: deltas_topic.to_string() })
    }

    /// The partition's first and next offsets.
    fn watermarks(&self) -> Result<(i64, i64), String> {
        let deadline = Instant::now() + TIMEOUT;
        loop {
            use rdkafka::types::RDKafkaErrorCode::{LeaderNotAvailable, NotLeaderForPartition};
            match self.consumer.fetch_watermarks(&self.topic, 0, TIMEOUT) {
                Ok(watermarks) => return Ok(watermarks),
                // A topic created a moment ago (ensure_topics) may not have its leader yet: seen
                // in CI as "NotLeaderForPartition" right after the sink created the topics.
                Err(KafkaError::MetadataFetch(NotLeaderForPartition | LeaderNotAvailable))
                    if Instant::now() < deadline =>
                {
                    std::thread::sleep(Duration::from_millis(100));
                }
                Err(e) => return Err(format!("cannot read offsets of {}: {e}", self.topic)),
            }
        }
    }

    /// Hands each committed message from offset `start` up to `high` to `each`, in order.
    fn read(
        &self,
        start: i64,
        high: i64,
        mut each: impl FnMut(&BorrowedMessage<'_>) -> Result<(), String>,
    ) -> Result<(), String> {
        if start >= high {
            return Ok(());
        }
        let mut assignment = TopicPartitionList::new();
        assignment.add_partition_offset(&self.topic, 0, Offset::Offset(start)).map_err(|e| e.to_string())?;
        self.consumer.assign(&assignment).map_err(|e| e.to_string())?;
        loop {
            match self.consumer.poll(TIMEOUT) {
                Some(Ok(message)) if message.offset() < high => {
                    each(&message)?;
                    if message.offset() + 1 >= high {
                        return Ok(());
                    }
                }
                // Past `high`, or the end (a transactional topic ends on a commit marker,
                // which a read_committed reader never sees).
                Some(Ok(_)) | Some(Err(KafkaError::PartitionEOF(_))) => return Ok(()),
                Some(Err(e)) => return Err(format!("reading {}: {e}", self.topic)),
                None => return Err(format!("timed out reading {}", self.topic)),
            }
        }
    }

    /// The last thing `find` finds in a message below offset `high`: reads back from `high`
    /// in windows growing 4 times each, so a recent find costs one small read.
    fn find_last<T>(
        &self,
        low: i64,
        high: i64,
        mut find: impl FnMut(&BorrowedMessage<'_>) -> Result<Option<T>, String>,
    ) -> Result<Option<T>, String> {
        let (mut start, mut step) = (high, 64);
        while start > low {
            let end = start;
            start = (start - step).max(low);
            step *= 4;
            let mut last = None;
            self.read(start, end, |message| {
                if let Some(found) = find(message)? {
                    last = Some(found);
                }
                Ok(())
            })?;
            if last.is_some() {
                return Ok(last);
            }
        }
        Ok(None)
    }
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
        let mut state = StateCheckpoints::new(0, usize::MAX);
        encode_transaction::<()>(DeltaFormat::Json, 1000, updates, &batch, &mut state, |message| {
            if let TransactionMessage::State { key, value } = message {
                writes.push((text(key), value.map(text)));
            }
            Ok(())
        })
        .unwrap();
        writes
    }

    /// Every message of one send, as text: `delta <payload>`, `state <key> <value|tombstone>`,
    /// `checkpoint <mark>`.
    fn send_messages(updates: &[Output], batches: &[(usize, EventTime)], state: &mut StateCheckpoints) -> Vec<String> {
        let text = |bytes: &[u8]| String::from_utf8(bytes.to_vec()).unwrap();
        let mut messages = Vec::new();
        encode_transaction::<()>(DeltaFormat::Json, 1000, updates, batches, state, |message| {
            messages.push(match message {
                TransactionMessage::Delta(payload) => format!("delta {}", text(payload).trim_end()),
                TransactionMessage::State { key, value } => {
                    format!("state {} {}", text(key), value.map_or("tombstone".into(), text))
                }
                TransactionMessage::Checkpoint(mark) => format!("checkpoint {mark}"),
            });
            Ok(())
        })
        .unwrap();
        messages
    }

    #[test]
    fn a_checkpoint_writes_every_key_changed_since_the_last_one_once_then_its_message() {
        let edge = |to: &str, sent| {
            GraphRecord::Edge(Edge { from_entity: "a".into(), to_entity: to.into(), bytes_sent: sent, bytes_recv: 0 })
        };
        let update = |time, diff, record| Output::Update { time, diff, record };
        let state_writes = |sent: &[String]| -> Vec<String> {
            let mut writes: Vec<String> =
                sent.iter().filter_map(|m| m.strip_prefix("state ")).map(String::from).collect();
            writes.sort_unstable();
            writes
        };
        // Checkpoints every 10 of event time, two earlier keys per send.
        let mut state = StateCheckpoints::new(10, 2);
        // The first send checkpoints (nothing earlier: its message at once).
        let sent = send_messages(&[update(1, 1, edge("z", 1))], &[(1, 2)], &mut state);
        assert_eq!(state_writes(&sent).len(), 1, "{sent:?}");
        assert_eq!(sent.last().unwrap(), "checkpoint 2");
        // Between checkpoints: deltas only; the keys' last updates are held.
        let first = [
            update(2, 1, edge("b", 5)),
            update(2, 1, edge("c", 1)),
            update(2, 1, edge("d", 1)),
            update(2, 1, edge("e", 1)),
        ];
        let sent = send_messages(&first, &[(4, 3)], &mut state);
        assert!(sent.iter().all(|m| m.starts_with("delta ")), "{sent:?}");
        let second = [update(3, -1, edge("c", 1)), update(3, -1, edge("d", 1)), update(3, 1, edge("d", 2))];
        send_messages(&second, &[(3, 4)], &mut state);
        assert_eq!(state.pending(), 4, "a key changed twice is held once");
        // The checkpoint's send (mark 12): its own key with its value after it, after the mark;
        // the three keys set aside are due over half an interval (5), two a send at most.
        let third = [update(11, -1, edge("b", 5)), update(11, 1, edge("b", 9))];
        let sent = send_messages(&third, &[(2, 12)], &mut state);
        let mark = sent.iter().position(|m| m == r#"delta {"progress":12}"#).unwrap();
        assert!(
            sent[mark + 1].starts_with(r#"state ["edge","a","b"] "#) && sent[mark + 1].contains(r#""bytes_sent":9"#)
        );
        assert_eq!(sent.len(), mark + 2, "none set aside is due at the checkpoint's mark: {sent:?}");
        // Mark 15, 3/5 of the way: one due. A change meanwhile is held for the next checkpoint.
        let sent = send_messages(&[update(12, 1, edge("c", 3))], &[(1, 15)], &mut state);
        let mut written = state_writes(&sent);
        assert_eq!(written.len(), 1, "{sent:?}");
        assert!(!sent.iter().any(|m| m.starts_with("checkpoint")), "the checkpoint is not complete: {sent:?}");
        // Mark 17, past half the interval: the other two, then the checkpoint message of 12.
        let sent = send_messages(&[], &[(0, 17)], &mut state);
        written.extend(state_writes(&sent));
        written.sort_unstable();
        assert_eq!(written.len(), 3, "{sent:?}");
        assert_eq!(written[0], r#"["edge","a","c"] tombstone"#, "the value at mark 12");
        assert!(written[1].starts_with(r#"["edge","a","d"] "#) && written[1].contains(r#""bytes_sent":2"#));
        assert!(written[2].starts_with(r#"["edge","a","e"] "#), "{written:?}");
        assert_eq!(sent.last().unwrap(), "checkpoint 12", "{sent:?}");
        assert_eq!(state.pending(), 1);
        // Not due before mark 22; then the held key is set aside and written by mark 27.
        let sent = send_messages(&[], &[(0, 21)], &mut state);
        assert_eq!(sent, [r#"delta {"progress":21}"#]);
        let sent = send_messages(&[], &[(0, 22)], &mut state);
        assert_eq!(sent, [r#"delta {"progress":22}"#]);
        let sent = send_messages(&[], &[(0, 27)], &mut state);
        assert_eq!(state_writes(&sent).len(), 1, "{sent:?}");
        assert!(state_writes(&sent)[0].contains(r#""bytes_sent":3"#), "{sent:?}");
        assert_eq!(sent.last().unwrap(), "checkpoint 22");
        assert_eq!(state.pending(), 0);
    }

    #[test]
    fn a_last_checkpoint_takes_the_latest_value_of_a_key_set_aside_and_changed_since() {
        let edge = |from: &str, sent| {
            GraphRecord::Edge(Edge { from_entity: from.into(), to_entity: "b".into(), bytes_sent: sent, bytes_recv: 0 })
        };
        let mut state = StateCheckpoints::new(10, 1);
        let records = vec![(edge("a", 5), true), (edge("x", 1), true)];
        state.draining = Some(Draining { progress: 11, total: 2, records });
        state.changes.set(&edge("a", 7), true);
        assert_eq!(state.pending(), 3);
        let text = |bytes: &[u8]| String::from_utf8(bytes.to_vec()).unwrap();
        let mut writes = Vec::new();
        state
            .take_all()
            .write::<()>(|key, value| {
                writes.push(format!("{} {}", text(key), value.map(text).unwrap()));
                Ok(())
            })
            .unwrap();
        writes.sort_unstable();
        assert_eq!(writes.len(), 2, "{writes:?}");
        assert!(writes[0].starts_with(r#"["edge","a","b"] "#) && writes[0].contains(r#""bytes_sent":7"#), "{writes:?}");
        assert!(writes[1].starts_with(r#"["edge","x","b"] "#), "{writes:?}");
        assert_eq!(state.pending(), 0);
    }

    proptest::proptest! {
        // Keys are written by hand, for speed; compaction and consumers depend on serde_json's bytes.
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

        // Values too: a consumer or a later version may compare them as bytes.
        #[test]
        fn state_values_are_the_bytes_serde_json_writes(record in crate::deltas::tests::any_record()) {
            proptest::prop_assert_eq!(String::from_utf8(state_value(&record)).unwrap(), serde_json_value(&record));
        }
    }

    /// A state value as serde_json writes it: the reference for the hand-written values.
    fn serde_json_value(record: &GraphRecord) -> String {
        match record {
            GraphRecord::Edge(e) => serde_json::to_string(&crate::deltas::EdgeJson::from(e)),
            GraphRecord::Row(r) => serde_json::to_string(&crate::deltas::RowJson::from(r)),
        }
        .unwrap()
    }

    #[test]
    fn progress_marks_are_found_in_both_delta_formats() {
        use flowgraph_pipeline::Edge;
        let edge = Edge { from_entity: "a".into(), to_entity: "b".into(), bytes_sent: 1, bytes_recv: 2 };
        let outputs = vec![
            Output::Update { time: 5, diff: 1, record: GraphRecord::Edge(edge) },
            Output::Progress(6),
            Output::Progress(9),
        ];
        for format in [DeltaFormat::Json, DeltaFormat::Bincode] {
            assert_eq!(progress_marks(&encode(format, &outputs)).unwrap(), vec![6, 9], "{format:?}");
        }
        assert!(progress_marks(b"{\"progress\":x}\n").is_err(), "a malformed mark passed");
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
            assert_eq!(taken, serde_json_value(record));
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
