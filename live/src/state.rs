//! The graph the live view serves, and the events its streams follow.
//!
//! One writer (the job's thread, or the Kafka follower) publishes job outputs; any number of
//! HTTP streams subscribe. Publishing and subscribing take the same lock, so a new subscriber's
//! snapshot is exactly the graph before the first event it receives: nothing is applied twice
//! and nothing is missed.

use flowgraph_pipeline::{GraphRecord, Output, Params};
use flowgraph_schema::EventTime;
use flowgraph_sinks::deltas::{EdgeJson, RowJson};
use flowgraph_sinks::graph::GraphState;
use serde::Serialize;
use std::sync::{Arc, RwLock};
use std::time::Duration;
use tokio::sync::broadcast;

/// How many events a slow stream may fall behind before it is sent a fresh snapshot instead.
const STREAM_BACKLOG: usize = 256;

/// What a stream receives after its first snapshot.
#[derive(Debug, Clone)]
pub enum LiveEvent {
    /// Every update since the previous delta, and the new progress mark (JSON).
    Delta(Arc<str>),
    /// The parameters changed (JSON, the shape of `GET /api/params` without the choices).
    Params(Arc<str>),
    /// The graph was replaced: send the client a new snapshot.
    Resync,
}

/// The query parameters as the API shows and accepts them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ParamsView {
    /// Addresses and CIDRs, comma-separated; empty for every address.
    pub ips: String,
    /// Window length, e.g. "5m".
    pub window: String,
    /// What a graph node is.
    pub group_by: String,
}

impl From<&Params> for ParamsView {
    fn from(params: &Params) -> Self {
        ParamsView {
            ips: params.ips.nets().iter().map(|n| n.to_string()).collect::<Vec<_>>().join(","),
            window: humantime::format_duration(Duration::from_nanos(params.window_ns)).to_string(),
            group_by: params.group_by.as_str().to_string(),
        }
    }
}

#[derive(Debug)]
struct Inner {
    graph: GraphState,
    params: Params,
    /// Why the view is not ready yet, when its writer says so (for example: bootstrapping).
    not_ready: Option<String>,
    /// Updates since the last progress mark, applied to `graph` when the next mark comes.
    pending: Vec<Output>,
}

/// The served graph. Cheap to share: wrap it in an `Arc`.
#[derive(Debug)]
pub struct LiveGraph {
    inner: RwLock<Inner>,
    events: broadcast::Sender<LiveEvent>,
}

impl LiveGraph {
    /// An empty graph under `params`.
    pub fn new(params: Params) -> Self {
        LiveGraph {
            inner: RwLock::new(Inner { graph: GraphState::default(), params, not_ready: None, pending: Vec::new() }),
            events: broadcast::channel(STREAM_BACKLOG).0,
        }
    }

    /// Applies job outputs; each progress mark sends the updates before it as one delta.
    pub fn publish(&self, outputs: &[Output]) {
        let mut inner = self.inner.write().expect("live graph lock");
        for output in outputs {
            match output {
                Output::Update { .. } => inner.pending.push(output.clone()),
                Output::Progress(progress) => {
                    // The graph moves a whole completed batch at a time, so a snapshot is
                    // always the graph at a progress mark.
                    let Inner { graph, pending, .. } = &mut *inner;
                    pending.iter().for_each(|update| graph.apply(update));
                    graph.apply(output);
                    let delta = delta_json(*progress, pending);
                    pending.clear();
                    // No subscriber is not an error: the graph is kept either way.
                    let _ = self.events.send(LiveEvent::Delta(delta.into()));
                }
            }
        }
    }

    /// Replaces the whole graph (a consumer that bootstrapped from a state topic) and tells
    /// every stream to start again from a snapshot.
    pub fn replace(&self, graph: GraphState) {
        let mut inner = self.inner.write().expect("live graph lock");
        inner.graph = graph;
        inner.pending.clear();
        let _ = self.events.send(LiveEvent::Resync);
    }

