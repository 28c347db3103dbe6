//! `flowgraph agent`: this node's TCP connections, measured in the kernel, as records.
//!
//! Every export period: collect the eBPF socket counters, turn them into conn_stats, process
//! and progress records (flowgraph_sources_ebpf::export), and write them as JSON Lines, binary
//! frames, or one Kafka message keyed by agent id. SIGINT/SIGTERM export a final period (so a
//! connection's last bytes are not lost), flush, detach and exit 0.
//!
//! Unless `--no-dns-names`, the DNS answers seen on the host name their addresses: `name`
//! records (source `dns`) go out with each period's records, and their counters ride in the
//! progress record's losses (`dns_*`). Without the privileges for that (CAP_NET_RAW, CAP_BPF)
//! the agent says why, counts `dns_unavailable`, and goes on without names.

use crate::cli::AgentArgs;
use crate::output::{self, RecordOutput};
use anyhow::bail;
use flowgraph_config::parse_duration_ns;
use flowgraph_schema::{Record, AGENT_SILENCE_LIMIT_NS, MIN_AGENT_PROGRESS_PERIOD_NS};
use flowgraph_sources_ebpf::dns::{DnsCounters, DnsNames, DnsOptions};
use flowgraph_sources_ebpf::export::Exporter;
use flowgraph_sources_ebpf::{Agent, AgentOptions, LossCounters};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// The agent id: the first 8 hex digits of /etc/machine-id, stable across restarts.
fn default_agent_id() -> u32 {
    std::fs::read_to_string("/etc/machine-id")
        .ok()
        .and_then(|id| u32::from_str_radix(id.trim().get(..8)?, 16).ok())
        .unwrap_or(1)
}

/// The DNS names observer, if wanted, and its counters as last read.
enum Dns {
    Off,
    Unavailable,
    On(Box<DnsNames>, DnsCounters),
}

impl Dns {
    fn start(wanted: bool) -> Dns {
        if !wanted {
            return Dns::Off;
        }
        match DnsNames::start(&DnsOptions::default()) {
            Ok(names) => {
                tracing::info!("DNS names: watching DNS answers (UDP from port 53) on this host");
                Dns::On(Box::new(names), DnsCounters::default())
            }
            Err(e) => {
                tracing::warn!(error = %e, "DNS names unavailable; the agent goes on without them");
                Dns::Unavailable
            }
        }
    }

    /// Appends the names seen since the last call; returns the counters for the progress record.
    fn drain(&mut self, records: &mut Vec<Record>) -> Option<DnsCounters> {
        match self {
            Dns::Off => None,
            Dns::Unavailable => Some(DnsCounters::unavailable()),
            Dns::On(names, last) => {
                names.drain_records(records);
                match names.counters() {
                    Ok(now) => {
                        if now.names_dropped > last.names_dropped {
                            tracing::warn!(dropped = now.names_dropped - last.names_dropped, "DNS names dropped");
                        }
                        *last = now;
                    }
                    // Keep the last reading: the counters are cumulative and must not go back.
                    Err(e) => tracing::warn!(error = %e, "cannot read the DNS names' counters"),
                }
                Some(*last)
            }
        }
    }
}

fn now_ns() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64)
}

/// Takes the watermark (now) and the loss counters, then appends the names read since the
/// last call. The watermark first, then the names: a name is stamped when its answer was
/// read, so every name drained here is newer than the last watermark, and the caller puts
/// its progress record for `now` after them.
fn watermark_and_names(agent: &Agent, dns: &mut Dns, records: &mut Vec<Record>) -> anyhow::Result<(u64, LossCounters)> {
    let mut loss = agent.loss_counters()?;
    let now = now_ns();
    loss.dns = dns.drain(records);
    Ok((now, loss))
}

/// Refuses the flags of an output the agent does not write to: they would be ignored, and an
/// operator who gave `--brokers` expects records on Kafka, not on standard output.
fn check_output_flags(args: &AgentArgs) -> anyhow::Result<()> {
    let kafka_flags = crate::cli::given([
        ("--brokers", args.brokers.is_some()),
        ("--topic", args.topic.is_some()),
        ("--config", args.config.is_some()),
    ]);
    match args.output.as_str() {
        "kafka" if args.out != "-" => {
            bail!("--out is for --output jsonl or binary; --output kafka publishes to a topic")
        }
        "jsonl" | "binary" if !kafka_flags.is_empty() => bail!(
            "{} cannot be used with --output {}, which writes to {} (they are for --output kafka)",
            kafka_flags.join(", "),
            args.output,
            if args.out == "-" { "standard output" } else { &args.out }
        ),
        _ => Ok(()),
    }
}

