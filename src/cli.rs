//! Command-line interface.

use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;

/// Live "who talks to whom" graph of TCP traffic, computed incrementally.
#[derive(Debug, Parser)]
#[command(name = "flowgraph", version, about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Replay a recorded stream (JSON Lines or binary) through the job.
    Replay(ReplayArgs),
    /// Show the graph evolving in the terminal and the live view: this host's live traffic
    /// when eBPF can load (root), otherwise the bundled recording.
    Demo(DemoArgs),
    /// Write a seeded synthetic fleet recording.
    Generate(GenerateArgs),
    /// The long-running service: records from Kafka in, graph deltas and state to Kafka out.
    Run(RunArgs),
    /// The node agent: per-connection bytes from eBPF, as conn_stats records (needs root).
    Agent(AgentArgs),
    /// Print the graph from Kafka: follow the delta topic, or read the state topic (--state).
    Tail(TailArgs),
    /// Write an input topic to a binary recording, for replay.
    Record(RecordArgs),
    /// The live view in a browser: a recording through the embedded job (--input), or a
    /// running pipeline's Kafka topics (--from-kafka), served over HTTP.
    Ui(UiArgs),
    /// Benchmark the in-process job on a recording against a hash-map bound and Pixie-style
    /// recomputation in the same run: throughput, memory per key, latency; targets PASS/FAIL.
    Bench(BenchArgs),
    /// Measure the Kafka path: publish a recording at a fixed pace through `flowgraph run`
    /// (produce-to-readable latency percentiles), then queue it whole and time a run through
    /// it (throughput); prints the Kafka targets PASS or FAIL. With RUST_LOG set, that is the
    /// runs' log filter, and their logs are kept (the directory is printed).
    BenchKafka(BenchKafkaArgs),
    /// Say how an address is named: which source named it, since when, and the alternatives;
    /// from a recording (--input) or a running live view (--url).
    Explain(ExplainArgs),
    /// The Kubernetes metadata source: pods, services, EndpointSlices and nodes as container
    /// and name records (JSON Lines, or a Kafka topic).
    Metadata(crate::metadata::MetadataArgs),
}

/// The names the pipeline finds itself (see docs/NAMES.md); flags override `[names]` of
/// the config file.
#[derive(Debug, Clone, Default, Args)]
pub struct NamingArgs {
    /// Static names: one `ADDRESS-OR-CIDR NAME` per line, longest prefix wins; reread when the
    /// file changes.
    #[arg(long)]
    pub names: Option<PathBuf>,
    /// Ask reverse DNS (PTR) about remote addresses in the background; names arrive later
    /// and rename the edge from then on.
    #[arg(long)]
    pub reverse_dns: bool,
    /// Servers for --reverse-dns as IP:PORT, comma-separated (default: /etc/resolv.conf).
    #[arg(long)]
    pub dns_server: Option<String>,
}

