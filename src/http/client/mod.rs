//! The client side of HTTP/1.1, without I/O: URLs, body framing, an incremental
//! response reader. Two clients use it: the load generator's `--mode http` and the agent,
//! which performs bridged requests against the user's local API.

pub mod error;
pub mod framing;
pub mod response;
pub mod url;

pub use error::WireError;
pub use framing::{closes, framing, Framing};
pub use response::{Answer, ResponseReader, ResponseSink, MAX_HEAD};
pub use url::{parse_url, parse_web_url, HttpUrl};

/// Most header lines in a head either client reads (and the load generator's target): the
/// relay's own `limits.max_headers` default.
pub const MAX_HEADERS: usize = 100;
