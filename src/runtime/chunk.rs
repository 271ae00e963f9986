//! A pooled read buffer, and the vectored write of the frames it holds.
//!
//! The bytes are read into a [`Chunk`], unmasked there, and written from there: the payload
//! is never copied. The write hands the kernel pointers into the buffer, so this file keeps
//! every way of changing the bytes or the ranges to write private, and the form the kernel
//! reads from, [`WriteChunk`], is a type of its own that can change neither: no safe code can
//! make a write reach past the bytes that were read.
#![allow(unsafe_code)]

use super::socket::Socket;
use monoio::buf::{IoBufMut, IoVecBuf};
use std::ops::Range;

/// A range of the buffer to write to the receiver, header included: `(start, end)`.
pub type Segment = (usize, usize);

/// Linux refuses more iovecs than this in one writev (IOV_MAX).
const MAX_IOVECS: usize = 1024;

/// One read buffer plus the segments of it to write. Every segment lies within the bytes
/// read: [`Chunk::decode`] checks each one it is given, and nothing else adds any. Boxed, so
/// that moving a chunk in and out of I/O operations moves one pointer, which keeps every
/// connection's task small.
pub struct Chunk(Box<Parts>);

/// A chunk on its way to the kernel: the iovecs of its segments, built and checked by
/// [`Chunk::into_write`]. Neither the bytes nor the iovecs can be changed while it is one,
/// but for [`WriteChunk::advance`], which only shortens them. [`WriteChunk::into_chunk`]
/// gives the chunk back, segments included.
pub struct WriteChunk(Box<Parts>);

struct Parts {
    data: Vec<u8>,
    segs: Vec<Segment>,
    /// Kept with the chunk so that building them allocates only the first time.
    iov: Vec<libc::iovec>,
    /// First iovec not yet fully written.
    next: usize,
    /// A small frame of the relay's own written after the segments in the same writev
    /// ([`WriteChunk::append`]); kept with the chunk so that it allocates only once.
    trailer: Vec<u8>,
    /// The last iovec points into `trailer`: it may not change until the next write.
    trailer_in_iov: bool,
    /// One of the pool's large buffers (runtime::pool), which go back to their own list.
    large: bool,
}

impl Chunk {
    pub fn new(capacity: usize) -> Chunk {
        Chunk(Box::new(Parts {
            data: Vec::with_capacity(capacity),
            segs: Vec::new(),
            iov: Vec::new(),
            next: 0,
            trailer: Vec::new(),
            trailer_in_iov: false,
            large: false,
        }))
    }

    /// A large buffer of the pool's (see [`Chunk::is_large`]).
    pub fn new_large(capacity: usize) -> Chunk {
        let mut c = Chunk::new(capacity);
        c.0.large = true;
        c
    }

    /// Made by [`Chunk::new_large`]: the pool counts it apart whatever its capacity.
    pub fn is_large(&self) -> bool {
        self.0.large
    }

    pub fn capacity(&self) -> usize {
        self.0.data.capacity()
    }

    /// The read filled the buffer: more is likely waiting.
    #[inline]
    pub fn is_full(&self) -> bool {
        self.0.data.len() == self.0.data.capacity()
    }

    /// The bytes read (unmasked, once decoded).
    #[inline]
    pub fn data(&self) -> &[u8] {
        &self.0.data
    }

    /// The ranges of [`Chunk::data`] the last decode chose to write.
    #[inline]
    pub fn segments(&self) -> &[Segment] {
        &self.0.segs
    }

    /// Empties the chunk, keeping its allocations.
    pub fn clear(&mut self) {
        self.0.data.clear();
        self.0.segs.clear();
    }

    /// Lays the buffer out afresh: the segments go, and `f` writes what comes before the next
    /// read (the decoder's headroom and carried bytes). Returns what `f` returns.
    pub fn lay_out<R>(&mut self, f: impl FnOnce(&mut Vec<u8>) -> R) -> R {
        self.0.segs.clear();
        f(&mut self.0.data)
    }

    /// Copies `bytes` in after those already there (the rare bytes that did not come from a
    /// read into this buffer, such as those that arrived with the upgrade request).
    pub fn extend_from_slice(&mut self, bytes: &[u8]) {
        self.0.data.extend_from_slice(bytes);
    }