#[derive(Debug, Args)]
pub struct ExplainArgs {
    /// The address to explain (IPv4 or IPv6).
    pub addr: std::net::IpAddr,
    /// Replay this recording and explain the name at its end.
    #[arg(long, conflicts_with = "url", required_unless_present = "url")]
    pub input: Option<PathBuf>,
    /// Ask a running live view (`flowgraph ui` or `demo`), e.g. http://127.0.0.1:8080.
    #[arg(long)]
    pub url: Option<String>,
    /// Bearer token for --url.
    #[arg(long, env = "FLOWGRAPH_UI_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    #[command(flatten)]
    pub query: QueryArgs,
    #[command(flatten)]
    pub naming: NamingArgs,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct BenchArgs {
    /// The recording (flowgraph generate --size smoke|medium|large).
    #[arg(long)]
    pub input: PathBuf,
    #[command(flatten)]
    pub query: QueryArgs,
    /// How often the baselines refresh (event time): the recompute baseline's refresh interval.
    #[arg(long, default_value = "1s")]
    pub refresh: String,
    /// Offered rate of the latency measurement, records per wall-clock second.
    #[arg(long, default_value_t = 200_000)]
    pub rate: u64,
    /// The job's lateness in the latency measurement: `auto` is the records' own arrival
    /// disorder (the most any record arrives behind a later one), so none is late; a shorter
    /// one re-times the records behind it (counted, and the latency target is then not met).
    #[arg(long, default_value = "auto")]
    pub latency_lateness: String,
    /// The job's progress interval in the latency measurement.
    #[arg(long, default_value = "10ms")]
    pub latency_progress_interval: String,
    /// Records pushed in the latency measurement (default: all).
    #[arg(long, default_value_t = usize::MAX, hide_default_value = true)]
    pub latency_records: usize,
    /// Write the figures here as JSON too.
    #[arg(long)]
    pub json: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct BenchKafkaArgs {
    /// The recording to publish.
    #[arg(long)]
    pub input: PathBuf,
    /// Bootstrap servers of a running broker (scripts/kafka start).
    #[arg(long, default_value = "127.0.0.1:9092")]
    pub brokers: String,
    /// Event-time pace of the publication (the offered rate follows from the recording).
    #[arg(long, default_value = "10x")]
    pub speed: String,
    /// Partitions of the input topic.
    #[arg(long, default_value_t = 4)]
    pub partitions: i32,
    /// The pipeline's lateness (event time): `auto` is the recording's own arrival disorder
    /// (the most a record arrives behind a later-stamped one before it); a shorter one makes
    /// records late by construction (counted and printed).
    #[arg(long, default_value = "auto")]
    pub lateness: String,
    /// The pipeline's progress interval (event time).
    #[arg(long, default_value = "100ms")]
    pub progress_interval: String,
    /// The pipeline's `max_updates_per_piece` (default: the config key's): a long jump of the
    /// frontier, as when the throughput phase starts on a queued recording, is handed over in
    /// pieces of about this many updates (docs/KAFKA.md, "The memory of catching up").
    #[arg(long)]
    pub max_updates_per_piece: Option<usize>,
    /// The runs' `[kafka] state_checkpoint` (event time between state-topic checkpoints; `0s`
    /// writes the state topic at every transaction).
    #[arg(long, default_value = "60s")]
    pub state_checkpoint: String,
    /// The runs' `[kafka] delta_format`: `json` (the default, the documented consumer format)
    /// or `bincode` (for machine consumers: half the bytes, lower latency; docs/KAFKA.md).
    #[arg(long, default_value = "json", value_parser = ["json", "bincode"])]
    pub delta_format: String,
    /// A librdkafka property (repeatable) for every Kafka client of the bench and of its runs,
    /// as `[kafka.options]` in a run's config: to size a deployment's settings
    /// (`compression.type=none`, `linger.ms=5`) or reach a secured broker. The figures show
    /// the values, but those of passwords, secrets and inline PEMs as (hidden).
    #[arg(long = "kafka-option", value_name = "KEY=VALUE", value_parser = parse_kafka_option)]
    pub kafka_options: Vec<(String, String)>,
    /// Write the figures here as JSON too.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Keep the run's topics (bench-PID.*) on the broker; by default they are deleted at the
    /// end (the medium stream leaves ~170 MB to ~1 GB on the broker per run and phase).
    #[arg(long)]
    pub keep_topics: bool,
    /// Measure latency only, not also throughput (the whole recording queued, then a
    /// pipeline at full speed).
    #[arg(long)]
    pub no_throughput: bool,
    /// Runs of the latency phase, each on fresh topics; the verdict is on their median p99 (one
    /// build's p99 spread from 210 to 270 ms between runs on a shared machine).
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..))]
    pub latency_runs: u32,
    /// Runs of the throughput phase, each on fresh topics; the verdict is on their median (one
    /// build's runs spread by up to 1.5x on a shared machine).
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..), conflicts_with = "no_throughput")]
    pub throughput_runs: u32,
}

/// Where and how the live view is served.
#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// Address of the live view (HTTP API and web page); port 0 picks a free port. Anything
    /// but a loopback address needs --token.
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub listen: String,
    /// Bearer token the API and /metrics require (the page takes it as /#token=TOKEN).
    #[arg(long, env = "FLOWGRAPH_UI_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
}

