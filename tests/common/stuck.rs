//! Clients that stop reading, for the tests of what their pinned buffers cost the relay.

use super::{TestServer, Ws, TIMEOUT};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use tungstenite::Message;

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

/// Senders already upgraded, each writing `msg` until it has sent `messages`, a write fails
/// or the flood is stopped (dropping it shuts their sockets, which ends a blocked write).
pub struct Flood {
    stop: Arc<AtomicBool>,
    socks: Vec<TcpStream>,
    threads: Vec<JoinHandle<()>>,
}

impl Flood {
    pub fn start(senders: &[&TcpStream], msg: Vec<u8>, messages: usize) -> Flood {
        let stop = Arc::new(AtomicBool::new(false));
        let mut socks = Vec::new();
        let mut threads = Vec::new();
        for s in senders {
            let mut s = s.try_clone().unwrap();
            socks.push(s.try_clone().unwrap());
            let (stop, msg) = (stop.clone(), msg.clone());
            threads.push(std::thread::spawn(move || {
                for _ in 0..messages {
                    if stop.load(Ordering::Relaxed) || s.write_all(&msg).is_err() {
                        return;
                    }
                }
            }));
        }
        Flood {
            stop,
            socks,
            threads,
        }
    }
}

impl Drop for Flood {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for s in &self.socks {
            let _ = s.shutdown(std::net::Shutdown::Both);
        }
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// A control pair on `session`, with reads that give up after `patience`.
pub fn control_pair(srv: &TestServer, session: &str, patience: Duration) -> (Ws, Ws) {
    let a = srv.connect(&format!("/v1/relay/{session}?role=a"));
    let b = srv.connect(&format!("/v1/relay/{session}?role=b"));
    for ws in [&a, &b] {
        ws.get_ref().set_read_timeout(Some(patience)).unwrap();
    }
    (a, b)
}

/// One message each way on the control pair; how long it took, or why it did not happen.
pub fn exchange(a: &mut Ws, b: &mut Ws, i: usize) -> Result<Duration, String> {
    let started = Instant::now();
    let read = |ws: &mut Ws| loop {
        match ws.read() {
            Ok(Message::Text(t)) => return Ok(t.to_string()),
            Ok(Message::Ping(_) | Message::Pong(_)) => continue,
            Ok(other) => return Err(format!("unexpected {other:?}")),
            Err(e) => return Err(format!("no message after {:?}: {e}", started.elapsed())),
        }
    };
    a.send(Message::text(format!("ping {i}")))
        .map_err(|e| e.to_string())?;
    assert_eq!(read(b)?, format!("ping {i}"));
    b.send(Message::text(format!("pong {i}")))
        .map_err(|e| e.to_string())?;
    assert_eq!(read(a)?, format!("pong {i}"));
    Ok(started.elapsed())
}

/// `rounds` exchanges on the control pair, each within `within`: it kept flowing.
pub fn keeps_flowing(a: &mut Ws, b: &mut Ws, rounds: usize, within: Duration) {
    for i in 1..=rounds {
        match exchange(a, b, i) {
            Ok(took) => assert!(took < within, "round {i} took {took:?}"),
            Err(e) => panic!("the control pair stalled in round {i}: {e}"),
        }
    }
}
