//! The cluster's state without I/O (docs/cluster.md), defined below the worker's context
//! that holds it, so that the context (`Core`, `Shared`) names no module above it:
//!
//! * `node`, `claim`: a node's registry entry and the session-ownership scripts;
//! * `share`: tunnels across the fleet (`GET /fleet`, sending a tunnel where there is room);
//! * `breaker`, `view`: the breaker around Redis and what this node knows of the fleet
//!   (`Shared::cluster`);
//! * `ask`: what workers and the cluster thread say to each other (`Shared::cluster_requests`);
//! * `local`, `carry`, `pending`: what each worker keeps (`Core::cluster_local`): the peers it
//!   carries to other nodes, where the peers seated here came from, and the internal
//!   listener's openings not yet proved.
//!
//! The I/O (Redis, the links, the cluster thread, the methods that take the context) is
//! `cluster`, a layer above the context.
#![forbid(unsafe_code)]
// Without the `cluster` cargo feature there is no cluster thread: what only it uses (the
// breaker, the scripts, the registry keys, the view's updates) stays built, and tested, but
// unused.
#![cfg_attr(not(feature = "cluster"), allow(dead_code))]

pub(crate) mod ask;
pub(crate) mod breaker;
pub(crate) mod carry;
pub(crate) mod claim;
pub(crate) mod local;
pub(crate) mod node;
pub(crate) mod pending;
pub(crate) mod share;
pub(crate) mod view;
