//! `flowgraph metadata`: the Kubernetes metadata source (flowgraph_sources_k8s) as a process.
//!
//! Watches pods, services, EndpointSlices and nodes through the API server (in-cluster service
//! account by default, or --kubeconfig) and writes container, name and progress records as
//! JSON Lines (--out) or as binary frames to a Kafka topic (--to-kafka), keyed `k8s-metadata`
//! so they stay in order on one partition. SIGINT/SIGTERM stop it within a progress interval.

use crate::output::{self, RecordOutput};
use anyhow::Context;
use clap::Args;
use flowgraph_config::parse_duration_ns;
use flowgraph_sources_k8s::{run_blocking, Connect, Options, SOURCE_NAME};
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
    /// Publish the records to this Kafka topic instead (binary frames, key k8s-metadata);
    /// without a value, the pipeline's input topic (kafka.input_topic of --config, else
    /// flowgraph.records), which is where `run` reads them.
    #[arg(long, value_name = "TOPIC", num_args = 0..=1, default_missing_value = "")]
    pub to_kafka: Option<String>,
    /// Bootstrap servers for --to-kafka [default: kafka.brokers of --config, else 127.0.0.1:9092].
    #[arg(long, requires = "to_kafka")]
    pub brokers: Option<String>,
    /// Config file whose [kafka] section gives the brokers and librdkafka options
    /// (security.protocol, sasl.*, ssl.*) for --to-kafka; --brokers wins.
    #[arg(long, requires = "to_kafka")]
    pub config: Option<PathBuf>,
    /// How often a progress record (the source's watermark) is sent, also when idle.
    #[arg(long, default_value = "1s")]
    pub progress_interval: String,
    /// How often every current container and name is sent again ("0s": never), so a
    /// pipeline that rebuilds from the last window of the topic still has them.
    #[arg(long, default_value = "1m")]
    pub reannounce: String,
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
            let kafka = crate::replay::kafka_config(args.config.as_ref(), args.brokers.as_ref())?;
            let topic = if topic.is_empty() { kafka.input_topic.clone() } else { topic.clone() };
            crate::produce::ensure_topic(&kafka, &topic, 1)?;
            RecordOutput::Kafka { producer: output::producer(&kafka)?, topic, key: SOURCE_NAME.to_string() }
        }
        (None, path) => RecordOutput::Jsonl(output::file(path)?),
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
