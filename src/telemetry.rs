//! Telemetry: one place per component turns its counters into Prometheus metrics, served on
//! `--metrics-addr` (`GET /metrics`, with `GET /healthz` for a liveness probe). Names are
//! `flowgraph_*`; labels are bounded (worker, partition, loss kind).

use anyhow::Context;
use axum::http::{header, StatusCode};
use axum::routing::get;
use axum::Router;
use flowgraph_pipeline::JobStats;
use flowgraph_sinks::kafka::KafkaSinkStats;
use flowgraph_sources::kafka::KafkaSourceStats;
use flowgraph_sources_ebpf::LossCounters;
use metrics::{counter, describe_counter, describe_gauge, gauge};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long a worker may go without coming round its loop before `/healthz` fails. Every
/// wait in the loop is bounded well below it: a poll 100 ms, a question to the broker 5 s, a
/// hand-over to the sink one transaction (its commit and abort 30 s each, then the run ends).
pub const WORKER_STALL_LIMIT: Duration = Duration::from_secs(120);

/// When each worker of this process last came round its loop, for `/healthz`: a worker that
/// hangs (a deadlock, a wait that never ends) fails the liveness probe, so the orchestrator
/// restarts it, where the metrics alone would go on answering.
pub struct Heartbeats {
    started: Instant,
    /// Per worker (by its index in the cluster), milliseconds since `started` + 1 at its last
    /// beat; 0 before its first and after it left its loop (or in another process).
    last: Vec<AtomicU64>,
    limit: Duration,
}

impl Heartbeats {
    pub fn new(workers: usize, limit: Duration) -> Arc<Heartbeats> {
        Arc::new(Heartbeats { started: Instant::now(), last: (0..workers).map(|_| AtomicU64::new(0)).collect(), limit })
    }

    /// Worker `index` is going round its loop.
    pub fn beat(&self, index: usize) {
        let now = self.started.elapsed().as_millis() as u64 + 1;
        self.last[index].store(now, Ordering::Relaxed);
    }

    /// Worker `index` has left its loop for good (stopped or finished), so it cannot stall.
    pub fn left(&self, index: usize) {
        self.last[index].store(0, Ordering::Relaxed);
    }

    /// The workers that have not come round their loop for longer than the limit, with how long.
    pub fn stalled(&self) -> Vec<(usize, Duration)> {
        let now = self.started.elapsed();
        self.last
            .iter()
            .enumerate()
            .filter_map(|(index, last)| match last.load(Ordering::Relaxed) {
                0 => None,
                last => Some((index, now.saturating_sub(Duration::from_millis(last - 1)))),
            })
            .filter(|(_, age)| *age > self.limit)
            .collect()
    }
}

/// Serves `GET /metrics` (Prometheus) and `GET /healthz` when an address is given: `ok`, or
/// 503 naming the workers that stalled (with `heartbeats`; without, always `ok`).
pub fn serve(addr: Option<&str>, heartbeats: Option<Arc<Heartbeats>>) -> anyhow::Result<()> {
    let Some(addr) = addr else { return Ok(()) };
    let addr: SocketAddr =
        addr.parse().with_context(|| format!("--metrics-addr: {addr:?} is not an address such as 127.0.0.1:9464"))?;
    // Bound here, so a taken address is an error at start, not a log line later.
    let listener = std::net::TcpListener::bind(addr).with_context(|| format!("serving metrics on {addr}"))?;
    listener.set_nonblocking(true).with_context(|| format!("serving metrics on {addr}"))?;
    let handle = install()?;
    let router = Router::new()
        // The content type the exporter's own listener sent: Prometheus's text format.
        .route(
            "/metrics",
            get(move || async move { ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], handle.render()) }),
        )
        .route(
            "/healthz",
            get(move || async move {
                let stalled = heartbeats.as_ref().map(|h| (h.stalled(), h.limit)).filter(|(s, _)| !s.is_empty());
                match stalled {
                    None => (StatusCode::OK, "ok\n".to_string()),
                    Some((stalled, limit)) => {
                        let workers: Vec<String> =
                            stalled.iter().map(|(w, age)| format!("worker {w} for {} s", age.as_secs())).collect();
                        let text = format!(
                            "stalled: {} without coming round its loop (limit {} s)\n",
                            workers.join(", "),
                            limit.as_secs()
                        );
                        (StatusCode::SERVICE_UNAVAILABLE, text)
                    }
                }
            }),
        );
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the metrics server's runtime")?;
    std::thread::Builder::new()
        .name("flowgraph-metrics".into())
        .spawn(move || {
            runtime.block_on(async move {
                let served = match tokio::net::TcpListener::from_std(listener) {
                    Ok(listener) => axum::serve(listener, router).await,
                    Err(e) => Err(e),
                };
                if let Err(e) = served {
                    tracing::error!(%addr, error = %e, "the metrics server failed");
                }
            })
        })
        .context("starting the metrics server's thread")?;
    tracing::info!(%addr, "serving Prometheus metrics at /metrics and liveness at /healthz");
    Ok(())
}

/// Installs the Prometheus recorder without a listener of its own: the live view serves its
/// rendering at `/metrics`.
pub fn recorder() -> anyhow::Result<PrometheusHandle> {
    let handle = install()?;
    describe_counter!("flowgraph_ui_streams_opened_total", "Live-view event streams opened");
    describe_counter!("flowgraph_ui_stream_resyncs_total", "Streams sent a fresh snapshot after falling behind");
    describe_counter!("flowgraph_ui_errors_total", "Live-view API errors, by status");
    describe_gauge!("flowgraph_ui_streams", "Live-view event streams open");
    Ok(handle)
}

