//! `ringrelay load --mode http` and `--mode http-target`: plain HTTP/1.1 load on monoio, for
//! measuring the relay's HTTP bridge against the same requests sent straight to the API
//! behind it (docs/bridge-bench.md).
//!
//! * `request`: the request bytes, and the request head as the target reads it;
//! * `error`: what can go wrong, typed;
//!
//! those two do no I/O; the URL, body framing and the response reader are the crate's HTTP
//! client pieces (`crate::http::client`), shared with the agent. Then:
//! * `client`: one slot's request and answer on monoio;
//! * `engine`: the slots on their threads, the clock, the counts;
//! * `report`: the result, as JSON or text;
//! * `target`: the stand-in API server.

#![forbid(unsafe_code)]

pub mod client;
pub mod engine;
pub mod error;
pub mod report;
pub mod request;
pub mod target;

pub use engine::HttpPlan;
pub use target::{TargetError, TargetPlan};
