//! `--mode tunnel`: load through a TCP tunnel's public address (`--url tcp://HOST:PORT`) with
//! an echo service behind it (`--mode tunnel-echo`). It knows nothing of ringrelay: the same
//! run measures a bore tunnel, which is how scripts/tunnel_bench.sh compares the two.
//!
//! * `bulk`: `--pairs` connections each write `--size`-byte chunks as fast as the tunnel takes
//!   them while reading the echo back; MB/s is the echoed bytes read in the measured time
//!   (each crossed the tunnel both ways).
//! * `connect`: `--pairs` loops that connect, send `--size` bytes, read them back and close:
//!   new connections per second through the tunnel, and how long each took.
//! * `rr`: `--pairs` connections each send a `--size`-byte request and wait for the echo.
//!   With `--rate` (requests per second over all connections) each connection keeps its own
//!   schedule and latency counts from when the request was due, so a stall is not hidden
//!   (no coordinated omission); without it, back to back.

pub(crate) mod echo;
pub(crate) mod engine;

pub use echo::{serve, EchoPlan};
pub use engine::{run, TunnelPlan, TunnelReport, TunnelTest};
