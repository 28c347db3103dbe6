//! Telemetry: one place per component turns its counters into Prometheus metrics, served on
//! `--metrics-addr` (`GET /metrics`). Names are `flowgraph_*`; labels are bounded (worker,
//! partition, loss kind).

use anyhow::Context;
use flowgraph_pipeline::JobStats;
use flowgraph_sinks::kafka::KafkaSinkStats;
use flowgraph_sources::kafka::KafkaSourceStats;
use flowgraph_sources_ebpf::LossCounters;
use metrics::{counter, describe_counter, describe_gauge, gauge};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use std::net::SocketAddr;

/// Starts the Prometheus endpoint when an address is given.
pub fn serve(addr: Option<&str>) -> anyhow::Result<()> {
    let Some(addr) = addr else { return Ok(()) };
    let addr: SocketAddr = addr
        .parse()
        .with_context(|| format!("--metrics-addr: {addr:?} is not an address such as 127.0.0.1:9464"))?;
    PrometheusBuilder::new()
        .with_http_listener(addr)
        .install()
        .with_context(|| format!("serving metrics on {addr}"))?;
    describe();
    tracing::info!(%addr, "serving Prometheus metrics at /metrics");
    Ok(())
}

/// Installs the Prometheus recorder without a listener of its own: the live view serves its
/// rendering at `/metrics`.
pub fn recorder() -> anyhow::Result<PrometheusHandle> {
    let handle = PrometheusBuilder::new()
        .install_recorder()
        .context("installing the metrics recorder")?;
    describe();
    describe_counter!("flowgraph_ui_streams_opened_total", "Live-view event streams opened");
    describe_counter!("flowgraph_ui_stream_resyncs_total", "Streams sent a fresh snapshot after falling behind");
    describe_counter!("flowgraph_ui_errors_total", "Live-view API errors, by status");
    describe_gauge!("flowgraph_ui_streams", "Live-view event streams open");
    Ok(handle)
}

fn describe() {
    describe_counter!("flowgraph_records_in_total", "Records read from the input");
    describe_counter!("flowgraph_late_records_total", "Records older than the frontier, processed at it");
    describe_counter!("flowgraph_rejected_records_total", "Records rejected (decreasing counters)");
    describe_counter!("flowgraph_decode_errors_total", "Undecodable input messages or lines");
    describe_counter!("flowgraph_dead_letters_total", "Undecodable input written to the dead-letter topic");
    describe_counter!("flowgraph_updates_out_total", "Graph updates published");
    describe_counter!("flowgraph_transactions_total", "Kafka transactions committed");
    describe_counter!("flowgraph_transaction_aborts_total", "Kafka transactions aborted (a send or the commit failed)");
    describe_counter!("flowgraph_delta_messages_out_total", "Delta-topic messages committed (update batches and progress marks)");
    describe_counter!("flowgraph_state_records_out_total", "State-topic upserts and tombstones committed");
    describe_counter!("flowgraph_sink_sending_milliseconds_total", "Time the sink spent encoding updates and handing messages to the producer");
    describe_counter!("flowgraph_sink_committing_milliseconds_total", "Time the sink spent waiting for transactions to commit");
    describe_counter!("flowgraph_sink_handoff_wait_milliseconds_total", "Time worker 0 waited to hand outputs to a sink that was behind");
    describe_gauge!("flowgraph_frontier_seconds", "Event time before which every update is out");
    describe_gauge!("flowgraph_consumer_lag_messages", "Messages of a partition not read yet");
    describe_gauge!("flowgraph_idle_partitions", "Partitions idle now: quiet, nothing left to read, not holding the frontier");
    describe_counter!("flowgraph_agent_records_out_total", "Records the agent exported");
    describe_gauge!("flowgraph_agent_connection_keys", "Connection keys the agent tracks");
    describe_counter!("flowgraph_agent_loss_total", "Events the kernel side lost or could not attribute");
}

/// The job's counters and frontier, and the input's undecodable items.
pub fn job(job: &JobStats, decode_errors: u64, frontier: u64) {
    counter!("flowgraph_records_in_total").absolute(job.records);
    counter!("flowgraph_late_records_total").absolute(job.late);
    counter!("flowgraph_rejected_records_total").absolute(job.rejected);
    counter!("flowgraph_decode_errors_total").absolute(decode_errors);
    gauge!("flowgraph_frontier_seconds").set(frontier as f64 / 1e9);
}

/// One worker's counters: what it read from its partitions, what its share of the job did.
pub fn worker(index: usize, job: &JobStats, source: &KafkaSourceStats, frontier: u64) {
    let worker = index.to_string();
    counter!("flowgraph_records_in_total", "worker" => worker.clone()).absolute(source.records);
    counter!("flowgraph_late_records_total", "worker" => worker.clone()).absolute(source.late);
    counter!("flowgraph_rejected_records_total", "worker" => worker.clone()).absolute(job.rejected);
    counter!("flowgraph_decode_errors_total", "worker" => worker.clone()).absolute(source.decode_errors);
    counter!("flowgraph_dead_letters_total", "worker" => worker.clone()).absolute(source.dead_letters);
    gauge!("flowgraph_idle_partitions", "worker" => worker.clone()).set(source.idle_partitions as f64);
    gauge!("flowgraph_frontier_seconds", "worker" => worker).set(frontier as f64 / 1e9);
}

/// The sink's counters (worker 0 writes it). What a transaction wrote is set before the
/// transaction count, so a scrape never sees a commit without its writes.
pub fn sink(sink: &KafkaSinkStats, handoff_wait: std::time::Duration) {
    // Milliseconds: the metrics crate's counters are integers. rate() / 1000 is the busy share.
    let millis = |d: std::time::Duration| d.as_millis() as u64;
    counter!("flowgraph_sink_sending_milliseconds_total").absolute(millis(sink.sending));
    counter!("flowgraph_sink_committing_milliseconds_total").absolute(millis(sink.committing));
    counter!("flowgraph_sink_handoff_wait_milliseconds_total").absolute(millis(handoff_wait));
    counter!("flowgraph_updates_out_total").absolute(sink.updates);
    counter!("flowgraph_delta_messages_out_total").absolute(sink.messages);
    counter!("flowgraph_state_records_out_total").absolute(sink.state_writes);
    counter!("flowgraph_transactions_total").absolute(sink.transactions);
    counter!("flowgraph_transaction_aborts_total").absolute(sink.aborts);
}

/// Consumer lag per partition.
pub fn lag(lags: &[(i32, i64)]) {
    for (partition, lag) in lags {
        gauge!("flowgraph_consumer_lag_messages", "partition" => partition.to_string()).set(*lag as f64);
    }
}

/// The agent's counters.
pub fn agent(records_out: u64, keys: usize, loss: &LossCounters) {
    counter!("flowgraph_agent_records_out_total").absolute(records_out);
    gauge!("flowgraph_agent_connection_keys").set(keys as f64);
    for (kind, value) in loss.named() {
        counter!("flowgraph_agent_loss_total", "kind" => kind).absolute(value);
    }
}
