//! Scale-out, part one (docs/cluster.md): nodes register in Redis and read the fleet. Off
//! unless `cluster.redis_url` is set; a single node starts nothing of this.
//!
//! * `node`: a node's registry entry and the keys, without I/O;
//! * `breaker`: the circuit breaker around Redis;
//! * `fleet`: reading every node's entry;
//! * `member`: the membership thread and the view /health and /stats read;
//! * `status`: `ringrelay cluster status`.
//!
//! Redis holds who is in the fleet, never messages: nothing here runs per message.

pub mod breaker;
pub mod fleet;
pub mod member;
pub mod node;
pub mod status;

pub use member::{Identity, Member, View};
