//! A pooled read buffer that is also the vectored write of the frames it holds.

use monoio::buf::IoVecBuf;

/// A range of the read buffer to write to the receiver, header included.
pub type Segment = (usize, usize);

/// Linux refuses more iovecs than this in one writev (IOV_MAX).
const MAX_IOVECS: usize = 1024;

/// One read buffer plus the iovecs that point into it. The bytes are read into `data`,
/// unmasked there, and written from there: the payload is never copied. Boxed, so that moving
/// a chunk in and out of I/O operations moves one pointer, which keeps every connection's
/// task small.
pub struct Chunk(Box<ChunkInner>);

pub struct ChunkInner {
    pub data: Vec<u8>,
    pub segs: Vec<Segment>,
    iov: Vec<libc::iovec>,
    /// First iovec not yet fully written.
    next: usize,
}

impl std::ops::Deref for Chunk {
    type Target = ChunkInner;
    fn deref(&self) -> &ChunkInner {
        &self.0
    }
}

impl std::ops::DerefMut for Chunk {
    fn deref_mut(&mut self) -> &mut ChunkInner {
        &mut self.0
    }
}

impl Chunk {
    pub fn new(capacity: usize) -> Chunk {
        Chunk(Box::new(ChunkInner {
            data: Vec::with_capacity(capacity),
            segs: Vec::new(),
            iov: Vec::new(),
            next: 0,
        }))
    }
}

impl ChunkInner {
    pub fn capacity(&self) -> usize {
        self.data.capacity()
    }

    /// Builds the iovecs for `segs`, merging segments that touch.
    #[inline]
    pub fn prepare_write(&mut self) {
        self.iov.clear();
        self.next = 0;
        let base = self.data.as_mut_ptr();
        let mut last_end = usize::MAX;
        for &(a, b) in &self.segs {
            debug_assert!(a <= b && b <= self.data.len());
            if a == last_end {
                if let Some(v) = self.iov.last_mut() {
                    v.iov_len += b - a;
                    last_end = b;
                    continue;
                }
            }
            self.iov.push(libc::iovec {
                iov_base: base.wrapping_add(a).cast(),
                iov_len: b - a,
            });
            last_end = b;
        }
        self.iov.retain(|v| v.iov_len > 0);
    }

    pub fn remaining(&self) -> usize {
        self.iov[self.next..].iter().map(|v| v.iov_len).sum()
    }

    /// Marks `n` bytes as written after a partial writev.
    pub fn advance(&mut self, mut n: usize) {
        while n > 0 && self.next < self.iov.len() {
            let v = &mut self.iov[self.next];
            if n >= v.iov_len {
                n -= v.iov_len;
                self.next += 1;
            } else {
                v.iov_base = v.iov_base.cast::<u8>().wrapping_add(n).cast();
                v.iov_len -= n;
                n = 0;
            }
        }
    }

    pub fn done(&self) -> bool {
        self.next >= self.iov.len()
    }
}

// SAFETY: every iovec points into `data`'s heap allocation, built by `prepare_write` after the
// last change to `data`; neither that allocation nor the iovec array moves when the `Chunk`
// (a box) moves, and neither is touched while the runtime owns the chunk for the write.
// `advance` only moves pointers forward within the same ranges. The count never exceeds the
// vector's length.
unsafe impl IoVecBuf for Chunk {
    fn read_iovec_ptr(&self) -> *const libc::iovec {
        self.iov[self.next..].as_ptr()
    }

    fn read_iovec_len(&self) -> usize {
        (self.iov.len() - self.next).min(MAX_IOVECS)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gather(c: &Chunk) -> Vec<u8> {
        c.iov[c.next..]
            .iter()
            .flat_map(|v| {
                let off = v.iov_base as usize - c.data.as_ptr() as usize;
                c.data[off..off + v.iov_len].to_vec()
            })
            .collect()
    }

    #[test]
    fn merges_touching_segments_and_advances_partially() {
        let mut c = Chunk::new(64);
        c.data.extend_from_slice(b"0123456789abcdef");
        c.segs = vec![(0, 3), (3, 5), (7, 7), (8, 12)];
        c.prepare_write();
        assert_eq!(c.iov.len(), 2);
        assert_eq!(gather(&c), b"0123489ab");
        assert_eq!(c.remaining(), 9);
        c.advance(6);
        assert_eq!(gather(&c), b"9ab");
        c.advance(3);
        assert!(c.done());
    }
}