    /// Records the parameters now in force and tells every stream.
    pub fn set_params(&self, params: Params) {
        let mut inner = self.inner.write().expect("live graph lock");
        let view = serde_json::to_string(&ParamsView::from(&params)).expect("params serialize");
        inner.params = params;
        let _ = self.events.send(LiveEvent::Params(view.into()));
    }

    /// The parameters in force.
    pub fn params(&self) -> Params {
        self.inner.read().expect("live graph lock").params.clone()
    }

    /// Marks the view not ready (with the reason `/readyz` gives), or ready again (`None`).
    pub fn set_not_ready(&self, reason: Option<String>) {
        self.inner.write().expect("live graph lock").not_ready = reason;
    }

    /// Ready once the writer has nothing pending and a first progress mark is applied.
    pub fn readiness(&self) -> Result<(), String> {
        let inner = self.inner.read().expect("live graph lock");
        if let Some(reason) = &inner.not_ready {
            return Err(reason.clone());
        }
        match inner.graph.progress() {
            Some(_) => Ok(()),
            None => Err("no complete event time yet: waiting for the first progress mark".into()),
        }
    }

    /// The last complete event time, if any progress mark has been applied.
    pub fn time(&self) -> Option<EventTime> {
        self.inner.read().expect("live graph lock").graph.time()
    }

    /// Runs `f` on the graph as of the last progress mark applied.
    pub fn with_graph<T>(&self, f: impl FnOnce(&GraphState) -> T) -> T {
        f(&self.inner.read().expect("live graph lock").graph)
    }

    /// The graph document of `GET /api/graph`.
    pub fn snapshot_json(&self) -> String {
        let inner = self.inner.read().expect("live graph lock");
        snapshot_json(&inner)
    }

    /// A snapshot and a receiver of every event after it, atomically.
    pub fn subscribe(&self) -> (String, broadcast::Receiver<LiveEvent>) {
        let inner = self.inner.read().expect("live graph lock");
        (snapshot_json(&inner), self.events.subscribe())
    }

    /// Streams following the graph now.
    pub fn streams(&self) -> usize {
        self.events.receiver_count()
    }
}

fn snapshot_json(inner: &Inner) -> String {
    #[derive(Serialize)]
    struct Snapshot<'a> {
        time: Option<EventTime>,
        progress: Option<EventTime>,
        params: ParamsView,
        rows: Vec<RowJson<'a>>,
        edges: Vec<EdgeJson<'a>>,
    }
    let graph = &inner.graph;
    let snapshot = Snapshot {
        time: graph.time(),
        progress: graph.progress(),
        params: ParamsView::from(&inner.params),
        // Unsorted: this runs under the lock the writer waits on, and sorting a million rows
        // takes about half a second (docs/BENCHMARKS.md, item 44). The page sorts them itself.
        rows: graph.rows().map(RowJson::from).collect(),
        edges: graph.edges().map(EdgeJson::from).collect(),
    };
    serde_json::to_string(&snapshot).expect("snapshots serialize")
}

/// `{"progress":P,"time":P-1,"updates":[{"diff":-1,"row":{..}},{"diff":1,"edge":{..}},..]}`
fn delta_json(progress: EventTime, updates: &[Output]) -> String {
    #[derive(Serialize)]
    #[serde(untagged)]
    enum Update<'a> {
        Row { diff: i64, row: RowJson<'a> },
        Edge { diff: i64, edge: EdgeJson<'a> },
    }
    #[derive(Serialize)]
    struct Delta<'a> {
        progress: EventTime,
        time: EventTime,
        updates: Vec<Update<'a>>,
    }
    let updates = updates
        .iter()
        .filter_map(|output| match output {
            Output::Update { diff, record: GraphRecord::Row(row), .. } => {
                Some(Update::Row { diff: *diff, row: row.into() })
            }
            Output::Update { diff, record: GraphRecord::Edge(edge), .. } => {
                Some(Update::Edge { diff: *diff, edge: edge.into() })
            }
            Output::Progress(_) => None,
        })
        .collect();
    let delta = Delta { progress, time: progress.saturating_sub(1), updates };
    serde_json::to_string(&delta).expect("deltas serialize")
}
