//! ringrelay: a thread-per-core WebSocket relay on io_uring.
//!
//! Layout, in layers that import only downward (docs/architecture.md, "Layers"; checked by
//! tests/layers.rs), with the file-by-file table there:
//! * `ws`: the I/O-free WebSocket codec (server and client side);
//! * `http`: request heads, routes, answers and their writer, and the client side of HTTP/1.1;
//! * `config`: the settings; `stats`: per-core counters and latency histograms;
//! * `runtime`: per-core machinery: the buffer pool and its chunks, the shared socket, the
//!   clock, the driver, the secure RNG;
//! * `limits`: per-core limiters, the client's address behind proxies, each address's home
//!   core, what admission learned, whole-server capacity, the refusal type;
//! * `auth`: the bearer tokens that admit a client;
//! * `session`: the per-core session registry, the pairing rules, the events a peer is sent,
//!   bridged requests waiting for their agent, messages kept for an absent peer, the replay
//!   window of `resume=`, and placement (a session's core, the parcel a connection crosses
//!   cores with);
//! * `fleet`: the cluster's state without I/O (the fleet view, the messages to the cluster
//!   thread, each worker's carried links and peer origins), below the context that holds it;
//! * `context`: the worker's context (`Core`, what one worker owns; `Shared`, what all
//!   share), which holds the state of the modules above in this list, and admission, whose
//!   checks read it;
//! * `relay`: the forwarding path, from a read to the write to the other peer;
//! * `bridge`: the HTTP bridge (a request becomes a message to the session's agent);
//! * `tunnel`: TCP tunnels (a public port's connections spliced to a client's data connections);
//! * `cluster`: several nodes sharing the sessions through Redis (the I/O; `fleet` is the
//!   state);
//! * `server`: the listeners, workers, the HTTP phase and cross-core handoff, and the entry
//!   (`server::run`) that runs on listeners the caller bound until a shutdown signal;
//! * `demo`: the files of the page to try a session from a browser;
//! * `agent`, `load`: clients of the relay: the program that answers the bridge on a user's
//!   machine, and the load generator.
//!
//! The crate's surface is its module tree: a module is `pub(crate)` unless something outside
//! the library needs it (`main.rs`, the benches, the fuzz targets, the integration tests), and
//! then only the submodules those users name are `pub`. What is left public is the entry
//! (`server::{run, Listeners, Shutdown, Server}`), the config, the clients (`agent`, `load`,
//! `ws::client`), and the I/O-free pieces fuzzed or benched on their own (codec, head parser,
//! routes, upgrade check, PROXY header, tokens, link opening, answer sniffer, decoder).
// `unsafe` is refused crate-wide and allowed by name in the two files that need it,
// runtime/chunk.rs (the vectored write's iovecs) and runtime/socket.rs (the stream shared by
// reader and writers, and the raw socket calls). One line here covers every module, new ones
// included, where a `forbid` per module would have to be remembered in each new file; a new
// `#![allow(unsafe_code)]` stands out in review. Every other top-level module, and runtime's
// other files, also `forbid` it, which no `allow` below them can lift; tests/layers.rs checks
// both (no `unsafe` outside the two files, a `forbid` in each module).
#![deny(unsafe_code)]
#![deny(clippy::undocumented_unsafe_blocks)]

pub mod agent;
pub mod auth;
pub mod bridge;
pub mod cluster;
pub mod config;
pub(crate) mod context;
pub(crate) mod demo;
pub(crate) mod fleet;
pub mod http;
pub mod limits;
pub mod load;
pub(crate) mod proxy;
pub mod relay;
pub(crate) mod runtime;
pub mod server;
pub(crate) mod session;
pub(crate) mod stats;
pub(crate) mod tls;
pub(crate) mod tunnel;
pub mod ws;
