//! The HTTP bridge's pieces that involve no I/O: the JSON messages exchanged with the agent,
//! which headers may cross, and how a request's body is framed. The server side that routes
//! a request to the agent and waits for its answer is built on these (docs/bridge.md).

pub mod framing;
pub mod headers;
pub mod message;

pub use framing::{body_length, BodyLength, FramingError};
pub use headers::{forwardable, is_hop_by_hop};
pub use message::{parse_response, AgentReplyError, HttpRequestMsg, HttpResponseMsg};
