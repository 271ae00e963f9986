//! Tunnels held on this server, counted across workers (`tunnel.max_tunnels`,
//! `tunnel.reserved_percent`, `tunnel.max_tunnels_per_subject`). A tunnel is counted from
//! the moment it opens until it ends (its grace included), so a resume never needs a new
//! place. Taken and given back once per tunnel, never per connection or byte: the lock is
//! off the forwarding path.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// This worker's tunnel gauges, for /stats and /metrics: written by the tunnel code on
/// this worker only.
#[derive(Debug, Default)]
pub struct TunnelGauges {
    /// Tunnels held here (their grace included).
    pub tunnels: std::cell::Cell<u64>,
    /// Public connections waiting for their data connection.
    pub waiting: std::cell::Cell<u64>,
    /// Public connections joined to their data connection.
    pub joined: std::cell::Cell<u64>,
}

impl TunnelGauges {
    pub fn add(cell: &std::cell::Cell<u64>, delta: i64) {
        cell.set(cell.get().saturating_add_signed(delta));
    }
}

/// Why a tunnel could not be counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TunnelRefusal {
    /// The server holds its share: `max_tunnels`, less the reserve for a tunnel that is not
    /// reconnecting.
    AtCapacity,
    /// The subject holds its quota.
    Quota,
}

/// What the limits are for one request.
#[derive(Debug, Clone, Copy)]
pub struct TunnelLimits {
    pub max_tunnels: usize,
    pub reserved_percent: usize,
    /// The subject's quota: its credential's `tunnels` grant, else the per-subject key.
    pub per_subject: usize,
    /// The request is a reconnect (it brought a resume key): it may use the reserve.
    pub reconnecting: bool,
}

#[derive(Debug, Default)]
struct Counts {
    total: usize,
    by_subject: HashMap<String, usize>,
}

/// The server's count of tunnels.
#[derive(Debug, Default, Clone)]
pub struct Tally(Arc<Mutex<Counts>>);

/// One tunnel's place in the tally; dropping it gives the place back.
#[derive(Debug)]
pub struct TunnelCharge {
    tally: Tally,
    subject: Option<String>,
}

impl Tally {
    /// Counts one more tunnel for `subject`, or says why not.
    pub fn take(
        &self,
        subject: Option<&str>,
        limits: TunnelLimits,
    ) -> Result<TunnelCharge, TunnelRefusal> {
        let mut c = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let reserve = limits.max_tunnels * limits.reserved_percent / 100;
        let room = if limits.reconnecting {
            limits.max_tunnels
        } else {
            limits.max_tunnels - reserve
        };
        if c.total >= room {
            return Err(TunnelRefusal::AtCapacity);
        }
        if let Some(s) = subject {
            let held = c.by_subject.get(s).copied().unwrap_or(0);
            if held >= limits.per_subject {
                return Err(TunnelRefusal::Quota);
            }
            c.by_subject.insert(s.to_string(), held + 1);
        }
        c.total += 1;
        Ok(TunnelCharge {
            tally: self.clone(),
            subject: subject.map(str::to_string),
        })
    }

    /// Tunnels held now.
    pub fn total(&self) -> usize {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).total
    }
}

impl Drop for TunnelCharge {
    fn drop(&mut self) {
        let mut c = self.tally.0.lock().unwrap_or_else(|e| e.into_inner());
        c.total = c.total.saturating_sub(1);
        if let Some(s) = &self.subject {
            if let Some(n) = c.by_subject.get_mut(s) {
                *n -= 1;
                if *n == 0 {
                    c.by_subject.remove(s);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(per_subject: usize, reconnecting: bool) -> TunnelLimits {
        TunnelLimits {
            max_tunnels: 10,
            reserved_percent: 20,
            per_subject,
            reconnecting,
        }
    }

    #[test]
    fn the_reserve_is_for_reconnects_and_quotas_per_subject() {
        let t = Tally::default();
        let held: Vec<_> = (0..8)
            .map(|i| t.take(Some(&format!("s{i}")), limits(1, false)).unwrap())
            .collect();
        // 8 of 10 with 20% reserved: a new tunnel is refused, a reconnect is not.
        assert_eq!(
            t.take(None, limits(1, false)).unwrap_err(),
            TunnelRefusal::AtCapacity
        );
        let r1 = t.take(None, limits(1, true)).unwrap();
        let _r2 = t.take(None, limits(1, true)).unwrap();
        assert_eq!(
            t.take(None, limits(1, true)).unwrap_err(),
            TunnelRefusal::AtCapacity
        );
        drop(r1);
        assert_eq!(t.total(), 9);
        drop(held);
        assert_eq!(t.total(), 1);
        // A quota of 2: the third is refused, until one ends.
        let a = t.take(Some("alice"), limits(2, false)).unwrap();
        let _b = t.take(Some("alice"), limits(2, false)).unwrap();
        assert_eq!(
            t.take(Some("alice"), limits(2, false)).unwrap_err(),
            TunnelRefusal::Quota
        );
        assert!(t.take(Some("bob"), limits(2, false)).is_ok());
        drop(a);
        assert!(t.take(Some("alice"), limits(2, false)).is_ok());
    }
}
