//! Input edges of flowgraph.
//!
//! [`recording`]: recorded streams in JSON Lines or the binary envelope (detected from the first
//! bytes), read as an iterator of records. Bad input (a malformed line, a truncated or
//! oversized frame) is an item of its own that names where it is; the reader goes on after it,
//! so the valid data around it is never lost.
//!
//! [`clock`]: how far a stream of records from several agents has got in event time, from
//! their progress records (a Kafka partition's, a recording's).
//!
//! [`names_file`]: the operator's static names (address or CIDR -> name), longest prefix
//! first, reloaded when the file changes.
//!
//! [`reverse_dns`]: names for remote addresses from PTR lookups on a thread of their own, with
//! bounded concurrency, a timeout and TTL caching; the caller never waits on the network.

#![deny(missing_docs)]

pub mod clock;
pub mod kafka;
pub mod names_file;
pub mod recording;
pub mod reverse_dns;
