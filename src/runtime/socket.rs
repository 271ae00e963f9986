//! A TCP stream shared by the task that reads it and the tasks that write to it (plain, or
//! carrying a TLS session), and the few raw socket calls the crate makes that std, monoio
//! and socket2 do not wrap. With runtime/chunk.rs, the only file allowed `unsafe` (see
//! lib.rs).
#![allow(unsafe_code)]

use super::stream::ServerStream;
use super::tls::{TlsSession, Written};
use monoio::buf::{IoBuf, IoBufMut, IoVecBuf};
use monoio::io::{AsyncReadRent, AsyncWriteRent};
use monoio::net::TcpStream;
use monoio::BufResult;
use std::cell::UnsafeCell;
use std::io::IoSlice;
use std::os::fd::{AsRawFd, RawFd};

/// One reader task and any number of writers (serialised by the peer's write gate) use the
/// same stream at once, the way monoio's own split halves do, but keeping `readable`, which
/// the split halves lack: the reader waits for readiness before it takes a pooled buffer.
/// A TLS connection's session comes along; a plain one pays one branch per call. The enum
/// inside is no larger than the stream (the box fits beside the stream's niche), which keeps
/// every `Peer` within its size.
pub struct Socket(UnsafeCell<Stream>);

enum Stream {
    Plain(TcpStream),
    Tls(Box<TlsSocket>),
}

/// A TLS connection's stream and session, boxed: rare next to plain ones on the hot path.
struct TlsSocket {
    stream: TcpStream,
    session: Box<TlsSession>,
}

const _: () = assert!(std::mem::size_of::<Socket>() == std::mem::size_of::<TcpStream>());

impl Socket {
    pub fn new(stream: TcpStream) -> Socket {
        Socket(UnsafeCell::new(Stream::Plain(stream)))
    }

    /// The socket of a connection the HTTP phase upgraded, its TLS session with it.
    pub fn upgraded(stream: ServerStream) -> Socket {
        match stream.into_parts() {
            (stream, None) => Socket::new(stream),
            (stream, Some(session)) => Socket(UnsafeCell::new(Stream::Tls(Box::new(TlsSocket {
                stream,
                session,
            })))),
        }
    }

    /// An adopted TLS connection's socket: the stream and the session carried to it
    /// (`relay::handover`).
    pub fn with_tls(stream: TcpStream, session: Box<TlsSession>) -> Socket {
        Socket(UnsafeCell::new(Stream::Tls(Box::new(TlsSocket {
            stream,
            session,
        }))))
    }

    /// A TLS connection's record state for a binary upgrade (`TlsSession::carry`); `None`
    /// for a plain one.
    pub fn tls_carry(&self) -> Option<Result<crate::tls::record::Carried, super::tls::NotCarried>> {
        self.tls().map(TlsSession::carry)
    }

    fn inner(&self) -> &Stream {
        // SAFETY: the only `&mut` made from this cell is inside `read`/`writev`/`write` below,
        // for a plain stream, where it lives just for the synchronous call that creates the
        // operation (see there), so it never overlaps this shared borrow in use. A TLS
        // stream is never borrowed mutably.
        unsafe { &*self.0.get() }
    }

    fn tls(&self) -> Option<&TlsSession> {
        match self.inner() {
            Stream::Plain(_) => None,
            Stream::Tls(t) => Some(&t.session),
        }
    }

    fn shared(&self) -> &TcpStream {
        match self.inner() {
            Stream::Plain(s) => s,
            Stream::Tls(t) => &t.stream,
        }
    }

    /// The plain stream, mutably, for the call that creates an operation (`None` over TLS).
    ///
    /// # Safety
    /// The borrow must end with the synchronous call that creates the operation (monoio
    /// 0.2.4's `read`, `writev` and `write` clone the fd into it and never touch the stream
    /// again), and the caller must not hold any other borrow of the stream meanwhile.
    #[allow(clippy::mut_from_ref)]
    unsafe fn plain(&self) -> Option<&mut TcpStream> {
        // SAFETY: see the function's contract, which each caller keeps.
        match unsafe { &mut *self.0.get() } {
            Stream::Plain(s) => Some(s),
            Stream::Tls(_) => None,
        }
    }

