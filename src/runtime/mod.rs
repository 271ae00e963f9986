//! Per-core machinery: buffers, sockets, the clock, and the context each worker owns.

pub(crate) mod chunk;
pub(crate) mod clock;
pub(crate) mod core;
pub(crate) mod driver;
pub(crate) mod pool;
pub(crate) mod rng;
pub(crate) mod socket;

pub use self::core::{Core, Shared};
