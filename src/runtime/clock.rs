//! A coarse per-core clock: read on every message, so it is a plain cell updated by the
//! keepalive tick instead of a clock syscall per read.
#![forbid(unsafe_code)]

use std::cell::Cell;
use std::time::Instant;

pub struct Clock {
    start: Instant,
    now_ms: Cell<u64>,
}

impl Clock {
    pub fn new(start: Instant) -> Clock {
        let c = Clock {
            start,
            now_ms: Cell::new(0),
        };
        c.tick();
        c
    }

    /// Milliseconds since the server started, as of the last tick.
    pub fn now_ms(&self) -> u64 {
        self.now_ms.get()
    }

    pub fn tick(&self) -> u64 {
        let ms = self.start.elapsed().as_millis() as u64;
        self.now_ms.set(ms);
        ms
    }
}
