//! Per-core pool of read buffers. A connection holds a buffer only between a readiness
//! notification and the end of the write that forwards what was read, so an idle connection
//! holds none and the pool's size follows the number of connections busy at once. At most
//! `limit` buffers are out at a time: past it, readers wait, so even every connection becoming
//! readable at once cannot allocate a buffer each.

use super::chunk::Chunk;
use local_sync::semaphore::Semaphore;
use std::cell::{Cell, RefCell};

pub struct BufPool {
    free: RefCell<Vec<Chunk>>,
    buf_bytes: usize,
    keep: usize,
    permits: Semaphore,
    /// Buffers handed out and not yet returned.
    pub in_use: Cell<usize>,
    /// Buffers allocated because the free list was empty.
    pub allocated: Cell<u64>,
    /// Times a reader had to wait because `limit` buffers were out.
    pub waits: Cell<u64>,
}

impl BufPool {
    pub fn new(buf_bytes: usize, keep: usize, limit: usize) -> BufPool {
        BufPool {
            free: RefCell::new(Vec::new()),
            buf_bytes,
            keep,
            permits: Semaphore::new(limit),
            in_use: Cell::new(0),
            allocated: Cell::new(0),
            waits: Cell::new(0),
        }
    }

    pub async fn take(&self) -> Chunk {
        match self.permits.try_acquire() {
            Ok(p) => p.forget(),
            Err(_) => {
                self.waits.set(self.waits.get() + 1);
                if let Ok(p) = self.permits.acquire().await {
                    p.forget();
                }
            }
        }
        self.in_use.set(self.in_use.get() + 1);
        self.free.borrow_mut().pop().unwrap_or_else(|| {
            self.allocated.set(self.allocated.get() + 1);
            Chunk::new(self.buf_bytes)
        })
    }

    /// Returns a buffer; past `keep` idle buffers, or if it grew, it is freed instead.
    pub fn put(&self, mut c: Chunk) {
        self.in_use.set(self.in_use.get().saturating_sub(1));
        self.permits.add_permits(1);
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
    use std::rc::Rc;

    #[monoio::test_all(timer_enabled = true)]
    async fn keeps_at_most_keep_buffers_and_waits_past_the_limit() {
        let p = Rc::new(super::BufPool::new(1024, 2, 4));
        let mut a = Vec::new();
        for _ in 0..4 {
            a.push(p.take().await);
        }
        assert_eq!(
            (p.in_use.get(), p.allocated.get(), p.waits.get()),
            (4, 4, 0)
        );
        let p2 = p.clone();
        let waiter = monoio::spawn(async move { p2.take().await.capacity() });
        monoio::time::sleep(std::time::Duration::from_millis(10)).await;
        assert_eq!(p.waits.get(), 1, "the fifth reader waits");
        p.put(a.pop().unwrap());
        assert_eq!(waiter.await, 1024);
        for c in a {
            p.put(c);
        }
        assert_eq!(p.idle(), 2, "only `keep` idle buffers stay");
    }
}
