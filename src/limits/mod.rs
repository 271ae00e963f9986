//! Per-core limiters. Each worker owns its own tables and buckets: nothing here is shared
//! between threads, so a limit check is a few arithmetic operations on the worker's own
//! memory, never a lock or a message to another core.
//!
//! A per-IP figure is not split between workers: each client address has a home core
//! ([`home`]) that keeps all of its per-IP state with the whole configured figure. The only
//! cross-core traffic is a connection handed to its address's home before admission (when it
//! arrived elsewhere) and one message giving its count back when it ends on another core.
//! The one server-wide count is the tunnels' (`tunnels`), taken and given back once per
//! tunnel, never per connection or byte.
#![forbid(unsafe_code)]

pub(crate) mod admit;
pub(crate) mod bucket;
pub(crate) mod capacity;
pub(crate) mod cidr;
pub(crate) mod client_ip;
pub(crate) mod home;
pub(crate) mod ip;
pub mod proxy_protocol;
pub(crate) mod refusal;
pub mod saved;
pub(crate) mod throttle;
pub(crate) mod tunnels;

pub use bucket::{Bucket, Rate};
pub use client_ip::client_ip;
pub use home::{home_core, IpCharge};
pub use ip::{IpLimits, IpRefusal};
pub use refusal::Refusal;
pub use throttle::Throttle;
