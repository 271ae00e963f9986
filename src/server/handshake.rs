//! Unfinished handshakes: a connection counts from its accept until its HTTP phase ends
//! (upgraded, answered, handed to another core, or dropped), per worker
//! (`limits.max_handshakes`) and per client address on the address's home core
//! (`limits.max_handshakes_per_ip`). Past either the connection is closed at once: a client
//! that trickles request heads holds at most that many descriptors and head buffers for
//! `limits.handshake_timeout`, not as many as it can open.
//!
//! A trusted proxy is many clients, so its own address is never charged per IP (it is still
//! under the per-worker cap); behind PROXY protocol the client the header names is charged
//! once the header is read.

use crate::context::Core;
use crate::limits::client_ip::trusted;
use crate::stats::bump;
use std::net::IpAddr;
use std::rc::Rc;

/// One connection's place among the unfinished handshakes; dropping it gives it back.
pub struct HandshakeSlot {
    core: Rc<Core>,
    /// The address charged per IP, if any.
    ip: Option<IpAddr>,
}

/// The address to charge per IP for a connection from `ip`: none for a trusted proxy.
pub fn per_ip(core: &Core, ip: IpAddr) -> Option<IpAddr> {
    (!trusted(ip, &core.config().security.trusted_proxies)).then_some(ip)
}

impl HandshakeSlot {
    /// Takes a slot on this worker, and one of `ip`'s (whose home this core is) when given;
    /// `None`, counted, when either is full.
    pub fn take(core: &Rc<Core>, ip: Option<IpAddr>) -> Option<HandshakeSlot> {
        if core.handshakes.get() >= core.config().limits.max_handshakes {
            bump(&core.stats.handshakes_refused_worker, 1);
            return None;
        }
        let mut slot = HandshakeSlot {
            core: core.clone(),
            ip: None,
        };
        core.handshakes.set(core.handshakes.get() + 1);
        match ip {
            Some(ip) if !slot.charge_ip(ip) => None,
            _ => Some(slot),
        }
    }

    /// Charges the slot to `ip` as well (a client a PROXY header named after the slot was
    /// taken); `false`, counted, when `ip` has its fill.
    pub fn charge_ip(&mut self, ip: IpAddr) -> bool {
        debug_assert!(self.ip.is_none());
        let core = &self.core;
        if !core.ip_limits.handshake_begin(ip, core.clock.now_ms()) {
            bump(&core.stats.handshakes_refused_per_ip, 1);
            return false;
        }
        self.ip = Some(ip);
        true
    }
}

impl Drop for HandshakeSlot {
    fn drop(&mut self) {
        let core = &self.core;
        core.handshakes.set(core.handshakes.get().saturating_sub(1));
        if let Some(ip) = self.ip {
            core.ip_limits.handshake_end(ip, core.clock.now_ms());
        }
    }
}
