//! Forwarding between the peers of a session.
#![forbid(unsafe_code)]

pub(crate) mod ack;
pub(crate) mod away;
pub(crate) mod blocked;
pub(crate) mod conn;
pub mod handover;
pub(crate) mod held;
pub mod inbound;
pub(crate) mod join;
pub(crate) mod keepalive;
pub(crate) mod resume;
pub mod stop;
