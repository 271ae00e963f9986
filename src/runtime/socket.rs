//! A TCP stream shared by the task that reads it and the tasks that write to it.

use monoio::buf::{IoBufMut, IoVecBuf};
use monoio::io::{AsyncReadRent, AsyncWriteRent};
use monoio::net::TcpStream;
use monoio::BufResult;
use std::cell::UnsafeCell;
use std::os::fd::AsRawFd;

/// One reader task and any number of writers (serialised by the peer's write gate) use the
/// same stream at once, the way monoio's own split halves do, but keeping `readable`, which
/// the split halves lack: the reader waits for readiness before it takes a pooled buffer.
pub struct Socket {
    stream: UnsafeCell<TcpStream>,
}

impl Socket {
    pub fn new(stream: TcpStream) -> Socket {
        Socket {
            stream: UnsafeCell::new(stream),
        }
    }

    fn shared(&self) -> &TcpStream {
        // SAFETY: the only `&mut` made from this cell is inside `read`/`writev` below, where it
        // lives just for the synchronous call that creates the operation (see there), so it
        // never overlaps this shared borrow in use.
        unsafe { &*self.stream.get() }
    }

    /// Waits until the socket has data (or EOF) without holding any buffer.
    pub async fn readable(&self) -> std::io::Result<()> {
        self.shared().readable(false).await
    }

    pub async fn read<B: IoBufMut>(&self, buf: B) -> BufResult<usize, B> {
        // SAFETY: monoio's `TcpStream::read` builds the io_uring/epoll operation from a clone of
        // the shared fd when it is called and never dereferences `self` again, so this
        // exclusive borrow is not used after the call returns, even though the future's type
        // mentions it. Tasks on this thread run one at a time, so no other borrow of the
        // stream is live during the call itself. monoio's split halves rely on the same fact.
        let op = unsafe { &mut *self.stream.get() }.read(buf);
        op.await
    }

    pub async fn writev<B: IoVecBuf>(&self, buf: B) -> BufResult<usize, B> {
        // SAFETY: as in `read`: `writev` clones the fd into the operation at call time and does
        // not touch the stream afterwards; callers serialise writes with the write gate.
        let op = unsafe { &mut *self.stream.get() }.writev(buf);
        op.await
    }

    pub async fn write<B: monoio::buf::IoBuf>(&self, buf: B) -> BufResult<usize, B> {
        // SAFETY: as in `writev`.
        let op = unsafe { &mut *self.stream.get() }.write(buf);
        op.await
    }

    /// Writes all of `buf` (in as many writes as it takes) and gives it back.
    pub async fn write_all<B: monoio::buf::IoBuf>(&self, buf: B) -> BufResult<(), B> {
        let len = buf.bytes_init();
        let mut slice = buf.slice(0..len);
        let mut done = 0;
        while done < len {
            let (r, s) = self.write(slice).await;
            let buf = s.into_inner();
            match r {
                Ok(0) => return (Err(std::io::ErrorKind::WriteZero.into()), buf),
                Ok(n) => done += n,
                Err(e) => return (Err(e), buf),
            }
            slice = buf.slice(done..len);
        }
        (Ok(()), slice.into_inner())
    }

    /// Sends FIN after the last queued byte, leaving the read side open.
    pub fn shutdown_write(&self) {
        let _ = socket2::SockRef::from(self).shutdown(std::net::Shutdown::Write);
    }

    /// Ends both directions now: a pending readiness wait or read completes, so the reader
    /// task notices and cleans up. Used for timeouts and forced closes.
    pub fn abort(&self) {
        let _ = socket2::SockRef::from(self).shutdown(std::net::Shutdown::Both);
    }
}

impl AsRawFd for Socket {
    fn as_raw_fd(&self) -> std::os::fd::RawFd {
        self.shared().as_raw_fd()
    }
}

impl std::os::fd::AsFd for Socket {
    fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        // SAFETY: the fd belongs to the stream owned by `self`, which outlives the borrow.
        unsafe { std::os::fd::BorrowedFd::borrow_raw(self.as_raw_fd()) }
    }
}
