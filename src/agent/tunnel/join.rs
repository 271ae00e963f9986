//! One public connection, end to end on the client: the data connection to the relay
//! (`GET .../v1/tunnel/accept/{id}`, `Upgrade: ringrelay-tunnel`, 101, then raw bytes), the
//! connection to the local service, and the bytes between them.
//!
//! The client splices bytes through a pipe each way (`runtime::splice::pump_now`), so
//! they never enter user space: a plain copy loop cost more CPU per byte in bulk than the
//! whole relay (docs/tunnels.md). A FIN read on one side is passed on as `shutdown(SHUT_WR)`
//! on the other; a reset or error on either side ends both directions and resets the other
//! side too (`SO_LINGER` 0), so neither end is left waiting on a half that is gone.

use super::super::stop::Latch;
use crate::runtime::socket::{shutdown_fd, Socket};
use crate::runtime::splice::{pump_now, set_nonblocking, Count};
use monoio::buf::IoBufMut;
use monoio::io::AsyncWriteRentExt;
use monoio::net::TcpStream;
use std::net::{Shutdown, SocketAddr};
use std::os::fd::AsRawFd;
use std::rc::Rc;
use std::time::Duration;

/// Largest answer head taken from the relay.
const MAX_ANSWER_HEAD: usize = 8 << 10;
/// The upgrade token of a tunnel's data connection.
pub const UPGRADE: &str = "ringrelay-tunnel";

#[derive(Debug, thiserror::Error)]
pub enum DataError {
    #[error("connect to the relay {addr}: {source}")]
    Connect {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("i/o on the data connection's upgrade: {0}")]
    Io(std::io::Error),
    #[error("the relay closed the data connection during the upgrade")]
    Closed,
    #[error("no upgrade answer within {0:?}")]
    Timeout(Duration),
    #[error("data connection refused: {0}")]
    Refused(String),
    #[error("bad upgrade answer: {0}")]
    Bad(&'static str),
}

/// The data connection's request.
pub fn accept_request(authority: &str, route: &str, headers: &[(&str, String)]) -> String {
    let mut req = format!(
        "GET {route} HTTP/1.1\r\nHost: {authority}\r\nConnection: Upgrade\r\nUpgrade: {UPGRADE}\r\n"
    );
    for (name, value) in headers {
        req.push_str(&format!("{name}: {value}\r\n"));
    }
    req.push_str("\r\n");
    req
}

/// Checks the relay's answer head: 101 with `Upgrade: ringrelay-tunnel`; any other status is
/// a refusal, named by its status line.
pub fn check_accept_answer(head: &[u8]) -> Result<(), DataError> {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut resp = httparse::Response::new(&mut headers);
    match resp.parse(head) {
        Ok(httparse::Status::Complete(_)) => {}
        _ => return Err(DataError::Bad("unparsable response head")),
    }
    if resp.code != Some(101) {
        let first = head.split(|&b| b == b'\r').next().unwrap_or_default();
        return Err(DataError::Refused(
            String::from_utf8_lossy(first).into_owned(),
        ));
    }
    let upgrade = resp
        .headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case("upgrade"))
        .map(|h| h.value.trim_ascii());
    if !upgrade.is_some_and(|v| v.eq_ignore_ascii_case(UPGRADE.as_bytes())) {
        return Err(DataError::Bad("no Upgrade: ringrelay-tunnel"));
    }
    Ok(())
}

/// Where the data connection goes.
pub struct DataDial<'a> {
    pub addr: SocketAddr,
    pub authority: &'a str,
    pub route: &'a str,
    pub headers: &'a [(&'static str, String)],
    pub timeout: Duration,
}

/// An upgraded data connection and the bytes that came after the answer's head in the same
/// read (they belong to the local service).
pub struct DataConn {
    pub stream: TcpStream,
    pub early: Vec<u8>,
}

/// Connects and upgrades, within the dial's timeout.
pub async fn open_data(dial: &DataDial<'_>) -> Result<DataConn, DataError> {
    match monoio::time::timeout(dial.timeout, open_data_now(dial)).await {
        Ok(r) => r,
        Err(_) => Err(DataError::Timeout(dial.timeout)),
    }
}