pub fn run(args: AgentArgs) -> anyhow::Result<()> {
    check_output_flags(&args)?;
    let period = Duration::from_nanos(parse_duration_ns("--export-period", &args.export_period)?);
    if period < Duration::from_secs(1) {
        bail!("--export-period: must be at least 1s");
    }
    let progress_period = Duration::from_nanos(parse_duration_ns("--progress-period", &args.progress_period)?);
    if progress_period < Duration::from_nanos(MIN_AGENT_PROGRESS_PERIOD_NS) {
        bail!("--progress-period: must be at least {:?}", Duration::from_nanos(MIN_AGENT_PROGRESS_PERIOD_NS));
    }
    // Progress comes every progress period, or with exports if those are more often.
    let silence_limit = Duration::from_nanos(AGENT_SILENCE_LIMIT_NS);
    if progress_period.min(period) > silence_limit {
        bail!(
            "--progress-period and --export-period: one must be at most {silence_limit:?} (the pipeline takes an agent \
             silent for longer as gone)"
        );
    }
    let agent_id = args.agent_id.unwrap_or_else(default_agent_id);
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").map(|h| h.trim().to_string()).unwrap_or_default();
    let mut output = match args.output.as_str() {
        "jsonl" => RecordOutput::Jsonl(output::file(&args.out)?),
        "binary" => RecordOutput::Binary(output::file(&args.out)?),
        "kafka" => {
            let kafka = crate::replay::kafka_config(args.config.as_ref(), args.brokers.as_ref())?;
            RecordOutput::Kafka {
                producer: output::producer(&kafka)?,
                topic: args.topic.clone().unwrap_or(kafka.input_topic),
                key: format!("agent-{agent_id}"),
            }
        }
        other => bail!("--output: unknown output {other:?}; expected jsonl, binary or kafka"),
    };

    crate::telemetry::serve(args.metrics_addr.as_deref(), None)?;
    let stop = crate::replay::stop_flag()?;
    let mut agent = Agent::load_with(&AgentOptions { max_sockets: args.max_sockets })?;
    tracing::info!(agent_id, host = %host, period = ?period, "flowgraph agent: attached");
    let mut dns = Dns::start(!args.no_dns_names);
    // Keys are remembered an hour after their last socket closed (the pipeline's max_window).
    let mut exporter = Exporter::new(agent_id, host, 3600 * 1_000_000_000);
    if let Some(node) = &args.node {
        exporter.set_node(node.clone());
    }
    let (mut samples, mut records) = (Vec::new(), Vec::new());
    let mut records_out = 0u64;
    let mut next = Instant::now() + period;
    let mut next_progress = Instant::now() + progress_period;
    loop {
        let stopping = stop.load(Ordering::Relaxed);
        if !stopping && Instant::now() < next {
            if Instant::now() >= next_progress {
                // Progress on its own: the names read since the last report, then the mark.
                next_progress += progress_period;
                records.clear();
                let (now, loss) = watermark_and_names(&agent, &mut dns, &mut records)?;
                records.push(exporter.progress(now, &loss));
                output.write(&records)?;
                records_out += records.len() as u64;
                continue;
            }
            let wake = next.min(next_progress);
            std::thread::sleep(Duration::from_millis(50).min(wake.saturating_duration_since(Instant::now())));
            continue;
        }
        next += period;
        next_progress = Instant::now() + progress_period;
        samples.clear();
        records.clear();
        agent.collect(&mut samples)?;
        let (now, loss) = watermark_and_names(&agent, &mut dns, &mut records)?;
        exporter.export(&samples, now, &|pid, start| agent.process(pid, start), &loss, &mut records);
        output.write(&records)?;
        records_out += records.len() as u64;
        crate::telemetry::agent(records_out, exporter.keys(), &loss);
        if loss.lossy() > 0 {
            tracing::warn!(?loss, "the kernel side lost events");
        }
        if stopping {
            break;
        }
    }
    output.finish()?;
    tracing::info!("flowgraph agent: final period exported, detaching");
    Ok(())
}