    /// Waits until the socket has data (or EOF) without holding any buffer. Over TLS, at once
    /// when the session already holds something to read.
    pub async fn readable(&self) -> std::io::Result<()> {
        if self.tls().is_some_and(|t| t.has_buffered()) {
            return Ok(());
        }
        self.shared().readable(false).await
    }

    /// Reads into `buf`. Over TLS this returns `WouldBlock` when what the socket had was not
    /// a whole record yet: the caller gives its buffer back and waits for readiness again,
    /// so a client trickling a record holds no pooled buffer meanwhile.
    pub async fn read<B: IoBufMut>(&self, mut buf: B) -> BufResult<usize, B> {
        if let Some(tls) = self.tls() {
            let r = read_tls_now(tls, self.shared(), &mut buf);
            return (r, buf);
        }
        // SAFETY: monoio's `TcpStream::read` builds the io_uring/epoll operation from a clone of
        // the shared fd when it is called and never dereferences `self` again (true of monoio
        // 0.2.4, pinned with `=` in Cargo.toml for this reason: `Op::recv(self.fd.clone(), buf)`
        // in its net/tcp/stream.rs; `writev` and `write` do the same), so this
        // exclusive borrow is not used after the call returns, even though the future's type
        // mentions it. Tasks on this thread run one at a time, so no other borrow of the
        // stream is live during the call itself. monoio's split halves rely on the same fact.
        let op = unsafe { self.plain() }.expect("plain").read(buf);
        op.await
    }

    /// Like `read`, but over TLS waits for a whole record rather than answering `WouldBlock`.
    pub async fn read_wait<B: IoBufMut>(&self, mut buf: B) -> BufResult<usize, B> {
        let Some(tls) = self.tls() else {
            return self.read(buf).await;
        };
        let mut at = 0;
        let room = buf.bytes_total();
        let r = Box::pin(tls.read(self.shared(), room, &mut |b| at += fill(&mut buf, at, b))).await;
        (r, buf)
    }

    /// Over TLS the records are sent without waiting when the socket takes them, which is
    /// nearly always; otherwise the wait's future is boxed, so a plain connection's task
    /// stays as small as it was.
    pub async fn writev<B: IoVecBuf>(&self, buf: B) -> BufResult<usize, B> {
        if let Some(tls) = self.tls() {
            let r = self.write_tls(tls, iovec_slices(&buf)).await;
            return (r, buf);
        }
        // SAFETY: as in `read`: `writev` clones the fd into the operation at call time and does
        // not touch the stream afterwards; callers serialise writes with the write gate.
        let op = unsafe { self.plain() }.expect("plain").writev(buf);
        op.await
    }

    pub async fn write<B: IoBuf>(&self, buf: B) -> BufResult<usize, B> {
        if let Some(tls) = self.tls() {
            let r = self.write_tls(tls, &[IoSlice::new(init_bytes(&buf))]).await;
            return (r, buf);
        }
        // SAFETY: as in `writev`.
        let op = unsafe { self.plain() }.expect("plain").write(buf);
        op.await
    }