#[derive(Debug, Args)]
pub struct UiArgs {
    #[command(flatten)]
    pub query: QueryArgs,
    #[command(flatten)]
    pub naming: NamingArgs,
    #[command(flatten)]
    pub serve: ServeArgs,
    /// A recording (JSON Lines or binary) to replay into the embedded job; - reads standard
    /// input as it arrives.
    #[arg(long, required_unless_present = "from_kafka", conflicts_with = "from_kafka")]
    pub input: Option<PathBuf>,
    /// Event-time speed-up of --input: 60 plays a minute of traffic per second; 0 runs
    /// without pauses.
    #[arg(long, default_value_t = 0.0)]
    pub speed: f64,
    /// Follow a running pipeline instead: bootstrap from its state topic, then apply its
    /// delta topic (names and brokers from the config's [kafka] section).
    #[arg(long)]
    pub from_kafka: bool,
    /// Override kafka.brokers (with --from-kafka).
    #[arg(long, requires = "from_kafka")]
    pub brokers: Option<String>,
    /// Exit when the input ends, instead of serving the final graph until Ctrl-C (with
    /// --from-kafka: once bootstrapped to the delta topic's end, printing the graph's size).
    #[arg(long)]
    pub exit_at_end: bool,
}

#[derive(Debug, Args)]
pub struct TailArgs {
    /// Config file whose [kafka] section names the brokers and topics.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Override kafka.brokers.
    #[arg(long)]
    pub brokers: Option<String>,
    /// Print the current graph from the compacted state topic and exit.
    #[arg(long)]
    pub state: bool,
    /// Stop once the delta topic has been read to its end.
    #[arg(long)]
    pub exit_at_end: bool,
    /// How many edges the table shows.
    #[arg(long, default_value_t = 20)]
    pub top: usize,
}

#[derive(Debug, Args)]
pub struct RecordArgs {
    /// The input topic to record.
    #[arg(long)]
    pub from_kafka: String,
    /// The recording to write (binary format).
    #[arg(long)]
    pub out: PathBuf,
    /// Config file whose [kafka] section names the brokers and options.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Override kafka.brokers.
    #[arg(long)]
    pub brokers: Option<String>,
}

#[derive(Debug, Args)]
pub struct AgentArgs {
    /// How often counters are exported (Pixie: 10s; down to 1s).
    #[arg(long, default_value = "10s")]
    pub export_period: String,
    /// How often the agent reports progress between exports (no records older than now will
    /// come), so the pipeline's frontier trails by this rather than by the export period.
    /// At least 100ms; at or above the export period, progress comes with exports only.
    // The default is the period the pipeline's clock assumes (the schema's
    // `AGENT_PROGRESS_PERIOD_NS`; a test below checks that the two agree).
    #[arg(long, default_value = "1s")]
    pub progress_period: String,
    /// jsonl, binary or kafka.
    #[arg(long, default_value = "jsonl")]
    pub output: String,
    /// File for jsonl/binary output; - is standard output.
    #[arg(long, default_value = "-")]
    pub out: String,
    /// Bootstrap servers for --output kafka [default: kafka.brokers of --config, else 127.0.0.1:9092].
    #[arg(long)]
    pub brokers: Option<String>,
    /// Config file whose [kafka] section gives the brokers and librdkafka options
    /// (security.protocol, sasl.*, ssl.*) and the input topic for --output kafka; --brokers
    /// and --topic win.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Topic for --output kafka [default: kafka.input_topic of --config, where `run` reads,
    /// else flowgraph.records].
    #[arg(long)]
    pub topic: Option<String>,
    /// This node's agent id (the upid's asid); default: derived from /etc/machine-id.
    #[arg(long)]
    pub agent_id: Option<u32>,
    /// Capacity of the kernel's socket map.
    #[arg(long, default_value_t = 65536)]
    pub max_sockets: u32,
    /// Serve Prometheus metrics at http://ADDR/metrics (e.g. 127.0.0.1:9465), and `ok` at
    /// /healthz.
    #[arg(long)]
    pub metrics_addr: Option<String>,
    /// Do not name remote addresses by the DNS answers seen on this host (on by default; needs
    /// CAP_NET_RAW and CAP_BPF, without which the agent says why and goes on without names).
    #[arg(long)]
    pub no_dns_names: bool,
    /// The node name process records carry (group_by node); default: the host name. On
    /// Kubernetes, the pod's spec.nodeName through the downward API.
    #[arg(long, env = "FLOWGRAPH_NODE_NAME")]
    pub node: Option<String>,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub query: QueryArgs,
    #[command(flatten)]
    pub naming: NamingArgs,
    /// Override kafka.brokers.
    #[arg(long)]
    pub brokers: Option<String>,
    /// Serve Prometheus metrics at http://ADDR/metrics (e.g. 127.0.0.1:9464), and at /healthz
    /// `ok`, or 503 while a worker has not come round its loop for 120 s (a liveness probe).
    #[arg(long)]
    pub metrics_addr: Option<String>,
    /// Treat the input as finished once no message has arrived for this long: complete every
    /// time up to the last event time, publish, and exit (batch runs and tests).
    #[arg(long)]
    pub exit_when_idle: Option<String>,
    /// Worker threads in this process (partition p goes to worker p % all workers).
    #[arg(long, default_value_t = 1)]
    pub workers: usize,
    /// Processes in the timely cluster (each with --workers threads).
    #[arg(long, default_value_t = 1)]
    pub processes: usize,
    /// This process's index in the cluster, 0 to --processes - 1.
    #[arg(long, env = "FLOWGRAPH_PROCESS_ID")]
    pub process_id: Option<usize>,
    /// The cluster's addresses: one host:port per line, line i for process i.
    #[arg(long)]
    pub hosts: Option<PathBuf>,
    /// Write the run's status here as JSON Lines (truncated at start), for programs that
    /// drive it: each of this process's workers' {"event":"consuming",...} once it reads (its
    /// partitions assigned, the sink's transactions initialised), and {"event":"stopped",...}
    /// with its counters.
    #[arg(long)]
    pub status_file: Option<PathBuf>,
}

