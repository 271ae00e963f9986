//! Per-core pool of read buffers. A connection holds a buffer only between a readiness
//! notification and the end of the write that forwards what was read, so an idle connection
//! holds none and the pool's size follows the number of connections busy at once.

use super::chunk::Chunk;
use std::cell::{Cell, RefCell};

pub struct BufPool {
    free: RefCell<Vec<Chunk>>,
    buf_bytes: usize,
    keep: usize,
    /// Buffers handed out and not yet returned.
    pub in_use: Cell<usize>,
    /// Buffers allocated because the free list was empty.
    pub allocated: Cell<u64>,
}

impl BufPool {
    pub fn new(buf_bytes: usize, keep: usize) -> BufPool {
        BufPool { free: RefCell::new(Vec::new()), buf_bytes, keep, in_use: Cell::new(0), allocated: Cell::new(0) }
    }

    pub fn take(&self) -> Chunk {
        self.in_use.set(self.in_use.get() + 1);
        self.free.borrow_mut().pop().unwrap_or_else(|| {
            self.allocated.set(self.allocated.get() + 1);
            Chunk::new(self.buf_bytes)
        })
    }

    /// Returns a buffer; past `keep` idle buffers, or if it grew, it is freed instead.
    pub fn put(&self, mut c: Chunk) {
        self.in_use.set(self.in_use.get().saturating_sub(1));
        let mut free = self.free.borrow_mut();
        if free.len() < self.keep && c.capacity() == self.buf_bytes {
            c.data.clear();
            c.segs.clear();
            free.push(c);
        }
    }

    pub fn buf_bytes(&self) -> usize {
        self.buf_bytes
    }

    pub fn idle(&self) -> usize {
        self.free.borrow().len()
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn keeps_at_most_keep_buffers() {
        let p = super::BufPool::new(1024, 2);
        let a: Vec<_> = (0..4).map(|_| p.take()).collect();
        assert_eq!(p.in_use.get(), 4);
        assert_eq!(p.allocated.get(), 4);
        for c in a {
            p.put(c);
        }
        assert_eq!((p.in_use.get(), p.idle()), (0, 2));
        let _ = p.take();
        assert_eq!(p.allocated.get(), 4, "reused, not allocated");
    }
}
