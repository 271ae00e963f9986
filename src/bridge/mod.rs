//! The HTTP bridge: a plain HTTP request for a session becomes a message to the session's
//! agent, and the agent's answer becomes the response (docs/bridge.md). The pure pieces (the
//! JSON messages, which headers may cross, body framing, the answer's HTTP form) are apart from the I/O in `serve`, which runs on the core that owns the session.
#![forbid(unsafe_code)]

pub(crate) mod answers;
pub mod cors;
pub(crate) mod failure;
pub(crate) mod framing;
pub(crate) mod headers;
pub(crate) mod message;
pub(crate) mod reply;
pub(crate) mod serve;
pub mod sniff;

/// The requests waiting for their agent are per-core session state (`session::bridged`),
/// held by the worker's context below this module.
pub use framing::{body_length, BodyLength, FramingError};
pub use headers::{forwardable, is_hop_by_hop};
pub use message::{
    parse_request, parse_response, AgentReplyError, BridgedRequest, HttpRequestMsg,
    HttpResponseMsg, RequestMsgError,
};

/// The upgrade answer header that gives an agent connection its key (docs/bridge.md).
pub const KEY_HEADER: &str = "Ringrelay-Bridge-Key";
