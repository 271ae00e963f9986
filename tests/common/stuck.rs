//! Clients that stop reading, for the tests of what their pinned buffers cost the relay.

use super::TIMEOUT;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};

/// A receiver that upgrades and then never reads, from `source`. A small receive buffer and
/// a small segment size (the relay's send buffer grows with the segment size) keep what it
/// takes to fill the way to it small: some tens of KiB.
pub fn stuck_receiver(addr: SocketAddr, source: &str, path: &str) -> TcpStream {
    use std::os::fd::AsRawFd;
    let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    sock.set_recv_buffer_size(4096).unwrap();
    let mss: libc::c_int = 536;
    // SAFETY: setsockopt on a socket we own, with a pointer to a live c_int and its size.
    let r = unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_MAXSEG,
            (&mss as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    assert_eq!(r, 0, "TCP_MAXSEG: {}", std::io::Error::last_os_error());
    let src: SocketAddr = format!("{source}:0").parse().unwrap();
    sock.bind(&src.into()).unwrap();
    sock.connect(&addr.into()).unwrap();
    let mut s: TcpStream = sock.into();
    s.set_read_timeout(Some(TIMEOUT)).unwrap();
    let req = format!(
        "GET {path} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
    );
    s.write_all(req.as_bytes()).unwrap();
    // Byte by byte, so that nothing after the head is read: from here on it never reads.
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut b = [0u8; 1];
        assert_eq!(s.read(&mut b).unwrap(), 1, "EOF in the upgrade answer");
        head.push(b[0]);
    }
    assert!(
        head.starts_with(b"HTTP/1.1 101"),
        "{}",
        String::from_utf8_lossy(&head)
    );
    s
}