    /// Reads from `sock` into the spare capacity, after the bytes already there. Returns what
    /// the read returned (0: end of stream, or no spare capacity).
    pub async fn read_from(&mut self, sock: &Socket) -> std::io::Result<usize> {
        // Segments from before a read are never written after it; clearing them also keeps
        // them valid should this read be dropped while the bytes are away.
        self.0.segs.clear();
        let data = std::mem::take(&mut self.0.data);
        let start = data.len();
        let (r, slice) = sock.read(data.slice_mut(start..)).await;
        self.0.data = slice.into_inner();
        r
    }

    /// Reads what `sock` holds now into the spare capacity, without waiting: `WouldBlock` when
    /// it holds nothing (or over TLS), and the caller reads through the ring instead. A
    /// connection streaming large frames reads this way, so that its bytes are unmasked and
    /// written on while still in the core's cache (relay::conn, `Reader::read`).
    pub fn read_now(&mut self, sock: &Socket) -> std::io::Result<usize> {
        self.0.segs.clear();
        let data = &mut self.0.data;
        let spare = data.spare_capacity_mut();
        let room = spare.len();
        let n = sock.try_read_now(spare)?;
        // recv(2) never returns more than the room it was given; checked all the same, as the
        // length set below must not depend on that.
        assert!(n <= room, "recv returned {n} bytes for {room}");
        // SAFETY: recv(2) wrote the first `n` bytes of the spare capacity (`n <= room`, checked
        // above), so the first `len + n` bytes of the vector are initialised.
        unsafe { data.set_len(data.len() + n) };
        Ok(n)
    }

    /// Writes all the bytes in the buffer to `sock`, segments aside (a byte stream passed
    /// through as read).
    pub async fn write_all_to(&mut self, sock: &Socket) -> std::io::Result<()> {
        self.0.segs.clear();
        let data = std::mem::take(&mut self.0.data);
        let (r, data) = sock.write_all(data).await;
        self.0.data = data;
        r
    }

    /// Decodes the buffer in place: `f` may change the bytes (unmask them, write headers over
    /// them) but not their number, and appends the segments to write. Each segment must lie
    /// within the bytes (`start <= end <= len`); one that does not is a bug in the decoder,
    /// answered with [`SegmentOutOfBounds`] and no segments at all, so that nothing of this
    /// read is written rather than bytes a peer was never meant to see.
    #[inline]
    pub fn decode<R>(
        &mut self,
        f: impl FnOnce(&mut [u8], &mut Vec<Segment>) -> R,
    ) -> Result<R, SegmentOutOfBounds> {
        let p = &mut *self.0;
        p.segs.clear();
        let r = f(&mut p.data, &mut p.segs);
        let len = p.data.len();
        if let Some(e) = p.segs.iter().find_map(|&(a, b)| check(a, b, len).err()) {
            p.segs.clear();
            return Err(e);
        }
        Ok(r)
    }

    /// The writable form of all the segments.
    #[inline]
    pub fn into_write(self) -> WriteChunk {
        let n = self.0.segs.len();
        self.into_write_part(0..n)
    }

    /// The writable form of the segments `part` (a run of them between messages written on
    /// their own): builds their iovecs, merging segments that touch, and checks each range
    /// against the bytes again, so that what the kernel reads is known to be in the buffer
    /// without trusting anything outside this function. The other segments stay.
    #[inline]
    pub fn into_write_part(self, part: Range<usize>) -> WriteChunk {
        let mut p = self.0;
        let Parts {
            data,
            segs,
            iov,
            next,
            trailer_in_iov,
            ..
        } = &mut *p;
        iov.clear();
        *next = 0;
        *trailer_in_iov = false;
        let len = data.len();
        let base = data.as_mut_ptr();
        let mut last_end = usize::MAX;
        for &(a, b) in &segs[part] {
            // `decode` refused any segment out of bounds and nothing else adds one, so this
            // cannot fail; it is checked again because the iovecs must not depend on that.
            if let Err(e) = check(a, b, len) {
                panic!("chunk: {e}");
            }
            if a == b {
                continue;
            }
            if a == last_end {
                if let Some(v) = iov.last_mut() {
                    v.iov_len += b - a;
                    last_end = b;
                    continue;
                }
            }
            iov.push(libc::iovec {
                iov_base: base.wrapping_add(a).cast(),
                iov_len: b - a,
            });
            last_end = b;
        }
        WriteChunk(p)
    }
}

