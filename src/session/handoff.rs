//! Handing a connection to another core: to its client address's home core (where its per-IP
//! state lives) when it arrived elsewhere, and to the core that owns its session once it is
//! admitted. The raw socket and every byte read so far cross over, with what was decided.

use crate::limits::admit::Admitted;
use crate::runtime::tls::TlsSession;
use serde::{Deserialize, Serialize};
use std::net::IpAddr;
use std::time::Instant;

/// How far a connection got before it was handed over, and so what the receiving core does.
pub enum Stage {
    /// Nothing read but a PROXY header, if any: the client's home core takes a handshake slot
    /// for it and reads the request. `client` is the address a PROXY header named; `None`
    /// when there was none (the direct peer is the client).
    Accepted { client: Option<IpAddr> },
    /// The request head was read and names a client behind a trusted proxy: the client's home
    /// core admits it (rate, Origin, token) and counts it.
    Admit { client: IpAddr },
    /// Admitted: the session's core upgrades it. A connection carried in from another node is
    /// admitted but not yet counted here; its home core counts it first.
    Admitted(Admitted),
}

/// Everything a handed-over connection brings besides its socket.
pub struct Parcel {
    /// What was read so far: a request head and anything after it (or less, for `Accepted`).
    pub bytes: Vec<u8>,
    pub accepted_at: Instant,
    /// The direct peer's address.
    pub peer: IpAddr,
    pub stage: Stage,
    /// Set when another node carried this connection here (cluster mode).
    pub carried: Option<Carried>,
    /// The connection's TLS, which crosses with its fd.
    pub tls: Tls,
}

/// Whether a handed-over connection speaks TLS, and how far it got.
pub enum Tls {
    Plain,
    /// Accepted on the TLS listener, handshake not started: the receiving core runs it.
    Pending,
    /// The session, its keys and buffers: the receiving core reads and writes through it.
    On(Box<TlsSession>),
}

/// What another node's admission decided about a peer it carries here (the description in
/// the cluster link's opening, `cluster::link`), so the owner neither re-checks nor
/// double-charges it (the same as a handoff between cores carries).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Carried {
    /// The carrying node's id.
    pub from: String,
    pub session: String,
    /// The client's address as the carrier's admission saw it.
    pub ip: IpAddr,
    /// The role its token granted or it asked for.
    pub role: Option<String>,
    /// The peer's region: its hint, else the carrying node's.
    pub region: String,
}

pub struct Handoff {
    pub stream: std::net::TcpStream,
    pub parcel: Parcel,
}

/// FNV-1a: stable across processes and builds, so a session maps to the same core index
/// wherever it is computed.
pub fn owner_core(session: &str, workers: usize) -> usize {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in session.bytes() {
        h ^= b as u64;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    (h % workers as u64) as usize
}

#[cfg(test)]
mod tests {
    #[test]
    fn spreads_and_is_stable() {
        let mut counts = [0usize; 4];
        for i in 0..4000 {
            counts[super::owner_core(&format!("s{i}"), 4)] += 1;
        }
        assert!(counts.iter().all(|&c| c > 800), "{counts:?}");
        assert_eq!(super::owner_core("abc", 1), 0);
        assert_eq!(super::owner_core("abc", 7), super::owner_core("abc", 7));
    }
}
