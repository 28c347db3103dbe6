//! The live view: the graph as an HTTP API (snapshot, server-sent delta stream, parameters,
//! health, metrics) and the web page that draws it. The writer (an embedded job, or a follower
//! of the Kafka topics) publishes into a [`LiveGraph`]; [`server::start`] serves it.

mod assets;
pub mod server;
pub mod state;

pub use server::{start, ExplainRequest, JobRequest, ParamsControl, ParamsRequest, ServeError, Server, ServerConfig};
pub use state::{LiveEvent, LiveGraph, ParamsView};
