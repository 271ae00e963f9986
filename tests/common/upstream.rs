//! A small HTTP/1.1 upstream for the proxy's health and figures tests: `GET /health...`
//! gets the status the test sets (each such request counted as a check); `/status/N` gets
//! status N; `/bytes/N` gets N bytes; anything else 200 with the upstream's name and the
//! request line. Keep-alive, Content-Length bodies read and counted; `slow` holds every
//! answer but the health check's for a second.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU16, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

#[derive(Default)]
struct Shared {
    health: AtomicU16,
    checks: AtomicUsize,
    requests: AtomicUsize,
    slow: AtomicBool,
}

pub struct Upstream {
    pub addr: SocketAddr,
    shared: Arc<Shared>,
}

impl Upstream {
    pub fn start(name: &'static str) -> Upstream {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind upstream");
        let shared = Arc::new(Shared::default());
        shared.health.store(200, Ordering::SeqCst);
        let up = Upstream {
            addr: listener.local_addr().unwrap(),
            shared: shared.clone(),
        };
        std::thread::spawn(move || {
            for s in listener.incoming().flatten() {
                let shared = shared.clone();
                std::thread::spawn(move || serve(name, s, &shared));
            }
        });
        up
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The status its health path answers from now on.
    pub fn set_health(&self, status: u16) {
        self.shared.health.store(status, Ordering::SeqCst);
    }

    /// Holds every answer but the health check's for a second (or not).
    pub fn set_slow(&self, slow: bool) {
        self.shared.slow.store(slow, Ordering::SeqCst);
    }

    /// Health checks it was sent.
    pub fn checks(&self) -> usize {
        self.shared.checks.load(Ordering::SeqCst)
    }

    /// Other requests it was sent.
    pub fn requests(&self) -> usize {
        self.shared.requests.load(Ordering::SeqCst)
    }
}

fn serve(name: &str, s: TcpStream, shared: &Shared) {
    let mut w = s.try_clone().unwrap();
    let mut r = BufReader::new(s);
    loop {
        let mut head = String::new();
        loop {
            let mut line = String::new();
            if r.read_line(&mut line).unwrap_or(0) == 0 {
                return;
            }
            head.push_str(&line);
            if line == "\r\n" {
                break;
            }
        }
        let len: usize = head
            .lines()
            .find_map(|l| {
                let (n, v) = l.split_once(':')?;
                n.eq_ignore_ascii_case("content-length")
                    .then(|| v.trim().parse().ok())?
            })
            .unwrap_or(0);
        let mut body = vec![0; len];
        if r.read_exact(&mut body).is_err() {
            return;
        }
        let line = head.lines().next().unwrap_or("").to_string();
        let path = line.split(' ').nth(1).unwrap_or("").to_string();
        let (status, text) = if path.starts_with("/health") {
            shared.checks.fetch_add(1, Ordering::SeqCst);
            (shared.health.load(Ordering::SeqCst), String::new())
        } else {
            shared.requests.fetch_add(1, Ordering::SeqCst);
            if shared.slow.load(Ordering::SeqCst) {
                std::thread::sleep(Duration::from_secs(1));
            }
            if let Some(n) = path.strip_prefix("/api/status/") {
                (n.parse().unwrap_or(500), format!("{name} {line}"))
            } else if let Some(n) = path.strip_prefix("/api/bytes/") {
                (200, "x".repeat(n.parse().unwrap_or(0)))
            } else {
                (200, format!("{name} {line}"))
            }
        };
        let resp = format!(
            "HTTP/1.1 {status} X\r\nContent-Length: {}\r\n\r\n{text}",
            text.len()
        );
        if w.write_all(resp.as_bytes()).is_err() {
            return;
        }
    }
}
