//! HTTP/1.1 as far as the relay needs it: one request head per connection, parsed with
//! httparse, routed, and answered with a small writer (every answer closes the connection,
//! so no keep-alive state is kept per client).
#![forbid(unsafe_code)]

pub(crate) mod chunked;
pub(crate) mod client;
pub(crate) mod request;
pub(crate) mod response;
pub mod route;
pub mod upgrade;
pub(crate) mod write;

pub use request::{parse_head, HeadError, HeadScan, RequestHead};
pub use response::Response;
pub use route::{Route, RouteError};
