//! Where record producers (the agent, the metadata source) write: JSON Lines or binary frames
//! to a file or standard output, or binary frames to a Kafka topic under one key.

use anyhow::Context;
use flowgraph_config::KafkaConfig;
use flowgraph_schema::{binary, json, Record};
use rdkafka::client::ClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::types::RDKafkaErrorCode;
use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Counts and logs the messages a broker never acknowledged (after librdkafka's own retries),
/// which a producer would otherwise lose without a word.
#[derive(Debug, Default)]
pub struct DeliveryReport {
    failed: AtomicU64,
}

impl DeliveryReport {
    /// Messages not delivered so far.
    pub fn failed(&self) -> u64 {
        self.failed.load(Ordering::Relaxed)
    }
}

impl ClientContext for DeliveryReport {}

impl ProducerContext for DeliveryReport {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        if let Err((error, message)) = result {
            let failed = self.failed.fetch_add(1, Ordering::Relaxed) + 1;
            metrics::counter!("flowgraph_produce_failures_total").increment(1);
            // The first ones say what is wrong; the counter says how often.
            if failed <= 10 {
                tracing::error!(topic = message.topic(), partition = message.partition(), %error, "a message was not delivered");
            }
        }
    }
}

/// A destination for batches of records.
pub enum RecordOutput {
    /// JSON Lines.
    Jsonl(Box<dyn Write>),
    /// Binary frames (a recording).
    Binary(Box<dyn Write>),
    /// Binary frames, one message per frame, all under `key` (one partition, in order).
    Kafka { producer: ThreadedProducer<DeliveryReport>, topic: String, key: String },
}

/// Standard output for "-", else a new file.
pub fn file(path: &str) -> anyhow::Result<Box<dyn Write>> {
    Ok(if path == "-" {
        Box::new(std::io::stdout())
    } else {
        Box::new(std::io::BufWriter::new(std::fs::File::create(path).with_context(|| format!("creating {path}"))?))
    })
}

/// The settings every record producer shares: idempotent, and keys land where a Java client
/// would put them; then the `[kafka]` section's brokers and librdkafka options (security).
pub fn producer_config(kafka: &KafkaConfig) -> ClientConfig {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", &kafka.brokers)
        .set("enable.idempotence", "true")
        .set("partitioner", "murmur2_random");
    for (key, value) in &kafka.options {
        config.set(key, value);
    }
    config
}

/// A producer with [`producer_config`] that reports undelivered messages.
pub fn producer(kafka: &KafkaConfig) -> anyhow::Result<ThreadedProducer<DeliveryReport>> {
    producer_from(&producer_config(kafka))
}

/// A producer from `config` that reports undelivered messages.
pub fn producer_from(config: &ClientConfig) -> anyhow::Result<ThreadedProducer<DeliveryReport>> {
    config.create_with_context(DeliveryReport::default()).context("creating the Kafka producer")
}

/// Waits up to `timeout` for every message to `topic` to be acknowledged, and fails if any
/// was not delivered (each failure was logged and counted as it happened). Returns as soon as
/// they are: rdkafka's own flush took 100 ms steps (`flush_promptly`), which held
/// `bench-kafka`'s progress reports after a recording ~0.2 s.
pub fn flush_delivered(
    producer: &ThreadedProducer<DeliveryReport>,
    topic: &str,
    timeout: Duration,
) -> anyhow::Result<()> {
    flowgraph_sinks::kafka::flush_promptly(producer, timeout).with_context(|| format!("flushing to {topic}"))?;
    let failed = producer.context().failed();
    if failed > 0 {
        anyhow::bail!("{failed} messages to {topic} were not delivered (see the errors above)");
    }
    Ok(())
}

/// Sends one message, waiting while the producer's queue is full (a slow broker): back-pressure,
/// never a dropped batch.
pub fn send_waiting<C: ProducerContext<DeliveryOpaque = ()> + 'static>(
    producer: &ThreadedProducer<C>,
    mut message: BaseRecord<'_, str, [u8]>,
) -> anyhow::Result<()> {
    loop {
        match producer.send(message) {
            Ok(()) => return Ok(()),
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), returned)) => {
                message = returned;
                std::thread::sleep(Duration::from_millis(5));
            }
            Err((e, returned)) => return Err(e).with_context(|| format!("producing to {}", returned.topic)),
        }
    }
}

impl RecordOutput {
    /// Writes a batch (several frames when it is larger than one frame may be).
    pub fn write(&mut self, records: &[Record]) -> anyhow::Result<()> {
        match self {
            RecordOutput::Jsonl(out) => {
                for record in records {
                    writeln!(out, "{}", json::encode_line(record))?;
                }
                out.flush()?;
            }
            RecordOutput::Binary(out) => {
                let mut frame = Vec::new();
                for chunk in records.chunks(binary::MAX_BATCH_RECORDS) {
                    frame.clear();
                    binary::encode_frame(chunk, &mut frame);
                    out.write_all(&frame)?;
                }
                out.flush()?;
            }
            RecordOutput::Kafka { producer, topic, key } => {
                let mut frame = Vec::new();
                for chunk in records.chunks(binary::MAX_BATCH_RECORDS) {
                    frame.clear();
                    binary::encode_frame(chunk, &mut frame);
                    // These producers stamp records with the wall clock, so the newest record's
                    // time is the message's: retention and time-based seeks see live data.
                    let time_ms = chunk.iter().map(Record::time).max().unwrap_or(0) / 1_000_000;
                    let message = BaseRecord::<str, [u8]>::to(topic).key(key.as_str()).payload(&frame[..]);
                    send_waiting(producer, message.timestamp(time_ms as i64))?;
                }
            }
        }
        Ok(())
    }

    /// Waits until everything written is delivered (Kafka) or flushed.
    pub fn finish(&mut self) -> anyhow::Result<()> {
        match self {
            RecordOutput::Kafka { producer, topic, .. } => flush_delivered(producer, topic, Duration::from_secs(30))?,
            RecordOutput::Jsonl(out) | RecordOutput::Binary(out) => out.flush()?,
        }
        Ok(())
    }
}
