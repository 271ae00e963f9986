//! ringrelay: a thread-per-core WebSocket relay on io_uring.
//!
//! Layout: `ws` is the I/O-free WebSocket codec, `http` the request head and answers,
//! `relay` the forwarding path, `session` the per-core session registry, `runtime` the
//! per-core machinery (buffers, sockets, driver), `server` the listeners and workers,
//! `config` the settings, `stats` the counters, `auth` the bearer tokens that admit a client,
//! `bridge` the HTTP bridge, `agent` the program that answers it on a user's machine, `demo`
//! the page to try a session from a browser.
// `unsafe` is refused crate-wide and allowed by name in the two files that need it,
// runtime/chunk.rs (the vectored write's iovecs) and runtime/socket.rs (the stream shared by
// reader and writers, and the raw socket calls). One line here covers every module, new ones
// included, where a `forbid` per module would have to be remembered in each new file; a new
// `#![allow(unsafe_code)]` stands out in review. (A few modules also `forbid` it outright.)
#![deny(unsafe_code)]
#![deny(clippy::undocumented_unsafe_blocks)]

pub mod agent;
pub mod auth;
pub mod bridge;
pub mod cluster;
pub mod config;
pub mod demo;
pub mod http;
pub mod limits;
pub mod load;
pub mod relay;
pub mod runtime;
pub mod server;
pub mod session;
pub mod stats;
pub mod ws;