/// Query parameters shared by every command that runs the job. Flags override the config file.
#[derive(Debug, Clone, Args)]
pub struct QueryArgs {
    /// TOML config file (see config/examples/flowgraph.toml).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Remote addresses and CIDRs to keep, comma-separated (default: all).
    #[arg(long)]
    pub ips: Option<String>,
    /// Window length, e.g. 5m.
    #[arg(long)]
    pub window: Option<String>,
    /// Graph node: pod, service, namespace, node, container, host or process.
    #[arg(long)]
    pub group_by: Option<String>,
    /// How far the frontier trails the largest event time seen, e.g. 30s, at most: it moves
    /// sooner once every agent's progress records have passed a time.
    #[arg(long)]
    pub lateness: Option<String>,
    /// Release completed results each time the frontier moves this far (event time).
    #[arg(long)]
    pub progress_interval: Option<String>,
    /// Hand a long jump of the frontier (a start, a backlog) over in pieces of about this many
    /// updates, each ending at a progress interval: less memory at once, more, smaller
    /// transactions (docs/KAFKA.md, "The memory of catching up").
    #[arg(long)]
    pub max_updates_per_piece: Option<usize>,
}

impl QueryArgs {
    /// The query's flags given on the command line (`--config` aside): what a command that
    /// runs no query of its own refuses.
    pub fn given(&self) -> Vec<&'static str> {
        given([
            ("--ips", self.ips.is_some()),
            ("--window", self.window.is_some()),
            ("--group-by", self.group_by.is_some()),
            ("--lateness", self.lateness.is_some()),
            ("--progress-interval", self.progress_interval.is_some()),
            ("--max-updates-per-piece", self.max_updates_per_piece.is_some()),
        ])
    }
}

impl NamingArgs {
    /// The naming flags given on the command line.
    pub fn given(&self) -> Vec<&'static str> {
        given([
            ("--names", self.names.is_some()),
            ("--reverse-dns", self.reverse_dns),
            ("--dns-server", self.dns_server.is_some()),
        ])
    }
}

