//! Forwarding between the peers of a session.

pub mod away;
pub mod blocked;
pub mod conn;
pub mod held;
pub mod inbound;
pub mod join;
pub mod keepalive;
pub mod resume;

/// The events a peer is sent are the session's (a `Peer` writes them); relay code builds them.
pub use crate::session::events;
