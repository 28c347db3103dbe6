//! The job's materialized graph in the baselines' plain form (strings, sorted), to compare
//! the job with `flowgraph_benches::baseline`. Shared by the bench harness and
//! tests/baselines.rs, which includes this file (the binary has no library target).

use flowgraph_benches::baseline::{Graph, GraphEdge, GraphRow};
use flowgraph_sinks::graph::GraphState;

/// The rows and edges `state` holds now, as a sorted plain [`Graph`].
pub(crate) fn plain_graph(state: &GraphState) -> Graph {
    let rows = state
        .rows()
        .map(|r| GraphRow {
            from_entity: r.from_entity.to_string(),
            upid: r.upid.to_string(),
            cmdline: r.cmdline.to_string(),
            remote_addr: r.remote_addr.to_string(),
            to_entity: r.to_entity.to_string(),
            bytes_sent: r.bytes_sent,
            bytes_recv: r.bytes_recv,
        })
        .collect();
    let edges = state
        .edges()
        .map(|e| GraphEdge {
            from_entity: e.from_entity.to_string(),
            to_entity: e.to_entity.to_string(),
            bytes_sent: e.bytes_sent,
            bytes_recv: e.bytes_recv,
        })
        .collect();
    Graph { rows, edges }.sorted()
}
