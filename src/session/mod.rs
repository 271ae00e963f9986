//! Sessions and their peers, owned by one core each.

pub mod backlog;
pub mod join;
pub mod peer;
pub mod registry;

pub use backlog::Backlog;
pub use join::{plan_join, JoinPlan};
pub use peer::Peer;
pub use registry::{Registry, Session};