/// A segment the decoder chose lies outside the bytes of its buffer: a bug, refused where the
/// segment is added ([`Chunk::decode`]) before any iovec points at it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("segment {start}..{end} lies outside the {len} bytes of its buffer")]
pub struct SegmentOutOfBounds {
    pub start: usize,
    pub end: usize,
    pub len: usize,
}

/// A segment must lie within the `len` bytes of its buffer.
#[inline]
fn check(start: usize, end: usize, len: usize) -> Result<(), SegmentOutOfBounds> {
    if start <= end && end <= len {
        Ok(())
    } else {
        Err(SegmentOutOfBounds { start, end, len })
    }
}

impl WriteChunk {
    /// Bytes not yet written.
    #[cfg(test)]
    pub fn remaining(&self) -> usize {
        self.0.iov[self.0.next..].iter().map(|v| v.iov_len).sum()
    }

    /// Marks `n` bytes as written after a partial writev.
    #[inline]
    pub fn advance(&mut self, mut n: usize) {
        let p = &mut *self.0;
        while n > 0 && p.next < p.iov.len() {
            let v = &mut p.iov[p.next];
            if n >= v.iov_len {
                n -= v.iov_len;
                p.next += 1;
            } else {
                v.iov_base = v.iov_base.cast::<u8>().wrapping_add(n).cast();
                v.iov_len -= n;
                n = 0;
            }
        }
    }

    /// Adds a frame `write` puts in the chunk's trailer after the segments, to go out in the
    /// same writev (an `ack` riding on the data to its connection: relay::ack). Once per
    /// write; false, and nothing added, for a second one or an empty one.
    pub fn append(&mut self, write: impl FnOnce(&mut Vec<u8>)) -> bool {
        let p = &mut *self.0;
        if p.trailer_in_iov {
            return false;
        }
        p.trailer.clear();
        write(&mut p.trailer);
        if p.trailer.is_empty() {
            return false;
        }
        p.iov.push(libc::iovec {
            iov_base: p.trailer.as_mut_ptr().cast(),
            iov_len: p.trailer.len(),
        });
        p.trailer_in_iov = true;
        true
    }

    /// One of the pool's large buffers: a connection streaming large frames.
    #[inline]
    pub fn is_large(&self) -> bool {
        self.0.large
    }

    /// Writes what `sock` takes now, without waiting, and marks it written: the bytes go out
    /// while the unmasking left them in the core's cache, rather than in the ring's next
    /// submission after every other connection's turn. `WouldBlock` when it takes nothing
    /// (or over TLS); the rest goes through the ring as before.
    pub fn write_now(&mut self, sock: &Socket) -> std::io::Result<usize> {
        let n = sock.try_writev_now(&*self)?;
        self.advance(n);
        Ok(n)
    }

    /// Everything was written.
    #[inline]
    pub fn done(&self) -> bool {
        self.0.next >= self.0.iov.len()
    }

    /// The chunk again, with its bytes and all its segments.
    #[inline]
    pub fn into_chunk(self) -> Chunk {
        Chunk(self.0)
    }
}

// SAFETY: this relies on monoio 0.2.4 (pinned with `=` in Cargo.toml for this reason; re-read
// this before changing the version). Its `writev` takes the `WriteChunk` by value and calls
// these two methods only while it owns it: when it builds the io_uring entry, or at each
// writev attempt of the legacy (epoll) driver. It keeps the value alive until the kernel has
// completed the operation, even when the future is dropped first (the uring driver's
// `Lifecycle::Ignored` holds the operation's data until its completion arrives).
// What the iovecs point to: every one lies within `data`'s heap allocation, as
// `into_write_part` checked each range against `data.len()` when it built them (`base` is
// that allocation's start), but for at most one last iovec, which `append` made after it had
// filled `trailer` and which spans exactly `trailer`'s bytes; `advance` only moves a start
// forward within its range. While the chunk is a `WriteChunk` nothing can change `data`,
// `iov`, `next` or `trailer` but `advance` and `append`, which need the value back from
// monoio; `append` refuses to run twice in one write (`trailer_in_iov`, reset only where
// `iov` is cleared), so `trailer` is never changed while an iovec points into it. The fields
// are private to this file and `WriteChunk` has no other method that touches them. Moving the value moves one box pointer; neither vector's
// heap buffer moves. The count is the number of iovecs past `next` (at most IOV_MAX), all
// initialised.
unsafe impl IoVecBuf for WriteChunk {
    #[inline]
    fn read_iovec_ptr(&self) -> *const libc::iovec {
        self.0.iov[self.0.next..].as_ptr()
    }

