//! The I/O side: kube watchers for pods, services, EndpointSlices and nodes, feeding
//! [`MetadataState`], and a progress record every interval.
//!
//! ```text
//!  API server --list+watch--> kube::runtime::watcher (x4, backoff) --select--> MetadataState
//!                              410 Gone: relists (Init .. InitDone)           |
//!                                                                  records -> emit(batch)
//!  every progress interval ----------------------------------- Progress -> emit(batch)
//! ```
//!
//! kube's watcher lists, then watches from the list's resourceVersion. A watch ERROR event
//! with code 410 ("too old resource version") puts it back to listing; the list's
//! `Init`/`InitDone` markers become [`Event::RelistStarted`]/[`Event::RelistDone`], so objects
//! deleted while the watch was out of date are withdrawn. Lists are consistent reads
//! (kube's default `ListSemantic::MostRecent`): a list from the watch cache could be older
//! than events already applied and bring a deleted pod back.

use crate::state::{Event, Kind, MetadataState, Object};
use flowgraph_schema::{EventTime, Progress, Record};
use futures_util::stream::{self, BoxStream, StreamExt};
use k8s_openapi::api::core::v1::{Node, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Api, Client};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The `source` of the progress records.
pub const SOURCE_NAME: &str = "k8s-metadata";

/// How the source runs.
#[derive(Debug, Clone)]
pub struct Options {
    /// How often a progress record is emitted, also when nothing changes (the pipeline's
    /// frontier waits for every source's watermark).
    pub progress_interval: Duration,
    /// How often every current name and container record is sent again (None: never). A
    /// pipeline that rebuilds from the last window of a topic, or a topic whose retention has
    /// dropped old messages, would otherwise lose what was announced long ago.
    pub reannounce_interval: Option<Duration>,
    /// The progress records' `source`.
    pub source: String,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            progress_interval: Duration::from_secs(1),
            reannounce_interval: Some(Duration::from_secs(60)),
            source: SOURCE_NAME.to_string(),
        }
    }
}

/// Where the API server is and how to authenticate.
#[derive(Debug, Clone)]
pub enum Connect {
    /// The pod's service account (`KUBERNETES_SERVICE_HOST`, the mounted token and CA).
    InCluster,
    /// A kubeconfig file (its current context).
    Kubeconfig(PathBuf),
    /// A ready configuration (tests: a plain-HTTP server on loopback).
    Config(Box<kube::Config>),
}

/// Why the source stopped.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    // kube's errors print their own causes, so they are part of the message here rather than
    // a `source` that an error chain would print a second time.
    /// No in-cluster configuration (not in a pod, or no service account mounted).
    #[error("cannot use the in-cluster service account (not running in a pod with a mounted token?): {0}")]
    InCluster(kube::config::InClusterError),
    /// The kubeconfig file could not be read or used.
    #[error("cannot use kubeconfig {}: {reason}", path.display())]
    Kubeconfig {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: kube::config::KubeconfigError,
    },
    /// The HTTP client could not be built from the configuration.
    #[error("cannot build the Kubernetes client for {url}: {reason}")]
    Client {
        /// The API server's URL.
        url: String,
        /// Why.
        reason: kube::Error,
    },
    /// The runtime could not start.
    #[error("cannot start the async runtime")]
    Runtime(#[source] std::io::Error),
    /// The consumer of the records failed (a file or Kafka write).
    #[error("writing the metadata records failed")]
    Emit(#[source] Box<dyn std::error::Error + Send + Sync>),
}

/// Wall-clock nanoseconds since the Unix epoch.
pub fn now_ns() -> EventTime {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64)
}

/// Builds the kube client. Must run inside a tokio runtime (the client spawns its tasks).
pub async fn client(connect: Connect) -> Result<Client, SourceError> {
    let config = match connect {
        Connect::InCluster => kube::Config::incluster().map_err(SourceError::InCluster)?,
        Connect::Kubeconfig(path) => {
            let kubeconfig = kube::config::Kubeconfig::read_from(&path)
                .map_err(|reason| SourceError::Kubeconfig { path: path.clone(), reason })?;
            kube::Config::from_custom_kubeconfig(kubeconfig, &kube::config::KubeConfigOptions::default())
                .await
                .map_err(|reason| SourceError::Kubeconfig { path, reason })?
        }
        Connect::Config(config) => *config,
    };
    let url = config.cluster_url.to_string();
    Client::try_from(config).map_err(|reason| SourceError::Client { url, reason })
}

/// Loss and error counters, reported in every progress record.
#[derive(Debug, Clone, Default)]
struct Counters {
    /// Watches that fell too far behind (410 Gone) and relisted: changes in between were
    /// seen only as their end state.
    desyncs: u64,
    /// Other list/watch failures (retried with backoff).
    watch_errors: u64,
}

