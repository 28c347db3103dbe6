//! The graph materialized from deltas: what a consumer holds after applying them.

use crate::deltas::{EdgeJson, RowJson};
use flowgraph_pipeline::{Edge, GraphRecord, Output, Row};
use flowgraph_schema::EventTime;
use serde::Serialize;
use std::collections::BTreeMap;

/// Rows and edges after applying every update up to the last progress mark.
#[derive(Debug, Default, Clone)]
pub struct GraphState {
    rows: BTreeMap<Row, i64>,
    edges: BTreeMap<Edge, i64>,
    /// The last progress mark applied.
    progress: Option<EventTime>,
}

impl GraphState {
    /// Applies one output. Updates after the last progress mark count towards the next one.
    pub fn apply(&mut self, output: &Output) {
        match output {
            Output::Update { diff, record: GraphRecord::Row(row), .. } => bump(&mut self.rows, row, *diff),
            Output::Update { diff, record: GraphRecord::Edge(edge), .. } => bump(&mut self.edges, edge, *diff),
            Output::Progress(p) => self.progress = Some(*p),
        }
    }

    /// The time the state is complete at: the last progress mark minus one.
    pub fn time(&self) -> Option<EventTime> {
        self.progress.map(|p| p.saturating_sub(1))
    }

    /// The last progress mark applied.
    pub fn progress(&self) -> Option<EventTime> {
        self.progress
    }

    /// Current rows, in a fixed order.
    pub fn rows(&self) -> impl Iterator<Item = &Row> {
        self.rows.keys()
    }

    /// Current edges, in a fixed order.
    pub fn edges(&self) -> impl Iterator<Item = &Edge> {
        self.edges.keys()
    }

    /// Records whose multiplicity is not 1: always empty unless the deltas are inconsistent.
    pub fn anomalies(&self) -> usize {
        self.rows.values().filter(|c| **c != 1).count() + self.edges.values().filter(|c| **c != 1).count()
    }

    /// The snapshot document: `{"time": T, "rows": [...], "edges": [...]}`.
    pub fn snapshot_json(&self) -> String {
        #[derive(Serialize)]
        struct Snapshot<'a> {
            time: Option<EventTime>,
            rows: Vec<RowJson<'a>>,
            edges: Vec<EdgeJson<'a>>,
        }
        let snapshot = Snapshot {
            time: self.time(),
            rows: self.rows().map(RowJson::from).collect(),
            edges: self.edges().map(EdgeJson::from).collect(),
        };
        serde_json::to_string_pretty(&snapshot).expect("snapshots always serialize")
    }
}

fn bump<K: Ord + Clone>(map: &mut BTreeMap<K, i64>, key: &K, diff: i64) {
    let count = map.entry(key.clone()).or_insert(0);
    *count += diff;
    if *count == 0 {
        map.remove(key);
    }
}