/// The flags of `flags` that were given.
pub fn given<const N: usize>(flags: [(&'static str, bool); N]) -> Vec<&'static str> {
    flags.into_iter().filter_map(|(flag, given)| given.then_some(flag)).collect()
}

#[derive(Debug, Args)]
pub struct ReplayArgs {
    /// The recording to replay.
    #[arg(long)]
    pub input: PathBuf,
    #[command(flatten)]
    pub query: QueryArgs,
    #[command(flatten)]
    pub naming: NamingArgs,
    /// Write every graph delta and progress mark here, as JSON Lines.
    #[arg(long)]
    pub deltas: Option<PathBuf>,
    /// Write the graph at the last event time here, as JSON.
    #[arg(long)]
    pub snapshot: Option<PathBuf>,
    /// Stop at the first bad or rejected record instead of counting it and going on.
    #[arg(long)]
    pub strict: bool,
    /// How many edges the summary table shows.
    #[arg(long, default_value_t = 20)]
    pub top: usize,
    /// Instead of running the job, publish the recording to this Kafka topic (binary frames
    /// keyed by agent), created with --partitions if missing. The job's flags (the query's,
    /// --deltas, --snapshot, --strict, --top) are refused with it: `flowgraph run` computes.
    #[arg(
        long,
        conflicts_with_all = [
            "deltas", "snapshot", "strict", "top", "ips", "window", "group_by", "lateness", "progress_interval",
            "max_updates_per_piece",
        ]
    )]
    pub to_kafka: Option<String>,
    /// Bootstrap servers for --to-kafka [default: kafka.brokers of --config, else
    /// 127.0.0.1:9092]; the config's librdkafka options (security) apply too.
    #[arg(long, requires = "to_kafka")]
    pub brokers: Option<String>,
    /// Partitions of a topic --to-kafka creates.
    #[arg(long, default_value_t = 4, requires = "to_kafka")]
    pub partitions: i32,
    /// Records per second for --to-kafka (default: --max).
    #[arg(long, conflicts_with = "speed", requires = "to_kafka")]
    pub rate: Option<f64>,
    /// Event-time pace for --to-kafka: 10x publishes ten seconds of the recording per second
    /// (default: --max).
    #[arg(long, requires = "to_kafka")]
    pub speed: Option<String>,
    /// No pacing for --to-kafka: publish as fast as the broker takes it (the default).
    #[arg(long, conflicts_with_all = ["rate", "speed"], requires = "to_kafka")]
    pub max: bool,
}

#[derive(Debug, Args)]
pub struct DemoArgs {
    #[command(flatten)]
    pub query: QueryArgs,
    #[command(flatten)]
    pub naming: NamingArgs,
    /// Event-time speed-up: 60 shows a minute of traffic per second; 0 runs without pauses.
    #[arg(long, default_value_t = 60.0)]
    pub speed: f64,
    /// Redraw the table every this much event time.
    #[arg(long, default_value = "10s")]
    pub every: String,
    /// How many edges the table shows.
    #[arg(long, default_value_t = 15)]
    pub top: usize,
    /// Replay the bundled recording even when live capture is possible.
    #[arg(long)]
    pub recording: bool,
    /// How long live capture runs (0: until Ctrl-C).
    #[arg(long, default_value = "60s")]
    pub duration: String,
    #[command(flatten)]
    pub serve: ServeArgs,
    /// Do not serve the live view (terminal only).
    #[arg(long)]
    pub no_ui: bool,
    /// Exit when the recording ends, instead of serving its final graph until Ctrl-C.
    #[arg(long)]
    pub exit_at_end: bool,
}

#[derive(Debug, Args)]
pub struct GenerateArgs {
    /// smoke, demo, medium or large.
    #[arg(long, default_value = "smoke")]
    pub size: String,
    /// Random seed: the same seed gives the same bytes.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Output file.
    #[arg(long)]
    pub out: PathBuf,
    /// Export periods (10 s each) instead of the size's own: a stream longer than the
    /// window (5 min: more than 30 periods) reaches the steady state where keys expire.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    pub periods: Option<u32>,
    /// binary or jsonl.
    #[arg(long, default_value = "binary")]
    pub format: String,
}

/// `KEY=VALUE` of `--kafka-option`: librdkafka itself checks the key and the value when a
/// client is made.
fn parse_kafka_option(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((key, value)) if !key.trim().is_empty() => Ok((key.trim().to_string(), value.to_string())),
        _ => Err(format!("{text:?} is not KEY=VALUE (a librdkafka property, such as compression.type=none)")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// clap takes its default as text; the schema's constant is what the pipeline assumes.
    #[test]
    fn the_agents_default_progress_period_is_the_one_the_pipeline_assumes() {
        let cli = Cli::try_parse_from(["flowgraph", "agent"]).expect("the agent's defaults parse");
        let Command::Agent(args) = cli.command else { panic!("not the agent command") };
        let period = flowgraph_config::parse_duration_ns("--progress-period", &args.progress_period)
            .expect("the default progress period parses");
        assert_eq!(period, flowgraph_schema::AGENT_PROGRESS_PERIOD_NS);
    }
}
