//! Sessions and their peers, owned by one core each.

pub mod backlog;
pub mod bridged;
pub mod budget;
pub mod events;
pub mod handoff;
pub mod join;
pub mod peer;
pub mod registry;
pub mod replay;

pub use backlog::{backlog_of, Backlog};
pub use budget::{Charge, CoreBudget};
pub use join::{plan_join, JoinPlan};
pub use peer::Peer;
pub use registry::{Registry, Session};
pub use replay::{Gap, Replay};
