//! Per-core machinery: buffers, sockets (plain or TLS), the splice pump, the clock, the driver
//! and the secure RNG. The context each worker owns, which holds them, is `context` (a layer
//! up).

pub(crate) mod chunk;
pub(crate) mod clock;
pub(crate) mod driver;
pub(crate) mod pool;
pub(crate) mod rng;
pub(crate) mod socket;
pub(crate) mod splice;
#[cfg(debug_assertions)]
pub(crate) mod stall;
pub(crate) mod stream;
pub(crate) mod tls;
