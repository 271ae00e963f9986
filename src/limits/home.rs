//! Every client address has a home core, `home_core(ip, workers)`, and all of its per-IP
//! state (connection rate, open connections, unfinished handshakes) lives there, with the
//! whole configured figure. The public listeners' reuseport group runs the same function in
//! classic BPF (`server/steer.rs`), so the kernel puts a client's connections on its home core
//! to begin with; a connection that arrives elsewhere (behind a proxy, or without the BPF
//! program) is handed there before it is admitted. Nothing is shared between threads.
//!
//! An admitted connection holds an [`IpCharge`] on its address's home core for as long as it
//! lives, wherever it lives: dropping the charge gives the count back, on the spot when it is
//! dropped on the home core, otherwise by a message over a bounded channel (once per
//! connection, off the forwarding path).

use std::cell::RefCell;
use std::net::IpAddr;

/// Multiplier of the mix: 2^32 divided by the golden ratio (Knuth's multiplicative hashing),
/// so addresses that differ only in low bits still spread over the cores.
pub const MIX: u32 = 0x9E37_79B1;
/// The mix keeps the high half of the product, where the multiplication stirred every bit.
pub const MIX_SHIFT: u32 = 16;

/// The 32 bits the home is computed from: the IPv4 address, or for IPv6 the exclusive-or of
/// the two words of its /64 (the block one host usually holds, as the per-IP tables key it).
/// IPv4-mapped IPv6 addresses are their IPv4 address, as the kernel sees them on the wire.
pub fn home_key(ip: IpAddr) -> u32 {
    match ip.to_canonical() {
        IpAddr::V4(a) => u32::from(a),
        IpAddr::V6(a) => {
            let o = a.octets();
            let w0 = u32::from_be_bytes([o[0], o[1], o[2], o[3]]);
            let w1 = u32::from_be_bytes([o[4], o[5], o[6], o[7]]);
            w0 ^ w1
        }
    }
}

/// The worker that owns `ip`'s per-IP state. The BPF program computes exactly this with 32-bit
/// unsigned arithmetic: `((key * MIX) >> MIX_SHIFT) % workers`.
pub fn home_core(ip: IpAddr, workers: usize) -> usize {
    if workers <= 1 {
        return 0;
    }
    let mixed = home_key(ip).wrapping_mul(MIX) >> MIX_SHIFT;
    (mixed % workers as u32) as usize
}

/// One open connection counted against its client's address on the address's home core.
/// Dropping it gives the count back, wherever that happens. `Send`, so it travels with a
/// connection handed to another core.
#[derive(Debug)]
#[must_use = "dropping the charge gives the connection's count back at once"]
pub struct IpCharge {
    ip: IpAddr,
    /// `None` when nothing was counted (per-IP open limits off): nothing to give back. A core
    /// index (below `config::MAX_WORKERS`); small, since every open connection holds one.
    home: Option<u16>,
}

// Every core index fits the `u16` a charge keeps.
const _: () = assert!(crate::config::MAX_WORKERS <= 1 << u16::BITS);

impl IpCharge {
    pub(super) fn counted(ip: IpAddr, home: u16) -> IpCharge {
        IpCharge {
            ip,
            home: Some(home),
        }
    }

    /// A charge with nothing to give back, for an address the limits do not count.
    pub fn uncounted(ip: IpAddr) -> IpCharge {
        IpCharge { ip, home: None }
    }

    pub fn ip(&self) -> IpAddr {
        self.ip
    }
}

type Route = Box<dyn Fn(IpAddr, usize)>;

thread_local! {
    /// How this thread gives a count back to a home core: the worker's own table when it is
    /// the home, its release channel otherwise. Set once by each worker as it starts; a charge
    /// dropped on any other thread (after shutdown) gives nothing back, as nothing is counting.
    static RELEASE: RefCell<Option<Route>> = const { RefCell::new(None) };
}

/// Installs this thread's route for released charges: `route(ip, home)`.
pub fn route_releases(route: impl Fn(IpAddr, usize) + 'static) {
    RELEASE.with(|r| *r.borrow_mut() = Some(Box::new(route)));
}

impl Drop for IpCharge {
    fn drop(&mut self) {
        let Some(home) = self.home else { return };
        let (ip, home) = (self.ip, usize::from(home));
        // `try_with`: during the thread's own teardown the route may already be gone.
        let _ = RELEASE.try_with(|r| {
            if let Ok(r) = r.try_borrow() {
                if let Some(route) = r.as_ref() {
                    route(ip, home);
                }
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;
    use std::rc::Rc;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn one_address_one_home_and_addresses_spread() {
        assert_eq!(home_core(ip("192.0.2.1"), 1), 0);
        for w in [2, 3, 4, 8] {
            let mut counts = vec![0usize; w];
            for i in 0..4096u32 {
                let a = IpAddr::from((0x0a00_0000 + i).to_be_bytes());
                counts[home_core(a, w)] += 1;
            }
            let fair = 4096 / w;
            assert!(
                counts.iter().all(|&c| c > fair * 3 / 4 && c < fair * 5 / 4),
                "{w} workers: {counts:?}"
            );
        }
    }

    #[test]
    fn ipv6_homes_by_its_slash_64_and_mapped_v4_by_its_v4() {
        let w = 4;
        assert_eq!(
            home_core(ip("2001:db8:1:2::1"), w),
            home_core(ip("2001:db8:1:2:ffff:ffff:ffff:ffff"), w)
        );
        assert_eq!(
            home_core(ip("::ffff:192.0.2.9"), w),
            home_core(ip("192.0.2.9"), w)
        );
        assert_eq!(home_key(ip("2001:db8:1:2::1")), 0x2001_0db8 ^ 0x0001_0002);
    }

    #[test]
    fn a_dropped_charge_is_routed_to_its_home_once() {
        let seen = Rc::new(Cell::new(0));
        let s = seen.clone();
        route_releases(move |addr, home| {
            assert_eq!((addr, home), (ip("10.0.0.1"), 3));
            s.set(s.get() + 1);
        });
        drop(IpCharge::counted(ip("10.0.0.1"), 3));
        drop(IpCharge::uncounted(ip("10.0.0.1")));
        assert_eq!(seen.get(), 1);
    }
}
