//! The net-flow-graph dataflow: Pixie's `px/net_flow_graph` as an incremental computation.
//!
//! Records go in ([`Job::push`]), timestamped graph changes come out ([`Job::drain_into`]),
//! each released only once its event time is complete. No I/O happens here: sources and sinks
//! live in their own crates. See docs/ARCHITECTURE.md for the data path and the time model.

#![deny(missing_docs)]

pub mod cluster;
mod current;
mod dataflow;
mod explain;
mod graph;
mod job;
mod order;
mod params;
mod stage;
mod state_alloc;

pub use cluster::ClusterJob;
pub use explain::{NameCandidate, NameExplanation, NamedBy};
pub use graph::{Edge, GraphRecord, Output, Row, Text, TextInterner};
pub use job::{Admission, Job, JobConfig, JobStats, Rejection};
pub use params::{GroupBy, IpFilter, Params, DEFAULT_WINDOW_NS};
pub use state_alloc::mapped_state_bytes;
