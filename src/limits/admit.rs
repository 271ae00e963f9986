//! What admission learned about a connection, carried with it to its session's core. The
//! checks that decide it read the worker's context, so they live a layer up, in
//! `context::admit`.

use super::IpCharge;
use std::net::IpAddr;

/// What admission learned, carried with the connection to its session's core.
#[derive(Debug)]
pub struct Admitted {
    /// The client's address (named by a trusted proxy when the direct peer is one).
    pub ip: IpAddr,
    /// The role the connection takes: the one it asked for, else the one its token names.
    pub role: Option<String>,
    /// The connection's place in its client's count of open connections, held until the
    /// connection ends. `None` only for a connection carried in from another node that this
    /// node has not counted yet (its home core does, before it is seated).
    pub charge: Option<IpCharge>,
}