    async fn write_tls(&self, tls: &TlsSession, bufs: &[IoSlice<'_>]) -> std::io::Result<usize> {
        match tls.write_now(self.as_raw_fd(), bufs) {
            Ok(Written::Sent(n)) if n > 0 || bufs.iter().all(|b| b.is_empty()) => Ok(n),
            Ok(Written::Queued(n)) if n > 0 => Box::pin(tls.flush(self.shared())).await.map(|()| n),
            Ok(_) => Box::pin(tls.write(self.shared(), bufs)).await,
            Err(e) => Err(e),
        }
    }

    /// Writes all of `buf` (in as many writes as it takes) and gives it back.
    pub async fn write_all<B: IoBuf>(&self, buf: B) -> BufResult<(), B> {
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

    /// One recv(2) now, without waiting (`MSG_DONTWAIT`), into `spare`: what the socket
    /// holds at this moment, `WouldBlock` if nothing, and always `WouldBlock` over TLS (its
    /// reads go through the session). For a connection streaming large frames, whose bytes
    /// are unmasked and written on at once while they are still in the core's cache rather
    /// than copied in with every other connection's read of the same ring turn
    /// (runtime::chunk, `Chunk::read_now`).
    pub fn try_read_now(&self, spare: &mut [std::mem::MaybeUninit<u8>]) -> std::io::Result<usize> {
        if self.tls().is_some() {
            return Err(std::io::ErrorKind::WouldBlock.into());
        }
        loop {
            match socket2::SockRef::from(self).recv_with_flags(spare, libc::MSG_DONTWAIT) {
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                r => return r,
            }
        }
    }

    /// One sendmsg(2) now, without waiting, of what `buf` points at: what the socket takes at
    /// this moment, `WouldBlock` if nothing, and always `WouldBlock` over TLS. The writer
    /// holds the peer's write gate, so no other write of this socket is in flight.
    pub fn try_writev_now<B: IoVecBuf>(&self, buf: &B) -> std::io::Result<usize> {
        if self.tls().is_some() {
            return Err(std::io::ErrorKind::WouldBlock.into());
        }
        send_now(self.as_raw_fd(), iovec_slices(buf))
    }

    /// Sends FIN after the last queued byte, leaving the read side open (over TLS, the
    /// close_notify alert first, best effort: a FIN alone reads as a truncation to a client).
    pub fn shutdown_write(&self) {
        if let Some(tls) = self.tls() {
            tls.close_notify_now(self.as_raw_fd());
        }
        let _ = socket2::SockRef::from(self).shutdown(std::net::Shutdown::Write);
    }

    /// Ends both directions now: a pending readiness wait or read completes, so the reader
    /// task notices and cleans up. Used for timeouts and forced closes.
    pub fn abort(&self) {
        let _ = socket2::SockRef::from(self).shutdown(std::net::Shutdown::Both);
    }
}

/// One non-blocking TLS read into `buf`: what the session gives now, `WouldBlock` if nothing.
fn read_tls_now<B: IoBufMut>(
    tls: &TlsSession,
    tcp: &TcpStream,
    buf: &mut B,
) -> std::io::Result<usize> {
    let mut at = 0;
    let room = buf.bytes_total();
    tls.read_now(tcp.as_raw_fd(), room, &mut |b| at += fill(buf, at, b))
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

/// The initialised bytes of an owned buffer, for a writer that copies them (TLS).
pub fn init_bytes<B: IoBuf>(buf: &B) -> &[u8] {
    // SAFETY: `IoBuf`'s contract: `read_ptr` points at `bytes_init` initialised bytes that
    // stay valid and unchanged while the buffer is borrowed (it is, for the slice's life).
    unsafe { std::slice::from_raw_parts(buf.read_ptr(), buf.bytes_init()) }
}

/// The slices an owned vectored buffer points at, for a writer that copies them (TLS): its
/// own iovec array, seen as `IoSlice`s, with no copy and no allocation (a `Vec` of them was
/// an allocation per TLS write; one unsafe block where there were two).
pub fn iovec_slices<B: IoVecBuf>(buf: &B) -> &[IoSlice<'_>] {
    let (ptr, len) = (buf.read_iovec_ptr(), buf.read_iovec_len());
    if len == 0 || ptr.is_null() {
        return &[];
    }
    // SAFETY: `IoVecBuf`'s contract: `read_iovec_ptr` points at `read_iovec_len` iovecs, each
    // naming initialised bytes, all valid and unchanged while the buffer is borrowed (it is,
    // for the returned slice's life, which borrows `buf`). std documents `IoSlice` as
    // guaranteed ABI-compatible with `iovec` on Unix, so the array reads as `IoSlice`s of the
    // same bytes; nothing writes through it.
    unsafe { std::slice::from_raw_parts(ptr.cast::<IoSlice<'_>>(), len) }
}

/// Copies what fits of `src` into `buf` from `at` on (after the bytes put there before) and
/// marks them initialised. Returns the bytes copied.
pub fn fill<B: IoBufMut>(buf: &mut B, at: usize, src: &[u8]) -> usize {
    let n = src.len().min(buf.bytes_total().saturating_sub(at));
    // SAFETY: `IoBufMut`'s contract: `write_ptr` is valid for `bytes_total` bytes of writes;
    // `at + n <= bytes_total`, and `src` is a slice of our own that cannot overlap a buffer we
    // hold by value. `set_init(at + n)` then covers bytes all written (`0..at` by the calls
    // before, `at..at + n` now).
    unsafe {
        std::ptr::copy_nonoverlapping(src.as_ptr(), buf.write_ptr().add(at), n);
        buf.set_init(at + n);
    }
    n
}

/// recv(2) with `MSG_DONTWAIT`: what the socket has now (`WouldBlock` if nothing), whether or
/// not the fd is in non-blocking mode (io_uring's accepted sockets are not).
pub fn recv_now(fd: RawFd, buf: &mut [u8]) -> std::io::Result<usize> {
    loop {
        // SAFETY: recv(2) writes at most `buf.len()` bytes into `buf`, a live exclusive
        // borrow; `fd` is borrowed from a stream the caller holds open.
        let n = unsafe { libc::recv(fd, buf.as_mut_ptr().cast(), buf.len(), libc::MSG_DONTWAIT) };
        if n >= 0 {
            return Ok(n as usize);
        }
        let e = std::io::Error::last_os_error();
        if e.kind() != std::io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// sendmsg(2) of `bufs` with `MSG_DONTWAIT | MSG_NOSIGNAL`: what the socket takes now
/// (`WouldBlock` if nothing).
pub fn send_now(fd: RawFd, bufs: &[IoSlice<'_>]) -> std::io::Result<usize> {
    let n = bufs.len().min(1024);
    // SAFETY: an all-zero msghdr is valid (no name, no control data).
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    // `IoSlice` is ABI-compatible with `iovec` on Unix (std guarantees it); sendmsg only
    // reads through the pointer.
    msg.msg_iov = bufs.as_ptr() as *mut libc::iovec;
    msg.msg_iovlen = n as _;
    loop {
        // SAFETY: `msg` points at `n` iovecs of `bufs`, live for the call, each naming bytes
        // of a live slice; the kernel only reads them. `fd` is held open by the caller.
        let r = unsafe { libc::sendmsg(fd, &msg, libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL) };
        if r >= 0 {
            return Ok(r as usize);
        }
        let e = std::io::Error::last_os_error();
        if e.kind() != std::io::ErrorKind::Interrupted {
            return Err(e);
        }
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

/// `shutdown(2)` on the socket behind `fd` (a monoio stream's, which offers no `AsFd`): a
/// tunnel's half-close and abort (`tunnel/join.rs`). Errors (already shut, reset) are moot.
pub fn shutdown_fd(fd: RawFd, how: std::net::Shutdown) {
    // SAFETY: the caller holds the stream that owns `fd` for the whole call (it passes the
    // fd of a stream it owns), so the descriptor is open and is that socket; the borrow
    // ends with the call.
    let fd = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
    let _ = socket2::SockRef::from(&fd).shutdown(how);
}

/// Sets `O_NONBLOCK` on a socket's open file with one `ioctl(FIONBIO)` (socket2's and
/// std's `set_nonblocking` may take an `fcntl` pair), for splices made at once
/// (`splice_now`) on a socket the driver still owns.
pub fn set_nonblocking_fd(fd: RawFd) -> std::io::Result<()> {
    let mut on: libc::c_int = 1;
    // SAFETY: FIONBIO reads one c_int through the pointer, which points at `on`, alive for
    // the call; the descriptor is the caller's (it holds the stream that owns it), and a
    // wrong one is an error, not undefined.
    let r = unsafe { libc::ioctl(fd, libc::FIONBIO, &mut on) };
    if r == -1 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// One `splice(2)` of at most `len` bytes from `from` to `to` (one of them a pipe), made at
/// once and never waiting: `SPLICE_F_NONBLOCK` for the pipe's side, and the socket's side
/// must be `O_NONBLOCK` (`runtime::splice` sets it), so "nothing now" is `WouldBlock`.
///
/// Why not monoio's splice operation: io_uring always runs `IORING_OP_SPLICE` in its kernel
/// worker pool (the opcode has no non-blocking attempt), so every slice cost a worker thread's
/// wake-up and a task switch; on a tunnel's bulk transfer that worker took about three times
/// the CPU of the relay's own thread. Made here, a slice is one system call on either driver.
pub fn splice_now(from: RawFd, to: RawFd, len: usize) -> std::io::Result<usize> {
    let flags = libc::SPLICE_F_MOVE | libc::SPLICE_F_NONBLOCK;
    loop {
        // SAFETY: no memory is passed (null offsets: both ends are streams, and the kernel
        // refuses offsets on pipes and sockets anyway); the descriptors are the caller's, open
        // for the call (it holds their owners), and a wrong one is an error, not undefined.
        let n = unsafe {
            libc::splice(
                from,
                std::ptr::null_mut(),
                to,
                std::ptr::null_mut(),
                len,
                flags,
            )
        };
        if n >= 0 {
            return Ok(n as usize);
        }
        let e = std::io::Error::last_os_error();
        if e.kind() != std::io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// Takes a descriptor this process inherited by number across exec (the binary upgrade's
/// socket, named by `RINGRELAY_UPGRADE_FD`; `server::upgrade`), close-on-exec from here on.
/// `None` when the number is not an open descriptor or is one of stdin, stdout and stderr.
/// The caller takes a number once: the variable naming it is removed first.
pub fn take_inherited(fd: RawFd) -> Option<std::os::fd::OwnedFd> {
    use std::os::fd::FromRawFd;
    if fd <= 2 {
        return None;
    }
    // SAFETY: fcntl(F_GETFD) only reads the descriptor's flags; on a number that is not open
    // it fails with EBADF, touching nothing.
    if unsafe { libc::fcntl(fd, libc::F_GETFD) } < 0 {
        return None;
    }
    // SAFETY: the number is open (checked above), it was inherited across exec for this one
    // purpose so nothing else in the process owns it, and the caller takes it once: the
    // OwnedFd is its only owner and closes it once.
    let owned = unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) };
    // SAFETY: F_SETFD on a descriptor we own; a failure leaves it inheritable, which only
    // matters to a later exec, and the next upgrade passes its own socket.
    unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) };
    Some(owned)
}

/// A connection's own descriptor, lent to a binary upgrade's thread to send to the new
/// process (`relay::handover::export`, `server::upgrade`).
///
/// No duplicate is made: SCM_RIGHTS duplicates it into the new process anyway, so the old
/// process needs no descriptor beyond its connections' (with a duplicate each it needed
/// twice as many, and at 10,000 connections on a 20,000 limit some failed with EMFILE). The
/// handover keeps the socket's peer until `settle` (`park.gated`), and the upgrade thread
/// sends every share before it asks the workers to settle.
#[derive(Debug, Clone, Copy)]
pub struct Lent(RawFd);

impl Lent {
    /// Lends `sock`'s descriptor. The caller keeps `sock` open until the last
    /// [`Lent::borrow`] ends (the handover: until `settle`).
    pub fn of(sock: &Socket) -> Lent {
        Lent(sock.as_raw_fd())
    }

    /// The descriptor, to send with SCM_RIGHTS.
    pub fn borrow(&self) -> std::os::fd::BorrowedFd<'_> {
        // SAFETY: `Lent::of`'s caller keeps the socket open while the share is sent: the
        // handover holds every crossing peer (whose socket closes only when it drops) until
        // `settle`, and the upgrade thread sends each share before it orders `settle`.
        unsafe { std::os::fd::BorrowedFd::borrow_raw(self.0) }
    }
}

/// Makes `cmd`'s process inherit only stdin, stdout, stderr and `keep` (the binary upgrade's
/// socket, `server::upgrade`): between fork and exec every other descriptor is marked
/// close-on-exec. Sockets accepted through io_uring are not close-on-exec, so without this
/// the new process of an upgrade got a copy of every connection the old one held: twice the
/// descriptors across the two processes, and a connection the old one closed (with 1012)
/// kept open in the new one for its whole life. Where close_range(2) is missing (Linux
/// before 5.11) the child inherits as before.
pub fn inherit_only(cmd: &mut std::process::Command, keep: RawFd) {
    use std::os::unix::process::CommandExt;
    // SAFETY: the closure runs in the child between fork and exec and makes only two system
    // calls (close_range with CLOSE_RANGE_CLOEXEC, which closes nothing now, and fcntl), both
    // async-signal-safe, with plain integers: no allocation, no lock.
    unsafe {
        cmd.pre_exec(move || {
            libc::syscall(
                libc::SYS_close_range,
                3u32,
                u32::MAX,
                libc::CLOSE_RANGE_CLOEXEC,
            );
            if libc::fcntl(keep, libc::F_SETFD, 0) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}
