//! Scale-out (docs/cluster.md): nodes register in Redis, each session is owned by one node,
//! and a peer that lands on another node is carried to the owner over an authenticated
//! node-to-node link. Off unless `cluster.redis_url` is set; a single node starts nothing of
//! this. Redis holds who is in the fleet and who owns what, never messages: nothing here runs
//! per message.
//!
//! * `node`, `claim`, `link`, `boundary`: the registry entry, the ownership scripts, the
//!   link's opening and the close-frame tracker, all without I/O;
//! * `breaker`, `fleet`, `view`, `member`, `owners`: the cluster thread and what it knows;
//! * `ask`, `commands`, `local`: what workers and that thread say to each other, and what
//!   each worker keeps;
//! * `place`, `carry`, `inbound`, `pending`: deciding where a new peer goes, carrying it,
//!   receiving it, and capping openings on the internal listener not yet proved;
//! * `redis`: opening a Redis connection, with its timeouts;
//! * `status`: `ringrelay cluster status`.

pub(crate) mod ask;
pub mod boundary;
pub(crate) mod breaker;
pub(crate) mod carry;
pub(crate) mod claim;
pub(crate) mod commands;
pub(crate) mod fleet;
pub(crate) mod inbound;
pub mod link;
pub(crate) mod local;
pub(crate) mod member;
pub(crate) mod node;
pub(crate) mod owners;
pub(crate) mod pending;
pub(crate) mod place;
pub(crate) mod redis;
pub mod status;
pub(crate) mod view;

pub use local::{Local, Origin};
pub use member::{Member, Wiring};
pub use view::{Identity, View};
