//! Per-core limiters. Each worker owns its own tables and buckets: nothing here is shared
//! between threads, so a limit check is a few arithmetic operations on the worker's own
//! memory, never a lock or a message to another core.
//!
//! A whole-server per-IP figure is split evenly: each worker enforces `ceil(figure / W)`
//! (see [`per_core_share`]). One IP's connections spread over the workers (SO_REUSEPORT
//! hashes each connection's address and port pair; sessions hash to their owner core), so an IP
//! gets close to the configured figure in total and never more than `W * ceil(figure / W)`.

pub mod bucket;
pub mod client_ip;
pub mod ip;
pub mod proxy_protocol;
pub mod throttle;

pub use bucket::{Bucket, Rate};
pub use client_ip::client_ip;
pub use ip::{IpLimits, IpRefusal};
pub use throttle::Throttle;

/// A worker's share of a whole-server figure; 0 (off) stays 0.
pub fn per_core_share(figure: usize, workers: usize) -> usize {
    figure.div_ceil(workers.max(1))
}

#[cfg(test)]
mod tests {
    #[test]
    fn shares_round_up_and_keep_off() {
        assert_eq!(super::per_core_share(10, 3), 4);
        assert_eq!(super::per_core_share(10, 1), 10);
        assert_eq!(super::per_core_share(1, 4), 1);
        assert_eq!(super::per_core_share(0, 4), 0);
    }
}
