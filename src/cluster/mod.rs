//! Scale-out (docs/cluster.md): nodes register in Redis, each session is owned by one node,
//! and a peer that lands on another node is carried to the owner over an authenticated
//! node-to-node link. Off unless `cluster.redis_url` is set; a single node starts nothing of
//! this. Redis holds who is in the fleet and who owns what, never messages: nothing here runs
//! per message.
//!
//! * `link`, `boundary`: the link's opening and the close-frame tracker, without I/O;
//! * `fleet`, `member`, `owners`: the cluster thread (reading the fleet, membership, owner
//!   lookups and releases);
//! * `ask`, `commands`, `local`: a worker asking that thread, obeying its commands, and
//!   counting and ending what it keeps;
//! * `place`, `carry`, `inbound`: deciding where a new peer goes, carrying it, receiving it;
//! * `redis`: opening a Redis connection, with its timeouts;
//! * `restore`: claiming back the sessions a restart read from `session.state_dir`;
//! * `status`: `ringrelay cluster status`.
//!
//! The Redis client is the `cluster` cargo feature (on by default). Without it `fleet`,
//! `member`, `owners` and `redis` are left out and `absent` stands in for the member; the
//! rest (the link, carrying, placing) still builds but never runs, as on a single node.
//!
//! The I/O-free half is defined a layer down, in `crate::fleet` (not `cluster::fleet`, which
//! reads the fleet from Redis), below the worker's context that holds part of it
//! (`Core::cluster_local`, `Shared::cluster`, `Shared::cluster_requests`): the registry entry
//! and the ownership scripts (`node`, `claim`), the breaker and what the node knows of the
//! fleet (`breaker`, `view`), the messages of `ask`, and what each worker keeps (`Local`,
//! `Carry`, `PendingLinks`). Code names them there (`crate::fleet::...`); the methods that
//! take the context stay here as `impl` blocks.
#![forbid(unsafe_code)]

#[cfg(not(feature = "cluster"))]
mod absent;
pub(crate) mod ask;
pub mod boundary;
pub(crate) mod carry;
pub(crate) mod commands;
#[cfg(feature = "cluster")]
pub(crate) mod fleet;
pub(crate) mod inbound;
pub mod link;
pub(crate) mod local;
#[cfg(feature = "cluster")]
pub(crate) mod member;
#[cfg(feature = "cluster")]
pub(crate) mod owners;
pub(crate) mod place;
#[cfg(feature = "cluster")]
pub(crate) mod redis;
#[cfg(feature = "cluster")]
pub(crate) mod restore;
pub mod status;

#[cfg(not(feature = "cluster"))]
pub use absent::{claim_back, Member, Wiring, NOT_BUILT};
#[cfg(feature = "cluster")]
pub use member::{Member, Wiring};
#[cfg(feature = "cluster")]
pub use restore::claim_back;