/// Installs the recorder, describes the metrics, and runs the exporter's upkeep every 5 s (its
/// default) on a thread of its own: the exporter's own listener would, and without it the
/// histograms' samples (reverse-DNS lookup times) build up until a scrape drains them.
fn install() -> anyhow::Result<PrometheusHandle> {
    let handle = PrometheusBuilder::new().install_recorder().context("installing the metrics recorder")?;
    describe();
    let upkeep = handle.clone();
    std::thread::Builder::new()
        .name("flowgraph-metrics-upkeep".into())
        .spawn(move || loop {
            std::thread::sleep(Duration::from_secs(5));
            upkeep.run_upkeep();
        })
        .context("starting the metrics upkeep thread")?;
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
    describe_counter!(
        "flowgraph_delta_messages_out_total",
        "Delta-topic messages committed (update batches and progress marks)"
    );
    describe_counter!("flowgraph_state_records_out_total", "State-topic upserts and tombstones committed");
    describe_counter!(
        "flowgraph_sink_sending_milliseconds_total",
        "Time the sink spent encoding updates and handing messages to the producer (waits for room included)"
    );
    describe_counter!(
        "flowgraph_sink_committing_milliseconds_total",
        "Time the sink spent waiting for transactions to commit"
    );
    describe_counter!("flowgraph_sink_cpu_milliseconds_total", "CPU time of the sink's thread");
    describe_counter!(
        "flowgraph_sink_handoff_wait_milliseconds_total",
        "Time worker 0 waited to hand outputs to a sink that was behind"
    );
    describe_gauge!("flowgraph_frontier_seconds", "Event time before which every update is out");
    describe_gauge!("flowgraph_consumer_lag_messages", "Messages of a partition not read yet");
    describe_gauge!(
        "flowgraph_idle_partitions",
        "Partitions idle now: quiet, nothing left to read, not holding the frontier"
    );
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
    counter!("flowgraph_sink_cpu_milliseconds_total").absolute(millis(sink.thread_cpu));
    counter!("flowgraph_sink_handoff_wait_milliseconds_total").absolute(millis(handoff_wait));
    counter!("flowgraph_updates_out_total").absolute(sink.updates);
    counter!("flowgraph_delta_messages_out_total").absolute(sink.messages);
    counter!("flowgraph_state_records_out_total").absolute(sink.state_writes);
    counter!("flowgraph_state_checkpoints_total").absolute(sink.checkpoints);
    gauge!("flowgraph_state_pending_keys").set(sink.pending_state_keys as f64);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_worker_that_stops_beating_is_stalled_until_it_beats_again() {
        let heartbeats = Heartbeats::new(3, Duration::from_millis(50));
        assert!(heartbeats.stalled().is_empty(), "workers that have not started are not stalled");
        heartbeats.beat(1);
        heartbeats.beat(2);
        assert!(heartbeats.stalled().is_empty());
        std::thread::sleep(Duration::from_millis(120));
        heartbeats.beat(2);
        let stalled = heartbeats.stalled();
        assert_eq!(stalled.iter().map(|(w, _)| *w).collect::<Vec<_>>(), [1], "{stalled:?}");
        assert!(stalled[0].1 >= Duration::from_millis(120), "{stalled:?}");
        heartbeats.beat(1);
        assert!(heartbeats.stalled().is_empty());
        // A worker that left its loop (stopped, or finished while others run) is not stalled.
        heartbeats.left(2);
        std::thread::sleep(Duration::from_millis(120));
        assert_eq!(heartbeats.stalled().iter().map(|(w, _)| *w).collect::<Vec<_>>(), [1]);
    }

    /// `GET path` from `addr`: (status, content type, body).
    fn get(addr: &str, path: &str) -> (u16, String, String) {
        let agent: ureq::Agent = ureq::Agent::config_builder().http_status_as_error(false).build().into();
        let mut response = agent.get(&format!("http://{addr}{path}")).call().unwrap();
        let content_type = response.headers().get("content-type").map_or("", |v| v.to_str().unwrap()).to_string();
        (response.status().as_u16(), content_type, response.body_mut().read_to_string().unwrap())
    }

    #[test]
    fn healthz_fails_while_a_worker_is_stalled_and_names_it() {
        let addr = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().to_string();
        let heartbeats = Heartbeats::new(2, Duration::from_millis(50));
        serve(Some(&addr), Some(heartbeats.clone())).unwrap();
        heartbeats.beat(0);
        let (status, _, body) = get(&addr, "/healthz");
        assert_eq!((status, body.as_str()), (200, "ok\n"));
        std::thread::sleep(Duration::from_millis(120));
        let (status, _, body) = get(&addr, "/healthz");
        assert_eq!(status, 503, "{body}");
        assert_eq!(body, "stalled: worker 0 for 0 s without coming round its loop (limit 0 s)\n");
        let (status, content_type, body) = get(&addr, "/metrics");
        assert_eq!((status, content_type.as_str()), (200, "text/plain; version=0.0.4"), "{body}");
        assert_eq!(get(&addr, "/other").0, 404);
    }
}
