//! Per-core pool of read buffers. A connection holds a buffer only between a readiness
//! notification and the end of the write that forwards what was read, so an idle connection
//! holds none and the pool's size follows the number of connections busy at once. At most
//! `limit` buffers are out at a time: past it, readers wait, so even every connection becoming
//! readable at once cannot allocate a buffer each.
//!
//! A buffer whose write waits on a receiver that does not read stays out until that write
//! ends. When fewer than the reserve (`limits.pool_reserve_percent`) are left, the pool
//! sounds an alarm, once, for the task that ends such writes (`relay::blocked`); the check
//! is one comparison per buffer taken.
//!
//! A connection reading a stream of large frames faster than it is forwarded (its last read
//! filled a buffer, mid-frame) reads next into a large buffer (`limits.large_read_buffer_bytes`)
//! when one can be had at once: one read and one write move several normal buffers' worth,
//! which is what brings large messages close to a copying forwarder's cost per byte. A large
//! buffer holds as many permits as normal buffers of its size, so `max_read_buffers *
//! read_buffer_bytes` still bounds the memory; it is only taken when that leaves the reserve
//! free, never waited for.
#![forbid(unsafe_code)]

use super::chunk::Chunk;
use local_sync::semaphore::Semaphore;
use std::cell::{Cell, RefCell};

pub struct BufPool {
    free: RefCell<Vec<Chunk>>,
    buf_bytes: usize,
    keep: usize,
    /// Idle large buffers kept, at most `keep_large`.
    large_free: RefCell<Vec<Chunk>>,
    large_bytes: usize,
    /// Permits one large buffer holds (its size in normal buffers, rounded up); 0 when large
    /// buffers are off (`large_bytes <= buf_bytes`).
    large_permits: u32,
    keep_large: usize,
    /// Large buffers handed out.
    pub large_taken: Cell<u64>,
    permits: Semaphore,
    /// Buffers handed out and not yet returned.
    pub in_use: Cell<usize>,
    /// Buffers allocated because the free list was empty.
    pub allocated: Cell<u64>,
    /// Times a reader had to wait because `limit` buffers were out.
    pub waits: Cell<u64>,
    /// Readers waiting for a buffer now.
    waiting: Cell<usize>,
    /// Buffers out (or wanted) past which the pool is under pressure: `limit` less the
    /// reserve.
    high_water: usize,
    /// The alarm is rung at most once until the guard re-arms it.
    armed: Cell<bool>,
    alarm: Semaphore,
}

impl BufPool {
    /// `reserve` buffers of `limit` should stay free: past `limit - reserve` out (counting
    /// readers waiting), the pool is under pressure. Large buffers of `large_bytes` are off
    /// when it is not above `buf_bytes`.
    pub fn new(
        buf_bytes: usize,
        large_bytes: usize,
        keep: usize,
        limit: usize,
        reserve: usize,
    ) -> BufPool {
        let large_permits = if large_bytes > buf_bytes {
            u32::try_from(large_bytes.div_ceil(buf_bytes)).unwrap_or(u32::MAX)
        } else {
            0
        };
        BufPool {
            free: RefCell::new(Vec::new()),
            buf_bytes,
            keep,
            large_free: RefCell::new(Vec::new()),
            large_bytes,
            large_permits,
            // The same idle memory again at most: `keep` normal buffers' worth.
            keep_large: (keep / (large_permits.max(1) as usize)).max(1),
            large_taken: Cell::new(0),
            permits: Semaphore::new(limit),
            in_use: Cell::new(0),
            allocated: Cell::new(0),
            waits: Cell::new(0),
            waiting: Cell::new(0),
            high_water: limit - reserve.min(limit),
            armed: Cell::new(true),
            alarm: Semaphore::new(0),
        }
    }

