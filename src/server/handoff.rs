//! Handing a connection to the core that owns its session: the raw socket and every byte
//! read so far cross over once, right after the request head is parsed.

use super::admit::Admitted;
use std::time::Instant;

pub struct Handoff {
    pub stream: std::net::TcpStream,
    /// The request head and anything that followed it.
    pub bytes: Vec<u8>,
    pub accepted_at: Instant,
    /// Admission ran on the accepting core; the owner does not charge the limits twice.
    pub admitted: Admitted,
    /// Set when another node carried this connection here (cluster mode).
    pub carried: Option<crate::cluster::link::Carried>,
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
