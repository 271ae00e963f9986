//! The copying forwarder the relay is measured against: no WebSocket at all. Each connection
//! names its session in a first line; the 1st and 2nd of a session are paired and bytes are
//! copied both ways through a user-space buffer of [`BUF_BYTES`] (read, then write all of
//! it). The clients (`ringrelay load --raw`) speak masked WebSocket frames straight through
//! it, so this is the floor of what moving the bytes costs: no framing, no unmasking.
//!
//! Used in process by `benches/e2e.rs` and on its own by `examples/tcp_forwarder.rs` (so that
//! it can be pinned to a core and measured beside a relay process).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The copy buffer of each direction (issue 17's forwarder: 256 KiB).
pub const BUF_BYTES: usize = 256 << 10;

type Waiting = Arc<Mutex<HashMap<String, (TcpStream, Vec<u8>)>>>;

/// Serves on `listener` on a current-thread tokio runtime, on the calling thread, forever.
pub fn serve(listener: std::net::TcpListener) {
    let waiting: Waiting = Arc::default();
    accept_loop(listener, move |sock| join(sock, waiting.clone()))
}

/// The accept loop of this forwarder and of `benches/e2e.rs`'s other baselines: on a
/// current-thread tokio runtime, on the calling thread, forever, each accepted connection
/// (with TCP_NODELAY) spawned as `handle(sock)`.
pub fn accept_loop<F, Fut>(listener: std::net::TcpListener, handle: F)
where
    F: Fn(TcpStream) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    listener.set_nonblocking(true).expect("nonblocking");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()
        .expect("tokio runtime");
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
        loop {
            let Ok((sock, _)) = listener.accept().await else {
                continue;
            };
            let _ = sock.set_nodelay(true);
            tokio::spawn(handle(sock));
        }
    })
}

/// Binds a loopback port and serves it on a thread of its own.
#[allow(dead_code)] // the example serves on its main thread
pub fn spawn() -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    std::thread::Builder::new()
        .name("tcp-forwarder".into())
        .spawn(move || serve(listener))
        .expect("spawn");
    addr
}

/// Reads the session line; the second connection of a session starts the two copy loops.
/// Bytes read past the line go to the other side first.
async fn join(mut sock: TcpStream, waiting: Waiting) {
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    let nl = loop {
        if let Some(i) = head.iter().position(|&b| b == b'\n') {
            break i;
        }
        if head.len() > 4096 {
            return;
        }
        match sock.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
    };
    let rest = head.split_off(nl + 1);
    let key = String::from_utf8_lossy(&head[..nl]).into_owned();
    let first = waiting.lock().unwrap().remove(&key);
    match first {
        None => {
            waiting.lock().unwrap().insert(key, (sock, rest));
        }
        Some((other, other_rest)) => {
            let (or, ow) = other.into_split();
            let (sr, sw) = sock.into_split();
            tokio::spawn(copy(or, sw, other_rest));
            tokio::spawn(copy(sr, ow, rest));
        }
    }
}

async fn copy(
    mut r: tokio::net::tcp::OwnedReadHalf,
    mut w: tokio::net::tcp::OwnedWriteHalf,
    pending: Vec<u8>,
) {
    if w.write_all(&pending).await.is_err() {
        return;
    }
    let mut buf = vec![0u8; BUF_BYTES];
    loop {
        match r.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if w.write_all(&buf[..n]).await.is_err() {
                    break;
                }
            }
        }
    }
    let _ = w.shutdown().await;
}
