//! `flowgraph metadata`: the Kubernetes metadata source (flowgraph_sources_k8s) as a process.
//!
//! Watches pods, services, EndpointSlices and nodes through the API server (in-cluster service
//! account by default, or --kubeconfig) and writes container, name and progress records as
//! JSON Lines (--out) or as binary frames to a Kafka topic (--to-kafka), keyed `k8s-metadata`
//! so they stay in order on one partition. SIGINT/SIGTERM stop it within a progress interval.

use anyhow::Context;
use clap::Args;
use flowgraph_config::parse_duration_ns;
use flowgraph_schema::{binary, json, Record};
use flowgraph_sources_k8s::{run_blocking, Connect, Options, SOURCE_NAME};
use rdkafka::config::ClientConfig;
use rdkafka::error::KafkaError;
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::types::RDKafkaErrorCode;
use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, Args)]
pub struct MetadataArgs {
    /// Kubeconfig file (its current context); default: the pod's service account (in-cluster).
    #[arg(long)]
    pub kubeconfig: Option<PathBuf>,
    /// Write the records as JSON Lines to FILE; - is standard output (the default without
    /// --to-kafka).
    #[arg(long, conflicts_with = "to_kafka")]
    pub out: Option<String>,
    /// Publish the records to this Kafka topic instead (binary frames, key k8s-metadata).
    #[arg(long, value_name = "TOPIC", num_args = 0..=1, default_missing_value = "flowgraph.metadata")]
    pub to_kafka: Option<String>,
    /// Bootstrap servers for --to-kafka.
    #[arg(long, default_value = "127.0.0.1:9092", requires = "to_kafka")]
    pub brokers: String,
    /// How often a progress record (the source's watermark) is sent, also when idle.
    #[arg(long, default_value = "1s")]
    pub progress_interval: String,
    /// How often every current container and name is sent again ("0s": never), so a
    /// pipeline that rebuilds from the last window of the topic still has them.
    #[arg(long, default_value = "1m")]
    pub reannounce: String,
}

/// Where records go.
enum Sink {
    Jsonl(Box<dyn Write>),
    Kafka { producer: ThreadedProducer<DefaultProducerContext>, topic: String },
}

impl Sink {
    fn write(&mut self, records: &[Record]) -> anyhow::Result<()> {
        match self {
            Sink::Jsonl(out) => {
                for record in records {
                    writeln!(out, "{}", json::encode_line(record))?;
                }
                out.flush()?;
            }
            Sink::Kafka { producer, topic } => {
                let mut frame = Vec::new();
                for chunk in records.chunks(binary::MAX_BATCH_RECORDS) {
                    frame.clear();
                    binary::encode_frame(chunk, &mut frame);
                    let mut message: BaseRecord<'_, str, Vec<u8>> =
                        BaseRecord::to(topic).key(SOURCE_NAME).payload(&frame);
                    loop {
                        match producer.send(message) {
                            Ok(()) => break,
                            // Back-pressure from a slow broker: wait, never drop a change.
                            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), m)) => {
                                message = m;
                                std::thread::sleep(Duration::from_millis(5));
                            }
                            Err((e, _)) => return Err(e).with_context(|| format!("producing to {topic}")),
                        }
                    }
                }
            }
        }
        Ok(())
    }

    fn finish(&mut self) -> anyhow::Result<()> {
        if let Sink::Kafka { producer, topic } = self {
            producer.flush(Duration::from_secs(30)).with_context(|| format!("flushing to {topic}"))?;
        }
        Ok(())
    }
}

pub fn run(args: MetadataArgs) -> anyhow::Result<()> {
    let progress_interval = Duration::from_nanos(parse_duration_ns("--progress-interval", &args.progress_interval)?);
    if progress_interval.is_zero() {
        anyhow::bail!("--progress-interval: must be more than 0s");
    }
    let reannounce = Duration::from_nanos(parse_duration_ns("--reannounce", &args.reannounce)?);
    let options = Options {
        progress_interval,
        reannounce_interval: (!reannounce.is_zero()).then_some(reannounce),
        ..Options::default()
    };
    let connect = match args.kubeconfig {
        Some(path) => Connect::Kubeconfig(path),
        None => Connect::InCluster,
    };
    let mut sink = match (&args.to_kafka, args.out.as_deref().unwrap_or("-")) {
        (Some(topic), _) => {
            crate::produce::ensure_topic(&args.brokers, topic, 1)?;
            let producer = ClientConfig::new()
                .set("bootstrap.servers", &args.brokers)
                .set("enable.idempotence", "true")
                .set("partitioner", "murmur2_random")
                .create()
                .context("creating the Kafka producer")?;
            Sink::Kafka { producer, topic: topic.clone() }
        }
        (None, "-") => Sink::Jsonl(Box::new(std::io::stdout())),
        (None, path) => Sink::Jsonl(Box::new(std::io::BufWriter::new(
            std::fs::File::create(path).with_context(|| format!("creating {path}"))?,
        ))),
    };
    let stop = crate::replay::stop_flag()?;
    let mut written = 0u64;
    let result = run_blocking(connect, &options, stop, |records| {
        written += records.len() as u64;
        sink.write(&records)
    });
    // Flush what was produced even when the watch failed.
    let finished = sink.finish();
    result.context("the Kubernetes metadata source")?;
    finished?;
    tracing::info!(records = written, "flowgraph metadata: stopped");
    Ok(())
}
