//! `--mode http-target`: a small, fast HTTP/1.1 server on one thread, standing in for the
//! local API behind a bridge agent in benchmarks and tests, so that the target's own cost is
//! small beside what is measured.
//!
//! Every request gets 200. The body is the request's own body when it has one (an echo), and
//! otherwise `size` bytes of filler. Connections are kept alive unless the request asks for
//! `Connection: close` (or is HTTP/1.0 without keep-alive); pipelined requests are answered in
//! order. It runs until the process is stopped.

use super::request::{parse_request, RequestHead};
use crate::config::DriverChoice;
use crate::http::chunked::{ChunkedDecoder, ChunkedError};
use crate::http::client::{Framing, WireError};
use crate::load::service::{bind, ServiceError};
use crate::runtime::driver;
use monoio::buf::IoBufMut;
use monoio::io::{AsyncReadRent, AsyncWriteRentExt};
use monoio::net::{TcpListener, TcpStream};
use std::io::Write as _;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Duration;

/// Longest request head; longer gets 431.
const MAX_HEAD: usize = 32 << 10;
/// Largest request body echoed; larger gets 413.
const MAX_BODY: u64 = 16 << 20;
/// Read buffer per connection (grown for a large body).
const READ_BUFFER: usize = 16 << 10;

#[derive(Debug, Clone)]
pub struct TargetPlan {
    pub listen: SocketAddr,
    /// Filler bytes answered to a request without a body.
    pub size: usize,
    pub driver: DriverChoice,
}

pub type TargetError = ServiceError;

/// Binds, prints `http-target listening on ADDR` on stdout (the port is the real one when 0
/// was asked for), and serves until the process is stopped.
pub fn serve(plan: &TargetPlan) -> Result<(), TargetError> {
    let listener = bind(plan.listen)?;
    let driver = driver::resolve(plan.driver)?;
    let addr = listener.local_addr().map_err(TargetError::Runtime)?;
    println!(
        "http-target listening on {addr} ({}, {} B answers)",
        driver.name(),
        plan.size
    );
    let _ = std::io::stdout().flush();
    let filler: Rc<[u8]> = (0..plan.size).map(|i| b'A' + (i % 26) as u8).collect();
    driver::block_on(driver, accept_loop(listener, filler)).map_err(TargetError::Runtime)
}

async fn accept_loop(listener: std::net::TcpListener, filler: Rc<[u8]>) {
    let listener = match TcpListener::from_std(listener) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("http-target: {e}");
            return;
        }
    };
    loop {
        match listener.accept().await {
            Ok((s, _)) => {
                let _ = s.set_nodelay(true);
                monoio::spawn(serve_conn(s, filler.clone()));
            }
            Err(e) => {
                // Out of descriptors, most likely: wait for some to close rather than spin.
                eprintln!("http-target: accept: {e}");
                monoio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
}

/// Reads more into `buf`; `false` at the end of the stream or on an error.
async fn read_more(s: &mut TcpStream, buf: &mut Vec<u8>) -> bool {
    if buf.len() == buf.capacity() {
        buf.reserve(READ_BUFFER);
    }
    let len = buf.len();
    let (res, b) = s.read(std::mem::take(buf).slice_mut(len..)).await;
    *buf = b.into_inner();
    matches!(res, Ok(n) if n > 0)
}

/// The status for a request that cannot be read.
fn refusal(e: WireError) -> &'static str {
    match e {
        WireError::HeadTooLarge(_) => "431 Request Header Fields Too Large",
        WireError::BodyTooLarge(_) => "413 Content Too Large",
        _ => "400 Bad Request",
    }
}

async fn serve_conn(mut s: TcpStream, filler: Rc<[u8]>) {
    let mut buf = Vec::with_capacity(READ_BUFFER);
    let mut out = Vec::with_capacity(READ_BUFFER);
    let mut body = Vec::new();
    loop {
        let head = loop {
            match parse_request(&buf, MAX_HEAD) {
                Ok(Some(h)) => break h,
                Ok(None) => {}
                Err(e) => return refuse(s, e).await,
            }
            if !read_more(&mut s, &mut buf).await {
                return;
            }
        };
        buf.drain(..head.len);
        body.clear();
        match read_body(&mut s, &mut buf, &mut body, head.body).await {
            Ok(true) => {}
            Ok(false) => return,
            Err(e) => return refuse(s, e).await,
        }
        out.clear();
        answer(
            &mut out,
            &head,
            if body.is_empty() { &filler } else { &body },
        );
        let (res, o) = s.write_all(out).await;
        out = o;
        if res.is_err() || head.close {
            return;
        }
    }
}

/// Moves the request's body from `buf` (reading more as needed) into `body`. `Ok(false)`
/// when the connection ended first.
async fn read_body(
    s: &mut TcpStream,
    buf: &mut Vec<u8>,
    body: &mut Vec<u8>,
    framing: Framing,
) -> Result<bool, WireError> {
    match framing {
        Framing::Unframed | Framing::Length(0) => Ok(true),
        Framing::Length(n) if n > MAX_BODY => Err(WireError::BodyTooLarge(MAX_BODY)),
        Framing::Length(n) => {
            let n = n as usize;
            buf.reserve(n.saturating_sub(buf.len()));
            while buf.len() < n {
                if !read_more(s, buf).await {
                    return Ok(false);
                }
            }
            body.extend(buf.drain(..n));
            Ok(true)
        }
        Framing::Chunked => {
            let mut dec = ChunkedDecoder::with_limit(MAX_BODY);
            loop {
                let (used, done) =
                    dec.feed(buf, |d| body.extend_from_slice(d))
                        .map_err(|e| match e {
                            ChunkedError::TooLarge => WireError::BodyTooLarge(MAX_BODY),
                            e => WireError::Chunk(e),
                        })?;
                buf.drain(..used);
                if done {
                    return Ok(true);
                }
                if !read_more(s, buf).await {
                    return Ok(false);
                }
            }
        }
    }
}

/// A 200 answer carrying `body` (only its length for HEAD).
fn answer(out: &mut Vec<u8>, head: &RequestHead, body: &[u8]) {
    let close = if head.close {
        "Connection: close\r\n"
    } else {
        ""
    };
    let _ = write!(
        out,
        "HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: {}\r\n{close}\r\n",
        body.len()
    );
    if !head.head_only {
        out.extend_from_slice(body);
    }
}

/// Answers a request that cannot be read, and closes.
async fn refuse(mut s: TcpStream, e: WireError) {
    let msg = format!(
        "HTTP/1.1 {}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
        refusal(e)
    );
    let _ = s.write_all(msg.into_bytes()).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers() {
        let head = |close, head_only| RequestHead {
            len: 0,
            body: Framing::Unframed,
            close,
            head_only,
        };
        let mut out = Vec::new();
        answer(&mut out, &head(true, false), b"hi");
        assert_eq!(
            out,
            b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: 2\r\nConnection: close\r\n\r\nhi"
        );
        out.clear();
        answer(&mut out, &head(false, true), b"hi");
        assert!(out.ends_with(b"Content-Length: 2\r\n\r\n"), "{out:?}");
        assert_eq!(
            refusal(WireError::HeadTooLarge(1)),
            "431 Request Header Fields Too Large"
        );
        assert_eq!(refusal(WireError::BodyTooLarge(1)), "413 Content Too Large");
        assert_eq!(refusal(WireError::Ambiguous), "400 Bad Request");
    }
}
