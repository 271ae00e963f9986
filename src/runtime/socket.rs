//! A TCP stream shared by the task that reads it and the tasks that write to it, and the few
//! raw socket calls the crate makes that std, monoio and socket2 do not wrap. With
//! runtime/chunk.rs, the only file allowed `unsafe` (see lib.rs).
#![allow(unsafe_code)]

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
        // the shared fd when it is called and never dereferences `self` again (true of monoio
        // 0.2.4, pinned with `=` in Cargo.toml for this reason: `Op::recv(self.fd.clone(), buf)`
        // in its net/tcp/stream.rs; `writev` and `write` do the same), so this
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

/// The std stream that owns `stream`'s fd from now on, to hand it to another core (monoio's
/// streams are bound to the driver of the thread that made them).
pub fn into_std(stream: TcpStream) -> std::net::TcpStream {
    use std::os::fd::{FromRawFd, IntoRawFd};
    let fd = stream.into_raw_fd();
    // SAFETY: `into_raw_fd` gave up monoio's ownership of this fd (and deregistered it from
    // this core's driver); nothing else refers to it, so the std stream becomes its only owner.
    unsafe { std::net::TcpStream::from_raw_fd(fd) }
}

/// `SO_ATTACH_REUSEPORT_CBPF` from asm-generic/socket.h (x86-64, aarch64 and most others;
/// libc does not export it for Linux).
const SO_ATTACH_REUSEPORT_CBPF: libc::c_int = 51;

/// Attaches the classic BPF `program` to the reuseport group `listener` belongs to: the
/// kernel runs it on each new connection to choose the listener (and so the core) it goes
/// to. The kernel copies the program.
pub fn attach_reuseport_cbpf(
    listener: &std::net::TcpListener,
    program: &[libc::sock_filter],
) -> std::io::Result<()> {
    let len = u16::try_from(program.len())
        .map_err(|_| std::io::Error::other("steering program too long"))?;
    let fprog = libc::sock_fprog {
        len,
        filter: program.as_ptr().cast_mut(),
    };
    // SAFETY: `fprog` points at `program`, which outlives the call (the kernel copies the
    // instructions before returning, and never writes through the pointer), its `len` is
    // that of `program`, and the option length is that of `struct sock_fprog`. The fd is
    // open: `listener` is borrowed for the call.
    let r = unsafe {
        libc::setsockopt(
            listener.as_raw_fd(),
            libc::SOL_SOCKET,
            SO_ATTACH_REUSEPORT_CBPF,
            std::ptr::addr_of!(fprog).cast(),
            std::mem::size_of::<libc::sock_fprog>() as libc::socklen_t,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Sets `IP_BIND_ADDRESS_NO_PORT` (Linux 4.2+), which socket2 does not wrap: a socket bound
/// to an address before `connect` gets its port at connect time, so many sockets can share
/// a source address without running out of ports at bind.
pub fn set_bind_address_no_port(s: &socket2::Socket) -> std::io::Result<()> {
    let one: libc::c_int = 1;
    // SAFETY: setsockopt(2) on a socket this function borrows (so its fd is open), reading
    // `size_of::<c_int>()` bytes from a live `c_int`.
    let rc = unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::IPPROTO_IP,
            libc::IP_BIND_ADDRESS_NO_PORT,
            (&one as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}
