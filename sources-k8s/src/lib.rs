//! The Kubernetes metadata source: who owns which container and address.
//!
//! Watches pods, services, EndpointSlices (`discovery.k8s.io/v1`) and nodes through the API
//! server with the `kube` crate and emits, time-stamped with the wall clock at which each
//! change was observed:
//!
//! * [`flowgraph_schema::Container`]: container id (as the agent reads it from the cgroup) ->
//!   pod `ns/name`, namespace, services, node; an empty pod withdraws it;
//! * [`flowgraph_schema::Name`] with source Kubernetes: pod IP -> `ns/pod`, service cluster
//!   IP -> `ns/service`, node InternalIP -> node name; an empty name withdraws it;
//! * [`flowgraph_schema::Progress`] from `k8s-metadata` every second, also when idle.
//!
//! [`state`] is the pure state machine (objects in, records out); [`watch`] is the kube I/O.

#![deny(missing_docs)]

pub mod state;
pub mod watch;

pub use state::{container_id, Event, Kind, MetadataState, Object, StateStats};
pub use watch::{client, now_ns, run_blocking, watch, Connect, Options, SourceError, SOURCE_NAME};
