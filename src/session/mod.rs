//! Sessions and their peers, owned by one core each.
#![forbid(unsafe_code)]

pub(crate) mod acks;
pub(crate) mod backlog;
pub mod bridged;
pub(crate) mod budget;
pub mod events;
pub mod handoff;
pub(crate) mod join;
pub mod park;
pub(crate) mod peer;
pub mod persist;
pub(crate) mod registry;
pub(crate) mod replay;

pub use backlog::{backlog_of, Backlog};
pub use budget::CoreBudget;
pub use join::{plan_join, JoinPlan};
pub use peer::{Flag, Peer};
pub use registry::{Registry, Session};
pub use replay::Replay;