/// One kind's watcher as a stream of [`Event`]s. `Api::all` covers the namespaced kinds
/// across every namespace, and the cluster-scoped nodes.
fn events<K>(
    client: &Client,
    kind: Kind,
    wrap: fn(Box<K>) -> Object,
) -> BoxStream<'static, Result<Event, watcher::Error>>
where
    K: kube::Resource<DynamicType = ()> + Clone + serde::de::DeserializeOwned + std::fmt::Debug + Send + 'static,
{
    watcher::watcher(Api::<K>::all(client.clone()), watcher::Config::default())
        .default_backoff()
        .map(move |item| {
            item.map(|event| match event {
                watcher::Event::Init => Event::RelistStarted(kind),
                watcher::Event::InitApply(o) | watcher::Event::Apply(o) => Event::Applied(wrap(Box::new(o))),
                watcher::Event::Delete(o) => Event::Deleted(wrap(Box::new(o))),
                watcher::Event::InitDone => Event::RelistDone(kind),
            })
        })
        .boxed()
}

/// Watches the cluster until `stop` is set, passing every batch of records to `emit`: the
/// changes of each event as it comes, and a progress record every `options.progress_interval`.
pub async fn watch<F, E>(
    client: Client,
    options: &Options,
    stop: Arc<AtomicBool>,
    mut emit: F,
) -> Result<(), SourceError>
where
    F: FnMut(Vec<Record>) -> Result<(), E>,
    E: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let streams = vec![
        events::<Pod>(&client, Kind::Pod, Object::Pod),
        events::<Service>(&client, Kind::Service, Object::Service),
        events::<EndpointSlice>(&client, Kind::EndpointSlice, Object::EndpointSlice),
        events::<Node>(&client, Kind::Node, Object::Node),
    ];
    let mut events = stream::select_all(streams);
    let mut state = MetadataState::new();
    let mut counters = Counters::default();
    let mut ticker = tokio::time::interval(options.progress_interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // The first tick of an interval is immediate: skip it, nothing is known yet.
    let mut reannounce =
        options.reannounce_interval.map(|every| tokio::time::interval_at(tokio::time::Instant::now() + every, every));
    let mut emit = |records: Vec<Record>| emit(records).map_err(|e| SourceError::Emit(e.into()));
    tracing::info!(kinds = ?Kind::ALL.map(Kind::as_str), "kubernetes metadata: watching");
    loop {
        tokio::select! {
            item = events.next() => match item {
                Some(Ok(event)) => {
                    let records = state.apply(event, now_ns());
                    if !records.is_empty() {
                        emit(records)?;
                    }
                }
                Some(Err(error)) => note_error(&error, &mut counters),
                // The watchers retry for ever; they end only if kube changes that.
                None => return Ok(()),
            },
            _ = tick_or_never(&mut reannounce) => {
                let records = state.reannounce(now_ns());
                if !records.is_empty() {
                    emit(records)?;
                }
            }
            _ = ticker.tick() => {
                if stop.load(Ordering::Relaxed) {
                    return Ok(());
                }
                let time_ = state.stamp(now_ns());
                let stats = state.stats();
                let losses = BTreeMap::from([
                    ("desyncs".to_string(), counters.desyncs),
                    ("watch_errors".to_string(), counters.watch_errors),
                    ("bad_addresses".to_string(), stats.bad_addresses),
                    ("bad_objects".to_string(), stats.bad_objects),
                ]);
                emit(vec![Record::Progress(Progress { time_, source: options.source.clone(), losses })])?;
            }
        }
    }
}

/// The next tick of an interval; never, without one.
async fn tick_or_never(interval: &mut Option<tokio::time::Interval>) {
    match interval {
        Some(interval) => {
            interval.tick().await;
        }
        None => std::future::pending().await,
    }
}

fn note_error(error: &watcher::Error, counters: &mut Counters) {
    match error {
        watcher::Error::WatchError(status) if status.code == 410 => {
            counters.desyncs += 1;
            tracing::info!(error = %status.message, "kubernetes metadata: watch out of date (410 Gone), relisting");
        }
        other => {
            counters.watch_errors += 1;
            // The source error is where the API server's reason is; print the chain once.
            let mut text = other.to_string();
            let mut source = std::error::Error::source(other);
            while let Some(cause) = source {
                text.push_str(&format!(": {cause}"));
                source = cause.source();
            }
            tracing::warn!(error = %text, "kubernetes metadata: list/watch failed, retrying with backoff");
        }
    }
}

/// Runs the source on a runtime of its own in this thread until `stop` is set: connects, then
/// [`watch`]es. For callers without an async runtime (the `flowgraph metadata` command).
pub fn run_blocking<F, E>(
    connect: Connect,
    options: &Options,
    stop: Arc<AtomicBool>,
    emit: F,
) -> Result<(), SourceError>
where
    F: FnMut(Vec<Record>) -> Result<(), E>,
    E: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(SourceError::Runtime)?;
    runtime.block_on(async {
        let client = client(connect).await?;
        watch(client, options, stop, emit).await
    })
}
