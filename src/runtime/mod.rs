//! Per-core machinery: buffers, sockets, the clock, and the context each worker owns.

pub mod chunk;
pub mod clock;
pub mod core;
pub mod driver;
pub mod pool;
pub mod rng;
pub mod socket;

pub use self::core::{Core, Shared};
