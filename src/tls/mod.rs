//! TLS with rustls (ring provider, named explicitly: never the process-wide default).
//!
//! * `client`: the configuration of the relay's own clients (`ringrelay agent`, `ringrelay
//!   load`) for `wss://` and `https://`, and the TLS stream they run over monoio's owned-buffer
//!   I/O.
#![forbid(unsafe_code)]

pub mod client;
