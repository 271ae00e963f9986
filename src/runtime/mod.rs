//! Per-core machinery: buffers, sockets, the clock, the driver and the secure RNG. The
//! context each worker owns, which holds them, is `context` (a layer up).

pub mod chunk;
pub mod clock;
pub mod driver;
pub mod pool;
pub mod rng;
pub mod socket;
