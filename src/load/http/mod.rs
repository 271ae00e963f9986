//! `ringrelay load --mode http` and `--mode http-target`: plain HTTP/1.1 load on monoio, for
//! measuring the relay's HTTP bridge against the same requests sent straight to the API
//! behind it (docs/bridge-bench.md).
//!
//! * `request`: the URL, the request bytes, and the request head as the target reads it;
//! * `response`: an incremental response reader;
//! * `body`: body framing (Content-Length, chunked) and the chunked decoder;
//! * `error`: what can go wrong, typed;
//!
//! those four do no I/O. Then:
//! * `client`: one slot's request and answer on monoio;
//! * `engine`: the slots on their threads, the clock, the counts;
//! * `report`: the result, as JSON or text;
//! * `target`: the stand-in API server.

#![forbid(unsafe_code)]

pub mod body;
pub mod client;
pub mod engine;
pub mod error;
pub mod report;
pub mod request;
pub mod response;
pub mod target;

pub use engine::HttpPlan;
pub use report::HttpReport;
pub use target::{TargetError, TargetPlan};