async fn open_data_now(dial: &DataDial<'_>) -> Result<DataConn, DataError> {
    use monoio::io::{AsyncReadRent, AsyncWriteRentExt};
    let addr = dial.addr;
    let mut stream = TcpStream::connect_addr(addr)
        .await
        .map_err(|source| DataError::Connect { addr, source })?;
    let _ = stream.set_nodelay(true);
    let req = accept_request(dial.authority, dial.route, dial.headers);
    let (r, _) = stream.write_all(req.into_bytes()).await;
    r.map_err(DataError::Io)?;
    let mut buf: Vec<u8> = Vec::with_capacity(1024);
    loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            check_accept_answer(&buf[..i + 4])?;
            let early = buf.split_off(i + 4);
            return Ok(DataConn { stream, early });
        }
        if buf.len() >= MAX_ANSWER_HEAD {
            return Err(DataError::Bad("answer head too large"));
        }
        buf.reserve(1024);
        let len = buf.len();
        let (r, b) = stream.read(buf.slice_mut(len..)).await;
        buf = b.into_inner();
        match r {
            Ok(0) => return Err(DataError::Closed),
            Ok(_) => {}
            Err(e) => return Err(DataError::Io(e)),
        }
    }
}

/// How a joined pair ended, for the log.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Moved {
    /// Bytes from the public side to the local service.
    pub inbound: u64,
    /// Bytes from the local service to the public side.
    pub outbound: u64,
    /// A side reset or failed: the other was reset too.
    pub reset: bool,
}

/// Joins the data connection and the local connection until both directions are done or
/// one fails, or `dead` is set from outside (the drain's deadline), which resets both.
pub async fn join(data: DataConn, local: TcpStream, dead: Rc<Latch>) -> Moved {
    let _ = local.set_nodelay(true);
    let DataConn { stream, early } = data;
    let mut local = local;
    let early_len = early.len() as u64;
    if !early.is_empty() {
        let (r, _) = local.write_all(early).await;
        if r.is_err() {
            reset(stream);
            reset(local);
            return Moved {
                reset: true,
                ..Moved::default()
            };
        }
    }
    if set_nonblocking(&stream).is_err() || set_nonblocking(&local).is_err() {
        reset(stream);
        reset(local);
        return Moved {
            inbound: early_len,
            reset: true,
            ..Moved::default()
        };
    }
    let (inbound, outbound) = (Count::default(), Count::default());
    let (a, b) = monoio::join!(
        direction(&stream, &local, &inbound, &dead),
        direction(&local, &stream, &outbound, &dead),
    );
    let reset_both = a.is_err() || b.is_err();
    if reset_both {
        reset(stream);
        reset(local);
    }
    Moved {
        inbound: early_len + inbound.0.get(),
        outbound: outbound.0.get(),
        reset: reset_both,
    }
}

/// Splices `src` into `dst` until EOF (passed on as a FIN: `Ok`) or a failure on either side
/// or the other direction's (`Err`; `dead` is set so the other direction stops too).
async fn direction(
    src: &TcpStream,
    dst: &TcpStream,
    count: &Count,
    dead: &Latch,
) -> Result<(), ()> {
    // A pump dropped here (the pair is being reset) loses only bytes nobody will take.
    let r = monoio::select! {
        _ = dead.wait() => return Err(()),
        r = pump_now(src, dst, count) => r,
    };
    match r {
        Ok(()) => {
            shutdown_fd(dst.as_raw_fd(), Shutdown::Write);
            Ok(())
        }
        Err(_) => {
            dead.set();
            Err(())
        }
    }
}

/// Resets a connection: the peer reads ECONNRESET rather than a clean end.
pub fn reset(stream: TcpStream) {
    let socket = Socket::new(stream);
    let _ = socket2::SockRef::from(&socket).set_linger(Some(Duration::ZERO));
    drop(socket);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_request_names_the_upgrade_and_carries_the_headers() {
        let h = [("Authorization", "Bearer t".to_string())];
        let req = accept_request("r:1", "/v1/tunnel/accept/ab", &h);
        assert_eq!(
            req,
            "GET /v1/tunnel/accept/ab HTTP/1.1\r\nHost: r:1\r\nConnection: Upgrade\r\n\
             Upgrade: ringrelay-tunnel\r\nAuthorization: Bearer t\r\n\r\n"
        );
    }

    #[test]
    fn answers() {
        let ok = b"HTTP/1.1 101 Switching Protocols\r\nupgrade:  RingRelay-Tunnel \r\nConnection: Upgrade\r\n\r\n";
        assert!(check_accept_answer(ok).is_ok());
        let e = check_accept_answer(
            b"HTTP/1.1 404 Not Found\r\nContent-Type: application/json\r\n\r\n",
        )
        .unwrap_err();
        assert!(e.to_string().contains("404 Not Found"), "{e}");
        let ws = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n";
        assert!(matches!(check_accept_answer(ws), Err(DataError::Bad(_))));
        assert!(matches!(
            check_accept_answer(b"garbage\r\n\r\n"),
            Err(DataError::Bad(_))
        ));
    }
}
