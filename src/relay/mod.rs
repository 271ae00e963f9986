//! Forwarding between the peers of a session.

pub mod away;
pub mod blocked;
pub mod conn;
pub mod events;
pub mod held;
pub mod inbound;
pub mod join;
pub mod keepalive;
pub mod resume;