    #[inline]
    fn read_iovec_len(&self) -> usize {
        (self.0.iov.len() - self.0.next).min(MAX_IOVECS)
    }
}

/// mimalloc's `purge_delay` option (the crate names no constant for it: in mimalloc.h's
/// `mi_option_e` it is the one before `use_numa_nodes`).
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t =
    libmimalloc_sys::mi_option_use_numa_nodes - 1;

/// Makes mimalloc give a freed page back to the system when it frees it, instead of 1 s
/// later (`purge_delay`), unless the environment chose (`MIMALLOC_PURGE_DELAY`, or its old
/// name `MIMALLOC_RESET_DELAY`). Measured (docs/performance.md, "Idle connections"): with
/// the delay, what a storm of 10,000 connections freed stayed resident after they closed
/// (+17 to +24 % of the relay's RSS), even with the keepalive tick's forced collection,
/// because delayed purges wait for a later allocation to run them; at once, +12 to +13 %.
/// Pages a size class keeps for reuse (two each) are not freed, so steady traffic does not
/// free and fault pages back and forth. Called as the server starts, before its workers (`Server::start`).
pub fn purge_freed_pages_at_once() {
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_some()
        || std::env::var_os("MIMALLOC_RESET_DELAY").is_some()
    {
        return;
    }
    // SAFETY: `mi_option_set` takes no pointers and writes one word of mimalloc's option
    // table, which threads read when they free a page (a racing reader sees the old delay or
    // the new, both valid). It runs before this server's workers exist.
    unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, 0) }
}