    pub async fn take(&self) -> Chunk {
        match self.permits.try_acquire() {
            Ok(p) => p.forget(),
            Err(_) => {
                self.waits.set(self.waits.get() + 1);
                let _waiting = Waiting::new(&self.waiting);
                self.ring();
                if let Ok(p) = self.permits.acquire().await {
                    p.forget();
                }
            }
        }
        let n = self.in_use.get() + 1;
        self.in_use.set(n);
        if n > self.high_water {
            self.ring();
        }
        self.free.borrow_mut().pop().unwrap_or_else(|| {
            self.allocated.set(self.allocated.get() + 1);
            Chunk::new(self.buf_bytes)
        })
    }

    /// A large buffer, if large buffers are on and taking one at once leaves the reserve
    /// free; `None` (then take a normal one) otherwise. Never waits.
    pub fn take_large(&self) -> Option<Chunk> {
        let k = self.large_permits;
        if k == 0 || self.in_use.get() + self.waiting.get() + k as usize > self.high_water {
            return None;
        }
        self.permits.try_acquire_many(k).ok()?.forget();
        self.in_use.set(self.in_use.get() + k as usize);
        self.large_taken.set(self.large_taken.get() + 1);
        Some(self.large_free.borrow_mut().pop().unwrap_or_else(|| {
            self.allocated.set(self.allocated.get() + 1);
            Chunk::new_large(self.large_bytes)
        }))
    }

    /// A read that brought at least this many bytes (headroom included) would have filled a
    /// normal buffer.
    pub fn buf_bytes(&self) -> usize {
        self.buf_bytes
    }

    /// Frames of at least this many payload bytes are large enough to read into a large
    /// buffer (a quarter of a normal one).
    pub fn large_frame_bytes(&self) -> u64 {
        (self.buf_bytes / 4) as u64
    }

    /// Returns a buffer; past `keep` idle buffers (`keep_large` large ones), or if it grew,
    /// it is freed instead.
    pub fn put(&self, mut c: Chunk) {
        let (k, keep, size, free) = if c.is_large() {
            let k = self.large_permits as usize;
            (k, self.keep_large, self.large_bytes, &self.large_free)
        } else {
            (1, self.keep, self.buf_bytes, &self.free)
        };
        self.in_use.set(self.in_use.get().saturating_sub(k));
        self.permits.add_permits(k);
        let mut free = free.borrow_mut();
        if free.len() < keep && c.capacity() == size {
            c.clear();
            free.push(c);
        }
    }

    /// Frees the idle buffers kept for reuse: after a storm of connections (each closing
    /// one took a buffer to read its end) they would keep `keep` buffers' pages resident on a
    /// core gone quiet. Called before the allocator gives freed pages back.
    pub fn shed_idle(&self) {
        let mut free = self.free.borrow_mut();
        free.clear();
        free.shrink_to_fit();
    }

    pub fn idle(&self) -> usize {
        self.free.borrow().len() + self.large_free.borrow().len()
    }

    /// More buffers are out or wanted than leave the reserve free.
    pub fn under_pressure(&self) -> bool {
        self.deficit() > 0
    }

    /// How many buffers would have to come back for every waiting reader to get one and
    /// the reserve to be free again.
    pub fn deficit(&self) -> usize {
        (self.in_use.get() + self.waiting.get()).saturating_sub(self.high_water)
    }

    /// Waits until the pool comes under pressure (at once if it did since the last `rearm`).
    pub async fn pressure(&self) {
        if let Ok(p) = self.alarm.acquire().await {
            p.forget();
        }
    }

    /// Lets the next take past the high-water mark ring the alarm again.
    pub fn rearm(&self) {
        self.armed.set(true);
    }

    fn ring(&self) {
        if self.armed.replace(false) {
            self.alarm.add_permits(1);
        }
    }
}

/// Counts a reader waiting for a buffer while it lives (a waiting take may be dropped).
struct Waiting<'a>(&'a Cell<usize>);

impl<'a> Waiting<'a> {
    fn new(c: &'a Cell<usize>) -> Waiting<'a> {
        c.set(c.get() + 1);
        Waiting(c)
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.set(self.0.get() - 1);
    }
}

#[cfg(test)]
mod tests {
    use std::rc::Rc;

