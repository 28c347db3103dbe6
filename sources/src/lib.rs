//! Input edges of flowgraph.
//!
//! [`recording`]: recorded streams in JSON Lines or the binary envelope (detected from the first
//! bytes), read as an iterator of records. Bad input (a malformed line, a truncated or
//! oversized frame) is an item of its own that names where it is; the reader goes on after it,
//! so the valid data around it is never lost.

#![deny(missing_docs)]

pub mod kafka;
pub mod recording;