/// Gives the pages this thread's allocator heap freed back to the system at once. mimalloc
/// purges freed pages only when the thread allocates again after its purge delay, so a core
/// that goes quiet after a burst (a reconnect storm, then idle connections or none) would
/// keep the burst's peak resident. Called by the keepalive tick when a core's connection
/// count has fallen well below its peak (relay::keepalive); it walks the thread's heap, so
/// it is not for the forwarding path. Harmless where mimalloc is not the global allocator
/// (unit tests): its own heap is then empty.
pub fn give_back_freed_memory() {
    // SAFETY: `mi_collect` takes no pointers and has no preconditions: it only collects the
    // calling thread's own heap and purges freed pages no live allocation uses.
    unsafe { libmimalloc_sys::mi_collect(true) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_purge_delay_option_is_the_one_before_use_numa_nodes() {
        // mimalloc.h (v3): `mi_option_deprecated_eager_commit_delay` is 14, `purge_delay` 15.
        assert_eq!(MI_OPTION_PURGE_DELAY, 15);
    }

    /// The bytes the kernel would read from `w`.
    fn gather(w: &WriteChunk) -> Vec<u8> {
        let p = &w.0;
        p.iov[p.next..]
            .iter()
            .flat_map(|v| {
                let base = v.iov_base as usize;
                let tail = p.trailer.as_ptr() as usize;
                if (tail..tail + p.trailer.len()).contains(&base) {
                    let off = base - tail;
                    return p.trailer[off..off + v.iov_len].to_vec();
                }
                let off = base - p.data.as_ptr() as usize;
                p.data[off..off + v.iov_len].to_vec()
            })
            .collect()
    }

    fn chunk_with(bytes: &[u8], segs: &[Segment]) -> Result<Chunk, SegmentOutOfBounds> {
        let mut c = Chunk::new(64);
        c.extend_from_slice(bytes);
        c.decode(|_, s| s.extend_from_slice(segs))?;
        Ok(c)
    }

    #[test]
    fn merges_touching_segments_and_advances_partially() {
        let c = chunk_with(b"0123456789abcdef", &[(0, 3), (3, 5), (7, 7), (8, 12)]).unwrap();
        let mut w = c.into_write();
        assert_eq!(w.0.iov.len(), 2);
        assert_eq!(gather(&w), b"0123489ab");
        assert_eq!(w.remaining(), 9);
        w.advance(6);
        assert_eq!(gather(&w), b"9ab");
        w.advance(3);
        assert!(w.done());
        let c = w.into_chunk();
        assert_eq!(c.segments().len(), 4, "the segments come back whole");
    }

    #[test]
    fn a_part_writes_only_its_run_of_segments_and_keeps_the_others() {
        let c = chunk_with(b"0123456789", &[(0, 2), (4, 6), (8, 10)]).unwrap();
        let w = c.into_write_part(1..3);
        assert_eq!(gather(&w), b"4589");
        let w = w.into_chunk().into_write_part(0..1);
        assert_eq!(gather(&w), b"01");
        assert_eq!(w.into_chunk().segments(), &[(0, 2), (4, 6), (8, 10)]);
    }

    #[test]
    fn a_trailer_goes_out_after_the_segments_once_per_write() {
        let c = chunk_with(b"0123456789", &[(0, 2), (4, 6)]).unwrap();
        let mut w = c.into_write();
        assert!(w.append(|t| t.extend_from_slice(b"ACK")));
        assert_eq!(gather(&w), b"0145ACK");
        assert!(!w.append(|t| t.push(b'!')), "a second trailer in one write");
        assert_eq!(gather(&w), b"0145ACK", "the first one unchanged");
        w.advance(5);
        assert_eq!(gather(&w), b"CK");
        w.advance(2);
        assert!(w.done());
        // The next write of the same buffer starts without it, and may carry another.
        let mut w = w.into_chunk().into_write();
        assert_eq!(gather(&w), b"0145");
        assert!(!w.append(|_| {}), "an empty trailer adds nothing");
        assert!(w.append(|t| t.extend_from_slice(b"K2")));
        assert_eq!(gather(&w), b"0145K2");
        // After a partial write it still goes after what is left.
        let mut w = w.into_chunk().into_write();
        w.advance(3);
        assert!(w.append(|t| t.push(b'x')));
        assert_eq!(gather(&w), b"5x");
    }

    #[test]
    fn a_segment_past_the_bytes_read_is_refused_where_it_is_added() {
        let mut c = Chunk::new(64);
        c.extend_from_slice(b"01234567");
        let r = c.decode(|_, s| s.extend_from_slice(&[(0, 2), (4, 9)]));
        let e = SegmentOutOfBounds {
            start: 4,
            end: 9,
            len: 8,
        };
        assert_eq!(r, Err(e));
        assert!(c.segments().is_empty(), "not even the good segment stays");
        assert!(c.into_write().done(), "nothing is written");
    }

    #[test]
    fn a_segment_that_ends_before_it_starts_is_refused() {
        let e = chunk_with(b"01234567", &[(5, 3)]).err();
        assert_eq!(e.map(|e| (e.start, e.end)), Some((5, 3)));
    }

    #[test]
    fn a_segment_that_ends_at_the_last_byte_is_accepted() {
        let c = chunk_with(b"01234567", &[(6, 8), (8, 8)]).expect("within bounds");
        assert_eq!(gather(&c.into_write()), b"67");
    }

    #[test]
    fn the_decoder_cannot_change_the_number_of_bytes() {
        // `decode` hands out a slice, not the vector: the bounds it checks are final.
        let mut c = chunk_with(b"0123", &[]).expect("no segments");
        let n = c.decode(|data, _| data.len()).expect("no segments");
        assert_eq!(n, c.data().len());
    }

    #[test]
    fn laying_out_or_reading_again_drops_the_segments_of_the_last_read() {
        let mut c = chunk_with(b"0123456789", &[(0, 10)]).unwrap();
        c.lay_out(|d| d.truncate(2));
        assert!(c.segments().is_empty());
        assert!(c.into_write().done(), "nothing left to write");
    }

    #[test]
    fn clear_keeps_the_buffer() {
        let mut c = chunk_with(b"0123", &[(0, 4)]).unwrap();
        c.clear();
        assert_eq!(
            (c.data(), c.segments(), c.capacity()),
            (&[][..], &[][..], 64)
        );
        assert!(!c.is_full());
    }
}
