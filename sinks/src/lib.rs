//! Output edges of flowgraph.
//!
//! * [`deltas`]: the graph-delta JSON Lines format (updates and progress marks);
//! * [`graph`]: [`graph::GraphState`], the graph materialized from deltas, and its snapshot.

#![deny(missing_docs)]

pub mod deltas;
pub mod graph;
pub mod kafka;