    #[monoio::test_all(timer_enabled = true)]
    async fn keeps_at_most_keep_buffers_and_waits_past_the_limit() {
        let p = Rc::new(super::BufPool::new(1024, 0, 2, 4, 0));
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

    #[monoio::test_all(timer_enabled = true)]
    async fn rings_once_past_the_reserve_and_counts_waiting_readers() {
        let p = Rc::new(super::BufPool::new(1024, 0, 2, 4, 1));
        let a = p.take().await;
        let b = p.take().await;
        let c = p.take().await;
        assert!(
            !p.under_pressure(),
            "three of four out leaves the reserve of one"
        );
        let d = p.take().await;
        assert_eq!(p.deficit(), 1);
        // Rung once: the guard is woken at once...
        monoio::time::timeout(std::time::Duration::from_millis(100), p.pressure())
            .await
            .expect("the alarm rang");
        // ...and not again until it re-arms.
        let p2 = p.clone();
        let waiter = monoio::spawn(async move { p2.take().await });
        monoio::time::sleep(std::time::Duration::from_millis(10)).await;
        assert_eq!(p.deficit(), 2, "a waiting reader counts");
        let again = monoio::time::timeout(std::time::Duration::from_millis(20), p.pressure()).await;
        assert!(again.is_err(), "rang twice without a re-arm");
        p.put(a);
        let e = waiter.await;
        assert_eq!(p.deficit(), 1);
        for c in [b, c, d, e] {
            p.put(c);
        }
        assert!(!p.under_pressure());
        p.rearm();
        let _x = p.take().await;
        let _y = p.take().await;
        let _z = p.take().await;
        let _w = p.take().await;
        monoio::time::timeout(std::time::Duration::from_millis(100), p.pressure())
            .await
            .expect("rang again after the re-arm");
    }

    #[monoio::test_all(timer_enabled = true)]
    async fn a_large_buffer_holds_its_size_in_permits_and_is_never_waited_for() {
        // Normal buffers of 1 KiB, large ones of 2.5 KiB (3 permits), 8 permits, reserve 2.
        let p = super::BufPool::new(1024, 2560, 4, 8, 2);
        let big = p.take_large().expect("room for a large buffer");
        assert!(big.is_large());
        assert!(big.capacity() >= 2560);
        assert_eq!((p.in_use.get(), p.large_taken.get()), (3, 1));
        let a = p.take().await;
        let b = p.take().await;
        // 5 of 8 out: a second large one would leave less than the reserve of 2.
        assert!(
            p.take_large().is_none(),
            "a large buffer ate into the reserve"
        );
        assert_eq!(p.waits.get(), 0, "nobody waited for a large buffer");
        p.put(big);
        assert_eq!(p.in_use.get(), 2, "its three permits came back");
        // It went to the large list: the next large one is the same allocation.
        let allocated = p.allocated.get();
        let again = p.take_large().expect("room again");
        assert_eq!(p.allocated.get(), allocated, "reused, not allocated");
        for c in [a, b, again] {
            p.put(c);
        }
        assert_eq!(p.in_use.get(), 0);
        // Normal buffers still come from their own list at their own size.
        assert_eq!(p.take().await.capacity(), 1024);
    }

    #[monoio::test_all(timer_enabled = true)]
    async fn large_buffers_are_off_at_or_below_the_normal_size() {
        let p = super::BufPool::new(4096, 4096, 4, 8, 0);
        assert!(p.take_large().is_none());
        let p = super::BufPool::new(4096, 0, 4, 8, 0);
        assert!(p.take_large().is_none());
        assert_eq!(p.large_taken.get(), 0);
    }

    #[monoio::test_all(timer_enabled = true)]
    async fn a_normal_buffer_that_grew_to_the_large_size_stays_normal() {
        let p = super::BufPool::new(1024, 2048, 4, 8, 0);
        let mut c = p.take().await;
        c.extend_from_slice(&[0; 2048]);
        assert!(!c.is_large());
        p.put(c);
        assert_eq!(
            p.in_use.get(),
            0,
            "one permit back, not the large size's two"
        );
        assert_eq!(p.idle(), 0, "a grown buffer is freed, not kept");
    }
}
